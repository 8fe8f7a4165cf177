"""The axes of a grid, declared once.

An axis is one thing a case can vary or set: its type, its default, the CLI flag, the grid-file
key, the variable the pytest and asv front-ends read, its case-id token and its validation.
``Case`` is generated from this list, and so are the case id, the grid file's schema, the flags
of ``scaling-bench run`` and the ``--sb-*`` options of the pytest plugin: adding an axis is one
entry here (and the code that uses its value).

``multi`` axes are grid dimensions: a grid holds several values and its cases are their product
(families × sizes × dtypes × …); every other axis holds one value for the whole grid. A multi axis
must have a case-id token, or two cases of one grid would share an id.

Values are validated by pydantic: strictly for grid files (``batch_size = true`` or
``budget_s = "0.2"`` are refused, not coerced), from text for flags. Names that a higher layer
registers (workloads) are declared into ``declare_choice`` by that layer when it loads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from scaling_bench.config.sizes import format_size, parse_sizes
from scaling_bench.core.errors import UserError
from scaling_bench.core.optimizers import DEFAULT_OPTIMIZER, OPTIMIZERS
from scaling_bench.core.precision import PRECISIONS
from scaling_bench.models import FAMILY_NAMES

#: A case's or a workload's seconds: finite and positive; a week at most, which keeps every
#: timer and ``faulthandler`` deadline representable.
MAX_SECONDS = 7 * 24 * 3600.0
Seconds = Annotated[float, Field(gt=0, le=MAX_SECONDS, allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]
#: A parameter count: what a record's case holds (flags are read by ``parse_sizes``).
Size = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_BYTE_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def _bytes(raw: Any) -> Any:
    """``2GiB``, ``512M`` or ``1e9`` as a number of bytes (binary units); other values as given."""
    if not isinstance(raw, str):
        return raw
    match = re.fullmatch(r"\s*([0-9.e+]+)\s*([kmgt]?)(i?b)?\s*", raw.lower())
    if match is None:
        raise ValueError("not a number of bytes (e.g. 2GiB, 512MiB, 1e9)")
    return int(float(match[1]) * _BYTE_UNITS[match[2]])


Bytes = Annotated[int, BeforeValidator(_bytes), Field(ge=1)]


def _share(raw: Any) -> Any:
    """``5%`` or ``0.05`` as a fraction; other values as given."""
    if isinstance(raw, str) and raw.strip().endswith("%"):
        try:
            return float(raw.strip()[:-1]) / 100
        except ValueError:
            raise ValueError("not a percentage (e.g. 2%)") from None
    return raw


#: A relative confidence target: above 0, at most a half (a wider interval says nothing).
Share = Annotated[float, BeforeValidator(_share), Field(gt=0, le=0.5, allow_inf_nan=False)]
STRATEGIES = ("ddp", "fsdp")
#: ``torch.compile`` modes; ``eager`` is no compilation (``reduce-overhead`` uses CUDA graphs).
COMPILE_MODES = ("eager", "default", "max-autotune", "reduce-overhead")
#: ``full``: every repeated block of the family recomputed in backward.
CHECKPOINTING = ("none", "full")

#: The sections of ``scaling-bench run --help``: what the grid holds, how each case computes,
#: how it is measured, where it runs. (The command line adds its own flags to each.)
GROUPS = ("grid", "recipe", "measuring", "distributed")

_declared: dict[str, dict[str, tuple[bool, bool]]] = {}


def declare_choice(axis: str, value: str, default: bool = False, quick: bool = True) -> None:
    """A name a higher layer provides (a workload): whether grids include it when none is named
    (``default``), and whether a CPU's quick grid does (``quick``)."""
    _declared.setdefault(axis, {})[value] = (default, quick)


def declared(axis: str) -> tuple[str, ...]:
    return tuple(_declared.get(axis, {}))


