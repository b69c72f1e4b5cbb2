"""Quantized ONNX weights read as quantized tensors (stored integers, scale, zero point, real
values): float models quantized by onnxruntime's own tools (``quantize_dynamic``:
``ConvInteger``, ``MatMulInteger``, ``DynamicQuantizeLSTM``; ``quantize_static``: QDQ pairs and
QOperator ``QLinearConv``/``QGemm``, per channel; ``MatMulNBitsQuantizer``: ``MatMulNBits``),
and ``onnx.helper`` graphs for what the tools do not write (a ``ConvInteger`` without its scale,
hostile ``MatMulNBits`` sizes).

Each file's kinds, integer dtypes, canonical shapes, parameter totals (float stored tensors and
integer weights) and scales/zero points are the file's; integer ops are recomputed by running
the node alone in onnxruntime on integers (exactly: ``ConvInteger``/``MatMulInteger``; within
one rounding step where the output is requantized), dequantized ones by comparing weightscope's
real values with ``(stored - zero_point) * scale`` computed here from onnx's own reading, and the
node's float output recomputed from the dequantized canonical kernel against onnxruntime."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
quantization = pytest.importorskip("onnxruntime.quantization")

import onnx_builders as ob  # noqa: E402
import reference as ref  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402

import weightscope  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

ATOL = RTOL = 1e-5
INTEGER_WEIGHTS = {
    "ConvInteger": (1,),
    "MatMulInteger": (1,),
    "QLinearConv": (3, 8),
    "QLinearMatMul": (3,),
    "QGemm": (3, 6),
    "DequantizeLinear": (0,),
    "DynamicQuantizeLSTM": (1, 2),
    "QAttention": (1,),
}
"""Integer inputs that are weights (the parameters an integer op's file holds beside its float
tensors), by operator: the count the totals must equal."""


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.depthwise = torch.nn.Conv2d(8, 8, 3, groups=8)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = torch.relu(self.depthwise(torch.relu(self.conv(x))))
        return self.fc(x.flatten(1))


X_SHAPE = (2, 3, 8, 8)


def _float_model(directory: Path) -> Path:
    torch.manual_seed(0)
    path = directory / "float.onnx"
    x = torch.randn(*X_SHAPE)
    torch.onnx.export(
        Net().eval(), (x,), str(path), input_names=["x"], output_names=["y"],
        opset_version=17, dynamo=False,
    )  # fmt: skip
    return path


class _Reader(quantization.CalibrationDataReader):  # type: ignore[misc]
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.feeds = iter([{"x": rng.standard_normal(X_SHAPE).astype(np.float32)}] * 4)

    def get_next(self) -> Any:
        return next(self.feeds, None)


def _quantized(directory: Path, how: str) -> Path:
    source = _float_model(directory)
    path = directory / f"{how}.onnx"
    q = quantization
    if how == "dynamic_uint8":
        q.quantize_dynamic(source, path, weight_type=q.QuantType.QUInt8)
    elif how == "dynamic_int8_per_channel":
        q.quantize_dynamic(source, path, weight_type=q.QuantType.QInt8, per_channel=True)
    elif how == "static_qdq":
        q.quantize_static(source, path, _Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True)
    else:
        q.quantize_static(
            source, path, _Reader(), quant_format=q.QuantFormat.QOperator, per_channel=True
        )
    return path


def _session(proto: onnx.ModelProto) -> Any:
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    return onnxruntime.InferenceSession(
        proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def _node_alone(proto: onnx.ModelProto, node: Any, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Run ``node`` alone: its constant inputs as initializers, the others fed."""
    stored = {i.name: i for i in proto.graph.initializer}
    inits = [stored[name] for name in node.input if name in stored]
    inputs = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.dtype), list(value.shape)
        )
        for name, value in feeds.items()
    ]
    graph = helper.make_graph(
        [node], "alone", inputs, [helper.make_empty_tensor_value_info(node.output[0])], inits
    )
    model = helper.make_model(graph, opset_imports=proto.opset_import)
    model.ir_version = proto.ir_version
    return np.asarray(_session(model).run([node.output[0]], feeds)[0])


