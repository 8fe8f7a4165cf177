"""The frontier's section of the report, for ``report.sections``: the frontends register it.

Light on purpose: the command line registers it as it starts, before it knows whether a report
will be built, so the analysis and its figures load only when a report asks for them.
"""

from __future__ import annotations

from pathlib import Path

from scaling_bench.frontier.records import is_frontier_record
from scaling_bench.report.sections import ExtraSection, register


def _build(records: list[dict], source: str) -> object | None:
    from scaling_bench.frontier.report import frontier_section

    return frontier_section(records, source)


def _note(runs: int, view: object | None) -> str | None:
    from scaling_bench.frontier.report import FrontierSection, left_out_note

    return left_out_note(runs, view if isinstance(view, FrontierSection) else None)


SECTION = ExtraSection(
    name="frontier",
    title="Frontier",
    claims=is_frontier_record,
    build=_build,
    note=_note,
    html="frontier.html.j2",
    markdown="frontier.md.j2",
    templates=Path(__file__).parent / "templates",
)


def register_frontier() -> None:
    """Give every report built from now on the frontier's section."""
    register(SECTION)
