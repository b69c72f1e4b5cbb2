"""The one terminal every command prints to: rich on stdout, 160 columns when stdout is not a
terminal (a pipe or a file keeps whole rows), and rich on stderr for progress bars."""

from __future__ import annotations

from rich.console import Console

PIPE_WIDTH = 160
"""Columns of output sent to a pipe or a file, where no terminal says how wide to be."""


def stdout() -> Console:
    console = Console()
    if not console.is_terminal:
        console = Console(width=PIPE_WIDTH)
    return console


def stderr() -> Console:
    return Console(stderr=True)
