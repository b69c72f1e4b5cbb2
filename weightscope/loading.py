"""Open a model file: recognise its format from its bytes and hand it to the right adapter."""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from weightscope.adapters import ADAPTERS
from weightscope.errors import (
    CorruptFileError,
    UnsupportedFormatError,
    WeightscopeError,
    file_error,
)
from weightscope.model import Model

SNIFF_BYTES = 64

# What a damaged file makes h5py, zipfile, json and numpy raise while an adapter reads it.
_READ_ERRORS = (
    OSError,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    EOFError,
    RuntimeError,  # with RecursionError and NotImplementedError
    zipfile.BadZipFile,
    zlib.error,
)


def load(source: str | os.PathLike[str] | Any) -> Model:
    """Read a model file, or a live model object (a ``torch.nn.Module``), into the
    framework-free model. A file is opened read-only; tensor data is read when first used. Close
    the model (or use it as a context manager) to release the file.

    Raises ``WeightscopeError`` with one line naming the file and the problem.
    """
    if not isinstance(source, (str, os.PathLike)):
        return _load_live(source)
    file = Path(source)
    if not file.exists():
        raise file_error(UnsupportedFormatError, file, "no such file")
    if file.is_dir():
        raise file_error(UnsupportedFormatError, file, "is a directory, not a model file")
    try:
        with open(file, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise file_error(
            UnsupportedFormatError, file, f"cannot read: {exc.strerror or exc}"
        ) from exc
    if not head:
        raise file_error(UnsupportedFormatError, file, "empty file")
    for adapter in ADAPTERS:
        if adapter.sniff(file, head):
            return _load_with(adapter.FRAMEWORK, adapter.load, file)
    raise file_error(UnsupportedFormatError, file, _unrecognised(file, head))


def _load_live(obj: Any) -> Model:
    from weightscope.adapters import onnx, pytorch

    if pytorch.is_live_module(obj):
        return pytorch.load_module(obj)
    if onnx.is_live_proto(obj):
        return onnx.load_proto(obj)
    raise UnsupportedFormatError(
        f"cannot read a {type(obj).__module__}.{type(obj).__qualname__}: give a file path, a "
        "torch.nn.Module or an onnx.ModelProto"
    )


def _unrecognised(file: Path, head: bytes) -> str:
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(file):
                pass
        except Exception as exc:  # BadZipFile, OSError, UnicodeDecodeError, ValueError...
            return f"damaged or truncated zip archive: {str(exc)[:200]}"
        return "zip archive, but not a .keras file (no model.weights.h5 or config.json)"
    return "not a model file weightscope can read (unknown format)"


def _load_with(framework: str, loader: Callable[[Path], Model], file: Path) -> Model:
    try:
        return loader(file)
    except WeightscopeError:
        raise
    except _READ_ERRORS as exc:
        raise file_error(CorruptFileError, file, f"damaged {framework} file: {exc}") from exc
