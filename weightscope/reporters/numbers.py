"""The one way the terminal tables print a measured number: three significant digits in a compact
scientific form (``-4.53e-2``, ``1.34e0``), the same width whatever the magnitude, so that a
column of statistics lines up and never needs cutting. Counts (parameters, fans, NaN) are exact
integers and are printed whole (``2,570``); fractions are percentages with the same three
significant digits (``30.6%``)."""

from __future__ import annotations

import math

DIGITS = 3
"""Significant digits of every measured number in a table."""


def number(value: float) -> str:
    """``value`` to :data:`DIGITS` significant digits: ``-4.53e-2``, ``2.31e-1``, ``1.34e0``,
    ``2.57e3``; ``0`` for zero, ``nan``, ``inf`` and ``-inf`` as such."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    mantissa, exponent = f"{value:.{DIGITS - 1}e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def percent(fraction: float) -> str:
    """``fraction`` as a percentage to :data:`DIGITS` significant digits: ``30.6%``, ``0.391%``,
    ``100%``, ``0%``; under 0.01 % in the form of :func:`number` (``4.21e-3%``)."""
    value = float(fraction) * 100.0
    if not math.isfinite(value):
        return number(value) + "%"
    if value == 0:
        return "0%"
    if abs(value) < 0.01:
        return number(value) + "%"
    rounded = float(f"{value:.{DIGITS - 1}e}")  # 99.96 -> 100: its digits count from there
    decimals = max(0, DIGITS - 1 - math.floor(math.log10(abs(rounded))))
    return f"{value:.{decimals}f}%"
