"""``weightscope params``: each layer's stored parameter count against the count its
configuration implies, disagreements flagged with their reason, and the totals the way Keras and
PyTorch count them. Disagreements are findings, not errors: the exit status stays 0."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from weightscope.cli import console as terminal
from weightscope.cli.options import SOURCE, Formatter, add_source, add_wide, examples, usage
from weightscope.model import Model


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "params",
        help="verify parameter counts: stored tensors against the layer configs' formulas",
        usage=usage(SOURCE),
        epilog=examples(
            ("params --example", "each layer's stored count against its formula, and totals"),
            ("params model.onnx --json", "one JSON object, for scripts"),
        ),
        formatter_class=Formatter,
        description="One row per weight-bearing layer: the parameters its stored tensors hold, "
        "the count its configuration implies by formula (conv: filters x kernel x in/groups "
        "+ bias; dense: in x units + units; batch norm: 4 x channels, two of them "
        "non-trainable moving statistics; ...), the framework's declared figure where the file "
        "has one, and whether they agree. Disagreements are flagged with their reason and "
        "explained below the table; they are findings, so the exit status stays 0. Totals are "
        "split trainable / non-trainable as Keras does, with PyTorch's parameters() figure "
        "(which leaves out buffers such as running_mean / running_var) where it differs.",
    )
    add_source(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    add_wide(parser)
    return parser


def run(args: argparse.Namespace, model: Model) -> None:
    from weightscope.analysis.params import verify
    from weightscope.reporters.params import params_table

    report = verify(model)
    if args.json:
        json.dump(report.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return

    console = terminal.stdout()
    console.print(params_table(report, wide=terminal.whole_tables(console, args.wide)))
