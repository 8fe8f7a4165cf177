"""Grid specs: the presets, grid files and flags that choose a grid's cases.

A ``GridSpec`` holds, for every axis of ``axes.AXES``, the grid's alternatives: several for the
multi axes (precisions, batch sizes, optimizers), one for the others; sizes and config overrides per
family. ``build_cases`` takes the product. ``select`` is the one reading of
``--grid`` and the axis flags that the CLI and the pytest and asv front-ends share, so they run
the same cases for the same words. Grid files are TOML with the axes' keys, checked by a schema
built from the same list.
"""

from __future__ import annotations

import math
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from itertools import product
from pathlib import Path
from typing import Any

from scaling_bench.config.axes import (
    AXES,
    BY_NAME,
    Axis,
    declared,
    declared_defaults,
    declared_quick,
    typed_value,
)
from scaling_bench.config.case import Case
from scaling_bench.config.convergence import CASE_AXES_IN_CONVERGENCE, ConvergenceSettings
from scaling_bench.core.errors import UserError
from scaling_bench.models import FAMILY_NAMES, family

PRESETS = ("smoke", "quick", "full", "auto")
SMOKE_BUDGET_S = 0.05
#: A short convergence run per quick case: enough for a loss curve per size and a spread over two
#: seeds, not a study (it is still most of the quick grid's untimed time).
QUICK_CONVERGENCE = {
    "steps": 16,
    "seeds": 2,
    "eval_every": 8,
    "train_size": 512,
    "heldout_size": 256,
}
#: On a CPU, half the steps, evaluated before the first and after the last only, on 128 held-out
#: (and 128 training) samples: evaluating 256 + 256 samples three times a seed was most of the
#: convergence time (a third of the quick grid's) for gpt, whose training batch is 16. The quick
#: report's figures (initial, final and held-out loss, the gap, the spread over two seeds) stay.
QUICK_CPU_CONVERGENCE = QUICK_CONVERGENCE | {"steps": 8, "eval_every": 8, "heldout_size": 128}
#: The CPU quick grid's confidence target. Steps of 0.1–0.4 s jitter by 3–7% from one to the
#: next on a 2-core VM, so ten of them (1.5–4 s) settle a median to ±5%, not ±2% (that would
#: take ~40 samples, 15 s for a vit 1e6 step alone); a quick look states so, ``full`` keeps 2%.
QUICK_CPU_CI_TARGET = 0.05
#: Share of the free memory a case may be predicted to use before it is skipped, not attempted.
MEMORY_HEADROOM = 0.8
#: A grid of more cases than this is refused before anything is planned, unless raised.
MAX_CASES = 1000
#: Former grid-file keys of axes, still read (``dtypes`` for ``precisions``).
_FORMER_KEYS = {old: a for a in AXES for old in a.key_aliases}
#: Keys of a grid file besides the axes' own.
_TABLES = ("set", "convergence")


