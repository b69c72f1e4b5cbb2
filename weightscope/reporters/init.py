"""Figures of a layer's weights against their initializer: the histogram of
:func:`plot_init` and the grid of :func:`plot_init_model`, drawn from the
:class:`~weightscope.analysis.init.InitReport` of :mod:`weightscope.analysis.init`; and the
histograms of :func:`plot_values` for tensors no initializer check applies to."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from weightscope import initializers as inits
from weightscope.analysis.findings import ValueHistogram
from weightscope.analysis.init import InitReport, analyze_with_sample, judged_tensor
from weightscope.model import Layer, Model

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


_COLOURS = {
    "weights": "#8fb3d9",
    "init": "#c0392b",
    "best": "#2c3e50",
    "bound": "#c0392b",
}

CURVE_HEADROOM = 2.0
"""The y axis reaches at most this many times the tallest bar: a density curve that peaks
higher (the initializer's, when the weights have spread far beyond it) is cut at the top and
its legend entry gives its peak, so the histogram keeps the height of the frame."""


def _bins(bins: int | None, n: int) -> int:
    """``bins`` or, by default, about ``2 sqrt(n)`` between 10 and 80."""
    if bins is not None:
        return bins
    return int(min(80, max(10, round(2.0 * math.sqrt(max(n, 1))))))


def _fit_curve(report: InitReport, x: np.ndarray) -> tuple[np.ndarray, str] | None:
    """The dotted curve that fits the weights, with its label, or None where the initializer's
    own curve already does: the best fit when it is another initializer and passes the KS test;
    else, when neither fits, the normal of the weights' own mean and std (the least bad of the
    candidates can be far from the data: drawn, it would peak nowhere near the histogram)."""
    init, best = report.initializer, report.best_fit
    if best is not None and report.best_fit_fits:
        if init is not None and best.name == init.name:
            return None
        return best.pdf(x), f"best fit: {best.name} (KS {report.best_fit_ks:.2g})"
    if report.verdict == "at_init" or not report.weights_std or report.weights_mean is None:
        return None
    mean, std = report.weights_mean, report.weights_std
    label = f"normal, the weights' mean {mean:.2g} and std {std:.2g}"
    if best is not None:
        label += f"\n(no initializer fits; closest {best.name}, KS {report.best_fit_ks:.2g})"
    return inits.normal_pdf((x - mean) / std) / std, label


def _draw(ax: Axes, report: InitReport, sample: np.ndarray, bins: int | None, small: bool) -> None:
    init = report.initializer
    bins = _bins(bins, sample.size)
    fontsize = 7 if small else 9
    low = float(sample[0]) if sample.size else -1.0
    high = float(sample[-1]) if sample.size else 1.0
    constant = sample.size > 0 and low == high
    limits = init.limits if init is not None and init.known else None
    if limits is not None:
        low, high = min(low, limits[0]), max(high, limits[1])
    pad = 0.08 * ((high - low) or max(abs(low), 1.0))
    tallest = 0.0
    if sample.size:
        heights, edges = np.histogram(
            sample,
            bins=1 if constant else bins,
            range=(float(sample[0]) - pad / 20, float(sample[0]) + pad / 20) if constant else None,
            density=True,
        )
        # one filled outline (a StepPatch), not a rectangle per bin: a fifth of the drawing time
        ax.stairs(
            heights,
            edges,
            fill=True,
            color=_COLOURS["weights"],
            label=f"weights (n={report.n:,})",
        )
        tallest = float(np.max(heights))
    x = np.linspace(low - pad, high + pad, 801)
    curves: list[tuple[np.ndarray, str, dict[str, object]]] = []
    if init is not None and init.known and init.distribution != inits.CONSTANT:
        style = {"color": _COLOURS["init"], "lw": 1.6}
        curves.append((init.pdf(x), f"{init.name} density", style))
    fit = _fit_curve(report, x)
    if fit is not None:
        curves.append((*fit, {"color": _COLOURS["best"], "lw": 1.2, "ls": ":"}))
    peak = max((float(np.max(y)) for y, _, _ in curves), default=0.0)
    top = max(tallest, min(peak, CURVE_HEADROOM * tallest) if tallest else peak) * 1.08
    for y, label, style in curves:
        high_point = float(np.max(y))
        if high_point > top:
            label += f" (peak {high_point:.3g}, cut)"
        ax.plot(x, y, label=label, **style)  # type: ignore[arg-type]
    if limits is not None:
        if init is not None and init.distribution == inits.CONSTANT:
            ax.axvline(limits[0], color=_COLOURS["bound"], lw=1.2, label=f"{init.name}")
        else:
            label = {
                inits.UNIFORM: "bound",
                inits.TRUNCATED_NORMAL: "2-sigma cut",
                inits.NORMAL: "3 sigma",
            }.get(init.distribution if init is not None else "", "limit")
            ax.axvline(limits[0], color=_COLOURS["bound"], lw=1.0, ls="--", label=f"±{label}")
            ax.axvline(limits[1], color=_COLOURS["bound"], lw=1.0, ls="--")
    ax.set_xlim(low - pad, high + pad)
    if top > 0:
        ax.set_ylim(0.0, top)
    ax.set_xlabel("weight", fontsize=fontsize)
    ax.set_ylabel("density", fontsize=fontsize)
    ax.tick_params(labelsize=fontsize - 1)
    name = "no known initializer" if init is None else init.name
    if init is not None and not report.declared:
        name += " (default)"
    ratio = "-" if report.std_ratio is None else f"{report.std_ratio:.2f}"
    outside = "-" if report.fraction_outside is None else f"{report.fraction_outside:.1%}"
    ax.set_title(
        f"{report.layer} · {name}\n{report.verdict} · std ratio {ratio} · outside {outside}",
        fontsize=fontsize + 1,
    )
    # beside the axes, never over the bars or the curves
    ax.legend(
        fontsize=fontsize - 1,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        frameon=False,
    )


def _require(layer: Layer, producer: str | None) -> tuple[InitReport, np.ndarray]:
    result = analyze_with_sample(layer, producer)
    if result is None:
        raise ValueError(
            f"layer {layer.name!r} ({layer.kind}) has no floating-point kernel or embedding "
            "table to compare with an initializer"
        )
    return result


def plot_init(
    layer: Layer,
    *,
    bins: int | None = None,
    ax: Axes | None = None,
    producer: str | None = None,
    figsize: tuple[float, float] = (8.5, 4.2),
    checked: tuple[InitReport, np.ndarray] | None = None,
) -> Figure:
    """Histogram (density) of ``layer``'s kernel with its initializer's density and its bound
    lines (``±bound`` for uniform, the 2-sigma cut of a truncated normal, ``±3 sigma`` of a
    normal), dotted the best fit where it is another initializer that fits, or the normal of the
    weights' own mean and std where no initializer does; the legend stands beside the axes. The
    title gives the layer, the initializer, the verdict, the std ratio and the fraction outside.
    ``bins`` defaults to about ``2 sqrt(n)``, between 10 and 80. Draws on ``ax`` when given (and
    returns its figure). ``checked``: the ``(report, sorted sample)`` that
    :func:`~weightscope.analysis.init.analyze_with_sample` returned for the layer, so that the
    weights are not read and tested again. Raises ``ValueError`` for a layer without a
    floating-point kernel or embedding table."""
    report, sample = _require(layer, producer) if checked is None else checked
    figure: Figure
    if ax is None:
        from weightscope.reporters.figures import NotebookFigure

        figure = NotebookFigure(figsize=figsize)
        ax = figure.add_axes((0, 0, 1, 1))
        _draw(ax, report, sample, bins, small=False)
        _place_beside_legend(figure, ax, fontsize=8)
    else:
        figure = _root_figure(ax)
        _draw(ax, report, sample, bins, small=False)
    return figure


def _place_beside_legend(figure: Figure, ax: Axes, *, fontsize: float) -> None:
    """Size ``ax`` within ``figure`` by hand, leaving room on the right for its legend (whose
    width is estimated from its longest line): a constrained layout would draw the figure once
    more to measure it, a third of the cost of a report's histogram."""
    legend = ax.get_legend()
    labels = [] if legend is None else [text.get_text() for text in legend.get_texts()]
    longest = max((len(line) for label in labels for line in label.splitlines()), default=0)
    legend_in = longest * 0.5 * fontsize / 72 + 0.6
    width, height = figure.get_size_inches()
    left, bottom, top = 0.75, 0.55, 0.6
    right = min(legend_in + 0.15, width / 2)
    ax.set_position(
        (
            left / width,
            bottom / height,
            (width - left - right) / width,
            (height - bottom - top) / height,
        )
    )


