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
case is built once. Before building it frees the previous one, holds the heap steady
(``engine.malloc``), pays the runtime's one-time costs and takes the RSS baseline, as the worker of
``scaling-bench run`` does. Memory figures from a long
pytest process are still less clean than a fresh worker's: freed memory is not always given back.

**Clocks.** A CUDA step returns before the GPU finishes, so both front-ends synchronise before
reading the clock (DESIGN §6). asv is lower-is-better and divides by calls only, so its clock
counts seconds per *sample*: it divides the time by the batch size.

**Workloads.** Both front-ends iterate the workload registry; plugin modules that register more
(``scaling-bench run --plugin``) are named by ``--sb-plugin`` or ``$SCALING_BENCH_PLUGINS``
(``load_plugins``), beside the installed entry points.

**asv parameters.** ``AsvGrid`` lays the cases out as asv parameters, one per axis that tells
cases of a grid apart (``ASV_AXES``: every ``multi`` axis, and the device), so asv's web UI plots
along the size; ``asv_values`` is a case's combination, ``store.foreign.asv_case_id`` reads it
back into the case id. ``measure_all`` is what asv's ``setup_cache`` returns: every workload of
every case, measured once, for all of the ``track_`` benchmarks.
"""

from __future__ import annotations

import gc
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from traceback import format_exception_only
from typing import TYPE_CHECKING, Any, NoReturn

from scaling_bench.config import grid
from scaling_bench.config.axes import AXES, axis
from scaling_bench.config.case import Case
from scaling_bench.config.sizes import format_size, parse_size
from scaling_bench.core.errors import UserError
from scaling_bench.workloads.base import Needs, Workload, get, ordered

if TYPE_CHECKING:
    import torch

    from scaling_bench.workloads.setup import CaseSetup

GRID_ENV = "SCALING_BENCH_GRID"
#: Plugin modules to import (comma-separated), where no ``--sb-plugin`` option names them.
PLUGINS_ENV = "SCALING_BENCH_PLUGINS"
#: What chooses the cases (option key -> the environment variable that sets it where no option
#: does): the grid, and every axis that declares a variable.
ENV = {"grid": GRID_ENV} | {
    a.env.removeprefix("SCALING_BENCH_").lower(): a.env for a in AXES if a.env
}
#: Option key -> the axis it sets.
AXIS_OF = {a.env.removeprefix("SCALING_BENCH_").lower(): a.name for a in AXES if a.env}
MIN_ROUNDS = 5
MAX_ROUNDS = 100


def load_plugins(
    given: Iterable[str] | None = None, environ: Mapping[str, str] = os.environ
) -> tuple[str, ...]:
    """Import the plugin modules ``given`` (each item may be comma-separated), else those of
    ``$SCALING_BENCH_PLUGINS``, and the installed entry points; every plugin module loaded.

    A module that cannot be imported is the user's mistake (``UserError``)."""
    from scaling_bench.workloads import load_plugins as load

    texts = list(given or ()) or [environ.get(PLUGINS_ENV) or ""]
    return load(name.strip() for text in texts for name in text.split(",") if name.strip())


def step_metric(workload: Workload) -> str:
    """The metric a timed workload records its step under (``train_step_s``), as
    ``scaling-bench run`` does: what pytest-benchmark times for it."""
    return f"{workload.name}_step_s"


def whole_metric(workload: Workload) -> str:
    """A whole workload's seconds (``checkpoint_s``), declared when it registers: what
    pytest-benchmark times for a workload without a step."""
    return f"{workload.name}_s"


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
    """Why an in-process front-end cannot run ``case`` here: a GPU that is not here, ranks that
    only ``scaling-bench run`` launches, or what makes the case unable to run anywhere
    (``workloads.setup.skip_reason``, which ``scaling-bench run`` asks too: a recipe the device
    or the family cannot take, a workload the case cannot run); None when it can."""
    import torch

    from scaling_bench.workloads.setup import skip_reason as unsupported

    if case.device.startswith("cuda") and not torch.cuda.is_available():
        return f"{case.device} asked for, but no CUDA GPU is usable on this machine"
    if case.strategy:
        return f"{case.strategy} runs its ranks under `scaling-bench run` only, not in one process"
    return unsupported(case)


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

    from scaling_bench.engine import malloc
    from scaling_bench.engine.execute import CaseSetup, warm_up_runtime
    from scaling_bench.meters.memory import baseline_rss

    _current = None
    malloc.apply("steady")
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
    peak, _ = case_peak_flops(current.setup)
    ctx = Context(peak_flops=peak, baseline_rss_bytes=current.baseline_rss_bytes)
    w = get(workload)
    metrics = run_workload(w, current.setup, ctx)
    if w.needs is Needs.OWN_MODELS:  # it freed the case's model: build it again next time
        _current = None
    return metrics


def extra_info(
    case: Case, params: int, metrics: Mapping[str, dict], workload: str, metric: str
) -> dict[str, object]:
    """pytest-benchmark's ``extra_info``: the case, the workload, the name of the metric the
    benchmark's time is (``train_step_s``, ``checkpoint_s``: what ``compare`` files it under),
    and each metric the workload recorded, without its raw samples."""
    info: dict[str, object] = {
        "case_id": case.case_id,
        "family": case.family,
        "params": params,
        "workload": workload,
        "metric": metric,
    }
    for name, figure in metrics.items():
        info[name] = {k: v for k, v in figure.items() if k != "samples"}
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


