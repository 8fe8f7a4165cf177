"""Scratch a CPU kernel allocates and frees inside one call, which no replay of tensors sees.

On the CPU a oneDNN or reduced-precision kernel allocates buffers of its own through the same
allocator as the tensors (so the tensor meter sees them), holds them only during the call, and
frees them before it returns. Measured on isolated ops (torch 2.14, oneDNN 3.12, a Xeon with
AVX-512 bf16 and AMX, 2 threads; ``tests/test_memory_prediction.py`` holds the probe to the meter
on the machine at hand, whatever these figures are there):

* a convolution with few channels runs in oneDNN's blocked layout: its forward writes the
  output as nChw16c, ⌈C_out/16⌉·16·N·H_out·W_out·itemsize, and reorders it to the plain output
  (cnn 1e5's first conv: 16·128·28·28·4 B = 6.4 MB, +34% of the step at 3e4); its backward
  reorders the output gradient, the input and the weight gradient the same way;
* bf16 ``mm``/``addmm`` run oneDNN's brgemm matmul, whose scratchpad holds a packed (VNNI) copy of
  the right operand, K·N·itemsize rounded up to its blocks, or an fp32 one, K·⌈N/16⌉·16·4, or one
  per thread when the rows split between threads, plus fp32 accumulators; which of them depends
  on oneDNN's blocking heuristics for the shapes (a 512×512 right operand: 0.5 MB at M≤784, 1 MB
  from M=1024, 18 KB at K=64);
* bf16 batch norm, layer norm and reductions (``sum``, ``mean``) accumulate in an fp32 buffer
  of the input's size or of the reduced one; the flash attention kernel for the CPU holds
  per-thread blocks of fp32 scores and accumulators;
* an elementwise kernel given a number wraps it in 0-dim tensors for the call (a double and one
  of the tensor's dtype: 12 bytes in fp32), which is what an AdamW step's for-loop peak holds
  above its temporaries;
* fp32 matmuls (MKL) and elementwise kernels without a number allocate nothing.

Under ``ONEDNN_MAX_CPU_ISA=AVX2`` (``ATEN_CPU_CAPABILITY=avx2`` or ``default``; an AMD EPYC with
AVX-512 bf16, 2 threads) the same calls differ: oneDNN blocks a convolution's channels by 8, a
bf16 convolution falls back to ATen's im2col (cnn 1e5 bf16's scratch at the peak 15 MB, not
1.2 MB), and a bf16 mm holds none.

Since which of these a call makes follows the kernel libraries' heuristics (the shapes, the
dtype, the ISA, the thread count, ``torch.backends.mkldnn``) rather than a closed form,
``scratch_bytes`` measures it: it runs the op once on real zero tensors of the same shapes, strides
and dtypes (an elementwise op on one-element ones: its scratch is its numbers') under the
profiler's memory events, after a warm-up call, and keeps the bytes above what the call leaves
live, cached per signature (a repeated block costs one measurement) and kept on disk beside the
GEMM peak (``CACHE_FILE``). The key is the signature and ``hardware.peaks.cpu_cache_key``, which
holds everything that selects the kernel (``hardware.kernels.selection``: CPU model and flags,
torch and oneDNN versions, ``get_cpu_capability()``, the ISA variables set, threads, oneDNN on):
a key without the ISA served the AVX-512 figures to an AVX2 run (a bf16 cnn 1e5 step predicted at
40% of its peak). So a machine measures each signature once per kernel selection: a cold plan of a
1e6 conv net takes seconds longer, a warm one does not. Keyed so, the predicted peak is the
meter's to the byte for every family at 1e5 and 1e6, fp32 and bf16, natively (AVX-512), under
``avx2`` and under ``default`` (``studies/memory_prediction.py --isas native,avx2,default``). An
op whose tensors would take more than ``PROBE_LIMIT_BYTES`` is not run and counted as allocating
no scratch.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily
from torch.utils._pytree import tree_leaves, tree_map

from scaling_bench.core.profiling import cpu_memory_events, memory_profile, peak_above_start
from scaling_bench.hardware.peaks import cache_file, cpu_cache_key

#: The largest total of input bytes an op is run for to measure its scratch.
PROBE_LIMIT_BYTES = 256 << 20
#: Ops that allocate no storage, or whose real run says nothing (a value or device read back).
_NOT_RUN = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.detach.default,
    torch.ops.prim.device.default,
}
#: Matmuls, which in fp32 and fp64 run MKL's GEMM and allocate nothing: only their
#: reduced-precision calls (oneDNN's brgemm) are run. Elementwise (``pointwise``) kernels
#: allocate nothing but the 0-dim tensors their numbers are wrapped in, so only those with a
#: number are run, on one-element tensors; both keep a large plan from running its big GEMMs.
_MATMULS = {
    torch.ops.aten.mm.default,
    torch.ops.aten.addmm.default,
    torch.ops.aten.bmm.default,
    torch.ops.aten.baddbmm.default,
}
_MKL_DTYPES = (torch.float32, torch.float64)
#: Normalizations whose CPU kernel, given a reduced-precision input and fp32 weights (autocast's
#: batch norm), keeps the statistics it saves for the backward (outputs 1 and 2) in fp32, where
#: their fake kernels (torch's decompositions) cast them to the input's dtype.
_MIXED_DTYPE_NORMS = {
    torch.ops.aten.native_batch_norm.default,
    torch.ops.aten._native_batch_norm_legit.default,
    torch.ops.aten._native_batch_norm_legit.no_stats,
    torch.ops.aten.native_layer_norm.default,
    torch.ops.aten.native_group_norm.default,
}
_REDUCED = (torch.bfloat16, torch.float16)

CACHE_FILE = "kernel_scratch.json"


class _Measured:
    """Measured scratch by signature: this process's, and the machine's from ``CACHE_FILE``."""

    def __init__(self) -> None:
        self.bytes: dict[str, int] | None = None
        self.unsaved: dict[str, int] = {}

    def _path(self) -> Path:
        return cache_file(CACHE_FILE)

    def get(self, key: str) -> int | None:
        if self.bytes is None:
            self.bytes = self._read()
        return self.bytes.get(key)

    def put(self, key: str, value: int) -> None:
        assert self.bytes is not None
        self.bytes[key] = value
        if " at 0x" not in key:  # an object's address: the key would never come again
            self.unsaved[key] = value

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self._path().read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        return {k: v for k, v in data.items() if isinstance(v, int) and v >= 0}

    def save(self) -> None:
        """Add this process's measurements to the file, atomically; a folder that cannot be
        written only costs measuring again."""
        if not self.unsaved:
            return
        path = self._path()
        merged = self._read() | self.unsaved
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(
                "w", dir=path.parent, suffix=".tmp", delete=False
            ) as f:
                json.dump(merged, f, sort_keys=True)
            os.replace(f.name, path)
        except OSError:
            return
        self.unsaved = {}


_measured = _Measured()


def save() -> None:
    """Keep what this process measured for the next one (after each replay)."""
    _measured.save()


class ProbeFailed(RuntimeError):
    """The real kernel refused the zero tensors shaped like an op's fakes: its scratch is
    unknown (never guessed), and the plan says so."""


def with_real_dtypes(func: Any, args: tuple, out: object) -> object:
    """``func``'s fake outputs with the dtypes its CPU kernel gives them: a mixed-dtype
    normalization's saved statistics in fp32, as the real kernel saves them. Without this the
    replay counts them at half their bytes, and the real backward the scratch probe runs refuses
    them ("mixed dtype (CPU): expect parameter to have scalar type of Float")."""
    if func not in _MIXED_DTYPE_NORMS or not isinstance(out, tuple):
        return out
    x, weights = args[0], [a for a in args[1:] if isinstance(a, torch.Tensor)]
    if x.device.type != "cpu" or x.dtype not in _REDUCED:
        return out
    if not any(w.dtype == torch.float32 for w in weights):
        return out
    stats = (torch.empty_like(t, dtype=torch.float32) for t in out[1:3])
    return (out[0], *stats, *out[3:])


def _signature(x: object) -> object:
    if isinstance(x, torch.Tensor):
        return (
            tuple(x.shape),
            x.stride(),
            x.storage_offset(),
            x.dtype,
            x.untyped_storage().nbytes(),
        )
    return x if isinstance(x, int | float | bool | str | torch.dtype | None) else repr(x)


def _pointwise_signature(x: object) -> object:
    """What an elementwise kernel's scratch depends on: the dtypes and ranks, and the kinds of
    its numbers (each wrapped in a 0-dim tensor for the call), never the sizes or values."""
    if isinstance(x, torch.Tensor):
        return (x.dim(), x.dtype)
    return type(x).__name__ if isinstance(x, int | float | bool) else _signature(x)


def _real(x: object) -> object:
    """A zero tensor like ``x`` (its storage, strides and offset), or ``x`` itself."""
    if not isinstance(x, torch.Tensor):
        return x
    storage = torch.zeros(x.untyped_storage().nbytes() // x.element_size(), dtype=x.dtype)
    return storage.as_strided(x.shape, x.stride(), x.storage_offset())


def _tiny(x: object) -> object:
    """A one-element zero tensor of ``x``'s rank and dtype, or ``x`` itself."""
    if not isinstance(x, torch.Tensor):
        return x
    return torch.zeros((1,) * x.dim(), dtype=x.dtype)


