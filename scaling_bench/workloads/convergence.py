"""Convergence: train for a number of steps over seeds and learning rates, and record how it went.

For each learning rate of the grid and each seed 0..S−1, a fresh model (``torch.manual_seed(seed)``,
so every LR starts from the same weights) trains ``steps`` steps (with a token budget ``tokens``,
a sequence family trains the steps that cover it, ``steps_for``) on mini-batches drawn without
replacement, epoch after epoch, by a generator seeded with the seed. The data set is the same for
every run of a case (``DATA_SEED``): the spread over seeds is the optimisation's, not the data's.
On the CPU the same case and seed give bitwise-identical curves (deterministic algorithms on).

The loss is cross-entropy (gpt: over every next token). With ``z_loss`` > 0 the objective adds
PaLM's ``z_loss · mean(logsumexp(logits)²)``, which keeps the softmax normaliser near 1; the
recorded losses stay plain cross-entropy, comparable with and without it. A run whose training
loss turns non-finite stops there and counts as diverged (never an error).

Evaluation (eval mode, no gradients) runs before the first step, every ``eval_every`` steps and
after the last, on the held-out set and on the first min(train_size, heldout_size) training
samples (noisy labels included: that is what the model is asked to fit), in batches of
``EVAL_BATCH_FACTOR`` training batches. The evaluated training
loss before the first step is the initial loss, after the last the final loss; divergence, LR
sensitivity and the best LR use these (rules in ``scaling_bench.workloads.stability``).

The metrics (the record's shape) are listed in ``workloads.convergence_metrics``.

``max_attention_logit`` is the largest pre-softmax attention logit ``q·k/sqrt(head_dim)`` over
causal positions, heads and layers, taken at every evaluation on the first
``ATTENTION_PROBE_SEQUENCES`` training sequences by forward hooks on each attention's q and k
norms (the tensors handed to SDPA, whose fused kernel never exposes the logits), and the largest
value seen over the run. Between evaluations it is not watched, so a brief excursion can be missed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from scaling_bench.config.convergence import ConvergenceSettings, settings_for
from scaling_bench.core import precision as precisions
from scaling_bench.core.errors import UserError
from scaling_bench.core.optimizers import make_optimizer
from scaling_bench.core.precision import Precision
from scaling_bench.models import family, tokens_per_sample
from scaling_bench.models.attention import CausalSelfAttention
from scaling_bench.models.datasets import load_dataset
from scaling_bench.workloads import catalog
from scaling_bench.workloads.base import Context, Workload, register
from scaling_bench.workloads.convergence_metrics import TrainingRun, convergence_metrics
from scaling_bench.workloads.setup import CaseSetup

if TYPE_CHECKING:
    from scaling_bench.config.case import Case

#: The cosine schedule decays to this share of the peak LR at the last step (as nanoGPT does).
MIN_LR_FRACTION = 0.1
DATA_SEED = 0
ATTENTION_PROBE_SEQUENCES = 8
#: Evaluation batches hold this many training batches. Without gradients a forward pass keeps
#: one layer's activations at a time where the training step keeps every layer's, so the larger
#: batch stays within the training's memory; it cut gpt's evaluation (batch 16) about threefold
#: on a CPU, where small batches pay per-operator overhead.
EVAL_BATCH_FACTOR = 4


def steps_for(settings: ConvergenceSettings, batch_size: int, tokens_per_sample: int | None) -> int:
    """Steps a run trains: ``settings.steps``, or, with a token budget, the steps that cover it."""
    if settings.tokens is None:
        return settings.steps
    if not tokens_per_sample:
        raise UserError(f"convergence tokens={settings.tokens}: this family has no token count")
    return math.ceil(settings.tokens / (batch_size * tokens_per_sample))


def lr_factor(step: int, settings: ConvergenceSettings) -> float:
    """Share of the peak LR at ``step``: linear warm-up, then constant or cosine decay."""
    if step < settings.warmup_steps:
        return (step + 1) / settings.warmup_steps
    if settings.schedule == "constant":
        return 1.0
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return MIN_LR_FRACTION + (1 - MIN_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


@contextmanager
def _deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic kernels on the CPU, where they cost nothing; the old setting comes back."""
    if device.type != "cpu":
        yield
        return
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _losses(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, z_loss: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cross-entropy, training objective, logits flattened to (samples·positions, classes))."""
    out = model(inputs)
    logits = out.reshape(-1, out.shape[-1]).float()
    ce = F.cross_entropy(logits, targets.reshape(-1))
    if not z_loss:
        return ce, ce, logits
    return ce, ce + z_loss * torch.logsumexp(logits, dim=-1).pow(2).mean(), logits


@torch.no_grad()
def _evaluate(
    model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int
) -> tuple[float, float]:
    """(mean cross-entropy, error rate) over every target, in eval mode."""
    model.eval()
    loss_sum, wrong, count = 0.0, 0, 0
    for start in range(0, len(inputs), batch_size):
        y = targets[start : start + batch_size]
        ce, _, logits = _losses(model, inputs[start : start + batch_size], y, 0.0)
        loss_sum += ce.item() * y.numel()
        wrong += int((logits.argmax(dim=-1) != y.reshape(-1)).sum().item())
        count += y.numel()
    model.train()
    return loss_sum / count, wrong / count


@torch.no_grad()
def max_attention_logit(model: nn.Module, tokens: torch.Tensor) -> float:
    """Largest causal ``q·k/sqrt(head_dim)`` over layers and heads of a decoder on ``tokens``
    (grouped key heads are shared by their query heads)."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    attns = [m for m in model.modules() if isinstance(m, CausalSelfAttention)]
    hooks = [a.scores.register_forward_hook(lambda m, i, out: pairs.append(out)) for a in attns]
    was_training = model.training
    model.eval()
    try:
        model(tokens)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    largest = -math.inf
    for q, k in pairs:
        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        logits = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
        causal = torch.ones(logits.shape[-2:], dtype=torch.bool, device=logits.device).tril()
        largest = max(largest, logits.masked_fill(~causal, -math.inf).max().item())
    return largest


