"""``scaling-bench frontier``: how large a model, on how many tokens, for a budget on this machine.

It parses, then calls the frontier package (``frontier.options`` checks the options,
``frontier.run`` measures the throughput and runs the IsoFLOP design, ``frontier.analysis`` fits
Chinchilla's approaches 2 and 3 and the time-optimal size, ``frontier.report`` writes the lines),
and writes ``DIR/frontier.json`` and ``DIR/report.html``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys

from scaling_bench.core.errors import UserError

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str, what: str) -> float:
    """``90s``, ``15m``, ``1.5h`` or plain seconds, as seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*(s|m|min|h)?\s*", text.lower())
    if match is None or float(match[1]) <= 0:
        raise UserError(f"{what} {text!r}: not a duration (e.g. 90s, 15m, 1.5h)")
    return float(match[1]) * _UNITS[match[2] or ""]


def add_frontier(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "frontier",
        help="compute-optimal size and tokens on this machine: an IsoFLOP study, Chinchilla's "
        "fits, and the time-optimal size for a wall-clock budget",
    )
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--budget", help="wall-clock time for the whole study: 90s, 15m, 1.5h")
    size.add_argument("--flops", help="compute for the whole study, Σ 6·N·D: 1e15, 3P")
    p.add_argument("--family", default="gpt", help="a family with tokens (default gpt)")
    p.add_argument("--dataset", default="text", help="convergence data set (default text)")
    p.add_argument("--out", help="results folder (default: results/frontier-YYYYmmdd-HHMMSS)")
    p.add_argument("--resume", action="store_true", help="run the folder's design's missing runs")
    p.add_argument("--budgets", type=int, default=4, help="compute budgets (default 4)")
    p.add_argument("--ratio", type=float, default=3.0, help="factor between budgets (default 3)")
    p.add_argument("--sizes-per-budget", type=int, default=5, help="sizes per budget (default 5)")
    p.add_argument("--tokens-per-param", type=float,  # default: engine's, imported with torch
                   help="centre of each budget's sizes (default Chinchilla's 20)")  # fmt: skip
    p.add_argument("--seq-len", type=int, default=64, help="tokens per sample (default 64)")
    p.add_argument("--batch-size", type=int, help="samples per step (default: the family's)")
    p.add_argument("--lrs", default="2e-3", help="peak learning rates; each run keeps its best")
    p.add_argument("--precision", default="fp32")
    p.add_argument("--device", default="auto")
    p.add_argument("--heldout-size", type=int, default=512, help="held-out samples (default 512)")
    p.add_argument("--probe-budget", type=float, default=1.0,
                   help="seconds of timing per size of the throughput probe")  # fmt: skip
    p.add_argument("--threads", type=int,
                   help="torch threads per worker (default: one per core)")  # fmt: skip
    p.add_argument("--optimal-for", metavar="TIME",
                   help="training time of the time-optimal answer (default: --budget; with "
                   "--flops, the runs' summed time)")  # fmt: skip
    p.add_argument("--target-loss", type=float,
                   help="held-out loss whose time per size is given (default: the "
                   "time-optimal answer's)")  # fmt: skip
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap replicates (default 200)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print frontier.json to stdout")
    p.set_defaults(func=_cmd_frontier)


def _options(args: argparse.Namespace) -> object:
    from scaling_bench.config.grid import convergence_values, resolve_device
    from scaling_bench.frontier.options import PRIOR_TOKENS_PER_PARAM, FrontierOptions
    from scaling_bench.hardware.peaks import parse_flops

    ratio = PRIOR_TOKENS_PER_PARAM if args.tokens_per_param is None else args.tokens_per_param
    return FrontierOptions(
        family=args.family,
        seconds=parse_duration(args.budget, "--budget") if args.budget else None,
        flops=parse_flops(args.flops, "--flops") if args.flops else None,
        dataset=args.dataset,
        budgets=args.budgets,
        ratio=args.ratio,
        sizes_per_budget=args.sizes_per_budget,
        tokens_per_param=ratio,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        lrs=convergence_values({"lrs": args.lrs}, strict=False)["lrs"],
        precision=args.precision,
        device=resolve_device(args.device),
        heldout_size=args.heldout_size,
        probe_budget_s=args.probe_budget,
        threads=args.threads,
    )


def _cmd_frontier(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from scaling_bench.engine.runner import RunInterrupted
    from scaling_bench.frontier.analysis import analyse
    from scaling_bench.frontier.report import FRONTIER_JSON, finite_json, summary_lines
    from scaling_bench.frontier.run import prepare_design, run_design
    from scaling_bench.report.html import build_html
    from scaling_bench.report.progress import case_progress
    from scaling_bench.store.records import RESULTS_FILE, load_records

    options = _options(args)
    optimal_for = parse_duration(args.optimal_for, "--optimal-for") if args.optimal_for else None
    if args.bootstrap < 2:
        raise UserError(f"--bootstrap {args.bootstrap}: intervals need at least 2 replicates")
    out = Path(args.out or f"results/frontier-{datetime.now():%Y%m%d-%H%M%S}")
    progress = case_progress(bar=not args.no_progress)
    try:
        design = prepare_design(options, out, args.resume, progress)
        print(
            f"scaling-bench: frontier design: {len(design.runs)} runs in {len(design.budgets)} "
            f"budgets, {design.budgets[0]:.3g} to {design.budgets[-1]:.3g} FLOPs, predicted "
            f"{design.predicted_s:.0f}s of training after {design.probe_s:.0f}s of probing",
            file=sys.stderr,
        )
        _, kept = run_design(design, out, args.resume, progress)
    except RunInterrupted as exc:
        print(f"scaling-bench: {exc}", file=sys.stderr)
        return 130
    records = load_records(out / RESULTS_FILE)
    seconds = optimal_for or options.seconds
    analysis = analyse(records, seconds=seconds, target_loss=args.target_loss,
                       bootstrap=args.bootstrap)  # fmt: skip
    if analysis is None:
        raise UserError(f"{out}: no run of the design finished; {kept or 'its records say why'}")
    data = finite_json(analysis.to_dict() | {"design": design.to_dict()})
    (out / FRONTIER_JSON).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "report.html").write_text(build_html(records, str(out)), encoding="utf-8")
    if args.json:
        print(json.dumps(data, indent=2))
    else:
        print("\n".join(summary_lines(analysis)))
    if kept:
        print(f"scaling-bench: {kept}", file=sys.stderr)
    print(f"scaling-bench: wrote {out / FRONTIER_JSON} and {out / 'report.html'}", file=sys.stderr)
    return 0
