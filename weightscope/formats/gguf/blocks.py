"""GGML element types and the block quantizations weightscope dequantizes, in numpy.

A quantized GGML tensor is a run of blocks along its innermost axis (GGML's ``ne0``, numpy's
last): each block of ``block_size`` values is ``type_size`` bytes holding small integers and the
scales (and minimums) of its sub-blocks. :func:`decode` splits blocks into those parts;
:func:`real_values` computes the values they stand for, in float32 and in the order of
operations GGML's own ``dequantize_row_*`` uses (so the numbers are GGML's, not merely close)::

    real = scale * (stored - zero_point) + offset        one scale and offset per sub-block

The K-quants keep a float16 ``d`` (and ``dmin``) per super-block of 256 and 4- to 8-bit scales
per sub-block of 16 or 32: their ``scale`` here is ``d * sub_scale`` and their ``offset``
``-(dmin * sub_min)``, the two products GGML computes first.

The table types store 4-bit codes that stand for the levels of a fixed table: IQ4_NL and IQ4_XS
a non-uniform one of 16 int8 levels, MXFP4 and NVFP4 the 16 E2M1 (FP4) values, doubled so that
they are integers (GGML's own convention; their scales are halved to match). Their ``stored``
here is the level a code stands for, so ``scale * stored`` is still the value. The ternary types
(TQ1_0, TQ2_0) store -1, 0, 1 plus one (packed five to a byte in base 3, or four to a byte).

The grid types (IQ1_S ... IQ3_S) index lattices of hundreds of points: no ``Parts`` fit them;
:mod:`.grid` dequantizes them through the ``gguf`` package when it is installed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

QK_K = 256
"""Values per super-block of the K-quants."""


class Parts(NamedTuple):
    """The decoded parts of ``n`` blocks."""

    stored: np.ndarray
    """The integers, ``(n, block_size)``, before the zero point is taken off (for the table
    types, the table level each code stands for)."""
    scale: np.ndarray
    """float32 ``(n, sub_blocks)``."""
    zero_point: int
    """The same for every sub-block of the type (0 for none)."""
    offset: np.ndarray | None
    """float32 ``(n, sub_blocks)`` added after scaling, or None."""


@dataclass(frozen=True)
class GGMLType:
    """One GGML element type: ``block_size`` values in ``type_size`` bytes."""

    name: str
    type_id: int
    block_size: int
    type_size: int
    dtype: str | None = None
    """The numpy (or ``bfloat16``) element type of an unquantized type; None for blocks."""
    sub_block: int = 0
    """Values per scale, for a type weightscope dequantizes (0 where it does not)."""
    decode: Callable[[np.ndarray], Parts] | None = None
    grid: bool = False
    """A grid type: dequantized through the ``gguf`` package when installed (:mod:`.grid`)."""
    byteswap: tuple[int, ...] | None = None
    """The byte offsets, in a block, of the 16-bit fields a big-endian file stores swapped;
    None for a block type GGML's tools define no big-endian layout for."""

    @property
    def quantized(self) -> bool:
        return self.dtype is None

    @property
    def dequantized(self) -> bool:
        """Whether weightscope computes the real values of this block type itself."""
        return self.decode is not None

    def nbytes(self, numel: int) -> int:
        """Bytes of ``numel`` values (a whole number of blocks)."""
        return numel // self.block_size * self.type_size