def _file_parameters(proto: onnx.ModelProto) -> int:
    """Float stored elements, and the integer weights of integer ops."""
    stored = ob.stored_tensors(proto)
    total = sum(v.size for v in stored.values() if v.dtype.kind == "f")
    for node in proto.graph.node:
        for index in INTEGER_WEIGHTS.get(node.op_type, ()):
            name = node.input[index] if len(node.input) > index else ""
            if name in stored and stored[name].dtype.kind in "iu":
                total += stored[name].size
    return total


def _check_quantization(tensor: weightscope.Tensor, stored: dict[str, np.ndarray]) -> None:
    """Scale and zero point are the file's; the real values are ``(stored - zero point) *
    scale`` along the stored axis, computed here from onnx's reading."""
    q = tensor.quantization
    assert q is not None, tensor.name
    ints = stored[tensor.name] if tensor.part is None else None
    if ints is not None:
        np.testing.assert_array_equal(tensor.stored(), ints, strict=True)
    assert str(tensor.stored().dtype) == tensor.dtype
    scale = stored[q.scale_name] if q.scale_name else None
    zero = stored[q.zero_point_name] if q.zero_point_name else None
    if tensor.part is not None:
        index = int(tensor.part.strip("[]"))
        scale = None if scale is None else scale[index]
        zero = None if zero is None else zero[index]
        ints = tensor.stored()
    if scale is not None:
        np.testing.assert_array_equal(q.scales().reshape(-1), scale.reshape(-1), strict=False)
    if zero is not None:
        np.testing.assert_array_equal(q.zero_points().reshape(-1), zero.reshape(-1))
    view = [1] * ints.ndim
    if q.axis is not None:
        view[q.axis] = -1
    offset = 0.0 if zero is None else zero.astype(np.float64).reshape(view)
    factor = 1.0 if scale is None else scale.astype(np.float64).reshape(view)
    real = (ints.astype(np.float64) - offset) * factor
    np.testing.assert_allclose(tensor.numpy(), real, rtol=1e-6, atol=0)


# ---------------------------------------------------------------------------------------------
# quantize_dynamic: ConvInteger, MatMulInteger


@pytest.mark.parametrize("how", ["dynamic_uint8", "dynamic_int8_per_channel"])
def test_dynamic_quantization(tmp_path: Path, how: str) -> None:
    path = _quantized(tmp_path, how)
    proto = onnx.load(path)
    stored = ob.stored_tensors(proto)
    dtype = "uint8" if how == "dynamic_uint8" else "int8"
    nodes = {n.name: n for n in proto.graph.node}
    rng = np.random.default_rng(11)
    with weightscope.load(path) as model:
        assert model.params.total == _file_parameters(proto)
        layers = [layer for layer in model.layers if not layer.kind.is_unknown]
        assert [(layer.kind, layer.class_name) for layer in layers] == [
            ("conv2d", "ConvInteger"),
            ("depthwise_conv2d", "ConvInteger"),
            ("dense", "MatMulInteger"),
        ]
        for layer, shape in zip(layers, [(8, 3, 3, 3), (8, 1, 3, 3), (10, 128)], strict=True):
            kernel = layer.tensor("kernel")
            assert (kernel.dtype, kernel.canonical_shape, kernel.counted) == (dtype, shape, True)
            assert layer.tensor("kernel_scale").counted
            assert not layer.tensor("kernel_zero_point").counted
            assert layer.tensor("bias").native_shape == (shape[0],)
            _check_quantization(kernel, stored)
            assert "scale from Mul" in layer.note
            # the node alone on integers: exactly the integer arithmetic of the stored
            # canonical integers less their zero points
            node = nodes[layer.name]
            x_dtype = np.uint8
            x_zero = np.uint8(120)
            if layer.class_name == "ConvInteger":
                channels = shape[1] * layer.groups
                x = rng.integers(0, 256, (2, channels, 6, 7)).astype(x_dtype)
            else:
                x = rng.integers(0, 256, (3, 128)).astype(x_dtype)
            feeds = {node.input[0]: x, node.input[2]: np.array(x_zero)}
            out = _node_alone(proto, node, feeds).astype(np.float64)
            integers = kernel.stored_canonical().astype(np.float64)
            zero = kernel.quantization.zero_points().astype(np.float64)
            axis_view = [-1] + [1] * (integers.ndim - 1) if zero.size > 1 else []
            integers = integers - (zero.reshape(axis_view) if axis_view else zero)
            shifted = x.astype(np.float64) - float(x_zero)
            if layer.class_name == "ConvInteger":
                mine = ref.conv(shifted, integers, groups=layer.groups)
            else:
                mine = ref.dense(shifted, integers)
            np.testing.assert_array_equal(mine, out)


