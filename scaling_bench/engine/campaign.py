"""One run of a grid: decide what is feasible, fingerprint the machine, run.

Everything that can fail on the user's input fails in ``prepare``, before the first worker
starts. Cases predicted not to fit in ``MEMORY_HEADROOM`` of the device's free memory are
recorded as ``skipped`` with the reason instead of being attempted: an out-of-memory crash can
take minutes and, on the host, other processes with it. So are workloads that cannot run on a
case (its family or strategy), named in the record, and a case the planner fails on (a fault,
not the user's input), with the planner's error.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from scaling_bench.config import grid
from scaling_bench.config.case import Case
from scaling_bench.config.convergence import settings_for
from scaling_bench.config.grid import GridSpec
from scaling_bench.config.recipe import Recipe
from scaling_bench.config.shard import Shard
from scaling_bench.core import precision as precisions
from scaling_bench.core.errors import UserError
from scaling_bench.core.units import fmt_bytes
from scaling_bench.engine import malloc
from scaling_bench.engine.launchers import early_launcher
from scaling_bench.engine.processes import check_parallel
from scaling_bench.engine.protocol import Settings
from scaling_bench.hardware.devices import dtype_warning, free_memory_bytes
from scaling_bench.predict.batch import max_batch, memory_limit
from scaling_bench.predict.plan import Plan, plan_for, rank_memory
from scaling_bench.store.records import RESULTS_FILE, ensure_writable_dir, load_records
from scaling_bench.workloads import compiled
from scaling_bench.workloads.base import Needs, ordered
from scaling_bench.workloads.setup import skip_reason as unsupported

if TYPE_CHECKING:
    from scaling_bench.engine.launchers import Launcher
    from scaling_bench.engine.runner import ShowProgress

EXECUTE = "scaling_bench.engine.execute:run_case"
DISTRIBUTED_EXECUTE = "scaling_bench.engine.distributed.launch:run_case"


def predicted_peak_bytes(case: Case, p: Plan) -> int:
    """What the case's largest workload should hold: training state and activations; or, where
    no workload trains, what a forward pass holds at least: the weights, the buffers and the
    batch (phase-independent parts of the step's prediction; a forward's activations come on
    top), so that ``--batch-sizes 1e12`` is skipped, not a petabyte allocation.

    A distributed case needs one rank's share per device (FSDP shards the state, so a model too
    big for one device can fit); on a CPU, all the node's ranks share the host's memory.
    """
    memory = rank_memory(p.train_memory, case.strategy, case.world_size)
    trains = any(w.trains for w in ordered(case.workloads))
    forward = memory.weights_bytes + memory.buffers_bytes + memory.batch_bytes
    need = memory.total_bytes if trains else forward
    return need * (case.nproc_per_node if case.device == "cpu" else 1)


def dataset_bytes(family: str, config: object, samples: int) -> int:
    """What ``samples`` samples of a convergence data set hold for ``family``'s ``config``:
    float32 inputs of the family's input shape and an int64 class each, or for a sequence family
    int64 token windows of ``tokens + 1`` (inputs and next-token targets share them)."""
    from scaling_bench.models import tokens_per_sample
    from scaling_bench.models.datasets import input_shape

    if tokens := tokens_per_sample(family, config):
        return samples * 8 * (tokens + 1)
    return samples * (4 * math.prod(input_shape(family, config)) + 8)


def check_convergence_data(case: Case, config: object, free_host_bytes: int | None = None) -> None:
    """The user's data mistakes (a dataset that does not fit the family or the model's config,
    sizes it cannot supply, CIFAR-10 not on disk, more samples than the host's memory holds) as
    one-line errors before any worker starts.

    Offline datasets are small, so they are built here and thrown away: whatever would fail in
    the worker fails now; but first their bytes are held against ``MEMORY_HEADROOM`` of the
    host's available memory (``free_host_bytes``, measured when None), so that a typo in
    ``train_size`` is an error, not an allocation that takes the runner down. CIFAR-10 is only
    looked for."""
    from scaling_bench.models.datasets import check_dataset, load_dataset

    s = settings_for(case)
    check_dataset(s.dataset, case.family, s.data_root, s.download)
    free = free_memory_bytes("cpu") if free_host_bytes is None else free_host_bytes
    need = dataset_bytes(case.family, config, s.train_size + s.heldout_size)
    if need > grid.MEMORY_HEADROOM * free:
        raise UserError(
            f"convergence train_size={s.train_size}, heldout_size={s.heldout_size}: the data set "
            f"of {case.case_id} would need {fmt_bytes(need)}, more than "
            f"{grid.MEMORY_HEADROOM:.0%} of the {fmt_bytes(free)} of host memory available; "
            "lower train_size or heldout_size"
        )
    if s.dataset != "cifar10":
        load_dataset(
            s.dataset,
            case.family,
            config,
            train_size=s.train_size,
            heldout_size=s.heldout_size,
            label_noise=s.label_noise,
        )


def skip_reason(case: Case, p: Plan, free_bytes: int) -> str | None:
    need = predicted_peak_bytes(case, p)
    allowed = grid.MEMORY_HEADROOM * free_bytes
    if need > allowed:
        return (
            f"predicted to need {fmt_bytes(need)}, more than {grid.MEMORY_HEADROOM:.0%} of the "
            f"{fmt_bytes(free_bytes)} free on {case.device}"
        )
    return None


class Unplannable(Exception):
    """A case that cannot be planned here: recorded ``skipped`` with the reason, the grid goes
    on (one case the planner fails on must not stop the others)."""


def _plan(case: Case, recipe: Recipe, free: int) -> Plan:
    """The case's plan in its ``recipe``, at its ``max`` batch where it asks for one
    (``Unplannable`` where none fits); a planner fault (not the user's input) is ``Unplannable``
    too, with its reason."""
    try:
        if recipe.batch_size != "max":
            return plan_for(case, recipe)
        try:
            fit = max_batch(case, recipe, memory_limit(case, free))
        except UserError as exc:
            raise Unplannable(str(exc)) from exc
        return plan_for(case, recipe.with_batch(fit.batch_size))
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise Unplannable(f"could not be planned: {type(exc).__name__}: {first}") from exc


def precisions_of(spec: GridSpec) -> tuple[precisions.Precision, ...]:
    """The precisions any family of the grid runs in."""
    names = {n for fam in spec.sizes for n in spec.alternatives(fam, "precision")}
    return tuple(precisions.get(n) for n in sorted(names))


@dataclass
class Campaign:
    spec: GridSpec
    cases: list[Case]
    skipped: dict[str, str]
    out: Path
    resume: bool
    settings: Settings = field(default_factory=Settings)
    env: dict = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    #: The fork server ``prepare`` started, importing while the grid was planned; ``run`` hands
    #: it to the runner, which closes it (a campaign never run drops it: the server ends when
    #: its input closes, and with this process).
    launcher: Launcher | None = None
    #: The plans made while checking the grid, by case id, handed to the workers so that none
    #: replays its step again; a ``max`` batch is not here: its worker confirms it by a step.
    plans: dict[str, Plan] = field(default_factory=dict)

    def run(
        self, progress: ShowProgress | None = None, stop: Callable[[Case], bool] | None = None
    ) -> list[dict]:
        """The cases through the runner; ``progress`` and ``stop`` as ``runner.run_cases`` takes
        them."""
        from scaling_bench.engine.runner import run_cases

        execute, derive, known = EXECUTE, None, {k: {"plan": p} for k, p in self.plans.items()}
        if self.spec.value("strategy"):
            from scaling_bench.engine.distributed.aggregate import with_scaling_efficiency

            execute, known = DISTRIBUTED_EXECUTE, {}
            derive = with_scaling_efficiency(load_records(self.out / RESULTS_FILE))
        return run_cases(
            self.cases,
            execute,
            self.out,
            timeout_s=self.spec.value("timeout_s"),
            env=self.env,
            resume=self.resume,
            progress=progress,
            skipped=self.skipped,
            derive=derive,
            settings=self.settings,
            launcher=self._take_launcher(),
            known=known,
            stop=stop,
        )

    def _take_launcher(self) -> Launcher | None:
        launcher, self.launcher = self.launcher, None
        return launcher


def prepare(
    spec: GridSpec,
    out: Path,
    resume: bool = False,
    settings: Settings | None = None,
    max_cases: int = grid.MAX_CASES,
    shard: Shard | None = None,
) -> Campaign:
    """Everything that can fail on bad input fails here, before the first worker starts.

    ``max_cases`` bounds the whole grid, sharded or not. With ``shard``, the campaign holds only
    that shard's cases (``config.shard``), taken after the whole grid is built and checked and
    before any case is planned: a shard plans, skips and records only its own cases."""
    from scaling_bench.engine.distributed.launch import check_launch, launch_env
    from scaling_bench.hardware.peaks import fingerprint, measured_gemm_peak, peak_flops

    settings = settings or Settings()
    if settings.threads:  # the plans (CPU kernels' scratch) and the GEMM peak: the workers' own
        import torch

        torch.set_num_threads(settings.threads)
    grid.check_size(spec, max_cases)
    device = spec.value("device")  # resolved once, by ``grid.select``
    check_launch(spec, device, settings)
    check_parallel(settings.parallel, device, spec.value("strategy"))
    ensure_writable_dir(out)
    for prec in precisions_of(spec):
        if warning := dtype_warning(device, prec.peak_name):
            print(f"scaling-bench: warning: {warning}", file=sys.stderr)
    if device == "cpu" and "max-autotune" in {
        m for fam in spec.sizes for m in spec.alternatives(fam, "compile")
    }:
        print(f"scaling-bench: warning: {compiled.CPU_AUTOTUNE_WARNING}", file=sys.stderr)
    cases = grid.build_cases(spec, device)
    recipes = {c.case_id: Recipe.of(c) for c in cases}
    skipped = {c.case_id: reason for c in cases if (reason := unsupported(c, recipes[c.case_id]))}
    if len(skipped) == len(cases):
        raise UserError(next(iter(skipped.values())))  # nothing of the grid could run
    if shard is not None:
        cases = shard.select(cases)
        skipped = {c.case_id: skipped[c.case_id] for c in cases if c.case_id in skipped}
    free = free_memory_bytes(device)
    free_host = free if device == "cpu" else None  # measured once, when a case needs it
    runnable = [p for p in precisions_of(spec) if p.skip_reason(device) is None]
    if device == "cpu" and settings.peak_flops is None:
        for dtype in {p.compute_dtype for p in runnable}:  # once per run, not in every worker
            measured_gemm_peak(dtype, refresh=True)  # before the server below loads the CPU
    else:
        for prec in runnable:  # an unknown GPU fails before any case runs
            peak_flops(device, prec.compute_dtype, settings.peak_flops, tf32=prec.tf32)
    launcher = early_launcher(settings)  # it imports torch while the cases are planned
    plans: dict[str, Plan] = {}
    try:
        for case in (c for c in cases if c.case_id not in skipped):
            try:
                p = _plan(case, recipes[case.case_id], free)
            except Unplannable as exc:
                skipped[case.case_id] = str(exc)
                continue
            if case.batch_size != "max":  # a max batch is confirmed by a step in the worker
                plans[case.case_id] = p  # once per case: it replays a step
            if any(w.needs is Needs.OWN_MODELS for w in ordered(case.workloads)):
                if free_host is None:
                    free_host = free_memory_bytes("cpu")
                check_convergence_data(case, p.config, free_host)
            if reason := skip_reason(case, p, free):
                skipped[case.case_id] = reason
        env = fingerprint() | {"malloc": malloc.in_effect(settings.malloc)}
        env |= launch_env(spec, device) if spec.value("strategy") else {}
    except BaseException:
        if launcher is not None:
            launcher.close()
        raise
    return Campaign(spec, cases, skipped, out, resume, replace(settings), env=env,
                    launcher=launcher, plans=plans)  # fmt: skip
