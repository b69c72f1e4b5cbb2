"""The terminal table of ``weightscope init``: one row per kernel compared with its initializer
(:class:`~weightscope.analysis.init.InitReport`), the verdict last, the evidence below."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text

from weightscope import initializers as inits
from weightscope.analysis.init import InitReport
from weightscope.errors import printable
from weightscope.initializers import Initializer
from weightscope.reporters.fit import Column, FitTable
from weightscope.reporters.numbers import number, percent

VERDICT_STYLES = {"at_init": "yellow", "trained": "green", "unknown": "dim"}

OUTSIDE_NOTE = (
    "outside: beyond the bound (uniform), the 2-sigma cut (truncated normal) or 3 sigma "
    "(normal); (default): not declared, the framework's default"
)


def _spread(init: Initializer | None) -> str:
    """``±2.72e-1`` for a uniform, ``std 5.00e-2, cut ±1.14e-1`` for a truncated normal,
    ``std 5.00e-2`` for a normal, ``= 0`` for a constant."""
    if init is None:
        return "-"
    mean = "" if init.loc == 0 else f"mean {number(init.loc)} "
    if init.distribution == inits.UNIFORM:
        return f"{number(init.loc)} ±{number(init.scale)}" if mean else f"±{number(init.scale)}"
    if init.distribution in (inits.NORMAL, inits.TRUNCATED_NORMAL) and init.std is not None:
        text = f"{mean}std {number(init.std)}"
        if init.distribution == inits.TRUNCATED_NORMAL and init.bound is not None:
            text += f", cut ±{number(init.bound)}"
        return text
    if init.distribution == inits.CONSTANT:
        return f"= {number(init.loc)}"
    return "-"


def _optional(value: float | None) -> str:
    return "-" if value is None else number(value)


def init_table(source: object, reports: Sequence[InitReport], wide: bool = False) -> RenderableType:
    """The table of ``reports`` under a line naming ``source``, the meaning of its columns and
    each layer's evidence. On a narrow terminal the fans, the best fit, the bound and the
    fraction outside are left out first; the verdict never is."""
    header = Text.assemble((printable(str(source)), "bold"), "  weights against their initializers")
    table = FitTable(
        [
            Column("Layer", name=True),
            Column("Kind", 1, name=True),
            Column("Initializer", 2, name=True),
            Column("fan in / out", 7, justify="right", label="fans"),
            Column("Bound / std", 5, justify="right", wrap=True, label="bound / std"),
            Column("Std ratio", 3, justify="right"),
            Column("Outside", 4, justify="right"),
            Column("Best fit (KS)", 6, wrap=True, label="best fit"),
            Column("Verdict"),
        ],
        wide=wide,
    )
    for report in reports:
        init = report.initializer
        name = "-"
        if init is not None:
            name = init.name if report.declared else f"{init.name} (default)"
        best = "-"
        if report.best_fit is not None:
            best = f"{report.best_fit.name} ({_optional(report.best_fit_ks)})"
        table.add_row(
            Text(printable(report.layer)),
            Text(printable(report.kind)),
            Text(printable(name)),
            f"{report.fan_in:,} / {report.fan_out:,}",
            _spread(init if init is not None and init.known else None),
            _optional(report.std_ratio),
            "-" if report.fraction_outside is None else percent(report.fraction_outside),
            best,
            Text(report.verdict, style=VERDICT_STYLES.get(report.verdict, "")),
        )
    parts: list[RenderableType] = [header, table]
    if not reports:
        parts.append(Text("no layer with a floating-point kernel or embedding table"))
        return Group(*parts)
    parts.append(Text(OUTSIDE_NOTE))
    for report in reports:
        parts.append(Text.assemble((printable(report.layer), "bold"), f": {report.evidence}"))
    return Group(*parts)
