"""The columns of the scan table: one row per model (``record = "model"``) and one per layer
(``record = "layer"``), in one table so that a query can join or filter either. Columns that do
not apply to a row are null."""

from __future__ import annotations

STRING = "string"
INT = "int64"
FLOAT = "float64"

COLUMNS: tuple[tuple[str, str, str], ...] = (
    # every row
    ("record", STRING, '"model" or "layer"'),
    ("path", STRING, "absolute path of the model file"),
    ("format", STRING, "file format, as weightscope inspect names it (keras-h5, onnx, ...)"),
    ("framework", STRING, "keras, pytorch or onnx"),
    ("params", INT, "parameters: the model's total, or the layer's"),
    # layer rows
    ("layer", STRING, "layer name"),
    ("kind", STRING, "conv2d, dense, batch_norm, ... (unknown when not classified)"),
    ("class_name", STRING, "the framework's class or ONNX op"),
    ("tensor", STRING, "role of the tensor the shape and statistics describe (kernel, gamma...)"),
    ("native_shape", STRING, "its shape as stored, e.g. 3x3x1x8"),
    ("canonical_shape", STRING, "its canonical shape, e.g. 8x1x3x3 (null if it has none)"),
    ("canonical_layout", STRING, "its canonical layout, e.g. OIHW"),
    ("dtype", STRING, "its element type"),
    ("mean", FLOAT, "statistics of that tensor"),
    ("std", FLOAT, ""),
    ("min", FLOAT, ""),
    ("max", FLOAT, ""),
    ("zeros_fraction", FLOAT, ""),
    ("nan", INT, "NaN values in all the layer's tensors"),
    ("inf", INT, "Inf values in all the layer's tensors"),
    ("filters", INT, "filters (output slices of the canonical kernel) checked"),
    ("dead_filters", INT, "filters of zero or near-zero norm"),
    ("duplicate_filters", INT, "filters equal to an earlier live filter"),
    ("large_filters", INT, "filters whose norm is over 10x the median"),
    ("max_norm_ratio", FLOAT, "largest filter norm over the median"),
    ("init_verdict", STRING, "at_init, trained or unknown (null without a kernel)"),
    ("flags", STRING, "health flags raised, comma-separated (empty when none)"),
    ("note", STRING, "why a check was not made, or what is ambiguous"),
    # model rows
    ("framework_version", STRING, "version of the framework that wrote the file"),
    ("producer", STRING, "program that wrote the file (ONNX)"),
    ("layers", INT, "weight-bearing layers"),
    ("trainable_params", INT, ""),
    ("non_trainable_params", INT, ""),
    ("trainability_unknown_params", INT, "parameters whose file does not say (state dicts)"),
    ("layers_flagged", INT, "layers with at least one health flag"),
    ("layers_nan_inf", INT, "layers flagged nan_inf"),
    ("layers_dead_filters", INT, "layers flagged dead_filters"),
    ("layers_duplicate_filters", INT, "layers flagged duplicate_filters"),
    ("layers_large_norm", INT, "layers flagged large_norm"),
    ("layers_at_init", INT, "layers flagged at_init"),
    ("error", STRING, "one line: why the file could not be read (null when it was)"),
    ("error_type", STRING, "UnsupportedFormatError, CorruptFileError, UnsafeFileError, ..."),
    ("size_bytes", INT, "file size when scanned"),
    ("mtime_ns", INT, "modification time when scanned (ns since the epoch)"),
    ("sha256", STRING, "SHA-256 of the file's content"),
    ("inputs", STRING, "JSON list of the other files read (ONNX external data) and their "
     "fingerprints"),
    ("seconds", FLOAT, "time spent on the file"),
)  # fmt: skip

NAMES = tuple(name for name, _, _ in COLUMNS)
TYPES = {name: kind for name, kind, _ in COLUMNS}

FLAG_COLUMNS = {
    "nan_inf": "layers_nan_inf",
    "dead_filters": "layers_dead_filters",
    "duplicate_filters": "layers_duplicate_filters",
    "large_norm": "layers_large_norm",
    "at_init": "layers_at_init",
}
"""Which model-row column counts the layers raising each health flag."""


def complete(row: dict[str, object]) -> dict[str, object]:
    """``row`` with every column, in table order (null where it has no value)."""
    return {name: row.get(name) for name in NAMES}
