"""Checks on a model that return dataclasses: health flags, the init check, the params check
and explain's arithmetic. Nothing here formats text or knows a file format.

The public entry points (also ``weightscope.check_init`` and friends):

>>> import weightscope
>>> model = weightscope.load(weightscope.example_path())
>>> [r.verdict for r in weightscope.check_init(model)]
['trained', 'trained', 'trained', 'trained']
>>> weightscope.check_params(model).flagged
[]
>>> [h.flags for h in weightscope.check_health(model)][:2]
[[], []]
"""

from __future__ import annotations

from collections.abc import Iterable

from weightscope.analysis.health import LayerHealth, model_health
from weightscope.analysis.init import InitReport, analyze_model
from weightscope.analysis.params import LayerParams, ParamsReport, verify
from weightscope.model import Layer, Model

__all__ = [
    "InitReport",
    "LayerHealth",
    "LayerParams",
    "ParamsReport",
    "check_health",
    "check_init",
    "check_params",
]


def check_init(model: Model, layers: Iterable[Layer] | None = None) -> list[InitReport]:
    """Is each kernel still at its initializer, or trained? One :class:`InitReport` per layer
    with a floating-point kernel (of ``model``, or the given ``layers``), verdict ``at_init``,
    ``trained`` or ``unknown`` with its evidence."""
    return analyze_model(model, layers)


def check_params(model: Model) -> ParamsReport:
    """Each layer's stored parameter count against the count its configuration implies, every
    disagreement with its reason, and the totals as Keras and PyTorch count them."""
    return verify(model)


def check_health(model: Model) -> list[LayerHealth]:
    """Per-layer health: NaN/Inf, dead, duplicated and outsized filters, and the init verdict."""
    return model_health(model)
