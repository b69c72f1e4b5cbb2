"""``weightscope layouts``: the native layout of every tensor of every layer class (ONNX:
operator) weightscope reads, next to the canonical one. Generated from the layout table in
``weightscope/layouts.py``, which the readers look their layouts up in: it cannot drift from
what ``inspect`` reports. Reads no model file."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from weightscope.cli import console as terminal
from weightscope.cli.options import Formatter, examples, usage
from weightscope.layouts import FRAMEWORKS


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "layouts",
        help="native weight layout of every supported layer, next to the canonical one",
        usage=usage(),
        epilog=examples(
            ("layouts", "every framework's layouts, grouped by layer kind"),
            ("layouts --framework keras", "Keras' alone"),
            ("layouts --json", "one JSON object, for scripts"),
        ),
        formatter_class=Formatter,
        description="One row per tensor of every layer class (ONNX: operator) weightscope "
        "reads, grouped by layer kind: the framework's name for the tensor, the layout it is "
        "stored in, with what each axis counts (Keras Conv2D kernel: HWIO, (kh, kw, in/groups, "
        "out)), and the canonical layout weightscope shows it in (OIHW, (out, in/groups, kh, "
        "kw)). Generated from the same table the readers use.",
    )
    parser.add_argument("--framework", choices=FRAMEWORKS, help="only the layouts of one framework")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback when something fails"
    )
    return parser


def main(args: argparse.Namespace) -> int:
    from weightscope.reporters.layouts import layouts_table, layouts_to_dict

    if args.json:
        json.dump(layouts_to_dict(args.framework), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0

    console = terminal.stdout()
    console.print(layouts_table(args.framework))
    return 0
