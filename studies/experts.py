"""Study (f): at a fixed compute per token, what do more experts buy, and what do they cost?

Question: a mixture of experts adds parameters without adding FLOPs per token. At a fixed active
size, how do the loss on ``text``, the training step's time, its memory and the checkpoint move
with the number of experts?

The moe family with every shape field pinned (2 layers, d_model 64, 4 query heads on 1 key/value
head, experts of width 128, context 64): 1, 2, 4 and 8 experts with top-1 routing, so each token
runs one expert whatever the count, and 8 experts of half the width with top-2 routing (the
same expert FLOPs per token, finer-grained). Only the router (d_model FLOPs per expert and token)
grows with the count. Each variant is one case through the engine's ``execute``, as
``scaling-bench run`` measures it: ``train`` (step time, the CPU tensor peak beside its
prediction), ``checkpoint`` (bytes on disk) and ``convergence`` on the stdlib text (AdamW,
constant learning rate, the seeds' mean). One thread: the models are tiny, and threads on
cores other jobs share only add noise.

    python studies/experts.py                 # the study: 3.5-5 minutes on 2 busy cores
    python studies/experts.py --steps 20 --seeds 1 --budget 0.2   # a smoke run

Prints one markdown row per variant.
"""

from __future__ import annotations

import argparse
import time

import torch

from scaling_bench.config.case import Case
from scaling_bench.engine.execute import execute
from scaling_bench.models import moe
from scaling_bench.workloads.base import Context
from scaling_bench.workloads.setup import CaseSetup

#: The shared shape: every field pinned, so sizing leaves it alone.
SHAPE = {"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 1, "seq_len": 64,
         "n_shared_expert": 0}  # fmt: skip
D_EXPERT = 128
#: (label, n_expert, top_k, d_expert): top-1 over 1..8 experts, then 8 half-width experts top-2.
VARIANTS = (
    ("1 expert", 1, 1, D_EXPERT),
    ("2 experts", 2, 1, D_EXPERT),
    ("4 experts", 4, 1, D_EXPERT),
    ("8 experts", 8, 1, D_EXPERT),
    ("8 experts, top-2, half width", 8, 2, D_EXPERT // 2),
)
BATCH = 16
#: Each column's heading and how its figure is written.
COLUMNS = {
    "variant": "{}",
    "total params": "{:,}",
    "active params": "{:,}",
    "train FLOPs/token": "{:,}",
    "final loss": "{:.3f}",
    "final loss std": "{:.3f}",
    "held-out loss": "{:.3f}",
    "step ms": "{:.1f}",
    "peak MiB (meter)": "{:.2f}",
    "peak MiB (predicted)": "{:.2f}",
    "checkpoint KiB": "{:.0f}",
}


def case_of(n_expert: int, top_k: int, d_expert: int, args: argparse.Namespace) -> Case:
    overrides = SHAPE | {"n_expert": n_expert, "top_k": top_k, "d_expert": d_expert}
    convergence = {"dataset": "text", "steps": args.steps, "seeds": args.seeds,
                   "lrs": (args.lr,), "eval_every": max(1, args.steps // 4)}  # fmt: skip
    return Case.from_dict({
        "family": "moe", "target_params": 1e5, "batch_size": BATCH, "budget_s": args.budget,
        "workloads": ["train", "checkpoint", "convergence"], "overrides": overrides,
        "convergence": convergence,
    })  # fmt: skip


def row(label: str, fields: dict) -> dict:
    """The variant's figures, from the record fields ``execute`` returns."""
    if fields["status"] != "ok":
        raise SystemExit(f"{label}: {fields['status']}: {fields['error']}")
    m, p = fields["metrics"], fields["predicted"]
    peak = "train_peak_cpu_tensor_bytes"
    return {
        "variant": label,
        "total params": fields["params"],
        "active params": fields["active_params"],
        "train FLOPs/token": moe.train_flops_per_token(moe.MoEConfig(**fields["config"])),
        "final loss": m["final_loss_mean"]["value"],
        "final loss std": m["final_loss_std"]["value"],
        "held-out loss": m["heldout_loss"]["value"],
        "step ms": m["train_step_s"]["value"] * 1e3,
        "peak MiB (meter)": m[peak]["value"] / 2**20,
        "peak MiB (predicted)": p[peak]["value"] / 2**20,
        "checkpoint KiB": m["checkpoint_bytes"]["value"] / 1024,
    }


def study(args: argparse.Namespace, variants: tuple = VARIANTS) -> list[dict]:
    """Every variant in turn, its markdown row printed as it ends."""
    torch.set_num_threads(1)
    print("| " + " | ".join(COLUMNS) + " | seconds |")
    print("|" + " --- |" * (len(COLUMNS) + 1))
    rows = []
    for label, n_expert, top_k, d_expert in variants:
        case = case_of(n_expert, top_k, d_expert, args)
        start = time.perf_counter()
        ctx = Context(peak_flops=args.peak_flops)
        rows.append(row(label, execute(case, CaseSetup.build(case), ctx, "override")))
        cells = [f.format(rows[-1][c]) for c, f in COLUMNS.items()]
        print("| " + " | ".join(cells) + f" | {time.perf_counter() - start:.0f} |")
    return rows


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400, help="convergence steps per seed")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--budget", type=float, default=3.0, help="seconds of step timing")
    parser.add_argument("--peak-flops", type=float, default=1e12, help="for MFU only")
    return parser.parse_args(argv)


if __name__ == "__main__":
    study(parse())