def _scratch_of_call(func: Any, args: tuple, kwargs: dict, make: Any = _real) -> int:
    """Bytes the call holds above what it leaves live, at its peak, run for real on the tensors
    ``make`` gives for the fake ones; raises ``ProbeFailed`` where the kernel refuses them."""
    with unset_fake_temporarily(), torch.no_grad(), torch.autocast("cpu", enabled=False):
        real_args, real_kwargs = tree_map(make, (args, kwargs))
        try:
            func(*real_args, **real_kwargs)  # a warm-up: oneDNN creates its primitive once
        except RuntimeError as exc:
            raise ProbeFailed(f"{func}: {str(exc).splitlines()[0]}") from exc
        with memory_profile() as prof:
            out = func(*real_args, **real_kwargs)
        del out
    peak, live = peak_above_start(cpu_memory_events(prof))
    return max(0, peak - max(0, live))


def scratch_bytes(func: Any, args: tuple, kwargs: dict) -> int:
    """The scratch the CPU kernel of ``func`` allocates inside one call on these (fake) tensors:
    bytes live at the call's peak beyond its inputs and the outputs it returns."""
    leaves = tree_leaves((args, kwargs))
    tensors = [t for t in leaves if isinstance(t, torch.Tensor)]
    if func in _NOT_RUN or func.is_view or not tensors:
        return 0
    pointwise = torch.Tag.pointwise in func.tags
    if pointwise and not any(isinstance(x, int | float | bool) for x in leaves):
        return 0
    if func in _MATMULS and all(t.dtype in _MKL_DTYPES for t in tensors):
        return 0
    if any(t.device.type != "cpu" for t in tensors):
        return 0
    if not pointwise and sum(t.untyped_storage().nbytes() for t in tensors) > PROBE_LIMIT_BYTES:
        return 0
    signature = _pointwise_signature if pointwise else _signature
    key = repr((str(func), tuple(signature(x) for x in leaves), cpu_cache_key("kernel scratch")))
    found = _measured.get(key)
    if found is None:
        found = _scratch_of_call(func, args, kwargs, _tiny if pointwise else _real)
        _measured.put(key, found)
    return found
