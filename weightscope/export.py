"""``weightscope export``: every tensor in canonical layout (one array per tensor) in a ``.npz``."""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from weightscope.errors import WeightscopeError
from weightscope.model import Model


def export_key(layer_name: str, role: str) -> str:
    return f"{layer_name}/{role}"


def export_npz(model: Model, out: str | os.PathLike[str]) -> list[str]:
    """Write ``<layer name>/<role>`` -> canonical array (tensors with no canonical form as stored).

    Arrays are written one at a time, so memory holds at most one tensor. The file appears only
    when complete. Returns the keys written, in model order.
    """
    target = Path(out)
    if model.source is not None and target.exists() and target.resolve() == model.source.resolve():
        raise WeightscopeError(f"{target}: refusing to overwrite the model being exported")
    if not target.parent.is_dir():
        raise WeightscopeError(f"{target}: output folder {target.parent} does not exist")
    keys: list[str] = []
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".ws-", suffix=".npz")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp_name, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
    try:
        with zipfile.ZipFile(temp_name, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for layer, tensor in model.tensors():
                key = export_key(layer.name, tensor.role)
                if key in keys:
                    raise WeightscopeError(f"{model.source}: two tensors export as {key!r}")
                array = tensor.canonical() if tensor.native_layout else tensor.numpy()
                with zf.open(key + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(
                        member, np.ascontiguousarray(array), allow_pickle=False
                    )
                keys.append(key)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return keys