@dataclass(frozen=True)
class GridSpec:
    """A grid's alternatives per axis (``values``), its sizes and overrides per family, and its
    convergence settings (the non-default ones). ``value(name)`` reads a one-valued axis."""

    sizes: Mapping[str, tuple[float, ...]]
    values: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    overrides: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    convergence: Mapping[str, object] = field(default_factory=dict)
    #: A family's own alternatives of a multi axis (the quick GPU grid compiles only gpt).
    family_values: Mapping[str, Mapping[str, tuple[Any, ...]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        values = {a.name: (_axis_default(a),) for a in AXES if a.name not in _SPECIAL}
        object.__setattr__(self, "values", values | dict(self.values))

    def value(self, name: str) -> Any:
        (one,) = self.values[name]
        return one

    def with_values(self, **alternatives: tuple[Any, ...]) -> GridSpec:
        """The grid with these axes' alternatives, for every family (a family's own go)."""
        family_values = {
            fam: {k: v for k, v in own.items() if k not in alternatives}
            for fam, own in self.family_values.items()
        }
        return replace(self, values=dict(self.values) | alternatives, family_values=family_values)

    def with_family_values(self, fam: str, **alternatives: tuple[Any, ...]) -> GridSpec:
        own = dict(self.family_values.get(fam, {})) | alternatives
        return replace(self, family_values=dict(self.family_values) | {fam: own})

    def alternatives(self, fam: str, name: str) -> tuple[Any, ...]:
        """A multi axis's alternatives for ``fam``: its own where it has them, else the grid's."""
        return self.family_values.get(fam, {}).get(name, self.values[name])

    def with_families(self, families: tuple[str, ...]) -> GridSpec:
        """Restrict or extend to ``families``, keeping each family's sizes where it has them."""
        default = next(iter(self.sizes.values()))
        return replace(self, sizes={f: self.sizes.get(f, default) for f in families})

    def with_sizes(self, sizes: tuple[float, ...]) -> GridSpec:
        return replace(self, sizes=dict.fromkeys(self.sizes, sizes))


#: Axes a ``GridSpec`` keeps apart from ``values``.
_SPECIAL = ("family", "target_params", "overrides", "convergence")


def _axis_default(a: Axis) -> Any:
    if a.name == "workloads":
        return declared_defaults("workloads")
    if a.name == "device":
        return "auto"
    return a.default


def count_cases(spec: GridSpec) -> int:
    """How many cases ``build_cases`` would make, without making them."""
    return sum(
        len(sizes) * math.prod(len(spec.alternatives(fam, a.name)) for a in _dimensions())
        for fam, sizes in spec.sizes.items()
    )


def _dimensions() -> list[Axis]:
    return [a for a in AXES if a.multi and a.name not in _SPECIAL]


def check_size(spec: GridSpec, max_cases: int = MAX_CASES) -> None:
    n = count_cases(spec)
    if n > max_cases:
        raise UserError(
            f"the grid has {n:,} cases, more than --max-cases {max_cases:,}; "
            "narrow --sizes or the other axes, or raise --max-cases"
        )


def build_cases(spec: GridSpec, device: str) -> list[Case]:
    """Every case of the spec on ``device``: by family, smallest size first, then the product of
    the other multi axes in their declared order."""
    dims = _dimensions()
    settings = {
        a.name: spec.value(a.name) for a in AXES if not a.multi and a.name not in _SPECIAL
    } | {"device": device, "convergence": tuple(sorted(spec.convergence.items()))}
    return [
        Case(
            family=fam,
            target_params=size,
            overrides=tuple(sorted(spec.overrides.get(fam, {}).items())),
            **settings,
            **{a.name: v for a, v in zip(dims, combo, strict=True)},
        )
        for fam, sizes in spec.sizes.items()
        for size in sorted(sizes)
        for combo in product(*(spec.alternatives(fam, a.name) for a in dims))
    ]


def preset(name: str, device: str) -> GridSpec:
    """Built-in grids. ``quick`` adapts to the device: small sizes and fp32 on a CPU. ``smoke`` is
    each family's smallest quick size with a token timing budget: it checks that every path runs."""
    if name not in PRESETS:
        raise UserError(f"unknown grid {name!r}; choose from {', '.join(PRESETS)} or a .toml file")
    if name == "smoke":
        spec = preset("quick", device)
        smallest = {fam: (min(sizes),) for fam, sizes in spec.sizes.items()}
        return replace(spec, sizes=smallest).with_values(budget_s=(SMOKE_BUDGET_S,))
    on_gpu = device.startswith("cuda")
    every = declared("workloads")
    if name == "quick":
        if on_gpu:
            return GridSpec(
                sizes=dict.fromkeys(FAMILY_NAMES, (1e6, 1e7, 1e8)),
                values={
                    "workloads": (every,),
                    "precision": ("fp32", "bf16", "amp-bf16"),
                    "timeout_s": (180.0,),
                    "budget_s": (3.0,),
                },
                convergence=QUICK_CONVERGENCE,
            ).with_family_values("gpt", compile=("eager", "default"))
        small = (1e4, 1e5, 1e6)
        return GridSpec(
            sizes=dict.fromkeys(FAMILY_NAMES, small) | {"mlp": (1e5, 1e6, 1e7)},
            # the workloads that fit a CPU's minute and a half (``Workload.quick``)
            values={
                "workloads": (declared_quick("workloads"),),
                "timeout_s": (120.0,),
                "budget_s": (1.5,),
                "ci_target": (QUICK_CPU_CI_TARGET,),
            },
            overrides={"gpt": {"seq_len": 128}},
            convergence=QUICK_CPU_CONVERGENCE,
        )
    top = 1e10 if name == "auto" else (1e9 if on_gpu else 1e8)
    sizes = tuple(10.0**k for k in range(4, round(math.log10(top)) + 1))
    precisions = ("fp32", "bf16") if on_gpu else ("fp32",)
    return GridSpec(
        sizes=dict.fromkeys(FAMILY_NAMES, sizes),
        values={"precision": precisions, "timeout_s": (900.0,), "budget_s": (10.0,)},
    )


def load_grid_file(path: Path) -> GridSpec:
    """A grid from TOML: the axes' keys, plus ``[set.FAMILY]`` and ``[convergence]`` tables.

    Types are checked strictly: a number in quotes, ``true`` for a count, ``1.9`` ranks are each
    refused with the key, the value and the reason, not converted."""
    where = f"grid file {path}"
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{where} is a folder, not a file") from None
    except OSError as exc:
        raise UserError(f"{where}: cannot read it ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: not valid TOML ({exc})") from None
    by_key = {a.key: a for a in AXES if a.key} | _FORMER_KEYS
    unknown = sorted(set(data) - set(by_key) - set(_TABLES))
    if unknown:
        raise UserError(
            f"{where}: unknown keys {', '.join(unknown)}; known: {', '.join([*by_key, *_TABLES])}"
        )
    if "sizes" not in data:
        raise UserError(f"{where}: 'sizes' is required")
    try:
        return _spec_from_table(data, by_key)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _spec_from_table(data: dict[str, Any], by_key: dict[str, Axis]) -> GridSpec:
    parsed = {a.name: a.from_file(data[key], key) for key, a in by_key.items() if key in data}
    families = parsed.pop("family", FAMILY_NAMES)
    sizes = parsed.pop("target_params")
    overrides: dict[str, dict[str, object]] = {}
    tables = _table(data, "set")
    for fam_name in tables:
        BY_NAME["family"].check_choice(fam_name, "[set]")
        overrides[fam_name] = config_values(family(fam_name).Config, _table(tables, fam_name),
                                            f"set.{fam_name}", strict=True)  # fmt: skip
    convergence = convergence_values(_table(data, "convergence"), strict=True)
    spec = GridSpec(sizes=dict.fromkeys(families, sizes), values=parsed, overrides=overrides)
    return replace(spec, convergence=convergence)


def _table(data: dict[str, Any], key: str) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise UserError(f"{key} = {table!r}: should be a table")
    return table


def config_values(
    config_cls: type, values: Mapping[str, Any], what: str, strict: bool
) -> dict[str, Any]:
    """``values`` checked against a config dataclass's own fields and types: text from a flag is
    converted (``"12"`` -> 12, ``"2,2"`` -> (2, 2)), values from a file must have the type."""
    hints = typing.get_type_hints(config_cls)
    names = [f.name for f in fields(config_cls)]
    out: dict[str, Any] = {}
    for key, raw in values.items():
        if key not in names:
            raise UserError(f"{what}: {key}: unknown field; {config_cls.__name__} has "
                            f"{', '.join(names)}")  # fmt: skip
        kind = hints[key]
        if isinstance(raw, str) and not strict and typing.get_origin(kind) is tuple:
            raw = [part.strip() for part in raw.split(",") if part.strip()]
        elif isinstance(raw, list) and typing.get_origin(kind) is tuple:
            raw = tuple(raw)
        if not strict and isinstance(raw, str) and raw.lower() in ("none", "null"):
            raw = None
        out[key] = typed_value(kind, raw, f"{what}: {key}", strict=strict)
    return out


def parse_pairs(pairs: list[str], what: str) -> dict[str, str]:
    """``["n_layer=12", "bias=false"]`` -> ``{"n_layer": "12", "bias": "false"}``."""
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"{what} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = text.strip()
    return out


def convergence_values(values: Mapping[str, Any], strict: bool) -> dict[str, Any]:
    """Validated convergence settings (the non-default ones)."""
    for name in CASE_AXES_IN_CONVERGENCE:
        if name in values:
            raise UserError(f"convergence {name}: set it with --{name.replace('_', '-')}")
    settings = config_values(ConvergenceSettings, values, "convergence", strict=strict)
    ConvergenceSettings(**settings)  # validates: an empty LR grid, no steps, an unknown dataset
    return settings


def with_overrides(spec: GridSpec, pairs: list[str]) -> GridSpec:
    """Add ``[FAMILY.]KEY=VALUE`` overrides: with a family, for it; without, for every family of
    the grid whose config has the field (an error if none has)."""
    overrides = {f: dict(v) for f, v in spec.overrides.items()}
    for key, text in parse_pairs(pairs, "--set").items():
        fam_name, dot, field_name = key.partition(".")
        if dot:
            BY_NAME["family"].check_choice(fam_name, "--set")
            if fam_name not in spec.sizes:
                raise UserError(f"--set {key}: {fam_name} is not a family of this grid")
            targets = [fam_name]
        else:
            field_name = key
            targets = [f for f in spec.sizes if field_name in _field_names(f)]
            if not targets:
                raise UserError(f"--set {key}: no family of this grid has that config field")
        for fam_name in targets:
            value = config_values(family(fam_name).Config, {field_name: text}, "--set", False)
            overrides.setdefault(fam_name, {}).update(value)
    return replace(spec, overrides=overrides)


def _field_names(fam_name: str) -> set[str]:
    return {f.name for f in fields(family(fam_name).Config)}


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda:0`` where a GPU is usable, else ``cpu``; refuse a device not here."""
    import torch

    name = name.strip().lower()
    if name == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but no CUDA GPU is usable on this machine")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here")
    return f"cuda:{index}"


def select(
    grid_name: str,
    given: Mapping[str, str | None] | None = None,
    *,
    resolve: Callable[[str], str] = resolve_device,
) -> GridSpec:
    """The named grid (a preset, or a .toml file) with each axis in ``given`` (axis name -> the
    text of its flag, option or variable) replaced, on the device asked for (else the file's,
    else ``auto``), resolved by ``resolve``. An axis given as empty text is an error, not the
    preset's value."""
    texts = {k: v for k, v in (given or {}).items() if v is not None}
    device_text = texts.pop("device", None)
    if grid_name.endswith(".toml"):
        spec = load_grid_file(Path(grid_name))
        device = resolve(device_text or spec.value("device"))
    else:
        device = resolve(device_text or "auto")
        spec = preset(grid_name, device)
    spec = spec.with_values(device=(device,))
    if "family" in texts:
        spec = spec.with_families(BY_NAME["family"].parse(texts.pop("family")))
    if "target_params" in texts:
        spec = spec.with_sizes(BY_NAME["target_params"].parse(texts.pop("target_params")))
    for name, text in texts.items():
        spec = spec.with_values(**{name: BY_NAME[name].parse(text)})
    return spec
