"""The ``weightscope params`` table: a :class:`~weightscope.analysis.params.ParamsReport`
(the checks live in :mod:`weightscope.analysis.params`) as a rich table, its totals and notes."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.text import Text

from weightscope.analysis.params import FLAGGED, NO_FORMULA, OK, SHAPES_ONLY, ParamsReport
from weightscope.errors import printable
from weightscope.kinds import Kind
from weightscope.reporters.fit import Column, FitTable
from weightscope.reporters.table import counts_line

STATUS_STYLES = {OK: "green", FLAGGED: "bold red", SHAPES_ONLY: "yellow", NO_FORMULA: "dim"}


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def params_table(report: ParamsReport, wide: bool = False) -> RenderableType:
    """The per-layer table, the totals, and every flagged layer's reasons below it. On a narrow
    terminal the declared count, then the formula's terms, are left out first."""
    version = f" {report.framework_version}" if report.framework_version else ""
    version = f"  {report.format} ({report.framework}{version})"
    header = Text.assemble((printable(str(report.source)), "bold"), version)
    table = FitTable(
        [
            Column("Layer", name=True),
            Column("Kind", 1, name=True),
            Column("Stored", justify="right"),
            Column("Formula", 2, justify="right"),
            Column("Declared", 4, justify="right"),
            Column("Status"),
            Column("Formula terms", 3, wrap=True),
        ],
        wide=wide,
    )
    for layer in report.layers:
        style = "red" if layer.issues else ""
        kind = layer.kind
        if layer.kind == Kind.UNKNOWN and layer.class_name:
            kind = f"unknown ({layer.class_name})"
        table.add_row(
            Text(printable(layer.name), style=style),
            Text(printable(kind)),
            f"{layer.stored:,}",
            _count(layer.formula),
            _count(layer.declared),
            Text(layer.status, style=STATUS_STYLES[layer.status]),
            Text(layer.expression or "", style="dim"),
            style="on grey15" if layer.issues else None,
        )
    parts: list[RenderableType] = [header, table, totals(report)]
    flagged = report.flagged
    if flagged:
        lines = Text(f"{len(flagged)} layer(s) disagree with their configuration:", "bold red")
        for layer in flagged:
            lines.append(f"\n  {printable(layer.name)}: ", style="bold")
            lines.append(printable("; ".join(layer.issues)))
        parts.append(lines)
    notes = _notes(report)
    if notes:
        parts.append(notes)
    return Group(*parts)


def totals(report: ParamsReport) -> Text:
    text = counts_line(report.counts)
    with_formula = [layer for layer in report.layers if layer.formula is not None]
    if with_formula:
        stored = sum(layer.stored for layer in with_formula)
        text.append("\nBy formula: ", style="bold")
        text.append(f"{report.formula_total:,}")
        text.append(
            f" over {len(with_formula)} of {len(report.layers)} layers (stored there: {stored:,})"
        )
    if report.buffers:
        text.append("\nPyTorch parameters(): ", style="bold")
        text.append(
            f"{report.pytorch_parameters:,} (buffers: {report.buffers:,}: batch-norm moving "
            "mean and variance are buffers in PyTorch, non-trainable parameters in Keras)"
        )
    return text


def _notes(report: ParamsReport) -> Text | None:
    lines = []
    keras_in = any("Keras configs do not record" in d for x in report.layers for d in x.derived)
    if keras_in:
        lines.append(
            "Keras configs do not record input channels: they are taken from the stored kernel, "
            "so the formula checks the config's filters, kernel_size, use_bias, groups and "
            "depth_multiplier against the stored tensors."
        )
    if any(x.status == SHAPES_ONLY for x in report.layers):
        lines.append(
            "shapes only: the file records no config for the layer; the formula uses the stored "
            "shapes and checks only that they fit together."
        )
    if report.layers and all(x.declared is None for x in report.layers):
        lines.append("Declared: the file records no parameter count of its own.")
    return Text("\n".join(lines), style="dim") if lines else None
