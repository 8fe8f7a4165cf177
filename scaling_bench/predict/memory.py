"""Training memory as the peak over the phases of a step, replayed on fake tensors.

A training step's memory is never weights + gradients + optimizer state + activations at once:
at the backward peak most gradients do not exist yet, and the optimizer step holds temporaries
that no closed form knows (two the size of the largest tensor for the for-loop AdamW, one the
size of all parameters for the foreach one). So the step is replayed, exactly as the case runs
it, on ``FakeTensor``s of the case's device: the model built on the meta device, its optimizer
(the implementation chosen explicitly), one warm-up step that creates the optimizer's state,
then zero_grad, the forward and the loss under the precision's autocast (the real autocast, with
its weight-cast cache, since fake tensors carry the device's dispatch keys), backward (with
activation checkpointing's recomputation where the case has it) and the optimizer step. A
``TorchDispatchMode`` counts the bytes of every live storage (a weak-reference finalizer frees
them) and keeps, for each phase, the largest total and what it was made of: weights, buffers,
the input batch, optimizer state, the gradients accumulated so far, autocast's weight copies and
everything else (saved activations, autograd's gradient buffers, the loss's fp32 buffers, the
optimizer's temporaries). Attention runs the path the device's SDPA dispatch picks (on the CPU,
``nn.MultiheadAttention`` with ``need_weights=False`` and SDPA both reach the flash kernel for
the CPU, which saves its output and log-sum-exp, never the T×T matrix).

What the tensors alone miss on the CPU is the scratch a kernel allocates and frees inside one
call (oneDNN's blocked-layout copies of a convolution, bf16 matmul's packed operands and fp32
accumulators: ``predict.cpu_kernels``); the tensor meter sees it, and it can make a tenth of a
small convolutional or bf16 step. On a CPU case each op's scratch is added while the op runs
(part ``kernel_scratch``, live only during the call), so it raises a phase's peak only where it
lands on it.

Replaying a deep model costs ~0.3 ms per op, so models with repeated blocks are replayed at depth
3 and 4 and each phase's parts extrapolated linearly in depth (``SHALLOW_DEPTHS``); the same
two-point fit in the batch size gives the affine model that a ``max`` batch solves
(``affine_in_batch``).
"""

from __future__ import annotations

import itertools
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from scaling_bench.config.recipe import Recipe
from scaling_bench.core.optimizers import make_optimizer
from scaling_bench.models import family
from scaling_bench.models.checkpointing import apply as apply_checkpointing
from scaling_bench.models.loss import loss_of
from scaling_bench.predict import cpu_kernels
from scaling_bench.predict.cpu_kernels import ProbeFailed, scratch_bytes, with_real_dtypes
from scaling_bench.predict.phases import PHASES

#: What live bytes are made of, in the order a breakdown shows them.
PARTS = (
    "weights",
    "buffers",
    "batch",
    "optimizer_state",
    "gradients",
    "weight_copies",
    "transient",
    "kernel_scratch",
)
_LOCAL_SCALAR = torch.ops.aten._local_scalar_dense.default
_TO_COPY = torch.ops.aten._to_copy.default


class _LiveBytes(TorchDispatchMode):
    """Bytes of live storages by part, and each phase's peak with its parts."""

    def __init__(self, kernel_scratch: bool = False) -> None:
        super().__init__()
        self.kernel_scratch = kernel_scratch
        self.live = dict.fromkeys(PARTS, 0)
        self.total = 0
        self.phase: str | None = None
        self.peaks: dict[str, dict[str, int]] = {}
        self._keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._part: dict[int, tuple[str, int]] = {}
        self._weights: set[int] = set()
        self._count = itertools.count()
        #: The ops whose scratch could not be measured (``ProbeFailed``), with the reason.
        self.unmeasured: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is _LOCAL_SCALAR:  # a fake tensor has no value: Adam's step count, say
            return 1
        out = with_real_dtypes(func, args, func(*args, **(kwargs or {})))
        copies = func is _TO_COPY and self._key(args[0]) in self._weights
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t, "weight_copies" if copies else "transient")
        if self.phase is not None:
            scratch = self._scratch(func, args, kwargs or {})
            if self.total + scratch > self.peaks[self.phase]["total"]:
                self.peaks[self.phase] = self.live | {
                    "kernel_scratch": scratch,
                    "total": self.total + scratch,
                }
        return out

    def _scratch(self, func, args: tuple, kwargs: dict) -> int:
        if not self.kernel_scratch:
            return 0
        try:
            return scratch_bytes(func, args, kwargs)
        except ProbeFailed as exc:
            self.unmeasured.add(str(exc))
            return 0

    def _key(self, t: torch.Tensor) -> int | None:
        return self._keys.get(t.untyped_storage()) if isinstance(t, torch.Tensor) else None

    def track(self, t: torch.Tensor, part: str) -> None:
        """Count ``t``'s storage under ``part`` if it is new; move it to ``part`` if asked to."""
        storage = t.untyped_storage()
        key = self._keys.get(storage)
        if key is None:
            key = next(self._count)
            self._keys[storage] = key
            self._part[key] = (part, storage.nbytes())
            self.live[part] += storage.nbytes()
            self.total += storage.nbytes()
            weakref.finalize(storage, self._free, key)
        elif part != "transient":
            old, nbytes = self._part[key]
            self.live[old] -= nbytes
            self.live[part] += nbytes
            self._part[key] = (part, nbytes)
        if part == "weights":
            self._weights.add(key)

    def _free(self, key: int) -> None:
        part, nbytes = self._part.pop(key)
        self.live[part] -= nbytes
        self.total -= nbytes

    def enter(self, phase: str) -> None:
        self.phase = phase
        self.peaks[phase] = self.live | {"total": self.total}


