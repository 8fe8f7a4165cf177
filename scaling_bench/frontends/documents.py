"""``scaling-bench report`` and ``merge``: commands that only read records (never torch).

``write_report`` is also what ``run --report`` calls once its cases are recorded.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling_bench.core.errors import UserError
from scaling_bench.frontends.run_flags import add_plugin


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="HTML report with plots and a markdown summary of a run")
    p.add_argument("dir", metavar="DIR", help="results folder (or its results.jsonl)")
    p.add_argument("--html", metavar="FILE", help="HTML report (default: DIR/report.html)")
    add_plugin(p)
    p.add_argument("--markdown", metavar="FILE", help="markdown summary (default: stdout)")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from scaling_bench.workloads import load_plugins

    load_plugins(args.plugin)
    source = Path(args.dir)
    folder = source if source.is_dir() else source.parent
    html_path = Path(args.html or folder / "report.html")
    markdown = Path(args.markdown) if args.markdown else None
    write_report(source, html_path, markdown, echo_markdown=markdown is None)
    return 0


def write_report(source: Path, html_path: Path, markdown: Path | None, echo_markdown: bool) -> None:
    """The HTML report of ``source`` to ``html_path``, its markdown summary to ``markdown``
    (or stdout where ``echo_markdown``)."""
    from scaling_bench.report.html import build_html
    from scaling_bench.report.markdown import build_markdown
    from scaling_bench.report.tables import Findings
    from scaling_bench.store.foreign import stream_records
    from scaling_bench.store.records import shown_records

    records = shown_records(stream_records(source))  # only what the report shows of each
    findings = Findings(records, str(source))  # computed once for both documents
    _write(html_path, build_html(records, str(source), findings))
    summary = build_markdown(records, str(source), findings)
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


def add_merge(sub: argparse._SubParsersAction) -> None:
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
    from scaling_bench.store.merge import merge_results

    merged = merge_results([Path(s) for s in args.sources], Path(args.out))
    print(
        f"scaling-bench: {merged.path}: {merged.added} records added, "
        f"{merged.read - merged.added} of the {merged.read} read were already there; "
        f"it holds {merged.total}",
        file=sys.stderr,
    )
    return 0
