"""Study (b): final loss against learning rate for gpt at two widths, with and without qk-layernorm.

Question: does a LayerNorm on queries and keys make small transformers less sensitive to the
learning rate, by keeping attention logits from growing without bound at high rates (Dehghani et
al. 2023; Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
instabilities")?

Two-layer gpt (two heads, context 64, byte vocabulary) at d_model 32 and 128, trained on bytes of
the standard library's source (held-out files held out), 200 AdamW steps of 16 sequences, 20
warm-up steps then cosine decay, two seeds, over a log grid of seven learning rates from 3e-4
to 3e-1. Every configuration runs through ``run_convergence``, the code behind ``scaling-bench run
--workloads convergence``. One thread: the models are tiny, and two threads on cores that other
jobs share run ten times slower.

    python studies/lr_sweep_qk_layernorm.py

Prints final training loss, held-out loss and the largest attention logit per LR, the LR
sensitivity and the best LR of each configuration, and writes
docs/figures/lr_sweep_qk_layernorm.png.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from figures import write

from scaling_bench.models.gpt import GPTConfig, param_count
from scaling_bench.workloads.convergence import ConvergenceSettings, run_convergence

WIDTHS = (32, 128)
SETTINGS = ConvergenceSettings(
    dataset="text",
    steps=200,
    seeds=2,
    lrs=(3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1),
    batch_size=16,
    train_size=4096,
    heldout_size=128,
    eval_every=100,
    warmup_steps=20,
    schedule="cosine",
)
#: The per-LR rows printed, by metric name.
PER_LR = {"final_loss_mean": "train", "heldout_loss": "held-out", "max_attention_logit": "logit"}


def config(width: int, qk_layernorm: bool) -> GPTConfig:
    return GPTConfig(n_layer=2, d_model=width, n_head=2, seq_len=64, qk_layernorm=qk_layernorm)


def fmt(x: float | None) -> str:
    return f"{x:>9.3f}" if x is not None else f"{'diverged':>9}"


def main() -> None:
    torch.set_num_threads(1)
    results = {}
    print(f"{'lr:':>35} " + " ".join(f"{lr:>9g}" for lr in SETTINGS.lrs))
    for width in WIDTHS:
        for qk in (False, True):
            cfg = config(width, qk)
            metrics = run_convergence("gpt", cfg, SETTINGS)
            results[width, qk] = metrics
            label = f"d={width} qk-ln={'on' if qk else 'off'} ({param_count(cfg):,})"
            for name, row in PER_LR.items():
                values = metrics[name]["by_lr"].values()
                print(f"{label:<26} {row:>8} " + " ".join(fmt(v) for v in values))
                label = ""
            print(
                f"{'':35} initial loss {metrics['initial_loss']['value']:.3f}, "
                f"lr_sensitivity {metrics['lr_sensitivity']['value']:.3f}, "
                f"best lr {metrics['best_lr']['value']:g}, "
                f"diverged {metrics['diverged_fraction']['value']:.0%}"
            )
    plot(results)


def plot(results: dict[tuple[int, bool], dict]) -> None:
    fig, (losses, logits) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (width, qk), metrics in results.items():
        style = {
            "color": "C0" if width == WIDTHS[0] else "C1",
            "ls": "-" if qk else "--",
            "marker": "o" if qk else "s",
            "label": f"d_model {width}, qk-layernorm {'on' if qk else 'off'}",
        }
        lrs = [float(lr) for lr in metrics["final_loss_mean"]["by_lr"]]
        mean, std = (
            list(metrics[n]["by_lr"].values()) for n in ("final_loss_mean", "final_loss_std")
        )
        losses.errorbar(lrs, mean, yerr=std, capsize=3, **style)
        logits.plot(lrs, list(metrics["max_attention_logit"]["by_lr"].values()), **style)
    losses.set_ylabel(f"final training loss (nats), mean ± std of {SETTINGS.seeds} seeds")
    logits.set_ylabel("largest attention logit q·k/√d_head (over seeds)")
    logits.set_yscale("log")
    for ax in (losses, logits):
        ax.set_xscale("log")
        ax.set_xlabel("peak learning rate (AdamW, warm-up then cosine)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    title = (
        f"gpt, 2 layers, on stdlib source bytes: {SETTINGS.steps} steps of "
        f"{SETTINGS.batch_size}×64 tokens"
    )
    write(fig, title, "lr_sweep_qk_layernorm.png")


if __name__ == "__main__":
    main()
