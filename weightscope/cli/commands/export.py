"""``weightscope export``: every tensor, converted to canonical layout, into one NumPy ``.npz``
keyed ``<layer name>/<role>``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from weightscope.cli.options import add_source, limits_from
from weightscope.model import Model


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "export",
        help="write every tensor in canonical layout to a .npz",
        description="Write each tensor, converted to canonical layout, as one array keyed "
        "'<layer name>/<role>' in a NumPy .npz (np.load reads it). Tensors without a canonical "
        "form are written as stored.",
    )
    add_source(parser)
    parser.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="output file")
    return parser


def run(args: argparse.Namespace, model: Model) -> None:
    from weightscope.reporters.npz import export_npz

    keys = export_npz(model, args.output, limits_from(args))
    print(f"wrote {len(keys)} tensors in canonical layout to {args.output}", file=sys.stderr)
