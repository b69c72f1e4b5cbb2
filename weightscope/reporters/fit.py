"""The one table every command prints to the terminal (``inspect``, ``inspect --layer``,
``init``, ``params``, ``compare``): one style, and a width that fits the terminal.

A :class:`FitTable` is given all its columns, each with a priority. Where the width it is printed
in (the terminal's) is narrower than the whole table, columns are left out from the least
important up until the rest fits, then names (and wrapping text) are narrowed: a name is
shortened in the middle (``features.1…0.conv``), never broken across lines, and a number is
never cut. A dim note under the table says which columns were left out. ``wide=True`` keeps
every column and every name whole: its lines are as long as the table needs (the command line
asks for it with ``--wide`` and when stdout is a pipe or a file, and prints such lines
uncropped).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rich.cells import cell_len, get_character_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

ALWAYS = 0
"""The priority of a column that is never left out."""

NAME_MIN = 12
"""A name is never shortened below this many cells (nor below its column's title)."""

NAME_SHARE = 3
"""Before columns are given up for it, a name column may take 1/NAME_SHARE of the width."""

ELLIPSIS = "…"


@dataclass(frozen=True)
class Column:
    """One column: its title, how the note names it when it is left out (``label``, by default
    the title in lower case), and its ``priority``: :data:`ALWAYS` (0) is never left out, and
    the others are left out largest first (right-most first among equals)."""

    title: str
    priority: int = ALWAYS
    justify: str = "left"
    name: bool = False
    """Names and other identifiers: shortened in the middle when the table must narrow."""
    wrap: bool = False
    """Text that may wrap between words (never inside one) when the table must narrow."""
    label: str | None = None

    @property
    def note_label(self) -> str:
        return self.label or self.title.lower()


class FitTable:
    """A rich renderable: the rows of ``columns``, laid out to fit the width it is printed in
    (unless ``wide``), with the note of what was left out."""

    def __init__(self, columns: Sequence[Column], *, wide: bool = False) -> None:
        self.columns = list(columns)
        self.wide = wide
        self.rows: list[tuple[list[Text], str | None]] = []

    def add_row(self, *cells: str | Text, style: str | None = None) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(([Text(c) if isinstance(c, str) else c for c in cells], style))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        available = options.max_width
        layout = _Layout(self.columns, self.rows)
        if not self.wide:
            layout.fit(available)
        rich_table = layout.table(self.rows)
        needed = Measurement.get(console, options.update(width=10**6), rich_table).maximum
        # never cropped nor collapsed by rich: a table wider than the console is printed wide
        yield from console.render(rich_table, options.update(width=max(needed, available)))
        note = layout.note(available)
        if note is not None:
            yield note


GAP = 3
"""Cells between two columns: padding, a rule, padding (the edges have none)."""


class _Layout:
    """Which columns are shown and how wide each is."""

    def __init__(self, columns: list[Column], rows: list[tuple[list[Text], str | None]]) -> None:
        self.columns = columns
        self.natural = [
            max([cell_len(c.title), *(_width(row[i]) for row, _ in rows)])
            for i, c in enumerate(columns)
        ]
        self.minimum = [
            self._minimum(i, c, [row[i] for row, _ in rows]) for i, c in enumerate(columns)
        ]
        self.widths = list(self.natural)
        self.shown = list(range(len(columns)))
        self.left_out: list[int] = []
        self.shortened = False

    def _minimum(self, index: int, column: Column, cells: list[Text]) -> int:
        title = max((cell_len(word) for word in column.title.split()), default=0)
        if column.name:
            return min(self.natural[index], max(NAME_MIN, cell_len(column.title)))
        if column.wrap:
            words = [cell_len(w) for cell in cells for w in cell.plain.split()]
            return max([title, *words])
        return self.natural[index]

    def _total(self, widths: list[int]) -> int:
        return sum(widths[i] for i in self.shown) + GAP * max(0, len(self.shown) - 1)

    def fit(self, available: int) -> None:
        budget = max(1, available // NAME_SHARE)
        planned = [
            min(self.natural[i], max(self.minimum[i], budget))
            if (c.name or c.wrap)
            else self.natural[i]
            for i, c in enumerate(self.columns)
        ]
        droppable = sorted(
            (i for i, c in enumerate(self.columns) if c.priority != ALWAYS),
            key=lambda i: (-self.columns[i].priority, -i),
        )
        for index in droppable:
            if self._total(planned) <= available:
                break
            self.shown.remove(index)
            self.left_out.append(index)
        narrowable = [i for i in self.shown if self.columns[i].name or self.columns[i].wrap]
        excess = self._total(self.widths) - available
        while excess > 0:
            wider = [i for i in narrowable if self.widths[i] > self.minimum[i]]
            if not wider:
                break
            widest = max(wider, key=lambda i: self.widths[i])
            self.widths[widest] -= 1
            excess -= 1

    def table(self, rows: list[tuple[list[Text], str | None]]) -> Table:
        rich_table = Table(show_edge=False, header_style="bold", pad_edge=False)
        for i in self.shown:
            column = self.columns[i]
            rich_table.add_column(
                column.title,
                justify=column.justify,  # type: ignore[arg-type]
                width=self.widths[i],
                no_wrap=not column.wrap,
                overflow="fold" if column.wrap else "ellipsis",
            )
        for cells, style in rows:
            shown = []
            for i in self.shown:
                cell = cells[i]
                if self.columns[i].name and cell.cell_len > self.widths[i]:
                    cell = shorten_middle(cell, self.widths[i])
                    self.shortened = True
                shown.append(cell)
            rich_table.add_row(*shown, style=style)
        return rich_table

    def note(self, available: int) -> Text | None:
        """``Not shown at 80 columns: native shape, dtype (--wide shows them).``, and, when
        names were shortened, that they were."""
        left_out = ", ".join(self.columns[i].note_label for i in sorted(self.left_out))
        if left_out and self.shortened:
            text = (
                f"Not shown at {available} columns: {left_out}; names shortened in the middle "
                "(--wide shows all)."
            )
        elif left_out:
            text = f"Not shown at {available} columns: {left_out} (--wide shows them)."
        elif self.shortened:
            text = (
                f"Names shortened in the middle to fit {available} columns (--wide shows them "
                "whole)."
            )
        else:
            return None
        return Text(text, style="dim")


def _width(cell: Text) -> int:
    return max((cell_len(line) for line in cell.plain.splitlines()), default=0)


def shorten_middle(text: Text, width: int) -> Text:
    """``text`` in at most ``width`` cells: its start and its end around an ellipsis (the end
    one cell longer when they cannot be equal), styles kept."""
    if text.cell_len <= width:
        return text
    if width <= 1:
        return Text(ELLIPSIS[:width])
    keep = width - cell_len(ELLIPSIS)
    head_cells, tail_cells = keep // 2, keep - keep // 2
    plain = text.plain
    head = used = 0
    while head < len(plain) and used + get_character_cell_size(plain[head]) <= head_cells:
        used += get_character_cell_size(plain[head])
        head += 1
    tail = len(plain)
    used = 0
    while tail > head and used + get_character_cell_size(plain[tail - 1]) <= tail_cells:
        used += get_character_cell_size(plain[tail - 1])
        tail -= 1
    return text[:head] + Text(ELLIPSIS, style="dim") + text[tail:]
