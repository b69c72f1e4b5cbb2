"""``weightscope export``: every tensor in canonical layout (one array per tensor) in a ``.npz``.

Each array is the member ``<layer>/<role>.npy``, the layer named as its authors know it
(:attr:`~weightscope.model.Layer.user_name`: ``conv1`` for the ONNX node ``/conv1/Conv``). The
zip comment of each member (which ``np.load`` ignores) says what the arrays alone cannot: the
layer's kind and class (and whether the kind was inferred), its groups, the array's canonical
layout, whether it is trainable and whether it counts as a parameter; the archive's comment names
weightscope and the model it came from. weightscope's NumPy reader reads them back, so an export
inspects as the model did."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from weightscope._version import __version__
from weightscope.dtypes import has_real_values
from weightscope.errors import WeightscopeError
from weightscope.limits import DEFAULT, LimitExceeded, Limits, limit_error
from weightscope.model import Layer, Model, Tensor
from weightscope.output import atomic_output

MAX_KEY_BYTES = 1024
"""Longer keys (names from a hostile file can be any length; zip allows 65535 bytes) are cut and
given a digest of the whole name, so they stay distinct."""


def export_key(layer_name: str, role: str) -> str:
    """``<layer>/<role>``, as text any zip can hold: characters UTF-8 cannot encode (lone
    surrogates from a damaged pickle) are written as ``\\udcff`` escapes, a zero byte (where
    ``zipfile`` would end the name) as ``\\x00``, and very long keys are cut."""
    key = f"{layer_name}/{role}".encode("utf-8", "backslashreplace").decode("utf-8")
    key = key.replace("\0", "\\x00")
    if len(key.encode("utf-8")) <= MAX_KEY_BYTES:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    cut = key.encode("utf-8")[: MAX_KEY_BYTES - 20].decode("utf-8", "ignore")
    return f"{cut}~{digest}"


def export_npz(model: Model, out: str | os.PathLike[str], limits: Limits = DEFAULT) -> list[str]:
    """Write ``<layer name>/<role>`` -> canonical array (tensors with no canonical form as stored;
    quantized ones as the real values they stand for, and apart, ``<layer>/<role>/stored``: the
    stored integers in the same layout, ``<layer>/<role>/scale`` and ``/zero_point`` as stored).

    A tensor of a type weightscope does not decode (``ggml Q1_0``), whose values cannot be
    read, is left out and named in the archive's comment (``not_exported``): the rest of the
    model is still written.

    Arrays are written one at a time, so memory holds at most one tensor. The file appears only
    when complete. Returns the keys written, in model order.
    """
    _check_export_budget(model, limits)
    keys: list[str] = []
    not_exported: list[dict[str, str]] = []
    with (
        atomic_output(Path(out), model) as temp,
        zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        for layer, tensor in model.tensors():
            key = export_key(layer.user_name, tensor.role)
            if key in keys:
                raise WeightscopeError(f"{model.source}: two tensors export as {key!r}")
            arrays = _arrays(layer, tensor, key)
            try:
                first = next(arrays)
            except WeightscopeError as exc:
                if has_real_values(tensor.dtype):
                    raise
                not_exported.append({"key": key, "dtype": tensor.dtype, "why": str(exc)})
                continue
            for name, array, metadata in (first, *arrays):
                if name in keys:
                    raise WeightscopeError(f"{model.source}: two tensors export as {name!r}")
                _write(zf, name, array, metadata)
                keys.append(name)
        comment = _model_metadata(model)
        if not_exported:
            comment["not_exported"] = not_exported
        zf.comment = _json(comment)
    return keys


def _arrays(
    layer: Layer, tensor: Tensor, key: str
) -> Iterator[tuple[str, np.ndarray, dict[str, Any]]]:
    """The arrays one tensor exports as: its values, and a quantized one's stored integers,
    scales and zero points."""
    canonical = tensor.native_layout is not None
    metadata = _tensor_metadata(layer, tensor)
    yield key, tensor.canonical() if canonical else tensor.numpy(), metadata
    q = tensor.quantization
    if q is None:
        return
    stored = {**metadata, "stored_dtype": tensor.dtype, "granularity": q.granularity,
              "axis": tensor.quantization_axis, "block_size": q.block_size}  # fmt: skip
    yield f"{key}/stored", tensor.stored_canonical() if canonical else tensor.stored(), stored
    yield f"{key}/scale", q.scales(), {"of": key, "layout": None}
    zeros = q.zero_points()
    if zeros is not None:
        yield f"{key}/zero_point", zeros, {"of": key, "layout": None}
    offsets = q.offsets()
    if offsets is not None:
        yield f"{key}/offset", offsets, {"of": key, "layout": None}


def _write(zf: zipfile.ZipFile, key: str, array: np.ndarray, metadata: dict[str, Any]) -> None:
    info = zipfile.ZipInfo(key + ".npy")
    info.external_attr = 0o644 << 16  # rw-r--r-- when unzipped
    info.comment = _json(metadata)
    with zf.open(info, "w", force_zip64=True) as member:
        np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)


def _model_metadata(model: Model) -> dict[str, Any]:
    return {
        "weightscope": __version__,
        "source": model.source.name[:200] if model.source is not None else None,
        "format": model.format,
        "framework": model.framework,
    }


def _tensor_metadata(layer: Layer, tensor: Tensor) -> dict[str, Any]:
    return {
        "kind": layer.kind.value,
        "inferred": layer.inferred,
        "class": (layer.class_name or "")[:200] or None,
        "groups": layer.groups,
        "layout": tensor.canonical_layout,
        "trainable": tensor.trainable,
        "counted": tensor.counted,
    }


def _json(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def _input_bytes(path: Path) -> int:
    """The size of a file the model was read from (a file read by URL knows its own)."""
    remote_size = getattr(path, "remote_size", None)  # a RemotePath
    if isinstance(remote_size, int):
        return remote_size
    return path.stat().st_size if path.is_file() else 0


def _check_export_budget(model: Model, limits: Limits) -> None:
    """Refuse, before writing anything, an export that would write more than
    ``max_export_ratio`` bytes per byte of the files read (live models are not bounded)."""
    read = sum(_input_bytes(path) for path in model.inputs)
    if not model.inputs:
        return
    writes = sum(_export_bytes(tensor) for _, tensor in model.tensors())
    allowed = limits.max_export_ratio * max(read, 1)
    if writes > allowed:
        raise limit_error(
            model.source or "model",
            LimitExceeded(
                "max_export_ratio",
                limits.max_export_ratio,
                -(-writes // max(read, 1)),
                f"exporting would write {writes:,} bytes from {read:,} read",
            ),
        )


def _export_bytes(tensor: Tensor) -> int:
    """Bytes ``tensor`` exports as: a quantized one also as float32 real values."""
    stored = tensor.size * max(_itemsize(tensor.dtype), 1)
    return stored + (4 * tensor.size if tensor.quantization is not None else 0)


def _itemsize(dtype: str) -> int:
    try:
        return 4 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    except TypeError:
        return 1
