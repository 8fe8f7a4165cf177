"""Checkpoint workload: bytes on disk, save and load time, and a round trip that must be exact.

Both ``torch.save`` and, when the package is importable, safetensors are measured, so a record
shows what the format choice costs at each size; a distributed case saves through
``torch.distributed.checkpoint`` instead (``dcp``). Save and load bandwidths are derived from the
bytes and the (rank-combined) seconds.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator
from itertools import chain, product
from pathlib import Path

import torch
from torch import nn

from scaling_bench.core.durable import fsync_path
from scaling_bench.core.stats import scaled, single, summarize
from scaling_bench.meters.timing import MIN_SAMPLES
from scaling_bench.predict.plan import Plan
from scaling_bench.workloads import catalog
from scaling_bench.workloads.base import Context, Workload, register
from scaling_bench.workloads.catalog import CHECKPOINT_FORMATS, CHECKPOINT_OPS
from scaling_bench.workloads.setup import CaseSetup

try:
    import safetensors
    import safetensors.torch as safetensors_torch

    HAS_SAFETENSORS = True
except ImportError:  # optional: without it the safetensors metrics are absent, not zero
    HAS_SAFETENSORS = False


class RoundTripError(RuntimeError):
    """A checkpoint that loads back different from what was saved: a bug, never a metric."""


def measure_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    directory: Path,
    *,
    repeats: int = MIN_SAMPLES,
    budget_s: float = 30.0,
) -> dict[str, dict]:
    """Checkpoint size on disk, save and load time of ``model``'s state dict, in record metrics.

    Each format is saved and loaded ``repeats`` times or until ``budget_s`` is spent, and at least
    once. A save is timed up to an ``os.fsync`` of the file, so it measures writing to the disk,
    not to the page cache. A load reads the file just written, which is usually still in the page
    cache: it measures deserialising and copying onto the model's device, not reading the disk.
    safetensors maps the file lazily on the CPU, so its load time includes copying every tensor
    into process memory, the state ``torch.load`` returns.

    ``checkpoint_bytes_with_optimizer`` (model and optimizer state dicts in one file) is reported
    only when the optimizer has state: Adam creates its moments on the first step, so the caller
    runs one step before calling this.

    After every load each tensor must equal the model's; otherwise ``RoundTripError`` is raised
    rather than a ``checkpoint_roundtrip_ok`` metric recorded: a corrupt round trip is a bug that
    should stop the case with its message, and a boolean would read as a measurement that can be
    averaged and compared. Files live in a fresh temporary folder under ``directory``, removed
    even when a step fails. Only one loaded copy of the weights is alive at a time.
    """
    device = _device_of(model)
    state = model.state_dict()
    deadline = time.perf_counter() + budget_s
    metrics: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="checkpoint-", dir=directory) as folder:
        metrics |= _round_trip_metrics(
            "checkpoint",
            Path(folder, "model.pt"),
            save=lambda path: torch.save(state, path),
            load=lambda path: torch.load(path, weights_only=True, map_location=device),
            check=lambda path, loaded: _check_round_trip(state, loaded, {}, path),
            device=device,
            repeats=repeats,
            deadline=deadline,
        )
        if optimizer is not None and optimizer.state:
            both = Path(folder, "model_optimizer.pt")
            torch.save({"model": state, "optimizer": optimizer.state_dict()}, both)
            metrics["checkpoint_bytes_with_optimizer"] = single(both.stat().st_size, "bytes")
            both.unlink()
        if HAS_SAFETENSORS:
            metrics |= _round_trip_metrics(
                "safetensors",
                Path(folder, "model.safetensors"),
                save=lambda path: safetensors_torch.save_model(model, str(path)),
                load=lambda path: _load_safetensors(path, device),
                check=lambda path, loaded: _check_round_trip(
                    state, loaded, _dropped_names(path), path
                ),
                device=device,
                repeats=repeats,
                deadline=deadline,
            )
    return metrics


def _round_trip_metrics(
    prefix: str,
    path: Path,
    *,
    save: Callable[[Path], None],
    load: Callable[[Path], dict[str, torch.Tensor]],
    check: Callable[[Path, dict[str, torch.Tensor]], None],
    device: torch.device,
    repeats: int,
    deadline: float,
) -> dict[str, dict]:
    """Save and load one format repeatedly; its size and times as record metrics."""
    save_s: list[float] = []
    load_s: list[float] = []
    while not save_s or (len(save_s) < repeats and time.perf_counter() < deadline):
        path.unlink(missing_ok=True)  # a fresh file each time, as a real save writes
        _synchronize(device)
        start = time.perf_counter()
        save(path)
        fsync_path(path)
        save_s.append(time.perf_counter() - start)
        load_s.append(_timed_load(path, load, check, device))
    nbytes = path.stat().st_size
    path.unlink()  # free the disk before the next format is written
    settled = {"settled": len(save_s) >= MIN_SAMPLES}
    return {
        f"{prefix}_bytes": single(nbytes, "bytes"),
        f"{prefix}_save_s": summarize(save_s, "s") | settled,
        f"{prefix}_load_s": summarize(load_s, "s") | settled,
    }


def _timed_load(
    path: Path,
    load: Callable[[Path], dict[str, torch.Tensor]],
    check: Callable[[Path, dict[str, torch.Tensor]], None],
    device: torch.device,
) -> float:
    """One timed load, checked; the loaded copy dies on return, before the next load starts."""
    start = time.perf_counter()
    loaded = load(path)
    _synchronize(device)
    elapsed = time.perf_counter() - start
    check(path, loaded)
    return elapsed


def _load_safetensors(path: Path, device: torch.device) -> dict[str, torch.Tensor]:
    """Load a safetensors file into memory; on the CPU its tensors would otherwise map the file."""
    loaded = safetensors_torch.load_file(path, device=str(device))
    if device.type == "cpu":
        for name, tensor in loaded.items():
            loaded[name] = tensor.clone()  # one at a time: each mapping is freed as it is replaced
    return loaded


def _dropped_names(path: Path) -> dict[str, str]:
    """Names ``save_model`` dropped as tied to another (it records them in the metadata) -> kept."""
    with safetensors.safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def _check_round_trip(
    state: dict[str, torch.Tensor],
    loaded: dict[str, torch.Tensor],
    aliases: dict[str, str],
    path: Path,
) -> None:
    """Raise ``RoundTripError`` unless every tensor came back exactly (a tied one via its alias)."""
    missing = state.keys() - loaded.keys() - aliases.keys()
    unexpected = loaded.keys() - state.keys()
    if missing or unexpected:
        raise RoundTripError(
            f"{path.name}: names differ after load: missing {sorted(missing)}, "
            f"unexpected {sorted(unexpected)}"
        )
    for name, want in state.items():
        if not _same_values(loaded[aliases.get(name, name)], want):
            raise RoundTripError(f"{path.name}: {name!r} differs after save and load")


def _same_values(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Exact equality; NaN read back as NaN counts as equal (uninitialised buffers may hold NaN)."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return False
    return torch.equal(got, want) or (
        got.is_floating_point() and torch.allclose(got, want, rtol=0, atol=0, equal_nan=True)
    )


def _device_of(model: nn.Module) -> torch.device:
    """Where the model's tensors live, so loads land there too (CPU for a model without any)."""
    tensor = next(chain(model.parameters(), model.buffers()), None)
    return torch.device("cpu") if tensor is None else tensor.device


