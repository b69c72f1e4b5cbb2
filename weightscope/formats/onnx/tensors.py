"""ONNX ``TensorProto`` -> a lazy tensor source: data cut out of the model file, stored beside it
(external data), or held in the (small) parsed message."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath

import numpy as np

from weightscope.dtypes import BFLOAT16, bfloat16_to_float32, float8_to_float32
from weightscope.errors import (
    CorruptFileError,
    UnsafeFileError,
    UnsupportedFormatError,
    WeightscopeError,
    file_error,
    short,
)
from weightscope.formats._common.file_region import (
    MAX_RANK,
    FileRegionSource,
    RegionFile,
    c_strides,
)
from weightscope.formats._common.remote import RemotePath, beside
from weightscope.formats.onnx.proto import (
    DATA_TYPE_NAMES,
    EXTERNAL,
    BulkRegion,
    TensorProto,
)
from weightscope.formats.onnx.proto import DataType as T
from weightscope.limits import DEFAULT, Limits
from weightscope.model import ArraySource, TensorSource
from weightscope.stats import TensorStats, compute_stats

# ONNX element type -> the dtype name weightscope reports (numpy names, plus bfloat16).
DTYPES: dict[int, str] = {
    T.FLOAT: "float32",
    T.UINT8: "uint8",
    T.INT8: "int8",
    T.UINT16: "uint16",
    T.INT16: "int16",
    T.INT32: "int32",
    T.INT64: "int64",
    T.BOOL: "bool",
    T.FLOAT16: "float16",
    T.DOUBLE: "float64",
    T.UINT32: "uint32",
    T.UINT64: "uint64",
    T.COMPLEX64: "complex64",
    T.COMPLEX128: "complex128",
    T.BFLOAT16: BFLOAT16,
}

# 8-bit float formats, decoded by table (``dtypes.float8_to_float32``).
FLOAT8: dict[int, str] = {
    T.FLOAT8E4M3FN: "float8_e4m3fn",
    T.FLOAT8E4M3FNUZ: "float8_e4m3fnuz",
    T.FLOAT8E5M2: "float8_e5m2",
    T.FLOAT8E5M2FNUZ: "float8_e5m2fnuz",
}

# 4-bit integers, two to a byte, the first element in the low nibble.
INT4: dict[int, str] = {T.INT4: "int4", T.UINT4: "uint4"}

# Which typed field holds each element type when the data is not in raw_data (onnx.proto3).
_INT32_FIELD_TYPES = {T.INT32, T.INT16, T.INT8, T.UINT16, T.UINT8, T.BOOL, T.FLOAT16, T.BFLOAT16}
_BULK_TYPES = {"float_data": {T.FLOAT, T.COMPLEX64}, "double_data": {T.DOUBLE, T.COMPLEX128}}


def dtype_name(data_type: int) -> str:
    if data_type in DTYPES:
        return DTYPES[data_type]
    if data_type in FLOAT8:
        return FLOAT8[data_type]
    if data_type in INT4:
        return INT4[data_type]
    if data_type in DATA_TYPE_NAMES:
        return DATA_TYPE_NAMES[data_type].lower()
    return f"onnx type {data_type}"


@dataclass
class TensorContext:
    """What resolving a tensor's data needs: the model file, and the folder external data may
    come from (None for a live ModelProto that was not read from a file)."""

    model_path: Path | None
    open_file: Callable[[Path], RegionFile] | None
    limits: Limits = DEFAULT
    notes: list[str] = field(default_factory=list)
    """What the reader should say in the model's notes (a limit that cut a search short)."""

    @property
    def label(self) -> str | Path:
        return self.model_path or "<ModelProto>"

    def error(self, problem: str) -> WeightscopeError:
        return file_error(CorruptFileError, self.label, problem, "ONNX model")

    def cannot_decode(self, name: str, dtype: str) -> WeightscopeError:
        return file_error(
            UnsupportedFormatError,
            self.label,
            f"ONNX tensor {short(name)} holds {dtype} values, which weightscope cannot decode",
        )

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def tensor_source(tensor: TensorProto, ctx: TensorContext) -> TensorSource:
    """A source for ``tensor``'s data; checks that the data matches its dims, reads nothing."""
    if len(tensor.dims) > MAX_RANK:
        raise ctx.error(f"tensor {short(tensor.name)} has {len(tensor.dims):,} dims")
    shape = tuple(int(d) for d in tensor.dims)
    if any(d < 0 for d in shape):
        raise ctx.error(f"tensor {short(tensor.name)} has negative dims {shape}")
    numel = math.prod(shape)
    name = dtype_name(tensor.data_type)
    if name not in DTYPES.values() and tensor.data_type not in FLOAT8 and name not in INT4.values():
        return UndecodableSource(ctx, tensor.name, name)
    if tensor.data_type in INT4:
        return _int4_source(tensor, ctx, shape, numel, name)
    region = tensor.region
    if region is not None:
        return _region_source(tensor, ctx, region, shape, numel, name)
    if tensor.data_location == EXTERNAL:
        return _external_source(tensor, ctx, shape, numel, name)
    if tensor.raw_data is not None:
        return _decoded(tensor, ctx, tensor.raw_data, shape, numel, name)
    return ArraySource(_typed_field_array(tensor, ctx, shape, numel))


