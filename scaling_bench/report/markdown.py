"""The summary for CI logs and pull-request comments, rendered from ``templates/summary.md.j2``:
exponents, what is far from theory, and the cases that did not finish."""

from __future__ import annotations

import re

from scaling_bench.report.sections import shown
from scaling_bench.report.tables import Findings
from scaling_bench.report.templating import environment
from scaling_bench.report.text import markdown_code, markdown_text

_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def table_cell(text: object) -> str:
    """Text that stays inside one markdown table cell: ``|`` escaped, line breaks as spaces
    (the rest of its escaping is every expression's, ``markdown_text``)."""
    return _LINE_BREAK.sub(" ", str(text)).replace("|", r"\|")


_TEMPLATES = environment(autoescape=False, finalize=markdown_text)
_TEMPLATES.filters["cell"] = table_cell
_TEMPLATES.filters["code"] = markdown_code


def build_markdown(records: list[dict], source: str, findings: Findings | None = None) -> str:
    """A summary for CI logs and pull-request comments: exponents, flags, failures, and the
    registered sections (``report.sections``: the compute-optimal frontier where the folder
    holds a design's runs); ``findings`` where the HTML report shares them."""
    findings = findings or Findings(records, source)
    return _TEMPLATES.get_template("summary.md.j2").render(
        report=findings, shown=shown(records, source, findings.claimed)
    )