#: The axes that are asv parameters, in the axes' order: every grid dimension (``multi``) and
#: the device, one value per grid, so that a combination names its case completely.
ASV_AXES = tuple(a.name for a in AXES if a.multi or a.name == "device")


def asv_values(case: Case) -> tuple[Any, ...]:
    """The case's asv parameter values, one per ``ASV_AXES``: the axis's value, but the size as
    its token (``'1e5'``, as the case id writes it) and the family with the config fields the grid
    sets for it (``'gpt(seq_len=128)'``), which the case id carries too."""
    values = []
    for name in ASV_AXES:
        value = getattr(case, name)
        if name == "target_params":
            value = format_size(value)
        elif name == "family" and (overrides := axis("overrides").token(case)):
            value = f"{value}({overrides})"
        values.append(value)
    return tuple(values)


class AsvGrid:
    """The cases as asv parameters: ``param_names`` are ``ASV_AXES``, ``params`` the values of
    each present in the grid (sizes smallest first). Their product holds combinations that are no
    case of the grid (a size one family lacks): asv skips them (``case_for``)."""

    def __init__(self, cases: Sequence[Case]) -> None:
        self.cases = {asv_values(case): case for case in cases}
        self.param_names = list(ASV_AXES)
        self.params = [
            list(dict.fromkeys(values[i] for values in self.cases)) for i in range(len(ASV_AXES))
        ]
        self.params[ASV_AXES.index("target_params")].sort(key=parse_size)

    def runnable(self) -> list[Case]:
        """The cases an in-process front-end can run here."""
        return [case for case in self.cases.values() if not skip_reason(case)]

    @property
    def timeout_s(self) -> float:
        """Time for every workload of every runnable case: their case timeouts, added up."""
        return sum(case.timeout_s for case in self.runnable()) or 60.0

    def case_for(self, values: Sequence[Any], workload: Workload | None = None) -> Case:
        """The case of a parameter combination, or asv's "skipped": no such case in the grid, a
        case not runnable here (``skip_reason``), or one whose workloads leave ``workload`` out."""
        case = self.cases.get(tuple(values))
        if case is None:
            _asv_skip("not a case of this grid")
        if reason := skip_reason(case):
            _asv_skip(reason)
        if workload is not None and workload.name not in case.workloads:
            _asv_skip(f"{workload.name} is not among this grid's workloads")
        return case


def asv_step(case: Case, workload: Workload, clock: SampleClock) -> Callable[[], object]:
    """The case's timed step, built once per process, with ``clock`` set to its batch."""
    setup = setup_for(case)
    clock.use(setup)
    return workload.step(setup)


def measure_all(cases: Iterable[Case]) -> dict[str, dict[str, Any]]:
    """Every workload of each case, measured once, in its order (asv's ``setup_cache``):
    ``{case_id: {"metrics": {workload: metrics}, "errors": {workload: message}, "skipped":
    reason or None}}``.

    As in a worker, a workload that fails ends its case: the workloads after it are not run, and
    say so; the next case starts afresh. As in ``scaling-bench run``, a case predicted not to fit
    in the free memory is skipped, not attempted: in this one process, the kernel's OOM killer
    would take every case's figures with it."""
    global _current
    from scaling_bench.engine.campaign import skip_reason as unfit
    from scaling_bench.hardware.devices import free_memory_bytes
    from scaling_bench.predict.plan import plan_for

    out: dict[str, dict[str, Any]] = {}
    for case in cases:
        metrics: dict[str, dict] = {}
        errors: dict[str, str] = {}
        _current = None  # the previous case freed before the free memory is read
        gc.collect()
        if reason := unfit(case, plan_for(case), free_memory_bytes(case.device)):
            out[case.case_id] = {"metrics": metrics, "errors": errors, "skipped": reason}
            continue
        failed = None
        for w in ordered(case.workloads):
            if failed is not None:
                errors[w.name] = f"not run: {failed} failed before it"
                continue
            try:
                metrics[w.name] = measure(case, w.name)
            except Exception as exc:
                errors[w.name] = "".join(format_exception_only(exc)).strip()
                failed = w.name
                _current = None
        out[case.case_id] = {"metrics": metrics, "errors": errors, "skipped": None}
    _current = None
    return out


def asv_figure(figures: Mapping[str, dict], case: Case, workload: Workload, metric: str) -> float:
    """One figure of ``measure_all``'s: a failure raises (asv shows the benchmark failed, with the
    message); a case skipped and a figure this machine does not record (a GPU peak on a CPU) are
    skipped."""
    measured = figures.get(case.case_id) or {"metrics": {}, "errors": {}, "skipped": None}
    if measured.get("skipped"):
        _asv_skip(measured["skipped"])
    if error := measured["errors"].get(workload.name):
        raise RuntimeError(f"{case.case_id}: {workload.name}: {error}")
    value = measured["metrics"].get(workload.name, {}).get(metric, {}).get("value")
    if value is None:
        _asv_skip(f"{metric} is not measured here")
    return value


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
