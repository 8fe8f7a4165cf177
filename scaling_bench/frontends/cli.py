"""The ``scaling-bench`` command: it parses, calls the package and prints; it decides nothing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import TYPE_CHECKING

from scaling_bench.core.errors import UserError
from scaling_bench.core.units import fmt_bytes, fmt_count
from scaling_bench.frontends import ab, check, frontier
from scaling_bench.frontends.run_flags import add_plugin, add_run, add_set, axis_dest

if TYPE_CHECKING:
    from pathlib import Path

    from scaling_bench.config.grid import GridSpec
    from scaling_bench.engine.protocol import Settings


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit code 2, like every user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def _add_plan(sub: argparse._SubParsersAction) -> None:
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
    table.add_row("off target by", f"{d['relative_error']:+.2%}")
    for key, value in d["config"].items():
        table.add_row(f"  {key}", str(value))
    flops = d["flops_per_sample"]
    table.add_row("forward FLOPs / sample", fmt_count(flops["forward"]))
    table.add_row("train FLOPs / sample", fmt_count(flops["train"]))
    if "flops_per_token" in d:
        table.add_row("train FLOPs / token", fmt_count(d["flops_per_token"]["train"]))
        table.add_row("  6N for comparison", fmt_count(6 * d["params"]))
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


def _add_run(sub: argparse._SubParsersAction) -> None:
    add_run(sub, _cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from scaling_bench.config.shard import parse_shard
    from scaling_bench.engine.campaign import prepare
    from scaling_bench.engine.runner import RunInterrupted
    from scaling_bench.report.summary import summarize_run
    from scaling_bench.store.records import RESULTS_FILE
    from scaling_bench.workloads import load_plugins

    shard = None if args.shard is None else parse_shard(args.shard)
    plugins = load_plugins(args.plugin)
    settings = _settings(args, plugins)
    out = Path(args.out or f"results/run-{datetime.now():%Y%m%d-%H%M%S}")
    if args.max_cases < 1:
        raise UserError(f"--max-cases {args.max_cases}: must be at least 1")
    campaign = prepare(
        _spec_from_args(args),
        out,
        resume=args.resume,
        settings=settings,
        max_cases=args.max_cases,
        shard=shard,
    )
    try:
        ran = campaign.run(progress=not args.no_progress)
    except RunInterrupted as exc:  # the runner's line: how many cases are recorded, how to resume
        raise _Stopped(str(exc)) from None
    try:
        summarize_run(out, campaign.started, ran)
        if args.report:
            _report(out, out / "report.html", markdown=None, echo_markdown=False)
    except KeyboardInterrupt:
        raise _Stopped(
            f"interrupted after the run: its {len(ran)} cases are recorded in "
            f"{out / RESULTS_FILE}; scaling-bench report {out} shows them"
        ) from None
    return 0


def _settings(args: argparse.Namespace, plugins: tuple[str, ...]) -> Settings:
    """The run's settings for every worker; the peak from ``--peak-flops`` or its variable."""
    import os

    from scaling_bench.engine.protocol import MAX_PROCESSES, Settings
    from scaling_bench.hardware.peaks import PEAK_FLOPS_ENV, parse_flops

    peak = None
    if args.peak_flops:
        peak = parse_flops(args.peak_flops, "--peak-flops")
    elif text := os.environ.get(PEAK_FLOPS_ENV):
        peak = parse_flops(text, PEAK_FLOPS_ENV)
    if not 1 <= args.processes <= MAX_PROCESSES:
        raise UserError(f"--processes {args.processes}: give 1 to {MAX_PROCESSES}")
    if not 1 <= args.parallel <= MAX_PROCESSES:
        raise UserError(f"--parallel {args.parallel}: give 1 to {MAX_PROCESSES}")
    return Settings(
        processes=args.processes,
        parallel=args.parallel,
        peak_flops=peak,
        plugins=plugins,
        node_rank=args.node_rank,
        rdzv_endpoint=args.rdzv_endpoint,
        fresh_workers=args.fresh_workers,
        malloc=args.malloc,
    )


