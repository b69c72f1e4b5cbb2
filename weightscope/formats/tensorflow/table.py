"""The LevelDB-format sorted table that a TensorFlow checkpoint's ``.index`` file is.

A 48-byte footer ends in the magic number and points (as varint offset/size pairs) at a
metaindex block and an index block; the index block's entries point at the data blocks. A block
holds prefix-compressed entries (shared key bytes, new key bytes, value length, as varints),
then its restart offsets (4 bytes each) and their count; after each block come one compression
byte and a 4-byte masked CRC32C. TensorFlow writes its bundles' blocks uncompressed (its
``TableBuilderOptions`` has turned compression off since TF 1.2, for merged shards too); a
Snappy-compressed block (type 1, only a TF 1.1 file could hold one) is refused with a line
saying so. Each block's CRC (of the block and its compression byte, masked) is checked, as
TensorFlow checks it, and so is the framing and every length."""

from __future__ import annotations

from collections.abc import Iterator

from weightscope.formats._common.protowire import WireError, read_varint
from weightscope.formats.tensorflow.crc32c import crc32c, mask

MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5  # compression type, masked crc32c
NO_COMPRESSION, SNAPPY = 0, 1


class TableError(ValueError):
    """The bytes are not a well-formed table (the reader names the file)."""


def has_magic(tail: bytes) -> bool:
    return len(tail) >= 8 and int.from_bytes(tail[-8:], "little") == MAGIC


def entries(data: bytes) -> Iterator[tuple[bytes, memoryview]]:
    """Every (key, value) of the table in ``data`` (the whole ``.index`` file), in order."""
    if len(data) < FOOTER_BYTES:
        raise TableError(f"{len(data)} bytes, shorter than a table's {FOOTER_BYTES}-byte footer")
    if not has_magic(data):
        raise TableError("the footer does not end in the table magic number (not a TF index)")
    footer = len(data) - FOOTER_BYTES
    try:
        _, pos = _handle(data, footer, len(data) - 8)  # metaindex: nothing TF keeps there
        index = _handle(data, pos, len(data) - 8)[0]
        for _, value in _block(data, *index, "index block"):
            handle, _ = _handle(value, 0, len(value))
            yield from _block(data, *handle, "data block")
    except WireError as exc:
        raise TableError(f"malformed block framing: {exc}") from exc


def _handle(buf: bytes | memoryview, pos: int, end: int) -> tuple[tuple[int, int], int]:
    offset, pos = read_varint(buf, pos, end)
    size, pos = read_varint(buf, pos, end)
    return (offset, size), pos


def _block(data: bytes, offset: int, size: int, what: str) -> Iterator[tuple[bytes, memoryview]]:
    limit = len(data) - FOOTER_BYTES
    if offset + size + BLOCK_TRAILER_BYTES > limit:
        raise TableError(
            f"{what} at byte {offset} of {size:,} bytes runs past the end of the table ({limit:,})"
        )
    compression = data[offset + size]
    if compression == SNAPPY:
        raise TableError(
            f"{what} at byte {offset} is Snappy-compressed, which weightscope does not read"
        )
    if compression != NO_COMPRESSION:
        raise TableError(f"{what} at byte {offset}: unknown compression type {compression}")
    block = memoryview(data)[offset : offset + size]
    stored = int.from_bytes(data[offset + size + 1 : offset + size + BLOCK_TRAILER_BYTES], "little")
    if mask(crc32c(memoryview(data)[offset : offset + size + 1])) != stored:
        raise TableError(f"{what} at byte {offset} fails its CRC32C check: the index is damaged")
    if size < 4:
        raise TableError(f"{what} at byte {offset} is too short for its restart count")
    restarts = int.from_bytes(block[size - 4 :], "little")
    entries_end = size - 4 - 4 * restarts
    if restarts < 1 or entries_end < 0:
        raise TableError(f"{what} at byte {offset} declares {restarts:,} restart points")
    key = b""
    pos = 0
    while pos < entries_end:
        shared, pos = read_varint(block, pos, entries_end)
        fresh, pos = read_varint(block, pos, entries_end)
        length, pos = read_varint(block, pos, entries_end)
        if shared > len(key) or fresh + length > entries_end - pos:
            raise TableError(f"{what} at byte {offset}: an entry runs past its block")
        key = key[:shared] + bytes(block[pos : pos + fresh])
        pos += fresh
        yield key, block[pos : pos + length]
        pos += length
