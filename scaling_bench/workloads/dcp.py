"""The checkpoint workload of a distributed case: ``torch.distributed.checkpoint`` (DCP).

Each rank writes its own shard into one folder every rank sees: bytes on disk, save and load
seconds, and with the optimizer state. Each load goes into fresh tensors, which are then set into
the model and must read back exactly as saved; a difference raises ``RoundTripError``. Saves are
timed up to DCP's fsync. The ranks decide together when to stop (``agree``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from scaling_bench.core.errors import UserError
from scaling_bench.core.stats import single, summarize
from scaling_bench.workloads.checkpoint import RoundTripError

REPEATS = 3


def _tensors(state: Mapping[str, object]) -> dict[str, torch.Tensor]:
    """A model's state dict as the tensors it holds (DTensors where sharded); a clear error for
    an entry that is not one (DCP's state dicts may hold other values, a model's does not)."""
    out = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"model state {name!r} is a {type(value).__name__}, not a tensor")
        out[name] = value
    return out


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of a tensor that lives on this rank (an FSDP shard, or all of it)."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def _shared_folder() -> Path:
    """A fresh folder made by rank 0 for all ranks: DCP writes one checkpoint from every rank."""
    made = [tempfile.mkdtemp(prefix="scaling-bench-dcp-") if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(made, src=0)
    assert made[0] is not None  # rank 0's folder, broadcast to every rank
    folder = Path(made[0])
    if not folder.is_dir():
        raise UserError(
            f"checkpoint folder {folder} is not visible on this node: DCP needs a folder every "
            "node sees (set TMPDIR to a shared one) or leave out the checkpoint workload"
        )
    return folder


def _emptied(folder: Path) -> None:
    """Remove the last checkpoint before the next save writes afresh, as a real save does."""
    dist.barrier()
    if dist.get_rank() == 0:
        shutil.rmtree(folder)
        folder.mkdir()
    dist.barrier()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def measure_dcp(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    agree: Callable[[list[float], str], list[float]],
    budget_s: float,
) -> dict[str, dict]:
    """DCP checkpoint of the (sharded) model: bytes, save and load seconds, with the optimizer."""
    import torch.distributed.checkpoint as dcp  # a second's import, only where it is used
    from torch.distributed.checkpoint.state_dict import (
        ValueType,
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
    )

    folder = _shared_folder()
    try:
        state = _tensors(get_model_state_dict(model))
        saved = {name: _local(t).clone() for name, t in state.items()}
        save_s: list[float] = []
        load_s: list[float] = []
        deadline = time.perf_counter() + budget_s
        while True:
            _emptied(folder)
            start = time.perf_counter()
            dcp.save(state, checkpoint_id=folder)
            save_s.append(time.perf_counter() - start)
            fresh: dict[str, ValueType] = {name: torch.zeros_like(t) for name, t in state.items()}
            start = time.perf_counter()
            dcp.load(fresh, checkpoint_id=folder)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            load_s.append(time.perf_counter() - start)
            set_model_state_dict(model, fresh)
            for name, t in _tensors(get_model_state_dict(model)).items():
                if not torch.equal(_local(t), saved[name]):
                    raise RoundTripError(f"DCP checkpoint: {name!r} differs after save and load")
            del fresh
            more = len(save_s) < REPEATS and time.perf_counter() < deadline
            if not agree([more], "min")[0]:
                break
        nbytes = _folder_bytes(folder)
        _emptied(folder)
        optimizer_state = get_optimizer_state_dict(model, optimizer)
        dcp.save({"model": state, "optimizer": optimizer_state}, checkpoint_id=folder)
        with_optimizer = _folder_bytes(folder)
        dist.barrier()  # every rank is done with the files
    finally:
        if dist.get_rank() == 0:
            shutil.rmtree(folder, ignore_errors=True)
    return {
        "dcp_bytes": single(nbytes, "bytes"),
        "dcp_bytes_with_optimizer": single(with_optimizer, "bytes"),
        "dcp_save_s": summarize(save_s, "s"),
        "dcp_load_s": summarize(load_s, "s"),
    }
