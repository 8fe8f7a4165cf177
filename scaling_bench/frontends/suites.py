"""What the in-process benchmark suites share: pytest-benchmark (``benchmarks/test_*.py``, through
``scaling_bench.frontends.pytest_plugin``) and asv (``benchmarks/bench_*.py``).

**Cases.** Both take their cases from the grid presets and files of ``scaling-bench run``, through
``grid.preset``/``grid.load_grid_file`` and ``grid.build_cases``, so a case id names the same model,
batch, dtype and timing budget in all three front-ends. pytest reads ``--sb-*`` options, asv (which
has no options for benchmarks) the ``SCALING_BENCH_*`` variables of ``ENV``; both default to the
quick grid on the device present. ``smoke`` is the quick grid's smallest size of each family with a
token timing budget: the default of ``pytest benchmarks --benchmark-disable``, which only proves
that every test runs. A CUDA device asked for on a machine without one gives the GPU grid's cases,
skipped with the reason, so the report says what was not run rather than nothing; so are
distributed cases, whose ranks only ``scaling-bench run`` launches.

**One case at a time.** ``setup_for`` keeps the latest case's ``CaseSetup`` per process: asv_runner
calls ``setup`` before every timed call, and pytest runs a case's tests one after another, so each
case is built once. Before building it frees the previous one, pays the runtime's one-time costs and
takes the RSS baseline, as the worker of ``scaling-bench run`` does. Memory figures from a long
pytest process are still less clean than a fresh worker's: freed memory is not always given back.

**Clocks.** A CUDA step returns before the GPU finishes, so both front-ends synchronise before
reading the clock (DESIGN §6). asv is lower-is-better and divides by calls only, so its clock
counts seconds per *sample*: it divides the time by the batch size.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from scaling_bench.config import grid
from scaling_bench.config.axes import AXES
from scaling_bench.config.case import Case
from scaling_bench.core.errors import UserError
from scaling_bench.workloads.base import Needs, get

if TYPE_CHECKING:
    import torch

    from scaling_bench.workloads.setup import CaseSetup

GRID_ENV = "SCALING_BENCH_GRID"
#: What chooses the cases (option key -> the environment variable that sets it where no option
#: does): the grid, and every axis that declares a variable.
ENV = {"grid": GRID_ENV} | {
    a.env.removeprefix("SCALING_BENCH_").lower(): a.env for a in AXES if a.env
}
#: Option key -> the axis it sets.
AXIS_OF = {a.env.removeprefix("SCALING_BENCH_").lower(): a.name for a in AXES if a.env}
MIN_ROUNDS = 5
MAX_ROUNDS = 100


def bench_cases(
    settings: Mapping[str, str | None] | None = None,
    default_grid: str = "quick",
    environ: Mapping[str, str] = os.environ,
) -> list[Case]:
    """The cases to run, some perhaps not here (``skip_reason``).

    ``settings`` (keys of ``ENV``) win over the environment, which wins over the defaults: the
    grid's own device for a grid file, else ``auto``. Each axis given replaces the grid's, as the
    same flag of ``scaling-bench run`` does.
    """
    import torch

    import scaling_bench.workloads  # noqa: F401  (registers the workloads the grid names)

    # an empty variable or option is unset, as shells and CI matrices use it
    given = {key: (settings or {}).get(key) or environ.get(var) or None for key, var in ENV.items()}

    def resolve(wanted: str) -> str:
        if wanted.strip().lower().startswith("cuda") and not torch.cuda.is_available():
            return "cuda:0"  # the GPU grid's cases, for ``skip_reason`` to skip
        return grid.resolve_device(wanted)

    axes = {AXIS_OF[key]: text for key, text in given.items() if key in AXIS_OF}
    spec = grid.select(given["grid"] or default_grid, axes, resolve=resolve)
    return grid.build_cases(spec, spec.value("device"))


def skip_reason(case: Case) -> str | None:
    """Why an in-process front-end cannot run ``case`` here; None when it can."""
    import torch

    if case.device.startswith("cuda") and not torch.cuda.is_available():
        return f"{case.device} asked for, but no CUDA GPU is usable on this machine"
    if case.strategy:
        return f"{case.strategy} runs its ranks under `scaling-bench run` only, not in one process"
    return None


@dataclass
class _Current:
    case: Case
    setup: CaseSetup
    baseline_rss_bytes: int


_current: _Current | None = None
_warm_devices: set[str] = set()


def _prepare(case: Case) -> _Current:
    """The case built once per process: the latest case is kept, any other one freed first."""
    global _current
    if _current is not None and _current.case == case:
        return _current
    import torch

    from scaling_bench.engine.execute import CaseSetup, warm_up_runtime
    from scaling_bench.meters.memory import baseline_rss

    _current = None
    gc.collect()
    device = torch.device(case.device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if str(device) not in _warm_devices:
        warm_up_runtime(device)
        _warm_devices.add(str(device))
    baseline = baseline_rss()
    _current = _Current(case, CaseSetup.build(case), baseline)
    return _current


def setup_for(case: Case) -> CaseSetup:
    """The case's model, batch and optimizer, built once per process (see the module docstring)."""
    return _prepare(case).setup


