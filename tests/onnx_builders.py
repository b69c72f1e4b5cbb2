"""Small ONNX graphs made with ``onnx.helper`` for the tests, and a way to list every tensor a
model stores (initializers and ``Constant`` values, in subgraphs too) as onnx itself reads it."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
"""Every operator used here exists at opset 17, which onnxruntime runs on any build."""
IR_VERSION = 8

FLOAT = TensorProto.FLOAT


def tensor(name: str, array: np.ndarray, *, raw: bool = True) -> onnx.TensorProto:
    """A tensor holding ``array``: in ``raw_data`` (``raw=True``, what exporters write) or in
    the typed field (``float_data``, ``int32_data``, ...)."""
    array = np.ascontiguousarray(array)
    if raw:
        return numpy_helper.from_array(array, name)
    data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
    # make_tensor packs float16 values into int32_data itself
    return helper.make_tensor(name, data_type, array.shape, array.reshape(-1).tolist(), raw=False)


def constant(output: str, array: np.ndarray, *, name: str | None = None) -> onnx.NodeProto:
    """A ``Constant`` node whose ``value`` is ``array``."""
    return helper.make_node(
        "Constant", [], [output], name=name or f"const_{output}", value=tensor(output, array)
    )


def value_info(name: str, elem_type: int, shape: Sequence[int | str | None] | None) -> Any:
    """A typed graph input or output; ``shape=None`` leaves the shape to the runtime."""
    return helper.make_tensor_value_info(name, elem_type, None if shape is None else list(shape))


def graph(
    nodes: list[onnx.NodeProto],
    inputs: list[Any],
    outputs: list[Any],
    initializers: Sequence[onnx.TensorProto] = (),
    name: str = "g",
) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, inputs, outputs, initializer=list(initializers))


def model(g: onnx.GraphProto) -> onnx.ModelProto:
    proto = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="weightscope-tests",
        producer_version="1.0",
    )
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return proto


def graphs(g: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """``g`` and every graph nested in its nodes' attributes."""
    yield g
    for node in g.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from graphs(attr.g)
            for sub in attr.graphs:
                yield from graphs(sub)


def stored_tensors(proto: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every tensor the model stores, by name, as ``onnx.numpy_helper`` reads it: initializers
    and ``Constant`` node values of every graph (subgraphs included). Names must be unique."""
    stored: dict[str, np.ndarray] = {}

    def put(name: str, array: np.ndarray) -> None:
        assert name not in stored, f"two stored tensors named {name!r}"
        stored[name] = array

    for g in graphs(proto.graph):
        for init in g.initializer:
            put(init.name, numpy_helper.to_array(init))
        for node in g.node:
            if node.op_type != "Constant":
                continue
            for attr in node.attribute:
                if attr.name == "value":
                    put(node.output[0], numpy_helper.to_array(attr.t))
                elif attr.name == "value_floats":
                    put(node.output[0], np.asarray(attr.floats, np.float32))
                elif attr.name == "value_float":
                    put(node.output[0], np.asarray(attr.f, np.float32))
                elif attr.name == "value_ints":
                    put(node.output[0], np.asarray(attr.ints, np.int64))
                elif attr.name == "value_int":
                    put(node.output[0], np.asarray(attr.i, np.int64))
    return stored


def conv_gemm_model(seed: int, in_channels: int, filters: int, outputs: int) -> onnx.ModelProto:
    """Conv (``filters x in_channels x 3 x 3``, on an 8x8 input) then Flatten and Gemm
    (``outputs x filters*6*6``, transB), random weights, written as PyTorch 2.13.0's exporter
    would name its producer."""
    rng = np.random.default_rng(seed)
    arrays = {
        "conv.weight": rng.normal(size=(filters, in_channels, 3, 3)),
        "conv.bias": rng.normal(size=filters),
        "fc.weight": rng.normal(size=(outputs, filters * 6 * 6)),
        "fc.bias": rng.normal(size=outputs),
    }
    nodes = [
        helper.make_node("Conv", ["X", "conv.weight", "conv.bias"], ["c"], name="conv"),
        helper.make_node("Flatten", ["c"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["Y"], name="fc", transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, in_channels, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, outputs])],
        [numpy_helper.from_array(a.astype(np.float32), n) for n, a in arrays.items()],
    )
    proto = helper.make_model(
        g,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="pytorch",
        producer_version="2.13.0",
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    return proto
