"""A TensorFlow checkpoint bundle written byte by byte, without TensorFlow and independently
of weightscope's reader (its own varints and a bitwise CRC32C): a one-data-block LevelDB table
of ``BundleEntryProto`` records beside a data shard. The checkpoint tests build hostile
indexes with it, and the fuzz harness and the limit tests use it for seeds."""

from __future__ import annotations

import struct
from pathlib import Path

TABLE_MAGIC = 0xDB4775248B80FB57


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return _varint(number << 3 | 2) + _varint(len(value)) + value
    return _varint(number << 3) + _varint(value)


def _crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def _trailer(block: bytes) -> bytes:
    """Compression type 0 and the masked CRC32C of the block and that type, as LevelDB writes
    (TensorFlow and weightscope check it)."""
    return b"\0" + struct.pack("<I", _mask(_crc32c(block + b"\0")))


def _mask(crc: int) -> int:
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _block(items: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(
        _varint(0) + _varint(len(k)) + _varint(len(v)) + k + v for k, v in items
    )  # no shared prefixes: one restart point per entry is valid too
    return body + struct.pack("<I", 0) + struct.pack("<I", 1)


def write_index(path: Path, entries: list[tuple[bytes, bytes]]) -> None:
    path.write_bytes(index_bytes(entries))


def index_bytes(entries: list[tuple[bytes, bytes]]) -> bytes:
    """A one-data-block LevelDB table: data block, empty metaindex, index block, footer."""
    data = _block(entries)
    out = bytearray(data + _trailer(data))
    meta_at = len(out)
    meta = _block([])
    out += meta + _trailer(meta)
    index_at = len(out)
    handle = _varint(0) + _varint(len(data))
    index = _block([(entries[-1][0] + b"\xff", handle)])
    out += index + _trailer(index)
    footer = _varint(meta_at) + _varint(len(meta)) + _varint(index_at) + _varint(len(index))
    out += footer.ljust(40, b"\0") + struct.pack("<Q", TABLE_MAGIC)
    return bytes(out)


def _entry(shape: tuple[int, ...], offset: int, size: int, data: bytes = b"") -> bytes:
    """A float32 ``BundleEntryProto``, with the masked CRC32C of its ``data`` when given."""
    dims = b"".join(_field(2, _field(1, d)) for d in shape)
    crc = _varint(6 << 3 | 5) + struct.pack("<I", _mask(_crc32c(data))) if data else b""
    return _field(1, 1) + _field(2, dims) + _field(4, offset) + _field(5, size) + crc


HEADER = (b"", _field(1, 1))


def _bundle(tmp_path: Path, entries: list[tuple[bytes, bytes]], data: bytes) -> Path:
    index = tmp_path / "h.index"
    write_index(index, [HEADER, *entries])
    (tmp_path / "h.data-00000-of-00001").write_bytes(data)
    return index
