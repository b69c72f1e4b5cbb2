"""CRC32C (Castagnoli), the checksum TensorFlow keeps of every checkpoint tensor and every
index block, in numpy: no compiled extension is needed. A long buffer is split into many
lanes checksummed side by side (one table step per byte row, vectorised over the lanes), and
the lanes' checksums are joined with the "shift by n zero bytes" linear map, as zlib's
``crc32_combine`` does; a short one takes the plain byte loop."""

from __future__ import annotations

from functools import cache

import numpy as np

POLY = 0x82F63B78  # reflected Castagnoli polynomial
MASK_DELTA = 0xA282EAD8

LANES = 1 << 15
"""Most lanes checksummed together."""
LANE_BYTES = 128
"""Bytes of each lane per pass: a pass covers at most 4 MiB, which stays in cache."""
SHORT = 1 << 12
"""Buffers shorter than this take the byte loop (joining lanes costs about as much)."""


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(POLY), table >> 1).astype(np.uint32)
    return table


TABLE = _byte_table()
_T1 = (TABLE >> 8) ^ TABLE[TABLE & 0xFF]
_T2 = (_T1 >> 8) ^ TABLE[_T1 & 0xFF]
_T3 = (_T2 >> 8) ^ TABLE[_T2 & 0xFF]
_TABLE_LIST = [int(v) for v in TABLE]


def mask(crc: int) -> int:
    """The masked form LevelDB and TensorFlow store (a CRC of data holding CRCs is weak)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & 0xFFFFFFFF


def crc32c(data: bytes | memoryview | np.ndarray, crc: int = 0) -> int:
    """The CRC32C of ``data``, continuing from ``crc`` (the CRC of what came before)."""
    buffer = np.frombuffer(data, np.uint8) if not isinstance(data, np.ndarray) else data
    register = _raw(buffer.reshape(-1).view(np.uint8), crc ^ 0xFFFFFFFF)
    return register ^ 0xFFFFFFFF


def _raw(data: np.ndarray, register: int) -> int:
    """The CRC register after feeding ``data`` to it (no final inversion)."""
    while len(data) >= SHORT:
        lanes = min(LANES, 1 << ((len(data) // LANE_BYTES).bit_length() - 1))
        head = lanes * LANE_BYTES
        states = _lanes(data[:head].reshape(lanes, LANE_BYTES))
        # the register's own contribution crosses every byte of the pass
        register = int(_shift(np.array([register], np.uint32), head)[0]) ^ _join(states)
        data = data[head:]
    table = _TABLE_LIST
    for byte in data.tobytes():
        register = table[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _lanes(blocks: np.ndarray) -> np.ndarray:
    """The raw CRC (register 0) of each row of ``blocks``, all rows stepped together four
    bytes at a time (one table per byte of the word, as "slicing by 4" does)."""
    words = np.ascontiguousarray(blocks.view("<u4").T)
    state = np.zeros(blocks.shape[0], np.uint32)
    part = np.empty_like(state)
    for word in words:
        state ^= word
        np.bitwise_and(state, 0xFF, out=part)
        total = _T3[part]
        np.right_shift(state, 8, out=part)
        part &= 0xFF
        total ^= _T2[part]
        np.right_shift(state, 16, out=part)
        part &= 0xFF
        total ^= _T1[part]
        np.right_shift(state, 24, out=part)
        total ^= TABLE[part]
        state = total
    return state


def _join(states: np.ndarray) -> int:
    """The raw CRC of the lanes one after another, joined pairwise."""
    length = LANE_BYTES
    while len(states) > 1:
        pairs = states.reshape(-1, 2)
        states = _shift(pairs[:, 0].copy(), length) ^ pairs[:, 1]
        length *= 2
    return int(states[0])


def _shift(values: np.ndarray, nbytes: int) -> np.ndarray:
    """Each register after ``nbytes`` zero bytes (a linear map: one byte table per power)."""
    power = 0
    while nbytes:
        if nbytes & 1:
            values = _apply(_power_tables(power), values)
        nbytes >>= 1
        power += 1
    return values


@cache
def _power_tables(power: int) -> tuple[np.ndarray, ...]:
    """The map "feed 2**power zero bytes" as four byte tables of its images."""
    if power == 0:
        images = np.array([_zero_byte(1 << bit) for bit in range(32)], np.uint32)
    else:
        half = _power_tables(power - 1)
        basis = np.array([1 << bit for bit in range(32)], np.uint32)
        once = _apply(half, basis)
        images = _apply(half, once)
    return _tables(images)


def _zero_byte(register: int) -> int:
    return _TABLE_LIST[register & 0xFF] ^ (register >> 8)


def _apply(tables: tuple[np.ndarray, ...], values: np.ndarray) -> np.ndarray:
    return (
        tables[0][values & 0xFF]
        ^ tables[1][(values >> 8) & 0xFF]
        ^ tables[2][(values >> 16) & 0xFF]
        ^ tables[3][values >> 24]
    )


def _tables(images: np.ndarray) -> tuple[np.ndarray, ...]:
    """Four 256-entry tables: entry b of table j is the image of the bits b << 8j."""
    byte = np.arange(256, dtype=np.uint32)
    tables = []
    for j in range(4):
        table = np.zeros(256, np.uint32)
        for bit in range(8):
            table ^= np.where((byte >> bit) & 1, images[8 * j + bit], 0).astype(np.uint32)
        tables.append(table)
    return tuple(tables)
