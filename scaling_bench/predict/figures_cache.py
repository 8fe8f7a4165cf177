"""The plan's figures that need the model built and its step replayed, kept on disk.

A plan's config, parameter count and FLOPs are closed forms (milliseconds); its memory peak,
checkpoint bytes and recomputed FLOPs need the model built (for vit and resnet a torchvision
import, 1.5 s, since torchvision's ops import ``torch._dynamo``) and the step replayed on fake
tensors (1.3 s for vit 1e10). So these are kept, one file per plan, in ``plans/`` beside the
measured figures (``hardware.cache``), keyed by everything they follow from: the family and its
config, every field of the recipe, torch's and torchvision's versions, a digest of this package's
code and, on the CPU, where the kernels' measured scratch enters, the kernel selection
(``hardware.kernels.kernel_key``). An entry that cannot be read, or is not what is written
here, or whose key differs, is computed again and rewritten; one that cannot be written only
costs computing again.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from contextlib import suppress
from dataclasses import asdict, dataclass, fields
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from scaling_bench.hardware.cache import cache_file
from scaling_bench.predict.phases import PHASES

if TYPE_CHECKING:
    from scaling_bench.config.recipe import Recipe

#: Where the plans are kept, when not in ``plans/`` of the measured figures' folder.
PLAN_CACHE_ENV = "SCALING_BENCH_PLAN_CACHE_DIR"
_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ModelFigures:
    """What a plan needs the built model and its replayed step for. ``phases``: each phase's
    peak by part (``predict.memory.StepPeak``); ``unmeasured``: the ops whose scratch is
    unknown."""

    phases: dict[str, dict[str, int]]
    unmeasured: tuple[str, ...]
    recomputed_flops_per_sample: int
    checkpoint_bytes: int
    checkpoint_bytes_with_optimizer: int

    @classmethod
    def from_dict(cls, d: Any) -> ModelFigures:
        """The figures ``asdict`` wrote; ``ValueError`` for anything else."""
        counts = ("recomputed_flops_per_sample", "checkpoint_bytes",
                  "checkpoint_bytes_with_optimizer")  # fmt: skip
        if not isinstance(d, dict) or set(d) != {"phases", "unmeasured", *counts}:
            raise ValueError("not the figures' fields")
        phases, unmeasured = d["phases"], d["unmeasured"]
        if not isinstance(phases, dict) or set(phases) != set(PHASES):
            raise ValueError("not one peak per phase")
        for parts in phases.values():
            if not isinstance(parts, dict) or not all(_is_count(v) for v in parts.values()):
                raise ValueError("a phase's parts are not byte counts")
        if not isinstance(unmeasured, list) or not all(isinstance(u, str) for u in unmeasured):
            raise ValueError("unmeasured is not a list of reasons")
        if not all(_is_count(d[k]) for k in counts):
            raise ValueError("a count is not a whole number")
        return cls(phases, tuple(unmeasured), *(d[k] for k in counts))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@functools.cache
def code_digest() -> str:
    """A digest of the package's Python sources: a plan computed by other code is not reused."""
    digest = hashlib.sha1()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(str(path.relative_to(_PACKAGE)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def figures_key(family_name: str, cfg: object, recipe: Recipe) -> dict[str, object]:
    """Everything the model figures of ``cfg`` in ``recipe`` (its batch resolved) follow from."""
    import torch

    key: dict[str, object] = {
        "family": family_name,
        "config": asdict(cfg),  # type: ignore[call-overload]
        "recipe": {f.name: getattr(recipe, f.name) for f in fields(recipe)}
        | {"precision": recipe.precision.name},
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "code": code_digest(),
    }
    if torch.device(recipe.device).type == "cpu":
        from scaling_bench.hardware.kernels import kernel_key

        key["kernels"] = kernel_key()
    return key


def plan_cache_dir() -> Path:
    """The folder of cached plans (``PLAN_CACHE_ENV``, else ``plans/`` of the measured ones)."""
    return Path(os.environ.get(PLAN_CACHE_ENV) or cache_file("plans"))


def _path(key: dict[str, object]) -> Path:
    text = json.dumps(key, sort_keys=True)
    return plan_cache_dir() / f"{hashlib.sha1(text.encode()).hexdigest()[:20]}.json"


def _read(path: Path, key: dict[str, object]) -> ModelFigures | None:
    try:
        entry = json.loads(path.read_text())
        if not isinstance(entry, dict) or entry.get("key") != json.loads(json.dumps(key)):
            return None
        return ModelFigures.from_dict(entry.get("figures"))
    except (OSError, ValueError):
        return None


def _write(path: Path, key: dict[str, object], figures: ModelFigures) -> None:
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            tmp = Path(f.name)
            json.dump({"key": key, "figures": asdict(figures)}, f)  # in order: as printed
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            with suppress(OSError):
                tmp.unlink(missing_ok=True)


def cached_figures(
    family_name: str, cfg: object, recipe: Recipe, compute: Callable[[], ModelFigures]
) -> ModelFigures:
    """The figures kept for this key, else ``compute()``'s, kept for the next plan."""
    key = figures_key(family_name, cfg, recipe)
    path = _path(key)
    figures = _read(path, key)
    if figures is None:
        figures = compute()
        _write(path, key, figures)
    return figures
