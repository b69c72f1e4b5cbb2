"""The GGUF header: magic ``GGUF``, version (2 or 3), tensor and metadata counts, the metadata
key/values, the tensor infos, then padding to the alignment where the tensor data starts. A
big-endian file (its version reads as 2 or 3 only byte-swapped) has every number after the magic
swapped: read so, and marked on the :class:`Header`.

Every count and length the header declares is checked against the bytes left in the file
before anything is read or allocated for it, and the costs a well-formed header could still
impose are bounded by the ``max_gguf_*`` limits. A tensor's dims are kept in GGML's order
(``ne0``, the innermost axis, first), as the file writes them."""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from weightscope.errors import CorruptFileError, UnsupportedFormatError, file_error, short
from weightscope.formats._common.remote import RemoteFile
from weightscope.formats.gguf.blocks import TYPES, GGMLType
from weightscope.limits import Limits

MAGIC = b"GGUF"
VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
"""GGML tensors have at most four dims (``GGML_MAX_DIMS``)."""
MAX_ARRAY_NESTING = 8
"""Arrays of arrays deeper than this are refused (GGUF writers nest none)."""
SAMPLE = 8
"""Elements of a metadata array kept to show (the rest are counted, not kept)."""
MAX_TEXT = 1024
"""Characters of a metadata string kept (a chat template runs to kilobytes)."""

# value types: (struct format, size) of the scalars
SCALARS: dict[int, tuple[str, int]] = {
    0: ("B", 1), 1: ("b", 1), 2: ("H", 2), 3: ("h", 2), 4: ("I", 4), 5: ("i", 4),
    6: ("f", 4), 7: ("?", 1), 10: ("Q", 8), 11: ("q", 8), 12: ("d", 8),
}  # fmt: skip
STRING, ARRAY = 8, 9
TYPE_NAMES = {
    0: "uint8", 1: "int8", 2: "uint16", 3: "int16", 4: "uint32", 5: "int32", 6: "float32",
    7: "bool", 8: "string", 9: "array", 10: "uint64", 11: "int64", 12: "float64",
}  # fmt: skip


@dataclass(frozen=True)
class ArrayValue:
    """A metadata array: its element type, length and first few elements."""

    item_type: str
    length: int
    sample: tuple[Any, ...]

    def __str__(self) -> str:
        shown = ", ".join(str(v) for v in self.sample[:4])
        more = ", ..." if self.length > 4 else ""
        return f"[{shown}{more}] ({self.length:,} {self.item_type})"


@dataclass(frozen=True)
class TensorInfo:
    name: str
    ne: tuple[int, ...]
    """Dims in GGML order: ``ne[0]`` is the innermost (fastest) axis."""
    ggml_type: GGMLType
    offset: int
    """Byte offset from the start of the data section."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape in numpy's (C) order: GGML's dims reversed."""
        return self.ne[::-1]

    @property
    def numel(self) -> int:
        return math.prod(self.ne)

    @property
    def nbytes(self) -> int:
        return self.ggml_type.nbytes(self.numel)


@dataclass
class Header:
    version: int
    metadata: dict[str, Any] = field(default_factory=dict)
    """Values by key: numbers, strings (cut to :data:`MAX_TEXT`), :class:`ArrayValue`."""
    value_types: dict[str, str] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)
    alignment: int = DEFAULT_ALIGNMENT
    data_start: int = 0
    big_endian: bool = False
    """Numbers (and tensor elements) stored most significant byte first."""


