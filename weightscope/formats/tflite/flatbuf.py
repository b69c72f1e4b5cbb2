"""Bounds-checked reading of a flatbuffer (TFLite's container): every offset and length the file
declares is checked against its size before it is followed, vectors are capped by what the file
can hold, and the elements all vectors declare together by a budget (a hostile file can point
many tables at one long vector), so a damaged file is refused in one line, never a hang or a
huge allocation."""

from __future__ import annotations

import struct
from collections.abc import Callable

import numpy as np

_U16 = struct.Struct("<H")
_I32 = struct.Struct("<i")
_U32 = struct.Struct("<I")

BUDGET_FACTOR = 8
"""Most vector elements a file may make the reader take, per byte of the file (plus a margin):
each element of a vector is at least a byte, so a real file declares far fewer."""


class FlatBuffer:
    """The file's bytes (a read-only map) and the checks every read goes through."""

    def __init__(self, data: bytes | memoryview, error: Callable[[str], Exception]) -> None:
        self.data = data
        self.size = len(data)
        self.error = error
        self.budget = BUDGET_FACTOR * self.size + 1_000_000

    def check(self, position: int, nbytes: int, what: str) -> None:
        if position < 0 or nbytes < 0 or position + nbytes > self.size:
            raise self.error(
                f"{what} at byte {position} lies outside the file ({self.size:,} bytes)"
            )

    def u8(self, position: int, what: str) -> int:
        self.check(position, 1, what)
        return self.data[position]

    def u16(self, position: int, what: str) -> int:
        self.check(position, 2, what)
        return _U16.unpack_from(self.data, position)[0]

    def i32(self, position: int, what: str) -> int:
        self.check(position, 4, what)
        return _I32.unpack_from(self.data, position)[0]

    def u32(self, position: int, what: str) -> int:
        self.check(position, 4, what)
        return _U32.unpack_from(self.data, position)[0]

    def spend(self, elements: int, what: str) -> None:
        self.budget -= elements
        if self.budget < 0:
            raise self.error(f"{what}: the file declares the same structures over and over")

    def root(self) -> Table:
        return Table(self, self.u32(0, "the root table's offset"), "the model table")


class Table:
    """One flatbuffer table: its fields by their index in the schema (field ``i`` at vtable
    offset ``4 + 2 * i``)."""

    __slots__ = ("buffer", "object_size", "position", "vtable", "vtable_size", "what")

    def __init__(self, buffer: FlatBuffer, position: int, what: str) -> None:
        self.buffer = buffer
        self.position = position
        self.what = what
        vtable = position - buffer.i32(position, what)
        self.vtable = vtable
        self.vtable_size = buffer.u16(vtable, f"{what}'s vtable")
        self.object_size = buffer.u16(vtable + 2, f"{what}'s vtable")
        if self.vtable_size < 4 or self.vtable_size % 2:
            raise buffer.error(f"{what}'s vtable is malformed")
        buffer.check(vtable, self.vtable_size, f"{what}'s vtable")
        buffer.check(position, max(self.object_size, 4), what)

    def _field(self, index: int, width: int) -> int:
        """The field's absolute position, or 0 where the table leaves it out."""
        slot = 4 + 2 * index
        if slot >= self.vtable_size:
            return 0
        offset = self.buffer.u16(self.vtable + slot, self.what)
        if not offset:
            return 0
        if offset + width > self.object_size:
            raise self.buffer.error(f"{self.what}: field {index} lies outside its table")
        return self.position + offset

    def scalar(self, index: int, fmt: str, default: int | float = 0) -> int | float:
        layout = struct.Struct("<" + fmt)
        position = self._field(index, layout.size)
        if not position:
            return default
        self.buffer.check(position, layout.size, self.what)
        return layout.unpack_from(self.buffer.data, position)[0]

    def _target(self, index: int) -> int:
        """Where the offset in field ``index`` points; 0 where the field is left out."""
        position = self._field(index, 4)
        if not position:
            return 0
        return position + self.buffer.u32(position, self.what)

    def table(self, index: int, what: str) -> Table | None:
        target = self._target(index)
        return Table(self.buffer, target, what) if target else None

    def vector(self, index: int, element_size: int, what: str) -> tuple[int, int]:
        """(position of the first element, length) of a vector field; (0, 0) when absent."""
        target = self._target(index)
        if not target:
            return 0, 0
        length = self.buffer.u32(target, f"{what}'s length")
        start = target + 4
        if length * element_size > self.buffer.size - start:
            raise self.buffer.error(
                f"{what} declares {length:,} elements, more than the file can hold"
            )
        self.buffer.spend(length, what)
        return start, length

    def array(self, index: int, dtype: str, what: str) -> np.ndarray:
        """A vector of scalars, copied out of the file."""
        kind = np.dtype(dtype).newbyteorder("<")
        start, length = self.vector(index, kind.itemsize, what)
        if not length:
            return np.zeros(0, kind.newbyteorder("="))
        values = np.frombuffer(self.buffer.data, kind, length, start)
        return values.astype(kind.newbyteorder("="))

    def tables(self, index: int, what: str) -> list[Table]:
        start, length = self.vector(index, 4, what)
        result = []
        for i in range(length):
            slot = start + 4 * i
            result.append(Table(self.buffer, slot + self.buffer.u32(slot, what), what))
        return result

    def string(self, index: int, what: str, limit: int = 4096) -> str:
        """A string field (cut to ``limit`` characters: names only label things)."""
        start, length = self.vector(index, 1, what)
        if not length:
            return ""
        raw = bytes(self.buffer.data[start : start + min(length, limit)])
        return raw.decode("utf-8", "replace")
