"""``weightscope report FILE -o report.html``: one self-contained HTML page about the model."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from weightscope.cli.options import SOURCE, Formatter, add_source, examples, files, usage
from weightscope.model import Model
from weightscope.output import atomic_output, check_output


def add_parser(commands: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        "report",
        help="write one self-contained HTML page: table, parameters, init verdicts, every layer",
        usage=usage(f"{SOURCE} -o OUT.html"),
        epilog=examples(
            ("report --example -o report.html", "the bundled model's page"),
            ("report model.pt -o report.html --no-stats", "structure only: reads no weights"),
        ),
        formatter_class=Formatter,
        description="Write one HTML page about the model: the summary table (with min, max and "
        "health flags), the parameter verification, the initializer verdicts and, for every "
        "layer that holds weights, its checks, its tensors' statistics and its figures (kernel "
        "slices or matrix, the histogram against the initializer, or of the values where no "
        "initializer check applies). The page is self-contained "
        "(figures embedded as PNG, inline style, no scripts, nothing loaded from elsewhere): "
        "open it in any browser or send it as one file.",
    )
    add_source(parser)
    files(
        parser.add_argument(
            "-o",
            "--output",
            required=True,
            type=Path,
            metavar="OUT.html",
            help="the HTML page to write (replaced if it exists, never onto the model file)",
        )
    )
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
    check_output(target, model)
    page = report_html(model, with_stats=not args.no_stats, processes=min(2, _cpus()))
    with atomic_output(target, model) as temp:
        temp.write_bytes(page.encode("utf-8"))
    figures = page.count("<img ")
    print(
        f"wrote report of {len(model.layers)} layers with {figures} figures to {target}",
        file=sys.stderr,
    )


def _cpus() -> int:
    """CPUs this process may run on (the report draws with a second process where two are)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
