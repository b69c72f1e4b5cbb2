"""``weightscope scan PATH... -o OUT``: audit many model files into one table."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from weightscope.cli.options import (
    Formatter,
    add_reading_options,
    examples,
    files,
    limits_from,
    storage_options_from,
    usage,
)

DESCRIPTION = """\
Read every model file under PATH (files, folders walked recursively, globs such as
'runs/**/*.pt') into one table: one row per model (format, framework, parameter totals, how
many layers raise each health flag, the error if it could not be read) and one row per layer
(kind, canonical shape, parameters, statistics, init verdict, health flags). Files are
recognised by their content; a file named like a model (.h5, .keras, .pt, .pth, .ckpt, .onnx,
.safetensors, .gguf) that is not one is recorded with its error. The scan never stops on a bad file.

Health flags, per layer, from the canonical kernel (one filter = one output slice):
  nan_inf            NaN or Inf in any of the layer's tensors
  dead_filters       filters of zero norm, or under 1/1000 of the median filter norm
  duplicate_filters  filters equal, value for value, to another filter of the layer
  large_norm         filters whose norm is over 10x the median filter norm
  at_init            the kernel still looks drawn from its initializer (weightscope init)

The table is written as Parquet, CSV or JSON Lines, by OUT's extension. Run the same command
again and files whose size, modification time and SHA-256 are unchanged keep their rows
without being read; changed and new files are scanned, vanished ones dropped."""

EPILOG = examples(
    ("scan checkpoints/ -o zoo.parquet", "every model under a folder"),
    ("scan 'runs/**/*.pt' hub/ -o zoo.csv --jobs 8", "a glob and a folder, as CSV, 8 workers"),
    ("scan /shared/zoo -o zoo.parquet --dask tcp://scheduler:8786", "on a running Dask cluster"),
    notes="""\
then, in Python:
  import pandas as pd
  t = pd.read_parquet("zoo.parquet")
  t[t.record.eq("layer") & t.init_verdict.eq("at_init")].path.unique()

exit status: 0 when the table was written (files that could not be read are rows with an
error), 2 when it could not be, 130 when interrupted (the files done so far are written, and a
re-run goes on from there).""",
)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value < 0 or value != value:
        raise argparse.ArgumentTypeError(f"must be 0 (no limit) or more, not {text}")
    return value or None


def _size(text: str) -> int | None:
    from weightscope.limits import parse_value

    try:
        return parse_value(text) or None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "scan",
        help="many model files into one table (Parquet/CSV/JSONL), with health flags",
        usage=usage("PATH... -o OUT"),
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=Formatter,
    )
    files(
        parser.add_argument(
            "paths",
            nargs="+",
            metavar="PATH",
            help="file, folder or glob, or a URL or prefix (s3://bucket/models/, hf://org/repo)",
        )
    )
    files(
        parser.add_argument(
            "-o",
            "--output",
            required=True,
            metavar="OUT",
            help="the table: .parquet, .csv or .jsonl (an existing one is resumed)",
        )
    )
    parser.add_argument(
        "--jobs",
        "-j",
        type=_positive_int,
        metavar="N",
        help="worker processes (default: one per CPU)",
    )
    parser.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="run on the dask.distributed scheduler at ADDRESS (e.g. tcp://host:8786) instead "
        "of local workers; the workers read the files, so give paths they can see",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=600.0,
        metavar="SECONDS",
        help="give up on a file after this long, stopping its worker (default 600; 0: never)",
    )
    parser.add_argument(
        "--memory-per-job",
        type=_size,
        default=4 << 30,
        metavar="SIZE",
        help="memory a local worker may allocate, e.g. 2G (default 4G; 0: no limit); a file "
        "that needs more is recorded as an error",
    )
    parser.add_argument(
        "--force", action="store_true", help="read every file again, even unchanged ones"
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    add_reading_options(parser)
    return parser


def main(args: argparse.Namespace) -> int:
    from weightscope.scan import ScanInterrupted, scan

    bar = _ProgressBar(enabled=not (args.quiet or args.json) and sys.stderr.isatty())
    try:
        with bar:
            summary = scan(
                args.paths,
                args.output,
                jobs=args.jobs,
                dask=args.dask,
                timeout=args.timeout,
                memory_per_job=args.memory_per_job,
                force=args.force,
                limits=limits_from(args),
                storage_options=storage_options_from(args),
                progress=bar.advance,
                on_start=bar.start,
            )
    except ScanInterrupted as stopped:
        _report(stopped.summary, args.json)
        return 130
    except KeyboardInterrupt:  # while walking or hashing: nothing was read, nothing written
        print("weightscope: scan interrupted before any file was read", file=sys.stderr)
        return 130
    _report(summary, args.json)
    return 0


def _report(summary: Any, as_json: bool) -> None:
    if as_json:
        json.dump(summary.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    for path in summary.missing:
        print(f"weightscope: {path}: no such file or folder (or no match)", file=sys.stderr)
    if summary.previous_unreadable:
        print(
            f"weightscope: {summary.output} could not be resumed from and was rebuilt "
            f"({summary.previous_unreadable})",
            file=sys.stderr,
        )
    if as_json:
        return
    state = "interrupted; wrote" if summary.interrupted else "wrote"
    where = summary.output if summary.written else f"{summary.output} (unchanged)"
    print(
        f"{state} {counted(summary.models, 'model')} to {where}: "
        f"{counted(summary.scanned, 'file')} read, {summary.reused:,} unchanged; "
        f"{counted(summary.errors, 'error')}; "
        f"{counted(summary.flagged, 'model')} with flagged layers; "
        f"{_others(summary.not_models)} ({summary.seconds:.1f} s)",
        file=sys.stderr,
    )


def _others(count: int) -> str:
    if count == 0:
        return "no other files"
    return f"{counted(count, 'other file')} {'is not a model' if count == 1 else 'are not models'}"


def counted(count: int, noun: str) -> str:
    """``1 model``, ``2 models``, ``0 errors``: the count with its noun, plural unless one."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


class _ProgressBar:
    """A rich progress bar on stderr (files done, errors, rate, time left), when enabled."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._task: Any = None
        self._errors = 0
        self._context: AbstractContextManager[Any] = nullcontext()

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            from weightscope.cli import console as terminal

            self._bar = Progress(
                TextColumn("scanning"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("files  {task.fields[errors]} errors"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=terminal.stderr(),
                transient=True,
            )
            self._context = self._bar
        self._context.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._context.__exit__(*exc)

    def start(self, total: int) -> None:
        if self._bar is not None:
            self._task = self._bar.add_task("scan", total=total, errors=0)

    def advance(self, result: Any, done: int, total: int) -> None:
        if self._bar is None or self._task is None:
            return
        self._errors += result.error is not None
        self._bar.update(self._task, completed=done, errors=self._errors)
