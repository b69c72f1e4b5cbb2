"""NumPy ``.npy`` files and ``.npz`` archives (what ``np.save``/``np.savez`` write, and what
``weightscope export`` writes), read without unpickling anything.

An ``.npz`` is a zip of ``.npy`` members, each a magic string, a header (a Python dict literal
naming the dtype, the shape and the order) and the raw elements. Each header is read with
``numpy.lib.format``'s own header reader (``ast.literal_eval``, never ``pickle``), after its
declared length is checked against ``max_npy_header_bytes`` and against the member; the shape
it declares must then fill the member exactly. Arrays of Python objects (which ``np.load`` could
only unpickle) are refused, and so is any dtype other than booleans, integers, floats and complex
numbers. A stored member is read in place, as a region of the file; a deflated one
(``np.savez_compressed``) is decompressed when read, within ``max_zip_ratio``.

Member ``<layer>/<role>.npy`` is the tensor ``role`` of layer ``layer`` (``conv1/kernel``), and a
member whose name has no ``/`` a layer of its own holding one ``array``; layers keep the
archive's order. ``weightscope export`` also writes, as the zip comment of each member (which
``np.load`` ignores), the layer's kind, the tensor's canonical layout, its trainability and
whether it counts as a parameter, so that an export reads back with the same layers, kinds,
canonical shapes and totals as the model it came from. Without those comments (an archive from
``np.savez``) every layer is of kind ``unknown`` and no layout is assumed."""

from __future__ import annotations

import io
import math
import sys
import tokenize
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightscope import layouts
from weightscope.dtypes import is_float
from weightscope.errors import (
    CorruptFileError,
    UnsafeFileError,
    UnsupportedFormatError,
    file_error,
    short,
)
from weightscope.formats._common.archive import check_ratio, stored_member_offset
from weightscope.formats._common.file_region import MAX_RANK, FileRegionSource, OpenFile
from weightscope.formats._common.json_text import load_json
from weightscope.formats.protocol import Match, Probe
from weightscope.kinds import LAYER_KINDS, Kind
from weightscope.limits import Limits
from weightscope.model import Layer, Model, Tensor
from weightscope.stats import TensorStats, compute_stats

FRAMEWORK = "numpy"
NPY = "NumPy .npy file"
NPZ = "NumPy .npz archive"
MAGIC = b"\x93NUMPY"
SUFFIX = ".npy"
ARRAY_ROLE = "array"
"""The role of a member whose name has no ``/``, and of the one array of a ``.npy``."""

EXPORT_KEY = "weightscope"
"""The key of the archive comment that marks an archive written by ``weightscope export``."""

_PREFIX = {1: 10, 2: 12, 3: 12}
"""Bytes before the header dict, by the format's major version: magic, version, length."""
_KINDS = frozenset("biufc")
"""dtype kinds read: booleans, signed and unsigned integers, floats, complex numbers."""


@dataclass(frozen=True)
class ArrayHeader:
    """What a ``.npy`` header declares, checked against the bytes that follow it."""

    header_bytes: int
    """Magic, version, length and the header dict: where the elements start."""
    dtype: str
    byteorder: str
    shape: tuple[int, ...]
    fortran_order: bool

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def match(probe: Probe) -> Match | None:
    """A ``.npy`` by its magic string, or a zip whose members are all ``.npy`` files."""
    if probe.head.startswith(MAGIC):
        return Match(NPY, "npy", probe)
    if probe.archive is not None and probe.names and all(n.endswith(SUFFIX) for n in probe.names):
        return Match(NPZ, "npz", probe)
    return None


def match_object(obj: Any) -> bool:
    return False


def load_object(obj: Any, limits: Limits) -> Model:
    raise TypeError("NumPy files have no live objects")


def load(match: Match, limits: Limits) -> Model:
    path = match.probe.path
    file = OpenFile(path, match.looks_like)
    try:
        if match.variant == "npy":
            model = _load_npy(path, file, limits)
        else:
            archive = match.probe.take_archive()
            try:
                model = _load_npz(path, file, archive, limits)
            except BaseException:
                archive.close()
                raise
            model._resources.callback(archive.close)
    except BaseException:
        file.close()
        raise
    model._resources.callback(file.close)
    return model


# ---------------------------------------------------------------------------------------------
# headers


