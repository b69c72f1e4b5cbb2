"""Mutations that know nothing of the format: truncation, flipped, inserted, deleted and
overwritten bytes, and a few of them at once. Offsets favour the first and last KB, where
headers and directories lie."""

from __future__ import annotations

import random
import struct

INTERESTING = [
    0, 1, 2, 7, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF,
    0x80000000, 0xFFFFFFFF, 2**32, 2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1, 10**12,
    -1, -2, -(2**31), -(2**63),
]  # fmt: skip
"""Integers that break size and offset arithmetic: signs, bit widths, 10^12."""


def offset(rng: random.Random, size: int, end: bool = False) -> int:
    """A position in ``[0, size)`` (``[0, size]`` with ``end``), often near either end."""
    limit = size + 1 if end else size
    if limit <= 0:
        return 0
    pick = rng.random()
    if pick < 0.3:
        return rng.randrange(min(limit, 1024))
    if pick < 0.45:
        return max(limit - 1 - rng.randrange(min(limit, 1024)), 0)
    return rng.randrange(limit)


def pack_int(value: int, width: int, rng: random.Random) -> bytes:
    order = "<" if rng.random() < 0.8 else ">"
    return struct.pack(order + {1: "B", 2: "H", 4: "I", 8: "Q"}[width], value % (1 << 8 * width))


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    cut = offset(rng, len(data))
    return data[:cut], f"truncated to {cut} of {len(data)} bytes"


def flip(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    count = rng.choice([1, 1, 2, 4, 8])
    places = []
    for _ in range(count):
        at = offset(rng, len(out))
        if out:
            out[at] ^= 1 << rng.randrange(8)
            places.append(at)
    return bytes(out), f"bits flipped at {places}"


def randomize(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    out = bytearray(data)
    at = offset(rng, len(out))
    length = min(rng.choice([1, 2, 4, 16]), len(out) - at)
    out[at : at + length] = rng.randbytes(length)
    return bytes(out), f"{length} random bytes at {at}"


def insert(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    at = offset(rng, len(data), end=True)
    extra = rng.randbytes(rng.choice([1, 1, 2, 3, 8, 64]))
    return data[:at] + extra + data[at:], f"{len(extra)} bytes inserted at {at}"


def delete(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    at = offset(rng, len(data))
    length = rng.choice([1, 1, 2, 4, 16, 256])
    return data[:at] + data[at + length :], f"{length} bytes deleted at {at}"


def overwrite_int(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    width = rng.choice([1, 2, 4, 8])
    at = offset(rng, max(len(data) - width + 1, 1))
    value = rng.choice(INTERESTING)
    out = data[:at] + pack_int(value, width, rng) + data[at + width :]
    return out[: max(len(data), at + width)], f"int {value} ({width} bytes) written at {at}"


def copy_chunk(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if len(data) < 2:
        return truncate(data, rng)
    length = rng.choice([4, 16, 64, 512])
    src, dst = rng.randrange(len(data)), offset(rng, len(data))
    chunk = data[src : src + length]
    return data[:dst] + chunk + data[dst + len(chunk) :], f"{len(chunk)} bytes {src} -> {dst}"


SINGLE = [truncate, flip, flip, randomize, insert, delete, overwrite_int, copy_chunk]


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """One raw mutation, sometimes (havoc) two to four in a row."""
    rounds = 1 if rng.random() < 0.75 else rng.randint(2, 4)
    notes = []
    for _ in range(rounds):
        data, note = rng.choice(SINGLE)(data, rng)
        notes.append(note)
    return data, "raw: " + "; ".join(notes)
