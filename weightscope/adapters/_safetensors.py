"""``.safetensors``: an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the data."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from weightscope.dtypes import itemsize
from weightscope.errors import CorruptFileError, file_error

MAX_HEADER_BYTES = 100 * 1024 * 1024
DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip


@dataclass(frozen=True)
class SafetensorsEntry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    """File offset of the first byte."""
    end: int


def looks_like_safetensors(head: bytes, file_size: int) -> bool:
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= min(MAX_HEADER_BYTES, file_size - 8) and head[8:9] == b"{"


def read_header(path: Path) -> tuple[list[SafetensorsEntry], dict[str, str]]:
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > MAX_HEADER_BYTES:
            raise file_error(CorruptFileError, path, f"safetensors header of {length:,} bytes")
        raw = handle.read(length)
    if len(raw) != length:
        raise file_error(CorruptFileError, path, "safetensors header cut short")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise file_error(CorruptFileError, path, f"safetensors header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise file_error(CorruptFileError, path, "safetensors header is not a JSON object")
    data_start = 8 + length
    size = path.stat().st_size
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict):
        metadata = {}
    entries = []
    for name, spec in header.items():
        if not isinstance(spec, dict):
            raise file_error(CorruptFileError, path, f"tensor {name[:80]!r}: bad header entry")
        try:
            dtype = DTYPES[spec["dtype"]]
            shape = tuple(int(s) for s in spec["shape"])
            begin, end = (int(x) for x in spec["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise file_error(CorruptFileError, path, f"tensor {name!r}: bad header entry") from exc
        if any(s < 0 for s in shape) or not 0 <= begin <= end or data_start + end > size:
            raise file_error(CorruptFileError, path, f"tensor {name!r} lies outside the file")
        if end - begin != math.prod(shape) * itemsize(dtype):
            raise file_error(
                CorruptFileError, path, f"tensor {name!r}: shape {shape} does not fit its bytes"
            )
        entries.append(SafetensorsEntry(name, dtype, shape, data_start + begin, data_start + end))
    entries.sort(key=lambda e: e.begin)
    return entries, {str(k)[:80]: str(v)[:80] for k, v in list(metadata.items())[:32]}
