"""The report as one self-contained HTML file, rendered from ``templates/report.html.j2``.

Every plot is embedded as a base64 PNG, so the file can be mailed, attached to a CI run or opened
from a laptop without the results folder. Autoescaping is on: case ids, error texts and machine
names from the records are text, never markup.
"""

from __future__ import annotations

from datetime import UTC, datetime

from scaling_bench.report.figures import report_plots
from scaling_bench.report.sections import shown
from scaling_bench.report.tables import Findings
from scaling_bench.report.templating import environment

_TEMPLATES = environment(autoescape=True)


def build_html(records: list[dict], source: str, findings: Findings | None = None) -> str:
    """The whole report as one HTML document with its plots inline; ``findings`` where the
    markdown summary shares them (computing them is most of a report of many records)."""
    findings = findings or Findings(records, source)
    return _TEMPLATES.get_template("report.html.j2").render(
        report=findings,
        plots=report_plots(findings.groups, findings.fits),
        shown=shown(records, source, findings.claimed),
        generated=datetime.now(UTC),
    )