def declared_quick(axis: str) -> tuple[str, ...]:
    return tuple(name for name, (_, quick) in _declared.get(axis, {}).items() if quick)


def declared_defaults(axis: str) -> tuple[str, ...]:
    return tuple(name for name, (default, _) in _declared.get(axis, {}).items() if default)


@dataclass(frozen=True)
class Axis:
    """One axis. ``kind`` is a single value's type (pydantic annotation); a ``sequence`` axis's
    value is a tuple of such values (the workloads of a case); ``token(case)`` is the axis's part
    of the case id, or None to leave it out."""

    name: str
    kind: Any
    default: Any
    help: str
    flag: str | None = None
    key: str | None = None
    env: str | None = None
    multi: bool = False
    sequence: bool = False
    token: Callable[[Any], str | None] | None = None
    choices: Callable[[], Sequence[str]] | None = None
    parse_text: Callable[[str, str], tuple[Any, ...]] | None = None
    #: What one value is called in messages (``unknown workload 'x'``).
    noun: str = ""
    #: Former flags and grid-file keys that still name this axis (``--dtype``, ``dtypes``).
    aliases: tuple[str, ...] = ()
    key_aliases: tuple[str, ...] = ()
    #: The section of ``scaling-bench run --help`` its flag is listed in (``GROUPS``).
    group: str = "grid"

    def check_choice(self, value: Any, what: str) -> Any:
        if self.choices is not None and value is not None:
            allowed = tuple(self.choices())
            if value not in allowed:
                noun = self.noun or self.name
                raise UserError(f"{what}: unknown {noun} {value!r}; choose from "
                                f"{', '.join(allowed)}")  # fmt: skip
        return value

    def _one(self, raw: Any, what: str, strict: bool) -> Any:
        try:
            value = _adapter(self.kind, strict).validate_python(raw)
        except ValidationError as exc:
            raise UserError(f"{what} {raw!r}: {_reason(exc)}") from None
        return self.check_choice(value, what)

    def parse(self, text: str, what: str | None = None) -> tuple[Any, ...]:
        """The grid's alternatives from flag text (``fp32,bf16``); for one-valued axes, one."""
        what = what or self.flag or self.name
        if self.parse_text is not None:
            return self.parse_text(text, what)
        if self.multi or self.sequence:
            items = [s.strip() for s in str(text).split(",")]
            if not any(items):
                raise UserError(f"{what} {text!r}: no {self.noun or self.name} given")
            if not all(items):
                raise UserError(f"{what} {text!r}: empty item")
            values = tuple(dict.fromkeys(self._one(item, what, strict=False) for item in items))
            return (values,) if self.sequence else values
        if not str(text).strip():
            raise UserError(f"{what} {text!r}: empty")
        return (self._one(text.strip(), what, strict=False),)

    def from_file(self, raw: Any, what: str) -> tuple[Any, ...]:
        """The grid's alternatives from a grid file's value, its types checked strictly."""
        if isinstance(raw, str) and (self.multi or self.sequence or self.parse_text):
            return self.parse(raw, what)
        if self.parse_text is not None:
            if not isinstance(raw, list) or not raw:
                raise UserError(f"{what} = {raw!r}: a string or a non-empty list")
            return tuple(sorted({v for item in raw for v in self.parse_text(str(item), what)}))
        if self.multi or self.sequence:
            items = raw if isinstance(raw, list) else [raw]
            if not items:
                raise UserError(f"{what} = []: no {self.noun or self.name} given")
            values = tuple(dict.fromkeys(self._one(item, what, strict=True) for item in items))
            return (values,) if self.sequence else values
        return (self._one(raw, what, strict=True),)


_ADAPTERS: dict[tuple[int, bool], TypeAdapter[Any]] = {}


def _adapter(kind: Any, strict: bool) -> TypeAdapter[Any]:
    key = (id(kind), strict)
    if key not in _ADAPTERS:
        config = ConfigDict(strict=strict, allow_inf_nan=False)
        _ADAPTERS[key] = TypeAdapter(kind, config=config)
    return _ADAPTERS[key]


