"""``scaling-bench plan``: a model sized and its cost predicted, nothing allocated.

It parses, asks ``predict.plan`` and prints the plan as a table (or its JSON).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from scaling_bench.core.errors import UserError
from scaling_bench.core.units import fmt_bytes, fmt_count
from scaling_bench.frontends.run_flags import add_set


def add_plan(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="size a model and predict its cost without allocating it")
    p.add_argument("--family", required=True)
    p.add_argument("--params", required=True, help="target parameter count: 1e6, 125M, 1.3B")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--seq-len", type=int, help="gpt: tokens per sample (sets seq_len)")
    p.add_argument("--precision", "--dtype", default="fp32")
    p.add_argument("--activation-checkpointing", default="none")
    p.add_argument("--optimizer", default="adamw")
    add_set(p, "KEY=VALUE")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_plan)


def _cmd_plan(args: argparse.Namespace) -> int:
    from scaling_bench.engine import malloc

    # The kernel-scratch probes of a cold plan run ops on real tensors of up to 256 MiB: with
    # glibc's default heap each is a fresh mapping faulted in anew (vit 1e10: 2.2 M page faults,
    # 4 s of system time); a steady heap reuses the pages (0.7 M faults, 1.5 s).
    malloc.apply("steady")
    from scaling_bench.config.grid import config_values, parse_pairs
    from scaling_bench.config.sizes import parse_size
    from scaling_bench.models import family
    from scaling_bench.predict.plan import plan

    fam = family(args.family)
    target = parse_size(args.params, "--params")
    pairs = parse_pairs(args.overrides, "--set")
    if args.seq_len is not None:
        if "seq_len" not in {f.name for f in fields(fam.Config)}:
            raise UserError(f"--seq-len: the {args.family} family has no seq_len")
        pairs["seq_len"] = str(args.seq_len)
    result = plan(
        args.family,
        target,
        batch_size=args.batch_size,
        precision=args.precision,
        optimizer=args.optimizer,
        activation_checkpointing=args.activation_checkpointing,
        overrides=config_values(fam.Config, pairs, "--set", strict=False),
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    _print_plan(result.to_dict())
    return 0


def _print_plan(d: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{d['family']} at {d['target_params']:.3g} parameters", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("parameters (exact)", f"{d['params']:,}")
    active = d.get("active_params", d["params"])  # a sparse family's compute follows these
    if active != d["params"]:
        table.add_row("active parameters", f"{active:,}")
    table.add_row("off target by", f"{d['relative_error']:+.2%}")
    for key, value in d["config"].items():
        table.add_row(f"  {key}", str(value))
    flops = d["flops_per_sample"]
    table.add_row("forward FLOPs / sample", fmt_count(flops["forward"]))
    table.add_row("train FLOPs / sample", fmt_count(flops["train"]))
    if "flops_per_token" in d:
        table.add_row("train FLOPs / token", fmt_count(d["flops_per_token"]["train"]))
        table.add_row("  6N for comparison (N active)", fmt_count(6 * active))
    memory = d["predicted"]["train_memory_bytes"]
    table.add_row(
        f"train memory ({d['precision']}, {d['optimizer']}, batch {d['batch_size']})",
        fmt_bytes(memory["total_bytes"]),
    )
    for key in ("weights_bytes", "gradients_bytes", "optimizer_state_bytes", "activations_bytes"):
        table.add_row(f"  {key.removesuffix('_bytes')}", fmt_bytes(memory[key]))
    for reason in memory["kernel_scratch_unmeasured"]:
        table.add_row("  kernel scratch unknown (counted 0)", reason)
    table.add_row("checkpoint", fmt_bytes(d["predicted"]["checkpoint_bytes"]))
    table.add_row(
        "checkpoint with optimizer", fmt_bytes(d["predicted"]["checkpoint_bytes_with_optimizer"])
    )
    Console().print(table)
