"""Tables for a terminal or a CI log: every figure printed whole, however narrow the console.

rich squeezes the columns of a table wider than the console until the figure columns come out
empty; a ``FittedTable`` is a rich table where it fits and one block per row where it would not.
The console's width is the terminal's, or ``COLUMNS``, or 80 where there is no terminal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from rich.console import Console, ConsoleOptions, JustifyMethod, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from scaling_bench.report.text import printable


@dataclass(frozen=True)
class TextColumn:
    """A column of a ``FittedTable``: figures are right-aligned, names left."""

    header: str
    justify: JustifyMethod = "left"
    style: str = ""


Cell = str | Text
#: Wide enough to measure a table's natural width (rich clamps a measurement to the console's).
_UNBOUNDED = 1 << 20


@dataclass
class FittedTable:
    """Rows of text that stay readable at any width. Where the whole table fits the console
    unwrapped it is a rich table; where it would not, each row becomes a block: its first
    ``key_columns`` cells as a heading, then ``header value`` for each other non-empty cell,
    packed into lines, so every figure is printed whole however narrow the console (rich would
    otherwise squeeze the figure columns of a wide table to nothing). Cells are plain text (no
    markup: a case id may hold brackets) or ``rich.text.Text``, each shown ``printable``: rich
    strips only some control characters, and a data file's escape sequence must do nothing."""

    title: str
    columns: Sequence[TextColumn]
    rows: list[Sequence[Cell]] = field(default_factory=list)
    caption: str = ""
    key_columns: int = 1

    def add_row(self, *cells: Cell) -> None:
        self.rows.append(cells)

    def table(self) -> Table:
        title, caption = printable(self.title, lines=True), printable(self.caption, lines=True)
        table = Table(
            title=Text(title, style="table.title") if title else None,
            caption=Text(caption, style="table.caption") if caption else None,
        )
        for c in self.columns:
            table.add_column(c.header, justify=c.justify, style=c.style, no_wrap=True)
        for row in self.rows:
            table.add_row(*(_text(cell) for cell in row))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        table = self.table()
        unbounded = options.update(width=_UNBOUNDED, max_width=_UNBOUNDED)
        if Measurement.get(console, unbounded, table).maximum <= options.max_width:
            yield table
        else:
            yield from self.blocks(options.max_width)

    def print_to(self, console: Console) -> None:
        """``console.print(self)``, a block at a time where the table does not fit: rich renders
        a whole renderable before writing it, which for the blocks of 100k rows is gigabytes."""
        table = self.table()
        unbounded = console.options.update(width=_UNBOUNDED, max_width=_UNBOUNDED)
        if Measurement.get(console, unbounded, table).maximum <= console.options.max_width:
            console.print(table)
            return
        del table
        for block in self.blocks(console.options.max_width):
            console.print(block)

    def blocks(self, width: int) -> Iterator[Text]:
        """The table as one block per row, ``width`` columns wide (what a narrow console gets):
        the row's key cells, then ``header value`` pairs packed into indented lines, a pair never
        split across two."""
        if self.title:
            yield Text(printable(self.title, lines=True), style="italic")
        for row in self.rows:
            key = Text("  ").join(_text(c) for c in row[: self.key_columns] if str(c))
            key.stylize("bold")
            yield key
            pairs = [
                Text.assemble((col.header, "dim"), " ", _text(cell))
                for col, cell in zip(
                    self.columns[self.key_columns :], row[self.key_columns :], strict=True
                )
                if str(cell)
            ]
            yield from _packed(pairs, width)
        if self.caption:
            yield Text(printable(self.caption, lines=True), style="dim")


def _packed(items: Sequence[Text], width: int, indent: int = 4, gap: int = 2) -> Iterator[Text]:
    """``items`` on indented lines of at most ``width`` cells, as many to a line as fit; an item
    wider than a line has one to itself (the console folds it)."""
    line = Text(" " * indent)
    for item in items:
        if line.cell_len > indent:
            if line.cell_len + gap + item.cell_len > width:
                yield line
                line = Text(" " * indent)
            else:
                line.append(" " * gap)
        line.append_text(item)
    if line.cell_len > indent:
        yield line


def _text(cell: Cell) -> Text:
    if isinstance(cell, Text):
        return Text(printable(cell.plain), style=cell.style, justify=cell.justify)
    return Text(printable(cell))
