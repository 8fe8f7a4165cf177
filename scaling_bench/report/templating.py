"""The jinja2 environment of the report's templates, one for HTML (autoescaped) and one for text."""

from __future__ import annotations

from collections.abc import Callable

from jinja2 import Environment, PackageLoader, StrictUndefined


def environment(
    autoescape: bool, finalize: Callable[[object], object] | None = None
) -> Environment:
    """Templates from ``report/templates``; an undefined name is an error, not an empty string;
    ``finalize`` escapes every expression's value for a format that autoescape does not know."""
    return Environment(
        finalize=finalize,
        loader=PackageLoader("scaling_bench.report"),
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
