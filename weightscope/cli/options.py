"""Options shared by the commands, and the registry of commands, one module each. A module offers
``add_parser(commands)`` (declares the subcommand and its options; imports nothing heavy) and
either ``run(args, model)`` (does the work on the model the command line loaded from FILE) or,
for commands that read no file or several, ``main(args) -> exit status``. Both raise
``WeightscopeError`` with one line on failure. Adding a command means adding one module and its
name here."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from weightscope.model import Model

COMMANDS = (
    "inspect",
    "export",
    "plot",
    "init",
    "params",
    "explain",
    "report",
    "layouts",
    "compare",
    "scan",
)


class Command(Protocol):
    def add_parser(self, commands: Any) -> argparse.ArgumentParser: ...


@runtime_checkable
class ModelCommand(Command, Protocol):
    def run(self, args: argparse.Namespace, model: Model) -> None: ...


@runtime_checkable
class StandaloneCommand(Command, Protocol):
    def main(self, args: argparse.Namespace) -> int: ...


def command(name: str) -> Command:
    module: Command = importlib.import_module(f"weightscope.cli.commands.{name}")
    return module


def add_source(parser: argparse.ArgumentParser) -> None:
    """The model-file argument every command takes (``FILE`` or ``--example``), ``--limit`` and
    ``--debug``."""
    parser.add_argument("file", nargs="?", type=Path, help="model file")
    parser.add_argument(
        "--example", action="store_true", help="use the bundled example model instead of FILE"
    )
    add_reading_options(parser)


def add_wide(parser: argparse.ArgumentParser) -> None:
    """``--wide``, for every command that prints a table."""
    parser.add_argument(
        "--wide",
        action="store_true",
        help="keep every column of the table, and every name whole, however narrow the "
        "terminal (lines may then wrap); output to a pipe or a file always has them all",
    )


def _limit(text: str) -> tuple[str, int]:
    from weightscope.limits import parse_assignment

    try:
        return parse_assignment(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_reading_options(parser: argparse.ArgumentParser) -> None:
    """``--limit`` (repeatable) and ``--debug``, for every command that reads a model file."""
    from weightscope.limits import Limits

    parser.add_argument(
        "--limit",
        action="append",
        type=_limit,
        metavar="NAME=VALUE",
        help="change a resource limit of the file readers, e.g. --limit max_json_bytes=128M "
        "(sizes take K, M, G, T; repeatable). A file over a limit is refused with a line naming "
        f"it. Names: {', '.join(Limits.names())}",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when something fails"
    )


def limits_from(args: argparse.Namespace) -> Any:
    """The :class:`~weightscope.limits.Limits` the ``--limit`` options ask for."""
    from weightscope.limits import from_assignments

    return from_assignments(getattr(args, "limit", None))
