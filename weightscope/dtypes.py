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
    numbers, strings or types weightscope cannot decode (``onnx type 99``, ``ggml Q1_0``).
    Other unexpected types say yes, so that asking for their statistics fails with a message
    naming the problem."""
    return not (name in NO_STATISTICS or name.startswith(("complex", "onnx type", "ggml ")))


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (any 2-byte array; a big-endian ``>u2`` one read as numbers) as
    the float32 values they stand for."""
    if bits.dtype.kind == "u" and not bits.dtype.isnative:
        bits = bits.astype(np.uint16)
    return (bits.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


FLOAT8_FORMATS: dict[str, tuple[int, int, bool]] = {
    "float8_e4m3fn": (4, 7, False),
    "float8_e4m3fnuz": (4, 8, True),
    "float8_e5m2": (5, 15, False),
    "float8_e5m2fnuz": (5, 16, True),
}
"""The 8-bit floats ONNX stores: (exponent bits, exponent bias, ``fnuz``). ``e5m2`` follows
IEEE 754 (infinities, NaNs where the exponent is all ones); ``e4m3fn`` has no infinities and one
NaN per sign (all other bits ones); the ``fnuz`` kinds have no infinities, no negative zero, and
their one NaN where negative zero would be."""

_FLOAT8_TABLES: dict[str, np.ndarray] = {}


def _float8_table(name: str) -> np.ndarray:
    """The float32 value of each of the 256 bit patterns of an 8-bit float kind."""
    exponent_bits, bias, fnuz = FLOAT8_FORMATS[name]
    mantissa_bits = 7 - exponent_bits
    bits = np.arange(256, dtype=np.int64)
    sign = np.where(bits & 0x80, -1.0, 1.0)
    exponent = (bits >> mantissa_bits) & ((1 << exponent_bits) - 1)
    mantissa = (bits & ((1 << mantissa_bits) - 1)) / (1 << mantissa_bits)
    normal = np.ldexp(1.0 + mantissa, (exponent - bias).astype(np.int32))
    subnormal = np.ldexp(mantissa, 1 - bias)
    table = sign * np.where(exponent == 0, subnormal, normal)
    top = (1 << exponent_bits) - 1
    if fnuz:
        table[0x80] = np.nan
    elif exponent_bits == 5:
        ones = exponent == top
        table[ones] = np.where(mantissa[ones] == 0, sign[ones] * np.inf, np.nan)
    else:
        table[(bits & 0x7F) == 0x7F] = np.nan
    return table.astype(np.float32)


def float8_to_float32(bits: np.ndarray, name: str) -> np.ndarray:
    """8-bit float bit patterns (any 1-byte array) of kind ``name`` (``float8_e4m3fn``...) as
    the float32 values they stand for."""
    table = _FLOAT8_TABLES.get(name)
    if table is None:
        table = _FLOAT8_TABLES[name] = _float8_table(name)
    return table[np.asarray(bits).view(np.uint8)]
