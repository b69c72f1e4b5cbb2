"""The one terminal every command prints to: rich on stdout, and rich on stderr for progress
bars. Tables fit a terminal's width (:mod:`weightscope.reporters.fit`); when stdout is not a
terminal (a pipe or a file) they keep every column whole, text wraps at 160 columns, and no line
is ever cropped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment

from weightscope.errors import printable_lines

PIPE_WIDTH = 160
"""Columns of output sent to a pipe or a file, where no terminal says how wide to be."""


class SafeConsole(Console):
    """A console that shows control characters in what it prints (names, notes, producers from
    a hostile file) as ``\\xNN`` instead of sending them to the terminal; rich's own styles and
    cursor codes pass."""

    def render(
        self, renderable: RenderableType, options: ConsoleOptions | None = None
    ) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control or segment.text.isprintable():
                yield segment
            else:
                yield Segment(printable_lines(segment.text), segment.style)

    def print(self, *objects: Any, crop: bool = False, **options: Any) -> None:
        """As rich prints, except that lines wider than the console are never cut (``crop``
        False): a table that cannot fit (``--wide``, a pipe) is printed whole."""
        super().print(*objects, crop=crop, **options)


def stdout(**options: Any) -> Console:
    console = SafeConsole(**options)
    if not console.is_terminal:
        console = SafeConsole(width=PIPE_WIDTH, **options)
    return console


def whole_tables(console: Console, wide: bool) -> bool:
    """Whether tables keep every column and name whole: when asked (``--wide``) and whenever
    ``console`` is not a terminal, so that output to a pipe or a file is complete."""
    return wide or not console.is_terminal


def stderr() -> Console:
    return SafeConsole(stderr=True)