def parse_header(read: Any, available: int, limits: Limits, what: str) -> ArrayHeader:
    """The header at the start of ``available`` bytes, ``read(offset, count)`` returning them;
    raises ``ValueError`` (damage), ``LimitExceeded`` or :class:`UnsafeFileError`'s problem as
    ``_Refused``."""
    start = read(0, min(available, 12))
    if len(start) < 10 or not start.startswith(MAGIC):
        raise ValueError(f"{what} is not a .npy array (no NumPy magic string)")
    major, minor = start[6], start[7]
    if major not in _PREFIX or minor != 0:
        raise ValueError(f"{what}: unknown .npy format version {major}.{minor}")
    if major == 3:
        raise _Refused(
            UnsupportedFormatError,
            f"{what}: .npy format 3.0 (structured dtypes with non-ASCII field names) is not read",
        )
    prefix = _PREFIX[major]
    if len(start) < prefix:
        raise ValueError(f"{what}: header cut short")
    declared = int.from_bytes(start[8:prefix], "little")
    limits.check(
        "max_npy_header_bytes", declared, f"{what} declares a header of {declared:,} bytes"
    )
    if prefix + declared > available:
        raise ValueError(
            f"{what} declares a header of {declared:,} bytes, more than it holds ({available:,})"
        )
    raw = read(0, prefix + declared)
    if len(raw) != prefix + declared:
        raise ValueError(f"{what}: header cut short")
    shape, fortran_order, dtype = _numpy_header(io.BytesIO(raw), major, declared)
    if dtype.hasobject:
        raise _Refused(
            UnsafeFileError,
            f"{what} holds Python objects (dtype object), which only unpickling could read: "
            "refused",
        )
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _KINDS:
        raise _Refused(
            UnsupportedFormatError,
            f"{what} holds {dtype.str} elements; only booleans, integers, floats and complex "
            "numbers are read",
        )
    if len(shape) > MAX_RANK or any(d < 0 for d in shape):
        raise ValueError(f"{what}: shape {short(shape)} is malformed")
    header = ArrayHeader(prefix + declared, dtype.name, _byteorder(dtype), shape, fortran_order)
    needed = header.size * dtype.itemsize
    if header.header_bytes + needed != available:
        raise ValueError(
            f"{what}: shape {shape} of {dtype.name} needs {needed:,} bytes, but it holds "
            f"{available - header.header_bytes:,}"
        )
    return header


class _Refused(Exception):
    """A header weightscope will not read (not damage): the error class to raise, and why."""

    def __init__(self, cls: type, problem: str) -> None:
        super().__init__(problem)
        self.cls = cls


def _numpy_header(fp: io.BytesIO, major: int, declared: int) -> tuple[Any, bool, np.dtype]:
    """numpy's own reader of the header dict (``ast.literal_eval``: literals only)."""
    fp.seek(8)
    reader = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    try:
        try:
            shape, fortran_order, dtype = reader(fp, max_header_size=max(declared, 1))
        except TypeError as exc:  # numpy before max_header_size: the length is checked above
            if "max_header_size" not in str(exc):
                raise
            fp.seek(8)
            shape, fortran_order, dtype = reader(fp)
    except tokenize.TokenError as exc:  # numpy retokenizes headers it cannot read at once
        raise ValueError(f"header is not a Python literal: {exc.args[0]}") from None
    return tuple(shape), bool(fortran_order), dtype


def _byteorder(dtype: np.dtype) -> str:
    order = dtype.byteorder
    if order == "=":
        return sys.byteorder
    return "big" if order == ">" else "little"


# ---------------------------------------------------------------------------------------------
# .npy


def _load_npy(path: Path, file: OpenFile, limits: Limits) -> Model:
    header = _header(
        path, lambda offset, count: file.read(offset, count), file.size, limits, path.name
    )
    source = _region(file, 0, header)
    tensor = _tensor(path.stem, ARRAY_ROLE, header, source, {})
    layer = Layer(path.stem, Kind.UNKNOWN, [tensor])
    return Model(path, "npy", FRAMEWORK, None, [layer])


def _header(path: Path, read: Any, available: int, limits: Limits, what: str) -> ArrayHeader:
    try:
        return parse_header(read, available, limits, what)
    except _Refused as exc:
        raise file_error(exc.cls, path, str(exc)) from None
    except (ValueError, SyntaxError, TypeError) as exc:
        raise file_error(CorruptFileError, path, str(exc)) from exc


