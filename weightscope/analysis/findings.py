"""Everything ``weightscope report`` says about each layer, computed once per layer: the
parameter check, the health flags, the init check (with the subsample its histogram is drawn
from) and, for tensors no init check applies to (embeddings, recurrent kernels), the histogram
of their values. Each tensor's data is tested once: the health flags take the init check's
verdict rather than running it again."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from weightscope.analysis.health import MAX_ELEMENTS, LayerHealth, layer_health
from weightscope.analysis.init import InitReport, analyze_with_sample
from weightscope.analysis.params import LayerParams
from weightscope.chunking import DEFAULT_CHUNK_ELEMENTS
from weightscope.dtypes import is_float
from weightscope.model import Layer, Model, Tensor

HISTOGRAM_BINS = 80

MIN_HISTOGRAM_VALUES = 64
"""Tensors with fewer values get no histogram (their statistics say as much)."""


@dataclass(frozen=True)
class ValueHistogram:
    """Counts of a tensor's finite values in equal bins between its finite min and max."""

    role: str
    name: str
    edges: np.ndarray
    counts: np.ndarray
    finite: int
    """Values counted (NaN and Inf are not)."""


@dataclass(frozen=True)
class LayerFindings:
    """What the checks found in one layer."""

    layer: Layer
    params: LayerParams
    health: LayerHealth | None
    """None when tensor data was not read (``with_data=False``)."""
    init: InitReport | None
    init_sample: np.ndarray | None
    """The sorted subsample of the kernel that the init check tested (its histogram)."""
    histograms: list[ValueHistogram] = field(default_factory=list)
    """One per floating-point tensor of two or more axes, for layers without an init check."""


def weight_layers(model: Model) -> list[Layer]:
    """The layers that hold tensors (those without weights are listed in the table's notes)."""
    return [layer for layer in model.layers if layer.tensors]


def layer_findings(
    layer: Layer,
    params: LayerParams,
    *,
    producer: str | None = None,
    with_data: bool = True,
    max_elements: int = MAX_ELEMENTS,
) -> LayerFindings:
    """The findings of one layer; ``params`` is its entry of :func:`verify`'s report (shapes
    and configs only). ``with_data=False`` reads no tensor data: parameters only."""
    if not with_data:
        return LayerFindings(layer, params, None, None, None)
    checked = analyze_with_sample(layer, producer or layer.producer)
    init, sample = (None, None) if checked is None else checked
    health = layer_health(layer, producer=producer, max_elements=max_elements, init=init)
    histograms = []
    if init is None:
        histograms = [value_histogram(t) for t in layer.tensors if _histogram_applies(t)]
    return LayerFindings(layer, params, health, init, sample, histograms)


def _histogram_applies(tensor: Tensor) -> bool:
    return (
        tensor.has_stats
        and is_float(tensor.dtype)
        and len(tensor.native_shape) >= 2
        and tensor.size >= MIN_HISTOGRAM_VALUES
    )


def value_histogram(tensor: Tensor, bins: int = HISTOGRAM_BINS) -> ValueHistogram:
    """The histogram of a tensor's finite values, read chunk by chunk, between the finite min
    and max of its (cached) statistics."""
    stats = tensor.stats()
    low, high = stats.min, stats.max
    if not (np.isfinite(low) and np.isfinite(high)):
        low, high = -1.0, 1.0  # no finite value: empty counts
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, bins + 1)
    counts = np.zeros(bins, dtype=np.int64)
    for chunk in tensor.source.chunks(DEFAULT_CHUNK_ELEMENTS):
        values = np.asarray(chunk).reshape(-1)
        if values.dtype.kind != "f":
            values = values.astype(np.float64)
        counts += np.histogram(values[np.isfinite(values)], bins=bins, range=(low, high))[0]
    return ValueHistogram(tensor.role, tensor.name, edges, counts, int(counts.sum()))
