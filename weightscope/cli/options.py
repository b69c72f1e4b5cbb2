"""Options shared by the commands, and the registry of commands, one module each. A module offers
``add_parser(commands)`` (declares the subcommand and its options; imports nothing heavy) and
either ``run(args, model)`` (does the work on the model the command line loaded from FILE) or,
for commands that read no file or several, ``main(args) -> exit status``. A model command may
also offer ``prepare(args)``, run before the file is read (to settle or refuse arguments such as
an output name without reading a large file first). All raise
``WeightscopeError`` with one line on failure. Adding a command means adding one module and its
name here.

Every command's help has the same shape: a usage line ``weightscope NAME OPERANDS [options]``
naming what the command requires (:func:`usage`), a description, the options, and an epilog of
one to three examples (:func:`examples`) that the tests parse."""

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
    "limits",
    "completion",
)

SOURCE = "(FILE | --example)"
"""How usage lines write the model-file operand of commands that read one."""

FILE_COMPLETION = "file"
"""``action.complete`` of arguments that name files: what shell completion offers for them
(shtab's name for file paths; set here as a plain string so parsing imports nothing)."""


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


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Help as written: a description or epilog paragraph laid out over several lines (a list,
    examples) is kept as it is; a paragraph written as one line is wrapped to the terminal."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        wrap = argparse.HelpFormatter._fill_text
        keep = argparse.RawDescriptionHelpFormatter._fill_text
        return "\n\n".join(
            (keep if "\n" in part.strip("\n") else wrap)(self, part, width, indent)
            for part in text.split("\n\n")
        )


def usage(operands: str = "") -> str:
    """The usage line of a command: its name, what it requires (``(FILE | --example) -o OUT``),
    then ``[options]``; ``--help`` lists the options."""
    return " ".join(part for part in ("%(prog)s", operands, "[options]") if part)


def examples(*shown: tuple[str, str], notes: str = "") -> str:
    """An epilog of examples: each command line (as typed after ``weightscope``) and what it
    does, one under the other; ``notes`` (exit status...) after them."""
    lines = ["examples:"]
    for command_line, what in shown:
        lines += [f"  weightscope {command_line}", f"      {what}"]
    return "\n".join(lines) + (f"\n\n{notes}" if notes else "")


def files(action: argparse.Action) -> argparse.Action:
    """Mark ``action`` as naming files, for shell completion."""
    setattr(action, "complete", FILE_COMPLETION)  # noqa: B010 - an attribute argparse lacks
    return action


def add_source(parser: argparse.ArgumentParser) -> None:
    """The model-file argument every command takes (``FILE`` or ``--example``), ``--limit`` and
    ``--debug``."""
    files(
        parser.add_argument(
            "file",
            nargs="?",
            type=source_argument,
            metavar="FILE",
            help="model file, shard index or folder, or a file's URL (https://, s3://, hf://)",
        )
    )
    parser.add_argument(
        "--example", action="store_true", help="use the bundled example model instead of FILE"
    )
    add_reading_options(parser)


def source_argument(text: str) -> Path | str:
    """A model-file operand: a URL stays the string it is (a ``Path`` would fold its ``//``)."""
    from weightscope.formats._common.remote import url_scheme

    return text if url_scheme(text) is not None else Path(text)


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
    parser.add_argument(
        "--limit",
        action="append",
        type=_limit,
        metavar="NAME=VALUE",
        help="raise a reader limit (see: weightscope limits)",
    )
    parser.add_argument(
        "--storage-option",
        action="append",
        type=_storage_option,
        metavar="KEY=VALUE",
        help="for a URL: an fsspec option of its file system (endpoint_url=http://..., "
        "anon=true); the value is read as JSON when it is JSON",
    )
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when something fails"
    )


def _storage_option(text: str) -> tuple[str, Any]:
    from weightscope.formats._common.remote import parse_storage_option

    try:
        return parse_storage_option(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def storage_options_from(args: argparse.Namespace) -> dict[str, Any]:
    """The fsspec options the ``--storage-option`` options give, for a model read by URL."""
    return dict(getattr(args, "storage_option", None) or [])


def limits_from(args: argparse.Namespace) -> Any:
    """The :class:`~weightscope.limits.Limits` the ``--limit`` options ask for."""
    from weightscope.limits import from_assignments

    return from_assignments(getattr(args, "limit", None))