def _batch_order(n: int, batch_size: int, steps: int, g: torch.Generator) -> torch.Tensor:
    """``(steps, batch_size)`` sample indices: shuffled epochs, concatenated, cut into batches."""
    epochs = math.ceil(steps * batch_size / n)
    order = torch.cat([torch.randperm(n, generator=g) for _ in range(epochs)])
    return order[: steps * batch_size].view(steps, batch_size)


class _Splits(NamedTuple):
    train: tuple[torch.Tensor, torch.Tensor]
    train_eval: tuple[torch.Tensor, torch.Tensor]  # the first min(train_size, heldout_size)
    heldout: tuple[torch.Tensor, torch.Tensor]


def _train(
    build: Callable[[], nn.Module],
    data: _Splits,
    settings: ConvergenceSettings,
    batch_size: int,
    lr: float,
    seed: int,
    probe_attention: bool,
    precision: Precision = precisions.PRECISIONS["fp32"],
) -> TrainingRun:
    """One run: seeded init and batch order, evaluations, and a stop at a non-finite loss; the
    forward passes and losses under the precision's autocast, fp16's loss scaled."""
    (train_x, train_y), train_eval, heldout = data
    torch.manual_seed(seed)
    model = build()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(
        settings.optimizer, params, lr=lr, weight_decay=settings.weight_decay
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, settings))
    order = _batch_order(
        len(train_x), batch_size, settings.steps, torch.Generator().manual_seed(seed)
    )
    probe = train_eval[0][:ATTENTION_PROBE_SEQUENCES] if probe_attention else None
    run = TrainingRun()
    device = train_x.device
    scaler = torch.amp.GradScaler(device.type) if precision.grad_scaler else None

    def evaluate(step: int) -> None:
        eval_batch = EVAL_BATCH_FACTOR * batch_size
        with precision.autocast_context(device):
            run.final_loss, run.train_error = _evaluate(model, *train_eval, eval_batch)
            run.heldout_loss, run.heldout_error = _evaluate(model, *heldout, eval_batch)
        finite = math.isfinite(run.heldout_loss)
        run.heldout_curve.append([step, run.heldout_loss if finite else None])
        if probe is not None:
            run.max_attention_logit = max(
                run.max_attention_logit, max_attention_logit(model, probe)
            )

    evaluate(0)
    run.initial_loss = run.final_loss
    for step, idx in enumerate(order, start=1):
        with precision.autocast_context(device):
            ce, objective, _ = _losses(model, train_x[idx], train_y[idx], settings.z_loss)
        loss = ce.item()
        run.step_losses.append(loss)
        if not math.isfinite(loss):
            run.final_loss = run.heldout_loss = math.inf
            run.train_error = run.heldout_error = math.nan
            return run
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            objective.backward()
        else:
            scaler.scale(objective).backward()
            scaler.unscale_(optimizer)  # the norm and the clipping see the true gradients
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if settings.grad_clip is not None:
            torch.nn.utils.clip_grads_with_norm_(params, settings.grad_clip, norm)
        run.grad_norms.append(norm.item())
        if scaler is None:
            optimizer.step()
        else:
            scaler.step(optimizer)
            scaler.update()
        schedule.step()
        if step % settings.eval_every == 0 or step == settings.steps:
            evaluate(step)
    return run


