"""``scaling-bench ab``: the regression gate that holds on a noisy machine (``engine.ab``).

    scaling-bench ab --base main -- --families mlp --sizes 1e6,1e7 --workloads train

runs the ``run`` arguments after ``--`` for BASE and CURRENT alternately, ``--rounds`` times
each, then compares the pooled sides pair by pair and exits as ``compare`` does.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

from scaling_bench.core.errors import UserError


def add_ab(sub: argparse._SubParsersAction) -> None:
    from scaling_bench.engine.ab import DEFAULT_ROUNDS

    p = sub.add_parser(
        "ab",
        help="run BASE and CURRENT alternately on this machine, gate on the paired ratios",
        description="Interleaved A/B: each round runs the grid (the run arguments after --) "
        "once for each side, alternating which goes first; round i of BASE and of CURRENT ran "
        "side by side, so the machine's drift cancels in their ratio. The gate tests those "
        "per-round ratios (compare --paired) and exits 1 on a significant regression. The "
        "same command again resumes; a larger --rounds adds rounds.",
    )
    p.add_argument("--base", required=True, metavar="REV|DIR",
                   help="a git revision of this checkout, or a folder holding "
                   "scaling_bench/")  # fmt: skip
    p.add_argument("--current", metavar="REV|DIR",
                   help="likewise (default: the code running this command, the working "
                   "tree)")  # fmt: skip
    p.add_argument("--base-env", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="environment of BASE's runs, e.g. OMP_NUM_THREADS=2")  # fmt: skip
    p.add_argument("--current-env", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS,
                   help=f"runs of the grid per side (default {DEFAULT_ROUNDS})")  # fmt: skip
    p.add_argument("--out", help="A/B folder (default: results/ab-YYYYmmdd-HHMMSS)")
    p.add_argument("--threshold", default="5%", help="smallest change that counts (default 5%%)")
    p.add_argument("--metric", nargs="+", action="extend", metavar="NAME",
                   help="metrics to compare, as compare --metric")  # fmt: skip
    p.add_argument("--all", action="store_true", help="list unchanged metrics too")
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", metavar="FILE", help="PNG of the per-family ratios")
    p.add_argument("run_args", nargs=argparse.REMAINDER, metavar="-- RUN ARGS",
                   help="the grid: scaling-bench run's flags, after --")  # fmt: skip
    p.set_defaults(func=cmd_ab, runs_cases=True)


def _run_args(given: list[str]) -> list[str]:
    """The ``run`` arguments, checked by ``run``'s own parser; the flags the A/B sets itself
    refused."""
    from scaling_bench.engine.ab import OWNED_FLAGS
    from scaling_bench.frontends.cli import build_parser

    args = given[1:] if given[:1] == ["--"] else given
    if not args:
        raise UserError("ab: give the grid after --, e.g. -- --families mlp --sizes 1e6")
    parsed = build_parser().parse_args(["run", *args])
    defaults = build_parser().parse_args(["run"])
    for flag in OWNED_FLAGS:
        dest = flag.removeprefix("--").replace("-", "_")
        if getattr(parsed, dest) != getattr(defaults, dest):
            raise UserError(f"ab: {flag} is set by the A/B itself; leave it out of the run args")
    return args


def cmd_ab(args: argparse.Namespace) -> int:
    from scaling_bench.analysis.compare import compare_runs, parse_threshold
    from scaling_bench.engine.ab import (
        Plan,
        absolute_paths,
        check_rounds,
        parse_env,
        resolve_side,
        run_ab,
    )
    from scaling_bench.frontends.gate import show_comparison
    from scaling_bench.store.foreign import load_run

    threshold = parse_threshold(args.threshold)
    check_rounds(args.rounds)
    run_args = _run_args(args.run_args)
    cwd = Path.cwd()
    plan = Plan(
        resolve_side("base", args.base, parse_env(args.base_env, "--base-env"), cwd),
        resolve_side("current", args.current, parse_env(args.current_env, "--current-env"), cwd),
        absolute_paths(run_args, cwd),
        args.rounds,
    )
    # Absolute before anything runs: each side-round starts in its own tree.
    out = cwd / Path(args.out or f"results/ab-{datetime.now():%Y%m%d-%H%M%S}").expanduser()
    plan = run_ab(plan, out)
    comparison = compare_runs(
        load_run(out / "base"), load_run(out / "current"), threshold, args.metric, paired=True
    )
    return show_comparison(comparison, show_all=args.all, as_json=args.json, plot=args.plot)
