"""``weightscope inspect``: one row per weight-bearing layer (kind, native -> canonical shape,
parameters, dtype, statistics), one layer's every tensor with ``--layer``, health flags with
``--health``, and one JSON object with ``--json``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from weightscope.cli import console as terminal
from weightscope.cli.options import SOURCE, Formatter, add_source, add_wide, examples, usage
from weightscope.gc_pause import paused_gc
from weightscope.model import Layer, Model, Tensor
from weightscope.reporters.progress import compute_stats


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "inspect",
        help="table of layers, layouts, parameter counts and weight statistics",
        usage=usage(SOURCE),
        description="One row per weight-bearing layer: kind, native -> canonical shape of its "
        "kernel, parameters, dtype and statistics; totals as the framework counts them.",
        epilog=examples(
            ("inspect --example", "the bundled digits CNN: one row per weight-bearing layer"),
            ("inspect model.h5 --layer conv1", "every tensor of one layer, with statistics"),
            ("inspect model.pt --health --json", "health flags per layer, as one JSON object"),
        ),
        formatter_class=Formatter,
    )
    add_source(parser)
    parser.add_argument("--layer", metavar="NAME", help="show every tensor of one layer")
    parser.add_argument("--json", action="store_true", help="print one JSON object (see README)")
    parser.add_argument(
        "--no-stats", action="store_true", help="skip statistics (reads no tensor data)"
    )
    parser.add_argument(
        "--health",
        action="store_true",
        help="check each layer for NaN/Inf, dead, duplicated or outsized filters and weights "
        "still at their initializer (reads every kernel whole)",
    )
    add_wide(parser)
    return parser


def _shown_tensors(model: Model, layer: Layer | None, as_json: bool) -> list[Tensor]:
    """The tensors whose statistics the output needs: every one in JSON, those of one layer,
    or those of the layers the table shows (a tensor that lies about its size fails here, not
    later)."""
    from weightscope.reporters.table import shown_layers

    if layer is not None:
        return layer.tensors
    if as_json:
        return [t for _, t in model.tensors()]
    return [t for x in shown_layers(model) for t in x.tensors]


def run(args: argparse.Namespace, model: Model) -> None:
    with paused_gc():  # a tensor's statistics and text are a few objects each, none cyclic
        _report(args, model)


def _report(args: argparse.Namespace, model: Model) -> None:
    with_stats = not args.no_stats
    layer = model.layer(args.layer) if args.layer else None
    if with_stats or args.health:
        compute_stats(_shown_tensors(model, layer, args.json), quiet=args.json)
    health = None
    if args.health:
        from weightscope.analysis.health import layer_health

        layers = [layer] if layer else model.layers
        health = [layer_health(x, producer=model.producer) for x in layers]
    if args.json:
        from weightscope.reporters.summary import write_json

        extras = None if health is None else [{"health": checked.to_dict()} for checked in health]
        write_json(sys.stdout, model, with_stats, None if layer is None else [layer], extras)
        return

    from weightscope.reporters.table import health_line, layer_detail, model_table

    console = terminal.stdout()
    wide = terminal.whole_tables(console, args.wide)
    if layer is not None:
        console.print(layer_detail(model, layer, with_stats, wide=wide))
        if health is not None:
            console.print(health_line(health[0]))
    else:
        console.print(model_table(model, with_stats, health, wide=wide))
