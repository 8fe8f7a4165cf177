"""Sections that a feature above the report adds to it: the report shows them, never imports them.

The compute-optimal frontier (``scaling_bench.frontier``) sits above the report, yet its runs are
in the folder the report reads: they must leave the series against N and get their own section.
So such a feature registers an ``ExtraSection`` here when it is imported, and ``report.html`` and
``report.markdown`` ask each registered one which records it claims, what it shows, and the
templates (in its own folder) that lay it out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExtraSection:
    """One feature's section: ``claims`` picks its records out of the series against N;
    ``build`` makes what the templates show (None where there is nothing); ``note`` says, given
    how many records it claimed and the view, why they are missing from the plots against N;
    ``html`` and ``markdown`` name its templates in ``templates``, rendered with ``section`` the
    view."""

    name: str
    title: str
    claims: Callable[[dict], bool]
    build: Callable[[list[dict], str], object | None]
    note: Callable[[int, object | None], str | None]
    html: str
    markdown: str
    templates: Path


@dataclass(frozen=True)
class Shown:
    """A registered section in one report: its view (None: nothing to show) and its note."""

    section: ExtraSection
    view: object | None
    note: str | None


_REGISTERED: dict[str, ExtraSection] = {}


def register(section: ExtraSection) -> None:
    """Add ``section`` to every report built from now on (again: the same section once)."""
    _REGISTERED[section.name] = section


def registered() -> tuple[ExtraSection, ...]:
    return tuple(_REGISTERED.values())


def claimed(records: list[dict]) -> dict[str, list[dict]]:
    """Each registered section's records, by its name."""
    return {s.name: [r for r in records if s.claims(r)] for s in registered()}


def unclaimed(records: list[dict]) -> list[dict]:
    """The records no registered section claims: the report's series against N."""
    return [r for r in records if not any(s.claims(r) for s in registered())]


def shown(records: list[dict], source: str, claims: dict[str, list[dict]]) -> list[Shown]:
    """Every registered section for the report of ``records``; ``claims`` is ``claimed``'s."""
    out = []
    for s in registered():
        view = s.build(records, source)
        out.append(Shown(s, view, s.note(len(claims[s.name]), view)))
    return out


def template_source(name: str) -> str | None:
    """The text of a registered section's template ``name``; None where none has it (jinja2's
    ``FunctionLoader`` then tries no further)."""
    for s in registered():
        if name in (s.html, s.markdown):
            return (s.templates / name).read_text(encoding="utf-8")
    return None