def _region(file: OpenFile, base: int, header: ArrayHeader) -> FileRegionSource:
    shape = header.shape
    if header.fortran_order:
        strides, step = [], 1
        for size in shape:
            strides.append(step)
            step *= max(size, 1)
        stride = tuple(strides)
    else:
        stride = _c_strides(shape)
    return FileRegionSource(
        file,
        base + header.header_bytes,
        header.size,
        header.dtype,
        0,
        shape,
        stride,
        header.byteorder,
    )


def _c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


# ---------------------------------------------------------------------------------------------
# .npz


def _load_npz(path: Path, file: OpenFile, archive: zipfile.ZipFile, limits: Limits) -> Model:
    exported = _archive_metadata(path, archive, limits)
    grouped: dict[str, list[Tensor]] = {}
    layer_meta: dict[str, dict[str, Any]] = {}
    for info in archive.infolist():
        key = info.filename[: -len(SUFFIX)]
        layer_name, _, role = key.rpartition("/")
        if not layer_name:
            layer_name, role = key, ARRAY_ROLE
        meta = _member_metadata(path, info, limits) if exported is not None else {}
        header, source = _member(path, file, archive, info, limits)
        tensor = _tensor(key, role, header, source, meta)
        grouped.setdefault(layer_name, []).append(tensor)
        layer_meta.setdefault(layer_name, meta)
    layers = [_layer(name, tensors, layer_meta[name]) for name, tensors in grouped.items()]
    notes = []
    if exported is not None:
        notes.append(_export_note(exported))
    producer = f"weightscope {exported.get('weightscope')}" if exported is not None else None
    return Model(path, "npz", FRAMEWORK, None, layers, notes=notes, producer=producer)


def _member(
    path: Path, file: OpenFile, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits
) -> tuple[ArrayHeader, Any]:
    what = f"member {short(info.filename)}"
    if info.compress_type == zipfile.ZIP_STORED:
        base = stored_member_offset(path, info)
        header = _header(
            path,
            lambda offset, count: file.read(base + offset, count),
            info.file_size,
            limits,
            what,
        )
        return header, _region(file, base, header)
    check_ratio(info, limits)
    try:
        with archive.open(info) as member:
            head = member.read(min(info.file_size, 12 + limits.max_npy_header_bytes))
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, ValueError) as exc:
        raise file_error(CorruptFileError, path, f"cannot decompress {what}: {exc}") from exc
    header = _header(
        path, lambda offset, count: head[offset : offset + count], info.file_size, limits, what
    )
    return header, ZipMemberSource(archive, info, header, file)


class ZipMemberSource:
    """An array in a deflated member, decompressed when read (a chunk at a time for
    statistics): ``zipfile`` yields at most the size the archive declares, and checks the CRC."""

    def __init__(
        self, archive: zipfile.ZipFile, info: zipfile.ZipInfo, header: ArrayHeader, file: OpenFile
    ) -> None:
        from weightscope.formats._common.file_region import numpy_dtype

        self.archive, self.info, self.header, self.file = archive, info, header, file
        self.raw_dtype = numpy_dtype(header.dtype, header.byteorder)

    def file_regions(self) -> list[tuple[OpenFile, int]]:
        return [(self.file, self.info.compress_size)]

    def _stream(self, max_elements: int) -> Iterator[np.ndarray]:
        itemsize = self.raw_dtype.itemsize
        remaining = self.header.size
        try:
            with self.archive.open(self.info) as member:
                member.read(self.header.header_bytes)
                while remaining:
                    count = min(remaining, max(max_elements, 1))
                    raw = member.read(count * itemsize)
                    if len(raw) != count * itemsize:
                        raise self.file.error(f"member {short(self.info.filename)} cut short")
                    yield np.frombuffer(raw, self.raw_dtype).astype(
                        self.raw_dtype.newbyteorder("="), copy=False
                    )
                    remaining -= count
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            problem = f"cannot decompress member {short(self.info.filename)}: {exc}"
            raise self.file.error(problem) from exc

    def read(self) -> np.ndarray:
        parts = list(self._stream(max(self.header.size, 1)))
        flat = parts[0] if parts else np.empty(0, self.raw_dtype.newbyteorder("="))
        if self.header.fortran_order:
            return flat.reshape(self.header.shape[::-1]).T
        return flat.reshape(self.header.shape)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        yield from self._stream(max_elements)

    def stats(self, max_elements: int) -> TensorStats:
        return compute_stats(self._stream(max_elements))