class _Cursor:
    """Reads the header in order, each read checked against the file's end and the header
    limit before it is made."""

    def __init__(self, handle: IO[bytes], path: Path, size: int, limits: Limits) -> None:
        self.handle = handle
        self.path = path
        self.size = size
        self.limits = limits
        self.pos = 0
        self.array_elements = 0
        self.end = min(size, limits.max_gguf_header_bytes)
        """Where the header must end, by the file's size and the limit."""
        self.order = "<"
        """struct's byte order of the file's numbers: ``>`` in a big-endian file."""

    def error(self, problem: str) -> Exception:
        return file_error(CorruptFileError, self.path, problem)

    def need(self, nbytes: int, what: str) -> None:
        if self.pos + nbytes <= self.end:  # the common case, without building any message
            return
        if nbytes > self.size - self.pos:
            raise self.error(
                f"{what} declares {nbytes:,} bytes at byte {self.pos:,}, past the end of the "
                f"file ({self.size:,} bytes)"
            )
        self.limits.check(
            "max_gguf_header_bytes",
            self.pos + nbytes,
            f"the header runs past {self.pos + nbytes:,} bytes ({what})",
        )

    def read(self, nbytes: int, what: str) -> bytes:
        self.need(nbytes, what)
        data = self.handle.read(nbytes)
        if len(data) != nbytes:  # the file shrank while read
            raise self.error(f"{what} cut short at byte {self.pos:,}")
        self.pos += nbytes
        return data

    def skip(self, nbytes: int, what: str) -> None:
        self.need(nbytes, what)
        self.handle.seek(nbytes, 1)
        self.pos += nbytes

    def scalar(self, fmt: str, size: int, what: str) -> Any:
        return struct.unpack(self.order + fmt, self.read(size, what))[0]

    def u32(self, what: str) -> int:
        return int(self.scalar("I", 4, what))

    def u64(self, what: str) -> int:
        return int(self.scalar("Q", 8, what))

    def skip_strings(self, count: int, what: str) -> None:
        """Walk past ``count`` strings (a tokenizer's vocabulary: a few hundred thousand), each
        checked to lie within the header, in a loop that does no more than it must."""
        read = self.handle.read
        from_bytes = int.from_bytes
        byteorder: Literal["little", "big"] = "big" if self.order == ">" else "little"
        end = self.end
        pos = self.pos
        for _ in range(count):
            if pos + 8 > end:
                self.pos = pos
                self.need(8, what)
            raw = read(8)
            length = from_bytes(raw, byteorder)
            pos += 8
            if len(raw) != 8 or pos + length > end:
                self.pos = pos - 8 + len(raw)
                self.need(length if len(raw) == 8 else 8, what)
                raise self.error(f"{what} cut short at byte {self.pos:,}")
            if len(read(length)) != length:
                raise self.error(f"{what} cut short at byte {pos:,}")
            pos += length
        self.pos = pos

    def string(self, what: str, keep: int | None = None) -> str:
        length = self.u64(what)
        if keep is None or length <= keep:
            raw = self.read(length, what)
        else:
            raw = self.read(keep, what)
            self.skip(length - keep, what)
        return raw.decode("utf-8", errors="replace")


