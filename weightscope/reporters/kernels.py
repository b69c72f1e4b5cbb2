"""Kernel-slice figures of one conv or dense layer (``weightscope plot``, ``Layer.plot_kernels``).

Everything is drawn from the CANONICAL kernel ``(out, in/groups, *k)`` (dense ``(out, in)``) with
matplotlib's object API (``matplotlib.figure.Figure``, no pyplot state), so it works headless and
in Jupyter. A figure is one image (plus a colorbar), however many slices it shows: the grid of
slices is assembled into one 2-D array with 1-pixel NaN separators and drawn with one ``imshow``.

Views:

- ``slices``: one row per output filter, one column per input channel (within the filter's group),
  each cell the ``kh x kw`` slice ``w[o, i]``; one diverging colour scale centred on zero,
  ``+-max|w|`` of the whole layer. 1-D kernels give ``1 x k`` strips, 3-D kernels one depth slice,
  1x1 and dense kernels one ``out x in`` matrix. A grid of one column (a depthwise kernel, a
  first layer with one input channel) or one row is wrapped into a near-square arrangement, its
  cells in reading order, each row labelled with the index of its first cell.
- ``rgb``: kernels with exactly 3 input channels, each filter as a colour image.
- ``norms``: the L2 norm of every slice as an ``out x in_total`` heatmap, each filter's channels
  at their absolute input position (blank outside its group), so groups show as blocks.

Every figure is laid out to fill its frame: small grids get up to :data:`MAX_SCALE` pixels per
weight; a matrix (1x1, dense, norms) far wider than tall, or taller than wide, is drawn with
non-square pixels so that neither side is over :data:`MAX_ASPECT` times the other, and one too
large to see whole is sampled evenly along each axis (the figure says which rows and columns);
tick labels are thinned to at least :data:`TICK_GAP` font sizes apart, so they never overlap.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize

from weightscope.errors import WeightscopeError, printable
from weightscope.model import Layer, Tensor
from weightscope.reporters.figures import NotebookFigure

VIEWS = ("slices", "rgb", "norms")
RGB_SCALES = ("filter", "layer")
DIVERGING = "RdBu_r"
SEQUENTIAL = "viridis"
SEPARATOR = "#9a9a9a"
"""Colour of the 1-pixel separators (NaN) between slices: a grey neither end of RdBu_r uses."""

DEFAULT_LIMITS = {"slices": (32, 16), "matrix": (512, 512), "rgb": (256, 3), "norms": (1024, 1024)}
"""Default (filters, channels) shown when neither ``all`` nor a selection is given: the first
ones of a grid of slices, evenly sampled rows and columns of a matrix (matrix and norms views)."""

SAMPLED_MODES = ("matrix", "norms")

KERNEL_ROLES = ("kernel", "depthwise_kernel")
"""Tensors plotted when no ``role`` is given, in order of preference (a separable conv has no
``kernel``: its depthwise half is shown; ask for ``role="pointwise_kernel"`` for the other)."""

DPI = 100
TARGET_PX = 800
"""The longer side of the image aims at this many pixels; each weight gets a whole number of
pixels (at least one, at most ``MAX_SCALE``) up to ``MAX_PX``, beyond which the image is
downsampled."""
MAX_PX = 4096
MAX_SCALE = 40
"""Most figure pixels per weight (16 3x3 slices are drawn 600 pixels wide), except that the
longer side of the image gets at least ``MIN_PX``: never a stamp in a frame sized for its
caption."""
MIN_PX = 400
MAX_ASPECT = 3.0
"""Matrix and norms views: neither side of the drawn image over this many times the other (a
dense ``10 x 256`` kernel gets pixels 26 high and 3 wide rather than a 30-pixel stripe)."""
MAX_TICKS = 16
TICK_GAP = 2.0
"""Tick labels are at least this many font sizes apart, centre to centre."""
FAST_PNG_PIXELS = 1_000_000
FONT = 8

Selection = slice | Sequence[int] | str | None


class KernelFigure(NotebookFigure):
    """The kernel figure (it shows itself in Jupyter), with what it drew kept for inspection."""

    shown: str = ""
    """What the figure shows, in words (``all 16 filters x all 16 input channels``)."""
    values: np.ndarray | None = None
    """The array drawn, before colouring: weights (slices view, NaN between the cells), norms
    (NaN outside a filter's group) or, in the rgb view, the RGBA colours in [0, 1]."""
    mappable: ScalarMappable | None = None
    """The colour map and limits of ``values`` (``mappable.get_clim()``); None in the rgb view."""

    def savefig(self, fname: Any, **kwargs: Any) -> None:
        """:meth:`matplotlib.figure.Figure.savefig`; a large PNG is compressed with zlib level 1
        (unless ``pil_kwargs`` says otherwise): for a figure of random-looking weights level 6
        takes twice as long for a file a few percent smaller."""
        if "pil_kwargs" not in kwargs and _format(fname, kwargs.get("format")) == "png":
            width, height = self.get_size_inches() * (kwargs.get("dpi") or self.dpi)
            level = 1 if width * height > FAST_PNG_PIXELS else 6
            kwargs["pil_kwargs"] = {"compress_level": level}
        super().savefig(fname, **kwargs)


def _format(fname: Any, fmt: str | None) -> str:
    if fmt:
        return fmt.lower()
    if isinstance(fname, (str, os.PathLike)):
        suffix = os.path.splitext(os.fspath(fname))[1]
        if suffix:
            return str(suffix[1:]).lower()
    return str(matplotlib.rcParams["savefig.format"]).lower()


@dataclass
class _Kernel:
    layer: Layer
    tensor: Tensor
    weights: np.ndarray
    """The canonical kernel as floats, ``(out, in_per_group, *k)`` or ``(out, in)``."""
    groups: int

    @property
    def out(self) -> int:
        return int(self.weights.shape[0])

    @property
    def in_per_group(self) -> int:
        return int(self.weights.shape[1])

    @property
    def in_total(self) -> int:
        return self.in_per_group * self.groups

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.weights.shape[2:])

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.in_per_group == 1

    def describe(self) -> str:
        layer = self.layer
        shape = tuple(self.weights.shape)
        text = f"{printable(layer.name)}  |  {layer.kind}  |  canonical kernel {shape} "
        text += str(self.tensor.canonical_layout)
        if self.groups > 1:
            text += f"  |  groups={self.groups}"
        if self.tensor.role != "kernel":
            text += f"  |  tensor {self.tensor.role}"
        if self.tensor.quantization is not None:
            text += f"  |  {self.tensor.dtype} dequantized ({self.tensor.quantization.granularity})"
        elif self.tensor.dtype.startswith(("int", "uint")):
            text += f"  |  stored {self.tensor.dtype} values (not dequantized)"
        if layer.inferred and layer.note:
            text += f"\ninferred {printable(layer.note)}"
        return text


