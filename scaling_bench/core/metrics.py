"""What a metric means, declared once where it is measured, so readers never guess from its name.

A ``MetricSpec`` says a metric's unit, which way is better, how it was obtained and how ranks of a
distributed case combine it. Meters and workloads declare their specs and register them here;
``compare``, the fits, the report and the foreign-format readers look them up with ``spec``. A
name nobody declared is an error (``UnknownMetric``), not a figure silently left out.

Kinds:

- ``measured``: a figure with noise (a time, a memory peak): compared with a significance test.
- ``counted``: exact, the same on every run (bytes on disk, a count of parameters): compared by
  face value.
- ``derived``: its source metric (``derived_from``) scaled by a constant (samples/s from the step
  time): it shares its source's verdict, so ``compare`` leaves it out where the source is present.
- ``bookkeeping``: about the measurement, not the system (seconds spent timing, the peak used for
  MFU): never compared.
- ``predicted``: a figure from theory only, kept in the record's ``predicted`` section.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Literal

Kind = Literal["measured", "counted", "derived", "bookkeeping", "predicted"]
Reduce = Literal["max", "min", "sum", "mean"]
HIGHER = 1
LOWER = -1
NEITHER = 0


class UnknownMetric(KeyError):
    """A metric name that no meter or workload declared."""


@dataclass(frozen=True)
class MetricSpec:
    """One metric's meaning. ``better`` is ``HIGHER``, ``LOWER`` or ``NEITHER`` (a setting such as
    the best learning rate, which has no good direction). ``reduce`` combines the ranks of a
    distributed case: the slowest rank's time and the largest rank's memory are ``max``, energy is
    ``sum``. ``label`` is what a person reads in tables and plots."""

    name: str
    unit: str
    better: int
    kind: Kind = "measured"
    derived_from: str | None = None
    reduce: Reduce = "max"
    label: str = ""
    #: Whether a move beyond the threshold can fail ``compare``'s gate. A figure that moves from
    #: run to run with state no process controls (RSS with the allocator's and the fork
    #: server's heap) is compared and shown, but its verdict is only ever ``inconclusive``.
    gated: bool = True

    def __post_init__(self) -> None:
        if self.better not in (HIGHER, LOWER, NEITHER):
            raise ValueError(f"{self.name}: better={self.better!r} is not HIGHER, LOWER or NEITHER")
        if (self.kind == "derived") != (self.derived_from is not None):
            raise ValueError(f"{self.name}: a derived metric, and only one, names its source")

    @property
    def compared(self) -> bool:
        """Whether ``compare`` looks at it by default (a derived figure only without its source)."""
        return self.kind not in ("bookkeeping", "predicted") and self.better != NEITHER

    @property
    def counted(self) -> bool:
        return self.kind == "counted"

    def prefixed(self, prefix: str) -> MetricSpec:
        """The same meaning under ``{prefix}_{name}``: a meter's peak inside one workload."""
        source = f"{prefix}_{self.derived_from}" if self.derived_from else None
        label = f"{prefix} {self.label or self.name}"
        return replace(self, name=f"{prefix}_{self.name}", derived_from=source, label=label)


_SPECS: dict[str, MetricSpec] = {}


def register(specs: Iterable[MetricSpec]) -> None:
    """Declare metrics; declaring the same name twice with another meaning is a bug."""
    for s in specs:
        known = _SPECS.get(s.name)
        if known is not None and known != s:
            raise ValueError(f"metric {s.name!r} declared twice: {known} and {s}")
        _SPECS[s.name] = s


def spec(name: str) -> MetricSpec:
    try:
        return _SPECS[name]
    except KeyError:
        raise UnknownMetric(name) from None


def find(name: str) -> MetricSpec | None:
    return _SPECS.get(name)


def all_specs() -> Iterator[MetricSpec]:
    return iter(list(_SPECS.values()))


def prefixed(prefix: str, specs: Iterable[MetricSpec]) -> tuple[MetricSpec, ...]:
    return tuple(s.prefixed(prefix) for s in specs)
