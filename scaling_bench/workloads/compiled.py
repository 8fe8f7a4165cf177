"""``torch.compile`` for a case's steps, and what compiling cost.

The model is compiled once per case (``--compile default|max-autotune|reduce-overhead``); each
workload's first step then pays for tracing and code generation of its own graphs (inference and
training graphs differ). That first step is timed on its own, cold: each case compiles into a
fresh inductor cache folder inside its worker's scratch folder, so no earlier case's kernels are
reused. Dynamo's counters say how many frames it compiled then, how many graph breaks split
them, and how many frames it compiled again during the timed steps (recompiles: a steady step
should need none).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from scaling_bench.core.stats import single

EAGER = "eager"
#: ``--compile`` names whose ``torch.compile`` mode differs (``default`` is mode None).
_MODES = {"default": None}

#: max-autotune also times candidate GEMM kernels while it compiles. Measured here (2 shared
#: cores): a cold mlp 1e4 training step 27 s, no slower than ``default`` (40-50 s); a cold gpt 1e5
#: takes 45-110 s in either mode, so a small grid's timeout can be too short for it.
CPU_AUTOTUNE_WARNING = (
    "--compile max-autotune on a CPU times candidate kernels while compiling: a cold compile "
    "takes tens of seconds to minutes per case (raise --timeout if cases time out)"
)


def skip_reason(mode: str, device: torch.device | str) -> str | None:
    if mode == "reduce-overhead" and torch.device(device).type != "cuda":
        return "--compile reduce-overhead: CUDA graphs need a CUDA device"
    return None


def compile_model(model: nn.Module, mode: str) -> nn.Module:
    """``model`` compiled in ``mode`` into a fresh inductor cache folder (the worker's
    ``TMPDIR`` is its case's scratch), or ``model`` itself for ``eager``."""
    if mode == EAGER:
        return model
    import torch._dynamo

    torch._dynamo.reset()  # nothing compiled for an earlier model is reused
    # A size read off a tensor (moe's tokens per expert) is traced as a symbolic size rather
    # than breaking the graph there, so a new routing is not a new graph to compile.
    torch._dynamo.config.capture_scalar_outputs = True
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")
    compiled = torch.compile(model, mode=_MODES.get(mode, mode))
    assert isinstance(compiled, nn.Module)  # a compiled module is an OptimizedModule
    return compiled


def _frames_and_breaks() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return counters["frames"]["ok"], sum(counters["graph_break"].values())


def first_step(name: str, step: Callable[[], object], device: torch.device) -> dict[str, dict]:
    """Run a compiled case's first ``name`` step, timed: compile time and counters."""
    frames, breaks = _frames_and_breaks()
    started = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - started
    frames_after, breaks_after = _frames_and_breaks()
    return {
        f"{name}_compile_s": single(elapsed, "s"),
        f"{name}_compiled_frames": single(frames_after - frames, "frames"),
        f"{name}_graph_breaks": single(breaks_after - breaks, "breaks"),
    }


def recompiles(name: str, frames_before: int) -> dict[str, dict]:
    """Frames compiled since ``frames_before`` (``compiled_frames_now()`` after the first step)."""
    return {f"{name}_recompiles": single(compiled_frames_now() - frames_before, "frames")}


def compiled_frames_now() -> int:
    return _frames_and_breaks()[0]
