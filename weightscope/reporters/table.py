"""The terminal tables of ``weightscope inspect``."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from weightscope.analysis.health import LARGE_RELATIVE, LayerHealth
from weightscope.errors import printable
from weightscope.model import Layer, Model, ParamCounts, Tensor
from weightscope.stats import TensorStats

LARGE_NORM_TEXT = f"{LARGE_RELATIVE:g}x median"


def _shape(shape: tuple[int, ...] | None) -> str:
    if shape is None:
        return "-"
    if len(shape) == 1:
        return f"({shape[0]},)"
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _num(value: float) -> str:
    return f"{value:.4g}"


def _kind(layer: Layer) -> Text:
    text = Text(layer.kind_label, style="yellow" if layer.kind.is_unknown else "")
    if layer.inferred:
        text.append("*", style="bold")
    return text


def _shape_cell(tensor: Tensor) -> Text:
    text = Text(_shape(tensor.native_shape))
    if tensor.native_layout and tensor.canonical_layout != tensor.native_layout:
        text.append(f" {tensor.native_layout} -> ", style="dim")
        text.append(f"{_shape(tensor.canonical_shape)} {tensor.canonical_layout}", style="cyan")
    elif tensor.native_layout is None:
        text.append("  no canonical form", style="dim yellow")
    return text


def _stats_cells(stats: TensorStats | None) -> list[str]:
    if stats is None:
        return ["", "", "", ""]
    return [_num(stats.mean), _num(stats.std), _num(stats.min), _num(stats.max)]


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
    model: Model, with_stats: bool = True, health: list[LayerHealth] | None = None
) -> RenderableType:
    """One row per layer (the first :data:`TABLE_ROWS`); a Health column when ``health`` (one
    entry per layer) is given."""
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("Layer", overflow="fold")
    table.add_column("Kind")
    table.add_column("Shape native -> canonical", no_wrap=True)
    table.add_column("Params", justify="right")
    table.add_column("dtype")
    for title in ("mean", "std", "min", "max"):
        table.add_column(title, justify="right")
    if health is not None:
        table.add_column("Health")
    for index, layer in enumerate(shown_layers(model)):
        main = layer.principal
        stats = main.stats() if (with_stats and main is not None and main.has_stats) else None
        extra = [] if health is None else [_health_cell(health[index])]
        table.add_row(
            Text(printable(layer.name)),  # names are data: never markup, never escapes
            _kind(layer),
            _shape_cell(main) if main is not None else "-",
            f"{layer.params:,}",
            main.dtype if main is not None else "-",
            *_stats_cells(stats),
            *extra,
        )
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


def layer_detail(model: Model, layer: Layer, with_stats: bool = True) -> RenderableType:
    header = Text.assemble((printable(layer.name), "bold"), "  ", _kind(layer))
    if layer.class_name:
        header.append(f"  class {layer.class_name}", style="dim")  # append never parses markup
    header.append(f"  groups={layer.groups}  params={layer.params:,}")
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    for title in ("Role", "Stored name", "Shape native -> canonical", "dtype", "Trainable"):
        table.add_column(title)
    if with_stats:
        for title in ("mean", "std", "min", "max", "zeros", "NaN", "Inf"):
            table.add_column(title, justify="right")
    for tensor in layer.tensors:
        row: list[RenderableType] = [
            Text(printable(tensor.role)),
            Text(printable(tensor.name), overflow="fold"),
            _shape_cell(tensor),
            tensor.dtype,
            {True: "yes", False: "no", None: "?"}[tensor.trainable]
            + ("" if tensor.counted else " (not counted)"),
        ]
        if with_stats and tensor.has_stats:
            stats = tensor.stats()
            row += [
                *_stats_cells(stats),
                f"{stats.zeros_fraction:.1%}",
                str(stats.nan),
                str(stats.inf),
            ]
        elif with_stats:
            row += ["n/a", "", "", "", "", "", ""]
        table.add_row(*row)
    parts: list[RenderableType] = [model_header(model), header, table]
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
