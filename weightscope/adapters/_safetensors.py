"""``.safetensors``: an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the data."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from weightscope.adapters._file_region import MAX_RANK
from weightscope.adapters._json import load_json
from weightscope.dtypes import itemsize
from weightscope.errors import CorruptFileError, file_error, short
from weightscope.limits import Limits

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
    """An 8-byte header length that fits in the file, then a JSON object (the header's size
    limit is checked when it is read, so that raising it lets the file be recognised)."""
    if len(head) < 9:
        return False
    length = int.from_bytes(head[:8], "little")
    return 2 <= length <= file_size - 8 and head[8:9] == b"{"


def read_header(path: Path, limits: Limits) -> tuple[list[SafetensorsEntry], dict[str, str]]:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        length = int.from_bytes(handle.read(8), "little")
        if length > size - 8:
            raise file_error(
                CorruptFileError,
                path,
                f"the header declares {length:,} bytes, more than the file holds ({size:,})",
            )
        limits.check(
            "max_safetensors_header_bytes", length, f"the header declares {length:,} bytes"
        )
        raw = handle.read(length)
    if len(raw) != length:
        raise file_error(CorruptFileError, path, "header cut short")
    try:
        header = load_json(raw, limits, "the header", "max_safetensors_header_bytes")
    except ValueError as exc:
        raise file_error(CorruptFileError, path, f"header is not JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise file_error(CorruptFileError, path, "header is not a JSON object")
    data_start = 8 + length
    metadata = header.pop("__metadata__", None)
    if not isinstance(metadata, dict):
        metadata = {}
    entries = []
    for name, spec in header.items():
        label = f"tensor {short(name)}"
        if not isinstance(spec, dict):
            raise file_error(CorruptFileError, path, f"{label}: bad header entry")
        try:
            dtype = DTYPES[spec["dtype"]]
            dims, offsets = spec["shape"], spec["data_offsets"]
            if not isinstance(dims, list) or len(dims) > MAX_RANK or not _integers(dims):
                raise TypeError("shape is not a short list of integers")
            if not isinstance(offsets, list) or not _integers(offsets):
                raise TypeError("data_offsets is not a list of integers")
            shape = tuple(dims)
            begin, end = offsets
        except (KeyError, TypeError, ValueError) as exc:
            raise file_error(CorruptFileError, path, f"{label}: bad header entry") from exc
        if any(s < 0 for s in shape) or not 0 <= begin <= end or data_start + end > size:
            raise file_error(CorruptFileError, path, f"{label} lies outside the file")
        if end - begin != math.prod(shape) * itemsize(dtype):
            raise file_error(
                CorruptFileError,
                path,
                f"{label}: shape {shape} does not fit its bytes",
            )
        entries.append(SafetensorsEntry(name, dtype, shape, data_start + begin, data_start + end))
    entries.sort(key=lambda e: e.begin)
    return entries, {str(k)[:80]: str(v)[:80] for k, v in list(metadata.items())[:32]}


def _integers(values: list[object]) -> bool:
    """Whether every value is a JSON integer (not a float, infinity or a boolean)."""
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