def plot_kernels(
    layer: Layer,
    *,
    filters: Selection = None,
    channels: Selection = None,
    depth: int | None = None,
    view: str = "slices",
    all: bool = False,
    max_filters: int | None = None,
    max_channels: int | None = None,
    role: str | None = None,
    rgb_scale: str = "filter",
) -> KernelFigure:
    """The kernel figure of one conv or dense layer, as a matplotlib Figure.

    ``filters``/``channels`` select output filters and input channels: a slice, a list of
    indices, or a string (``"0:16"``, ``"0:64:2"``, ``"3"``, ``"0,5,9"``). In the ``slices`` and
    ``rgb`` views a channel is the input channel within the filter's group (canonical axis 1); in
    the ``norms`` view it is the absolute input channel. Without a selection, a large layer shows
    its first ``max_filters x max_channels`` (by default 32 x 16 slices, 512 x 512 for a 1x1 or
    dense matrix, 256 RGB filters, 1024 x 1024 norms) and the figure says so; ``all=True`` shows
    everything. ``depth`` picks the depth slice of a 3-D kernel (default the middle one).
    ``view`` is ``slices``, ``rgb`` (3 input channels: each filter as a colour image, scaled per
    ``filter`` or over the whole ``layer`` by ``rgb_scale``) or ``norms``. ``role`` picks the
    tensor (default ``kernel``, or ``depthwise_kernel`` for a separable conv).

    Raises :class:`~weightscope.errors.WeightscopeError` (one line) for layers without a kernel,
    kernels without a canonical form, and options that do not apply.
    """
    if view not in VIEWS:
        raise WeightscopeError(f"unknown view {view!r}; choose one of {', '.join(VIEWS)}")
    if rgb_scale not in RGB_SCALES:
        raise WeightscopeError(
            f"unknown rgb_scale {rgb_scale!r}; choose one of {', '.join(RGB_SCALES)}"
        )
    for name, value in (("max_filters", max_filters), ("max_channels", max_channels)):
        if value is not None and value < 1:
            raise WeightscopeError(f"{name} must be at least 1, not {value}")
    kernel = _read_kernel(layer, role)
    show_all = all
    limits = _Limits(show_all, max_filters, max_channels)
    if view == "norms":
        if depth is not None:
            raise _error(layer, "depth does not apply to the norms view (norms cover all of k)")
        return _norms_figure(kernel, filters, channels, limits)
    weights, depth_note = _depth_slice(kernel, depth)
    if view == "rgb":
        return _rgb_figure(kernel, weights, filters, channels, limits, depth_note, rgb_scale)
    return _slices_figure(kernel, weights, filters, channels, limits, depth_note)


