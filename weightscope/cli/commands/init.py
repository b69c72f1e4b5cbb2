"""`weightscope init`: is each kernel still as its initializer drew it, or trained?"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from weightscope.cli import console as terminal
from weightscope.cli.options import (
    SOURCE,
    Formatter,
    add_source,
    add_wide,
    examples,
    files,
    usage,
)
from weightscope.errors import WeightscopeError
from weightscope.model import Model
from weightscope.output import atomic_output

DESCRIPTION = """\
Compare each layer's kernel with the initializer that drew it: the one declared in a Keras layer
config, else the framework's default (Keras glorot_uniform, PyTorch kaiming_uniform(a=sqrt(5)),
also for ONNX files exported by PyTorch; other ONNX files have none). Fans follow that
framework's own convention on the stored kernel.

columns: the initializer's bound (uniform, truncated normal's 2-sigma cut) or std (normal);
std ratio = weights' std / initializer's std; outside = fraction of weights beyond the bound,
the 2-sigma cut of a truncated normal or 3 sigma of a normal; best fit = the closest
(Kolmogorov-Smirnov distance) of glorot/he/lecun x uniform/normal/truncated normal, PyTorch's
default and the declared initializer.

verdict: at_init when the KS distance is under the critical value at alpha=1e-4, the std ratio
is within its 1e-4-level tolerance and no more weights lie outside than a fresh draw puts
there; trained otherwise; unknown below 64 weights or when no initializer is known. The best
fit never decides the verdict. Kernels over 1M weights are subsampled (seeded) for the KS test."""

EPILOG = examples(
    ("init --example", "per layer: trained, or still at its initializer?"),
    ("init model.h5 --layer conv1 -o conv1.png",
     "one layer, and its weights' histogram against the initializer's density"),
    ("init model.pt --json", "one JSON object, for scripts"),
)  # fmt: skip


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "init",
        help="are the weights still at their initializer, or trained?",
        usage=usage(SOURCE),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    add_source(parser)
    parser.add_argument("--layer", metavar="NAME", help="only this layer")
    files(
        parser.add_argument(
            "-o",
            "--output",
            metavar="FILE.png",
            help="write the histogram of the weights against the initializer's density and "
            "bounds: of --layer, or one panel per layer with a kernel (at most 48) without it",
        )
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"layers": [...]} and nothing else on stdout',
    )
    add_wide(parser)
    return parser


def run(args: argparse.Namespace, model: Model) -> None:
    from weightscope.analysis.init import analyze, kernel_tensor
    from weightscope.reporters.progress import progress

    if args.layer:
        layer = model.layer(args.layer)
        if kernel_tensor(layer) is None:
            raise WeightscopeError(
                f"{model.source}: layer {layer.name!r} ({layer.kind}) has no floating-point "
                "kernel to compare with an initializer"
            )
        layers = [layer]
    else:
        layers = [layer for layer in model.layers if kernel_tensor(layer) is not None]
    weights = [_kernel_bytes(layer) for layer in layers]
    reports = []
    for layer in progress(layers, weights, "comparing weights with initializers", args.json):
        report = analyze(layer, producer=model.producer)
        if report is not None:
            reports.append(report)
    if args.output:
        _write_figure(args, model, layers)
    if args.json:
        json.dump({"layers": [r.to_dict() for r in reports]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    _print_table(args, model, reports)


def _kernel_bytes(layer: Any) -> int:
    from weightscope.analysis.init import kernel_tensor

    tensor = kernel_tensor(layer)
    return 0 if tensor is None else tensor.size * 4


def _write_figure(args: argparse.Namespace, model: Model, layers: list[Any]) -> None:
    from weightscope.reporters.init import plot_init, plot_init_model

    if not layers:
        raise WeightscopeError(f"{model.source}: no layer with a floating-point kernel to plot")
    if args.layer:
        figure = plot_init(layers[0], producer=model.producer)
    else:
        figure = plot_init_model(model, layers)
    output = Path(args.output)
    try:
        with atomic_output(output, model) as temp:
            # the format from the name asked for (the temporary name keeps its suffix)
            figure.savefig(temp, dpi=100)
    except (OSError, ValueError) as exc:
        raise WeightscopeError(f"cannot write {args.output}: {exc}") from exc
    if not args.json:
        print(f"wrote {args.output}", file=sys.stderr)


def _print_table(args: argparse.Namespace, model: Model, reports: list[Any]) -> None:
    from weightscope.reporters.init_table import init_table

    console = terminal.stdout()
    console.print(init_table(model.source, reports, wide=terminal.whole_tables(console, args.wide)))
