"""The terminal table of ``weightscope compare``: one row per pair of layers (and per unmatched
layer), the notes of each pair below it, then the verdict."""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.text import Text

from weightscope.comparison.engine import DIFFERENT, IDENTICAL, Comparison
from weightscope.comparison.transforms import IDENTITY, NONE, QUANTIZED
from weightscope.errors import printable
from weightscope.reporters.fit import Column, FitTable
from weightscope.reporters.numbers import number

VERDICT_STYLES = {IDENTICAL: "bold green", DIFFERENT: "bold red"}


def _transform(name: str, sqnr_db: float | None = None) -> Text:
    style = "green" if name == IDENTITY else "red" if name == NONE else "yellow"
    text = Text(name, style=style)
    if sqnr_db is not None:
        shown = f"{sqnr_db:.1f}" if math.isfinite(sqnr_db) else number(sqnr_db)
        text.append(f" {shown} dB", style="dim")
    return text


def comparison_table(comparison: Comparison, wide: bool = False) -> RenderableType:
    """One row per pair and per unmatched layer; on a narrow terminal the relative then the
    absolute difference, then the kind, are left out first: the transform is the answer."""
    table = FitTable(
        [
            Column("a", name=True),
            Column("b", name=True),
            Column("kind", 2, name=True),
            Column("transform", 1),
            Column("max_abs_diff", 3, justify="right"),
            Column("max_rel_diff", 4, justify="right"),
            Column("match"),
        ],
        wide=wide,
    )
    numbered: list[str] = []
    for pair in comparison.pairs:
        marker = ""
        if pair.notes:
            names = f"{printable(pair.a)} ~ {printable(pair.b)}"
            numbered.append(f"{names}: {printable(pair.note or '')}")
            marker = f" [{len(numbered)}]"
        table.add_row(
            Text(printable(pair.a)),
            Text(printable(pair.b)),
            Text(pair.kind),
            _transform(pair.transform, pair.sqnr_db),
            number(pair.max_abs_diff),
            number(pair.max_rel_diff),
            Text("yes" if pair.match else "no", style="green" if pair.match else "red")
            + Text(marker, style="dim"),
        )
    for side, unmatched in (("A", comparison.unmatched_a), ("B", comparison.unmatched_b)):
        for layer in unmatched:
            shape = "(" + ", ".join(map(str, layer.shape)) + ")"
            name = Text(printable(layer.name))
            cells = [name, Text("-")] if side == "A" else [Text("-"), name]
            table.add_row(
                *cells,
                Text(f"{layer.kind} {shape}"),
                "-",
                "-",
                "-",
                Text(f"only in {side}", style="red"),
            )
    header = Text()
    header.append("A: ", style="bold")
    header.append(f"{printable(comparison.a)}  {comparison.a_format}\n")
    header.append("B: ", style="bold")
    header.append(f"{printable(comparison.b)}  {comparison.b_format}")
    parts: list[RenderableType] = [header, table]
    lines = [f"[{i}] {text}" for i, text in enumerate(numbered, 1)]
    lines.extend(printable(note) for note in comparison.notes)
    if lines:
        parts.append(Text("\n".join(lines), style="dim"))
    tol = comparison.tolerance
    verdict = Text("verdict: ", style="bold")
    verdict.append(comparison.verdict, style=VERDICT_STYLES.get(comparison.verdict, "bold yellow"))
    verdict.append(f"  {_summary(comparison)}")
    verdict.append(
        f"\ntolerance: max|T(a) - b| <= atol + rtol * max|b| per tensor, "
        f"atol {tol.atol:g}, rtol {tol.rtol:g}",
        style="dim",
    )
    parts.append(verdict)
    return Group(*parts)


def _summary(comparison: Comparison) -> str:
    pairs = comparison.pairs
    identity = sum(p.match and p.transform == IDENTITY for p in pairs)
    quantized = sum(p.match and p.transform == QUANTIZED for p in pairs)
    transformed = sum(p.match and p.transform not in (IDENTITY, QUANTIZED) for p in pairs)
    differ = sum(not p.match for p in pairs)
    parts = [f"{len(pairs)} pairs: {identity} identical"]
    if quantized:
        parts.append(f"{quantized} quantized (within a quantization step; SQNR in dB)")
    if transformed:
        parts.append(f"{transformed} only under a transform")
    if differ:
        parts.append(f"{differ} differ")
    unmatched = len(comparison.unmatched_a) + len(comparison.unmatched_b)
    if unmatched:
        parts.append(f"{unmatched} unmatched")
    return ", ".join(parts)
