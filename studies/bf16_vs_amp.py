"""Study (c): pure bf16 against amp-bf16 (autocast over fp32 weights) for gpt across sizes.

Question: at the same matmul precision, how much does keeping the weights, gradients and AdamW's
moments in bf16 cost in loss? Pure bf16 rounds every update to the weight's 8-bit mantissa: an
update smaller than half a unit in the last place of the weight (lr · step / |w| below 2^-9) is
lost, and at small learning rates or late in training most of them are. amp-bf16 runs the same
bf16 matmuls but applies the updates to fp32 master weights (PyTorch's AMP recipe). fp32 is the
reference.

Two-layer gpt (two heads, context 64, byte vocabulary) at d_model 32, 64 and 128, trained on bytes
of the standard library's source (held-out files held out), 300 AdamW steps of 16 sequences at
lr 1e-3 (20 warm-up steps, then cosine decay), two seeds; each run goes through
``run_convergence`` (the code behind ``--workloads convergence --precision bf16,amp-bf16``), and
each precision's training step is timed with the benchmark's timer at batch 16. One thread.

    python studies/bf16_vs_amp.py

Prints final training loss, held-out loss and the step time per size and precision, and writes
docs/figures/bf16_vs_amp.png.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from figures import write

from scaling_bench.core import precision as precisions
from scaling_bench.core.optimizers import make_optimizer
from scaling_bench.meters.timing import measure
from scaling_bench.models import gpt
from scaling_bench.models.gpt import GPTConfig, param_count
from scaling_bench.workloads.convergence import ConvergenceSettings, run_convergence
from scaling_bench.workloads.steps import train_step

WIDTHS = (32, 64, 128)
PRECISIONS = ("fp32", "bf16", "amp-bf16")
SETTINGS = ConvergenceSettings(
    dataset="text",
    steps=300,
    seeds=2,
    lrs=(1e-3,),
    batch_size=16,
    train_size=4096,
    heldout_size=128,
    eval_every=100,
    warmup_steps=20,
    schedule="cosine",
)


def config(width: int) -> GPTConfig:
    return GPTConfig(n_layer=2, d_model=width, n_head=2, seq_len=64)


def step_s(cfg: GPTConfig, name: str) -> float:
    """Median seconds of one training step at the study's batch, in precision ``name``."""
    prec = precisions.get(name)
    model = gpt.build(cfg, dtype=prec.param_dtype)
    batch = gpt.sample_batch(cfg, SETTINGS.batch_size)
    step = train_step(model, make_optimizer("adamw", model.parameters()), batch, prec)
    return measure(step, "cpu", budget_s=1.0).median_s


def main() -> None:
    torch.set_num_threads(1)
    results: dict[tuple[int, str], dict] = {}
    print(f"{'d_model':>8} {'params':>8} {'precision':>9} {'train':>7} {'held-out':>8} {'step':>8}")
    for width in WIDTHS:
        cfg = config(width)
        for name in PRECISIONS:
            metrics = run_convergence("gpt", cfg, SETTINGS, precision=precisions.get(name))
            row = {
                "train": metrics["final_loss_mean"]["value"],
                "train_std": metrics["final_loss_std"]["value"],
                "heldout": metrics["heldout_loss"]["value"],
                "step_s": step_s(cfg, name),
            }
            results[width, name] = row | {"params": param_count(cfg)}
            print(f"{width:>8} {param_count(cfg):>8,} {name:>9} {row['train']:>7.3f} "
                  f"{row['heldout']:>8.3f} {row['step_s'] * 1e3:>6.1f}ms")  # fmt: skip
    plot(results)


def plot(results: dict[tuple[int, str], dict]) -> None:
    fig, (train, heldout, time) = plt.subplots(1, 3, figsize=(14, 4.2))
    for i, name in enumerate(PRECISIONS):
        rows = [results[w, name] for w in WIDTHS]
        params = [r["params"] for r in rows]
        style = {"color": f"C{i}", "marker": "osD"[i], "label": name}
        train.errorbar(params, [r["train"] for r in rows], yerr=[r["train_std"] for r in rows],
                       capsize=3, **style)  # fmt: skip
        heldout.plot(params, [r["heldout"] for r in rows], **style)
        time.plot(params, [r["step_s"] * 1e3 for r in rows], **style)
    train.set_ylabel(f"final training loss (nats), mean ± std of {SETTINGS.seeds} seeds")
    heldout.set_ylabel("held-out loss (nats), at the end")
    time.set_ylabel(f"training step (ms, median), batch {SETTINGS.batch_size}, one thread")
    for ax in (train, heldout, time):
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    title = (
        f"gpt, 2 layers, on stdlib source bytes: {SETTINGS.steps} AdamW steps of "
        f"{SETTINGS.batch_size}×64 tokens at lr {SETTINGS.lrs[0]:g}"
    )
    write(fig, title, "bf16_vs_amp.png")


if __name__ == "__main__":
    main()
