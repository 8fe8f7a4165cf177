"""The record's schema, so that a file's mistakes are found where it is read, not deep in a report.

``report``, ``compare`` and the fits index records without looking (``r["metrics"][name]
["value"]``); a record of the wrong shape would crash them with a traceback far from the line
that caused it. Every record is checked here when it is written and when it is read, and the
first problem found becomes one line naming the field: ``metrics: should be an object, got a
list``.

Numbers must be finite (JSON has no NaN or infinity; a figure that is not finite is recorded as
null) and of their JSON type: no coercion, since readers use the values as they are in the file.
A metric is ``{value, unit?, n?, median?, p10?, p90?, iqr?, samples?}`` plus any keys a workload
adds (``by_lr``, ``curves``, ``source``, ``converged``, …), which are kept unchecked.
A record's ``case`` holds each axis's value of its type (``config.case.RecordedCase``; ``family``
and ``target_params`` required): ``"case": {}`` is ``case.family: is missing``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, NotRequired

from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from scaling_bench.config.case import RecordedCase
from scaling_bench.core.errors import UserError

STATUSES = ("ok", "oom", "timeout", "crashed", "skipped", "diverged")

Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]


@with_config(ConfigDict(extra="allow", strict=True))
class Metric(TypedDict):
    """One figure; ``value`` is null where the measurement gave no finite number."""

    value: Finite | None
    unit: NotRequired[str]
    n: NotRequired[Count]
    median: NotRequired[Finite]
    p10: NotRequired[Finite]
    p90: NotRequired[Finite]
    iqr: NotRequired[Annotated[Finite, Field(ge=0)]]
    samples: NotRequired[list[Finite | None]]


@with_config(ConfigDict(strict=True))
class Record(TypedDict):
    """One case's record (README.md, "Records"); ``schema_version`` is checked before this."""

    schema_version: int
    case_id: Annotated[str, Field(min_length=1)]
    case: RecordedCase
    status: Literal[STATUSES]  # type: ignore[valid-type]
    error: str | None
    params: Count | None
    active_params: NotRequired[Count]
    config: dict[str, Any] | None
    metrics: dict[str, Metric]
    predicted: dict[str, Metric]
    env: dict[str, Any]
    started_at: str
    duration_s: Annotated[Finite, Field(ge=0)]


RECORD = TypeAdapter(Record)  # built once: building it costs more than checking a record
METRIC = TypeAdapter(Metric)
METRICS = TypeAdapter(dict[str, Metric])

_EXPECTED = {
    "dict_type": "should be an object",
    "list_type": "should be a list",
    "string_type": "should be a string",
    "int_type": "should be an integer",
    "float_type": "should be a number",
    "bool_type": "should be true or false",
    "finite_number": "should be a finite number",
    "missing": "is missing",
    "sequence_str": "should be a list",
}


def _json_kind(value: object) -> str:
    """How a JSON reader would name the value it found."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(loc: tuple[int | str, ...], within: str = "") -> str:
    """``("metrics", "x", "samples", 2)`` -> ``metrics.x.samples[2]``, after ``within``."""
    out = within
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def describe(exc: ValidationError, within: str = "") -> str:
    """The first problem as ``field: should be …, got …``: one line, in JSON's words."""
    error = exc.errors(include_url=False)[0]
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "literal_error":
        expected = f"should be one of {ctx['expected'].replace(' or ', ', ')}"
    elif kind == "greater_than_equal":
        expected = f"should be at least {ctx['ge']:g}"
    elif kind == "string_too_short":
        expected = "should not be empty"
    else:
        expected = _EXPECTED.get(kind, error["msg"][0].lower() + error["msg"][1:])
    found = "" if kind == "missing" else f", got {_json_kind(error['input'])}"
    field = _field(error["loc"], within)
    return f"{field}: {expected}{found}" if field else f"{expected}{found}"


def validated(adapter: TypeAdapter[Any], data: object, where: str, within: str = "") -> Any:
    """``data`` checked by ``adapter``, or a UserError ``where: field: should be …``; ``within``
    names where ``data`` sits in its file, for a field path from the file's top."""
    try:
        return adapter.validate_python(data)
    except ValidationError as exc:
        raise UserError(f"{where}: {describe(exc, within)}") from None
