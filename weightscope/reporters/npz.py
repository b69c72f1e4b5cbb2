"""``weightscope export``: every tensor in canonical layout (one array per tensor) in a ``.npz``."""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path

import numpy as np

from weightscope.errors import WeightscopeError
from weightscope.model import Model
from weightscope.output import atomic_output

MAX_KEY_BYTES = 1024
"""Longer keys (names from a hostile file can be any length; zip allows 65535 bytes) are cut and
given a digest of the whole name, so they stay distinct."""


def export_key(layer_name: str, role: str) -> str:
    """``<layer>/<role>``, as text any zip can hold: characters UTF-8 cannot encode (lone
    surrogates from a damaged pickle) are written as ``\\udcff`` escapes, and very long keys
    are cut."""
    key = f"{layer_name}/{role}".encode("utf-8", "backslashreplace").decode("utf-8")
    if len(key.encode("utf-8")) <= MAX_KEY_BYTES:
        return key
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]
    cut = key.encode("utf-8")[: MAX_KEY_BYTES - 20].decode("utf-8", "ignore")
    return f"{cut}~{digest}"


def export_npz(model: Model, out: str | os.PathLike[str]) -> list[str]:
    """Write ``<layer name>/<role>`` -> canonical array (tensors with no canonical form as stored).

    Arrays are written one at a time, so memory holds at most one tensor. The file appears only
    when complete. Returns the keys written, in model order.
    """
    keys: list[str] = []
    with (
        atomic_output(Path(out), model) as temp,
        zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf,
    ):
        for layer, tensor in model.tensors():
            key = export_key(layer.name, tensor.role)
            if key in keys:
                raise WeightscopeError(f"{model.source}: two tensors export as {key!r}")
            array = tensor.canonical() if tensor.native_layout else tensor.numpy()
            with zf.open(key + ".npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.ascontiguousarray(array), allow_pickle=False)
            keys.append(key)
    return keys
