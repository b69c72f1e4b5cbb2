"""``weightscope report FILE -o report.html``: one self-contained HTML page about the model."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from weightscope.commands import add_source
from weightscope.errors import WeightscopeError
from weightscope.model import Model


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "report",
        help="write one self-contained HTML page: table, parameters, init verdicts, kernels",
        description="Write one HTML page about the model: the summary table, the parameter "
        "verification, the initializer verdicts and, for every convolution, its kernel slices "
        "and the histogram of its weights against their initializer. The page is self-contained "
        "(figures embedded as PNG, inline style, no scripts, nothing loaded from elsewhere): "
        "open it in any browser or send it as one file.",
    )
    add_source(parser)
    parser.add_argument("-o", "--output", required=True, type=Path, metavar="OUT.html")
    parser.add_argument(
        "--no-stats",
        action="store_true",
        help="structure only: summary and parameter counts, reads no tensor data",
    )
    return parser


def run(args: argparse.Namespace, model: Model) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a command line draws into files, never into a window

    from weightscope.reporters.html import report_html

    target: Path = args.output
    _check_target(target, model)
    page = report_html(model, with_stats=not args.no_stats)
    write_atomically(target, page.encode("utf-8"))
    figures = page.count("<img ")
    print(
        f"wrote report of {len(model.layers)} layers with {figures} figures to {target}",
        file=sys.stderr,
    )


def _check_target(target: Path, model: Model) -> None:
    if model.source is not None and target.exists() and os.path.samefile(target, model.source):
        raise WeightscopeError(f"{target}: refusing to overwrite the model being reported on")
    if target.is_dir():
        raise WeightscopeError(f"{target}: is a directory")
    if not target.parent.is_dir():
        raise WeightscopeError(f"{target}: output folder {target.parent} does not exist")


def write_atomically(target: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``target`` and rename it over ``target``, so
    the file appears only when complete."""
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".ws-", suffix=".html")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_name, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
