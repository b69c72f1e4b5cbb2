"""A checkpoint bundle's index, decoded: the ``BundleHeaderProto`` under the empty key and one
``BundleEntryProto`` per tensor (``tensorflow/core/protobuf/tensor_bundle.proto``), with their
field numbers. Every number is checked here: shapes, shard ids, and each tensor's byte size
against its dtype and shape; the shard sizes are checked by the reader, which opens them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from weightscope.formats._common.file_region import MAX_RANK
from weightscope.formats._common.protowire import (
    FIXED32,
    LENGTH_DELIMITED,
    VARINT,
    WireError,
    fields,
    signed64,
)
from weightscope.formats.tensorflow.table import TableError, entries

MAX_SHARDS = 100_000
"""More shards than this is a lying header (each is a file)."""

DTYPES = {
    1: "float32", 2: "float64", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 9: "int64",
    10: "bool", 11: "int8", 12: "uint8", 13: "int32", 14: "bfloat16", 15: "int16", 16: "uint16",
    17: "uint16", 19: "float16", 22: "uint32", 23: "uint64", 8: "complex64", 18: "complex128",
}  # fmt: skip
"""TensorFlow's ``DataType`` numbers with fixed-size elements (the quantized ``qint`` types
as their integers)."""

UNSIZED = {7: "string", 20: "resource", 21: "variant"}
"""Types whose bytes are not a fixed number per element: listed, never counted or read."""

ITEMSIZE = {
    "float32": 4, "float64": 8, "int32": 4, "uint8": 1, "int16": 2, "int8": 1, "int64": 8,
    "bool": 1, "bfloat16": 2, "uint16": 2, "float16": 2, "uint32": 4, "uint64": 8,
    "complex64": 8, "complex128": 16,
}  # fmt: skip


@dataclass(frozen=True)
class Header:
    num_shards: int
    byteorder: str


@dataclass(frozen=True)
class BundleEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    sliced: bool
    """A partitioned variable: its data lies in slice entries, not here."""
    crc32c: int | None = None
    """The masked CRC32C of its bytes as stored, when the index keeps one (TensorFlow always
    does)."""
    slice_of: str | None = None
    """For one slice of a partitioned variable (a key of ``\\0``, the variable's name in
    OrderedCode, then the slice's extents), that variable's name."""
    extents: tuple[tuple[int, int], ...] | None = None
    """For one slice: its ``(start, length)`` along each axis of the variable, from its key
    (length -1: the whole axis); None where the key does not decode."""

    @property
    def sized(self) -> bool:
        return self.dtype in ITEMSIZE


class BundleError(ValueError):
    """The index holds something no TensorFlow checkpoint holds (the reader names the file)."""


def read_index(data: bytes) -> tuple[Header, list[BundleEntry]]:
    """The header and the tensor entries of the ``.index`` file's bytes, in key order."""
    header: Header | None = None
    found: list[BundleEntry] = []
    keys: set[bytes] = set()
    try:
        for key, value in entries(data):
            if key in keys:
                raise BundleError(f"the key {key[:80]!r} appears twice")
            keys.add(key)
            if not key:
                header = _header(value)
                continue
            found.append(_entry(key, value))
    except (TableError, WireError) as exc:
        raise BundleError(str(exc)) from exc
    if header is None:
        raise BundleError("no bundle header (the entry with the empty key)")
    for entry in found:
        if entry.shard >= header.num_shards:
            raise BundleError(
                f"tensor {entry.name!r} is in shard {entry.shard} of {header.num_shards}"
            )
    return header, found


def _header(value: memoryview) -> Header:
    num_shards, endianness = 0, 0
    for number, wire, field in fields(value, 0, len(value)):
        if number == 1 and wire == VARINT:
            num_shards = signed64(field)
        elif number == 2 and wire == VARINT:
            endianness = field
    if not 0 <= num_shards <= MAX_SHARDS:
        raise BundleError(f"the header declares {num_shards:,} shards")
    if endianness not in (0, 1):
        raise BundleError(f"the header declares byte order {endianness}")
    return Header(num_shards, "big" if endianness == 1 else "little")


def slice_owner(key: bytes) -> str | None:
    """The variable a slice key belongs to: its name, OrderedCode-escaped (``\\0\\xff`` for
    a zero byte, ``\\xff\\0`` for 0xff) up to ``\\0\\1``, after a leading zero byte; None
    for an ordinary key or one that does not decode."""
    found = _slice_name(key)
    return None if found is None else found[0]


def slice_extents(key: bytes) -> tuple[tuple[int, int], ...] | None:
    """A slice key's extents, as TensorFlow's ``EncodeTensorNameSlice`` writes them after the
    name: the rank (OrderedCode ``WriteNumIncreasing``), then each axis's start and length
    (``WriteSignedNumIncreasing``; -1 for a whole axis). None where the key does not decode."""
    found = _slice_name(key)
    if found is None:
        return None
    pos = found[1]
    if pos >= len(key) or key[pos] > 8:
        return None
    width = key[pos]
    rank = int.from_bytes(key[pos + 1 : pos + 1 + width], "big")
    pos += 1 + width
    if rank > 64:
        return None
    numbers = []
    for _ in range(2 * rank):
        decoded = _signed_increasing(key, pos)
        if decoded is None:
            return None
        value, pos = decoded
        numbers.append(value)
    if pos != len(key):
        return None
    return tuple(zip(numbers[::2], numbers[1::2], strict=True))


def _signed_increasing(key: bytes, pos: int) -> tuple[int, int] | None:
    """One OrderedCode ``WriteSignedNumIncreasing`` number at ``pos``, and the position after
    it: the number's two's complement in ``n`` bytes whose first bits (n ones for a number >= 0,
    n zeros below 0) say ``n``."""
    if pos >= len(key):
        return None
    negative = key[pos] < 0x80
    flip = 0xFF if negative else 0
    head = int.from_bytes(bytes(b ^ flip for b in key[pos : pos + 2]).ljust(2, b"\0"), "big")
    length = 0
    while length < 16 and head & (0x8000 >> length):
        length += 1
    if not 1 <= length <= 10 or pos + length > len(key):
        return None
    raw = bytearray(key[pos : pos + length])
    header = ((0xFFFF << (16 - length)) & 0xFFFF) if length < 16 else 0xFFFF
    raw[0] ^= header >> 8
    if length > 1:
        raw[1] ^= header & 0xFF
    return int.from_bytes(raw, "big", signed=True), pos + length


def _slice_name(key: bytes) -> tuple[str, int] | None:
    """The name in a slice key and the position after its ``\\0\\1`` terminator."""
    if not key.startswith(b"\0"):
        return None
    name = bytearray()
    pos = 1
    while pos + 1 < len(key):
        byte, after = key[pos], key[pos + 1]
        if byte == 0 and after == 1:
            return name.decode("utf-8", "replace"), pos + 2
        if byte == 0 and after == 0xFF:
            name.append(0)
            pos += 2
        elif byte == 0xFF and after == 0:
            name.append(0xFF)
            pos += 2
        else:
            name.append(byte)
            pos += 1
    return None


def _entry(key: bytes, value: memoryview) -> BundleEntry:
    owner = slice_owner(key)
    name = key.decode("utf-8", "replace") if owner is None else owner
    dtype_number = shard = offset = size = 0
    shape: tuple[int, ...] = ()
    sliced = False
    crc: int | None = None
    for number, wire, field in fields(value, 0, len(value)):
        if number == 6 and wire == FIXED32:
            crc = field
        elif wire == VARINT and number in (1, 3, 4, 5):
            if number == 1:
                dtype_number = field
            elif number == 3:
                shard = signed64(field)
            elif number == 4:
                offset = signed64(field)
            else:
                size = signed64(field)
        elif wire == LENGTH_DELIMITED and number == 2:
            shape = _shape(name, field)
        elif wire == LENGTH_DELIMITED and number == 7:
            sliced = True
    dtype = DTYPES.get(dtype_number) or UNSIZED.get(dtype_number)
    if dtype is None:
        raise BundleError(f"tensor {name!r} has unknown dtype number {dtype_number}")
    if shard < 0 or offset < 0 or size < 0:
        raise BundleError(f"tensor {name!r} has a negative shard, offset or size")
    if dtype in ITEMSIZE and not sliced:
        expected = math.prod(shape) * ITEMSIZE[dtype]
        if size != expected:
            raise BundleError(
                f"tensor {name!r}: {size:,} bytes declared, its {dtype} shape {shape} "
                f"needs {expected:,}"
            )
    extents = None if owner is None else slice_extents(key)
    return BundleEntry(name, dtype, shape, shard, offset, size, sliced, crc, owner, extents)


def tensor_shape(message: memoryview) -> tuple[int, ...] | None:
    """A ``TensorShapeProto``: its dims' sizes in order (-1: unknown; proto3 leaves out a size
    of 0), or None for a shape of unknown rank."""
    dims: list[int] = []
    for number, wire, field in fields(message, 0, len(message)):
        if number == 2 and wire == LENGTH_DELIMITED:
            dim = 0
            for inner, inner_wire, inner_field in fields(field, 0, len(field)):
                if inner == 1 and inner_wire == VARINT:
                    dim = signed64(inner_field)
            dims.append(dim)
        elif number == 3 and wire == VARINT and field:
            return None
    return tuple(dims)


def _shape(name: str, message: memoryview) -> tuple[int, ...]:
    shape = tensor_shape(message)
    if shape is None:
        raise BundleError(f"tensor {name!r} has a shape of unknown rank")
    if len(shape) > MAX_RANK:
        raise BundleError(f"tensor {name!r} has more than {MAX_RANK} dimensions")
    negative = next((dim for dim in shape if dim < 0), None)
    if negative is not None:
        raise BundleError(f"tensor {name!r} has a dimension of size {negative}")
    return shape
