"""``weightscope plot``: the kernel slices (or RGB filters, or slice norms) of one layer, written
to a PNG, SVG or PDF file. The figure itself is :mod:`weightscope.reporters.kernels`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from weightscope.cli.options import SOURCE, Formatter, add_source, examples, files, usage
from weightscope.errors import WeightscopeError
from weightscope.model import Model
from weightscope.output import atomic_output, check_output

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}

DESCRIPTION = """\
Draw the kernel of one conv or dense layer from its canonical layout (out, in/groups, *k):

  slices  one row per output filter, one column per input channel (within the filter's group
          for grouped convs), each cell the kh x kw kernel w[o, i]; one diverging colour scale,
          centred on zero, +-max|w| of the whole layer. 1-D kernels give 1 x k strips, 3-D
          kernels one depth slice (--depth, default the middle), 1x1 and dense kernels one
          out x in matrix.
  rgb     layers with exactly 3 input channels: each filter as a colour image (R, G, B = input
          channels 0, 1, 2), the classic first-layer picture.
  norms   the L2 norm of every kernel slice as an out x in heatmap, input channels at their
          absolute position, so the blocks of a grouped conv show.

Large layers show a default subset (32 filters x 16 channels of slices, 512 x 512 weights of a
1x1 or dense matrix, 256 RGB filters, 1024 x 1024 norms), stated on the figure; --all shows
everything. The format follows the suffix of -o: .png, .svg or .pdf."""

EPILOG = examples(
    ("plot --example --layer conv1 -o conv1.png", "the first conv's kernel slices"),
    ("plot model.h5 --layer block1_conv1 --view rgb -o filters.png",
     "a first layer's filters as colour images"),
    ("plot model.pt --layer features.10 --filters 0:16 --channels 0:8 -o f.svg",
     "16 filters x 8 input channels of a large layer"),
    notes="'weightscope inspect FILE' lists the layers; those with a kernel can be drawn.",
)  # fmt: skip


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "plot",
        help="draw the kernel slices, RGB filters or slice norms of one layer to PNG/SVG/PDF",
        usage=usage(f"{SOURCE} --layer NAME -o OUT.png|svg|pdf"),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    add_source(parser)
    parser.add_argument("--layer", required=True, metavar="NAME", help="the layer to draw")
    files(
        parser.add_argument(
            "-o",
            "--output",
            required=True,
            metavar="OUT.png|svg|pdf",
            help="file to write; its suffix picks the format",
        )
    )
    parser.add_argument(
        "--filters",
        metavar="A:B",
        help="output filters to show: A:B, A:B:STEP, N or N,M,... (Python indexing)",
    )
    parser.add_argument(
        "--channels",
        metavar="A:B",
        help="input channels to show, as --filters (within the group in the slices view, "
        "absolute in the norms view)",
    )
    parser.add_argument(
        "--depth", type=int, metavar="N", help="depth slice of a 3-D kernel (default the middle)"
    )
    parser.add_argument(
        "--view", choices=("slices", "rgb", "norms"), default="slices", help="default: slices"
    )
    parser.add_argument(
        "--all", action="store_true", help="show every filter and channel (no default subset)"
    )
    parser.add_argument(
        "--rgb-scale",
        choices=("filter", "layer"),
        default="filter",
        help="rgb view: scale each filter on its own (default) or the whole layer alike",
    )
    parser.add_argument(
        "--role",
        metavar="ROLE",
        help="tensor to draw (default kernel; a separable conv's depthwise_kernel or "
        "pointwise_kernel)",
    )
    parser.add_argument(
        "--dpi",
        type=int,
        default=100,
        metavar="N",
        help="dots per inch (default 100: one pixel per weight at least); also the "
        "resolution of the image inside an SVG or PDF",
    )
    return parser


def run(args: argparse.Namespace, model: Model) -> None:
    output = Path(args.output)
    fmt = FORMATS.get(output.suffix.lower())
    if fmt is None:
        shown = output.suffix or "no suffix"
        raise WeightscopeError(
            f"{output}: unknown output format ({shown}); use a .png, .svg or .pdf file name"
        )
    if args.dpi < 1:
        raise WeightscopeError(f"--dpi {args.dpi}: must be a positive number")
    layer = model.layer(args.layer)  # KeyError names the layers (exit 2)
    check_output(output, model)

    from weightscope.reporters.kernels import plot_kernels

    figure = plot_kernels(
        layer,
        filters=args.filters,
        channels=args.channels,
        depth=args.depth,
        view=args.view,
        all=args.all,
        role=args.role,
        rgb_scale=args.rgb_scale,
    )
    with atomic_output(output, model) as temp:
        figure.savefig(temp, format=fmt, dpi=args.dpi)
    width, height = figure.get_size_inches()
    size = f"{round(width * args.dpi)}x{round(height * args.dpi)} px" if fmt == "png" else fmt
    print(
        f"wrote {args.view} of layer {layer.name!r} ({figure.shown}) to {output} ({size})",
        file=sys.stderr,
    )
