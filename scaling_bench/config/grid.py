"""Grid specs, cases and what is feasible on this machine.

A case is a value: one (family, size, dtype, device) with all its workloads, run in one worker
(DESIGN §4: a worker costs seconds of imports, so workloads share it). Its ``case_id`` is stable
and readable (``gpt-1e8-bf16-cuda``) so results join across runs, machines and front-ends; the
device index is left out of the id for the same reason, and so are the workloads, the timing
budget and the convergence settings, which the record's ``case`` holds in full.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

from scaling_bench.core.dtypes import DTYPES
from scaling_bench.core.errors import UserError
from scaling_bench.models import FAMILY_NAMES, family
from scaling_bench.models.overrides import parse_overrides
from scaling_bench.workloads.train import OPTIMIZER_STATE_SLOTS

if TYPE_CHECKING:
    from scaling_bench.predict.plan import Plan
    from scaling_bench.workloads.convergence import ConvergenceSettings


def _hashable(values: dict[str, object]) -> dict[str, object]:
    """JSON gives lists where the config had tuples; a case must stay hashable and equal."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


WORKLOADS = ("forward", "train", "checkpoint", "convergence")
DEFAULT_WORKLOADS = ("forward", "train", "checkpoint")
DEFAULT_OPTIMIZER = "adamw"
PRESETS = ("smoke", "quick", "full", "auto")
SMOKE_BUDGET_S = 0.05
#: A short convergence run per quick case: enough for a loss curve per size, not a study.
QUICK_CONVERGENCE = {
    "steps": 40,
    "seeds": 2,
    "eval_every": 20,
    "train_size": 512,
    "heldout_size": 256,
}
#: How a case is spread over several processes (``distributed.py``); None: one process.
STRATEGIES = ("ddp", "fsdp")
#: Share of the free memory a case may be predicted to use before it is skipped, not attempted.
MEMORY_HEADROOM = 0.8


def format_size(n: float) -> str:
    """1e5 -> '1e5', 3e7 -> '3e7', 1.5e6 -> '1.5e6': short, and the same for the same size."""
    exponent = math.floor(math.log10(n))
    mantissa = round(n / 10**exponent, 3)
    if mantissa >= 10:
        mantissa, exponent = mantissa / 10, exponent + 1
    text = f"{mantissa:g}"
    return f"{text}e{exponent}"


