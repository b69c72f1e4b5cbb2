"""The pieces every terminal table is made of: the number format of
``weightscope/reporters/numbers.py`` and the fitting table of ``weightscope/reporters/fit.py``
(the commands' tables at fixed widths are in tests/test_tables.py)."""

from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from weightscope.reporters.fit import ELLIPSIS, Column, FitTable, shorten_middle
from weightscope.reporters.numbers import number, percent

SCIENTIFIC = re.compile(r"-?[1-9]\.\d\de-?[1-9]?\d*")


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (-0.04534, "-4.53e-2"),
        (0.04351, "4.35e-2"),
        (1.341, "1.34e0"),
        (2570.0, "2.57e3"),
        (0.0099996, "1.00e-2"),  # rounding carries into the exponent
        (-9.996, "-1.00e1"),
        (1e-300, "1.00e-300"),
        (0.0, "0"),
        (-0.0, "0"),
        (math.nan, "nan"),
        (math.inf, "inf"),
        (-math.inf, "-inf"),
    ],
)
def test_number_has_three_significant_digits(value: float, text: str) -> None:
    assert number(value) == text


def test_numbers_parse_back_within_their_precision() -> None:
    values = np.random.default_rng(0).standard_normal(2000) * 10.0 ** np.arange(-20, 20, 0.02)
    for value in values:
        shown = number(float(value))
        assert SCIENTIFIC.fullmatch(shown), shown
        exponent = int(shown.split("e")[1])
        assert abs(float(shown) - value) <= 0.5 * 10.0 ** (exponent - 2) * (1 + 1e-12)
        assert len(shown) <= 9 or abs(exponent) >= 100


@pytest.mark.parametrize(
    ("fraction", "text"),
    [
        (0.306, "30.6%"),
        (0.5, "50.0%"),
        (0.00391, "0.391%"),
        (1.0, "100%"),
        (0.9996, "100%"),
        (0.0, "0%"),
        (4.21e-5, "4.21e-3%"),
    ],
)
def test_percent_has_three_significant_digits(fraction: float, text: str) -> None:
    assert percent(fraction) == text


@pytest.mark.parametrize("width", [1, 2, 5, 12, 20])
def test_shorten_middle_keeps_both_ends_and_the_width(width: int) -> None:
    name = "encoder.layers.11.self_attention.query_key_value"
    short = shorten_middle(Text(name, style="red"), width)
    assert short.cell_len == width
    if width > 1:
        head, tail = short.plain.split(ELLIPSIS)
        assert name.startswith(head) and name.endswith(tail)
        assert len(tail) >= len(head) >= len(tail) - 1
        assert short.style == "red"  # the start's, and the end's as a span
        assert any(span.style == "red" and span.end == len(short) for span in short.spans)


def test_shorten_middle_counts_wide_characters_in_cells() -> None:
    name = "層" * 10 + "/kernel"
    short = shorten_middle(Text(name), 12)
    assert cell_len(short.plain) <= 12 and short.plain.endswith("kernel")
    assert shorten_middle(Text("short"), 12).plain == "short"


COLUMNS = [
    Column("Layer", name=True),
    Column("Kind", 1),
    Column("Native", 9, label="native shape"),
    Column("mean", 4, justify="right"),
    Column("std", 5, justify="right"),
    Column("Verdict"),
]
ROWS = [
    ("encoder.layers.11.self_attention.query_key_value", "dense", "(96, 32) OI", "1.00e0"),
    ("x", "conv2d", "(8, 1, 3, 3) OIHW", "-4.53e-2"),
]


def render(width: int, terminal: bool = True, wide: bool = False) -> str:
    table = FitTable(COLUMNS, wide=wide)
    for name, kind, shape, value in ROWS:
        table.add_row(Text(name), kind, shape, value, value, Text("trained", style="green"))
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=terminal, color_system=None)
    console.print(table, crop=False)
    return out.getvalue()


def headers(text: str) -> list[str]:
    (line,) = [line for line in text.splitlines() if "┃" in line]
    return [cell.strip() for cell in line.split("┃")]


def test_a_table_that_fits_leaves_nothing_out() -> None:
    text = render(200)
    assert headers(text) == ["Layer", "Kind", "Native", "mean", "std", "Verdict"]
    assert ELLIPSIS not in text and "Not shown" not in text


def test_columns_are_left_out_least_important_first_and_named_in_a_note() -> None:
    text = render(90)
    assert headers(text) == ["Layer", "Kind", "mean", "std", "Verdict"]
    assert text.splitlines()[-1] == "Not shown at 90 columns: native shape (--wide shows them)."
    assert max(cell_len(line) for line in text.splitlines()) <= 90
    assert "encoder.layers.11.self_attention.query_key_value" in text  # room enough
    text = render(60)
    assert headers(text) == ["Layer", "Kind", "mean", "Verdict"]
    assert max(cell_len(line) for line in text.splitlines()) <= 60


@pytest.mark.parametrize("terminal", [True, False])
def test_names_are_shortened_in_the_middle_when_the_rest_must_stay(terminal: bool) -> None:
    text = render(40, terminal=terminal)  # a notebook or a file fits its width too
    assert headers(text) == ["Layer", "Kind", "Verdict"]
    lines = text.splitlines()
    assert max(cell_len(line) for line in lines) <= 40
    row = next(line for line in lines if line.startswith("encoder"))
    name = row.split("│")[0].strip()
    head, tail = name.split(ELLIPSIS)
    full = "encoder.layers.11.self_attention.query_key_value"
    assert full.startswith(head) and full.endswith(tail) and head and tail
    note = " ".join(" ".join(lines[lines.index(row) + 2 :]).split())
    assert note == (
        "Not shown at 40 columns: native shape, mean, std; names shortened in the middle "
        "(--wide shows all)."
    )


@pytest.mark.parametrize("terminal", [True, False])
def test_wide_keeps_every_column_whole_and_uncropped(terminal: bool) -> None:
    text = render(40, terminal=terminal, wide=True)
    assert headers(text) == ["Layer", "Kind", "Native", "mean", "std", "Verdict"]
    assert "encoder.layers.11.self_attention.query_key_value" in text
    assert ELLIPSIS not in text and "Not shown" not in text
    assert max(cell_len(line) for line in text.splitlines()) > 40  # printed whole, not cut


def test_a_row_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="2 cells for 6 columns"):
        FitTable(COLUMNS).add_row("a", "b")
