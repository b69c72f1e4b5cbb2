"""``weightscope export``: every tensor, converted to canonical layout, into one NumPy ``.npz``
keyed ``<layer name>/<role>``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from weightscope.cli.options import (
    SOURCE,
    Formatter,
    add_source,
    examples,
    files,
    limits_from,
    usage,
)
from weightscope.model import Model


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "export",
        help="write every tensor in canonical layout to a .npz",
        usage=usage(f"{SOURCE} -o OUT.npz"),
        description="Write each tensor, converted to canonical layout, as one array keyed "
        "'<layer name>/<role>' in a NumPy .npz (np.load reads it). Tensors without a canonical "
        "form are written as stored.",
        epilog=examples(
            ("export model.h5 -o weights.npz", "canonical tensors keyed <layer>/<role>"),
            ("export --example -o weights", "writes weights.npz (the suffix is added)"),
            ("inspect weights.npz", "an export read back: the same layers, shapes and totals"),
        ),
        formatter_class=Formatter,
    )
    add_source(parser)
    files(
        parser.add_argument(
            "-o",
            "--output",
            required=True,
            metavar="OUT.npz",
            help="the NumPy archive to write (.npz is added to a name without a suffix)",
        )
    )
    return parser


def run(args: argparse.Namespace, model: Model) -> None:
    from weightscope.reporters.npz import export_npz

    keys = export_npz(model, args.output, limits_from(args))
    print(f"wrote {len(keys)} tensors in canonical layout to {args.output}", file=sys.stderr)
