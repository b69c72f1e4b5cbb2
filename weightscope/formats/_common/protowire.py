"""Protobuf's wire format at its smallest: varints, tags and length-delimited fields, shared by
the readers that decode protobuf messages themselves (ONNX models, TensorFlow checkpoint
entries) so that reading a file imports neither protobuf nor a framework."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5

_MASK64 = (1 << 64) - 1


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (the reader names the file)."""


def read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` (at most 64 bits kept) and the position after it."""
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError(f"truncated number at byte {start}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result & _MASK64, pos
        shift += 7
        if shift >= 70:
            raise WireError(f"malformed number at byte {start}")


def fields(buf: Any, pos: int, end: int) -> Iterator[tuple[int, int, Any]]:
    """Each field of the message in ``buf[pos:end]`` as (number, wire type, value): an int for a
    varint or a fixed-width number (unsigned), a memoryview slice for a length-delimited one.
    Every length is checked against ``end``; a group (wire types 3 and 4) is refused."""
    view = memoryview(buf)
    while pos < end:
        tag_start = pos
        tag, pos = read_varint(buf, pos, end)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {tag_start}")
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield number, wire, value
        elif wire == LENGTH_DELIMITED:
            length, pos = read_varint(buf, pos, end)
            if length > end - pos:
                raise WireError(f"field {number} at byte {tag_start} runs past its message")
            yield number, wire, view[pos : pos + length]
            pos += length
        elif wire in (FIXED32, FIXED64):
            width = 4 if wire == FIXED32 else 8
            if width > end - pos:
                raise WireError(f"field {number} at byte {tag_start} runs past its message")
            yield number, wire, int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        else:
            raise WireError(f"field {number} of wire type {wire} at byte {tag_start}")


def signed64(value: int) -> int:
    """A varint's 64 bits read as an int64 (protobuf's ``int64``)."""
    return value - (1 << 64) if value >> 63 else value


def float32(value: int) -> float:
    """A fixed32 field's bits as a float."""
    return float(struct.unpack("<f", value.to_bytes(4, "little"))[0])