def _spec_from_args(args: argparse.Namespace) -> GridSpec:
    """The grid the flags describe: a preset or file, then each flag given replaces its axis."""
    from scaling_bench.config import grid
    from scaling_bench.config.axes import AXES
    from scaling_bench.workloads.base import ordered

    given = {a.name: getattr(args, axis_dest(a.name)) for a in AXES if a.flag}
    spec = grid.select(args.grid, given)
    if given["workloads"] is None:  # a preset's workloads, less those the strategy cannot run
        strategy = spec.value("strategy")
        runnable = tuple(
            w.name for w in ordered(spec.value("workloads")) if strategy in w.strategies
        )
        spec = spec.with_values(workloads=(runnable,))
    pairs = list(args.overrides)
    if args.seq_len is not None:
        pairs.append(f"seq_len={args.seq_len}")
    settings = grid.parse_pairs(args.convergence, "--convergence")
    for name in ("steps", "seeds", "lrs", "dataset", "data_root"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.download:
        settings["download"] = "true"
    if settings:
        given_settings = grid.convergence_values(settings, strict=False)
        spec = replace(spec, convergence=dict(spec.convergence) | given_settings)
    return grid.with_overrides(spec, pairs)


def _add_env(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("env", help="print this machine's fingerprint")
    p.set_defaults(func=_cmd_env)


def _cmd_env(args: argparse.Namespace) -> int:
    from scaling_bench.hardware.peaks import fingerprint

    print(json.dumps(fingerprint(), indent=2))
    return 0


def _add_asv_machine(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "asv-machine",
        help="register this machine for asv, the GPU's model in its name; prints the name",
    )
    p.add_argument("--config", default="asv.conf.json", help="asv config (default asv.conf.json)")
    p.set_defaults(func=_cmd_asv_machine)


def _cmd_asv_machine(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scaling_bench.frontends.suites import register_asv_machine

    print(register_asv_machine(Path(args.config)))
    return 0


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report with plots and a markdown summary of a run")
    p.add_argument("dir", metavar="DIR", help="results folder (or its results.jsonl)")
    p.add_argument("--html", metavar="FILE", help="HTML report (default: DIR/report.html)")
    add_plugin(p)
    p.add_argument("--markdown", metavar="FILE", help="markdown summary (default: stdout)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scaling_bench.workloads import load_plugins

    load_plugins(args.plugin)
    source = Path(args.dir)
    folder = source if source.is_dir() else source.parent
    html_path = Path(args.html or folder / "report.html")
    markdown = Path(args.markdown) if args.markdown else None
    _report(source, html_path, markdown, echo_markdown=markdown is None)
    return 0


def _report(source: Path, html_path: Path, markdown: Path | None, echo_markdown: bool) -> None:
    from scaling_bench.report.html import build_html
    from scaling_bench.report.markdown import build_markdown
    from scaling_bench.store.foreign import stream_records
    from scaling_bench.store.records import shown_records

    records = shown_records(stream_records(source))  # only what the report shows of each
    _write(html_path, build_html(records, str(source)))
    summary = build_markdown(records, str(source))
    if markdown:
        _write(markdown, summary)
    elif echo_markdown:
        print(summary, end="")
    print(f"scaling-bench: wrote {html_path}", file=sys.stderr)


def _write(path: Path, data: str | bytes) -> None:
    """Write an output file; a folder that is not there is the user's mistake, not a bug."""
    try:
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"{path}: cannot write ({exc.strerror})") from None


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="join results folders (the shards of a grid, other hosts' runs) into one",
        description="Join results folders or files into OUT/results.jsonl. A case recorded alike "
        "in several is kept once; a case recorded differently is refused and nothing is written. "
        "OUT may already hold records: only those it lacks are appended, so merging again as "
        "more shards finish is safe.",
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="results folder or results.jsonl")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write results.jsonl in")
    p.set_defaults(func=_cmd_merge)


def _cmd_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from scaling_bench.store.merge import merge_results

    merged = merge_results([Path(s) for s in args.sources], Path(args.out))
    print(
        f"scaling-bench: {merged.path}: {merged.added} records added, "
        f"{merged.read - merged.added} of the {merged.read} read were already there; "
        f"it holds {merged.total}",
        file=sys.stderr,
    )
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scaling-bench",
        description="Measure how a network's cost and behaviour grow with its parameter count.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands = (_add_plan, _add_run, _add_report, _add_merge, _add_compare, _add_env,
                _add_asv_machine, check.add_check, frontier.add_frontier, ab.add_ab)  # fmt: skip
    for add in commands:
        add(sub)
    return parser


#: Exit status of a run stopped by Ctrl-C (SIGINT) or by SIGTERM: 128 + the signal's number,
#: what a shell reports for a process the signal ended.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
NOTHING_RAN = "interrupted before any case ran; nothing was recorded"


class Terminated(KeyboardInterrupt):
    """SIGTERM during a run, raised where the program is so that it stops as on Ctrl-C."""


class _Stopped(KeyboardInterrupt):
    """A run stopped once cases had started: the line says what is recorded and how to resume."""


class _SigtermAsInterrupt:
    """While a run is in progress, SIGTERM (``kill``, ``timeout``, systemd, batch schedulers)
    raises ``Terminated``: the runner then stops as on Ctrl-C (the worker killed, its scratch
    folder removed, no half record) instead of the process vanishing mid-case. Further SIGTERMs
    are ignored from then on, so that they cannot cut that cleanup short. The previous handler
    comes back on exit; outside the main thread, where none can be installed, nothing changes."""

    def __init__(self) -> None:
        self.received = False
        self._previous: object = None
        self._installed = False

    def _handle(self, signum: int, frame: object) -> None:
        import signal

        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        self.received = True
        raise Terminated

    def __enter__(self) -> _SigtermAsInterrupt:
        import signal

        try:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            return self
        self._installed = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        import signal

        if self._installed:
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            signal.signal(signal.SIGTERM, previous)


def _run_command(args: argparse.Namespace) -> int:
    """``run``, with SIGTERM handled as Ctrl-C: exit 130 or 143 and one line, no traceback."""
    with _SigtermAsInterrupt() as sigterm:
        try:
            return args.func(args)
        except KeyboardInterrupt as exc:  # a _Stopped says what ran; before that, nothing did
            print(f"scaling-bench: {str(exc) or NOTHING_RAN}", file=sys.stderr)
            return EXIT_TERMINATED if sigterm.received else EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return _run_command(args) if getattr(args, "runs_cases", False) else args.func(args)
    except UserError as exc:  # its text may quote a data file: shown, never obeyed
        from scaling_bench.report.text import printable

        print(f"scaling-bench: error: {printable(exc, lines=True)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # another command: nothing of it is worth a traceback
        print("scaling-bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
