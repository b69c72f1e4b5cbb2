"""The terminal tables of ``weightscope inspect``: the model's layers and one layer's tensors,
laid out by :mod:`weightscope.reporters.fit` with the numbers of
:mod:`weightscope.reporters.numbers`."""

from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.text import Text

from weightscope.analysis.health import LARGE_RELATIVE, LayerHealth
from weightscope.errors import printable
from weightscope.model import Layer, Model, ParamCounts, Tensor
from weightscope.reporters.fit import Column, FitTable
from weightscope.reporters.numbers import number, percent
from weightscope.stats import TensorStats

LARGE_NORM_TEXT = f"{LARGE_RELATIVE:g}x median"


def _shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "-"
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _num(value: float) -> str:
    """The HTML report's number format (the terminal tables use :func:`numbers.number`)."""
    return f"{value:.4g}"


def _kind(layer: Layer) -> Text:
    text = Text(layer.kind_label, style="yellow" if layer.kind.is_unknown else "")
    if layer.inferred:
        text.append("*", style="bold")
    return text


def _canonical_cell(tensor: Tensor) -> Text:
    """The canonical shape and layout, in colour where it is not the native one; the native
    shape where the tensor has no canonical form."""
    if tensor.canonical_layout is None:
        return Text.assemble(_shape(tensor.native_shape), (" as stored", "dim yellow"))
    style = "cyan" if tensor.canonical_layout != tensor.native_layout else ""
    return Text(f"{_shape(tensor.canonical_shape)} {tensor.canonical_layout}", style=style)


def _native_cell(tensor: Tensor) -> Text:
    text = Text(_shape(tensor.native_shape))
    if tensor.native_layout:
        text.append(f" {tensor.native_layout}", style="dim")
    return text


def _dtype_cell(tensor: Tensor) -> str:
    """The stored dtype; ``int8 (q)`` for quantized integers (the statistics beside it are of
    the real values they stand for)."""
    return f"{tensor.dtype} (q)" if tensor.quantization is not None else tensor.dtype


def quantization_line(tensor: Tensor, with_values: bool = True) -> str:
    """``kernel: int8 (q), per channel along canonical axis 0, scales 1.2e-3..4.1e-3, zero
    point 0, stored -127..127; statistics above are of the real values``."""
    q = tensor.quantization
    assert q is not None
    text = f"{printable(tensor.role)}: {tensor.dtype} (q), {q.granularity}"
    if tensor.quantization_axis is not None:
        text += f" along canonical axis {tensor.quantization_axis}"
    if with_values:
        scales = q.scales().astype(float)
        low, high = float(scales.min()), float(scales.max())
        text += f", scale {number(low)}" + ("" if low == high else f"..{number(high)}")
        zeros = q.zero_points()
        if zeros is not None:
            z_low, z_high = int(zeros.min()), int(zeros.max())
            text += f", zero point {z_low}" + ("" if z_low == z_high else f"..{z_high}")
        offsets = q.offsets()
        if offsets is not None:
            o_low, o_high = float(offsets.min()), float(offsets.max())
            text += f", offset {number(o_low)}" + ("" if o_low == o_high else f"..{number(o_high)}")
        stored = tensor.stored_stats()
        text += f", stored {_integer(stored.min)}..{_integer(stored.max)}"
        formula = "(stored - zero point) * scale" + (" + offset" if offsets is not None else "")
        text += f"; statistics above are of the real values {formula}"
    return text


def _integer(value: float) -> str:
    """A stored integer's extreme as the integer it is (a float from the statistics)."""
    return f"{int(value)}" if math.isfinite(value) and value == int(value) else number(value)


def _stats_cells(stats: TensorStats | None) -> list[str]:
    if stats is None:
        return ["", "", "", ""]
    return [number(stats.mean), number(stats.std), number(stats.min), number(stats.max)]


STATS_COLUMNS = ("mean", "std", "min", "max")


