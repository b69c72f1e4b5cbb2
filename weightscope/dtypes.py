"""Element types by name, ``bfloat16`` included (numpy has none): size and decoding."""

from __future__ import annotations

import numpy as np

BFLOAT16 = "bfloat16"


def itemsize(name: str) -> int:
    """Bytes per element of a numpy dtype name or ``bfloat16``."""
    return 2 if name == BFLOAT16 else np.dtype(name).itemsize


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (any 2-byte array) as the float32 values they stand for."""
    return (bits.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
