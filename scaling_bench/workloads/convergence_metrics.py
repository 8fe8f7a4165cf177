"""The convergence workload's figures, from its (LR, seed) runs: what a record holds.

Metrics (the record's shape, ``{value, unit, n, …}``, with extra keys):

- At the best LR (lowest mean final training loss), means over seeds: ``final_loss_mean``
  (``samples``: one final loss per seed), ``final_loss_std`` (sample std, 0 for one seed),
  ``heldout_loss``, ``generalization_gap`` (held-out minus training loss), ``train_error`` and
  ``heldout_error`` (share of wrong argmax predictions); ``loss_spikes`` (spike steps, summed
  over seeds); ``max_attention_logit`` (gpt; the largest over seeds); ``grad_norm`` (the global
  L2 norm before clipping at every step of every seed: median, p10, p90, iqr, ``max``). Each
  carries ``by_lr`` (``f"{lr:g}"`` → the same figure at that LR); a non-finite figure is null.
  ``final_loss_mean["curves"]`` and ``heldout_loss["curves"]`` map ``"lr=0.001,seed=0"`` to
  ``[[step, loss], …]`` for every run: training losses as at most ``CURVE_POINTS`` bucket means
  (``stability.downsample``), held-out losses at each evaluation.
- Over the whole grid: ``initial_loss``, ``diverged_fraction`` (with ``by_lr``),
  ``lr_sensitivity``, ``best_lr``.

The rules (divergence, spikes, LR sensitivity, the best LR) are ``workloads.stability``'s; the
training that fills each ``TrainingRun`` is ``workloads.convergence``'s.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from scaling_bench.core.stats import single, summarize
from scaling_bench.workloads.catalog import LOSS_UNIT
from scaling_bench.workloads.stability import (
    best_lr,
    downsample,
    is_diverged,
    lr_sensitivity,
    spike_steps,
)

CURVE_POINTS = 100


@dataclass
class TrainingRun:
    """One (LR, seed) training run, as far as it got."""

    step_losses: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    heldout_curve: list[list[float | None]] = field(default_factory=list)
    initial_loss: float = math.nan
    final_loss: float = math.inf
    heldout_loss: float = math.inf
    train_error: float = math.nan
    heldout_error: float = math.nan
    max_attention_logit: float = -math.inf


def _json_number(x: float) -> float | None:
    """JSON has no infinity or NaN: a non-finite figure is recorded as null."""
    return x if math.isfinite(x) else None


def _mean(xs: list[float]) -> float:
    """Mean, infinite when any value is not finite (a diverged seed spoils its LR's mean)."""
    return math.fsum(xs) / len(xs) if all(math.isfinite(x) for x in xs) else math.inf


def _std(xs: list[float]) -> float:
    if not all(math.isfinite(x) for x in xs):
        return math.inf
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def _diverged_share(runs: list[TrainingRun]) -> float:
    return statistics.fmean(is_diverged(r.initial_loss, r.final_loss) for r in runs)


def _finite_grad_norms(runs: list[TrainingRun]) -> list[float]:
    return [x for r in runs for x in r.grad_norms if math.isfinite(x)]


def convergence_metrics(runs: dict[float, list[TrainingRun]], gpt: bool) -> dict[str, dict]:
    """The record's metrics from every run, keyed by LR (module docstring)."""
    all_runs = [r for rs in runs.values() for r in rs]
    final_by_lr = {lr: _mean([r.final_loss for r in rs]) for lr, rs in runs.items()}
    initial = _mean([r.initial_loss for r in all_runs])
    best = best_lr(final_by_lr)
    n_seeds = len(runs[best])

    def by_lr(figure: Callable[[list[TrainingRun]], float]) -> dict[str, float | None]:
        return {f"{lr:g}": _json_number(figure(rs)) for lr, rs in runs.items()}

    def at_best(figure: Callable[[list[TrainingRun]], float], unit: str) -> dict:
        return single(_json_number(figure(runs[best])), unit) | {
            "n": n_seeds,
            "by_lr": by_lr(figure),
        }

    def curves(curve: Callable[[TrainingRun], list]) -> dict[str, list]:
        return {
            f"lr={lr:g},seed={s}": curve(r) for lr, rs in runs.items() for s, r in enumerate(rs)
        }

    out = {
        "final_loss_mean": at_best(lambda rs: _mean([r.final_loss for r in rs]), LOSS_UNIT)
        | {
            "samples": [_json_number(r.final_loss) for r in runs[best]],
            "curves": curves(lambda r: downsample(r.step_losses, CURVE_POINTS)),
        },
        "final_loss_std": at_best(lambda rs: _std([r.final_loss for r in rs]), LOSS_UNIT),
        "heldout_loss": at_best(lambda rs: _mean([r.heldout_loss for r in rs]), LOSS_UNIT)
        | {"curves": curves(lambda r: r.heldout_curve)},
        "generalization_gap": at_best(
            lambda rs: _mean([r.heldout_loss - r.final_loss for r in rs]), LOSS_UNIT
        ),
        "train_error": at_best(lambda rs: _mean([r.train_error for r in rs]), "fraction"),
        "heldout_error": at_best(lambda rs: _mean([r.heldout_error for r in rs]), "fraction"),
        "loss_spikes": at_best(
            lambda rs: float(sum(len(spike_steps(r.step_losses)) for r in rs)), "count"
        ),
        "diverged_fraction": single(_diverged_share(all_runs), "fraction")
        | {"n": len(all_runs), "by_lr": by_lr(_diverged_share)},
        "initial_loss": single(_json_number(initial), LOSS_UNIT),
        "lr_sensitivity": single(_json_number(lr_sensitivity(final_by_lr, initial)), LOSS_UNIT),
        "best_lr": single(best, "lr"),
    }
    norms = _finite_grad_norms(runs[best])
    if norms:
        out["grad_norm"] = summarize(norms, "1", keep_samples=False) | {
            "max": max(norms),
            "by_lr": by_lr(lambda rs: statistics.median(_finite_grad_norms(rs) or [math.nan])),
        }
    if gpt:
        out["max_attention_logit"] = at_best(lambda rs: max(r.max_attention_logit for r in rs), "1")
    return out
