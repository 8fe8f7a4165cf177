"""The flags of ``scaling-bench run``, in the sections its help lists them under.

Each axis's flag comes from the axes registry (``config/axes.py``), in the section the axis
names; the command's own flags join those sections, and an ``output`` one. Nothing here imports
torch, so that ``run --help`` prints at once.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable

#: The sections of ``run --help``, in order: the axes' groups, then the command's own.
SECTIONS = {
    "grid": "grid: which cases run (the product of the comma-separated lists)",
    "recipe": "recipe: how each case computes and trains",
    "convergence": "convergence workload: train for --steps over --seeds seeds and the --lrs grid",
    "measuring": "measuring: how long, how precisely, in which processes",
    "output": "output",
    "distributed": "distributed: ranks, nodes, GPUs and shards",
}
DESCRIPTION = """\
Measure a grid of cases, each in its own worker process; each case's record is
appended to OUT/results.jsonl as it ends."""
EXAMPLES = """\
examples:
  scaling-bench run                   # the quick grid, adapted to this device
  scaling-bench run --families mlp,gpt --sizes 1e5:1e7:x10 --workloads train
  scaling-bench run --precision fp32,bf16 --batch-sizes max --memory-limit 2GiB
  scaling-bench run --grid my-grid.toml --out results/h200 --resume
  scaling-bench run --families gpt --sizes 1e6 --workloads convergence \\
      --lrs 1e-3,3e-3 --seeds 2
  scaling-bench run --grid full --device cuda --strategy fsdp --nproc-per-node 8
"""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """The description and examples as written; help text wrapped at spaces only, so that a
    list of names (``amp-bf16``) or a word (``run-to-run``) is not split at its hyphen."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def axis_dest(name: str) -> str:
    return f"axis_{name}"


def _text(help_text: str) -> str:
    """A help string as argparse formats it: a bare ``%`` would be a format directive."""
    return help_text.replace("%", "%%")


def add_set(p: argparse.ArgumentParser | argparse._ArgumentGroup, metavar: str) -> None:
    """``--set`` takes pairs; repeated, it accumulates (``--set a=1 --set b=2`` keeps both)."""
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar=metavar,
                   dest="overrides", help="config fields, e.g. n_layer=12")  # fmt: skip


def add_plugin(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Plugins register workloads and their metric specs; a reader needs them as the run did."""
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE to register more workloads (repeatable)")  # fmt: skip


def add_run(sub: argparse._SubParsersAction, func: Callable[[argparse.Namespace], int]) -> None:
    from scaling_bench.config.axes import AXES
    from scaling_bench.config.grid import MAX_CASES
    from scaling_bench.engine.malloc import MODES

    p = sub.add_parser(
        "run",
        help="measure a grid of cases, each in its own worker process",
        description=DESCRIPTION,
        usage="%(prog)s [--grid NAME|FILE] [options]",
        epilog=EXAMPLES,
        formatter_class=_Formatter,
    )
    s = {name: p.add_argument_group(title) for name, title in SECTIONS.items()}
    grid = s["grid"]
    grid.add_argument("--grid", default="quick", metavar="NAME|FILE",
                      help="quick (default), full, auto, smoke or a grid FILE.toml")  # fmt: skip
    for axis in (a for a in AXES if a.flag):
        metavar = axis.flag.removeprefix("--").upper().replace("-", "_")
        s[axis.group].add_argument(axis.flag, *axis.aliases, dest=axis_dest(axis.name),
                                   metavar=metavar, help=_text(axis.help))  # fmt: skip
    grid.add_argument("--seq-len", type=int, help="gpt: tokens per sample (sets seq_len)")
    add_set(grid, "[FAMILY.]KEY=VALUE")
    add_plugin(grid)
    grid.add_argument("--max-cases", type=int, default=MAX_CASES,
                      help=f"refuse a grid of more cases (default {MAX_CASES}); with --shard, "
                      "it bounds the whole grid")  # fmt: skip
    _add_convergence(s["convergence"])
    measuring = s["measuring"]
    measuring.add_argument("--peak-flops",
                           help="device peak FLOP/s for MFU, e.g. 989.4e12 or 989.4T")  # fmt: skip
    measuring.add_argument("--processes", type=int, default=1, metavar="K",
                           help="run each case in K worker processes, one after another (as "
                           "asv's processes): compare then tests the per-process figures, which "
                           "is what holds against run-to-run noise; 5 for a CI gate")  # fmt: skip
    measuring.add_argument("--fresh-workers", action="store_true",
                           help="start each case in a fresh interpreter instead of forking "
                           "it from a warm, pre-imported server (seconds slower per "
                           "case)")  # fmt: skip
    measuring.add_argument("--malloc", metavar="|".join(MODES), default="steady",
                           help="steady (default): each worker's glibc heap keeps the memory a "
                           "step frees, as CUDA's caching allocator does, so a CPU step does "
                           "not fault its pages in again every call; default: glibc as it "
                           "ships")  # fmt: skip
    output = s["output"]
    output.add_argument("--out", metavar="DIR",
                        help="results folder (default: results/run-YYYYmmdd-HHMMSS)")  # fmt: skip
    output.add_argument("--resume", action="store_true", help="skip cases already in --out")
    output.add_argument("--report", action="store_true",
                        help="also write DIR/report.html at the end")  # fmt: skip
    output.add_argument("--no-progress", action="store_true", help="no progress bar")
    dist = s["distributed"]
    dist.add_argument("--node-rank", type=int, default=0,
                      help="this node's rank; 0 hosts the rendezvous")  # fmt: skip
    dist.add_argument("--rdzv-endpoint", metavar="HOST:PORT",
                      help="node rank 0's address and port")  # fmt: skip
    dist.add_argument("--parallel", type=int, default=1, metavar="N",
                      help="on a node with N GPUs or more, run N cases at once, each worker "
                      "pinned to its own GPU (--device cuda)")  # fmt: skip
    dist.add_argument("--shard", metavar="K/N",
                      help="run only the K-th of N parts of the grid, K from 1 to N (as "
                      "SLURM_ARRAY_TASK_ID in --array=1-N); every host splits a grid alike; "
                      "join the parts' folders with scaling-bench merge")  # fmt: skip
    p.set_defaults(func=func, runs_cases=True)


def _add_convergence(conv: argparse._ArgumentGroup) -> None:
    conv.add_argument("--steps", help="training steps per run")
    conv.add_argument("--seeds", help="seeds per learning rate")
    conv.add_argument("--lrs", help="learning-rate grid, e.g. 1e-4,1e-3,1e-2")
    conv.add_argument("--dataset", help="synthetic, digits, text (gpt) or cifar10")
    conv.add_argument("--data-root", metavar="DIR", help="folder holding cifar-10-batches-py")
    conv.add_argument("--download", action="store_true", help="fetch CIFAR-10 into --data-root")
    conv.add_argument(
        "--convergence",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="other settings: warmup_steps, schedule (constant|cosine), weight_decay, grad_clip, "
        "label_noise, train_size, heldout_size, eval_every, z_loss",
    )
