"""The grid types (IQ1_S, IQ1_M, IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S), dequantized through the
``gguf`` package (llama.cpp's own numpy reader and writer, ``weightscope[gguf]``) when it is
installed.

Their blocks index lattices of 256 to 2,048 points, tables GGML keeps as data: weightscope does
not carry a copy, and asks the package that does. It is imported only when such a tensor's
values are read, never to list a file; without it the tensors are listed, counted and said to be
undecoded, naming the package."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import numpy as np

PACKAGE = "gguf"
EXTRA = "pip install 'weightscope[gguf]'"
"""How a user gets the package."""


def available() -> bool:
    """Whether the ``gguf`` package can be found (without importing it): a package, not a
    module of that name that happens to come first on ``sys.path``."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):  # a broken install, or sys.modules["gguf"] set to None
        return False
    return spec is not None and spec.submodule_search_locations is not None


def _quants() -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.quants")


def dequantize(blocks: np.ndarray, type_id: int) -> np.ndarray:
    """The float32 values ``(n, 256)`` of ``n`` blocks ``(n, type_size)`` of the grid type
    ``type_id``; ImportError when the package cannot be imported."""
    quants = _quants()
    qtype = quants.GGMLQuantizationType(type_id)
    values = quants.dequantize(np.ascontiguousarray(blocks), qtype)
    return np.asarray(values, np.float32).reshape(blocks.shape[0], -1)