_SUFFIXES = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_size(text: str, what: str = "--sizes") -> float:
    """A parameter count: ``1e6``, ``125M``, ``1.3B``."""
    raw = text.strip()
    scale = _SUFFIXES.get(raw[-1:].lower(), 1.0)
    try:
        value = float(raw[:-1] if scale != 1.0 else raw) * scale
    except ValueError:
        raise UserError(f"{what}: {raw!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise UserError(f"{what}: {raw!r} is not a positive parameter count")
    return value


def parse_sizes(text: str) -> list[float]:
    """``1e5,1e6`` or a geometric range ``1e5:1e8:x10`` (factor) or ``1e5:1e8:7`` (points)."""
    sizes: list[float] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise UserError(f"--sizes {text!r}: empty item")
        if ":" not in part:
            sizes.append(parse_size(part))
            continue
        bits = part.split(":")
        if len(bits) != 3:
            raise UserError(f"--sizes {part!r}: a range is START:STOP:xFACTOR or START:STOP:POINTS")
        start, stop, step = parse_size(bits[0]), parse_size(bits[1]), bits[2].strip()
        if stop < start:
            raise UserError(f"--sizes {part!r}: STOP is below START")
        if step.startswith("x"):
            factor = parse_size(step[1:])
            if factor <= 1:
                raise UserError(f"--sizes {part!r}: the factor must be above 1")
            count = math.floor(math.log(stop / start, factor) + 1e-9) + 1
            sizes.extend(start * factor**i for i in range(count))
        else:
            if not re.fullmatch(r"\d+", step) or int(step) < 1:
                raise UserError(f"--sizes {part!r}: POINTS must be a positive whole number")
            points = int(step)
            ratio = (stop / start) ** (1 / (points - 1)) if points > 1 else 1.0
            sizes.extend(start * ratio**i for i in range(points))
    return sorted({float(f"{s:.6g}") for s in sizes})


def split_names(text: str | list[str], what: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    items = [s.strip() for s in text.split(",")] if isinstance(text, str) else list(text)
    for item in items:
        if item not in allowed:
            raise UserError(f"unknown {what} {item!r}; choose from {', '.join(allowed)}")
    if not items:
        raise UserError(f"no {what} given")
    return tuple(dict.fromkeys(items))


@dataclass(frozen=True)
class Case:
    family: str
    target_params: float
    dtype: str = "fp32"
    device: str = "cpu"
    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    batch_size: int | None = None
    optimizer: str = DEFAULT_OPTIMIZER
    overrides: tuple[tuple[str, object], ...] = ()
    budget_s: float = 5.0
    nproc_per_node: int = 1
    nnodes: int = 1
    strategy: str | None = None
    convergence: tuple[tuple[str, object], ...] = ()

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    @property
    def case_id(self) -> str:
        parts = [
            self.family,
            format_size(self.target_params),
            self.dtype,
            self.device.split(":")[0],
        ]
        if self.batch_size is not None:
            parts.append(f"bs{self.batch_size}")
        if self.optimizer != DEFAULT_OPTIMIZER:
            parts.append(self.optimizer)
        parts.extend(f"{k}={v}" for k, v in self.overrides)
        if self.strategy:  # last, so a single-process id is this id without its suffix
            ranks = f"{self.nnodes}x{self.nproc_per_node}" if self.nnodes > 1 else self.world_size
            parts.append(f"{self.strategy}{ranks}")
        return "-".join(parts)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["overrides"] = dict(self.overrides)
        out["convergence"] = dict(self.convergence)
        out["case_id"] = self.case_id
        return out

    @classmethod
    def from_dict(cls, data: dict) -> Case:
        known = {f.name for f in fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known}
        kwargs["workloads"] = tuple(kwargs.get("workloads", DEFAULT_WORKLOADS))
        for name in ("overrides", "convergence"):
            kwargs[name] = tuple(sorted(_hashable(dict(kwargs.get(name, {}))).items()))
        return cls(**kwargs)

    def overrides_dict(self) -> dict[str, object]:
        return dict(self.overrides)

    def convergence_settings(self) -> ConvergenceSettings:
        """The convergence workload's settings: the grid's, with the case's batch and optimizer."""
        from scaling_bench.workloads.convergence import ConvergenceSettings

        return ConvergenceSettings(
            **dict(self.convergence), batch_size=self.batch_size, optimizer=self.optimizer
        )

    def plan(self) -> Plan:
        """The case's model, FLOPs and predicted costs, computed on the meta device."""
        from scaling_bench.predict.plan import plan

        return plan(
            self.family,
            self.target_params,
            batch_size=self.batch_size,
            dtype=self.dtype,
            optimizer=self.optimizer,
            overrides=self.overrides_dict(),
        )


@dataclass
class GridSpec:
    """The axes of a grid; ``sizes`` maps each family to its sizes."""

    sizes: dict[str, list[float]]
    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    dtypes: tuple[str, ...] = ("fp32",)
    device: str = "auto"
    batch_size: int | None = None
    optimizer: str = DEFAULT_OPTIMIZER
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)
    timeout_s: float = 300.0
    budget_s: float = 5.0
    nproc_per_node: int = 1
    nnodes: int = 1
    strategy: str | None = None
    convergence: dict[str, object] = field(default_factory=dict)


def preset(name: str, device: str) -> GridSpec:
    """Built-in grids. ``quick`` adapts to the device: small sizes and fp32 on a CPU. ``smoke`` is
    each family's smallest quick size with a token timing budget: it checks that every path runs."""
    if name not in PRESETS:
        raise UserError(f"unknown grid {name!r}; choose from {', '.join(PRESETS)} or a .toml file")
    if name == "smoke":
        spec = preset("quick", device)
        smallest = {fam: [min(sizes)] for fam, sizes in spec.sizes.items()}
        return replace(spec, sizes=smallest, budget_s=SMOKE_BUDGET_S)
    on_gpu = device.startswith("cuda")
    if name == "quick":
        if on_gpu:
            sizes = {f: [1e6, 1e7, 1e8] for f in FAMILY_NAMES}
            return GridSpec(
                sizes=sizes,
                workloads=(*DEFAULT_WORKLOADS, "convergence"),
                dtypes=("fp32", "bf16"),
                timeout_s=180,
                budget_s=3.0,
                convergence=QUICK_CONVERGENCE,
            )
        sizes = {
            "mlp": [1e5, 1e6, 1e7],
            "cnn": [1e4, 1e5, 1e6],
            "resnet": [1e4, 1e5, 1e6],
            "vit": [1e4, 1e5, 1e6],
            "gpt": [1e4, 1e5, 1e6],
        }
        return GridSpec(
            sizes=sizes,
            workloads=(*DEFAULT_WORKLOADS, "convergence"),
            timeout_s=120,
            budget_s=1.5,
            overrides={"gpt": {"seq_len": 128}},
            convergence=QUICK_CONVERGENCE,
        )
    top = 1e10 if name == "auto" else (1e9 if on_gpu else 1e8)
    sizes = {f: parse_sizes(f"1e4:{top:g}:x10") for f in FAMILY_NAMES}
    dtypes = ("fp32", "bf16") if on_gpu else ("fp32",)
    return GridSpec(sizes=sizes, dtypes=dtypes, timeout_s=900, budget_s=10.0)


_FILE_KEYS = {
    "families",
    "sizes",
    "workloads",
    "dtypes",
    "device",
    "batch_size",
    "optimizer",
    "timeout_s",
    "budget_s",
    "set",
    "convergence",
    "strategy",
    "nproc_per_node",
    "nnodes",
}


def load_grid_file(path: Path) -> GridSpec:
    """A grid from TOML: the CLI's axes as keys, plus ``[set.FAMILY]`` tables of overrides."""
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"grid file {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"grid file {path}: not valid TOML ({exc})") from None
    unknown = set(data) - _FILE_KEYS
    if unknown:
        raise UserError(f"grid file {path}: unknown keys {', '.join(sorted(unknown))}")
    if "sizes" not in data:
        raise UserError(f"grid file {path}: 'sizes' is required")
    try:
        return _spec_from_table(data)
    except (TypeError, ValueError, AttributeError) as exc:
        raise UserError(f"grid file {path}: a value has the wrong type ({exc})") from None


def _spec_from_table(data: dict) -> GridSpec:
    families = split_names(data.get("families", list(FAMILY_NAMES)), "family", FAMILY_NAMES)
    raw_sizes = data["sizes"]
    sizes_text = raw_sizes if isinstance(raw_sizes, str) else ",".join(map(str, raw_sizes))
    sizes = parse_sizes(sizes_text)
    overrides = {}
    for fam_name, table in data.get("set", {}).items():
        split_names([fam_name], "family in [set]", FAMILY_NAMES)
        pairs = [f"{k}={_toml_text(v)}" for k, v in table.items()]
        overrides[fam_name] = parse_overrides(family(fam_name).Config, pairs)
    batch_size = data.get("batch_size")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"batch_size = {batch_size!r}: must be a whole number of at least 1")
    spec = GridSpec(
        sizes={f: sizes for f in families},
        workloads=split_names(
            data.get("workloads", list(DEFAULT_WORKLOADS)), "workload", WORKLOADS
        ),
        dtypes=split_names(data.get("dtypes", ["fp32"]), "dtype", tuple(DTYPES)),
        device=str(data.get("device", "auto")),
        batch_size=batch_size,
        optimizer=data.get("optimizer", DEFAULT_OPTIMIZER),
        overrides=overrides,
        timeout_s=float(data.get("timeout_s", 300.0)),
        budget_s=float(data.get("budget_s", 5.0)),
        convergence=parse_convergence(
            [f"{k}={_toml_text(v)}" for k, v in data.get("convergence", {}).items()]
        ),
        strategy=data.get("strategy"),
        nproc_per_node=int(data.get("nproc_per_node", 1)),
        nnodes=int(data.get("nnodes", 1)),
    )
    if spec.optimizer not in OPTIMIZER_STATE_SLOTS:
        raise UserError(f"unknown optimizer {spec.optimizer!r}")
    if not spec.timeout_s > 0 or not spec.budget_s > 0:
        raise UserError("timeout_s and budget_s must be more than 0 seconds")
    return spec