def test_dynamic_quantization_lstm(tmp_path: Path) -> None:
    """``DynamicQuantizeLSTM``: W (directions, in, 4h) int8 with one scale per direction, read
    as one quantized part per direction; its output (the input quantized at run time too) is
    the canonical recurrence on the dequantized tensors, within the activations' quantization
    error, and the ONNX gate order is the one that reproduces it."""
    torch.manual_seed(1)
    lstm = torch.nn.LSTM(5, 4, bidirectional=True, batch_first=True).eval()

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = lstm

        def forward(self, inputs):  # type: ignore[no-untyped-def]
            return self.rnn(inputs)[0]

    source, path = tmp_path / "lstm.onnx", tmp_path / "lstm_q.onnx"
    x = np.random.default_rng(2).standard_normal((2, 6, 5)).astype(np.float32)
    torch.onnx.export(
        Wrapper(), (torch.from_numpy(x),), str(source), input_names=["x"], output_names=["y"],
        opset_version=17, dynamo=False,
    )  # fmt: skip
    quantization.quantize_dynamic(source, path, weight_type=quantization.QuantType.QInt8)
    proto = onnx.load(path)
    assert any(n.op_type == "DynamicQuantizeLSTM" for n in proto.graph.node)
    stored = ob.stored_tensors(proto)
    (expected,) = _session(proto).run(None, {"x": x})
    with weightscope.load(path) as model:
        assert model.params.total == _file_parameters(proto)
        forward, backward = (layer for layer in model.layers if layer.kind == "lstm")
        assert backward.name == f"{forward.name}/reverse"
        for d, layer in enumerate((forward, backward)):
            for role in ("kernel", "recurrent_kernel"):
                tensor = layer.tensor(role)
                width = 5 if role == "kernel" else 4
                assert (tensor.dtype, tensor.native_layout, tensor.part) == (
                    "int8",
                    "I{iofc}",
                    f"[{d}]",
                )
                assert tensor.canonical_shape == (4, 4, width)
                _check_quantization(tensor, stored)
                # the dequantized canonical kernel is torch's float one within a step
                suffix = "_reverse" if d else ""
                name = "weight_ih_l0" if role == "kernel" else "weight_hh_l0"
                torch_value = getattr(lstm, name + suffix).detach().numpy().reshape(4, 4, width)
                step = float(tensor.quantization.scales().max())
                np.testing.assert_allclose(tensor.canonical(), torch_value, atol=step, rtol=0)
        mine = np.concatenate(
            [
                ref.canonical_recurrent_layer("lstm", x.astype(np.float64), forward),
                ref.canonical_recurrent_layer(
                    "lstm", x.astype(np.float64), backward, go_backwards=True
                )[:, ::-1],
            ],
            axis=-1,
        )
        error = np.abs(mine - expected).max()
        assert error < 0.02, error
        # control: torch's float weights in ONNX's stored gate order (i, o, f, c) read as
        # canonical (i, f, g, o) do not reproduce it
        swapped = ref.canonical_recurrent(
            "lstm",
            x.astype(np.float64),
            forward.tensor("kernel").canonical()[[0, 3, 1, 2]],
            forward.tensor("recurrent_kernel").canonical()[[0, 3, 1, 2]],
            forward.tensor("bias").canonical()[[0, 3, 1, 2]],
            forward.tensor("recurrent_bias").canonical()[[0, 3, 1, 2]],
        )
        assert np.abs(swapped - expected[..., :4]).max() > 10 * error


# ---------------------------------------------------------------------------------------------
# quantize_static: QDQ and QOperator, per channel


