"""The work done for one file, in whichever process runs it (a local worker or a Dask worker):
fingerprint it, read it, and turn it into table rows. Never raises for a bad file: whatever goes
wrong becomes the model row's one-line ``error``."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightscope.analysis.health import MAX_ELEMENTS, LayerHealth, layer_health
from weightscope.errors import WeightscopeError, printable
from weightscope.formats._common.remote import url_scheme
from weightscope.formats.registry import load, url_loose_shards_folder
from weightscope.formats.sharded import loose_shards_folder
from weightscope.limits import Limits
from weightscope.model import Layer, Model, Tensor
from weightscope.scan.columns import FLAG_COLUMNS, complete

HASH_BLOCK = 1 << 20

HEALTH_COLUMNS = (
    "filters",
    "dead_filters",
    "duplicate_filters",
    "large_filters",
    "max_norm_ratio",
    "init_verdict",
)
"""Columns of a layer row taken as they are from :meth:`LayerHealth.to_dict`."""


@dataclass(frozen=True)
class Task:
    """One file to scan, and how."""

    path: str
    limits: Limits = field(default_factory=Limits)
    max_elements: int = MAX_ELEMENTS
    """Largest kernel read whole for the filter checks (see :mod:`weightscope.analysis.health`)."""
    storage_options: dict[str, Any] = field(default_factory=dict)
    """For a URL: the options of its fsspec file system."""


@dataclass
class FileResult:
    """The rows of one file: its model row first, then one row per layer."""

    path: str
    rows: list[dict[str, Any]]

    @property
    def error(self) -> str | None:
        value = self.rows[0].get("error")
        return None if value is None else str(value)


@dataclass(frozen=True)
class Fingerprint:
    path: str
    size_bytes: int
    mtime_ns: int
    sha256: str

    @staticmethod
    def of(path: str | os.PathLike[str]) -> Fingerprint:
        before = os.stat(path)
        digest = file_sha256(path)
        return Fingerprint(os.fspath(path), before.st_size, before.st_mtime_ns, digest)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's content, read in blocks (memory stays bounded)."""
    digest = hashlib.sha256()
    buffer = bytearray(HASH_BLOCK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while count := handle.readinto(buffer):
            digest.update(view[:count])
    return digest.hexdigest()


def error_result(
    path: str,
    message: str,
    error_type: str,
    seconds: float = 0.0,
    fingerprint: Fingerprint | None = None,
) -> FileResult:
    """The single model row of a file that could not be scanned. With the file's
    ``fingerprint``, a re-run skips it while it is unchanged (the same bytes fail the same way);
    without (a time-out, a crashed worker), a re-run tries it again."""
    row: dict[str, Any] = {
        "record": "model",
        "path": path,
        "error": printable(" ".join(message.split())),
        "error_type": error_type,
        "seconds": seconds,
    }
    if fingerprint is not None:
        row.update(
            size_bytes=fingerprint.size_bytes,
            mtime_ns=fingerprint.mtime_ns,
            sha256=fingerprint.sha256,
            inputs="[]",
        )
    return FileResult(path, [complete(row)])


def scan_file(task: Task) -> FileResult:
    """Scan one file into rows; a failure is recorded, never raised."""
    start = time.perf_counter()
    remote = url_scheme(task.path) is not None
    try:
        # a URL is not hashed (that would download it): no fingerprint, so rescanned each time
        fingerprint = None if remote else Fingerprint.of(task.path)
    except OSError as exc:
        message = f"{task.path}: cannot read: {exc.strerror or exc}"
        return error_result(task.path, message, type(exc).__name__)
    except MemoryError:  # --memory-per-job below what a worker needs to start at all
        return error_result(task.path, f"{task.path}: out of memory hashing it", "MemoryError")

    def failed(message: str, error_type: str) -> FileResult:
        seconds = time.perf_counter() - start
        return error_result(task.path, message, error_type, seconds, fingerprint)

    try:
        # the first shard of a set without an index: the set (its folder) is the model
        source: str | Path
        if remote:
            source = url_loose_shards_folder(task.path, task.storage_options) or task.path
        else:
            source = loose_shards_folder(Path(task.path)) or Path(task.path)
        with load(source, limits=task.limits, storage_options=task.storage_options) as model:
            rows = model_rows(model, task.max_elements)
            extra = [] if remote else [Fingerprint.of(p) for p in model.inputs if p != source]
    except WeightscopeError as exc:
        return failed(str(exc), type(exc).__name__)
    except MemoryError:
        return failed(f"{task.path}: ran out of memory reading it", "MemoryError")
    except Exception as exc:  # the scan goes on, whatever one file does
        return failed(f"{task.path}: unexpected {type(exc).__name__}: {exc}", type(exc).__name__)
    head = rows[0]
    if fingerprint is not None:
        head.update(
            size_bytes=fingerprint.size_bytes,
            mtime_ns=fingerprint.mtime_ns,
            sha256=fingerprint.sha256,
        )
    head.update(inputs=json.dumps([vars(f) for f in extra]), seconds=time.perf_counter() - start)
    for row in rows:
        row["path"] = task.path
    return FileResult(task.path, [complete(row) for row in rows])


def model_rows(model: Model, max_elements: int = MAX_ELEMENTS) -> list[dict[str, Any]]:
    """The model row, then one row per layer, of a loaded model (statistics and health read
    from its tensors)."""
    layer_rows = []
    flagged = dict.fromkeys(FLAG_COLUMNS.values(), 0)
    any_flag = 0
    for layer in model.layers:
        health = layer_health(layer, producer=model.producer, max_elements=max_elements)
        layer_rows.append(_layer_row(model, layer, health))
        for flag in health.flags:
            flagged[FLAG_COLUMNS[flag]] += 1
        any_flag += bool(health.flags)
    params = model.params
    head = {
        "record": "model",
        "format": model.format,
        "framework": model.framework,
        "framework_version": _text(model.framework_version),
        "producer": _text(model.producer),
        "params": params.total,
        "layers": len(model.layers),
        "trainable_params": params.trainable,
        "non_trainable_params": params.non_trainable,
        "trainability_unknown_params": params.unknown,
        "layers_flagged": any_flag,
        **flagged,
    }
    return [head, *layer_rows]


def _layer_row(model: Model, layer: Layer, health: LayerHealth) -> dict[str, Any]:
    main = layer.principal
    checked = health.to_dict()  # the same values as inspect --health --json
    row: dict[str, Any] = {
        "record": "layer",
        "format": model.format,
        "framework": model.framework,
        "layer": layer.name,
        "kind": layer.kind,
        "class_name": layer.class_name,
        "params": layer.params,
        "nan": _count(layer.tensors, "nan"),
        "inf": _count(layer.tensors, "inf"),
        **{name: checked[name] for name in HEALTH_COLUMNS},
        "flags": ",".join(health.flags),
        "note": "; ".join(text for text in (layer.note, health.note) if text) or None,
    }
    if main is not None:
        row.update(_tensor_columns(main))
    return row


def _tensor_columns(tensor: Tensor) -> dict[str, Any]:
    columns: dict[str, Any] = {
        "tensor": tensor.role,
        "native_shape": _shape(tensor.native_shape),
        "canonical_shape": _shape(tensor.canonical_shape),
        "canonical_layout": tensor.canonical_layout,
        "dtype": tensor.dtype,
    }
    if tensor.has_stats:
        stats = tensor.stats()
        for name in ("mean", "std", "min", "max", "zeros_fraction"):
            columns[name] = _finite(getattr(stats, name))
    return columns


def _finite(value: float) -> float | None:
    """Statistics with no finite value (a tensor of NaN) are null in every output format."""
    return float(value) if math.isfinite(value) else None


def _count(tensors: list[Tensor], which: str) -> int | None:
    counted = [t for t in tensors if t.has_stats]
    if not counted:
        return None
    return sum(int(getattr(t.stats(), which)) for t in counted)


def _shape(shape: tuple[int, ...] | None) -> str | None:
    if shape is None:
        return None
    return "x".join(str(size) for size in shape) if shape else "scalar"


def _text(value: object) -> str | None:
    return None if value is None else str(value)
