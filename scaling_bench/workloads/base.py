"""What a workload is, and the registry every part of the product iterates.

A workload is one thing measured on a case (a forward pass, a training step, a checkpoint, a
convergence study). Its module declares one ``Workload`` subclass and registers an instance:
its name and order, the state it needs, which families and strategies it supports (and why not
the others), how it measures, what it derives from the measurement, what it predicts, its metric
specs and its summary columns. The engine, the feasibility check, the distributed ranks, the
analysis, the report and the pytest and asv suites read this registry; none of them names a
workload.

``measure`` runs on every rank of a distributed case and returns that rank's raw figures;
``derive`` computes figures that follow from them (throughput from the step time) once the ranks'
figures are combined, by each metric spec's reduction. Alone, a process does both in turn.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

from scaling_bench.core.errors import UserError
from scaling_bench.core.metrics import MetricSpec
from scaling_bench.workloads import catalog
from scaling_bench.workloads.catalog import Column, Declared, Needs

if TYPE_CHECKING:
    import torch

    from scaling_bench.config.case import Case
    from scaling_bench.predict.plan import Plan
    from scaling_bench.workloads.setup import CaseSetup


@dataclass(frozen=True)
class Context:
    """What the engine hands a workload besides the built case.

    ``agree(values, "min" | "max")`` reduces figures over the ranks of a distributed case (the
    timer decides together when to stop); alone it is None. ``devices`` is how many devices'
    peaks add up for MFU (on a CPU, the ranks of a node share one machine).
    """

    peak_flops: float
    baseline_rss_bytes: int | None = None
    #: The best GEMM measured on the device, where it differs from ``peak_flops`` (a GPU's table).
    achievable_flops: float | None = None
    agree: Callable[[list[float], str], list[float]] | None = None
    world_size: int = 1
    devices: int = 1
    strategy: str | None = None

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or self.agree is not None


class Workload:
    """A workload's declaration and its steps; subclasses set the class attributes and override
    the steps. A built-in takes the attributes a reader of records needs from the catalog
    (``class Train(TimedWorkload, declared=catalog.TRAIN)``); a plugin sets them itself."""

    name: ClassVar[str]
    order: ClassVar[int]
    needs: ClassVar[Needs] = Needs.WEIGHTS
    #: Whether it holds training state (gradients, optimizer state): the memory it is planned for.
    trains: ClassVar[bool] = False
    #: Whether a grid runs it when no workloads are named.
    default: ClassVar[bool] = True
    #: Whether a CPU's quick grid runs it (the GPU's runs every workload).
    quick: ClassVar[bool] = True
    specs: ClassVar[tuple[MetricSpec, ...]] = ()
    predicted_specs: ClassVar[tuple[MetricSpec, ...]] = ()
    columns: ClassVar[tuple[Column, ...]] = ()
    #: Families it supports; None: every family.
    families: ClassVar[tuple[str, ...] | None] = None
    #: Whether it times one step per call (``timed.TimedWorkload``).
    timed: ClassVar[bool] = False
    #: Strategies it supports, None being one process.
    strategies: ClassVar[tuple[str | None, ...]] = (None, "ddp", "fsdp")

    def __init_subclass__(cls, declared: Declared | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if declared is not None:
            for field in fields(Declared):
                setattr(cls, field.name, getattr(declared, field.name))

    @property
    def declared(self) -> Declared:
        """What a reader of its records needs of it (``catalog.Declared``)."""
        return Declared(**{field.name: getattr(self, field.name) for field in fields(Declared)})

    def skip_reason(self, case: Case) -> str | None:
        """Why this workload cannot run on ``case``; None when it can."""
        if self.families is not None and case.family not in self.families:
            return f"{self.name} does not support the {case.family} family"
        return self.strategy_reason(case.strategy)

    def strategy_reason(self, strategy: str | None) -> str | None:
        """Why this workload cannot run under ``strategy`` (None: one process); None when it
        can. The run's flags ask it to leave such workloads out of a preset's."""
        if strategy not in self.strategies:
            return f"{self.name} runs on one process; leave it out with --strategy"
        return None

    def step(self, setup: CaseSetup) -> Callable[[], object] | None:
        """The one step a front-end times (pytest-benchmark, asv), or None for a whole workload."""
        return None

    def measure(self, setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        raise NotImplementedError

    def derive(self, metrics: dict[str, dict], setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        """Figures that follow from the (rank-combined) measurement; none by default."""
        return {}

    def predict(self, plan: Plan, device: torch.device, ctx: Context) -> dict[str, dict]:
        """Theory under the names of the measurements it predicts; none by default."""
        return {}

    def outcome(self, metrics: dict[str, dict]) -> str | None:
        """A status other than ``ok`` that the figures call for (``diverged``), or None."""
        return None


_REGISTRY: dict[str, Workload] = {}


def register(workload: Workload) -> Workload:
    """Make ``workload`` known to every front-end: its name to the workloads axis, its metrics
    to the metric specs. A second workload of the same name is a bug."""
    if workload.name in _REGISTRY and type(_REGISTRY[workload.name]) is not type(workload):
        raise ValueError(f"workload {workload.name!r} registered twice")
    _REGISTRY[workload.name] = workload
    catalog.declare(workload.declared)
    return workload


def _registry() -> dict[str, Workload]:
    """Every workload registered, the built-ins' modules imported first: they import torch,
    which a reader of records never needs (``declarations``), so not before a workload runs."""
    for declared in catalog.BUILTIN:
        importlib.import_module(f"scaling_bench.workloads.{declared.name}")
    return _REGISTRY


def get(name: str) -> Workload:
    registry = _registry()
    try:
        return registry[name]
    except KeyError:
        raise UserError(f"unknown workload {name!r}; choose from {', '.join(registry)}") from None


def ordered(names: Iterable[str] | None = None) -> list[Workload]:
    """The workloads named (all, without names), in the order a case runs them."""
    chosen = _registry().values() if names is None else [get(n) for n in names]
    return sorted(chosen, key=lambda w: w.order)


def with_step() -> list[Workload]:
    """Workloads that time one step per call: what pytest-benchmark and asv time directly, and
    what the fits hold against FLOPs."""
    return [w for w in ordered() if w.timed]


def declarations(names: Iterable[str] | None = None) -> list[Declared]:
    """What a reader of records needs of the workloads named (all, without names), in the order
    a case runs them: the built-ins' from the catalog, a plugin's from its registration. No
    workload's module is imported, so no torch."""
    known = {d.name: d for d in catalog.BUILTIN} | {n: w.declared for n, w in _REGISTRY.items()}
    if names is None:
        chosen = list(known.values())
    else:
        unknown = [n for n in names if n not in known]
        if unknown:
            raise UserError(f"unknown workload {unknown[0]!r}; choose from {', '.join(known)}")
        chosen = [known[n] for n in names]
    return sorted(chosen, key=lambda d: d.order)


def declarations_with_step() -> list[Declared]:
    """``with_step``'s workloads, as ``declarations``."""
    return [d for d in declarations() if d.timed]