@contextmanager
def _fake_rng_state() -> Iterator[None]:
    """The CPU RNG state as a fake tensor of its real size: a checkpointed block keeps one from
    its forward to its recomputation, and the recomputation's ``fork_rng`` another while it
    runs (5,056 B each); setting it is a no-op, since a fake tensor has no values."""
    nbytes = torch.get_rng_state().numel()
    real = torch.get_rng_state, torch.set_rng_state
    torch.get_rng_state = lambda: torch.empty(nbytes, dtype=torch.uint8, device="cpu")
    torch.set_rng_state = lambda *_: None
    try:
        yield
    finally:
        torch.get_rng_state, torch.set_rng_state = real


def _fake(mode: FakeTensorMode, t: torch.Tensor, device: torch.device) -> torch.Tensor:
    fake = FakeTensor(mode, t, device)
    return nn.Parameter(fake, t.requires_grad) if isinstance(t, nn.Parameter) else fake


def _to_fake(mode: FakeTensorMode, model: nn.Module, device: torch.device) -> None:
    """Swap a meta model's tensors for fake ones on ``device``, in place (ties kept)."""
    made: dict[int, torch.Tensor] = {}
    for module in model.modules():
        stores: tuple[dict[str, Any], ...] = (module._parameters, module._buffers)
        for store in stores:
            for name, t in store.items():
                if t is not None:
                    store[name] = made.setdefault(id(t), _fake(mode, t, device))


@dataclass(frozen=True)
class StepPeak:
    """Each phase's peak of live bytes, with its parts (``PARTS``); the step's is the largest.
    ``unmeasured``: the ops whose kernel scratch is unknown, counted as none (and said so)."""

    phases: dict[str, dict[str, int]]
    unmeasured: tuple[str, ...] = ()

    @property
    def peak_phase(self) -> str:
        return max(PHASES, key=lambda phase: self.phases[phase]["total"])

    @property
    def peak_bytes(self) -> int:
        return self.phases[self.peak_phase]["total"]


def _replay(
    family_name: str,
    cfg: object,
    recipe: Recipe,
    device: torch.device,
    kernel_scratch: bool = True,
) -> StepPeak:
    """The recipe's step replayed on fake tensors of ``device`` (the recipe's, or the CPU's
    dispatch standing in for a CUDA device that is not here)."""
    batch_size, precision, optimizer = recipe.batch, recipe.precision, recipe.optimizer
    implementation, checkpointing = recipe.optimizer_implementation, recipe.activation_checkpointing
    fam = family(family_name)
    model = fam.build(cfg, device="meta", dtype=precision.param_dtype)
    # a CPU case (not a CUDA one replayed on the CPU's dispatch) holds its checkpointed blocks'
    # RNG states among its tensors
    on_cpu = kernel_scratch and device.type == "cpu"
    apply_checkpointing(model, family_name, checkpointing, preserve_rng_state=on_cpu)
    batch = fam.sample_batch(cfg, batch_size, "meta", precision.param_dtype)
    mode = FakeTensorMode()
    _to_fake(mode, model, device)
    inputs, targets = (FakeTensor(mode, t, device) for t in batch)
    batch = inputs, targets
    live = _LiveBytes(kernel_scratch and device.type == "cpu")
    with mode, live, _fake_rng_state():
        for p in model.parameters():
            live.track(p, "weights")
            p.register_post_accumulate_grad_hook(lambda p: live.track(p.grad, "gradients"))
        for b in model.buffers():
            live.track(b, "buffers")
        for t in batch:
            live.track(t, "batch")
        opt = make_optimizer(optimizer, model.parameters(), implementation=implementation)
        for p in model.parameters():  # a warm-up step: the optimizer's state, made lazily
            p.grad = torch.zeros_like(p)
        opt.step()
        opt.zero_grad(set_to_none=True)
        for t in tree_leaves(opt.state_dict()["state"]):
            if isinstance(t, torch.Tensor):
                live.track(t, "optimizer_state")
        live.enter("forward")
        with precision.autocast_context(device) if precision.autocast else nullcontext():
            loss = loss_of(model, batch)
        live.enter("backward")
        loss.backward()
        live.enter("optimizer")
        opt.step()  # with the loss live, as a step that returns it holds it
        live.phase = None
        del loss
    cpu_kernels.save()
    return StepPeak(live.peaks, tuple(sorted(live.unmeasured)))