def _synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a timed block neither includes nor misses it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(metrics: dict[str, dict]) -> Iterator[tuple[str, str]]:
    """The (format, operation) pairs these metrics hold times of."""
    pairs = product(CHECKPOINT_FORMATS, CHECKPOINT_OPS)
    return ((fmt, op) for fmt, op in pairs if f"{fmt}_{op}_s" in metrics)


class Checkpoint(Workload, declared=catalog.CHECKPOINT):
    """After training, so it can save the optimizer state that training created."""

    trains = True

    def measure(self, setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        budget_s = 4 * setup.case.budget_s
        if ctx.distributed:
            from scaling_bench.workloads.dcp import measure_dcp

            assert ctx.agree is not None  # the engine's ranks always give a distributed case one
            metrics = measure_dcp(setup.model, setup.optimizer, setup.device, ctx.agree, budget_s)
        else:
            with tempfile.TemporaryDirectory(prefix="scaling-bench-") as scratch:
                metrics = measure_checkpoint(
                    setup.model, setup.optimizer, Path(scratch), budget_s=budget_s
                )
        timed = sum(sum(metrics[f"{fmt}_{op}_s"]["samples"]) for fmt, op in _timed(metrics))
        return metrics | {f"{self.name}_timed_s": single(timed, "s")}

    def derive(self, metrics: dict[str, dict], setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        out = {}
        for fmt, op in _timed(metrics):
            nbytes = metrics[f"{fmt}_bytes"]["value"]
            seconds = metrics[f"{fmt}_{op}_s"]
            out[f"{fmt}_{op}_bytes_per_s"] = scaled(seconds, nbytes, "bytes/s", invert=True)
        return out

    def predict(self, plan: Plan, device: torch.device, ctx: Context) -> dict[str, dict]:
        return {
            "checkpoint_bytes": single(plan.checkpoint_bytes, "bytes"),
            "checkpoint_bytes_with_optimizer": single(
                plan.checkpoint_bytes_with_optimizer, "bytes"
            ),
        }


register(Checkpoint())
