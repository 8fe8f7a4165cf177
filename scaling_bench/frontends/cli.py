"""The ``scaling-bench`` command: it parses, calls the package and prints; it decides nothing."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from scaling_bench.core.errors import UserError
from scaling_bench.frontends import ab, check, compare, documents, frontier, plan
from scaling_bench.frontends.run_flags import add_run, axis_dest
from scaling_bench.frontier.section import register_frontier

if TYPE_CHECKING:
    from scaling_bench.config.grid import GridSpec
    from scaling_bench.engine.protocol import Settings


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake as one line and exit code 2, like every user error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message}")


def _add_run(sub: argparse._SubParsersAction) -> None:
    add_run(sub, _cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from scaling_bench.config.shard import parse_shard
    from scaling_bench.engine.campaign import prepare
    from scaling_bench.engine.runner import RunInterrupted
    from scaling_bench.report.progress import case_progress
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
        ran = campaign.run(progress=case_progress(bar=not args.no_progress))
    except RunInterrupted as exc:  # the runner's line: how many cases are recorded, how to resume
        raise _Stopped(str(exc)) from None
    try:
        summarize_run(out, campaign.started, ran)
        if args.report:
            documents.write_report(out, out / "report.html", markdown=None, echo_markdown=False)
    except KeyboardInterrupt:
        raise _Stopped(
            f"interrupted after the run: its {len(ran)} cases are recorded in "
            f"{out / RESULTS_FILE}; scaling-bench report {out} shows them"
        ) from None
    return 0


def _settings(args: argparse.Namespace, plugins: tuple[str, ...]) -> Settings:
    """The run's settings for every worker; the peak from ``--peak-flops`` or its variable."""
    import os

    from scaling_bench.engine.protocol import Settings
    from scaling_bench.hardware.peaks import PEAK_FLOPS_ENV, parse_flops

    peak = None
    if args.peak_flops:
        peak = parse_flops(args.peak_flops, "--peak-flops")
    elif text := os.environ.get(PEAK_FLOPS_ENV):
        peak = parse_flops(text, PEAK_FLOPS_ENV)
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
            w.name for w in ordered(spec.value("workloads")) if not w.strategy_reason(strategy)
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


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="scaling-bench",
        description="Measure how a network's cost and behaviour grow with its parameter count.",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands = (plan.add_plan, _add_run, documents.add_report, documents.add_merge,
                compare.add_compare, _add_env, _add_asv_machine, check.add_check,
                frontier.add_frontier, ab.add_ab)  # fmt: skip
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
    register_frontier()  # the reports of every command carry the frontier's section
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
