"""Study (a): held-out error against MLP width on the digits with 20% label noise.

Question: does the held-out error peak near the width that first fits the noisy training set
exactly (the interpolation threshold of model-wise double descent, Nakkiran et al. 2019)?

One hidden layer of width w on scikit-learn's 8×8 digits (d_in = 64, raw pixels), 500 training
images of which 100 carry a wrong label, 1,000 clean held-out images; AdamW at 1e-3, batch 100,
3,000 steps (600 epochs), three seeds per width. Every width runs through ``run_convergence``,
the code behind ``scaling-bench run --workloads convergence``. One thread: the models are tiny,
and two threads on cores that other jobs share run ten times slower.

    python studies/width_vs_heldout.py

Prints one row per width and writes docs/figures/width_vs_heldout.png.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from figures import write

from scaling_bench.models.mlp import MLPConfig, param_count
from scaling_bench.workloads.convergence import ConvergenceSettings, run_convergence

WIDTHS = (2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024, 2048, 4096)
SETTINGS = ConvergenceSettings(
    dataset="digits",
    label_noise=0.2,
    train_size=500,
    heldout_size=1000,  # >= train_size, so the training error is over the whole training set
    steps=3000,
    seeds=3,
    lrs=(1e-3,),
    batch_size=100,
    eval_every=500,
)
COLUMNS = ("train_error", "heldout_error", "final_loss_mean", "heldout_loss")


def main() -> None:
    torch.set_num_threads(1)
    print(f"{'width':>6} {'params':>7} " + " ".join(f"{c:>15}" for c in COLUMNS))
    rows = []
    for width in WIDTHS:
        cfg = MLPConfig(d_hidden=width, n_layer=1, d_in=64)
        metrics = run_convergence("mlp", cfg, SETTINGS)
        row = {"width": width, "params": param_count(cfg)}
        row |= {c: metrics[c]["value"] for c in COLUMNS}
        rows.append(row)
        print(f"{width:>6} {row['params']:>7} " + " ".join(f"{row[c]:>15.4f}" for c in COLUMNS))
    fits = [r for r in rows if r["train_error"] == 0]
    threshold = fits[0] if fits else None
    summarize(rows, threshold)
    plot(rows, threshold)


def heldout_error(row: dict) -> float:
    return row["heldout_error"]


def summarize(rows: list[dict], threshold: dict | None) -> None:
    """The double-descent landmarks: the dip before the threshold, the peak after it, the end."""
    if threshold is None:
        print("no width fits the training set exactly: train longer or go wider")
        return
    dip = min(rows[: rows.index(threshold)] or rows[:1], key=heldout_error)
    peak = max(rows[rows.index(dip) :], key=heldout_error)
    print(
        f"first exact fit of the training set: width {threshold['width']}; held-out error "
        f"{dip['heldout_error']:.4f} at width {dip['width']}, peak {peak['heldout_error']:.4f} "
        f"at width {peak['width']}, {rows[-1]['heldout_error']:.4f} at width {rows[-1]['width']}"
    )


def plot(rows: list[dict], threshold: dict | None) -> None:
    params = [r["params"] for r in rows]
    fig, (errors, losses) = plt.subplots(1, 2, figsize=(11, 4.2))
    errors.plot(params, [r["heldout_error"] for r in rows], "o-", label="held-out error")
    errors.plot(params, [r["train_error"] for r in rows], "s--", label="training error")
    errors.axhline(SETTINGS.label_noise, color="grey", lw=0.8, label="label-noise share")
    losses.plot(params, [r["heldout_loss"] for r in rows], "o-", label="held-out loss")
    losses.plot(params, [r["final_loss_mean"] for r in rows], "s--", label="training loss")
    ylabels = (f"error (mean of {SETTINGS.seeds} seeds)", "cross-entropy (nats)")
    for ax, ylabel in zip((errors, losses), ylabels, strict=True):
        if threshold:
            ax.axvline(threshold["params"], color="red", ls=":", label="first exact fit")
        ax.set_xscale("log")
        ax.set_xlabel(f"parameters (MLP, one hidden layer of width {WIDTHS[0]} to {WIDTHS[-1]})")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    title = (
        f"digits: {SETTINGS.train_size} training images, {SETTINGS.label_noise:.0%} of them "
        f"mislabelled; {SETTINGS.steps} {SETTINGS.optimizer} steps at lr {SETTINGS.lrs[0]:g}"
    )
    write(fig, title, "width_vs_heldout.png")


if __name__ == "__main__":
    main()