def _half(raw: np.ndarray) -> np.ndarray:
    """Little-endian float16 bytes ``(n, 2)`` as float32 ``(n, 1)``."""
    return np.ascontiguousarray(raw).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """``(n, 16)`` bytes as ``(n, 32)`` 4-bit values: the low nibbles, then the high ones."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _bits(raw: np.ndarray, count: int) -> np.ndarray:
    """Bits ``0..count-1`` of little-endian words ``raw`` (``(n, count // 8)`` bytes), bit i of
    the word first: ``(n, count)`` of 0 and 1."""
    return np.unpackbits(np.ascontiguousarray(raw), axis=1, bitorder="little")[:, :count]


def _q4_0(blocks: np.ndarray) -> Parts:
    return Parts(_nibbles(blocks[:, 2:]), _half(blocks[:, :2]), 8, None)


def _q4_1(blocks: np.ndarray) -> Parts:
    return Parts(_nibbles(blocks[:, 4:]), _half(blocks[:, :2]), 0, _half(blocks[:, 2:4]))


def _q5(qh: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Five-bit values: four from the nibbles, the fifth from bit ``j`` of the 32-bit ``qh``."""
    return _nibbles(qs) | (_bits(qh, 32) << 4)


def _q5_0(blocks: np.ndarray) -> Parts:
    return Parts(_q5(blocks[:, 2:6], blocks[:, 6:]), _half(blocks[:, :2]), 16, None)


def _q5_1(blocks: np.ndarray) -> Parts:
    stored = _q5(blocks[:, 4:8], blocks[:, 8:])
    return Parts(stored, _half(blocks[:, :2]), 0, _half(blocks[:, 2:4]))


def _q8_0(blocks: np.ndarray) -> Parts:
    return Parts(blocks[:, 2:].view(np.int8), _half(blocks[:, :2]), 0, None)


def _crumbs(qs: np.ndarray) -> np.ndarray:
    """``(n, 64)`` bytes as ``(n, 256)`` 2-bit values, GGML's order: for each half of 32 bytes,
    bits 0-1 of all 32, then bits 2-3, 4-5, 6-7."""
    n = qs.shape[0]
    shifts = np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    return ((qs.reshape(n, 2, 1, 32) >> shifts) & 3).reshape(n, QK_K)


def _q2_k(blocks: np.ndarray) -> Parts:
    # scales[16] (low nibble scale, high nibble min), qs[64], d, dmin
    scales = blocks[:, :16]
    d, dmin = _half(blocks[:, 80:82]), _half(blocks[:, 82:84])
    scale = d * (scales & 0x0F).astype(np.float32)
    offset = -(dmin * (scales >> 4).astype(np.float32))
    return Parts(_crumbs(blocks[:, 16:80]), scale, 0, offset)


def _q3_k(blocks: np.ndarray) -> Parts:
    # hmask[32], qs[64], scales[12] (sixteen 6-bit scales), d
    n = blocks.shape[0]
    hmask, packed, d = blocks[:, :32], blocks[:, 96:108], _half(blocks[:, 108:110])
    low = (packed[:, :8].reshape(n, 1, 8) >> np.array([0, 4], np.uint8).reshape(1, 2, 1)) & 0x0F
    high = (packed[:, 8:].reshape(n, 1, 4) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 4, 1)) & 3
    sub = (low.reshape(n, 16) | (high.reshape(n, 16) << 4)).astype(np.int8) - np.int8(32)
    # the high bit of value m*32 + l is bit m of hmask[l]; set means no 4 is taken off
    high_bits = _bits(hmask, 256).reshape(n, 32, 8).transpose(0, 2, 1).reshape(n, QK_K)
    stored = _crumbs(blocks[:, 32:96]) | (high_bits << 2)
    return Parts(stored, d * sub.astype(np.float32), 4, None)


def _k_scales(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: eight 6-bit scales and eight 6-bit minimums packed in 12 bytes."""
    first, second, third = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scale = np.concatenate([first & 0x3F, (third & 0x0F) | ((first >> 2) & 0x30)], axis=1)
    minimum = np.concatenate([second & 0x3F, (third >> 4) | ((second >> 2) & 0x30)], axis=1)
    return scale, minimum


def _nibble_runs(qs: np.ndarray) -> np.ndarray:
    """``(n, 128)`` bytes as ``(n, 256)`` 4-bit values, GGML's K order: for each run of 32
    bytes, their low nibbles, then their high ones."""
    n = qs.shape[0]
    runs = qs.reshape(n, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    return (runs & 0x0F).reshape(n, QK_K)


def _scaled_minimums(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K: ``d * scale`` and ``-(dmin * min)`` of the eight sub-blocks."""
    d, dmin = _half(blocks[:, 0:2]), _half(blocks[:, 2:4])
    scale, minimum = _k_scales(blocks[:, 4:16])
    return d * scale.astype(np.float32), -(dmin * minimum.astype(np.float32))


def _q4_k(blocks: np.ndarray) -> Parts:
    scale, offset = _scaled_minimums(blocks)
    return Parts(_nibble_runs(blocks[:, 16:144]), scale, 0, offset)


def _q5_k(blocks: np.ndarray) -> Parts:
    # d, dmin, scales[12], qh[32], qs[128]: the fifth bit of value m*32 + l is bit m of qh[l]
    n = blocks.shape[0]
    scale, offset = _scaled_minimums(blocks)
    high = _bits(blocks[:, 16:48], 256).reshape(n, 32, 8).transpose(0, 2, 1).reshape(n, QK_K)
    return Parts(_nibble_runs(blocks[:, 48:176]) | (high << 4), scale, 0, offset)


def _q6_k(blocks: np.ndarray) -> Parts:
    # ql[128], qh[64], scales[16] (int8), d
    n = blocks.shape[0]
    ql = blocks[:, :128].reshape(n, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    low = (ql & 0x0F).reshape(n, QK_K)
    qh = blocks[:, 128:192].reshape(n, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(
        1, 1, 4, 1
    )
    high = (qh & 3).reshape(n, QK_K)
    sub = blocks[:, 192:208].view(np.int8).astype(np.float32)
    return Parts(low | (high << 4), _half(blocks[:, 208:210]) * sub, 32, None)


def _q8_k(blocks: np.ndarray) -> Parts:
    # d (float32), qs[256] (int8), bsums[16] (sums for dot products, not values)
    d = np.ascontiguousarray(blocks[:, :4]).view("<f4").astype(np.float32)
    return Parts(blocks[:, 4:260].view(np.int8), d, 0, None)


def _lookup(codes: np.ndarray, table: np.ndarray) -> np.ndarray:
    """4-bit ``codes`` as the int8 levels of their 16-entry ``table``."""
    return table[codes]


IQ4_LEVELS = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8
)
"""The 16 non-uniform levels of IQ4_NL and IQ4_XS (GGML's ``kvalues_iq4nl``)."""
E2M1_DOUBLED = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.int8)
"""The E2M1 (FP4) values of codes 0-15 (sign bit 3, two exponent bits, one mantissa bit:
0, 0.5, 1, 1.5, 2, 3, 4, 6), doubled to integers as GGML keeps them (``kvalues_mxfp4``)."""


def _e8m0_halves() -> np.ndarray:
    """MXFP4's shared scale, E8M0 (a bare exponent, 2**(x - 127)), halved for the doubled
    E2M1 table: 2**(x - 128) for every byte, as float32 (x 0 and 1 are subnormal; GGML gives
    0xFF, E8M0's NaN, no meaning of its own: 2**127)."""
    return np.ldexp(np.float32(1), np.arange(256) - 128).astype(np.float32)


def _ue4m3_halves() -> np.ndarray:
    """NVFP4's scale per 16 values, unsigned E4M3 (four exponent bits of bias 7, three
    mantissa bits; bit 7 unused), halved for the doubled E2M1 table, for every byte; 0x7F,
    E4M3's NaN, counts as 0 as in GGML."""
    code = np.arange(256)
    exponent, mantissa = (code >> 3) & 0x0F, (code & 7).astype(np.float64)
    value = np.where(
        exponent == 0,
        np.ldexp(mantissa, -9),  # subnormal: mantissa / 8 * 2**(1 - 7)
        np.ldexp(1 + mantissa / 8, exponent - 7),
    )
    value[0x7F] = 0
    return (value / 2).astype(np.float32)  # every one exact in float32


E8M0_HALVES = _e8m0_halves()
UE4M3_HALVES = _ue4m3_halves()


def _iq4_nl(blocks: np.ndarray) -> Parts:
    # d, qs[16]: the low nibbles of the 16 bytes, then the high ones
    return Parts(_lookup(_nibbles(blocks[:, 2:]), IQ4_LEVELS), _half(blocks[:, :2]), 0, None)


def _iq4_xs(blocks: np.ndarray) -> Parts:
    # d, scales_h (a 16-bit word: 2 high bits per sub-block), scales_l[4] (4 low bits per
    # sub-block, the low nibble first), qs[128] (per sub-block of 32: 16 bytes, low nibbles
    # then high)
    n = blocks.shape[0]
    high = blocks[:, 2:4].copy().view("<u2").astype(np.uint16)
    high = (high >> np.arange(0, 16, 2, dtype=np.uint16).reshape(1, 8)) & 3
    low = _nibbles(blocks[:, 4:8]).reshape(n, 2, 4).transpose(0, 2, 1).reshape(n, 8)
    sub = (low | (high.astype(np.uint8) << 4)).astype(np.int8) - np.int8(32)
    codes = _nibbles(blocks[:, 8:].reshape(n * 8, 16)).reshape(n, QK_K)
    return Parts(_lookup(codes, IQ4_LEVELS), _half(blocks[:, :2]) * sub.astype(np.float32), 0, None)


def _mxfp4(blocks: np.ndarray) -> Parts:
    # e (E8M0), qs[16]: the low nibbles, then the high ones
    scale = E8M0_HALVES[blocks[:, :1]]
    return Parts(_lookup(_nibbles(blocks[:, 1:]), E2M1_DOUBLED), scale, 0, None)


def _nvfp4(blocks: np.ndarray) -> Parts:
    # d[4] (UE4M3, one per 16 values), qs[32]: per 16 values, 8 bytes, low nibbles then high
    n = blocks.shape[0]
    codes = _nibbles(blocks[:, 4:].reshape(n * 4, 8)).reshape(n, 64)
    return Parts(_lookup(codes, E2M1_DOUBLED), UE4M3_HALVES[blocks[:, :4]], 0, None)


_POWERS_OF_3 = np.array([1, 3, 9, 27, 81], np.uint8)


def _trits(packed: np.ndarray, digits: int) -> np.ndarray:
    """Bytes that hold ``digits`` base-3 digits each as a fixed-point fraction of 243 (GGML's
    TQ1_0 packing): ``(n, m)`` bytes as ``(n, digits * m)`` digits 0-2, digit j of every byte
    before digit j + 1 of any. Multiplying by 3**j (mod 256) brings digit j to the top; times
    3, its integer part is the digit."""
    shifted = packed[:, None, :] * _POWERS_OF_3[:digits].reshape(1, digits, 1)  # wraps mod 256
    return ((shifted.astype(np.uint16) * 3) >> 8).astype(np.uint8).reshape(packed.shape[0], -1)


def _tq1_0(blocks: np.ndarray) -> Parts:
    # qs[48] (32 bytes of 5 digits, then 16 of 5), qh[4] (4 digits each), d
    digits = [_trits(blocks[:, :32], 5), _trits(blocks[:, 32:48], 5), _trits(blocks[:, 48:52], 4)]
    return Parts(np.concatenate(digits, axis=1), _half(blocks[:, 52:54]), 1, None)


def _tq2_0(blocks: np.ndarray) -> Parts:
    # qs[64] (2-bit values, the K-quants' order), d
    return Parts(_crumbs(blocks[:, :64]), _half(blocks[:, 64:66]), 1, None)


def real_values(parts: Parts, sub_block: int) -> np.ndarray:
    """The float32 values ``(n, block_size)`` of decoded blocks."""
    n, size = parts.stored.shape
    stored = parts.stored.astype(np.int16)
    if parts.zero_point:
        stored -= np.int16(parts.zero_point)
    values = stored.astype(np.float32).reshape(n, size // sub_block, sub_block)
    values *= parts.scale.reshape(n, -1, 1)
    if parts.offset is not None:
        values += parts.offset.reshape(n, -1, 1)
    return values.reshape(n, size)


def _plain(name: str, type_id: int, dtype: str, size: int) -> GGMLType:
    return GGMLType(name, type_id, 1, size, dtype)


def _blocks(
    name: str,
    type_id: int,
    block_size: int,
    type_size: int,
    sub_block: int = 0,
    decode: Callable[[np.ndarray], Parts] | None = None,
    byteswap: tuple[int, ...] | None = None,
) -> GGMLType:
    return GGMLType(name, type_id, block_size, type_size, None, sub_block, decode, False, byteswap)


def _grid(name: str, type_id: int, type_size: int) -> GGMLType:
    return GGMLType(name, type_id, QK_K, type_size, grid=True)


TYPES: dict[int, GGMLType] = {
    t.type_id: t
    for t in (
        _plain("F32", 0, "float32", 4),
        _plain("F16", 1, "float16", 2),
        _blocks("Q4_0", 2, 32, 18, 32, _q4_0, (0,)),
        _blocks("Q4_1", 3, 32, 20, 32, _q4_1),
        _blocks("Q5_0", 6, 32, 22, 32, _q5_0),
        _blocks("Q5_1", 7, 32, 24, 32, _q5_1),
        _blocks("Q8_0", 8, 32, 34, 32, _q8_0, (0,)),
        _blocks("Q8_1", 9, 32, 36),
        _blocks("Q2_K", 10, QK_K, 84, 16, _q2_k),
        _blocks("Q3_K", 11, QK_K, 110, 16, _q3_k),
        _blocks("Q4_K", 12, QK_K, 144, 32, _q4_k, (0, 2)),
        _blocks("Q5_K", 13, QK_K, 176, 32, _q5_k),
        _blocks("Q6_K", 14, QK_K, 210, 16, _q6_k, (208,)),
        _blocks("Q8_K", 15, QK_K, 292, QK_K, _q8_k),
        _grid("IQ2_XXS", 16, 66),
        _grid("IQ2_XS", 17, 74),
        _grid("IQ3_XXS", 18, 98),
        _grid("IQ1_S", 19, 50),
        _blocks("IQ4_NL", 20, 32, 18, 32, _iq4_nl),
        _grid("IQ3_S", 21, 110),
        _grid("IQ2_S", 22, 82),
        _blocks("IQ4_XS", 23, QK_K, 136, 32, _iq4_xs),
        _plain("I8", 24, "int8", 1),
        _plain("I16", 25, "int16", 2),
        _plain("I32", 26, "int32", 4),
        _plain("I64", 27, "int64", 8),
        _plain("F64", 28, "float64", 8),
        _grid("IQ1_M", 29, 56),
        _plain("BF16", 30, "bfloat16", 2),
        _blocks("TQ1_0", 34, QK_K, 54, QK_K, _tq1_0),
        _blocks("TQ2_0", 35, QK_K, 66, QK_K, _tq2_0),
        _blocks("MXFP4", 39, 32, 17, 32, _mxfp4, ()),
        _blocks("NVFP4", 40, 64, 36, 16, _nvfp4, ()),
        _blocks("Q1_0", 41, 128, 18),
    )
}
"""Every GGML type a GGUF file may declare, by type id (ids 4, 5 and 31-33, 36-38 were
removed from GGML and never appear in files). ``byteswap`` follows the gguf package's
``gguf_convert_endian`` (the types llama.cpp's tools write big-endian: Q4_0, Q8_0, Q4_K and
Q6_K with their float16 fields swapped, MXFP4 and NVFP4 bytes alone); Q8_1 (never written to
files) and Q1_0 (no reference dequantizes it yet) are listed, not dequantized."""