# --------------------------------------------------------------------------------------------
# The kernel and the selection


def _error(layer: Layer, problem: str) -> WeightscopeError:
    return WeightscopeError(" ".join(f"layer {layer.name!r} ({layer.kind}): {problem}".split()))


def _read_kernel(layer: Layer, role: str | None) -> _Kernel:
    roles = [t.role for t in layer.tensors]
    if role is None:
        role = next((r for r in KERNEL_ROLES if r in roles), None)
        if role is None:
            held = ", ".join(roles) or "no tensors"
            raise _error(layer, f"has no kernel to plot (it holds: {held})")
    elif role not in roles:
        raise _error(layer, f"has no {role!r} tensor (it holds: {', '.join(roles)})")
    tensor = layer.tensor(role)
    if tensor.native_layout is None or tensor.canonical_shape is None:
        raise _error(
            layer,
            f"its {role} {tensor.name!r} {tensor.native_shape} has no canonical layout, so its "
            "output and input axes are not known",
        )
    if not tensor.has_stats:
        raise _error(layer, f"its {role} holds {tensor.dtype} values, not real numbers")
    if len(tensor.canonical_shape) not in (2, 3, 4, 5):
        raise _error(
            layer,
            f"its {role} has canonical shape {tensor.canonical_shape} "
            f"({tensor.canonical_layout}): not a conv (out, in, *k) or dense (out, in) kernel",
        )
    try:
        weights = np.asarray(tensor.canonical())
        if weights.dtype != np.float64:
            weights = weights.astype(np.float32, copy=False)
    except (TypeError, ValueError) as exc:
        raise _error(layer, f"its {role} cannot be read as numbers: {exc}") from exc
    groups = 1 if role == "pointwise_kernel" or weights.ndim == 2 else max(1, layer.groups)
    if weights.shape[0] % groups:
        groups = 1  # an inconsistent record: show the kernel ungrouped rather than fail
    return _Kernel(layer, tensor, weights, groups)


@dataclass
class _Limits:
    show_all: bool
    max_filters: int | None
    max_channels: int | None

    def get(self, mode: str) -> tuple[int | None, int | None]:
        if self.show_all:
            return None, None
        filters, channels = DEFAULT_LIMITS[mode]
        return (
            filters if self.max_filters is None else self.max_filters,
            channels if self.max_channels is None else self.max_channels,
        )


@dataclass
class _Axis:
    """The indices shown along one axis of the figure and how they were chosen."""

    indices: np.ndarray
    total: int
    how: str
    """``all``, ``default`` (cut to the default limit: the first ones), ``sampled`` (cut to the
    default limit: evenly spaced ones) or ``selected``."""

    @property
    def cut(self) -> bool:
        return self.how in ("default", "sampled")

    def describe(self, noun: str) -> str:
        if self.how == "all":
            if self.total == 1:
                return f"the one {noun.replace('channels', 'channel').replace('filters', 'filter')}"
            return f"all {self.total} {noun}"
        return f"{noun} {_ranges(self.indices)} of {self.total}"


def _select(
    spec: Selection, total: int, limit: int | None, what: str, option: str, *, sample: bool = False
) -> _Axis:
    """The indices ``spec`` selects; without one, all up to ``limit``, else the first ``limit``
    or, with ``sample``, every k-th (at most ``limit``, spread over the whole axis)."""
    if spec is None:
        if limit is None or total <= limit:
            return _Axis(np.arange(total), total, "all")
        if sample:
            return _Axis(np.arange(0, total, math.ceil(total / limit)), total, "sampled")
        return _Axis(np.arange(limit), total, "default")
    indices = parse_selection(spec, total, what, option)
    if len(indices) == total and np.array_equal(indices, np.arange(total)):
        return _Axis(indices, total, "all")
    return _Axis(indices, total, "selected")


def parse_selection(spec: Selection, total: int, what: str = "filters", option: str = "") -> Any:
    """Indices (a numpy int array) chosen by ``spec`` among ``total``: a Python slice, a sequence
    of indices, or a string ``"A:B"``, ``"A:B:S"``, ``"N"`` or ``"N,M,..."`` (negative indices
    count from the end). Raises WeightscopeError naming ``option`` when it is empty or out of
    range."""
    name = option or what
    try:
        if spec is None:
            indices = np.arange(total)
        elif isinstance(spec, slice):
            indices = np.arange(total)[spec]
        elif isinstance(spec, str):
            indices = _parse_text(spec, total)
        else:
            indices = np.asarray([int(i) for i in spec], dtype=np.int64)
            indices = _in_range(indices, total)
    except (ValueError, TypeError) as exc:
        raise WeightscopeError(f"{name} {spec!r}: {exc} (the layer has {total} {what})") from exc
    if indices.size == 0:
        raise WeightscopeError(f"{name} {spec!r} selects no {what} (the layer has {total})")
    return indices


