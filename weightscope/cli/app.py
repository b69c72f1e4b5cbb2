"""The ``weightscope`` command line."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from weightscope._version import __version__
from weightscope.cli.options import (
    COMMANDS,
    Formatter,
    ModelCommand,
    StandaloneCommand,
    command,
    limits_from,
    storage_options_from,
)
from weightscope.errors import WeightscopeError, printable
from weightscope.examples import example_path
from weightscope.formats.registry import load
from weightscope.output import check_target

EXIT_OK = 0
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130
"""128 + SIGINT, as shells report a command stopped by Ctrl-C."""

DESCRIPTION = """\
Inspect the weights of a trained neural network straight from its file, without importing
the framework that wrote it. Convolution kernels are shown next to their canonical layout
(out, in/groups, *kernel); dense kernels as (out, in).

Reads Keras .h5 (full model or weights only), .keras and .weights.h5 files, PyTorch
.pt/.pth/.bin/.ckpt (zip or legacy format, state dicts, checkpoints, whole modules),
TorchScript archives and .safetensors, ONNX .onnx files (external data included), GGUF .gguf
files (quantized blocks dequantized), and NumPy .npz/.npy archives (weightscope export's too),
never running code from a file."""

EPILOG = """\
examples:
  weightscope inspect --example                 the bundled digits CNN
  weightscope inspect model.h5 --layer conv2d   every tensor of one layer, with statistics
  weightscope inspect model.keras --json        one JSON object, for scripts
  weightscope inspect model.pt --health         NaN/Inf, dead, duplicated filters, still at init?
  weightscope export model.h5 -o w.npz          canonical tensors as <layer>/<role> arrays
  weightscope inspect w.npz                     an export (or any NumPy .npz/.npy) read back
  weightscope plot model.pt --layer conv1 -o k.png
                                                kernel slices: one row per filter, one column per
                                                input channel
  weightscope init model.h5                     trained, or still at the initializer? per layer
  weightscope params model.onnx                 parameter counts checked against the formulas
  weightscope explain --example conv1 --demo    what one layer computes, with its own numbers
  weightscope report model.h5 -o report.html    one self-contained page with all of the above
  weightscope compare model.h5 model.onnx       did the port keep every kernel? (exit 1 if not)
  weightscope layouts                           native layouts of every framework, and canonical
  weightscope scan models/ -o zoo.parquet       every model under a folder into one table, with
                                                health flags, in parallel (or --dask ADDRESS)
  weightscope limits                            the reader limits that --limit NAME=VALUE raises
  weightscope completion bash                   tab completion for bash (or zsh, fish)

Each command's --help shows its options and examples.

exit status: 0 on success, 2 when a file cannot be read (one line on stderr says why)."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with ``only`` the parser of that one command (what running
    it needs: the other commands' modules are then not imported)."""
    parser = argparse.ArgumentParser(
        prog="weightscope",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    parser.add_argument("--version", action="version", version=f"weightscope {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for name in COMMANDS if only is None else (only,):
        command(name).add_parser(commands)
    return parser


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of the command ``name``, whose usage its errors print."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and name in action.choices:
            chosen: argparse.ArgumentParser = action.choices[name]
            return chosen
    return parser


def _source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Path | str:
    if args.example and args.file:
        parser.error("give either FILE or --example, not both")
    if args.example:
        return example_path()
    if args.file is None:
        parser.error("FILE is required (or --example for the bundled model)")
    return args.file if isinstance(args.file, str) else Path(args.file)  # a URL stays a string


def _named_command(argv: Sequence[str]) -> str | None:
    """The command ``argv`` names, if its first operand is one (the top level takes no option
    with a value, so that operand is the command)."""
    first = next((arg for arg in argv if not arg.startswith("-")), None)
    return first if first in COMMANDS else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(only=_named_command(argv))
    args = parser.parse_args(argv)
    chosen = command(args.command) if args.command in COMMANDS else None
    if isinstance(chosen, StandaloneCommand):
        standalone = chosen
        return _guarded(lambda: int(standalone.main(args)), args.command, args.debug)
    source = _source(args, subparser(parser, args.command))
    return _guarded(lambda: _run_on_model(args, source, chosen), str(source), args.debug)


def _run_on_model(args: argparse.Namespace, source: Path | str, chosen: object) -> int:
    prepare = getattr(chosen, "prepare", None)
    if prepare is not None:  # the command settles its arguments before the file is read
        prepare(args)
    output = getattr(args, "output", None)
    if output:  # a folder that cannot be written to is found before the reading, not after
        check_target(Path(output), [source] if isinstance(source, Path) else [])
    options = storage_options_from(args)
    with load(source, limits=limits_from(args), storage_options=options) as model:
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
    except KeyboardInterrupt:
        return _interrupted()
    except Exception as exc:
        return _fail(f"{label}: unexpected {type(exc).__name__}: {exc}", debug)


def _fail(message: str, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"weightscope: {printable(' '.join(message.split()))}", file=sys.stderr)
    return EXIT_ERROR


def _interrupted() -> int:
    print("weightscope: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def run() -> None:
    try:
        status = main()
    except KeyboardInterrupt:  # while parsing or importing, before any command's guard
        status = _interrupted()
    sys.exit(status)


if __name__ == "__main__":
    run()
