"""``weightscope limits [NAME...]``: the resource limits of the file readers, their defaults and
what each bounds, documented once here (every reading command's ``--limit`` refers to it)."""

from __future__ import annotations

import argparse
import shutil
import textwrap
from typing import Any

from weightscope.cli.options import Formatter, examples, usage

DESCRIPTION = """\
What reading one file may cost is bounded by named limits: a file over one is refused with one
line naming the limit and a value that would let it through. Raise one with --limit NAME=VALUE
on any command that reads a file (repeatable; sizes take K, M, G, T: 64M is 64 MiB), or in
Python with weightscope.Limits(NAME=VALUE). Sizes and offsets a file declares are also checked
against the bytes it holds; those checks are not limits and cannot be lifted."""

MAX_WIDTH = 100


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "limits",
        help="the resource limits of the file readers (--limit NAME=VALUE), with defaults",
        usage=usage("[NAME ...]"),
        description=DESCRIPTION,
        epilog=examples(
            ("limits", "every limit, its default and what it bounds"),
            ("limits max_json_bytes", "one limit"),
            ("inspect big.keras --limit max_json_bytes=128M", "read a file over the default"),
        ),
        formatter_class=Formatter,
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="only these limits")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when something fails"
    )
    return parser


def main(args: argparse.Namespace) -> int:
    from weightscope.errors import WeightscopeError
    from weightscope.limits import DEFAULT, Limits, descriptions, format_value

    names = [name.replace("-", "_") for name in args.names] or list(Limits.names())
    unknown = [name for name in names if name not in Limits.names()]
    if unknown:
        raise WeightscopeError(
            f"unknown limit {unknown[0]!r} (limits: {', '.join(Limits.names())})"
        )
    width = min(shutil.get_terminal_size((MAX_WIDTH, 24)).columns, MAX_WIDTH)
    described = descriptions()
    blocks = [] if args.names else [textwrap.fill(" ".join(DESCRIPTION.split()), width)]
    for name in names:
        default = format_value(name, getattr(DEFAULT, name))
        text = f"{name} = {default} ({Limits.unit(name)})"
        if name in described:
            text += "\n" + textwrap.fill(
                described[name].replace("``", ""),
                width,
                initial_indent="    ",
                subsequent_indent="    ",
            )
        blocks.append(text)
    print("\n\n".join(blocks))
    return 0
