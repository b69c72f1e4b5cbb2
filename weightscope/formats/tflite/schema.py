"""The parts of TFLite's ``schema.fbs`` weightscope reads, parsed from the flatbuffer with the
checked accessors of :mod:`.flatbuf`. Field indices are the schema's (``Model``: version 0,
operator_codes 1, subgraphs 2, description 3, buffers 4; ``SubGraph``: tensors 0, inputs 1,
outputs 2, operators 3, name 4; ``Tensor``: shape 0, type 1, buffer 2, name 3, quantization 4,
is_variable 5, sparsity 6; ``QuantizationParameters``: min 0, max 1, scale 2, zero_point 3,
details_type 4, details 5, quantized_dimension 6; ``Operator``: opcode_index 0, inputs 1,
outputs 2, builtin_options_type 3, builtin_options 4; ``OperatorCode``:
deprecated_builtin_code 0, custom_code 1, version 2, builtin_code 3; ``Buffer``: data 0,
offset 1, size 2). Buffer data is located, never read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weightscope.formats._common.file_region import MAX_RANK
from weightscope.formats.tflite.flatbuf import FlatBuffer, Table

IDENTIFIER = b"TFL3"

TENSOR_TYPES = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool",
    7: "int16", 8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64",
    13: "resource", 14: "variant", 15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16",
    19: "int2", 20: "uint4",
}  # fmt: skip


@dataclass(frozen=True)
class QuantizationParameters:
    scale: np.ndarray
    zero_point: np.ndarray
    quantized_dimension: int


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int
    quantization: QuantizationParameters | None
    is_variable: bool
    sparse: bool


@dataclass(frozen=True)
class OperatorInfo:
    code: int
    custom: str | None
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Table | None


@dataclass(frozen=True)
class SubGraphInfo:
    name: str
    tensors: list[TensorInfo]
    operators: list[OperatorInfo]


@dataclass(frozen=True)
class ModelInfo:
    version: int
    description: str
    subgraphs: list[SubGraphInfo]
    buffers: list[tuple[int, int]]
    """Each buffer's (absolute file offset, bytes); (0, 0) for an empty one."""


def parse(buffer: FlatBuffer) -> ModelInfo:
    if buffer.size < 8 or bytes(buffer.data[4:8]) != IDENTIFIER:
        raise buffer.error("no TFL3 file identifier at byte 4 (not a TFLite flatbuffer)")
    model = buffer.root()
    codes = [_operator_code(t) for t in model.tables(1, "the operator codes")]
    buffers = [_buffer(buffer, t) for t in model.tables(4, "the buffers")]
    subgraphs = [_subgraph(t, codes, len(buffers)) for t in model.tables(2, "the subgraphs")]
    return ModelInfo(
        int(model.scalar(0, "I")), model.string(3, "the description", 200), subgraphs, buffers
    )


def _operator_code(table: Table) -> tuple[int, str | None]:
    """The builtin code: the larger of the int8 deprecated code and the int32 one (files
    written before the int32 field keep only the first)."""
    deprecated = int(table.scalar(0, "b"))
    code = int(table.scalar(3, "i"))
    custom = table.string(1, "a custom operator's code", 200) or None
    return max(deprecated, code), custom


def _buffer(buffer: FlatBuffer, table: Table) -> tuple[int, int]:
    start, length = table.vector(0, 1, "a buffer's data")
    if length:
        return start, length
    offset = int(table.scalar(1, "Q"))
    size = int(table.scalar(2, "Q"))
    if offset > 1:  # files over 2 GB keep buffers after the flatbuffer, by absolute offset
        buffer.check(offset, size, "a buffer's data")
        return offset, size
    return 0, 0


def _subgraph(table: Table, codes: list[tuple[int, str | None]], buffers: int) -> SubGraphInfo:
    tensors = [
        _tensor(t, i, buffers) for i, t in enumerate(table.tables(0, "a subgraph's tensors"))
    ]
    operators = []
    for op in table.tables(3, "a subgraph's operators"):
        index = int(op.scalar(0, "I"))
        if index >= len(codes):
            raise op.buffer.error(f"an operator names operator code {index} of {len(codes)}")
        inputs = tuple(int(i) for i in op.array(1, "i4", "an operator's inputs"))
        outputs = tuple(int(i) for i in op.array(2, "i4", "an operator's outputs"))
        if any(i >= len(tensors) or i < -1 for i in (*inputs, *outputs)):
            raise op.buffer.error(f"an operator names a tensor beyond the {len(tensors)} there are")
        code, custom = codes[index]
        operators.append(OperatorInfo(code, custom, inputs, outputs, op.table(4, "options")))
    return SubGraphInfo(table.string(4, "a subgraph's name", 200), tensors, operators)


def _tensor(table: Table, index: int, buffers: int) -> TensorInfo:
    shape = table.array(0, "i4", "a tensor's shape")
    if len(shape) > MAX_RANK:
        raise table.buffer.error(f"tensor {index} has {len(shape)} dimensions")
    type_code = int(table.scalar(1, "b"))
    buffer_index = int(table.scalar(2, "I"))
    if buffer_index >= max(buffers, 1):
        raise table.buffer.error(f"tensor {index} names buffer {buffer_index} of {buffers}")
    name = table.string(3, "a tensor's name") or f"tensor_{index}"
    q = table.table(4, "a tensor's quantization")
    return TensorInfo(
        index,
        name,
        tuple(int(d) for d in shape),
        TENSOR_TYPES.get(type_code, f"type {type_code}"),
        buffer_index,
        _quantization(q) if q is not None else None,
        bool(table.scalar(5, "B")),
        table.table(6, "a tensor's sparsity") is not None,
    )


def _quantization(table: Table) -> QuantizationParameters | None:
    scale = table.array(2, "f4", "quantization scales")
    if not scale.size:
        return None
    zero_point = table.array(3, "i8", "quantization zero points")
    return QuantizationParameters(scale, zero_point, int(table.scalar(6, "i")))