# ---------------------------------------------------------------------------------------------
# what weightscope export wrote beside the arrays


def _archive_metadata(
    path: Path, archive: zipfile.ZipFile, limits: Limits
) -> dict[str, Any] | None:
    """The archive comment of an export (a JSON object with the key ``weightscope``), or None."""
    comment = archive.comment
    if not comment.startswith(b"{"):
        return None
    data = _json(path, comment, limits, "the archive comment")
    if not isinstance(data, dict) or EXPORT_KEY not in data:
        return None
    return data


def _member_metadata(path: Path, info: zipfile.ZipInfo, limits: Limits) -> dict[str, Any]:
    if not info.comment:
        return {}
    data = _json(path, info.comment, limits, f"the comment of member {short(info.filename)}")
    if not isinstance(data, dict):
        raise file_error(
            CorruptFileError, path, f"the comment of member {short(info.filename)} is not an object"
        )
    return data


def _json(path: Path, text: bytes, limits: Limits, what: str) -> Any:
    try:
        return load_json(text, limits, what)
    except (ValueError, UnicodeDecodeError) as exc:
        raise file_error(CorruptFileError, path, f"{what} is not JSON: {exc}") from exc


def _export_note(exported: dict[str, Any]) -> str:
    origin = ", ".join(
        str(exported[k])[:80] for k in ("format", "framework") if isinstance(exported.get(k), str)
    )
    source = str(exported.get("source") or "a model")[:200]
    version = str(exported.get(EXPORT_KEY))[:40]
    return f"exported by weightscope {version} from {source}" + (f" ({origin})" if origin else "")


def _tensor(name: str, role: str, header: ArrayHeader, source: Any, meta: dict[str, Any]) -> Tensor:
    layout = meta.get("layout")
    if layout is not None:
        layout = _checked_layout(name, layout, header.shape, meta)
    trainable = meta.get("trainable")
    counted = meta.get("counted")
    return Tensor(
        name=name,
        role=role,
        native_shape=header.shape,
        native_layout=layout,
        dtype=header.dtype,
        trainable=trainable if isinstance(trainable, bool) else None,
        source=source,
        groups=_groups(meta),
        counted=counted
        if isinstance(counted, bool)
        else (is_float(header.dtype) or header.dtype.startswith("complex")) and header.size > 0,
    )


def _groups(meta: dict[str, Any]) -> int:
    groups = meta.get("groups", 1)
    return groups if isinstance(groups, int) and not isinstance(groups, bool) and groups >= 1 else 1


def _checked_layout(name: str, layout: object, shape: tuple[int, ...], meta: dict[str, Any]) -> str:
    """A canonical layout the metadata names, that fits the array (else the file is damaged)."""
    problem = None
    if not isinstance(layout, str) or len(layout) != len(shape):
        problem = "does not fit its shape"
    else:
        try:
            if layouts.canonical_layout(layout) != layout:
                problem = "is not a canonical layout"
            else:
                layouts.canonical_shape(shape, layout, _groups(meta))
        except (ValueError, KeyError) as exc:
            problem = f"does not fit its shape ({exc})"
    if problem is not None:
        raise _LayoutError(f"array {short(name)}: layout {short(layout)} {problem} {shape}")
    assert isinstance(layout, str)
    return layout


class _LayoutError(ValueError):
    """Metadata naming a layout its array cannot have."""


def _layer(name: str, tensors: list[Tensor], meta: dict[str, Any]) -> Layer:
    kind = meta.get("kind")
    class_name = meta.get("class")
    return Layer(
        name=name,
        kind=Kind(kind) if kind in LAYER_KINDS else Kind.UNKNOWN,
        tensors=tensors,
        groups=_groups(meta),
        inferred=meta.get("inferred") is True,
        class_name=class_name[:200] if isinstance(class_name, str) else None,
        note="kind inferred from names and shapes where the model was read"
        if meta.get("inferred") is True
        else None,
    )