def test_static_qdq_per_channel(tmp_path: Path) -> None:
    path = _quantized(tmp_path, "static_qdq")
    proto = onnx.load(path)
    stored = ob.stored_tensors(proto)
    nodes = {n.name: n for n in proto.graph.node}
    rng = np.random.default_rng(3)
    with weightscope.load(path) as model:
        assert model.params.total == _file_parameters(proto)
        layers = [layer for layer in model.layers if not layer.kind.is_unknown]
        assert [layer.kind for layer in layers] == ["conv2d", "depthwise_conv2d", "dense"]
        for layer in layers:
            kernel, bias = layer.tensor("kernel"), layer.tensor("bias")
            assert (kernel.dtype, bias.dtype) == ("int8", "int32")
            assert kernel.quantization.axis == 0 and kernel.quantization_axis == 0
            _check_quantization(kernel, stored)
            _check_quantization(bias, stored)
            # the float node alone (its DequantizeLinear inputs given as the real values
            # weightscope reads): its output recomputed from the canonical kernel
            node = nodes[layer.name]
            if layer.kind == "dense":
                x = rng.standard_normal((2, 128)).astype(np.float32)
                mine = ref.dense(x, kernel.canonical(), bias.canonical())
            else:
                channels = kernel.canonical_shape[1] * layer.groups
                x = rng.standard_normal((2, channels, 6, 6)).astype(np.float32)
                mine = ref.conv(x, kernel.canonical(), bias.canonical(), groups=layer.groups)
            feeds = {node.input[0]: x, node.input[1]: kernel.numpy(), node.input[2]: bias.numpy()}
            out = _node_alone(proto, node, feeds)
            scale = np.abs(out).max()
            np.testing.assert_allclose(mine, out, atol=ATOL * scale, rtol=RTOL)


def _qlinear_reference(
    layer: weightscope.Layer, x: np.ndarray, *, kernel_zero_point: bool = True
) -> np.ndarray:
    """A QLinear op from weightscope's stored canonical integers, zero points and scales:
    integer accumulation (and the int32 bias, where there is one), then requantized by
    ``x_scale * w_scale / y_scale``; ``kernel_zero_point=False``: a control that leaves the
    kernel's zero points out."""
    t = {tensor.role: tensor for tensor in layer.tensors}
    kernel = t["kernel"].stored_canonical().astype(np.float64)
    zero = t["kernel_zero_point"].numpy().astype(np.float64) * kernel_zero_point
    kernel = kernel - zero.reshape([-1] + [1] * (kernel.ndim - 1))
    shifted = x.astype(np.float64) - t["input_zero_point"].numpy()
    bias = t["bias"].stored().astype(np.float64) if "bias" in t else None
    if layer.kind == "dense":
        acc = ref.dense(shifted, kernel, bias)
        view = (1, -1)
    else:
        acc = ref.conv(shifted, kernel, bias, groups=layer.groups)
        view = (1, -1, 1, 1)
    scales = t["input_scale"].numpy() * t["kernel_scale"].numpy() / t["output_scale"].numpy()
    y = np.rint(acc * scales.astype(np.float64).reshape(view)) + t["output_zero_point"].numpy()
    info = np.iinfo(t["output_zero_point"].dtype)
    return np.clip(y, info.min, info.max)


def test_static_qoperator_per_channel(tmp_path: Path) -> None:
    path = _quantized(tmp_path, "static_qoperator")
    proto = onnx.load(path)
    stored = ob.stored_tensors(proto)
    nodes = {n.name: n for n in proto.graph.node}
    rng = np.random.default_rng(4)
    with weightscope.load(path) as model:
        assert model.params.total == _file_parameters(proto)
        layers = [layer for layer in model.layers if not layer.kind.is_unknown]
        assert [(layer.kind, layer.class_name) for layer in layers] == [
            ("conv2d", "QLinearConv"),
            ("depthwise_conv2d", "QLinearConv"),
            ("dense", "QGemm"),
        ]
        for layer in layers:
            kernel = layer.tensor("kernel")
            assert kernel.dtype == "int8" and kernel.quantization_axis == 0
            _check_quantization(kernel, stored)
            bias = layer.tensor("bias")
            # the int32 bias stands for bias * x_scale * w_scale
            real = bias.stored() * (
                layer.tensor("input_scale").numpy().astype(np.float64)
                * layer.tensor("kernel_scale").numpy()
            )
            np.testing.assert_allclose(bias.numpy(), real, rtol=1e-6)
            node = nodes[layer.name]
            if layer.kind == "dense":
                x = rng.integers(-64, 65, (2, 128)).astype(np.int8)
            else:
                channels = kernel.canonical_shape[1] * layer.groups
                x = rng.integers(-64, 65, (2, channels, 6, 6)).astype(np.int8)
            out = _node_alone(proto, node, {node.input[0]: x}).astype(np.float64)
            mine = _qlinear_reference(layer, x)
            assert np.abs(mine - out).max() <= 1  # one step of the requantization's rounding


