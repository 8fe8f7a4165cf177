"""How far one figure moves from one fresh process to the next on this machine: run-to-run drift.

Samples inside one process share its memory layout, its threads' placement and the load of its
minute, so two runs of the same commit can sit further apart than either run's samples scatter.
This measures that: ``DRIFT_REPETITIONS`` fresh processes each time a small fixed training step
(a two-layer MLP of ~8M parameters, batch 128: tens of milliseconds, the scale of the steps a
grid times, for ``STEP_BUDGET_S``) and report their median; the drift is the spread of the
medians' logs, a relative figure (0.02: runs scatter by about 2%), taken robustly (the median
absolute deviation, scaled to a normal σ), since one process of five that starts beside a
passing job would otherwise set the gate for every comparison. A sub-millisecond step (the first
design: ~1M parameters, batch 64) scattered by σ 21.5% between fresh processes on an idle VM, and
a gate held to that drift flagged none of 8 one-thread slowdowns (``studies/gate_noise.py``).
``scaling-bench check`` measures it and caches it like the GEMM peak, keyed by what moves it
(``drift_key``); ``compare`` reads it back, without torch, for an unpaired comparison. Like the
GEMM peak, a refresh keeps the worse figure (here the larger drift), so a quiet moment
never makes the gate stricter than the machine has been seen to deserve.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from scaling_bench.hardware.cache import measured_cache_path, read_cache

DRIFT_REPETITIONS = 5
STEP_BUDGET_S = 0.5
#: The fingerprint keys (``hardware.peaks.fingerprint``) that move the drift, and so key it.
DRIFT_KEYS = ("cpu_model", "cpu_logical_cores", "torch_threads", "torch_version")


def drift_key(env: dict) -> tuple[str, ...]:
    """The cache key of the drift measured on the machine ``env`` (a record's or this one's)."""
    return ("run drift", *(f"{k} {env.get(k)}" for k in DRIFT_KEYS))


def recorded_drift(env: dict) -> float | None:
    """The drift cached for the machine ``env`` describes, or ``None`` where none was measured."""
    return read_cache(measured_cache_path()).get("|".join(drift_key(env)))


def step_median_s(budget_s: float = STEP_BUDGET_S) -> float:
    """Median seconds of the fixed training step in this process, after a short warm-up."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(128, 1024), torch.randn(128, 1024)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()

    for _ in range(5):
        step()
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while time.perf_counter() < end or len(times) < 10:
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def measure_drift(repetitions: int = DRIFT_REPETITIONS, budget_s: float = STEP_BUDGET_S) -> float:
    """The drift measured now: the robust spread (1.4826 × the median absolute deviation) of the
    logs of ``repetitions`` fresh processes' medians (each process inherits this one's
    environment: threads, ISA caps)."""
    code = f"from {__name__} import step_median_s; print(step_median_s({budget_s!r}))"
    command = [sys.executable, "-c", code]
    medians = [
        float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        for _ in range(repetitions)
    ]
    return log_spread(medians)


def log_spread(medians: Sequence[float]) -> float:
    """1.4826 × the median absolute deviation of the logs: a normal σ that one outlying
    process does not set (never 0, so a ratio to it stays defined)."""
    from scipy import stats

    logs = [math.log(m) for m in medians]
    return max(float(stats.median_abs_deviation(logs, scale="normal")), 1e-6)


def run_drift(refresh: bool = False) -> float:
    """This machine's drift, measured once and cached (``refresh`` measures again)."""
    from scaling_bench.hardware.peaks import cached_measurement, fingerprint

    return cached_measurement(drift_key(fingerprint()), measure_drift, refresh)
