"""``weightscope compare A B [C ...]``: the weights of two models, layer by layer, whatever
frameworks wrote them; with more files, A against each of the others. Exit status 0 when every
layer matches as stored, 1 when layers match only under a transform, differ or have no partner,
2 when a file cannot be read."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from weightscope.cli import console as terminal
from weightscope.cli.options import (
    Formatter,
    add_reading_options,
    add_wide,
    examples,
    files,
    limits_from,
    storage_options_from,
    usage,
)

DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-5
"""The defaults of :func:`weightscope.compare` (kept equal to those of
``weightscope.comparison.transforms``; a test checks), repeated here so that building the
parser imports nothing heavy."""

DESCRIPTION = """\
Compare the weights of two models layer by layer: two files in any format weightscope reads,
from the same framework or from different ones (Keras against PyTorch, PyTorch against its ONNX
export...). Given more files (one model shipped as a SavedModel, a TFLite file, an ONNX file),
A is compared with each of the others in turn. Layers are paired by kind and canonical shape,
and by value where shapes are ambiguous (several layers of one shape, heads declared in another
order, a layer missing on one side). For each pair, the transforms that map A's canonical
kernel onto B's are tried and the one that holds is named:

  identity            same weights
  swap_hw             kh and kw exchanged
  flip_hw             spatial axes reversed (a 2-D kernel rotated 180 degrees)
  swap_io             out and in exchanged (a kernel loaded transposed, or a transposed
                      conv's weight read as an ordinary conv's)
  flatten_hwc_to_chw  a dense layer after a flatten: A's input columns in (h, w, c) order
                      (Keras, channels-last), B's in (c, h, w) order (nn.Flatten on NCHW)
  flatten_chw_to_hwc  the reverse
  bn_folded           a batch norm folded into B's layer by a converter: kernel scaled
                      per output channel by gamma / sqrt(var + eps), bias shifted (the
                      note names the batch norm, eps and the residual)
  a+b                 combinations, e.g. swap_hw+flip_hw
  none                no transform makes them agree (the table shows the closest)

Tensors agree when max|T(a) - b| <= atol + rtol * max|b|, for every tensor of the pair.
Batch-norm eps and momentum are reported as a note (Keras momentum = 1 - PyTorch momentum; eps
defaults 1e-3 in Keras, 1e-5 in PyTorch), never as a difference."""

EPILOG = examples(
    ("compare model.h5 model.pt", "a Keras model against its PyTorch port"),
    ("compare saved_model/ m.tflite m.onnx", "one model as shipped in three formats"),
    ("compare --example", "the bundled digits CNN: Keras .h5 against its PyTorch port (.pt)"),
    notes="""\
exit status: 0 when every layer matches under identity and none is unmatched (in every
comparison); 1 when layers match only under a transform, differ, or have no partner; 2 when a
file cannot be read (one line on stderr says why).""",
)


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "compare",
        help="compare two models' weights layer by layer, across frameworks",
        usage=usage("(A B [C ...] | --example)"),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    files(parser.add_argument("a", metavar="A", nargs="?", help="first model file"))
    files(parser.add_argument("b", metavar="B", nargs="?", help="second model file"))
    files(
        parser.add_argument(
            "others", metavar="C", nargs="*", help="more model files, each compared with A"
        )
    )
    parser.add_argument(
        "--example",
        action="store_true",
        help="compare the bundled example's Keras file with its PyTorch port instead of A B",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (with more than two files: a list of them, A against each)",
    )
    add_wide(parser)
    parser.add_argument(
        "--atol",
        type=_non_negative,
        default=DEFAULT_ATOL,
        metavar="X",
        help=f"absolute tolerance (default {DEFAULT_ATOL:g})",
    )
    parser.add_argument(
        "--rtol",
        type=_non_negative,
        default=DEFAULT_RTOL,
        metavar="Y",
        help=f"tolerance relative to max|b| of each tensor (default {DEFAULT_RTOL:g})",
    )
    add_reading_options(parser)
    return parser


def _sources(args: argparse.Namespace) -> list[Any]:
    from weightscope.errors import WeightscopeError

    if args.example:
        if args.a or args.b:
            raise WeightscopeError("compare: give either A and B or --example, not both")
        from weightscope.examples import example_path

        return [example_path("keras"), example_path("pytorch")]
    if not (args.a and args.b):
        raise WeightscopeError("compare needs two model files: weightscope compare A B")
    return [args.a, args.b, *args.others]


def main(args: argparse.Namespace) -> int:
    from weightscope.comparison.engine import compare

    first, *others = _sources(args)
    limits, options = limits_from(args), storage_options_from(args)
    comparisons = [
        compare(first, other, atol=args.atol, rtol=args.rtol, limits=limits,
                storage_options=options)
        for other in others
    ]  # fmt: skip
    exit_code = max(comparison.exit_code for comparison in comparisons)
    if args.json:
        found = [comparison.to_dict() for comparison in comparisons]
        json.dump(found[0] if len(found) == 1 else found, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return exit_code

    from weightscope.reporters.compare import comparison_table

    console = terminal.stdout()
    wide = terminal.whole_tables(console, args.wide)
    for i, comparison in enumerate(comparisons):
        if i:
            console.print()
        console.print(comparison_table(comparison, wide=wide))
    return exit_code