def run_convergence(
    family_name: str,
    cfg: object,
    settings: ConvergenceSettings,
    device: torch.device | str = "cpu",
    precision: Precision = precisions.PRECISIONS["fp32"],
) -> dict[str, dict]:
    """Train every (LR, seed) of ``settings`` and return the metrics in the module docstring."""
    device = torch.device(device)
    dtype = precision.param_dtype
    fam = family(family_name)
    batch_size = settings.batch_size or fam.DEFAULT_BATCH_SIZE
    steps = steps_for(settings, batch_size, tokens_per_sample(family_name, cfg))
    settings = replace(settings, steps=steps)
    dataset = load_dataset(
        settings.dataset,
        family_name,
        cfg,
        train_size=settings.train_size,
        heldout_size=settings.heldout_size,
        label_noise=settings.label_noise,
        seed=DATA_SEED,
        data_root=settings.data_root,
        download=settings.download,
    )

    def to_device(x: torch.Tensor) -> torch.Tensor:
        return x.to(device, dtype=dtype if x.is_floating_point() else None)

    train_x, train_y = (to_device(t) for t in dataset.train)
    n_eval = min(settings.train_size, settings.heldout_size)
    data = _Splits(
        (train_x, train_y),
        (train_x[:n_eval], train_y[:n_eval]),
        (to_device(dataset.heldout[0]), to_device(dataset.heldout[1])),
    )
    gpt = any(isinstance(m, CausalSelfAttention) for m in fam.build(cfg, "meta").modules())

    def build() -> nn.Module:
        return fam.build(cfg, device=device, dtype=dtype)

    with _deterministic(device):
        runs = {
            lr: [
                _train(build, data, settings, batch_size, lr, seed, gpt, precision)
                for seed in range(settings.seeds)
            ]
            for lr in settings.lrs
        }
    return convergence_metrics(runs, gpt=gpt)


class Convergence(Workload, declared=catalog.CONVERGENCE):
    """Last: it trains fresh models of its own, after the case's model is freed."""

    trains = True
    strategies = (None,)

    def skip_reason(self, case: Case) -> str | None:
        """A token budget needs a family whose samples have tokens."""
        tokens = settings_for(case).tokens
        if tokens is not None and not hasattr(family(case.family), "tokens_per_sample"):
            return f"convergence tokens={tokens}: the {case.family} family has no token count"
        return super().skip_reason(case)

    def measure(self, setup: CaseSetup, ctx: Context) -> dict[str, dict]:
        case = setup.case
        return run_convergence(
            case.family,
            setup.plan.config,
            settings_for(case),
            setup.device,
            setup.precision,
        )

    def outcome(self, metrics: dict[str, dict]) -> str | None:
        """A case whose every run diverged is recorded as diverged, not ok."""
        return "diverged" if metrics.get("diverged_fraction", {}).get("value") == 1 else None


register(Convergence())
