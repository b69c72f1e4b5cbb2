"""HTML views of a model: the tables Jupyter shows for a :class:`Model` or a :class:`Layer`
(their ``_repr_html_``), and the self-contained page of ``weightscope report``.

Every name that comes from a model file (layers, tensors, classes, notes, config values) is data
from an untrusted source: it goes through :func:`_text`, which escapes it for HTML. Nothing in
these pages runs a script or loads anything from outside the page: figures are embedded as
base64 PNG ``data:`` URIs and the style sheet is inline.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import html
import io
import json
import os
import re
import signal
import sys
import warnings
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from weightscope._version import __version__
from weightscope.errors import printable
from weightscope.model import Layer, Model, Tensor
from weightscope.reporters import table as terminal
from weightscope.reporters.progress import compute_stats, progress
from weightscope.reporters.table import _config_value, _num, _shape
from weightscope.stats import TensorStats

if TYPE_CHECKING:
    from weightscope.analysis.findings import LayerFindings
    from weightscope.analysis.health import LayerHealth
    from weightscope.analysis.init import InitReport
    from weightscope.analysis.params import LayerParams

_RIGHT = ' style="text-align:right"'
_DIM = ' style="color:#777"'
_MONO = (
    " style=\"font-family:ui-monospace,Menlo,Consolas,'DejaVu Sans Mono',monospace;"
    'font-size:0.9em;white-space:nowrap;vertical-align:baseline"'
)
"""Shapes: a monospace font at nine tenths of the text's size (the bare generic ``monospace``
falls back to 13 px, smaller than the text around it) on the text's baseline, not above it."""
_CANONICAL = ' style="color:#07a"'
_WARN = ' style="color:#b60"'

PAGE_CSS = """\
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 72em; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-top: 1.6em; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: left;
         vertical-align: baseline; }
th { border-bottom: 2px solid #bbb; }
figure { display: inline-block; margin: 0.5em 1.5em 0.5em 0; vertical-align: top; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.meta, .dim, footer { color: #666; }
.notes { color: #666; font-size: 0.9em; white-space: pre-line; }
.warn { color: #b60; }
ul.findings { margin: 0.3em 0; padding-left: 1.2em; }
section.layer { border-top: 1px solid #eee; margin-top: 1.5em; }
.scroll { overflow-x: auto; }
footer { margin-top: 3em; font-size: 0.85em; }
"""


def _text(value: object) -> str:
    """``value`` as HTML text: control characters shown as ``\\xNN``, markup escaped."""
    return html.escape(printable(str(value)), quote=True)


def is_conv(layer: Layer) -> bool:
    """A convolution of any kind (plain, transposed, depthwise, separable)."""
    return layer.kind.is_conv


# ------------------------------------------------------------------------------------------
# Cells shared by the Jupyter tables and the report


def _kind_cell(layer: Layer) -> str:
    label = layer.kind_label
    cell = f"<span{_WARN}>{_text(label)}</span>" if layer.kind.is_unknown else _text(label)
    if layer.inferred:
        cell += '<b title="kind inferred from names and shapes">*</b>'
    return cell


def _shape_cell(tensor: Tensor) -> str:
    cell = _text(_shape(tensor.native_shape))
    if tensor.native_layout and tensor.canonical_layout != tensor.native_layout:
        canonical = f"{_shape(tensor.canonical_shape)} {tensor.canonical_layout}"
        cell += (
            f" <span{_DIM}>{_text(tensor.native_layout)} -&gt;</span> "
            f"<span{_CANONICAL}>{_text(canonical)}</span>"
        )
    elif tensor.native_layout is None:
        cell += f" <span{_DIM}>no canonical form</span>"
    return cell


def _stats_cells(stats: TensorStats | None, columns: Sequence[str]) -> str:
    if stats is None:
        return "".join(f"<td{_RIGHT}></td>" for _ in columns)
    values = {
        "mean": _num(stats.mean),
        "std": _num(stats.std),
        "min": _num(stats.min),
        "max": _num(stats.max),
        "zeros": f"{stats.zeros_fraction:.1%}",
        "NaN": str(stats.nan),
        "Inf": str(stats.inf),
    }
    return "".join(f"<td{_RIGHT}>{values[c]}</td>" for c in columns)


