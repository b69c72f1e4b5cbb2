"""Element types by name, ``bfloat16`` included (numpy has none): size and decoding."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

BFLOAT16 = "bfloat16"


@lru_cache(maxsize=64)
def itemsize(name: str) -> int:
    """Bytes per element of a numpy dtype name or ``bfloat16`` (cached: asked once per tensor)."""
    return 2 if name == BFLOAT16 else np.dtype(name).itemsize


def is_float(name: str) -> bool:
    """Floating-point element types of any width: ``float16/32/64``, ``bfloat16`` and the 8-bit
    and narrower floats ONNX stores (``float8_e4m3fn``...)."""
    return name == BFLOAT16 or name.startswith("float")


NO_STATISTICS = frozenset(
    {"string", "float4e2m1", "float8e8m0", "int2", "uint2", "float6e2m3", "float6e3m2"}
)
"""Element types with no mean or std: strings, and ONNX types weightscope does not decode."""


def has_real_values(name: str) -> bool:
    """Whether statistics (mean, std, min, max) apply to elements of this type: not to complex
    numbers, strings or types weightscope cannot decode. Other unexpected types say yes, so that
    asking for their statistics fails with a message naming the problem."""
    return not (name in NO_STATISTICS or name.startswith(("complex", "onnx type")))


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (any 2-byte array) as the float32 values they stand for."""
    return (bits.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