def read_header(path: Path, limits: Limits, remote: RemoteFile | None = None) -> Header:
    """The header of the GGUF file ``path`` (read by URL through ``remote`` when given)."""
    size = path.stat().st_size if remote is None else remote.size
    with open(path, "rb") if remote is None else remote.sequential_stream() as handle:
        cursor = _Cursor(handle, path, size, limits)
        magic = cursor.read(4, "the magic")
        if magic != MAGIC:
            raise cursor.error(f"starts with {magic!r}, not the GGUF magic")
        raw_version = cursor.read(4, "the version")
        version = int.from_bytes(raw_version, "little")
        big_endian = version not in VERSIONS and int.from_bytes(raw_version, "big") in VERSIONS
        if big_endian:  # every number after the magic, and the tensors' elements, swapped
            version = int.from_bytes(raw_version, "big")
            cursor.order = ">"
        if version not in VERSIONS:
            if version == 1 or int.from_bytes(raw_version, "big") == 1:
                raise file_error(
                    UnsupportedFormatError, path, "is a GGUF version 1 file: not read (2 and 3 are)"
                )
            raise cursor.error(f"unknown GGUF version {version} (2 and 3 are known)")
        header = Header(version, big_endian=big_endian)
        tensor_count = cursor.u64("the tensor count")
        kv_count = cursor.u64("the metadata count")
        # the smallest key/value takes 13 bytes, the smallest tensor info 28
        if kv_count * 13 + tensor_count * 28 > size - cursor.pos:
            raise cursor.error(
                f"the header declares {tensor_count:,} tensors and {kv_count:,} metadata keys, "
                f"more than the file's {size:,} bytes can hold"
            )
        limits.check(
            "max_gguf_entries",
            tensor_count + kv_count,
            f"the header declares {tensor_count:,} tensors and {kv_count:,} metadata keys",
        )
        for _ in range(kv_count):
            _read_pair(cursor, header)
        alignment = header.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if "general.alignment" in header.metadata:
            kind = header.value_types["general.alignment"]
            if kind != "uint32" or alignment <= 0 or alignment & (alignment - 1):
                raise cursor.error(
                    f"general.alignment is {str(alignment)[:40]!r} ({kind}), not a power of two "
                    "(uint32)"
                )
        header.alignment = int(alignment)
        names: set[str] = set()
        for _ in range(tensor_count):
            info = _read_tensor_info(cursor, header.alignment)
            if info.name in names:
                raise cursor.error(f"tensor {short(info.name)} is declared twice")
            names.add(info.name)
            header.tensors.append(info)
        header.data_start = -(-cursor.pos // header.alignment) * header.alignment
    _check_regions(header, path, size)
    return header


def _read_pair(cursor: _Cursor, header: Header) -> None:
    key = cursor.string("a metadata key")
    if key in header.metadata:
        raise cursor.error(f"metadata key {short(key)} is declared twice")
    value_type = cursor.u32(f"the type of {short(key)}")
    header.metadata[key] = _read_value(cursor, value_type, key, 0)
    header.value_types[key] = TYPE_NAMES.get(value_type, "?")


def _read_value(cursor: _Cursor, value_type: int, key: str, depth: int) -> Any:
    scalar = SCALARS.get(value_type)
    if scalar is not None:
        return cursor.scalar(*scalar, f"the value of {short(key)}")
    if value_type == STRING:
        return cursor.string(f"the value of {short(key)}", MAX_TEXT)
    if value_type != ARRAY:
        raise cursor.error(f"metadata {short(key)} has unknown value type {value_type}")
    if depth >= MAX_ARRAY_NESTING:
        raise cursor.error(f"metadata {short(key)} nests arrays more than {depth} deep")
    item_type = cursor.u32(f"the array type of {short(key)}")
    length = cursor.u64(f"the array length of {short(key)}")
    what = f"the array {short(key)} of {length:,} elements"
    scalar = SCALARS.get(item_type)
    if item_type not in SCALARS and item_type not in (STRING, ARRAY):
        raise cursor.error(f"metadata {short(key)} is an array of unknown type {item_type}")
    # the least each element takes: its value, a string's length, an array's type and length
    cursor.need(length * (scalar[1] if scalar else 8 if item_type == STRING else 12), what)
    cursor.array_elements += length
    cursor.limits.check(
        "max_gguf_array_elements",
        cursor.array_elements,
        f"metadata arrays hold {cursor.array_elements:,} elements ({short(key)}: {length:,})",
    )
    if scalar is not None:
        fmt, item_size = scalar
        kept = min(length, SAMPLE)
        sample = struct.unpack(f"{cursor.order}{kept}{fmt}", cursor.read(kept * item_size, what))
        cursor.skip((length - kept) * item_size, what)
        return ArrayValue(TYPE_NAMES[item_type], length, tuple(sample))
    if item_type == STRING:
        kept = min(length, SAMPLE)
        values = tuple(cursor.string(what, MAX_TEXT) for _ in range(kept))
        cursor.skip_strings(length - kept, what)
        return ArrayValue("string", length, values)
    nested = []
    for index in range(length):
        value = _read_value(cursor, ARRAY, key, depth + 1)
        if index < SAMPLE:
            nested.append(value)
    return ArrayValue("array", length, tuple(nested))


def _read_tensor_info(cursor: _Cursor, alignment: int) -> TensorInfo:
    name = cursor.string("a tensor name")
    label = f"tensor {short(name)}"
    n_dims = cursor.u32(f"the dims of {label}")
    if n_dims > MAX_DIMS:
        raise cursor.error(f"{label} has {n_dims} dims (GGML tensors have at most {MAX_DIMS})")
    ne = struct.unpack(f"{cursor.order}{n_dims}Q", cursor.read(8 * n_dims, f"the dims of {label}"))
    type_id = cursor.u32(f"the type of {label}")
    offset = cursor.u64(f"the offset of {label}")
    ggml_type = TYPES.get(type_id)
    if ggml_type is None:
        raise cursor.error(f"{label} has unknown GGML type id {type_id}")
    if any(d >= 1 << 62 for d in ne) or math.prod(ne) >= 1 << 62:
        raise cursor.error(f"{label} declares dims {list(ne)}, larger than any tensor")
    if ggml_type.block_size > 1 and not ne:
        raise cursor.error(f"{label} has no dims, so no rows of {ggml_type.name} blocks")
    if ne and ne[0] % ggml_type.block_size:
        raise cursor.error(
            f"{label}: its rows of {ne[0]:,} values are not whole {ggml_type.name} blocks "
            f"of {ggml_type.block_size}"
        )
    if offset % alignment:
        raise cursor.error(
            f"{label} starts at offset {offset:,}, not a multiple of the alignment {alignment}"
        )
    return TensorInfo(name, tuple(int(d) for d in ne), ggml_type, offset)


def _check_regions(header: Header, path: Path, size: int) -> None:
    """Every tensor's bytes lie in the file, and no two tensors share any."""
    start = header.data_start
    for info in header.tensors:
        end = start + info.offset + info.nbytes
        if end > size:
            raise file_error(
                CorruptFileError,
                path,
                f"tensor {short(info.name)} ({info.ggml_type.name}, dims {list(info.ne)}) lies "
                f"at bytes {start + info.offset:,} to {end:,}, past the end of the file "
                f"({size:,} bytes)",
            )
    ordered = sorted((t for t in header.tensors if t.nbytes), key=lambda t: t.offset)
    for before, after in itertools.pairwise(ordered):
        if after.offset < before.offset + before.nbytes:
            raise file_error(
                CorruptFileError,
                path,
                f"tensors {short(before.name)} and {short(after.name)} overlap in the file",
            )