def _header_row(titles: Iterable[str], right: Iterable[str] = ()) -> str:
    aligned = set(right)
    cells = "".join(f"<th{_RIGHT if t in aligned else ''}>{_text(t)}</th>" for t in titles)
    return f"<thead><tr>{cells}</tr></thead>"


def _read_stats(tensors: Iterable[Tensor], tolerant: bool) -> str | None:
    """Compute (and cache) the statistics of ``tensors``, with a progress bar on large models.

    ``tolerant``: return why they could not be read (a closed model, a damaged file) instead of
    raising, for a notebook's display of a model, which must not fail on it."""
    try:
        compute_stats(tensors)
    except Exception as exc:
        if not tolerant:
            raise
        return f"statistics not shown: {type(exc).__name__}: {exc}"
    return None


def _stats_of(tensor: Tensor | None) -> TensorStats | None:
    return tensor.stats() if tensor is not None and tensor.has_stats else None


def model_header(model: Model) -> str:
    version = f" {model.framework_version}" if model.framework_version else ""
    producer = f", written by {model.producer}" if model.producer else ""
    source = "(in memory)" if model.source is None else str(model.source)
    return (
        f"<b>{_text(source)}</b> "
        f"<span{_DIM}>{_text(f'{model.format} ({model.framework}{version}{producer})')}</span>"
    )


def totals(model: Model) -> str:
    counts = model.params
    text = (
        f"<b>Total params:</b> {counts.total:,} &nbsp; <b>Trainable:</b> {counts.trainable:,}"
        f" &nbsp; <b>Non-trainable:</b> {counts.non_trainable:,}"
    )
    if counts.unknown:
        text += (
            f" &nbsp; <b>Trainability unknown:</b> {counts.unknown:,} (the file does not record it)"
        )
    return text


def footnotes(model: Model) -> list[str]:
    """The lines under the terminal table (inferred kinds, layers without weights, notes)."""
    text = terminal.footnotes(model)
    return [] if text is None else text.plain.splitlines()


def _notes_block(lines: Sequence[str]) -> str:
    if not lines:
        return ""
    body = "<br>".join(_text(line) for line in lines)
    return f'<div class="notes"{_DIM}>{body}</div>'


