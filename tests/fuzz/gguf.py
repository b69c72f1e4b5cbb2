"""Mutations of GGUF files that know their header: a count, a string or array length, a value
or array type, a tensor's dims, GGML type or offset, or ``general.alignment``, rewritten with a
value that breaks size arithmetic, a tensor info's fields swapped with another's, or the data
cut."""

from __future__ import annotations

import random
import struct

from . import raw

Field = tuple[int, int, str]
"""(byte offset, width, what) of one integer field of the header."""

SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def fields(data: bytes) -> list[Field]:
    """The integer fields of a well-formed GGUF header (the seed's), in file order."""
    found: list[Field] = [(4, 4, "version"), (8, 8, "tensor count"), (16, 8, "metadata count")]
    tensor_count, kv_count = struct.unpack_from("<QQ", data, 8)

    def string(at: int, what: str) -> int:
        found.append((at, 8, f"{what} length"))
        return at + 8 + struct.unpack_from("<Q", data, at)[0]

    def value(at: int, kind: int, what: str) -> int:
        if kind in SCALAR_SIZES:
            if what == "general.alignment":
                found.append((at, SCALAR_SIZES[kind], "alignment"))
            return at + SCALAR_SIZES[kind]
        if kind == 8:
            return string(at, what)
        found.append((at, 4, f"{what} array type"))
        found.append((at + 4, 8, f"{what} array length"))
        item, length = struct.unpack_from("<IQ", data, at)
        at += 12
        for _ in range(length):
            at = value(at, item, what)
        return at

    at = 24
    for _ in range(kv_count):
        key_end = string(at, "key")
        key = data[at + 8 : key_end].decode()
        found.append((key_end, 4, f"{key} type"))
        kind = struct.unpack_from("<I", data, key_end)[0]
        at = value(key_end + 4, kind, key)
    for index in range(tensor_count):
        at = string(at, f"tensor {index} name")
        found.append((at, 4, f"tensor {index} n_dims"))
        n_dims = struct.unpack_from("<I", data, at)[0]
        at += 4
        for dim in range(n_dims):
            found.append((at, 8, f"tensor {index} dim {dim}"))
            at += 8
        found.append((at, 4, f"tensor {index} type"))
        found.append((at + 4, 8, f"tensor {index} offset"))
        at += 12
    return found


def mutate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    choice = rng.random()
    if choice < 0.3:
        return raw.mutate(data, rng)
    found = fields(data)
    if choice < 0.85:
        at, width, what = rng.choice(found)
        old = int.from_bytes(data[at : at + width], "little")
        value = rng.choice(
            [*raw.INTERESTING, old + 1, old - 1, old * 2, old + 32, old + 4, old // 2, 99, 77]
        )
        packed = (value % (1 << 8 * width)).to_bytes(width, "little")
        return data[:at] + packed + data[at + width :], f"gguf: {what} {old} -> {value}"
    if choice < 0.93:
        offsets = [f for f in found if f[2].endswith("offset")]
        if len(offsets) >= 2:
            (a, _, what_a), (b, _, what_b) = rng.sample(offsets, 2)
            out = bytearray(data)
            out[a : a + 8], out[b : b + 8] = data[b : b + 8], data[a : a + 8]
            return bytes(out), f"gguf: {what_a} and {what_b} swapped"
    cut = rng.randrange(len(data))
    return data[:cut], f"gguf: cut to {cut} of {len(data)} bytes"
