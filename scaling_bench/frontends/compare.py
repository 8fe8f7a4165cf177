"""``scaling-bench compare``: two runs of any front-end, and the exit status a CI gate reads.

It parses, asks ``analysis.compare`` and prints through ``frontends.gate``.
"""

from __future__ import annotations

import argparse

from scaling_bench.frontends.run_flags import add_plugin


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two runs (any front-end); exit 1 on a significant regression",
    )
    p.add_argument("base", metavar="BASE", help="results folder, pytest-benchmark JSON or asv file")
    p.add_argument("current", metavar="CURRENT")
    p.add_argument("--threshold", default="5%", help="smallest change that counts (default 5%%)")
    p.add_argument(
        "--metric",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="metrics to compare, names or glob patterns (default: every metric its spec says "
        "has a better direction; derived figures such as throughput and MFU are left to the "
        "time they come from; bookkeeping only when named)",
    )
    p.add_argument("--all", action="store_true", help="list unchanged metrics too")
    p.add_argument("--paired", action="store_true",
                   help="BASE and CURRENT are the two sides of scaling-bench ab: test each "
                   "figure over its rounds' ratios")  # fmt: skip
    add_plugin(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--plot", metavar="FILE", help="PNG of the per-family ratios (hardware view)")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scaling_bench.frontends.gate import show_comparison
    from scaling_bench.workloads import load_plugins

    load_plugins(args.plugin)
    from scaling_bench.analysis.compare import compare_runs, parse_threshold, selectable
    from scaling_bench.store.foreign import load_run

    threshold = parse_threshold(args.threshold)
    comparison = compare_runs(
        load_run(Path(args.base), selectable(args.metric)),
        load_run(Path(args.current), selectable(args.metric)),
        threshold,
        args.metric,
        paired=args.paired,
    )
    return show_comparison(comparison, show_all=args.all, as_json=args.json, plot=args.plot)