def _root_figure(ax: Axes) -> Figure:
    figure = ax.get_figure(root=True) if hasattr(ax, "get_figure") else ax.figure
    assert figure is not None
    return figure  # type: ignore[return-value]


MAX_PANELS = 48


def plot_init_model(
    model: Model,
    layers: Sequence[Layer] | None = None,
    *,
    bins: int | None = None,
    columns: int = 3,
) -> Figure:
    """One :func:`plot_init` panel per layer with a kernel (at most :data:`MAX_PANELS`)."""
    from weightscope.reporters.figures import NotebookFigure

    chosen = [
        layer
        for layer in (model.layers if layers is None else layers)
        if judged_tensor(layer) is not None
    ]
    if not chosen:
        raise ValueError(
            "no layer with a floating-point kernel or embedding table to compare with an "
            "initializer"
        )
    shown = chosen[:MAX_PANELS]
    columns = max(1, min(columns, len(shown)))
    rows = math.ceil(len(shown) / columns)
    figure = NotebookFigure(figsize=(5.6 * columns, 3.2 * rows), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    for ax, layer in zip(axes, shown, strict=False):
        report, sample = _require(layer, model.producer)
        _draw(ax, report, sample, bins, small=True)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    if len(chosen) > len(shown):
        figure.suptitle(f"first {len(shown)} of {len(chosen)} layers with a kernel")
    return figure


def plot_values(
    layer: Layer,
    histograms: Sequence[ValueHistogram],
    *,
    figsize: tuple[float, float] = (8.5, 3.6),
) -> Figure:
    """The values of the tensors of ``layer`` that no init check applies to (an embedding table,
    the kernels of a recurrent layer), from their :class:`ValueHistogram` (see
    :func:`weightscope.analysis.findings.value_histogram`): one density outline per tensor, so
    tensors of different sizes compare, the legend beside the axes."""
    from weightscope.reporters.figures import NotebookFigure

    figure = NotebookFigure(figsize=figsize)
    ax = figure.add_axes((0, 0, 1, 1))
    one = len(histograms) == 1
    for index, histogram in enumerate(histograms):
        widths = np.diff(histogram.edges)
        density = histogram.counts / (max(histogram.finite, 1) * widths)
        colour = _COLOURS["weights"] if one else _SERIES[index % len(_SERIES)]
        ax.stairs(
            density,
            histogram.edges,
            fill=one,
            color=colour,
            lw=1.2,
            label=f"{histogram.role} (n={histogram.finite:,})",
        )
    ax.set_xlabel("value", fontsize=9)
    ax.set_ylabel("density", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.set_ylim(bottom=0.0)
    ax.set_title(f"{layer.name} · {layer.kind_label} · values (no init check applies)", fontsize=10)
    ax.legend(
        fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False
    )
    _place_beside_legend(figure, ax, fontsize=8)
    return figure


_SERIES = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860")