def summary_table(
    model: Model,
    with_stats: bool = True,
    tolerant: bool = False,
    *,
    stat_columns: Sequence[str] = ("mean", "std"),
    health: Mapping[str, LayerHealth] | None = None,
) -> str:
    """One row per weight-bearing layer: its principal tensor's shapes, dtype and statistics
    (``stat_columns``), with a column of health flags when ``health`` (by layer name) is given.
    ``tolerant``: when statistics cannot be read, say so under the table instead of raising."""
    problem = None
    if with_stats:  # every tensor, as `weightscope inspect` does: a damaged one shows here
        problem = _read_stats((t for _, t in model.tensors()), tolerant)
    stat_columns = list(stat_columns) if with_stats else []
    titles = ["Layer", "Kind", "Shape native -> canonical", "Params", "dtype", *stat_columns]
    if health is not None:
        titles.append("Flags")
    rows = []
    for layer in model.layers:
        main = layer.principal
        cells = [
            f"<td>{_text(layer.name)}</td>",
            f"<td>{_kind_cell(layer)}</td>",
            f"<td{_MONO}>{_shape_cell(main) if main is not None else '-'}</td>",
            f"<td{_RIGHT}>{layer.params:,}</td>",
            f"<td>{_text(main.dtype) if main is not None else '-'}</td>",
        ]
        if with_stats:
            cells.append(_stats_cells(_stats_of(main) if problem is None else None, stat_columns))
        if health is not None:
            cells.append(f"<td>{_flags_text(health.get(layer.name))}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    table = (
        f'<table class="weightscope">{_header_row(titles, ["Params", *stat_columns])}'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    notes = footnotes(model) + ([problem] if problem else [])
    return f"{table}<div>{totals(model)}</div>{_notes_block(notes)}"


# ------------------------------------------------------------------------------------------
# Jupyter


def model_html(model: Model) -> str:
    """The model as an HTML table (``Model._repr_html_``): the rows of ``weightscope inspect``
    with mean and std, then the parameter totals. Statistics are computed once and cached."""
    return f"<div>{model_header(model)}{summary_table(model, tolerant=True)}</div>"


def layer_html(layer: Layer) -> str:
    """One layer as an HTML table (``Layer._repr_html_``): every tensor with its stored name,
    shapes, dtype, trainability and statistics, then the layer's config."""
    problem = _read_stats(layer.tensors, tolerant=True)
    header = f"<b>{_text(layer.name)}</b> {_kind_cell(layer)}"
    if layer.class_name:
        header += f" <span{_DIM}>class {_text(layer.class_name)}</span>"
    header += f" groups={layer.groups} params={layer.params:,}"
    notes = []
    if layer.note:
        notes.append(f"note: {layer.note}")
    config = {k: v for k, v in layer.config.items() if k not in ("dtype", "name") and v is not None}
    if config:
        notes.append("config: " + ", ".join(f"{k}={_config_value(v)}" for k, v in config.items()))
    if problem:
        notes.append(problem)
    return f"<div>{header}{tensor_table(layer, problem)}{_notes_block(notes)}</div>"


def tensor_table(layer: Layer, problem: str | None = None) -> str:
    """One row per tensor of ``layer``: role, stored name, shapes, dtype, trainability and every
    statistic (read already: ``problem`` says why they could not be, if so)."""
    stat_columns = ["mean", "std", "min", "max", "zeros", "NaN", "Inf"]
    titles = ["Role", "Stored name", "Shape native -> canonical", "dtype", "Trainable"]
    rows = []
    for tensor in layer.tensors:
        trainable = {True: "yes", False: "no", None: "?"}[tensor.trainable]
        if not tensor.counted:
            trainable += " (not counted)"
        stats = None if problem else _stats_of(tensor)
        cells = [
            f"<td>{_text(tensor.role)}</td>",
            f"<td>{_text(tensor.name)}</td>",
            f"<td{_MONO}>{_shape_cell(tensor)}</td>",
            f"<td>{_text(tensor.dtype)}</td>",
            f"<td>{trainable}</td>",
        ]
        if stats is None and not tensor.has_stats:
            cells.append(f"<td{_RIGHT}>n/a</td>" + "<td></td>" * (len(stat_columns) - 1))
        else:
            cells.append(_stats_cells(stats, stat_columns))
        rows.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<table class="weightscope">{_header_row([*titles, *stat_columns], stat_columns)}'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# ------------------------------------------------------------------------------------------
# The report page


def figure_data_uri(figure: Any) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI; the figure is closed. zlib
    level 1: a report draws dozens of figures, and level 6 takes longer for a page a few
    percent smaller."""
    buffer = io.BytesIO()
    try:
        figure.savefig(
            buffer,
            format="png",
            metadata={"Software": None},
            pil_kwargs={"compress_level": 1},
        )
    finally:
        if getattr(figure.canvas, "manager", None) is not None:  # pyplot's: let go of it
            import matplotlib.pyplot as plt

            plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _value(value: Any) -> str:
    """One value of a report's ``to_dict()`` as HTML text."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, Mapping):
        return ", ".join(f"{_text(k)}={_value(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(_value(v) for v in value)
    return _text(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def records_table(records: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """One row per record, one column per ``(key, title)`` that some record has; numbers are
    right-aligned."""
    shown = [(key, title) for key, title in columns if any(key in r for r in records)]
    numeric = {key for key, _ in shown if any(_is_number(r.get(key)) for r in records)}
    rows = []
    for record in records:
        cells = "".join(
            f"<td{_RIGHT if key in numeric else ''}>{_value(record.get(key))}</td>"
            for key, _ in shown
        )
        rows.append(f"<tr>{cells}</tr>")
    header = _header_row([t for _, t in shown], [t for k, t in shown if k in numeric])
    return f"<table>{header}<tbody>{''.join(rows)}</tbody></table>"


PARAMS_COLUMNS = (
    ("name", "Layer"),
    ("kind", "Kind"),
    ("stored", "Stored"),
    ("formula", "Formula"),
    ("expression", "from"),
    ("status", "Status"),
    ("issues", "Disagreements"),
)

INIT_COLUMNS = (
    ("layer", "Layer"),
    ("verdict", "Verdict"),
    ("initializer", "Initializer"),
    ("best_fit", "Best fit"),
    ("fan_in", "fan in"),
    ("fan_out", "fan out"),
    ("bound", "bound"),
    ("std", "std"),
    ("std_ratio", "std ratio"),
    ("fraction_outside", "outside"),
    ("evidence", "Evidence"),
)


def params_html(data: Mapping[str, Any]) -> str:
    """A ``ParamsReport.to_dict()``: the per-layer check, then the totals by formula and the
    PyTorch convention."""
    layers = []
    for layer in data.get("layers", []):
        layer = dict(layer)
        if layer.get("kind") == "unknown" and layer.get("class_name"):
            layer["kind"] = f"unknown ({layer['class_name']})"
        layers.append(layer)
    lines = []
    if data.get("formula_layers"):
        lines.append(
            f"<b>By formula:</b> {_value(data.get('formula_total'))} over "
            f"{_value(data['formula_layers'])} of {len(layers)} layers (stored there: "
            f"{_value(data.get('stored_in_formula_layers'))})"
        )
    pytorch = data.get("pytorch_convention") or {}
    if pytorch.get("buffers"):
        lines.append(
            f"<b>PyTorch parameters():</b> {_value(pytorch.get('parameters'))} (buffers: "
            f"{_value(pytorch['buffers'])}: batch-norm moving mean and variance are buffers in "
            "PyTorch, non-trainable parameters in Keras)"
        )
    flagged = data.get("flagged") or []
    if flagged:
        names = ", ".join(_text(name) for name in flagged)
        lines.append(
            f'<span class="warn">{len(flagged)} layer(s) disagree with their configuration: '
            f"{names}</span>"
        )
    else:
        lines.append("Every layer's stored parameters agree with its configuration.")
    table_html = records_table(layers, PARAMS_COLUMNS) if layers else ""
    return table_html + "".join(f"<div>{line}</div>" for line in lines)


def init_html(records: Sequence[Mapping[str, Any]]) -> str:
    """``InitReport.to_dict()`` of every layer analysed; a layer still at its initializer is
    highlighted (in a trained model it learned nothing)."""
    if not records:
        return f"<p{_DIM}>No layer whose initializer can be checked.</p>"
    rows = []
    for record in records:
        row = dict(record)
        if row.get("initializer") and row.get("declared") is False:
            row["initializer"] = f"{row['initializer']} (default)"
        if _is_number(row.get("fraction_outside")):
            row["fraction_outside"] = f"{row['fraction_outside']:.2%}"
        rows.append(row)
    table_html = records_table(rows, INIT_COLUMNS)
    return re.sub(r"<td>at_init</td>", f'<td class="warn"{_WARN}>at_init</td>', table_html)


def _figure(uri: str, caption: str) -> str:
    return (
        f'<figure><img src="{uri}" alt="{_text(caption)}">'
        f"<figcaption>{_text(caption)}</figcaption></figure>"
    )


def _flags_text(health: LayerHealth | None) -> str:
    """The flags of a layer as HTML: ``-`` when not checked, empty when none is raised."""
    if health is None:
        return "-"
    if not health.flags:
        return f"<span{_DIM}>none</span>"
    return ", ".join(f'<span class="warn"{_WARN}>{_text(flag)}</span>' for flag in health.flags)


def _health_line(health: LayerHealth | None) -> str:
    if health is None:
        return "not checked"
    found = []
    if health.nonfinite:
        found.append(f"{health.nonfinite:,} NaN/Inf values")
    if health.dead_filters:
        found.append(f"{health.dead_filters:,} of {health.filters:,} filters dead")
    if health.duplicate_filters:
        found.append(f"{health.duplicate_filters:,} filters duplicate an earlier one")
    if health.large_filters:
        ratio = "" if health.max_norm_ratio is None else f", up to {health.max_norm_ratio:.3g}x"
        found.append(f"{health.large_filters:,} filters of norm over 10x the median{ratio}")
    if health.init_verdict == "at_init":
        found.append("kernel still as initialized")
    text = (
        f'<span class="warn"{_WARN}>{"; ".join(_text(f) for f in found)}</span>'
        if found
        else "no flag raised"
    )
    if health.note:
        text += f" <span{_DIM}>({_text(health.note)})</span>"
    return text


def _init_line(report: InitReport | None) -> str:
    if report is None:
        return f"<span{_DIM}>no floating-point kernel to compare with an initializer</span>"
    verdict = _text(report.verdict)
    if report.verdict == "at_init":
        verdict = f'<span class="warn"{_WARN}>{verdict}</span>'
    name = "no known initializer" if report.initializer is None else report.initializer.name
    if report.initializer is not None and not report.declared:
        name += " (default)"
    return f"<b>{verdict}</b> against {_text(name)}: {_text(report.evidence)}"


def _params_line(entry: LayerParams) -> str:
    text = f"{entry.stored:,} stored"
    if entry.formula is not None:
        text += f", {entry.formula:,} by formula"
        if entry.expression:
            text += f" ({_text(entry.expression)})"
    status = _text(entry.status)
    if entry.issues:
        issues = "; ".join(_text(issue) for issue in entry.issues)
        return f'<span class="warn"{_WARN}>{status}</span>: {text}; {issues}'
    return f"{status}: {text}"


def _layer_figures(found: LayerFindings) -> tuple[list[str], list[str]]:
    """The figures of one layer as HTML, and notes on those that could not be drawn."""
    from weightscope.errors import WeightscopeError
    from weightscope.reporters.init import plot_init, plot_values
    from weightscope.reporters.kernels import plot_kernels

    layer = found.layer
    figures, notes = [], []
    if layer.kind.has_kernel:
        try:
            kernel = plot_kernels(layer)
        except WeightscopeError as exc:
            notes.append(f"no kernel figure: {exc}")
        else:
            what = "kernel slices" if layer.kind.is_conv else "kernel matrix"
            figures.append(_figure(figure_data_uri(kernel), f"{layer.name}: {what}"))
    if found.init is not None and found.init_sample is not None:
        figure = plot_init(layer, checked=(found.init, found.init_sample))
        figures.append(_figure(figure_data_uri(figure), f"{layer.name}: weights against init"))
    if found.histograms:
        figure = plot_values(layer, found.histograms)
        figures.append(_figure(figure_data_uri(figure), f"{layer.name}: values"))
    return figures, notes


def _layer_section(index: int, found: LayerFindings) -> str:
    layer = found.layer
    figures, notes = _layer_figures(found)
    items = [
        f"<li><b>Health:</b> {_health_line(found.health)}</li>",
        f"<li><b>Init:</b> {_init_line(found.init)}</li>",
        f"<li><b>Params:</b> {_params_line(found.params)}</li>",
    ]
    return (
        f'<section id="layer-{index}" class="layer"><h3>{_text(layer.name)} '
        f"<small{_DIM}>{_kind_cell(layer)}</small></h3>"
        f'<ul class="findings">{"".join(items)}</ul>'
        f'<div class="scroll">{tensor_table(layer)}</div>'
        f"{_notes_block(notes)}{''.join(figures)}</section>"
    )


CHECKS_AHEAD = 2
"""Layers whose checks may run ahead of the figures (each holds its kernel's subsample)."""

FIGURE_COST = 0.1
"""Seconds one figure takes to draw, against :data:`VALUE_COST` a checked value: how a report
drawn by two processes shares out its layers."""
VALUE_COST = 2.5e-8


@dataclass(frozen=True)
class _Drawn:
    """One layer's part of the page: its section, and what the summary and the init table take
    from its checks (plain data: a child process sends it back as JSON, never a pickle)."""

    index: int
    section: str
    health: LayerHealth | None
    init: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        health = None if self.health is None else dataclasses.asdict(self.health)
        return {"index": self.index, "section": self.section, "health": health, "init": self.init}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _Drawn:
        from weightscope.analysis.health import LayerHealth

        health = None if data["health"] is None else LayerHealth(**data["health"])
        return cls(int(data["index"]), str(data["section"]), health, data["init"])


def _draw_layers(
    todo: Sequence[tuple[int, Layer]],
    entries: Mapping[int, LayerParams],
    producer: str | None,
    *,
    quiet: bool = False,
) -> list[_Drawn]:
    """Check and draw ``todo``'s layers in order. The checks (numpy, which releases the GIL)
    run on a second thread a layer or two ahead of the figures (matplotlib, which does not), so
    that on two cores the one hides the other; that thread only reads tensors."""
    from weightscope.analysis.findings import layer_findings

    weights = [sum(t.size for t in layer.tensors) * 4 for _, layer in todo]
    drawn = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="weightscope-report") as pool:
        ahead: deque[Future[LayerFindings]] = deque()
        queue = iter(todo)

        def check_next() -> None:
            item = next(queue, None)
            if item is not None:
                layer = item[1]
                ahead.append(
                    pool.submit(layer_findings, layer, entries[id(layer)], producer=producer)
                )

        for _ in range(CHECKS_AHEAD):
            check_next()
        for index, _layer in progress(todo, weights, "checking and drawing", quiet):
            found = ahead.popleft().result()
            check_next()
            init = None if found.init is None else found.init.to_dict()
            drawn.append(_Drawn(index, _layer_section(index, found), found.health, init))
    return drawn


def _share(todo: Sequence[tuple[int, Layer]]) -> tuple[list[tuple[int, Layer]], ...]:
    """Two shares of about equal cost (figures to draw, values to check), each in page order."""
    from weightscope.analysis.init import judged_tensor

    def cost(layer: Layer) -> float:
        figures = int(layer.kind.has_kernel) + int(judged_tensor(layer) is not None) + 1
        return FIGURE_COST * figures + VALUE_COST * sum(t.size for t in layer.tensors)

    shares: tuple[list[tuple[int, Layer]], list[tuple[int, Layer]]] = ([], [])
    loads = [0.0, 0.0]
    for item in sorted(todo, key=lambda item: -cost(item[1])):
        lighter = int(loads[1] < loads[0])
        shares[lighter].append(item)
        loads[lighter] += cost(item[1])
    return tuple(sorted(share, key=lambda item: item[0]) for share in shares)


class _Helper:
    """A child process forked to check and draw a share of the layers while this process draws
    the rest: matplotlib holds the GIL, so on two cores a process draws twice as much as two
    threads. The child inherits the open model (its reads are positioned: pread), runs only
    weightscope's own code on it, sends its :class:`_Drawn` as JSON through a pipe and exits;
    it prints nothing."""

    def __init__(self, todo: Sequence[tuple[int, Layer]], draw: Any) -> None:
        self.todo = list(todo)
        self.pid = 0
        self.read_end = -1
        self._fork_child(draw)

    def _fork_child(self, draw: Any) -> None:
        read_end, write_end = os.pipe()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of forking a process with threads: none of ours runs now
                # (statistics threads are joined, the checks' thread starts after the fork),
                # and h5py holds its own lock over a fork.
                warnings.simplefilter("ignore", DeprecationWarning)
                self.pid = os.fork()
        except OSError:  # no process to spare: this process draws everything
            os.close(read_end)
            os.close(write_end)
            return
        if self.pid == 0:  # pragma: no cover - the child, checked through its parent's page
            os.close(read_end)
            status = 1
            try:
                data = json.dumps([part.to_json() for part in draw(self.todo)])
                with os.fdopen(write_end, "wb") as out:
                    out.write(data.encode("utf-8"))
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        self.read_end = read_end

    def collect(self) -> list[_Drawn] | None:
        """The child's sections, or None when it failed (its share is then drawn here, where
        any error it met is raised again)."""
        if self.read_end < 0:
            return None
        chunks = []
        with os.fdopen(self.read_end, "rb") as pipe:
            self.read_end = -1
            while chunk := pipe.read(1 << 20):
                chunks.append(chunk)
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        if status != 0:
            return None
        try:
            return [_Drawn.from_json(part) for part in json.loads(b"".join(chunks))]
        except (ValueError, TypeError, KeyError):
            return None

    def end(self) -> None:
        """Stop the child if it still runs (an interrupted report)."""
        if self.read_end >= 0:
            os.close(self.read_end)
            self.read_end = -1
        if self.pid:
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            self.pid = 0


def _can_fork() -> bool:
    return sys.platform.startswith("linux") and getattr(os, "fork", None) is not None


def report_html(model: Model, *, with_stats: bool = True, processes: int = 1) -> str:
    """One self-contained HTML page about ``model``: the summary table (with min, max and the
    health flags), the parameter verification, the initializer verdicts and a section for every
    layer that holds weights (conv, dense, embedding, recurrent, normalization, unknown): its
    health, init verdict and params check, every tensor's statistics, and its figures (the
    kernel slices or matrix, the histogram against the initializer, or, for tensors no init check
    applies to, the histogram of their values). Each layer's checks run once (see
    :mod:`weightscope.analysis.findings`), as the figures are drawn.

    ``processes=2`` (Linux only; the command line asks for it where two CPUs are free) forks
    one child that checks and draws about half of the layers: the page is the same. Leave it at
    1 in a notebook, whose other threads a fork would not take along.

    The page needs nothing but itself: inline CSS, figures as base64 PNG ``data:`` URIs, no
    JavaScript, no link or resource outside the page. ``with_stats=False`` reads no tensor data:
    the page then holds the summary (without statistics) and the parameter verification only.
    """
    from weightscope.analysis.findings import weight_layers
    from weightscope.analysis.params import verify

    source = "(in memory)" if model.source is None else str(model.source)
    params = verify(model)
    sections = []
    if with_stats:
        _read_stats((t for _, t in model.tensors()), tolerant=False)
        pairs = zip(model.layers, params.layers, strict=True)
        entries = {id(layer): entry for layer, entry in pairs}
        todo = list(enumerate(weight_layers(model)))

        def draw(share: Sequence[tuple[int, Layer]], quiet: bool = True) -> list[_Drawn]:
            return _draw_layers(share, entries, model.producer, quiet=quiet)

        helper = None
        mine = todo
        if processes > 1 and len(todo) > 1 and _can_fork():
            mine, theirs = _share(todo)
            helper = _Helper(theirs, draw)
        try:
            drawn = draw(mine, quiet=False)
            if helper is not None:
                drawn += helper.collect() or draw(helper.todo, quiet=False)
        finally:
            if helper is not None:
                helper.end()
        drawn.sort(key=lambda part: part.index)
        health = {
            layer.name: part.health
            for (_, layer), part in zip(todo, drawn, strict=True)
            if part.health is not None
        }
        summary = summary_table(model, stat_columns=("mean", "std", "min", "max"), health=health)
        init_records = [part.init for part in drawn if part.init is not None]
        blocks = "".join(part.section for part in drawn)
        sections = [
            ("summary", "Summary", summary),
            ("params", "Parameter verification", params_html(params.to_dict())),
            ("init", "Initialization", init_html(init_records)),
            ("layers", "Layers", blocks or f"<p{_DIM}>No layer holds weights.</p>"),
        ]
    else:
        sections = [
            ("summary", "Summary", summary_table(model, with_stats=False)),
            ("params", "Parameter verification", params_html(params.to_dict())),
        ]
    nav = "".join(f'<a href="#{key}">{_text(name)}</a>' for key, name, _ in sections)
    body = "".join(
        f'<section id="{key}"><h2>{_text(name)}</h2>{content}</section>'
        for key, name, content in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_text(f'weightscope report: {source}')}</title>"
        f"<style>{PAGE_CSS}</style></head><body>"
        f'<h1>weightscope report</h1><p class="meta">{model_header(model)}</p>'
        f"<nav>{nav}</nav>{body}"
        f"<footer>Written by weightscope {_text(__version__)}.</footer>"
        "</body></html>\n"
    )
