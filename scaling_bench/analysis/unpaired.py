"""What a comparison of two separate runs can claim: what the machines differ in, and how far a
figure drifts from run to run.

A p-value over the samples of one process a side says whether the two processes differed, not
whether the code did: two runs of one commit differ by the machine's run-to-run drift, which no
process's samples see (nor, wholly, the values of processes run one after another in one run).
So in an unpaired comparison a move must also clear the drift. With ``σ`` the standard
deviation of a figure's log from one fresh process to the next (``hardware.drift``), the log
ratio of two independent runs of one commit has standard deviation ``√2·σ``; ``σ`` itself is
estimated from a few processes (``dof`` degrees of freedom), so the bound a rerun stays within
with probability ``1 − α`` is the prediction interval
``|log ratio| ≤ t(1 − α/2, dof)·√2·σ`` (Student's t). With 5 processes (4 dof) and α = 0.01
that is 6.5·σ: at σ = 6% a move must exceed 48%, and a 2× slowdown clears it unless σ > 7.5%.

A few fresh processes seconds apart see less than whole runs minutes apart do: on this
project's 2-core VM runs of one commit sat 0.92–1.16× apart while each run's processes agreed
closely. So σ is never taken below ``DRIFT_FLOOR`` (5%, a stated figure rather than an
estimate: the normal quantile, ``|log ratio| ≤ 2.58·√2·5%``, a move beyond ±20%).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

from scaling_bench.core.stats import is_finite
from scaling_bench.hardware.drift import DRIFT_REPETITIONS, recorded_drift

#: The least run-to-run drift an unpaired move is held to (module docstring), and the drift where
#: none was measured; stated in every verdict that leans on it.
DRIFT_FLOOR = 0.05
#: How a row's note starts when the drift alone kept a move from a verdict.
DRIFT_NOTE = "within run-to-run drift"
WHAT_INSTEAD = "gate with scaling-bench ab (or run both sides with --processes 5)"


@dataclass(frozen=True)
class Drift:
    """σ of a figure's log between runs, the degrees of freedom it was estimated with, and
    where it came from (said in the verdict)."""

    sigma: float
    #: ``None``: a stated figure (the floor), not an estimate.
    dof: int | None
    source: str

    def bound(self, alpha: float) -> float:
        """The relative move a rerun of one commit stays within with probability 1 − α."""
        quantile = stats.norm if self.dof is None else stats.t(self.dof)
        return math.expm1(float(quantile.ppf(1 - alpha / 2)) * math.sqrt(2) * self.sigma)

    def describe(self, alpha: float) -> str:
        """``a rerun moves up to ±14% (σ 2.0%, measured by scaling-bench check)``."""
        return f"a rerun moves up to ±{self.bound(alpha):.0%} (σ {self.sigma:.1%}, {self.source})"


def machine_drift(base_env: dict, current_env: dict) -> Drift:
    """The larger drift cached for either side's machine (``scaling-bench check``), or the
    floor where that is less or none was measured."""
    found = [d for env in (base_env, current_env) if (d := recorded_drift(env)) is not None]
    if found and max(found) >= DRIFT_FLOOR:
        return Drift(max(found), DRIFT_REPETITIONS - 1, "measured by scaling-bench check")
    seen = f"check measured {max(found):.1%}" if found else "no scaling-bench check here"
    return Drift(DRIFT_FLOOR, None, f"the floor; {seen}")


def process_drift(base: dict, current: dict) -> Drift | None:
    """The drift of this very metric, pooled over the sides that ran in several processes
    (``run --processes``): the spread of its per-process logs about each side's mean (the
    gate holds a move to the larger of this and ``machine_drift``)."""
    sides = [
        [math.log(x) for x in m.get("process_values") or () if is_finite(x) and x > 0]
        for m in (base, current)
    ]
    sides = [s for s in sides if len(s) >= 2]
    dof = sum(len(s) - 1 for s in sides)
    if not dof:
        return None
    squares = sum((x - statistics.fmean(s)) ** 2 for s in sides for x in s)
    n = sum(len(s) for s in sides)
    return Drift(max(math.sqrt(squares / dof), 1e-6), dof, f"from {n} processes' values")


def drift_line(count: int, drift: Drift, threshold: float, alpha: float) -> str:
    """The one line that says why an unpaired gate passed without a verdict, and what to run."""
    moves = f"{count} move{'s' * (count != 1)} beyond {threshold:.0%}"
    return f"gate inconclusive: {moves} {DRIFT_NOTE}, where {drift.describe(alpha)}; {WHAT_INSTEAD}"


#: Fingerprint keys (``hardware.peaks.fingerprint``) whose difference moves timings by itself,
#: the kernels' ISA first: a run under ``ATEN_CPU_CAPABILITY=avx2`` is another machine here.
MACHINE_KEYS = (
    "cpu_capability", "onednn_max_cpu_isa", "onednn_version", "kernel_key",
    "torch_threads", "cpu_model", "cpu_logical_cores", "gpu_name", "gpu_count",
    "gpu_driver_version", "torch_version", "python_version",
)  # fmt: skip


#: The keys that name the kernels' selection; a record that has ``kernel_key`` was fingerprinted
#: with all of them, so one it lacks was unset (no ``ONEDNN_MAX_CPU_ISA`` cap).
KERNEL_KEYS = MACHINE_KEYS[:4]


def machine_differences(base_env: dict, current_env: dict) -> list[str]:
    """``key base → current`` for each timing-relevant key both runs recorded and differ in (a
    kernel key one side left unset reads ``unset``)."""
    both = "kernel_key" in base_env and "kernel_key" in current_env
    out = []
    for key in MACHINE_KEYS:
        unset = "unset" if both and key in KERNEL_KEYS else None
        b, c = base_env.get(key, unset), current_env.get(key, unset)
        if b is not None and c is not None and b != c:
            out.append(f"{key} {b} → {c}")
    return out
