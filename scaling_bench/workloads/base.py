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

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, ClassVar

from scaling_bench.config.axes import declare_choice
from scaling_bench.core.errors import UserError
from scaling_bench.core.metrics import LOWER, NEITHER, MetricSpec
from scaling_bench.core.metrics import register as register_specs

if TYPE_CHECKING:
    import torch

    from scaling_bench.config.case import Case
    from scaling_bench.predict.plan import Plan
    from scaling_bench.workloads.setup import CaseSetup


class Needs(StrEnum):
    """The state of the case's model a workload needs before it starts."""

    WEIGHTS = "weights"  # the built model
    TRAINING = "training"  # the model after a training step: gradients and optimizer state exist
    OWN_MODELS = "own models"  # it builds models of its own; the case's model is freed first


@dataclass(frozen=True)
class Column:
    """A column of the run's summary table: the first of ``metrics`` a record has, formatted
    with ``fmt`` (a format spec, or ``"bytes"``), from the record's ``section``."""

    header: str
    metrics: tuple[str, ...]
    fmt: str
    section: str = "metrics"


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
    """A workload's declaration; subclasses set the class attributes and override the steps."""

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

    def skip_reason(self, case: Case) -> str | None:
        """Why this workload cannot run on ``case``; None when it can."""
        if self.families is not None and case.family not in self.families:
            return f"{self.name} does not support the {case.family} family"
        if case.strategy not in self.strategies:
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
    declare_choice("workloads", workload.name, default=workload.default, quick=workload.quick)
    register_specs((*workload.specs, *workload.predicted_specs, *_whole_time(workload.name)))
    return workload


def _whole_time(name: str) -> tuple[MetricSpec, MetricSpec]:
    """A whole workload's seconds: as pytest-benchmark times a workload without a step, and as
    the engine records it (``_wall_s``, bookkeeping: what a case's duration is made of)."""
    return (
        MetricSpec(f"{name}_s", "s", LOWER, label=f"{name} (whole workload)"),
        MetricSpec(f"{name}_wall_s", "s", NEITHER, "bookkeeping", label=f"{name} wall time"),
    )


def get(name: str) -> Workload:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown workload {name!r}; choose from {', '.join(_REGISTRY)}") from None


def ordered(names: Iterable[str] | None = None) -> list[Workload]:
    """The workloads named (all, without names), in the order a case runs them."""
    chosen = _REGISTRY.values() if names is None else [get(n) for n in names]
    return sorted(chosen, key=lambda w: w.order)


def with_step() -> list[Workload]:
    """Workloads that time one step per call: what pytest-benchmark and asv time directly, and
    what the fits hold against FLOPs."""
    return [w for w in ordered() if w.timed]
