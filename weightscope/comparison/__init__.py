"""Comparing two models: pair their layers (``matching``), name the layout transform of each
pair (``transforms``) and put it together (``engine``)."""

from weightscope.comparison.engine import compare

__all__ = ["compare"]