def _raw_itemsize(tensor: TensorProto, ctx: TensorContext, name: str) -> int:
    if tensor.data_type in FLOAT8 or name in ("uint8", "int8", "bool"):
        return 1
    if name in DTYPES.values():
        return 2 if name == BFLOAT16 else np.dtype(name).itemsize
    raise ctx.cannot_decode(tensor.name, name)


def _int4_source(
    tensor: TensorProto, ctx: TensorContext, shape: tuple[int, ...], numel: int, name: str
) -> TensorSource:
    """The packed bytes, as a uint8 tensor of their own, unpacked when read."""
    packed = TensorProto(**vars(tensor))
    packed.data_type = T.UINT8
    packed.dims = [(numel + 1) // 2]
    if tensor.raw_data is None and len(tensor.int32_data):
        packed.int32_data = ()
        packed.raw_data = np.asarray(tensor.int32_data, np.int64).astype(np.uint8).tobytes()
    return Int4Source(tensor_source(packed, ctx), shape, signed=name == "int4")


class Int4Source:
    def __init__(self, packed: TensorSource, shape: tuple[int, ...], signed: bool) -> None:
        self.packed = packed
        self.shape = shape
        self.signed = signed

    def _unpack(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, np.uint8).reshape(-1)
        values = np.empty(raw.size * 2, np.int8)
        values[0::2] = raw & 0x0F
        values[1::2] = raw >> 4
        if self.signed:
            values[values >= 8] -= 16
        return values

    def read(self) -> np.ndarray:
        return self._unpack(self.packed.read())[: math.prod(self.shape)].reshape(self.shape)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        remaining = math.prod(self.shape)
        for chunk in self.packed.chunks(max(1, max_elements // 2)):
            values = self._unpack(chunk)[:remaining]
            remaining -= values.size
            yield values

    def stats(self, max_elements: int) -> TensorStats:
        return compute_stats(self.chunks(max_elements))


class UndecodableSource:
    """A tensor of an element type weightscope cannot decode (strings, float4, ...): listed
    with its type and shape, refused with one line when its values are asked for."""

    def __init__(self, ctx: TensorContext, name: str, dtype: str) -> None:
        self.ctx = ctx
        self.name = name
        self.dtype = dtype

    def read(self) -> np.ndarray:
        raise self.ctx.cannot_decode(self.name, self.dtype)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        yield self.read()

    def stats(self, max_elements: int) -> TensorStats:
        return compute_stats(self.chunks(max_elements))


def _check_length(
    tensor: TensorProto, ctx: TensorContext, nbytes: int, numel: int, itemsize: int
) -> None:
    if nbytes != numel * itemsize:
        raise ctx.error(
            f"tensor {short(tensor.name)} holds {nbytes:,} bytes but its dims "
            f"{list(tensor.dims)} need {numel * itemsize:,}"
        )


def _region_source(
    tensor: TensorProto,
    ctx: TensorContext,
    region: BulkRegion,
    shape: tuple[int, ...],
    numel: int,
    name: str,
) -> TensorSource:
    assert ctx.open_file is not None and ctx.model_path is not None
    if region.field != "raw_data" and tensor.data_type not in _BULK_TYPES[region.field]:
        raise ctx.error(f"tensor {short(tensor.name)} of type {name} stores {region.field}")
    itemsize = _raw_itemsize(tensor, ctx, name)
    _check_length(tensor, ctx, region.length, numel, itemsize)
    return _file_source(ctx.open_file(ctx.model_path), region.offset, shape, numel, tensor, name)


def _file_source(
    file: RegionFile,
    offset: int,
    shape: tuple[int, ...],
    numel: int,
    tensor: TensorProto,
    name: str,
) -> TensorSource:
    if tensor.data_type in FLOAT8:
        raw = FileRegionSource(file, offset, numel, "uint8", 0, shape, c_strides(shape))
        return Float8Source(raw, FLOAT8[tensor.data_type])
    return FileRegionSource(file, offset, numel, name, 0, shape, c_strides(shape))


def _external_source(
    tensor: TensorProto, ctx: TensorContext, shape: tuple[int, ...], numel: int, name: str
) -> TensorSource:
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location")
    if not location:
        raise ctx.error(f"tensor {short(tensor.name)} says its data is external but names no file")
    if ctx.model_path is None or ctx.open_file is None:
        raise WeightscopeError(
            f"<ModelProto>: tensor {short(tensor.name)} keeps its data in {location!r} beside the "
            "model file: load the model from its path to read it"
        )
    data_path = external_path(ctx.model_path, location, tensor.name)
    try:
        offset = int(info.get("offset", "0"))
        length = int(info["length"]) if "length" in info else None
    except ValueError:
        raise ctx.error(
            f"tensor {short(tensor.name)} has a non-numeric external offset or length"
        ) from None
    itemsize = _raw_itemsize(tensor, ctx, name)
    if offset < 0 or (length is not None and length < 0):
        raise ctx.error(f"tensor {short(tensor.name)} has a negative external offset or length")
    if length is not None:
        _check_length(tensor, ctx, length, numel, itemsize)
    file = ctx.open_file(data_path)
    if offset + numel * itemsize > file.size:
        raise ctx.error(
            f"tensor {short(tensor.name)} needs bytes {offset:,}..{offset + numel * itemsize:,} "
            f"of external data file {location!r}, which holds {file.size:,}"
        )
    return _file_source(file, offset, shape, numel, tensor, name)


def external_path(model_path: Path, location: str, tensor_name: str) -> Path:
    """The external data file ``location`` names, which must lie in the model's folder (the
    folder of the path given, as onnx has it, even if that path is a symlink)."""
    if isinstance(model_path, RemotePath):  # a URL: the file of that name beside it
        sibling = beside(model_path, location)
        if sibling is None:
            raise file_error(
                UnsafeFileError,
                model_path,
                f"tensor {short(tensor_name)} asks for external data at {location!r}, outside "
                "the model's folder: refused",
            )
        return sibling
    folder = model_path.absolute().parent.resolve()
    relative = Path(location)
    if relative.is_absolute() or PureWindowsPath(location).anchor:
        raise file_error(
            UnsafeFileError,
            model_path,
            f"tensor {short(tensor_name)} asks for external data at the absolute path "
            f"{location!r}: refused (external data must lie beside the model)",
        )
    if ".." in relative.parts or ".." in location.replace("\\", "/").split("/"):
        raise file_error(
            UnsafeFileError,
            model_path,
            f"tensor {short(tensor_name)} asks for external data at {location!r}, outside the "
            "model's folder: refused",
        )
    target = (folder / relative).resolve()
    if not target.is_relative_to(folder):
        raise file_error(
            UnsafeFileError,
            model_path,
            f"external data {location!r} of tensor {short(tensor_name)} leads outside the model's "
            f"folder (to {target}): refused",
        )
    if not target.is_file():
        problem = "is not a file" if target.exists() else "is missing"
        raise file_error(
            CorruptFileError,
            model_path,
            f"external data file {location!r} for tensor {short(tensor_name)} {problem} "
            f"(expected {folder / relative})",
        )
    return target


def _decoded(
    tensor: TensorProto,
    ctx: TensorContext,
    raw: bytes,
    shape: tuple[int, ...],
    numel: int,
    name: str,
) -> TensorSource:
    itemsize = _raw_itemsize(tensor, ctx, name)
    _check_length(tensor, ctx, len(raw), numel, itemsize)
    if tensor.data_type in FLOAT8:
        values = _float8(np.frombuffer(raw, np.uint8), FLOAT8[tensor.data_type])
        return ArraySource(values.reshape(shape))
    if name == BFLOAT16:
        return ArraySource(bfloat16_to_float32(np.frombuffer(raw, "<u2")).reshape(shape))
    dtype = np.dtype(name).newbyteorder("<") if itemsize > 1 else np.dtype(name)
    return ArraySource(np.frombuffer(raw, dtype).reshape(shape))


def _typed_field_array(
    tensor: TensorProto, ctx: TensorContext, shape: tuple[int, ...], numel: int
) -> np.ndarray:
    kind = tensor.data_type
    values: np.ndarray
    if kind == T.FLOAT:
        values = np.asarray(tensor.float_data, np.float32)
    elif kind == T.COMPLEX64:
        values = np.asarray(tensor.float_data, np.float32).view(np.complex64)
    elif kind == T.DOUBLE:
        values = np.asarray(tensor.double_data, np.float64)
    elif kind == T.COMPLEX128:
        values = np.asarray(tensor.double_data, np.float64).view(np.complex128)
    elif kind == T.INT64:
        values = np.asarray(tensor.int64_data, np.int64)
    elif kind in (T.UINT32, T.UINT64):
        values = np.asarray(tensor.uint64_data, np.uint64).astype(DTYPES[kind])
    elif kind in _INT32_FIELD_TYPES:
        ints = np.asarray(tensor.int32_data, np.int64)
        if kind == T.FLOAT16:
            values = ints.astype(np.uint16).view(np.float16)
        elif kind == T.BFLOAT16:
            values = bfloat16_to_float32(ints.astype(np.uint16))
        else:
            values = ints.astype(DTYPES[kind])
    elif kind in FLOAT8:
        values = _float8(np.asarray(tensor.int32_data, np.int64).astype(np.uint8), FLOAT8[kind])
    else:
        raise ctx.cannot_decode(tensor.name, dtype_name(kind))
    if values.size != numel:
        raise ctx.error(
            f"tensor {short(tensor.name)} holds {values.size:,} values but its dims "
            f"{list(tensor.dims)} need {numel:,}"
        )
    return values.reshape(shape)


def _float8(bits: np.ndarray, name: str) -> np.ndarray:
    """Decoded as an array also where ``bits`` has no axes (a scalar zero point)."""
    return np.asarray(float8_to_float32(bits, name))


class Float8Source:
    """8-bit float patterns in a file region, decoded to float32 chunk by chunk."""

    def __init__(self, raw: FileRegionSource, name: str) -> None:
        self.raw = raw
        self.name = name

    def read(self) -> np.ndarray:
        return _float8(self.raw.read(), self.name)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        for chunk in self.raw.chunks(max_elements):
            yield _float8(chunk, self.name)

    def stats(self, max_elements: int) -> TensorStats:
        return compute_stats(self.chunks(max_elements))