def _parse_text(text: str, total: int) -> np.ndarray:
    parts = text.strip().split(":")
    try:
        if len(parts) > 3:
            raise ValueError
        if len(parts) == 1:
            listed = [int(p) for p in parts[0].split(",")]
        else:
            bounds = [int(p) if p.strip() else None for p in parts]
    except ValueError:
        raise ValueError("expected A:B, A:B:STEP, N or N,M,... with whole numbers") from None
    if len(parts) == 1:
        return _in_range(np.asarray(listed, dtype=np.int64), total)
    if len(bounds) == 3 and bounds[2] == 0:
        raise ValueError("the step cannot be 0")
    return np.arange(total)[slice(*bounds)]


def _in_range(indices: np.ndarray, total: int) -> np.ndarray:
    bad = indices[(indices >= total) | (indices < -total)]
    if bad.size:
        raise ValueError(f"index {int(bad[0])} is out of range")
    return np.where(indices < 0, indices + total, indices)


def _ranges(indices: np.ndarray) -> str:
    """``0-31``, ``0-62 step 2``, ``3, 7, 9`` or ``3, 7, 9, ... (12 in all)``."""
    values = [int(i) for i in indices]
    if len(values) == 1:
        return str(values[0])
    step = values[1] - values[0]
    if step > 0 and all(b - a == step for a, b in itertools.pairwise(values)):
        text = f"{values[0]}-{values[-1]}"
        return text if step == 1 else f"{text} step {step}"
    if len(values) <= 8:
        return ", ".join(map(str, values))
    return ", ".join(map(str, values[:6])) + f", ... ({len(values)} in all)"


def _subset_note(rows: _Axis, cols: _Axis | None, row_noun: str, col_noun: str) -> str:
    parts = [rows.describe(row_noun)]
    if cols is not None:
        parts.append(cols.describe(col_noun))
    if rows.how == "all" and (cols is None or cols.how == "all"):
        return "showing " + " x ".join(parts)
    text = "showing " + ", ".join(parts)
    if rows.how == "sampled" or (cols is not None and cols.how == "sampled"):
        text += " (sampled evenly: too many to see each)"
    if rows.cut or (cols is not None and cols.cut):
        text += "; use --all or --filters/--channels"
    return text


def _depth_slice(kernel: _Kernel, depth: int | None) -> tuple[np.ndarray, str | None]:
    """The 2-D-spatial view ``(out, in, kh, kw)`` of the kernel (``None`` kh for dense)."""
    w = kernel.weights
    if w.ndim != 5:
        if depth is not None:
            raise _error(kernel.layer, f"depth applies to 3-D kernels only; this one is {w.shape}")
        return (w[:, :, None, :] if w.ndim == 3 else w), None
    size = w.shape[2]
    if depth is None:
        chosen, how = size // 2, "the middle one; choose with --depth"
    else:
        if not -size <= depth < size:
            raise _error(kernel.layer, f"depth {depth} is out of range: the kernel has {size}")
        chosen, how = depth % size, "chosen"
    return w[:, :, chosen], f"depth slice d={chosen} of {size} ({how})"


def _symmetric_limit(kernel: _Kernel) -> tuple[float, int]:
    """max |w| over the finite values (1.0 when there are none or all are zero), and the number
    of non-finite values: from the tensor's statistics (cached once read, as by the report's
    table), not another pass over the kernel."""
    stats = kernel.tensor.stats()
    ends = [abs(v) for v in (stats.min, stats.max) if math.isfinite(v)]
    top = max(ends, default=0.0)
    return (top if top > 0 else 1.0), stats.nan + stats.inf


# --------------------------------------------------------------------------------------------
# Views


