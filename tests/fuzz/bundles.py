"""Mutations of a TensorFlow checkpoint bundle that get past its checksums: the index's
entries are decoded, one ``BundleEntryProto`` (or the header) is changed, and the table is
written again by the tests' own writer with valid block CRCs, so that the lie reaches the
reader's checks of dtypes, shapes, shards, offsets and sizes instead of stopping at a CRC.
Also: the data shard cut, extended, removed or damaged (where a tensor's CRC must catch it),
and the object graph's bytes damaged (a string tensor: no CRC is checked on it)."""

from __future__ import annotations

import random

from tests.tf_bundles import _field, _varint, index_bytes

from . import raw
from .protobuf import read_varint

Files = dict[str, bytes]

SHAPE_LIES = [
    (), (0,), (1 << 40,), (2, 3), (3, 2), (1,) * 40, (1 << 31, 1 << 31), (6,), (7,),
]  # fmt: skip
DTYPES = [0, 1, 2, 3, 7, 14, 19, 20, 21, 24, 99, 1 << 40]


def _fields(value: bytes) -> list[tuple[int, int, bytes]]:
    """(number, wire type, encoded value) of a message, assumed well formed."""
    out, at = [], 0
    while at < len(value):
        tag, start = read_varint(value, at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, end = read_varint(value, start)
        elif wire == 2:
            length, body = read_varint(value, start)
            end = body + length
        else:
            end = start + (4 if wire == 5 else 8)
        out.append((number, wire, value[at:end]))
        at = end
    return out


def _changed_entry(value: bytes, rng: random.Random) -> tuple[bytes, str]:
    fields = _fields(value)
    choice = rng.random()
    if choice < 0.35:
        number = rng.choice([1, 3, 4, 5])
        new = (
            rng.choice([*raw.INTERESTING, *DTYPES]) if number == 1 else rng.choice(raw.INTERESTING)
        )
        kept = [f for n, _, f in fields if n != number]
        return b"".join(kept) + _varint(number << 3) + _varint(
            new % (1 << 64)
        ), f"field {number} -> {new}"
    if choice < 0.6:
        shape = rng.choice(SHAPE_LIES)
        dims = b"".join(_field(2, _field(1, d)) for d in shape)
        if rng.random() < 0.1:
            dims += _field(3, 1)  # unknown rank
        kept = [f for n, _, f in fields if n != 2]
        return b"".join(kept) + _field(2, dims), f"shape -> {shape}"
    if choice < 0.75:
        kept = [f for n, _, f in fields if n != 6]
        crc = rng.getrandbits(32).to_bytes(4, "little")
        return b"".join(kept) + _varint(6 << 3 | 5) + crc, "crc32c changed"
    if choice < 0.85:
        dropped = rng.randrange(len(fields)) if fields else 0
        return b"".join(
            f for i, (_, _, f) in enumerate(fields) if i != dropped
        ), f"field {dropped} dropped"
    return value + _field(7, _field(1, _field(1, 0))), "a slice spec added"


def _changed_header(value: bytes, rng: random.Random) -> tuple[bytes, str]:
    shards = rng.choice([0, 1, 2, 99999, 100001, 2**63, 2**64 - 1])
    order = rng.choice([0, 0, 1, 2])
    return _field(1, shards) + _field(2, order), f"header: {shards} shards, byte order {order}"


def mutate(files: Files, index_name: str, shard_name: str, rng: random.Random) -> tuple[Files, str]:
    from weightscope.formats.tensorflow.table import entries

    files = dict(files)
    choice = rng.random()
    if choice < 0.25:
        action = rng.random()
        shard = files[shard_name]
        if action < 0.15:
            del files[shard_name]
            return files, "data shard removed"
        if action < 0.4:
            cut = rng.randrange(len(shard) + 1)
            files[shard_name] = shard[:cut]
            return files, f"data shard cut to {cut}"
        files[shard_name], note = raw.mutate(shard, rng)
        return files, f"data shard: {note}"
    if choice < 0.3:
        files[index_name], note = raw.mutate(files[index_name], rng)
        return files, f"index: {note}"
    items = [(bytes(k), bytes(v)) for k, v in entries(files[index_name])]
    if not items:
        return files, "nothing to change"
    at = rng.randrange(len(items))
    key, value = items[at]
    if choice < 0.4:
        items.insert(at, (key, value))
        note = f"entry {key[:40]!r} twice"
    elif not key:
        new, note = _changed_header(value, rng)
        items[at] = (key, new)
    elif choice < 0.45:
        del items[at]
        note = f"entry {key[:40]!r} removed"
    else:
        new, note = _changed_entry(value, rng)
        items[at] = (key, new)
        note = f"entry {key[:40]!r}: {note}"
    items.sort()
    files[index_name] = index_bytes(items)
    return files, note
