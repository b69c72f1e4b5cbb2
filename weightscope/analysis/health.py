"""Health flags of a layer, from its canonical tensors: NaN/Inf, dead filters, duplicated
filters, filters of unusually large norm, and a kernel still at its initializer.

A *filter* is one slice of the canonical kernel along its output axis: ``kernel[o]``, shape
``(in/groups, *k)`` for a conv, one row ``(in,)`` of a dense ``(out, in)``. The filter checks
need the whole kernel in memory; kernels over ``max_elements`` are not read for them and say so
in :attr:`LayerHealth.note` (their NaN/Inf count and init verdict, read in chunks, still hold).
An embedding table has no filters: its rows are tokens, and a row of zeros is the padding row
``nn.Embedding(padding_idx=...)`` keeps at zero, not a dead filter; only its NaN/Inf count and
init verdict are given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.kinds import Kind
from weightscope.model import Layer, Model, Tensor

if TYPE_CHECKING:
    from weightscope.analysis.init import InitReport

FLAGS = ("nan_inf", "dead_filters", "duplicate_filters", "large_norm", "at_init")
"""Every flag a layer can raise, in the order they are listed."""

DEAD_RELATIVE = 1e-3
"""A filter is dead when its L2 norm is zero or below this fraction of the median norm of the
layer's non-zero filters (a filter that contributes nothing next to its neighbours)."""

LARGE_RELATIVE = 10.0
"""A filter's norm is unusually large above this multiple of the median filter norm."""

MIN_FILTERS = 4
"""Fewer filters than this give no meaningful median: the relative checks are not made."""

MAX_ELEMENTS = 1 << 26
"""Largest kernel (elements) read whole for the filter checks: 256 MB of float32."""


@dataclass(frozen=True)
class LayerHealth:
    """What is wrong with one layer, if anything. Counts are None where the check was not
    made (:attr:`note` says why)."""

    layer: str
    kind: str
    nonfinite: int | None
    """NaN and Inf values over all the layer's tensors (None when no tensor holds real numbers)."""
    filters: int | None
    """Filters in the kernel that the filter checks looked at."""
    dead_filters: int | None
    duplicate_filters: int | None
    """Filters equal, value for value, to an earlier live filter of the same layer."""
    large_filters: int | None
    max_norm_ratio: float | None
    """Largest filter norm over the median filter norm."""
    init_verdict: str | None
    """``at_init``, ``trained`` or ``unknown`` (see ``weightscope init``); None without a kernel
    or an embedding table."""
    note: str | None = None

    @property
    def flags(self) -> list[str]:
        """The flags raised, in the order of :data:`FLAGS`."""
        raised = {
            "nan_inf": bool(self.nonfinite),
            "dead_filters": bool(self.dead_filters),
            "duplicate_filters": bool(self.duplicate_filters),
            "large_norm": bool(self.large_filters),
            "at_init": self.init_verdict == "at_init",
        }
        return [flag for flag in FLAGS if raised[flag]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "flags": self.flags,
            "nonfinite": self.nonfinite,
            "filters": self.filters,
            "dead_filters": self.dead_filters,
            "duplicate_filters": self.duplicate_filters,
            "large_filters": self.large_filters,
            "max_norm_ratio": (
                self.max_norm_ratio
                if self.max_norm_ratio is not None and math.isfinite(self.max_norm_ratio)
                else None
            ),
            "init_verdict": self.init_verdict,
            "note": self.note,
        }


@dataclass(frozen=True)
class _FilterChecks:
    filters: int
    dead: int
    duplicates: int
    large: int | None
    max_norm_ratio: float | None