def _slices_figure(
    kernel: _Kernel,
    weights: np.ndarray,
    filters: Selection,
    channels: Selection,
    limits: _Limits,
    depth_note: str | None,
) -> KernelFigure:
    matrix = weights.ndim == 2 or weights.shape[2:] == (1, 1)
    mode = "matrix" if matrix else "slices"
    max_rows, max_cols = limits.get(mode)
    if not matrix and kernel.in_per_group == 1 and max_rows and max_cols:
        max_rows *= max_cols  # one column wraps: the cells of a grid go to filters (depthwise)
    rows = _select(filters, kernel.out, max_rows, "filters", "filters", sample=matrix)
    cols = _select(
        channels, kernel.in_per_group, max_cols, "input channels", "channels", sample=matrix
    )
    vmax, bad = _symmetric_limit(kernel)
    chosen = weights[np.ix_(rows.indices, cols.indices)]
    wrap: _Wrap | None = None
    if matrix:
        image = chosen.reshape(chosen.shape[0], chosen.shape[1])
        cell = (1, 1)
        what = "each pixel one weight w[o, i]"
        if weights.ndim == 4:
            what += " (1x1 kernels)"
    else:
        kh, kw = int(weights.shape[2]), int(weights.shape[3])
        cell = (kh, kw)
        wrap = _wrap(chosen.shape[0], chosen.shape[1], kh, kw)
        image = _grid(chosen) if wrap is None else _wrapped_grid(chosen, wrap)
        if kernel.weights.ndim == 3:
            what = f"each cell the 1 x {kw} kernel w[o, i, :]"
        else:
            what = f"each cell the {kh}x{kw} kernel slice w[o, i]"
    lines = [kernel.describe()]
    lines.append(f"{what}; one colour scale for the whole layer: ±{vmax:.4g} (max |w|)")
    noun = "input channels per group" if kernel.groups > 1 else "input channels"
    shown = _subset_note(rows, cols, "filters", noun)
    lines.append(shown)
    lines += _group_notes(kernel)
    if wrap is not None:
        lines.append(wrap.note(kernel, rows, cols))
    if depth_note:
        lines.append(depth_note)
    if bad:
        lines.append(f"{bad} NaN/Inf weights: NaN drawn in the separator grey, ±Inf as the ends")
    frame = _figure(image.shape, lines, shown=shown, colorbar=True, stretch=matrix)
    cmap = matplotlib.colormaps[DIVERGING].with_extremes(bad=SEPARATOR)
    blank = None if wrap is None else wrap.blank(image.shape, cell)
    _draw(frame, image, cmap, Normalize(-vmax, vmax), "weight (0 = white)", blank=blank)
    ax = frame.ax
    if wrap is None:
        _label_axes(frame, rows.indices, cols.indices, cell, "f", "in", separators=not matrix)
        ax.set_ylabel("output filter o", fontsize=FONT)
        ax.set_xlabel(_column_label(kernel), fontsize=FONT)
    else:
        along = rows.indices if wrap.filters else cols.indices
        first = np.asarray(along[:: wrap.per_row])
        prefix = "f" if wrap.filters else "in"
        _label_axes(frame, first, np.arange(wrap.per_row), cell, prefix, "+", separators=True)
        noun = "filter" if wrap.filters else "input channel"
        ax.set_ylabel(f"first {noun} of the row", fontsize=FONT)
        ax.set_xlabel("position in the row", fontsize=FONT)
    return frame.fig


@dataclass(frozen=True)
class _Wrap:
    """A grid of one column (one input channel) or one row (one filter), laid out in reading
    order, ``per_row`` cells a row."""

    count: int
    per_row: int
    filters: bool
    """The cells are filters (a one-column grid), else input channels (a one-row grid)."""

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.per_row)

    def note(self, kernel: _Kernel, rows: _Axis, cols: _Axis) -> str:
        if self.filters:
            one = "one input channel per filter" if kernel.groups > 1 else "one input channel"
            return f"{one}: the filters in reading order, {self.per_row} per row"
        return (
            f"one filter (f{int(rows.indices[0])}): its input channels in reading order, "
            f"{self.per_row} per row"
        )

    def blank(self, shape: tuple[int, ...], cell: tuple[int, int]) -> np.ndarray | None:
        """The pixels of the empty cells after the last one (drawn as background, not as
        separators or weights), or None when the last row is full."""
        filled = self.count - (self.rows - 1) * self.per_row
        if filled == self.per_row:
            return None
        kh, kw = cell
        mask = np.zeros(shape[:2], dtype=bool)
        mask[max(0, (self.rows - 1) * (kh + 1) - 1) :, filled * (kw + 1) - 1 :] = True
        return mask


def _wrap(filters: int, channels: int, kh: int, kw: int) -> _Wrap | None:
    """How a grid of one row or one column wraps into a near-square arrangement; None when it
    is not one row or one column, or when wrapping would not make it any squarer."""
    if filters != 1 and channels != 1:
        return None
    count = filters * channels
    per_row = min(count, max(1, round(math.sqrt(count * (kh + 1) / (kw + 1)))))

    def elongation(rows: int, cols: int) -> float:
        height, width = rows * (kh + 1) - 1, cols * (kw + 1) - 1
        return max(height / width, width / height)

    if elongation(math.ceil(count / per_row), per_row) >= elongation(filters, channels):
        return None
    return _Wrap(count, per_row, filters=channels == 1)