# ---------------------------------------------------------------------------------------------
# MatMulNBits


def _unpack_4bit(packed: np.ndarray, n: int, k: int) -> np.ndarray:
    """(N, blocks, blob) bytes -> (N, K) 4-bit integers, the low nibble first (written here
    from the operator's specification, apart from weightscope's unpacking)."""
    flat = packed.reshape(n, -1)
    out = np.empty((n, flat.shape[1] * 2), np.int64)
    out[:, 0::2] = flat & 0x0F
    out[:, 1::2] = flat >> 4
    return out[:, :k]


@pytest.mark.parametrize("k", [64, 72])
def test_matmul_nbits(tmp_path: Path, k: int) -> None:
    nbits = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")
    rng = np.random.default_rng(5)
    n, block = 16, 32
    weight = rng.standard_normal((k, n)).astype(np.float32)
    graph = ob.graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], "mm")],
        [ob.value_info("x", TensorProto.FLOAT, [3, k])],
        [ob.value_info("y", TensorProto.FLOAT, [3, n])],
        [ob.tensor("W", weight)],
    )
    proto = ob.model(graph)
    quantizer = nbits.MatMulNBitsQuantizer(proto, block_size=block, is_symmetric=False)
    quantizer.process()
    path = tmp_path / "nbits.onnx"
    quantizer.model.save_model_to_file(str(path))
    proto = onnx.load(path)
    (node,) = [m for m in proto.graph.node if m.op_type == "MatMulNBits"]
    stored = ob.stored_tensors(proto)
    packed, scales = stored[node.input[1]], stored[node.input[2]]
    blocks = -(-k // block)
    zero_bytes = stored[node.input[3]].reshape(n, -1)
    zeros = _unpack_4bit(zero_bytes, n, blocks)
    ints = _unpack_4bit(packed, n, k)
    expand = np.repeat(np.arange(blocks), block)[:k]
    real = (ints - zeros[:, expand]) * scales.reshape(n, blocks)[:, expand].astype(np.float64)
    x = rng.standard_normal((3, k)).astype(np.float32)
    (expected,) = _session(proto).run(None, {"x": x})
    with weightscope.load(path) as model:
        (layer,) = [layer for layer in model.layers if not layer.kind.is_unknown]
        kernel = layer.tensor("kernel")
        assert (layer.kind, layer.class_name, kernel.native_layout) == (
            "dense",
            "MatMulNBits",
            "OI",
        )
        assert (kernel.dtype, kernel.native_shape, kernel.size) == ("uint4", (n, k), n * k)
        assert kernel.quantization.block_size == block and kernel.quantization_axis == 1
        np.testing.assert_array_equal(kernel.stored_canonical(), ints)
        np.testing.assert_allclose(kernel.canonical(), real, rtol=1e-6)
        np.testing.assert_allclose(ref.dense(x, kernel.canonical()), expected, atol=1e-4, rtol=1e-4)
        floats = sum(v.size for v in stored.values() if v.dtype.kind == "f")
        assert model.params.total == floats + n * k


@pytest.mark.parametrize(
    ("attrs", "said"),
    [
        ({"K": 4096}, "is not uint8"),  # a K the stored blob does not hold
        ({"N": 10**9}, "is not uint8"),
        ({"block_size": 0}, "block_size = 0"),
        ({"bits": 3}, "3-bit"),
    ],
)
def test_matmul_nbits_sizes_that_do_not_fit(attrs: dict[str, int], said: str) -> None:
    """Attributes that do not fit the stored blob: ``unknown`` with the reason, never a crash or
    an allocation of the declared size."""
    n, k, block = 4, 32, 16
    values = {"K": k, "N": n, "bits": 4, "block_size": block, **attrs}
    inits = [
        ob.tensor("B", np.zeros((n, k // block, block // 2), np.uint8)),
        ob.tensor("scales", np.ones(n * (k // block), np.float32)),
    ]
    node = helper.make_node(
        "MatMulNBits", ["x", "B", "scales"], ["y"], "mm", domain="com.microsoft", **values
    )
    graph = helper.make_graph(
        [node], "g", [ob.value_info("x", TensorProto.FLOAT, None)],
        [ob.value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    with weightscope.load(proto) as model:
        (layer,) = model.layers
        assert layer.kind_label == "unknown (MatMulNBits)"
        assert said in layer.note


# ---------------------------------------------------------------------------------------------
# ConvInteger without its scale


def test_conv_integer_without_a_scale_says_so() -> None:
    rng = np.random.default_rng(6)
    w = rng.integers(0, 256, (4, 2, 3, 3)).astype(np.uint8)
    zero = np.uint8(128)
    node = helper.make_node("ConvInteger", ["x", "w", "", "wz"], ["y"], "ci")
    graph = helper.make_graph(
        [node], "g", [ob.value_info("x", TensorProto.UINT8, [1, 2, 5, 5])],
        [ob.value_info("y", TensorProto.INT32, None)],
        [ob.tensor("w", w), ob.tensor("wz", np.array(zero))],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with weightscope.load(proto) as model:
        (layer,) = model.layers
        kernel = layer.tensor("kernel")
        assert (layer.kind, kernel.dtype, kernel.counted) == ("conv2d", "uint8", True)
        assert "scale is missing" in layer.note and "less the zero point" in layer.note
        assert kernel.quantization.scale_name is None
        np.testing.assert_array_equal(kernel.canonical(), w.astype(np.float32) - 128)
        assert [t.role for t in layer.tensors] == ["kernel", "kernel_zero_point"]
        assert model.params.total == w.size


def test_dequantized_values_feed_the_statistics() -> None:
    """A quantized kernel's statistics are those of its real values; its stored ones those of
    the integers."""
    w = np.arange(-8, 8, dtype=np.int8).reshape(4, 4)
    nodes = [
        helper.make_node("DequantizeLinear", ["w", "s", "z"], ["W"], "dq"),
        helper.make_node("MatMul", ["x", "W"], ["y"], "mm"),
    ]
    graph = helper.make_graph(
        nodes, "g", [ob.value_info("x", TensorProto.FLOAT, [1, 4])],
        [ob.value_info("y", TensorProto.FLOAT, [1, 4])],
        [ob.tensor("w", w), ob.tensor("s", np.float32(0.5)), ob.tensor("z", np.int8(2))],
    )  # fmt: skip
    with weightscope.load(ob.model(graph)) as model:
        kernel = model.layer("mm").tensor("kernel")
        assert kernel.stats().max == pytest.approx((7 - 2) * 0.5)
        assert kernel.stored_stats().max == 7


# ---------------------------------------------------------------------------------------------
# QLinearMatMul: the integer arithmetic recomputed


@pytest.mark.parametrize("per_column", [False, True])
def test_qlinear_matmul(per_column: bool) -> None:
    """``QLinearMatMul(a, b)`` with a dynamic uint8 ``a`` and a constant int8 ``b`` quantized per
    tensor or per column: the node's requantized output is weightscope's stored canonical
    integers less their zero points, times the scales, within one rounding step; the real values
    are onnx's own ``DequantizeLinear`` of ``b``."""
    rng = np.random.default_rng(8)
    k, n = 16, 6
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    if per_column:
        b_scale = rng.uniform(0.01, 0.04, n).astype(np.float32)
        b_zero = rng.integers(-20, 21, n).astype(np.int8)
    else:
        b_scale, b_zero = np.array(0.02, np.float32), np.array(10, np.int8)
    inits = {
        "a_scale": np.array(0.05, np.float32), "a_zero": np.array(120, np.uint8),
        "b": b, "b_scale": b_scale, "b_zero": b_zero,
        "y_scale": np.array(0.5, np.float32), "y_zero": np.array(128, np.uint8),
    }  # fmt: skip
    node = helper.make_node("QLinearMatMul", ["a", *inits], ["y"], "qmm")
    graph = helper.make_graph(
        [node], "g", [ob.value_info("a", TensorProto.UINT8, [4, k])],
        [ob.value_info("y", TensorProto.UINT8, [4, n])],
        [ob.tensor(name, value) for name, value in inits.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    stored = ob.stored_tensors(proto)
    a = rng.integers(0, 256, (4, k)).astype(np.uint8)
    out = _node_alone(proto, node, {"a": a}).astype(np.float64)
    dequantize = helper.make_node("DequantizeLinear", ["b", "b_scale", "b_zero"], ["real"], axis=1)
    (real,) = ReferenceEvaluator(dequantize).run(
        None, {"b": b, "b_scale": b_scale, "b_zero": b_zero}
    )
    with weightscope.load(proto) as model:
        assert model.params.total == _file_parameters(proto)
        (layer,) = model.layers
        kernel = layer.tensor("kernel")
        assert (layer.kind, kernel.dtype, kernel.native_layout) == ("dense", "int8", "IO")
        assert (kernel.canonical_shape, kernel.counted) == ((n, k), True)
        assert kernel.quantization_axis == (0 if per_column else None)
        _check_quantization(kernel, stored)
        np.testing.assert_allclose(kernel.canonical(), real.T, rtol=1e-6, atol=0)
        mine = _qlinear_reference(layer, a)
        assert ((out == 0) | (out == 255)).mean() < 0.1  # few outputs saturated
        assert np.abs(mine - out).max() <= 1  # one step of the requantization's rounding
        # control: the same arithmetic with the kernel's zero points left out is steps away
        unshifted = _qlinear_reference(layer, a, kernel_zero_point=False)
        assert np.abs(unshifted - out).max() > 3


# ---------------------------------------------------------------------------------------------
# com.microsoft.QAttention: quantize_dynamic's Attention

HEADS, HIDDEN, WIDTH = 2, 8, 24
"""An attention of 2 heads of 4 on a width of 24: its (in, 3*hidden) weight is square, so that
reading it transposed is a mistake the recomputation must catch."""


def _attention(
    x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, order: tuple[int, ...] = (0, 1, 2)
) -> np.ndarray:
    """``com.microsoft.Attention`` (no mask, no past, default scale) written here from its
    specification: the projection ``x @ kernel.T + bias`` with a canonical ``(3*hidden, in)``
    kernel, its thirds in ``order`` taken as Q, K, V, HEADS heads of scaled dot products."""
    qkv = ref.dense(x.astype(np.float64), kernel, bias)
    hidden = qkv.shape[-1] // 3
    q, k, v = (
        qkv[..., i * hidden : (i + 1) * hidden]
        .reshape(*x.shape[:2], HEADS, -1)
        .transpose(0, 2, 1, 3)
        for i in order
    )
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return (weights @ v).transpose(0, 2, 1, 3).reshape(*x.shape[:2], hidden)


def _dynamic_quantization(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """``DynamicQuantizeLinear`` as its specification says: uint8 over [min(0, x), max(0, x)]."""
    low, high = min(0.0, float(x.min())), max(0.0, float(x.max()))
    scale = np.float32((high - low) / 255)
    zero = np.uint8(np.clip(np.rint(-low / scale), 0, 255))
    return np.clip(np.rint(x / scale) + zero, 0, 255).astype(np.uint8), scale, zero


def _attention_bound(
    x_step: float, x: np.ndarray, kernel: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """How far each output of the attention can move, to first order, when each input is
    rounded to a step of ``x_step`` (moved by at most half of it): ``x_step / 2 * sum |dy/dx|``
    over the inputs, the derivatives by central differences."""
    flat = x.astype(np.float64).reshape(-1)
    h = 1e-6
    rows = []
    for i in range(flat.size):
        up, down = flat.copy(), flat.copy()
        up[i] += h
        down[i] -= h
        change = _attention(up.reshape(x.shape), kernel, bias)
        change -= _attention(down.reshape(x.shape), kernel, bias)
        rows.append(np.abs(change) / (2 * h))
    return x_step / 2 * np.sum(rows, axis=0)


@pytest.mark.parametrize(("weight_type", "per_channel"), [("QInt8", False), ("QUInt8", True)])
def test_qattention(tmp_path: Path, weight_type: str, per_channel: bool) -> None:
    """``quantize_dynamic`` turns a float ``com.microsoft.Attention`` into ``QAttention``: read
    as a dense layer whose (in, 3*hidden) integer kernel is the file's, its scales and zero
    points the file's (per tensor, or per column), its real values ``(stored - zero point) *
    scale``; the node alone on a quantized input is the attention of weightscope's dequantized
    canonical kernel and bias on the dequantized input (Q, K, V in that order), and the whole
    model on a float input within the bound the input's quantization step allows, which a wrong
    Q/K/V split or a transposed kernel exceed by far."""
    rng = np.random.default_rng(9)
    weight = (rng.standard_normal((WIDTH, 3 * HIDDEN)) / np.sqrt(WIDTH)).astype(np.float32)
    bias = (rng.standard_normal(3 * HIDDEN) * 0.1).astype(np.float32)
    node = helper.make_node(
        "Attention", ["x", "W", "B"], ["y"], "attention", domain="com.microsoft", num_heads=HEADS
    )
    graph = helper.make_graph(
        [node], "g", [ob.value_info("x", TensorProto.FLOAT, [2, 5, WIDTH])],
        [ob.value_info("y", TensorProto.FLOAT, [2, 5, HIDDEN])],
        [ob.tensor("W", weight), ob.tensor("B", bias)],
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    source, path = tmp_path / "attention.onnx", tmp_path / "attention_q.onnx"
    float_model = helper.make_model(graph, opset_imports=opsets)
    float_model.ir_version = 8
    onnx.save(float_model, source)
    x = rng.standard_normal((2, 5, WIDTH)).astype(np.float32)
    (float_out,) = _session(float_model).run(None, {"x": x})
    np.testing.assert_allclose(_attention(x, weight.T, bias), float_out, atol=1e-5, rtol=1e-5)
    quantization.quantize_dynamic(
        source, path, weight_type=getattr(quantization.QuantType, weight_type),
        per_channel=per_channel,
    )  # fmt: skip
    proto = onnx.load(path)
    assert [n.op_type for n in proto.graph.node] == ["DynamicQuantizeLinear", "QAttention"]
    qnode = proto.graph.node[1]
    stored = ob.stored_tensors(proto)
    ints = stored[qnode.input[1]]
    dtype = "int8" if weight_type == "QInt8" else "uint8"
    assert (str(ints.dtype), ints.shape) == (dtype, (WIDTH, 3 * HIDDEN))
    assert stored[qnode.input[4]].size == (3 * HIDDEN if per_channel else 1)
    with weightscope.load(path) as model:
        assert model.params.total == _file_parameters(proto)
        (layer,) = [layer for layer in model.layers if not layer.kind.is_unknown]
        assert (layer.kind, layer.class_name, layer.config["num_heads"]) == (
            "dense",
            "QAttention",
            HEADS,
        )
        assert "Q, K and V in that order" in layer.note
        t = {tensor.role: tensor for tensor in layer.tensors}
        assert list(t) == ["kernel", "kernel_scale", "kernel_zero_point", "bias"]
        kernel = t["kernel"]
        assert (kernel.dtype, kernel.native_layout, kernel.canonical_shape) == (
            dtype,
            "IO",
            (3 * HIDDEN, WIDTH),
        )
        assert kernel.counted and t["kernel_scale"].counted and t["bias"].counted
        assert not t["kernel_zero_point"].counted
        assert kernel.quantization_axis == (0 if per_channel else None)
        _check_quantization(kernel, stored)
        scale = stored[qnode.input[4]].astype(np.float64)
        zero = stored[qnode.input[7]].astype(np.float64)
        np.testing.assert_allclose(kernel.canonical(), ((ints - zero) * scale).T, rtol=1e-6)
        np.testing.assert_array_equal(t["bias"].numpy(), bias)
        w, b = kernel.canonical().astype(np.float64), t["bias"].numpy().astype(np.float64)

        # the node alone on the input quantized here: the attention of the dequantized input
        xq, x_scale, x_zero = _dynamic_quantization(x)
        feeds = {
            qnode.input[0]: xq,
            qnode.input[3]: np.array(x_scale),
            qnode.input[6]: np.array(x_zero),
        }
        out = _node_alone(proto, qnode, feeds)
        x_real = (xq.astype(np.float64) - float(x_zero)) * float(x_scale)
        mine = _attention(x_real, w, b)
        tight = 1e-5 * np.abs(out).max()
        np.testing.assert_allclose(mine, out, atol=tight, rtol=1e-5)

        # the whole model on the float input (quantized at run time by onnxruntime): the
        # attention of the float input within the bound of the input's quantization step
        (expected,) = _session(proto).run(None, {"x": x})
        bound = _attention_bound(float(x_scale), x, w, b)
        error = np.abs(_attention(x, w, b) - expected)
        assert (error <= bound).all(), (error - bound).max()
        controls = {
            **{f"Q, K, V as {order}": _attention(x, w, b, order)
               for order in itertools.permutations(range(3)) if order != (0, 1, 2)},
            "transposed kernel": _attention(x, w.T, b),
        }  # fmt: skip
        for what, wrong in controls.items():
            assert (np.abs(wrong - expected) / bound).max() > 10, what