def _toml_text(value: object) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value).lower() if isinstance(value, bool) else str(value)


def build_cases(spec: GridSpec, device: str) -> list[Case]:
    """Every (family, size, dtype) of the spec on ``device``, smallest first within a family."""
    return [
        Case(
            family=fam,
            target_params=size,
            dtype=dtype,
            device=device,
            workloads=spec.workloads,
            batch_size=spec.batch_size,
            optimizer=spec.optimizer,
            overrides=tuple(sorted(spec.overrides.get(fam, {}).items())),
            budget_s=spec.budget_s,
            nproc_per_node=spec.nproc_per_node,
            nnodes=spec.nnodes,
            strategy=spec.strategy,
            convergence=tuple(sorted(spec.convergence.items())),
        )
        for fam, sizes in spec.sizes.items()
        for size in sorted(sizes)
        for dtype in spec.dtypes
    ]


def with_families(spec: GridSpec, families: tuple[str, ...]) -> GridSpec:
    """Restrict or extend a spec to ``families``, keeping each family's sizes where it has them."""
    default = next(iter(spec.sizes.values()))
    return replace(spec, sizes={f: spec.sizes.get(f, default) for f in families})


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


def dtype_warning(device: str, dtype: str) -> str | None:
    """Refuse a dtype the device cannot run; warn about one it runs slowly (DESIGN §4)."""
    import torch

    if device.startswith("cuda"):
        index = int(device.split(":")[1])
        if dtype == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
            raise UserError(f"{torch.cuda.get_device_name(index)} has no native bf16 support")
        return None
    if dtype in ("bf16", "fp16"):
        return (
            f"{dtype} on this CPU runs matmuls far below the fp32 rate (no native {dtype} units);"
            " expect slow cases"
        )
    return None


