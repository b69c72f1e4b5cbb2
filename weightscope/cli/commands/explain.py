"""``weightscope explain FILE LAYER [--demo]``: what one layer computes, in plain language and
from its own numbers; ``--demo`` works one output value out with the real weights.

``FILE`` is optional (``--example`` stands for it), so the positionals are read here rather than
through ``add_source``: with ``--example`` a single positional is the layer, wherever
``--example`` stands on the command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from weightscope.cli.options import Formatter, add_reading_options, examples, files, usage
from weightscope.errors import WeightscopeError, printable, printable_lines
from weightscope.model import Model

LISTED_LAYERS = 40
"""Layer names listed when the one asked for does not exist."""

EPILOG = examples(
    ("explain --example conv1", "what the bundled model's first conv computes"),
    ("explain model.pt features.0 --demo", "one output value worked out, with the real weights"),
    ("explain --example dwconv2 --demo --channel 3 --position 2,2",
     "the demo for another filter and position"),
)  # fmt: skip


def _assign(namespace: argparse.Namespace) -> None:
    operands = list(getattr(namespace, "operands", None) or [])
    if namespace.example:
        namespace.file = Path(operands[0]) if len(operands) > 1 else None
        namespace.layer = operands[-1] if operands else None
    else:
        namespace.file = Path(operands[0]) if operands else None
        namespace.layer = operands[1] if len(operands) > 1 else None


class _Operands(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        operands = [values] if isinstance(values, str) else list(values or [])
        if len(operands) > 2:
            parser.error(f"expected FILE LAYER, got {len(operands)} arguments")
        namespace.operands = operands
        _assign(namespace)


class _Example(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        namespace.example = True
        _assign(namespace)


def _position(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a position like 1,1: {text!r}") from None


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "explain",
        help="what one layer computes, in plain language, from its own numbers",
        usage=usage("(FILE | --example) LAYER"),
        epilog=EPILOG,
        formatter_class=Formatter,
        description="A short account of what one layer computes, with that layer's numbers: "
        "how many kernels a filter holds and what each is applied to, what groups, depth "
        "multipliers and 1x1 kernels mean for it, how many weights it has and why. --demo "
        "takes a seeded random input and shows, with the real weights, that one output value "
        "is the sum of element-wise products of the kernel volume and the input patch, and the "
        "same number as the dot product of the two flattened (checked to agree within 1e-6).",
    )
    files(
        parser.add_argument(
            "operands",
            nargs="*",
            action=_Operands,
            metavar="FILE LAYER",
            help="model file and layer name (with --example: the layer name only)",
        )
    )
    parser.add_argument(
        "--example",
        nargs=0,
        action=_Example,
        help="use the bundled example model instead of FILE",
    )
    add_reading_options(parser)
    parser.add_argument("--demo", action="store_true", help="work one output value out")
    parser.add_argument(
        "--channel",
        type=int,
        metavar="O",
        help="output channel (filter), unit or batch-norm channel of the demo (default 0; the "
        "last filter of a grouped conv)",
    )
    parser.add_argument(
        "--position",
        type=_position,
        metavar="P",
        help="output position of the demo, comma-separated spatial indices (default 1,1)",
    )
    parser.set_defaults(file=None, layer=None, example=False, operands=[])
    return parser


def run(args: argparse.Namespace, model: Model) -> None:
    from weightscope.analysis.explain import ExplainError
    from weightscope.reporters.explain import explain

    names = [layer.name for layer in model.layers]
    if args.layer is None or args.layer not in names:
        shown = ", ".join(printable(n) for n in names[:LISTED_LAYERS])
        if len(names) > LISTED_LAYERS:
            shown += f", ... ({len(names)} in all)"
        problem = (
            "name a LAYER"
            if args.layer is None
            else f"no layer named {printable(repr(args.layer))}"
        )
        raise WeightscopeError(f"{model.source}: {problem}; layers: {shown or '(none)'}")
    layer = model.layer(args.layer)
    try:
        text = explain(layer, demo=args.demo, position=args.position, output_channel=args.channel)
    except ExplainError as exc:
        raise WeightscopeError(f"{model.source}: layer {printable(layer.name)}: {exc}") from None
    print(printable_lines(text))
