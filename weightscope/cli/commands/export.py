"""``weightscope export``: every tensor, converted to canonical layout, into one NumPy ``.npz``
keyed ``<layer name>/<role>``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
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
from weightscope.errors import WeightscopeError
from weightscope.model import Model

SUFFIX = ".npz"


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


def prepare(args: argparse.Namespace) -> None:
    """``-o OUT`` names a NumPy archive: ``.npz`` is added to a name without a suffix, and a
    name with another suffix (``.npy``, which ``np.load`` would take for one array) refused."""
    args.output = str(output_path(Path(args.output)))


def output_path(given: Path) -> Path:
    if given.exists() and not given.is_file():
        return given  # a folder, a FIFO, a device: refused as an output, by that name
    suffix = given.suffix
    if not suffix:
        return given.with_name(given.name + SUFFIX)
    if suffix.lower() != SUFFIX:
        raise WeightscopeError(
            f"{given}: export writes a NumPy .npz archive, not a {suffix} file; name it "
            f"{given.with_suffix(SUFFIX)}"
        )
    return given


def run(args: argparse.Namespace, model: Model) -> None:
    from weightscope.reporters.npz import export_key, export_npz

    written = set(export_npz(model, args.output, limits_from(args)))
    exported, left = [], []
    for layer, tensor in model.tensors():
        key = export_key(layer.user_name, tensor.role)
        if key in written:
            exported.append(tensor)
        else:
            left.append(f"{key} ({tensor.dtype})")
    quantized = sum(t.quantization is not None for t in exported)
    tensors = len(exported)
    count = f"{tensors:,} tensor{'' if tensors == 1 else 's'}"
    extra = f" ({quantized:,} quantized: also their stored integers, scales, zero points)"
    skipped = ""
    if left:  # on the same line: one line of stderr for a run that succeeded
        more = f", +{len(left) - 5} more" if len(left) > 5 else ""
        skipped = (
            f"; not exported, their values not decoded by weightscope: {', '.join(left[:5])}"
            f"{more} (named in the archive's comment)"
        )
    print(
        f"wrote {count} in canonical layout to {args.output}"
        + (extra if quantized else "")
        + skipped,
        file=sys.stderr,
    )
