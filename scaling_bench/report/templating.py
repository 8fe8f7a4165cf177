"""The jinja2 environment of the report's templates, one for HTML (autoescaped) and one for text."""

from __future__ import annotations

from collections.abc import Callable

from jinja2 import ChoiceLoader, Environment, FunctionLoader, PackageLoader, StrictUndefined

from scaling_bench.report.sections import template_source


def environment(
    autoescape: bool, finalize: Callable[[object], object] | None = None
) -> Environment:
    """Templates from ``report/templates`` and the registered sections' (``report.sections``);
    an undefined name is an error, not an empty string;
    ``finalize`` escapes every expression's value for a format that autoescape does not know."""
    return Environment(
        finalize=finalize,
        loader=ChoiceLoader(
            [PackageLoader("scaling_bench.report"), FunctionLoader(template_source)]
        ),
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