def _wrapped_grid(slices: np.ndarray, wrap: _Wrap) -> np.ndarray:
    """``(F, C, kh, kw)`` with F or C one -> the cells in reading order, ``per_row`` a row."""
    kh, kw = slices.shape[2], slices.shape[3]
    cells = np.full((wrap.rows * wrap.per_row, kh, kw), np.nan, dtype=slices.dtype)
    cells[: wrap.count] = slices.reshape(wrap.count, kh, kw)
    return _grid(cells.reshape(wrap.rows, wrap.per_row, kh, kw))


def _group_notes(kernel: _Kernel) -> list[str]:
    if kernel.groups <= 1:
        return []
    if kernel.depthwise:
        multiplier = kernel.out // kernel.groups
        return [
            f"depthwise (groups={kernel.groups}, depth multiplier {multiplier}): one input "
            f"channel per filter; filter o reads input channel o // {multiplier}"
        ]
    per_out = kernel.out // kernel.groups
    return [
        f"grouped conv (groups={kernel.groups}): column i is input channel i WITHIN the filter's "
        f"group; filter o reads input channels g*{kernel.in_per_group} + i, g = o // {per_out}"
    ]


def _column_label(kernel: _Kernel) -> str:
    if kernel.depthwise:
        return "input channel within the group (one per filter)"
    if kernel.groups > 1:
        return "input channel i within the filter's group"
    return "input channel i"


def _grid(slices: np.ndarray) -> np.ndarray:
    """``(F, C, kh, kw)`` -> one ``(F*(kh+1)-1, C*(kw+1)-1)`` image, NaN between the cells."""
    f, c, kh, kw = slices.shape
    padded = np.full((f, c, kh + 1, kw + 1), np.nan, dtype=slices.dtype)
    padded[:, :, :kh, :kw] = slices
    image = padded.transpose(0, 2, 1, 3).reshape(f * (kh + 1), c * (kw + 1))
    return image[:-1, :-1]


def _rgb_figure(
    kernel: _Kernel,
    weights: np.ndarray,
    filters: Selection,
    channels: Selection,
    limits: _Limits,
    depth_note: str | None,
    scale: str,
) -> KernelFigure:
    layer = kernel.layer
    if weights.ndim != 4:
        raise _error(layer, "the rgb view needs a conv kernel; a dense kernel has no spatial axes")
    if kernel.in_total != 3 or kernel.in_per_group != 3:
        raise _error(
            layer,
            f"the rgb view needs exactly 3 input channels; this kernel has "
            f"{kernel.in_per_group} per filter{_groups_text(kernel)} "
            f"(canonical shape {tuple(kernel.weights.shape)}); use the slices view",
        )
    if channels is not None:
        raise _error(layer, "channels do not apply to the rgb view (it shows all 3 as R, G, B)")
    max_rows, _ = limits.get("rgb")
    rows = _select(filters, kernel.out, max_rows, "filters", "filters")
    chosen = weights[rows.indices]  # (F, 3, kh, kw)
    if scale == "filter":
        top = np.nanmax(np.abs(np.where(np.isfinite(chosen), chosen, 0)), axis=(1, 2, 3))
        top = np.where(top > 0, top, 1.0)[:, None, None, None]
        how = "each filter scaled on its own: 0.5 + w / (2 max|w_f|), so grey = 0"
    else:
        top = np.asarray(_symmetric_limit(kernel)[0])
        how = f"one scale for the whole layer: 0.5 + w / (2 x {float(top):.4g}), so grey = 0"
    colours = np.clip(0.5 + chosen / (2 * top), 0.0, 1.0).transpose(0, 2, 3, 1)
    count, kh, kw = colours.shape[0], colours.shape[1], colours.shape[2]
    ncols = math.ceil(math.sqrt(count))
    nrows = math.ceil(count / ncols)
    image = np.zeros((nrows * (kh + 1) - 1, ncols * (kw + 1) - 1, 4), dtype=np.float32)
    for n in range(count):  # at most a few hundred filters
        r, c = divmod(n, ncols)
        image[r * (kh + 1) : r * (kh + 1) + kh, c * (kw + 1) : c * (kw + 1) + kw, :3] = colours[n]
        image[r * (kh + 1) : r * (kh + 1) + kh, c * (kw + 1) : c * (kw + 1) + kw, 3] = 1.0
    lines = [kernel.describe()]
    lines.append(f"each filter as a {kh}x{kw} colour image, input channels 0, 1, 2 as R, G, B")
    lines.append(how)
    shown = _subset_note(rows, None, "filters", "")
    lines.append(shown)
    lines.append(f"filters in reading order, {ncols} per row")
    if depth_note:
        lines.append(depth_note)
    frame = _figure(image.shape[:2], lines, shown=shown, colorbar=False)
    frame.fig.values = image
    ax = frame.ax
    ax.imshow(
        (image * 255 + 0.5).astype(np.uint8),
        interpolation=frame.interpolation,
        aspect="equal",
    )
    first = np.asarray(rows.indices[::ncols])
    _label_axes(frame, first, np.arange(ncols), (kh, kw), "f", "+", separators=True)
    ax.set_ylabel("first filter of the row", fontsize=FONT)
    ax.set_xlabel("position in the row", fontsize=FONT)
    return frame.fig


