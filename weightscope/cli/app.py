"""The ``weightscope`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from weightscope._version import __version__
from weightscope.cli.options import (
    COMMANDS,
    ModelCommand,
    StandaloneCommand,
    add_source,
    command,
    limits_from,
)
from weightscope.errors import WeightscopeError, printable
from weightscope.examples import example_path
from weightscope.formats.registry import load
from weightscope.model import Model
from weightscope.reporters.progress import compute_stats

EXIT_OK = 0
EXIT_ERROR = 2

DESCRIPTION = """\
Inspect the weights of a trained neural network straight from its file, without importing
the framework that wrote it. Convolution kernels are shown next to their canonical layout
(out, in/groups, *kernel); dense kernels as (out, in).

Reads Keras .h5 (full model or weights only), .keras and .weights.h5 files, PyTorch
.pt/.pth/.bin/.ckpt (zip or legacy format, state dicts, checkpoints, whole modules),
TorchScript archives and .safetensors, and ONNX .onnx files (external data included), never
running code from a file."""

EPILOG = """\
examples:
  weightscope inspect --example              the bundled digits CNN
  weightscope inspect model.h5 --layer conv2d every tensor of one layer, with statistics
  weightscope inspect model.keras --json     one JSON object, for scripts
  weightscope inspect model.pt --health      NaN/Inf, dead, duplicated filters, still at init?
  weightscope export model.h5 -o w.npz       canonical tensors as <layer>/<role> arrays
  weightscope plot model.pt --layer conv1 -o k.png
                                             kernel slices: one row per filter, one column
                                             per input channel
  weightscope init model.h5                  trained, or still at the initializer? per layer
  weightscope params model.onnx              parameter counts checked against the formulas
  weightscope explain --example conv1 --demo what one layer computes, with its own numbers
  weightscope report model.h5 -o report.html one self-contained page with all of the above
  weightscope compare model.h5 model.onnx    did the port keep every kernel? (exit 1 if not)
  weightscope layouts                        native layouts of every framework, and canonical
  weightscope scan models/ -o zoo.parquet    every model under a folder into one table, with
                                             health flags, in parallel (or --dask ADDRESS)

exit status: 0 on success, 2 when a file cannot be read (one line on stderr says why)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightscope",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"weightscope {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    inspect = commands.add_parser(
        "inspect",
        help="table of layers, layouts, parameter counts and weight statistics",
        description="One row per weight-bearing layer: kind, native -> canonical shape of its "
        "kernel, parameters, dtype and statistics; totals as the framework counts them.",
    )
    add_source(inspect)
    inspect.add_argument("--layer", metavar="NAME", help="show every tensor of one layer")
    inspect.add_argument("--json", action="store_true", help="print one JSON object (see README)")
    inspect.add_argument(
        "--no-stats", action="store_true", help="skip statistics (reads no tensor data)"
    )
    inspect.add_argument(
        "--health",
        action="store_true",
        help="check each layer for NaN/Inf, dead, duplicated or outsized filters and weights "
        "still at their initializer (reads every kernel whole)",
    )

    export = commands.add_parser(
        "export",
        help="write every tensor in canonical layout to a .npz",
        description="Write each tensor, converted to canonical layout, as one array keyed "
        "'<layer name>/<role>' in a NumPy .npz (np.load reads it). Tensors without a canonical "
        "form are written as stored.",
    )
    add_source(export)
    export.add_argument("-o", "--output", required=True, metavar="OUT.npz", help="output file")
    for name in COMMANDS:
        command(name).add_parser(commands)
    return parser


def _source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path:
    if args.example and args.file:
        parser.error("give either FILE or --example, not both")
    if args.example:
        return example_path()
    if args.file is None:
        parser.error("FILE is required (or --example for the bundled model)")
    return Path(args.file)


def _run_inspect(args: argparse.Namespace, model: Model) -> None:
    with_stats = not args.no_stats
    layer = model.layer(args.layer) if args.layer else None
    if with_stats or args.health:
        tensors = layer.tensors if layer else [t for _, t in model.tensors()]
        compute_stats(tensors, quiet=args.json)
    health = None
    if args.health:
        from weightscope.analysis.health import layer_health

        layers = [layer] if layer else model.layers
        health = [layer_health(x, producer=model.producer) for x in layers]
    if args.json:
        from weightscope.reporters.summary import layer_to_dict, model_to_dict

        data = model_to_dict(model, with_stats)
        if layer is not None:
            data = {**data, "layers": [layer_to_dict(layer, with_stats)]}
        if health is not None:
            for entry, checked in zip(data["layers"], health, strict=True):
                entry["health"] = checked.to_dict()
        json.dump(data, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    from rich.console import Console

    from weightscope.reporters.table import health_line, layer_detail, model_table

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    if layer is not None:
        console.print(layer_detail(model, layer, with_stats))
        if health is not None:
            console.print(health_line(health[0]))
    else:
        console.print(model_table(model, with_stats, health))


def _run_export(args: argparse.Namespace, model: Model) -> None:
    from weightscope.reporters.npz import export_npz

    keys = export_npz(model, args.output)
    print(f"wrote {len(keys)} tensors in canonical layout to {args.output}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    chosen = command(args.command) if args.command in COMMANDS else None
    if isinstance(chosen, StandaloneCommand):
        standalone = chosen
        return _guarded(lambda: int(standalone.main(args)), args.command, args.debug)
    source = _source(args, parser)
    return _guarded(lambda: _run_on_model(args, source, chosen), str(source), args.debug)


def _run_on_model(args: argparse.Namespace, source: Path, chosen: object) -> int:
    with load(source, limits=limits_from(args)) as model:
        if args.command == "inspect":
            _run_inspect(args, model)
        elif args.command == "export":
            _run_export(args, model)
        else:
            assert isinstance(chosen, ModelCommand)
            chosen.run(args, model)
    return EXIT_OK


def _guarded(work: Callable[[], int], label: str, debug: bool) -> int:
    """Run ``work``; any failure becomes one line on stderr and exit status 2."""
    try:
        return work()
    except WeightscopeError as exc:
        return _fail(str(exc), debug)
    except KeyError as exc:  # an unknown --layer name
        return _fail(f"{label}: {exc.args[0]}", debug)
    except BrokenPipeError:
        sys.stderr.close()  # output piped into `head`: not an error
        return EXIT_OK
    except Exception as exc:
        return _fail(f"{label}: unexpected {type(exc).__name__}: {exc}", debug)


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"weightscope: {printable(' '.join(message.split()))}", file=sys.stderr)
    return EXIT_ERROR


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
