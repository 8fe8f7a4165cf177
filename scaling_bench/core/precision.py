"""The precisions a case can run in, by the names users type (``--precision``, alias ``--dtype``).

A precision is more than a dtype: pure ``bf16`` keeps parameters, gradients and optimizer state
in bf16 (8 B/param for AdamW), while ``amp-bf16`` keeps them in fp32 (16 B/param) and runs the
forward and the loss under autocast, so matmuls run in bf16 over bf16 copies of the weights. The
two names cost the same per matmul but differ in memory, checkpoint bytes and convergence; MFU is
measured against the *compute* dtype's peak in both. Precisions that transform the model (fp8's
float8 linear layers) carry a ``convert`` hook, and those that need hardware a ``skip_reason``.

A new precision is one ``register`` line here, and a module of its own for any hooks it has.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from scaling_bench.core import fp8, int8_weight
from scaling_bench.core.errors import UserError

if TYPE_CHECKING:  # the dtypes are named, and torch imported when one is asked for, so that
    import torch  # the axes, the help and the readers of records know the precisions without it
    from torch import nn

#: The short names of the dtypes precisions are made of (the peak table's columns), by torch name.
DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3fn": "fp8"}


def _dtype(name: str) -> torch.dtype:
    import torch

    dtype: torch.dtype = getattr(torch, name)
    return dtype


def _runs_anywhere(device: torch.device) -> str | None:
    return None


def _unchanged(model: nn.Module, device: torch.device) -> nn.Module:
    return model


def needs_cuda(device: torch.device) -> str | None:
    """The ``skip_reason`` of a precision that only CUDA devices have (TF32 tensor cores)."""
    import torch

    return None if torch.device(device).type == "cuda" else "needs a CUDA device"


@dataclass(frozen=True)
class Precision:
    """How a case holds and computes its numbers.

    ``param`` (``param_dtype``): parameters, gradients and optimizer state (the checkpoint's
    dtype). ``compute`` (``compute_dtype``): what matmuls run in; the peak FLOP/s that MFU divides
    by is this dtype's. ``activation`` (``activation_dtype``): what activations are kept in
    (autocast's dtype where ``autocast``). Each is a torch dtype's name (``"bfloat16"``).
    ``autocast``: forward and loss run under ``torch.autocast(activation_dtype)``; backward and the
    optimizer step do not. ``grad_scaler``: the loss is scaled (fp16's narrow range).
    ``tf32``: CUDA fp32 matmuls and convolutions may run as TF32 (else they are kept fp32).
    ``trains``: False for inference-only precisions (quantized weights have no gradients).
    """

    name: str
    param: str
    compute: str
    help: str
    activation: str | None = None
    autocast: bool = False
    grad_scaler: bool = False
    tf32: bool = False
    trains: bool = True
    #: Why this precision cannot run on ``device`` (None: it can).
    skip_reason: Callable[[torch.device], str | None] = _runs_anywhere
    #: The model this precision runs, made from the built fp32/param-dtype one.
    convert: Callable[[nn.Module, torch.device], nn.Module] = _unchanged

    def __post_init__(self) -> None:
        if self.activation is None:
            object.__setattr__(self, "activation", self.param)

    @property
    def param_dtype(self) -> torch.dtype:
        return _dtype(self.param)

    @property
    def compute_dtype(self) -> torch.dtype:
        return _dtype(self.compute)

    @property
    def activation_dtype(self) -> torch.dtype:
        return _dtype(self.activation or self.param)  # __post_init__ set it to param if None

    @property
    def peak_name(self) -> str:
        """The peak-table column MFU is measured against: the compute dtype's (TF32's here)."""
        return "tf32" if self.tf32 else DTYPE_NAMES[self.compute]

    def set_backends(self, device: torch.device | str) -> None:
        """On CUDA, let fp32 matmuls and convolutions run as TF32 exactly when ``tf32``."""
        import torch

        if torch.device(device).type != "cuda":
            return
        mode = "tf32" if self.tf32 else "ieee"
        torch.backends.cuda.matmul.fp32_precision = mode
        torch.backends.cudnn.conv.fp32_precision = mode  # type: ignore[attr-defined]  # torch's stub lacks conv

    def autocast_context(self, device: torch.device | str) -> AbstractContextManager[Any]:
        """What the forward and the loss run under: autocast for AMP precisions, else nothing."""
        if not self.autocast:
            return nullcontext()
        import torch

        return torch.autocast(torch.device(device).type, dtype=self.activation_dtype)


PRECISIONS: dict[str, Precision] = {}


def register(precision: Precision) -> Precision:
    """Add a precision to the registry (a name registered twice is a programming error)."""
    if precision.name in PRECISIONS:
        raise ValueError(f"precision {precision.name!r} is registered twice")
    PRECISIONS[precision.name] = precision
    return precision


def get(name: str, what: str = "--precision") -> Precision:
    """The precision called ``name``; a ``UserError`` naming the choices otherwise."""
    if name not in PRECISIONS:
        raise UserError(f"{what}: unknown precision {name!r}; choose from {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


_F32, _BF16, _F16 = "float32", "bfloat16", "float16"
register(Precision("fp32", _F32, _F32, "fp32 everywhere (TF32 off)"))
register(Precision("tf32", _F32, _F32, "fp32 weights, TF32 matmuls (CUDA)", tf32=True,
                   skip_reason=needs_cuda))  # fmt: skip
register(Precision("bf16", _BF16, _BF16, "pure bf16: weights, grads, optimizer state"))
register(Precision("fp16", _F16, _F16, "pure fp16: weights, grads, optimizer state"))
register(Precision("amp-bf16", _F32, _BF16, "autocast bf16 over fp32 weights", autocast=True,
                   activation=_BF16))  # fmt: skip
register(Precision("amp-fp16", _F32, _F16, "autocast fp16 over fp32 weights, loss scaling",
                   activation=_F16, autocast=True, grad_scaler=True))  # fmt: skip

# Precisions that transform the model keep their hooks in a module of their own.
register(Precision("fp8", _F32, "float8_e4m3fn", "torchao float8 linears under bf16 autocast, "
                   "fp32 weights (CUDA 8.9+)", activation=_BF16, autocast=True,
                   skip_reason=fp8.skip_reason, convert=fp8.convert))  # fmt: skip
register(Precision("int8-weight", _F32, _F32, "int8 Linear weights, inference only (torchao, "
                   "else PyTorch dynamic quantization on a CPU)", trains=False,
                   skip_reason=int8_weight.skip_reason, convert=int8_weight.convert))  # fmt: skip