def free_memory_bytes(device: str) -> int:
    """Free memory on the device a case would use: GPU free memory, or available host memory."""
    import torch

    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(int(device.split(":")[1]))
        return free
    import psutil

    return psutil.virtual_memory().available


def with_overrides(spec: GridSpec, pairs: list[str]) -> GridSpec:
    """Add ``[FAMILY.]KEY=VALUE`` overrides: with a family, for it; without, for every family of
    the grid whose config has the field (an error if none has)."""
    overrides = {f: dict(v) for f, v in spec.overrides.items()}
    for pair in pairs:
        key = pair.partition("=")[0]
        fam_name, dot, _ = key.partition(".")
        if dot:
            split_names([fam_name], "family in --set", tuple(spec.sizes))
            targets = [fam_name]
            pair = pair[len(fam_name) + 1 :]
        else:
            field_names = lambda f: {x.name for x in fields(family(f).Config)}  # noqa: E731
            targets = [f for f in spec.sizes if key in field_names(f)]
            if not targets:
                raise UserError(f"--set {key}: no family of this grid has that config field")
        for fam_name in targets:
            overrides.setdefault(fam_name, {}).update(
                parse_overrides(family(fam_name).Config, [pair])
            )
    return replace(spec, overrides=overrides)


def select(
    grid_name: str,
    device: str | None,
    *,
    families: str | None = None,
    sizes: str | None = None,
    dtypes: str | None = None,
    resolve: Callable[[str], str] = resolve_device,
) -> GridSpec:
    """The named grid (a preset, or a .toml file) with the axes given replaced, on the device
    asked for (else the file's, else ``auto``), resolved by ``resolve``.

    The one reading of ``--grid/--device/--families/--sizes/--dtype`` that the CLI and the pytest
    and asv front-ends share, so they run the same cases for the same words.
    """
    if grid_name.endswith(".toml"):
        spec = load_grid_file(Path(grid_name))
        spec = replace(spec, device=resolve(device or spec.device))
    else:
        resolved = resolve(device or "auto")
        spec = replace(preset(grid_name, resolved), device=resolved)
    if families:
        spec = with_families(spec, split_names(families, "family", FAMILY_NAMES))
    if sizes:
        spec = replace(spec, sizes=dict.fromkeys(spec.sizes, parse_sizes(sizes)))
    if dtypes:
        spec = replace(spec, dtypes=split_names(dtypes, "dtype", tuple(DTYPES)))
    return spec


#: Convergence settings that come from the case's own axes, not from ``--steps`` and the like.
CASE_AXES_IN_CONVERGENCE = ("batch_size", "optimizer")


def parse_convergence(pairs: list[str]) -> dict[str, object]:
    """``["steps=50", "lrs=1e-3,1e-2"]`` -> validated convergence settings (non-defaults only)."""
    from scaling_bench.workloads.convergence import ConvergenceSettings

    settings = parse_overrides(ConvergenceSettings, pairs)
    for name in CASE_AXES_IN_CONVERGENCE:
        if name in settings:
            raise UserError(f"convergence {name}: set it with --{name.replace('_', '-')}")
    ConvergenceSettings(**settings)  # validates: an empty LR grid, no steps, an unknown dataset
    return settings