def measure(case: Case, workload: str) -> dict[str, dict]:
    """The record metrics of one workload of the case, as ``scaling-bench run`` records them."""
    global _current
    from scaling_bench.engine.execute import case_peak_flops, run_workload
    from scaling_bench.workloads.base import Context

    current = _prepare(case)
    peak, _ = case_peak_flops(case)
    ctx = Context(peak_flops=peak, baseline_rss_bytes=current.baseline_rss_bytes)
    w = get(workload)
    metrics = run_workload(w, current.setup, ctx)
    if w.needs is Needs.OWN_MODELS:  # it freed the case's model: build it again next time
        _current = None
    return metrics


def extra_info(case: Case, params: int, metrics: Mapping[str, dict]) -> dict[str, object]:
    """pytest-benchmark's ``extra_info``: the case and each metric without its raw samples."""
    info: dict[str, object] = {"case_id": case.case_id, "family": case.family, "params": params}
    for name, metric in metrics.items():
        info[name] = {k: v for k, v in metric.items() if k != "samples"}
    return info


def rounds_for(step_s: float, budget_s: float) -> int:
    """Rounds that fill the case's timing budget at ``step_s`` a step, within sane bounds."""
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget_s / max(step_s, 1e-9))))


def synchronized(step: Callable[[], object], device: torch.device) -> Callable[[], object]:
    """``step``, ending in a synchronise on CUDA: pytest-benchmark has no per-test clock, and with
    each call ending idle, its host clock then times the GPU's work."""
    if device.type != "cuda":
        return step
    import torch

    def step_and_wait() -> object:
        out = step()
        torch.cuda.synchronize(device)
        return out

    return step_and_wait


class SampleClock:
    """asv's ``timer``: synchronises on CUDA, and counts seconds divided by samples per call.

    asv divides a sample's time by its calls; with this clock a call of one step over a batch of
    ``B`` reads as seconds per sample. ``use`` sets the case before timing (in ``setup``).
    """

    def __init__(self) -> None:
        self._samples_per_call = 1
        self._synchronize: Callable[[], None] | None = None

    def use(self, setup: CaseSetup) -> None:
        import torch

        self._samples_per_call = setup.plan.batch_size
        cuda = setup.device.type == "cuda"
        self._synchronize = partial(torch.cuda.synchronize, setup.device) if cuda else None

    def __call__(self) -> float:
        if self._synchronize is not None:
            self._synchronize()
        return time.perf_counter() / self._samples_per_call


@cache
def _asv_cases() -> dict[str, Case]:
    return {case.case_id: case for case in bench_cases()}


def asv_params() -> list[str]:
    """asv's ``params``: the ids of the cases the ``SCALING_BENCH_*`` variables choose."""
    return list(_asv_cases())


def asv_case(case_id: str, workload: str) -> Case:
    """The case, or asv's "skipped" where it cannot run ``workload`` here."""
    case = _asv_cases()[case_id]
    if reason := skip_reason(case):
        _asv_skip(reason)
    if workload not in case.workloads:
        _asv_skip(f"{workload} is not among this grid's workloads")
    return case


def asv_step(case_id: str, workload: str, clock: SampleClock) -> Callable[[], object]:
    """The case's timed step, built once per process, with ``clock`` set to its batch."""
    setup = setup_for(asv_case(case_id, workload))
    clock.use(setup)
    return get(workload).step(setup)


def asv_metric(case_id: str, workload: str, name: str) -> float:
    """One figure the workload records; skipped where this machine does not record it (a GPU
    figure on a CPU, NVML without a driver)."""
    metrics = measure(asv_case(case_id, workload), workload)
    if name not in metrics:
        _asv_skip(f"{name} is not measured here")
    return metrics[name]["value"]


def _asv_skip(reason: str) -> NoReturn:
    """asv_runner skips on this from ``setup`` and from the benchmark itself alike."""
    from asv_runner.benchmarks.mark import SkipNotImplemented

    raise SkipNotImplemented(reason)


def asv_machine_name(env: Mapping[str, object]) -> str:
    """The host name, with the GPU's model where there is one: asv has no GPU field."""
    name = str(env["hostname"])
    if gpu := env.get("gpu_name"):
        name += "-" + re.sub(r"[^a-z0-9]+", "-", str(gpu).lower()).strip("-")
    return name


def register_asv_machine(config: Path = Path("asv.conf.json")) -> str:
    """``asv machine --yes`` under ``asv_machine_name``, its output on stderr; the name.

    Every field is passed: given a name alone, asv records the name alone.
    """
    from asv.machine import Machine

    from scaling_bench.hardware.peaks import fingerprint

    name = asv_machine_name(fingerprint())
    fields = Machine.get_defaults() | {"machine": name}
    command = [sys.executable, "-m", "asv", "machine", "--yes", "--config", str(config)]
    command += [f"--{key}={value}" for key, value in fields.items()]
    if subprocess.run(command, stdout=sys.stderr, check=False).returncode:
        raise UserError(f"asv machine --machine {name} --config {config} failed (its output above)")
    return name