def model_header(model: Model) -> Text:
    version = f" {model.framework_version}" if model.framework_version else ""
    producer = f", written by {model.producer}" if model.producer else ""
    return Text.assemble(
        (str(model.source), "bold"), f"  {model.format} ({model.framework}{version}{producer})"
    )


def _health_cell(health: LayerHealth) -> Text:
    if not health.flags:
        return Text("ok", style="green")
    counts = {
        "nan_inf": health.nonfinite,
        "dead_filters": health.dead_filters,
        "duplicate_filters": health.duplicate_filters,
        "large_norm": health.large_filters,
    }
    parts = [
        flag if counts.get(flag) is None else f"{flag} {counts[flag]:,}" for flag in health.flags
    ]
    return Text(", ".join(parts), style="bold red")


TABLE_ROWS = 1000
"""Most layers the terminal table shows; a file of hundreds of thousands of tiny tensors would
otherwise take minutes to lay out. ``--json`` lists every layer, ``--layer NAME`` shows one."""


def shown_layers(model: Model) -> list[Layer]:
    """The layers :func:`model_table` shows, in model order."""
    return model.layers[:TABLE_ROWS]


def model_table(
    model: Model,
    with_stats: bool = True,
    health: list[LayerHealth] | None = None,
    wide: bool = False,
) -> RenderableType:
    """One row per layer (the first :data:`TABLE_ROWS`); a Health column when ``health`` (one
    entry per layer) is given. On a narrow terminal the native shape, the dtype, then the
    statistics are left out first (all kept with ``wide``)."""
    columns = [
        Column("Layer", name=True),
        Column("Kind", 1, name=True),
        Column("Canonical shape", 2),
        Column("Native shape", 9),
        Column("Params", 3, justify="right"),
        Column("dtype", 8),
    ]
    if with_stats:
        columns += [Column(t, 4 + i, justify="right") for i, t in enumerate(STATS_COLUMNS)]
    if health is not None:
        columns.append(Column("Health", wrap=True))
    table = FitTable(columns, wide=wide)
    for index, layer in enumerate(shown_layers(model)):
        main = layer.principal
        cells: list[str | Text] = [
            Text(printable(layer.name)),  # names are data: never markup, never escapes
            _kind(layer),
            _canonical_cell(main) if main is not None else "-",
            _native_cell(main) if main is not None else "-",
            f"{layer.params:,}",
            _dtype_cell(main) if main is not None else "-",
        ]
        if with_stats:
            stats = main.stats() if (main is not None and main.has_stats) else None
            cells += _stats_cells(stats)
        if health is not None:
            cells.append(_health_cell(health[index]))
        table.add_row(*cells)
    parts: list[RenderableType] = [model_header(model), table]
    hidden = len(model.layers) - TABLE_ROWS
    if hidden > 0:
        parts.append(
            Text(
                f"... and {hidden:,} more layers (all of them with --json, one with --layer NAME)",
                style="yellow",
            )
        )
    parts.append(totals_line(model))
    notes = footnotes(model)
    if notes:
        parts.append(notes)
    return Group(*parts)


def totals_line(model: Model) -> Text:
    return counts_line(model.params)


def counts_line(counts: ParamCounts) -> Text:
    """``Total params: N   Trainable: N   Non-trainable: N`` (and trainability unknown)."""
    text = Text.assemble(
        ("Total params: ", "bold"), f"{counts.total:,}",
        ("   Trainable: ", "bold"), f"{counts.trainable:,}",
        ("   Non-trainable: ", "bold"), f"{counts.non_trainable:,}",
    )  # fmt: skip
    if counts.unknown:
        text.append("   Trainability unknown: ", style="bold")
        text.append(f"{counts.unknown:,} (the file does not record it)")
    return text


WEIGHTLESS_SHOWN = 12
"""Layers without weights named under the table; a large ONNX graph has thousands."""


