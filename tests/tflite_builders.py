"""Small ``.tflite`` files written operator by operator with TensorFlow's own schema objects
(``tensorflow.lite.python.schema_py_generated``) and the ``flatbuffers`` builder: for layouts the
converter never writes (a CONV_3D with its bias input) and for the offset/size buffer form of
files over 2 GB."""

from __future__ import annotations

from typing import Any

import numpy as np

_TYPES = {"float32": 0, "float16": 1, "int32": 2, "int8": 9}


def build(
    tensors: list[tuple[str, tuple[int, ...], np.ndarray | None]],
    operators: list[tuple[int, list[int], list[int]]],
    *,
    offset_form: bool = False,
    offsets: dict[str, tuple[int, int]] | None = None,
    types: dict[str, int] | None = None,
) -> bytes:
    """A one-subgraph model: ``tensors`` are (name, shape, constant data or None for float32
    activations), ``operators`` (builtin code, input indices, output indices). With
    ``offset_form`` the constants lie after the flatbuffer, located by ``offset``/``size``;
    ``offsets`` forces a constant's (offset, size), ``types`` a tensor's ``TensorType`` code."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    graph = schema.SubGraphT()
    graph.tensors = []
    constants: list[tuple[Any, np.ndarray, str]] = []
    for name, shape, data in tensors:
        tensor = schema.TensorT()
        tensor.name, tensor.shape = name, list(shape)
        tensor.type = _TYPES["float32" if data is None else data.dtype.name]
        tensor.type = (types or {}).get(name, tensor.type)
        tensor.buffer = 0
        if data is not None:
            buffer = schema.BufferT()
            if offset_form:
                buffer.offset, buffer.size = 1 << 40, data.nbytes  # placeholders
                constants.append((buffer, data, name))
            else:
                buffer.data = np.frombuffer(data.tobytes(), np.uint8)
            tensor.buffer = len(model.buffers)
            model.buffers.append(buffer)
        graph.tensors.append(tensor)
    codes: list[int] = []
    graph.operators = []
    for code, inputs, outputs in operators:
        if code not in codes:
            codes.append(code)
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = codes.index(code), inputs, outputs
        graph.operators.append(op)
    model.operatorCodes = []
    for code in codes:
        entry = schema.OperatorCodeT()
        entry.builtinCode, entry.deprecatedBuiltinCode = code, min(code, 127)
        model.operatorCodes.append(entry)
    graph.inputs, graph.outputs = [0], [len(tensors) - 1]
    model.subgraphs = [graph]

    def serialize() -> bytes:
        builder = flatbuffers.Builder(1024)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        return bytes(builder.Output())

    head = serialize()
    if not offset_form:
        return head
    position = (len(head) + 15) // 16 * 16
    tail = b""
    for buffer, data, name in constants:
        buffer.offset, buffer.size = position + len(tail), data.nbytes
        if offsets and name in offsets:
            buffer.offset, buffer.size = offsets[name]
        tail += data.tobytes().ljust((data.nbytes + 15) // 16 * 16, b"\0")
    head = serialize()
    assert len(head) <= position
    return head.ljust(position, b"\0") + tail


def dense(weights: np.ndarray, bias: np.ndarray, **options: Any) -> bytes:
    """x (1, in) -> FULLY_CONNECTED(weights (out, in), bias) -> y (1, out)."""
    out, inputs = weights.shape
    tensors = [
        ("x", (1, inputs), None),
        ("w", (out, inputs), weights),
        ("b", (out,), bias),
        ("y", (1, out), None),
    ]
    return build(tensors, [(9, [0, 1, 2], [3])], **options)