def _reason(exc: ValidationError) -> str:
    """pydantic's first complaint, in one line, lower-cased like our own messages; in a list,
    with the item it is about (``layers = 1,1,1`` for four layers: item 4 is missing)."""
    error = exc.errors()[0]
    msg = error["msg"][:1].lower() + error["msg"][1:]
    loc = error["loc"]
    if loc and isinstance(loc[-1], int):
        item = f"item {loc[-1] + 1}"
        return f"{item} is missing" if error["type"] == "missing" else f"{item}: {msg}"
    return msg


def typed_value(kind: Any, raw: Any, what: str, strict: bool) -> Any:
    """``raw`` validated as ``kind`` (a config field's or a setting's type)."""
    try:
        return _adapter(kind, strict).validate_python(raw)
    except ValidationError as exc:
        raise UserError(f"{what} = {raw!r}: {_reason(exc)}") from None


def _strategy_token(case: Any) -> str | None:
    """Last, so a single-process case's id is the distributed one's without its suffix."""
    if not case.strategy:
        return None
    ranks = f"{case.nnodes}x{case.nproc_per_node}" if case.nnodes > 1 else case.world_size
    return f"{case.strategy}{ranks}"


def _overrides_token(case: Any) -> str | None:
    return "-".join(f"{k}={v}" for k, v in case.overrides) or None


def _tokens_token(case: Any) -> str | None:
    """A token budget is part of what a run is: one size at two budgets is two cases."""
    tokens = dict(case.convergence).get("tokens")
    return None if tokens is None else f"tokens{tokens}"