#: The two depths replayed for a deeper model: by the lower one every kind of block is there
#: (an MLP's first hidden-to-hidden layer comes at depth 3), so what is not linear in depth (the
#: for-loop optimizer's temporaries, the size of the largest tensor) is the same at both.
SHALLOW_DEPTHS = (3, 4)


def _depth_field(family_name: str, cfg: object) -> tuple[str, int] | None:
    """The family's repeated-block field and depth, where two shallow replays stand for it."""
    field: str | None = getattr(family(family_name), "DEPTH_FIELD", None)
    if field is None:
        return None
    depth = getattr(cfg, field)
    if isinstance(depth, tuple):
        depth = depth[0] if len(set(depth)) == 1 else None
    return (field, depth) if depth is not None and depth > SHALLOW_DEPTHS[1] else None


def _with_depth(cfg: Any, field: str, n: int) -> Any:
    stages = getattr(cfg, field)
    return replace(cfg, **{field: tuple([n] * len(stages)) if isinstance(stages, tuple) else n})


def _line(one: StepPeak, two: StepPeak, at: float) -> StepPeak:
    """The peaks at ``at`` on the line through ``one`` (at 0) and ``two`` (at 1), part by part."""
    return StepPeak(
        {
            phase: {
                k: round(v + at * (two.phases[phase][k] - v)) for k, v in one.phases[phase].items()
            }
            for phase in PHASES
        },
        tuple(sorted({*one.unmeasured, *two.unmeasured})),
    )


def step_peak(family_name: str, cfg: object, recipe: Recipe) -> StepPeak:
    """The peak live bytes of a training step of ``cfg`` in ``recipe`` (its batch resolved)
    after a warm-up step, by phase.

    A CUDA step planned where no CUDA device is (the autograd engine needs one even for fake
    tensors) is replayed on the CPU's dispatch: the same tensors, but SDPA's CPU kernel, and
    without the CPU kernels' scratch."""
    device = torch.device(recipe.device)
    scratch = device.type == "cpu"
    if device.type == "cuda" and not torch.cuda.is_available():
        device = torch.device("cpu")

    def at(c: object) -> StepPeak:
        return _replay(family_name, c, recipe, device, scratch)

    deep = _depth_field(family_name, cfg)
    if deep is None:
        return at(cfg)
    field, depth = deep
    low, high = (at(_with_depth(cfg, field, d)) for d in SHALLOW_DEPTHS)
    return _line(low, high, depth - SHALLOW_DEPTHS[0])


#: The batch sizes the line in the batch size is fitted at: from 2, since a BatchNorm refuses a
#: batch of one where a stage is 1×1, and at one sample oneDNN's blocking (the kernel scratch) is
#: furthest from linear (vit 1e6: a phase whose bytes fell from batch 1 to 2).
FIT_BATCHES = (2, 4)


@dataclass(frozen=True)
class BatchAffine:
    """A step's peak against its batch size: each phase's bytes are ``fixed + per_sample·B``.

    ``fixed_bytes`` and ``per_sample_bytes`` are the line of the phase that peaks at large
    batches (the largest per-sample bytes); ``bytes_at`` is the largest phase at a batch and
    ``largest_batch`` the batch where it meets a budget: a first guess that the ``max`` batch's
    search (``predict.batch``) checks against replays at that batch."""

    phases: dict[str, tuple[int, int]]

    @property
    def _steepest(self) -> tuple[int, int]:
        return max(self.phases.values(), key=lambda line: (line[1], line[0]))

    @property
    def fixed_bytes(self) -> int:
        return self._steepest[0]

    @property
    def per_sample_bytes(self) -> int:
        return self._steepest[1]

    def bytes_at(self, batch_size: int) -> int:
        return max(fixed + per_sample * batch_size for fixed, per_sample in self.phases.values())

    def largest_batch(self, budget_bytes: int, top: int) -> int:
        """The largest batch in 0..``top`` on the lines within ``budget_bytes``: a phase whose
        bytes do not grow with the batch bounds nothing (its slope may even be negative)."""
        fits = [
            (budget_bytes - fixed) // slope for fixed, slope in self.phases.values() if slope > 0
        ]
        return max(0, min([top, *fits]))


def affine_in_batch(family_name: str, cfg: object, recipe: Recipe) -> BatchAffine:
    """The peak's fixed and per-sample bytes, per phase, from replays of ``recipe`` at
    ``FIT_BATCHES`` (its own batch size is not asked)."""
    (b1, one), (b2, two) = (
        (b, step_peak(family_name, cfg, recipe.with_batch(b))) for b in FIT_BATCHES
    )
    lines = {}
    for phase in PHASES:
        y1, y2 = one.phases[phase]["total"], two.phases[phase]["total"]
        slope = (y2 - y1) // (b2 - b1)
        lines[phase] = (y1 - slope * b1, slope)
    return BatchAffine(lines)


def live_bytes_of(make: Callable[[], object], device: torch.device | str = "cpu") -> int:
    """Bytes of the tensors ``make`` returns, made on fake tensors of ``device`` (a KV cache,
    a buffer a workload allocates): what they will hold for real, with nothing allocated."""
    live = _LiveBytes()
    with FakeTensorMode(), live, torch.device(device):
        made = make()
        held = live.total
    del made
    return held