def footnotes(model: Model) -> Text | None:
    lines = []
    if any(layer.inferred for layer in model.layers):
        lines.append("* kind inferred from names and shapes (the file records no layer classes)")
    if model.weightless_layers:
        names = model.weightless_layers
        shown = ", ".join(names[:WEIGHTLESS_SHOWN])
        if len(names) > WEIGHTLESS_SHOWN:
            shown += f", ... ({len(names)} in all; --json lists every one)"
        lines.append(f"layers without weights: {shown}")
    shared = [t for _, t in model.tensors() if t.shared_with]
    if shared:
        lines.append(f"shared (tied) tensors, counted once: {len(shared)}")
    lines.extend(model.notes)
    if not lines:
        return None
    return Text("\n".join(lines), style="dim")


def _config_value(value: object) -> str:
    """Serialized Keras objects (initializers, ...) by class name and their set options."""
    if isinstance(value, dict) and "class_name" in value:
        options = value.get("config") or {}
        shown = ", ".join(f"{k}={v}" for k, v in options.items() if v is not None)
        return f"{value['class_name']}({shown})"
    return str(value)


def layer_detail(
    model: Model, layer: Layer, with_stats: bool = True, wide: bool = False
) -> RenderableType:
    header = Text.assemble((printable(layer.name), "bold"), "  ", _kind(layer))
    if layer.class_name:
        header.append(f"  class {layer.class_name}", style="dim")  # append never parses markup
    header.append(f"  groups={layer.groups}  params={layer.params:,}")
    columns = [
        Column("Role", name=True),
        Column("Stored name", name=True),
        Column("Canonical shape", 2),
        Column("Native shape", 12),
        Column("dtype", 11),
        Column("Trainable", 10),
    ]
    if with_stats:
        columns += [Column(t, 3 + i, justify="right") for i, t in enumerate(STATS_COLUMNS)]
        columns += [
            Column("zeros", 7, justify="right"),
            Column("NaN", 8, justify="right", label="NaN"),
            Column("Inf", 9, justify="right", label="Inf"),
        ]
    table = FitTable(columns, wide=wide)
    for tensor in layer.tensors:
        row: list[str | Text] = [
            Text(printable(tensor.role)),
            Text(printable(tensor.name + (tensor.part or ""))),
            _canonical_cell(tensor),
            _native_cell(tensor),
            _dtype_cell(tensor),
            {True: "yes", False: "no", None: "?"}[tensor.trainable]
            + ("" if tensor.counted else " (not counted)"),
        ]
        if with_stats and tensor.has_stats:
            stats = tensor.stats()
            row += [
                *_stats_cells(stats),
                percent(stats.zeros_fraction),
                f"{stats.nan:,}",
                f"{stats.inf:,}",
            ]
        elif with_stats:
            row += ["n/a", "", "", "", "", "", ""]
        table.add_row(*row)
    parts: list[RenderableType] = [model_header(model), header, table]
    for tensor in layer.tensors:
        if tensor.quantization is not None:
            parts.append(Text(quantization_line(tensor, with_stats), style="dim"))
    if layer.note:
        parts.append(Text(f"note: {layer.note}", style="dim"))
    config = {k: v for k, v in layer.config.items() if k not in ("dtype", "name") and v is not None}
    if config:
        shown = ", ".join(f"{k}={_config_value(v)}" for k, v in config.items())
        parts.append(Text(f"config: {shown}", style="dim"))
    return Group(*parts)


def health_line(health: LayerHealth) -> Text:
    """One layer's health under its detail table: the flags, the counts, and any note."""
    text = Text.assemble(("Health: ", "bold"), _health_cell(health))
    if health.filters is not None:
        text.append(
            f"  ({health.filters:,} filters; dead {health.dead_filters:,}, duplicated "
            f"{health.duplicate_filters:,}, norm over {LARGE_NORM_TEXT} "
            f"{'-' if health.large_filters is None else format(health.large_filters, ',')})",
            style="dim",
        )
    if health.init_verdict is not None:
        text.append(f"  init verdict: {health.init_verdict}", style="dim")
    if health.note:
        text.append(f"  {health.note}", style="dim")
    return text