AXES: tuple[Axis, ...] = (
    Axis(
        "family", str, None, "model families: " + ",".join(FAMILY_NAMES),
        flag="--families", key="families", env="SCALING_BENCH_FAMILIES", multi=True,
        token=lambda c: c.family, choices=lambda: FAMILY_NAMES,
    ),
    Axis(
        "target_params", Size, None, "1e5,1e6 or 1e5:1e8:x10 (factor) or 1e5:1e8:7 (points)",
        flag="--sizes", key="sizes", env="SCALING_BENCH_SIZES", multi=True,
        token=lambda c: format_size(c.target_params), parse_text=parse_sizes, noun="size",
    ),
    Axis(
        "precision", str, "fp32", "precisions: " + ",".join(PRECISIONS),
        flag="--precision", key="precisions", env="SCALING_BENCH_PRECISION", multi=True,
        token=lambda c: c.precision, choices=lambda: tuple(PRECISIONS),
        aliases=("--dtype",), key_aliases=("dtypes",),
        group="recipe",
    ),
    Axis(
        "device", str, "cpu", "auto, cpu, cuda or cuda:N",
        flag="--device", key="device", env="SCALING_BENCH_DEVICE",
        token=lambda c: c.device.split(":")[0],
    ),
    Axis(
        "workloads", str, None, "the workloads each case runs, comma-separated",
        flag="--workloads", key="workloads", env="SCALING_BENCH_WORKLOADS", sequence=True,
        choices=lambda: declared("workloads"), noun="workload",
    ),
    Axis(
        "batch_size", Count | Literal["max"] | None, None,
        "samples per step (default: the family's); max: the largest that fits the device",
        flag="--batch-sizes", key="batch_sizes", env="SCALING_BENCH_BATCH_SIZE", multi=True,
        token=lambda c: None if c.batch_size is None else f"bs{c.batch_size}",
        aliases=("--batch-size",), key_aliases=("batch_size",), noun="batch size",
    ),
    Axis(
        "memory_limit_bytes", Bytes | None, None,
        "bytes a max batch may use, e.g. 2GiB (default: the device's free memory; 256MiB on a CPU)",
        flag="--memory-limit", key="memory_limit",
    ),
    Axis(
        "optimizer", str, DEFAULT_OPTIMIZER, "optimizers: " + ",".join(OPTIMIZERS),
        flag="--optimizer", key="optimizer", env="SCALING_BENCH_OPTIMIZER", multi=True,
        token=lambda c: None if c.optimizer == DEFAULT_OPTIMIZER else c.optimizer,
        choices=lambda: OPTIMIZERS,
        group="recipe",
    ),
    Axis(
        "compile", str, "eager", "torch.compile modes: " + ",".join(COMPILE_MODES),
        flag="--compile", key="compile", env="SCALING_BENCH_COMPILE", multi=True,
        token=lambda c: None if c.compile == "eager" else f"compile-{c.compile}",
        choices=lambda: COMPILE_MODES, noun="compile mode",
        group="recipe",
    ),
    Axis(
        "activation_checkpointing", str, "none",
        "activation checkpointing: " + ",".join(CHECKPOINTING),
        flag="--activation-checkpointing", key="activation_checkpointing",
        env="SCALING_BENCH_ACTIVATION_CHECKPOINTING", multi=True,
        token=lambda c: None if c.activation_checkpointing == "none"
        else f"ac-{c.activation_checkpointing}",
        choices=lambda: CHECKPOINTING, noun="activation checkpointing",
        group="recipe",
    ),
    Axis("overrides", tuple, (), "config fields set per family", token=_overrides_token),
    Axis(
        "budget_s", Seconds, 5.0, "seconds of timing per workload",
        flag="--budget", key="budget_s",
        group="measuring",
    ),
    Axis(
        "ci_target", Share, 0.02, "a timing settles when its median's 95% CI half-width is "
        "within this share of it (2%; the CPU quick grid: 5%)",
        flag="--ci-target", key="ci_target",
        group="measuring",
    ),
    Axis(
        "timeout_s", Seconds, 300.0, "seconds per case, worker start included",
        flag="--timeout", key="timeout_s",
        group="measuring",
    ),
    Axis(
        "nproc_per_node", Count, 1, "ranks on this node (one per GPU)",
        flag="--nproc-per-node", key="nproc_per_node",
        group="distributed",
    ),
    Axis(
        "nnodes", Count, 1, "nodes, each running this same command",
        flag="--nnodes", key="nnodes",
        group="distributed",
    ),
    Axis(
        "strategy", str | None, None, "ddp or fsdp: run each case under torchrun",
        flag="--strategy", key="strategy", token=_strategy_token, choices=lambda: STRATEGIES,
        group="distributed",
    ),
    Axis("convergence", tuple, (), "the convergence workload's settings", token=_tokens_token),
    Axis(
        "isolation", str, "warn", "warn or error: keep, or record as skipped, a case whose GPU "
        "had other compute processes", flag="--isolation", key="isolation",
        choices=lambda: ("warn", "error"),
        group="measuring",
    ),
    Axis(
        "prompt_len", Count | None, None, "inference: prompt tokens (default: half the context)",
        flag="--prompt-len", key="prompt_lens", env="SCALING_BENCH_PROMPT_LEN", multi=True,
        token=lambda c: None if c.prompt_len is None else f"p{c.prompt_len}", noun="prompt length",
    ),
    Axis(
        "gen_len", Count | None, None,
        "inference: tokens decoded after the prompt (default: a quarter of the context)",
        flag="--gen-len", key="gen_lens", env="SCALING_BENCH_GEN_LEN", multi=True,
        token=lambda c: None if c.gen_len is None else f"g{c.gen_len}", noun="generation length",
    ),
)  # fmt: skip

BY_NAME = {axis.name: axis for axis in AXES}
#: Axes whose values a grid holds per family: sizes, and config overrides.
PER_FAMILY = ("target_params", "overrides")


def axis(name: str) -> Axis:
    return BY_NAME[name]