def _groups_text(kernel: _Kernel) -> str:
    return f" and {kernel.in_total} in all (groups={kernel.groups})" if kernel.groups > 1 else ""


def _norms_figure(
    kernel: _Kernel, filters: Selection, channels: Selection, limits: _Limits
) -> KernelFigure:
    w = kernel.weights
    if w.ndim == 2:
        norms = np.abs(w)
        what = "|w[o, i]| of the dense kernel"
    else:
        norms = np.sqrt(np.sum(np.square(w, dtype=np.float64), axis=tuple(range(2, w.ndim))))
        what = f"L2 norm of each {'x'.join(map(str, kernel.spatial))} kernel w[o, i]"
    full = np.full((kernel.out, kernel.in_total), np.nan)
    per_out, per_in = kernel.out // kernel.groups, kernel.in_per_group
    for g in range(kernel.groups):
        block = slice(g * per_out, (g + 1) * per_out)
        full[block, g * per_in : (g + 1) * per_in] = norms[block]
    max_rows, max_cols = limits.get("norms")
    rows = _select(filters, kernel.out, max_rows, "filters", "filters", sample=True)
    cols = _select(channels, kernel.in_total, max_cols, "input channels", "channels", sample=True)
    image = full[np.ix_(rows.indices, cols.indices)]
    finite = norms[np.isfinite(norms)]
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    lines = [kernel.describe(), f"{what}; columns are absolute input channels"]
    shown = _subset_note(rows, cols, "filters", "input channels")
    lines.append(shown)
    if kernel.groups > 1:
        lines.append(
            f"groups={kernel.groups}: each filter's channels at their absolute position; "
            "blank = not connected (outside the filter's group)"
        )
    frame = _figure(image.shape, lines, shown=shown, colorbar=True, stretch=True)
    cmap = matplotlib.colormaps[SEQUENTIAL].with_extremes(bad="white")
    _draw(frame, image, cmap, Normalize(0.0, top), "L2 norm" if w.ndim > 2 else "|w|")
    _label_axes(frame, rows.indices, cols.indices, (1, 1), "f", "in", separators=False)
    frame.ax.set_ylabel("output filter o", fontsize=FONT)
    frame.ax.set_xlabel("input channel (absolute)", fontsize=FONT)
    return frame.fig


# --------------------------------------------------------------------------------------------
# Layout: one Axes placed by hand so that each weight gets a whole number of pixels


@dataclass
class _Frame:
    """The figure, the Axes of the image, and how many figure pixels (at ``DPI``) one image
    pixel gets along each axis (below 1 when the image is downsampled)."""

    fig: KernelFigure
    ax: Any
    scale_y: float
    scale_x: float

    @property
    def interpolation(self) -> str:
        """Whole pixels per weight: nearest (crisp); downsampled: antialiased."""
        return "nearest" if min(self.scale_y, self.scale_x) >= 1 else "antialiased"

    @property
    def stretched(self) -> bool:
        return self.scale_y != self.scale_x


