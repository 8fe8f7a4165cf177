"""A case is a value: one point of a grid, every axis set, with a stable readable id.

``Case`` is generated from ``axes.AXES``: one field per axis, in that order, so ``Case("gpt",
1e8, "bf16")`` reads as family, size, precision. Its ``case_id`` joins the axes' tokens
(``gpt-1e8-bf16-cuda``), so results join across runs, machines and front-ends; axes without a
token (the workloads, the timing budget, the convergence settings) are left out of the id, and
the record's ``case`` holds them in full. A case does no work: planning it is the planner's job.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import Field, asdict, dataclass, field, fields, make_dataclass, replace
from functools import cached_property
from types import GenericAlias
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NotRequired, Required, Self

from pydantic import ConfigDict, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from scaling_bench.config.axes import AXES, BY_NAME, Axis, declared_defaults
from scaling_bench.config.sizes import format_size
from scaling_bench.core.precision import PRECISIONS
from scaling_bench.models import FAMILY_NAMES

#: Axes under their former names in older records: a ``dtype`` was the precision of today.
_RENAMED = {"dtype": "precision"}
#: Axes whose value is a mapping, kept in the case as sorted ``(key, value)`` pairs (hashable).
_MAPPINGS = ("overrides", "convergence")
#: Axes without a default: a case names them.
_REQUIRED = ("family", "target_params")


def _hashable(values: dict[str, object]) -> tuple[tuple[str, object], ...]:
    """JSON gives lists where the config had tuples; a case must stay hashable and equal."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))


class CaseDict(dict[str, Any]):
    """A record's ``case`` that keeps the ``Case`` it describes once parsed.

    A report asks each record's case a dozen times (its series, whether a section claims it,
    its batch plot): parsed anew each time, that was a third of a 20k-record report's time."""

    __slots__ = ("parsed",)

    def __init__(self, data: dict[str, Any]) -> None:
        super().__init__(data)
        self.parsed: Any = None


class _CaseBase:
    """What every generated ``Case`` can say about itself."""

    if TYPE_CHECKING:  # the fields it reads, which the generated class has
        __dataclass_fields__: ClassVar[dict[str, Field[Any]]]
        nproc_per_node: int
        nnodes: int

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @cached_property  # a frozen case: asked of every record many times over by a report
    def case_id(self) -> str:
        tokens = (axis.token(self) for axis in AXES if axis.token is not None)
        return "-".join(t for t in tokens if t)

    @cached_property
    def series_id(self) -> str:
        """The case id without its size: every axis but N, one line on a scaling plot."""
        return replace(self, target_params=1.0).case_id.replace(f"-{format_size(1.0)}-", "-", 1)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in _MAPPINGS:
            out[name] = dict(getattr(self, name))
        out["case_id"] = self.case_id
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The case a record's ``case`` describes; keys of axes it lacks take their defaults.
        A ``CaseDict`` is parsed once."""
        if isinstance(data, CaseDict):
            if not isinstance(data.parsed, cls):
                data.parsed = cls._parsed(data)
            parsed: Self = data.parsed
            return parsed
        return cls._parsed(data)

    @classmethod
    def _parsed(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)}
        data = {_RENAMED.get(k, k): v for k, v in data.items()}
        kwargs = {k: v for k, v in data.items() if k in known}
        if "workloads" in kwargs:
            kwargs["workloads"] = tuple(kwargs["workloads"])
        for name in _MAPPINGS:
            kwargs[name] = _hashable(dict(kwargs.get(name) or {}))
        return cls(**kwargs)


def _default(axis_name: str, value: Any) -> Any:
    if axis_name == "workloads":
        return field(default_factory=lambda: declared_defaults("workloads"))
    return field(default=value)


if TYPE_CHECKING:
    _DEFAULT: Any = None  # stands for the axis's default: mypy needs only to know it has one

    @dataclass(frozen=True)
    class Case(_CaseBase):
        """What mypy sees of the class generated below: the axes' fields in ``AXES`` order with
        their values' types, a default where the axis has one (tests/test_grid.py holds the two
        alike)."""

        family: str
        target_params: float
        precision: str = _DEFAULT
        device: str = _DEFAULT
        workloads: tuple[str, ...] = _DEFAULT
        batch_size: int | Literal["max"] | None = _DEFAULT
        memory_limit_bytes: int | None = _DEFAULT
        optimizer: str = _DEFAULT
        compile: str = _DEFAULT
        activation_checkpointing: str = _DEFAULT
        overrides: tuple[tuple[str, Any], ...] = _DEFAULT
        budget_s: float = _DEFAULT
        ci_target: float = _DEFAULT
        timeout_s: float = _DEFAULT
        nproc_per_node: int = _DEFAULT
        nnodes: int = _DEFAULT
        strategy: str | None = _DEFAULT
        convergence: tuple[tuple[str, Any], ...] = _DEFAULT
        isolation: str = _DEFAULT
        prompt_len: int | None = _DEFAULT
        gen_len: int | None = _DEFAULT

else:
    Case = make_dataclass(
        "Case",
        [
            (a.name, Any, _default(a.name, a.default))
            if a.default is not None or a.name not in _REQUIRED
            else (a.name, Any)
            for a in AXES
        ],
        bases=(_CaseBase,),
        frozen=True,
    )
    Case.__module__ = __name__
    Case.__doc__ = "One case of a grid: a value per axis (``axes.AXES``)."


def _recorded_kind(axis: Axis) -> Any:
    """An axis's type in a record's ``case``: a list or tuple (``to_dict`` keeps tuples, JSON
    has lists) for a sequence, an object for a mapping."""
    if axis.name in _MAPPINGS:
        return dict[str, Any]
    return GenericAlias(Sequence, (axis.kind,)) if axis.sequence else axis.kind  # Sequence[kind]


#: A record's ``case`` (``Case.to_dict``), for the record schema: every axis's value of its type,
#: so a hand-edited or foreign record (``"case": {}``, ``"target_params": "1e5"``) is refused by
#: the store with its field instead of failing in whichever reader builds its ``Case``. Keys of
#: other versions pass unchecked. (Its keys are built from the axes, which mypy cannot follow: to
#: it, a record's case is a dict.)
if TYPE_CHECKING:
    RecordedCase = dict[str, Any]
else:
    RecordedCase = with_config(ConfigDict(extra="allow", strict=True))(
        TypedDict(
            "RecordedCase",
            {
                "case_id": NotRequired[str],
                **{old: NotRequired[_recorded_kind(BY_NAME[new])] for old, new in _RENAMED.items()},
                **{
                    a.name: (Required if a.name in _REQUIRED else NotRequired)[_recorded_kind(a)]
                    for a in AXES
                },
            },
        )
    )

_ID = re.compile(
    rf"^(?P<family>{'|'.join(FAMILY_NAMES)})-(?P<size>\d+(\.\d+)?e\d+)"
    rf"-(?P<precision>{'|'.join(sorted(PRECISIONS, key=len, reverse=True))})"
    r"-(?P<device>[a-z]+)(?:-(?P<rest>.+))?$"
)


def parse_case_id(text: str) -> dict[str, str] | None:
    """A case id's leading axes (family, size, precision, device) and the rest of its tokens as one
    string; None where ``text`` is not a case id. The one place an id is read back."""
    match = _ID.match(text)
    return match.groupdict() if match else None
