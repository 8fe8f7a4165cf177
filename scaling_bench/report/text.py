"""Text from data files, made safe for where it is shown.

A record's case id, error text or machine fingerprint, and a foreign file's names, are whatever
the file says: an escape sequence in one would clear a terminal or retitle its window, raw HTML
would be markup in a pull-request comment, and a ``$`` would be parsed as mathtext by matplotlib
(an unknown macro is a traceback). The few output edges pass data through these functions: the
terminal tables (``terminal.FittedTable``) and the gate's lines, the markdown summary's template
(every expression), and each figure before it is saved.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from markupsafe import Markup

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: C0 and C1 control characters (ESC, BEL, CSI, …) and the bidirectional overrides that reorder
#: what a terminal or a browser shows; tab and line feed are kept where lines are wanted.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def _escaped(match: re.Match[str]) -> str:
    code = ord(match[0])
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def printable(text: object, *, lines: bool = False) -> str:
    """``text`` with every control character written out (ESC as ``\\x1b``), so it shows as
    what it is and does nothing; line breaks too, unless ``lines`` (text of several lines)."""
    out = _CONTROL.sub(_escaped, str(text))
    return out if lines else out.replace("\n", "\\n")


def markdown_text(value: object) -> str:
    """A template expression's text for markdown read as a PR comment: printable, on one line
    (a line break would end a list item or start a heading), HTML as text, no code span or
    link syntax."""
    if isinstance(value, Markup):  # built here (``markdown_code``), already safe
        return str(value)
    text = _LINE_BREAK.sub(" ", printable(value, lines=True))
    return text.translate(_HTML).replace("`", r"\`").replace("](", r"\](")


def markdown_code(value: object) -> Markup:
    """``value`` as a code span whose fence is longer than any run of backticks inside it, so a
    backtick in a case id cannot end the span (backslashes do not escape in code spans)."""
    text = _LINE_BREAK.sub(" ", printable(value, lines=True))
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return Markup(f"{fence}{pad}{text}{pad}{fence}")


def _literal(text: str) -> str:
    return printable(text, lines=True).replace("$", r"\$")


def drawn_literally(fig: Figure) -> Figure:
    """``fig`` with its texts printable and every ``$`` escaped, so data (a family, a metric, a
    host) is drawn as written, never parsed as mathtext: the titles, labels, legends and
    annotations, and the tick labels of function formatters (``set_xticks`` with labels, and
    ours, which make plain text). The log formatters' own labels (``10^4``) stay mathtext."""
    from matplotlib.text import Text  # not at import: printable serves every error line
    from matplotlib.ticker import FuncFormatter

    for text in fig.findobj(Text):
        text.set_text(_literal(text.get_text()))
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(made := axis.get_major_formatter(), FuncFormatter):
                axis.set_major_formatter(FuncFormatter(lambda x, pos, f=made: _literal(f(x, pos))))
    return fig
