"""``.safetensors`` reader: an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and byte range, then the data. Tensors are grouped into layers by their
names as a PyTorch state dict is (the format is PyTorch's in practice), so the model's framework
is ``pytorch``."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, NamedTuple

from weightscope.dtypes import itemsize
from weightscope.errors import CorruptFileError, file_error, short
from weightscope.formats._common.file_region import (
    MAX_RANK,
    FileRegionSource,
    OpenFile,
    RegionFile,
    c_strides,
)
from weightscope.formats._common.json_text import load_json
from weightscope.formats.protocol import Match, Probe
from weightscope.formats.pytorch.layers import Entry, ModuleNode, build_layers, group_state_dict
from weightscope.limits import Limits
from weightscope.model import Model

FRAMEWORK = "pytorch"
SAFETENSORS = ".safetensors file"

DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
}  # fmt: skip
_ITEMSIZE = {dtype: itemsize(dtype) for dtype in DTYPES.values()}


class SafetensorsEntry(NamedTuple):
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


def read_header(
    path: Path, limits: Limits, file: RegionFile | None = None
) -> tuple[list[SafetensorsEntry], dict[str, str]]:
    """The header's entries, checked, and its metadata; read from ``file`` when given (a file
    read by URL: two ranged reads, nothing past the header), else from ``path``."""
    reader = file if file is not None else OpenFile(path, SAFETENSORS)
    try:
        size = reader.size
        length = int.from_bytes(reader.read(0, 8), "little")
        if length > size - 8:
            raise file_error(
                CorruptFileError,
                path,
                f"the header declares {length:,} bytes, more than the file holds ({size:,})",
            )
        limits.check(
            "max_safetensors_header_bytes", length, f"the header declares {length:,} bytes"
        )
        raw = reader.read(8, length)
    finally:
        if file is None:
            reader.close()
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
        # plain loops and type checks, the error lines built only when needed: a header may
        # hold 200,000 entries
        try:
            dtype = DTYPES[spec["dtype"]]
            dims, offsets = spec["shape"], spec["data_offsets"]
            if type(dims) is not list or len(dims) > MAX_RANK or not _integers(dims):
                raise TypeError("shape is not a short list of integers")
            if type(offsets) is not list or not _integers(offsets):
                raise TypeError("data_offsets is not a list of integers")
            shape = tuple(dims)
            begin, end = offsets
        except (KeyError, TypeError, ValueError) as exc:
            raise file_error(CorruptFileError, path, f"{_label(name)}: bad header entry") from exc
        if (dims and min(dims) < 0) or not 0 <= begin <= end or data_start + end > size:
            raise file_error(CorruptFileError, path, f"{_label(name)} lies outside the file")
        if end - begin != math.prod(shape) * _ITEMSIZE[dtype]:
            raise file_error(
                CorruptFileError,
                path,
                f"{_label(name)}: shape {shape} does not fit its bytes",
            )
        entries.append(SafetensorsEntry(name, dtype, shape, data_start + begin, data_start + end))
    entries.sort(key=lambda e: (e.begin, e.end))
    for before, after in itertools.pairwise(entries):
        if after.begin < before.end:  # as the safetensors library itself refuses
            raise file_error(
                CorruptFileError,
                path,
                f"tensors {short(before.name)} and {short(after.name)} overlap in the file",
            )
    return entries, {str(k)[:80]: str(v)[:80] for k, v in list(metadata.items())[:32]}


def _integers(values: list[object]) -> bool:
    """Whether every value is a JSON integer (not a float, infinity or a boolean: ``json``
    makes only exact ``int``, ``float`` and ``bool`` numbers)."""
    return set(map(type, values)) <= _INT


_INT = {int}


def _label(name: str) -> str:
    return f"tensor {short(name)}"


def match(probe: Probe) -> Match | None:
    """A safetensors header, or a ``.safetensors`` file starting like one whose header length
    does not fit (refused by :func:`load`, which says why)."""
    if probe.is_zip:
        return None
    fits = looks_like_safetensors(probe.head, probe.size)
    if fits or (probe.path.suffix.lower() == ".safetensors" and probe.head[8:9] == b"{"):
        return Match(SAFETENSORS, "safetensors", probe)
    return None


def match_object(obj: Any) -> bool:
    return False


def load_object(obj: Any, limits: Limits) -> Model:
    raise TypeError("safetensors has no live objects")


def load(match: Match, limits: Limits) -> Model:
    path = match.probe.path
    remote = match.probe.file  # a file read by URL
    entries, metadata = read_header(path, limits, remote)
    file = remote if remote is not None else OpenFile(path, SAFETENSORS)
    nodes = []
    try:
        # safetensors keeps no model order: natural name order puts layers.10 after layers.9
        grouped = group_state_dict(sorted((e.name for e in entries), key=_natural_key))
        by_name = {e.name: e for e in entries}
        for prefix, members in grouped.items():
            node = ModuleNode(prefix or "(root)", None)
            for name in members:
                entry = by_name[name]
                numel = math.prod(entry.shape)  # the header check made it fill [begin, end)
                source = FileRegionSource(
                    file, entry.begin, numel, entry.dtype, 0, entry.shape, c_strides(entry.shape)
                )
                node.entries.append(
                    Entry(
                        name.rsplit(".", 1)[-1],
                        name,
                        entry.shape,
                        entry.dtype,
                        source,
                        (entry.begin, entry.end),
                    )
                )
            nodes.append(node)
        layers = build_layers(nodes)
    except BaseException:
        file.close()
        raise
    notes = (
        [f"metadata: {', '.join(f'{k}={v}' for k, v in list(metadata.items())[:8])}"]
        if metadata
        else []
    )
    model = Model(path, "safetensors", FRAMEWORK, None, layers, notes=notes)
    model._resources.callback(file.close)
    return model


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in name.split(".")]