def _scale(shape: tuple[int, ...]) -> float:
    """Figure pixels (at ``DPI``) per image pixel, alike on both axes."""
    longest = max(shape[0], shape[1])
    if longest > MAX_PX:
        return MAX_PX / longest
    return float(max(1, min(MAX_SCALE, TARGET_PX // longest), MIN_PX // longest))


def _scales(shape: tuple[int, ...], stretch: bool) -> tuple[float, float]:
    """``(y, x)`` figure pixels per image pixel. With ``stretch`` (a matrix, whose cells need
    not be square), the shorter side is stretched to at least ``1 / MAX_ASPECT`` of the longer,
    in whole pixels per weight unless the image is downsampled."""
    scale = _scale(shape)
    if not stretch:
        return scale, scale
    height, width = shape[0] * scale, shape[1] * scale

    def stretched(wanted: float) -> float:
        return float(math.ceil(wanted)) if scale >= 1 else wanted

    if width > MAX_ASPECT * height:
        return stretched(width / MAX_ASPECT / shape[0]), scale
    if height > MAX_ASPECT * width:
        return scale, stretched(height / MAX_ASPECT / shape[1])
    return scale, scale


def _figure(
    shape: tuple[int, ...],
    lines: list[str],
    *,
    shown: str,
    colorbar: bool,
    stretch: bool = False,
) -> _Frame:
    scale_y, scale_x = _scales(shape, stretch)
    if min(scale_y, scale_x) < 1:
        per_pixel = shape[0] * shape[1] / (shape[0] * scale_y * shape[1] * scale_x)
        lines = [*lines, f"downsampled to fit: about {per_pixel:.3g} weights per pixel"]
    image_w, image_h = shape[1] * scale_x / DPI, shape[0] * scale_y / DPI
    left, bottom = 0.95, 0.75
    right = 1.25 if colorbar else 0.3
    line_height = 1.45 * FONT / 72
    top = len(lines) * line_height + 0.25
    text_width = max(len(line) for line in lines) * 0.6 * FONT / 72 + 0.3
    width = max(image_w + left + right, text_width, 4.0)
    height = max(image_h + bottom + top, 2.5 + top)
    left += (width - image_w - left - right) / 2
    bottom += (height - image_h - bottom - top) / 2
    fig = KernelFigure(figsize=(width, height), dpi=DPI)
    fig.shown = shown.removeprefix("showing ")
    ax = fig.add_axes((left / width, bottom / height, image_w / width, image_h / height))
    if colorbar:
        bar_h = max(min(image_h, 4.0), 1.0)
        fig.add_axes(
            (
                (left + image_w + 0.15) / width,
                (bottom + (image_h - bar_h) / 2) / height,
                0.15 / width,
                bar_h / height,
            )
        )
    fig.text(
        0.1 / width,
        1 - 0.1 / height,
        "\n".join(lines),
        ha="left",
        va="top",
        fontsize=FONT,
        linespacing=1.3,
        parse_math=False,  # names from a file may hold "$": never mathtext
    )
    return _Frame(fig, ax, scale_y, scale_x)


def _draw(
    frame: _Frame,
    values: np.ndarray,
    cmap: Colormap,
    norm: Normalize,
    label: str,
    *,
    blank: np.ndarray | None = None,
) -> None:
    """Draw ``values`` coloured by ``cmap``/``norm`` (NaN in its "bad" colour, ``blank`` pixels
    transparent) with a colorbar.

    The colours are computed here, once, and drawn as an RGBA uint8 image: matplotlib then only
    copies pixels, several times faster than resampling float data (with its NaN mask) itself.
    """
    fig = frame.fig
    fig.values = values
    fig.mappable = ScalarMappable(norm=norm, cmap=cmap)
    low, high = float(norm.vmin), float(norm.vmax)  # type: ignore[arg-type]
    scaled = (values.astype(np.float32) - np.float32(low)) / np.float32(high - low)
    rgba = cmap(scaled, bytes=True).astype(np.float32)  # NaN -> the "bad" colour
    rgba *= np.float32(1 / 255)
    if blank is not None:
        rgba[blank, 3] = 0.0
    aspect = "auto" if frame.stretched else "equal"
    frame.ax.imshow(rgba, interpolation=frame.interpolation, aspect=aspect)
    colorbar = fig.colorbar(fig.mappable, cax=fig.axes[1])
    colorbar.set_label(label, fontsize=FONT)
    colorbar.ax.tick_params(labelsize=FONT)


def _label_axes(
    frame: _Frame,
    rows: np.ndarray,
    cols: np.ndarray,
    cell: tuple[int, int],
    row_prefix: str,
    col_prefix: str,
    *,
    separators: bool,
) -> None:
    """Tick labels at the centres of the cells, thinned (every 2nd, 4th, ...) so that they stand
    at least ``TICK_GAP`` font sizes apart and number at most ``MAX_TICKS`` per axis."""
    ax = frame.ax
    for indices, size, scale, axis, prefix in (
        (rows, cell[0], frame.scale_y, ax.yaxis, row_prefix),
        (cols, cell[1], frame.scale_x, ax.xaxis, col_prefix),
    ):
        spacing = size + int(separators)
        step = _tick_step(len(indices), spacing * scale / DPI * 72)
        positions = [k * spacing + (size - 1) / 2 for k in range(0, len(indices), step)]
        labels = [f"{prefix}{int(indices[k])}" for k in range(0, len(indices), step)]
        axis.set_ticks(positions, labels)
    ax.tick_params(axis="both", labelsize=FONT, length=2, pad=1)
    ax.tick_params(axis="x", labelrotation=90)
    for spine in ax.spines.values():  # a frame where no separators bound the image
        spine.set_visible(not separators)
        spine.set_linewidth(0.5)
        spine.set_edgecolor(SEPARATOR)


def _tick_step(count: int, pitch_pt: float) -> int:
    """Label every ``step``-th of ``count`` cells ``pitch_pt`` points apart."""
    step = 1
    while count / step > MAX_TICKS or step * pitch_pt < TICK_GAP * FONT:
        step *= 2
    return step