def layer_health(
    layer: Layer,
    *,
    producer: str | None = None,
    max_elements: int = MAX_ELEMENTS,
    init: InitReport | None = None,
) -> LayerHealth:
    """Check one layer. ``producer`` is the model's (it decides whose initializer conventions
    apply to ONNX files; see :func:`weightscope.analysis.init.analyze`). ``init``: the layer's
    init check when the caller already made it (its verdict is taken, the kernel is not tested
    again)."""
    from weightscope.analysis.init import analyze, kernel_tensor

    kernel = kernel_tensor(layer)
    checks: _FilterChecks | None = None
    note: str | None = None
    if kernel is None and layer.kind is Kind.EMBEDDING:
        note = "an embedding table has rows (tokens), not filters: filter checks do not apply"
    elif kernel is None:
        note = f"no floating-point kernel ({layer.kind}): filter checks do not apply"
    elif kernel.size > max_elements:
        note = (
            f"kernel of {kernel.size:,} elements is over {max_elements:,}: filter checks "
            "not made (raise max_elements to make them)"
        )
    else:
        checks = _filter_checks(kernel)
        if checks.large is None and checks.filters < MIN_FILTERS:
            note = f"{checks.filters} filters: too few to compare norms (at least {MIN_FILTERS})"
        elif checks.large is None:
            note = "no finite non-zero filter: norms not compared"
    report = init if init is not None else analyze(layer, producer=producer)
    return LayerHealth(
        layer=layer.name,
        kind=layer.kind,
        nonfinite=_nonfinite(layer.tensors),
        filters=None if checks is None else checks.filters,
        dead_filters=None if checks is None else checks.dead,
        duplicate_filters=None if checks is None else checks.duplicates,
        large_filters=None if checks is None else checks.large,
        max_norm_ratio=None if checks is None else checks.max_norm_ratio,
        init_verdict=None if report is None else report.verdict,
        note=note,
    )


def model_health(model: Model, *, max_elements: int = MAX_ELEMENTS) -> list[LayerHealth]:
    """:func:`layer_health` for every layer of a :class:`~weightscope.model.Model`."""
    return [
        layer_health(layer, producer=model.producer, max_elements=max_elements)
        for layer in model.layers
    ]


def _nonfinite(tensors: list[Tensor]) -> int | None:
    counted = [t for t in tensors if t.has_stats]
    if not counted:
        return None
    return sum(t.stats().nan + t.stats().inf for t in counted)


def _filter_checks(kernel: Tensor) -> _FilterChecks:
    canonical = kernel.canonical()
    filters = canonical.reshape(canonical.shape[0], -1)
    finite = np.isfinite(filters).all(axis=1)
    norms = _norms(filters, finite)
    live_norms = norms[finite & (norms > 0)]
    reference = float(np.median(live_norms)) if live_norms.size else 0.0
    dead = finite & ((norms == 0) | (norms < DEAD_RELATIVE * reference))
    duplicates = _duplicates(filters, finite & ~dead)
    large: int | None = None
    ratio: float | None = None
    if filters.shape[0] >= MIN_FILTERS and reference > 0:
        large = int(np.count_nonzero(finite & (norms > LARGE_RELATIVE * reference)))
        ratio = float(live_norms.max() / reference)
    return _FilterChecks(
        filters=filters.shape[0],
        dead=int(np.count_nonzero(dead)),
        duplicates=duplicates,
        large=large,
        max_norm_ratio=ratio,
    )


def _norms(filters: np.ndarray, finite: np.ndarray) -> np.ndarray:
    """L2 norm of each finite filter (0 for the others). Each filter is divided by its largest
    magnitude before squaring: float64 weights over 1e154 would overflow, under 1e-162 vanish.
    A block of filters at a time (about 1 M values): the float64 copy of a 25 M-weight dense
    kernel whole was 200 MB."""
    norms = np.zeros(filters.shape[0], dtype=np.float64)
    step = max(1, NORM_BLOCK_ELEMENTS // max(1, filters.shape[1]))
    for start in range(0, filters.shape[0], step):
        block = slice(start, start + step)
        wide = filters[block].astype(np.float64)  # a copy, scaled in place
        wide[~finite[block]] = 0.0
        peak = np.maximum(wide.max(axis=1), -wide.min(axis=1))
        wide /= np.where(peak > 0, peak, 1.0)[:, None]
        np.square(wide, out=wide)
        norms[block] = peak * np.sqrt(wide.sum(axis=1))
    return norms


NORM_BLOCK_ELEMENTS = 1 << 20


def _duplicates(filters: np.ndarray, candidates: np.ndarray) -> int:
    """Filters among ``candidates`` equal to an earlier candidate, element for element."""
    seen: set[bytes] = set()
    repeated = 0
    for index in np.flatnonzero(candidates):
        key = (filters[index] + 0).tobytes()  # + 0 turns -0.0 into 0.0
        if key in seen:
            repeated += 1
        else:
            seen.add(key)
    return repeated
