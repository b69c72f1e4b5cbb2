"""ONNX weights, read back by weightscope, reproduce onnxruntime's own outputs.

Every case is a small ONNX model: built with ``onnx.helper`` (one operator form each: grouped,
depthwise and transposed convolutions in 1-D, 2-D and 3-D with strides, dilations, asymmetric
pads and output padding; ``Gemm`` with ``transA``/``transB``/``alpha``/``beta``; ``MatMul`` with
the ``Add`` of its bias; ``BatchNormalization``, ``LayerNormalization``, ``Gather`` embeddings;
weights in ``Constant`` nodes, in ``If`` branches and a ``Loop`` body, behind static
``Transpose``/``Reshape``/``Squeeze``/``Identity``/``Cast`` nodes, shared by two nodes, in
external data, in typed fields, quantized through ``DequantizeLinear`` or in ``QLinearConv``),
or exported from PyTorch by both exporters (the TorchScript-based one, ``dynamo=False``, and
the default ``torch.export`` one, optimized and not).

For every case onnxruntime runs the file on a random input; weightscope reads the same file
(and the same model as a live ``onnx.ModelProto``) and must report every stored tensor exactly
as onnx reads it back, with the right kind, groups, roles, layouts, trainable and counted flags
and totals, and its canonical tensors must reproduce onnxruntime's output through ``reference``
(float64; onnxruntime computes in float32, hence ``ATOL = RTOL = 1e-5``).
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")  # the dynamo exporter writes its graphs with onnxscript

import onnx_builders as ob  # noqa: E402
import reference as ref  # noqa: E402
from framework_cache import build_cached, digest  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from torch import nn  # noqa: E402

import weightscope  # noqa: E402

ATOL = RTOL = 1e-5
SPATIAL = {1: "W", 2: "HW", 3: "DHW"}
BIG_BYTES = 4096
"""Tensors at least this large are read from the file by offset, smaller ones from the parsed
skeleton (``_onnx_wire.SMALL_BULK_BYTES``): the cases hold both."""

# ---------------------------------------------------------------------------------------------
# reference computations with ONNX semantics (explicit begin/end pads, output_padding, Gemm)


def conv_onnx(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    strides: list[int] | None = None,
    pads: list[int] | None = None,
    dilations: list[int] | None = None,
    group: int = 1,
    **_: Any,
) -> np.ndarray:
    """ONNX ``Conv``: pad ``(begin..., end...)`` with zeros, then a valid convolution."""
    dims = kernel.ndim - 2
    pads = pads or [0] * (2 * dims)
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[i + dims]) for i in range(dims)]
    return ref.conv(
        np.pad(np.asarray(x, np.float64), widths),
        kernel,
        bias,
        stride=strides or 1,
        dilation=dilations or 1,
        groups=group,
    )


def _fit(array: np.ndarray, axis: int, length: int) -> np.ndarray:
    """Cut ``array`` to ``length`` along ``axis``, or extend it with zeros at the end."""
    if array.shape[axis] >= length:
        return np.take(array, range(length), axis=axis)
    shape = list(array.shape)
    shape[axis] = length - array.shape[axis]
    return np.concatenate([array, np.zeros(shape)], axis=axis)


def conv_transpose_onnx(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    strides: list[int] | None = None,
    pads: list[int] | None = None,
    dilations: list[int] | None = None,
    output_padding: list[int] | None = None,
    group: int = 1,
    **_: Any,
) -> np.ndarray:
    """ONNX ``ConvTranspose`` with explicit pads: the full transposed convolution, extended by
    ``output_padding`` zeros at the end, without ``pads`` (begin, end) samples."""
    dims = kernel.ndim - 2
    strides = strides or [1] * dims
    dilations = dilations or [1] * dims
    pads = pads or [0] * (2 * dims)
    output_padding = output_padding or [0] * dims
    full = ref.conv_transpose(
        x, kernel, None, stride=strides, dilation=dilations, groups=group, padding="valid"
    )
    for axis in range(dims):
        size, k = x.shape[2 + axis], kernel.shape[2 + axis]
        length = (size - 1) * strides[axis] + (k - 1) * dilations[axis] + 1 + output_padding[axis]
        full = _fit(full, 2 + axis, length)
        full = np.take(full, range(pads[axis], length - pads[axis + dims]), axis=2 + axis)
    if bias is not None:
        full = full + np.asarray(bias, np.float64).reshape(1, -1, *([1] * dims))
    return full


def gemm_onnx(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    alpha: float = 1.0,
    beta: float = 1.0,
    transA: int = 0,
    **_: Any,
) -> np.ndarray:
    """ONNX ``Gemm`` from a canonical ``(out, in)`` kernel: ``alpha * A @ kernel.T + beta * C``."""
    out = alpha * ref.dense(x.T if transA else x, kernel)
    return out if bias is None else out + beta * np.asarray(bias, np.float64)


def torch_transpose_to_canonical(weight: np.ndarray, groups: int) -> np.ndarray:
    """PyTorch's transposed-conv weight ``(in, out/g, *k)`` -> canonical ``(out, in/g, *k)``:
    ``canonical[g * out_per_group + o, i] = weight[g * in_per_group + i, o]``."""
    in_channels, out_per_group, *spatial = weight.shape
    split = weight.reshape(groups, in_channels // groups, out_per_group, *spatial)
    return split.swapaxes(1, 2).reshape(groups * out_per_group, in_channels // groups, *spatial)


def dequantize(
    values: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 0
) -> np.ndarray:
    """``(values - zero_point) * scale``, per channel along ``axis`` where ``scale`` is 1-D."""
    shape = [1] * values.ndim
    if np.ndim(scale) == 1:
        shape[axis] = -1
    zp = 0.0 if zero_point is None else np.asarray(zero_point, np.float64).reshape(shape)
    return (np.asarray(values, np.float64) - zp) * np.asarray(scale, np.float64).reshape(shape)


# ---------------------------------------------------------------------------------------------
# cases

Canonical = dict[str, np.ndarray]
"""One layer's tensors by role: canonical where the tensor has a layout, native otherwise."""
Reference = Callable[[list[Canonical], dict[str, np.ndarray]], list[np.ndarray]]
"""(the classified layers in model order, one input feed) -> the model's outputs."""


@dataclass(frozen=True)
class Want:
    """What one classified (not ``unknown``) layer must look like."""

    kind: str
    tensors: dict[str, str | None]
    """Role -> the stored tensor's name, in the layer's order; None where an exporter made the
    name up."""
    groups: int = 1
    name: str | None = None
    """The layer's name where the case fixes it (the ONNX node's name)."""
    config: dict[str, Any] = field(default_factory=dict)
    """Attributes the layer's config must hold."""
    layouts: dict[str, str | None] = field(default_factory=dict)
    """Native layout by role, where the default for the kind and role does not apply."""
    note: tuple[str, ...] = ()
    """Words the layer's note must contain; none: the layer has no note."""
    shared: dict[str, str] = field(default_factory=dict)
    """Role -> ``layer/role`` whose stored data the tensor shares (and where it is counted)."""
    trainable: dict[str, bool | None] = field(default_factory=dict)
    """Trainable flag by role, where the default does not apply."""
    derived: dict[str, Callable[[np.ndarray], np.ndarray]] = field(default_factory=dict)
    """Role -> the native tensor made from the stored one by the graph's static operations."""

    def layout(self, role: str) -> str | None:
        if role in self.layouts:
            return self.layouts[role]
        if role == "kernel" and self.kind == "dense":
            return "OI"
        if role == "kernel":  # ONNX convs: (M, C/group, *k), transposed (C, M/group, *k)
            spatial = SPATIAL[int(self.kind[-2])]
            return ("IO" if "transpose" in self.kind else "OI") + spatial
        if role in ("bias", "gamma", "beta", "moving_mean", "moving_variance"):
            return "C"
        return None

    def expected_trainable(self, role: str) -> bool | None:
        if role in self.trainable:
            return self.trainable[role]
        if role in ("moving_mean", "moving_variance"):
            return False
        if role.endswith(("_scale", "_zero_point")):
            return None
        return True

    def counted(self, role: str) -> bool:
        """Integer zero points are not parameters; float scales are (stored float tensors)."""
        return role not in self.shared and not role.endswith("_zero_point")


@dataclass
class Built:
    path: Path
    wants: list[Want]
    feeds: list[dict[str, np.ndarray]]
    reference: Reference
    params: tuple[int, int, int]
    """Total, trainable, non-trainable (the rest is of unknown trainability)."""
    producer: str = "weightscope-tests 1.0"
    unknown: tuple[str, ...] | None = ()
    """Names of the ``unknown`` layers; None: any (an exporter's shape constants), as long as
    they hold no counted tensor."""
    torch_canonical: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    """(layer index, role) -> the canonical tensor PyTorch's module holds, exactly."""
    quantized_output: bool = False
    """Outputs are 8-bit integers: the reference may be off by one step of rounding."""
    outputs: list[list[np.ndarray]] = field(default_factory=list)
    """onnxruntime's outputs, per feed."""
    exact_outputs: list[list[np.ndarray]] | None = None
    """Outputs per feed computed by the test itself, exactly, where onnxruntime's depend on the
    CPU (its uint8 x int8 kernels sum pairs of products into int16, which saturates on CPUs
    without VNNI): the reference must equal these, element for element."""
    runtime_comparable: list[bool] = field(default_factory=list)
    """With ``exact_outputs``: per feed, whether onnxruntime's output is the same on every CPU
    (no pair of products can saturate), and so is checked against the exact outputs too."""


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Path, np.random.Generator], Built]
    exporter: str = "helper"
    """``helper``, ``torchscript`` (``dynamo=False``) or ``dynamo``."""


def _random(rng: np.random.Generator, shape: tuple[int, ...], scale: float = 0.5) -> np.ndarray:
    return (rng.standard_normal(shape) * scale + 0.1).astype(np.float32)


def _variance(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.3, 2.5, n).astype(np.float32)


def _save(directory: Path, proto: onnx.ModelProto, name: str = "model.onnx") -> Path:
    path = directory / name
    onnx.save_model(proto, path)
    return path


def _x(shape: tuple[int, ...] | list[Any]) -> Any:
    return ob.value_info("x", TensorProto.FLOAT, shape)


def _y(rank: int, name: str = "y") -> Any:
    """A float output of ``rank`` dims, their sizes left to onnxruntime."""
    return ob.value_info(name, TensorProto.FLOAT, [f"{name}_{i}" for i in range(rank)])


def _conv_case(
    case_id: str,
    op: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    kind: str,
    *,
    bias: bool = True,
    raw: bool = True,
    **attrs: Any,
) -> Case:
    """One ``Conv`` or ``ConvTranspose`` node named ``conv`` with initializers ``W`` and ``B``;
    ``raw=False`` keeps them in ``float_data`` instead of ``raw_data``."""

    def build(directory: Path, rng: np.random.Generator) -> Built:
        group = attrs.get("group", 1)
        out_channels = w_shape[0] if op == "Conv" else w_shape[1] * group
        w, b = _random(rng, w_shape), _random(rng, (out_channels,))
        inits = [ob.tensor("W", w, raw=raw)] + ([ob.tensor("B", b, raw=raw)] if bias else [])
        node = helper.make_node(op, ["x", "W"] + (["B"] if bias else []), ["y"], "conv", **attrs)
        path = _save(
            directory, ob.model(ob.graph([node], [_x(x_shape)], [_y(len(x_shape))], inits))
        )
        compute = conv_onnx if op == "Conv" else conv_transpose_onnx

        def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            t = layers[0]
            return [compute(feed["x"], t["kernel"], t.get("bias"), **attrs)]

        roles = {"kernel": "W", "bias": "B"} if bias else {"kernel": "W"}
        size = w.size + (b.size if bias else 0)
        want = Want(kind, roles, groups=group, name="conv", config=attrs)
        return Built(path, [want], [{"x": _random(rng, x_shape, 1.0)}], reference, (size, size, 0))

    return Case(case_id, build)


CONV_CASES = [
    _conv_case(
        "conv1d_groups2_stride2_dilation2_asymmetric_pads",
        "Conv", (2, 4, 13), (6, 2, 3), "conv1d",
        group=2, strides=[2], dilations=[2], pads=[1, 2],
    ),
    _conv_case(
        "conv2d_groups2_strides_dilations_pads_large",
        "Conv", (2, 16, 9, 8), (32, 8, 3, 2), "conv2d",
        group=2, strides=[2, 1], dilations=[1, 2], pads=[1, 0, 2, 1], kernel_shape=[3, 2],
    ),
    _conv_case(
        "conv3d_groups2",
        "Conv", (1, 4, 5, 7, 6), (6, 2, 2, 3, 2), "conv3d",
        group=2, strides=[1, 2, 1], dilations=[2, 1, 1], pads=[0, 1, 1, 1, 0, 0],
    ),
    _conv_case("conv2d_one_input_channel", "Conv", (2, 1, 6, 6), (4, 1, 3, 3), "conv2d"),
    _conv_case(
        "depthwise_conv2d_multiplier2",
        "Conv", (2, 3, 7, 6), (6, 1, 3, 3), "depthwise_conv2d",
        group=3, strides=[2, 2], pads=[1, 1, 1, 1],
    ),
    _conv_case(
        "depthwise_conv1d_no_bias",
        "Conv", (2, 4, 9), (4, 1, 5), "depthwise_conv1d", bias=False, group=4, pads=[2, 2],
    ),
    _conv_case(
        "depthwise_conv3d_dilated",
        "Conv", (1, 2, 4, 6, 5), (4, 1, 2, 2, 3), "depthwise_conv3d",
        group=2, dilations=[1, 2, 1],
    ),
    _conv_case(
        "conv_transpose1d_groups3_stride2_dilation2_output_padding",
        "ConvTranspose", (2, 6, 5), (6, 2, 3), "conv_transpose1d",
        group=3, strides=[2], dilations=[2], pads=[1, 1], output_padding=[1],
    ),
    _conv_case(
        "conv_transpose2d_groups2_strides_pads_output_padding_large",
        "ConvTranspose", (2, 16, 4, 5), (16, 12, 3, 3), "conv_transpose2d",
        group=2, strides=[2, 3], pads=[1, 0, 0, 1], output_padding=[1, 2],
    ),
    _conv_case(
        "conv_transpose3d_groups2",
        "ConvTranspose", (1, 4, 3, 4, 3), (4, 3, 2, 2, 2), "conv_transpose3d",
        group=2, strides=[2, 1, 2], pads=[0, 1, 0, 0, 0, 1], output_padding=[1, 0, 0],
    ),
    _conv_case(
        "conv_transpose2d_stride_beyond_kernel_no_bias",
        "ConvTranspose", (2, 3, 4, 3), (3, 5, 2, 2), "conv_transpose2d", bias=False,
        strides=[3, 3],
    ),
    _conv_case(
        "conv2d_weights_in_float_data_large",
        "Conv", (2, 8, 6, 6), (16, 8, 3, 3), "conv2d", raw=False, pads=[1, 1, 1, 1],
    ),
]  # fmt: skip


def _conv_add_case(
    case_id: str,
    op: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    kind: str,
    bias_shape: tuple[int, ...],
    *,
    constant_node: bool = False,
    bias_first: bool = False,
    **attrs: Any,
) -> Case:
    """A ``Conv`` or ``ConvTranspose`` without ``B``, then ``Add(y, c)`` (``Add(c, y)`` with
    ``bias_first``) of a per-channel constant ``c`` of ``bias_shape`` (Paddle's exporter, and
    PyTorch's for a bias-less conv plus ``bias.view(1, -1, 1, 1)``), in an initializer or a
    ``Constant`` node: the conv's ``bias`` is ``c`` read as ``(C,)``."""

    def build(directory: Path, rng: np.random.Generator) -> Built:
        group = attrs.get("group", 1)
        out_channels = w_shape[0] if op == "Conv" else w_shape[1] * group
        assert math.prod(bias_shape) == out_channels
        w, c = _random(rng, w_shape), _random(rng, bias_shape)
        operands = ["c", "h"] if bias_first else ["h", "c"]
        nodes = [
            helper.make_node(op, ["x", "W"], ["h"], "conv", **attrs),
            helper.make_node("Add", operands, ["y"], "add"),
        ]
        inits = [ob.tensor("W", w)]
        if constant_node:
            nodes.insert(0, ob.constant("c", c))
        else:
            inits.append(ob.tensor("c", c))
        graph = ob.graph(nodes, [_x(x_shape)], [_y(len(x_shape))], inits)
        path = _save(directory, ob.model(graph))
        compute = conv_onnx if op == "Conv" else conv_transpose_onnx

        def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            t = layers[0]
            assert t["bias"].shape == (out_channels,)
            return [compute(feed["x"], t["kernel"], t["bias"], **attrs)]

        want = Want(
            kind, {"kernel": "W", "bias": "c"}, groups=group, name="conv", config=attrs,
            note=("bias from Add 'add'", f"its {bias_shape} constant read as ({out_channels},)"),
            derived={"bias": lambda stored: stored.reshape(-1)},
        )  # fmt: skip
        size = w.size + c.size
        return Built(path, [want], [{"x": _random(rng, x_shape, 1.0)}], reference, (size, size, 0))

    return Case(case_id, build)


CONV_ADD_CASES = [
    _conv_add_case(
        "conv1d_add_1c1_groups2", "Conv", (2, 4, 13), (6, 2, 3), "conv1d", (1, 6, 1),
        group=2, strides=[2], pads=[1, 2],
    ),
    _conv_add_case(
        "conv1d_add_c1_constant_node_bias_first", "Conv", (2, 3, 9), (5, 3, 2), "conv1d", (5, 1),
        constant_node=True, bias_first=True, dilations=[2],
    ),
    _conv_add_case(
        "conv2d_add_1c11_paddle_large", "Conv", (2, 8, 9, 8), (16, 8, 3, 3), "conv2d",
        (1, 16, 1, 1), strides=[2, 1], pads=[1, 0, 2, 1],
    ),
    _conv_add_case(
        "conv2d_add_c11_constant_node_bias_first", "Conv", (2, 4, 6, 5), (6, 2, 3, 2), "conv2d",
        (6, 1, 1), constant_node=True, bias_first=True, group=2,
    ),
    _conv_add_case(
        "depthwise_conv2d_add_1c11", "Conv", (2, 3, 7, 6), (6, 1, 3, 3), "depthwise_conv2d",
        (1, 6, 1, 1), group=3, pads=[1, 1, 1, 1],
    ),
    _conv_add_case(
        "conv3d_add_1c111_constant_node_groups2", "Conv", (1, 4, 5, 7, 6), (6, 2, 2, 3, 2),
        "conv3d", (1, 6, 1, 1, 1), constant_node=True, group=2, strides=[1, 2, 1],
    ),
    _conv_add_case(
        "conv3d_add_c111_bias_first", "Conv", (1, 2, 4, 5, 4), (3, 2, 2, 2, 2), "conv3d",
        (3, 1, 1, 1), bias_first=True,
    ),
    _conv_add_case(
        "conv_transpose1d_add_1c1_groups3", "ConvTranspose", (2, 6, 5), (6, 2, 3),
        "conv_transpose1d", (1, 6, 1), group=3, strides=[2], output_padding=[1],
    ),
    _conv_add_case(
        "conv_transpose2d_add_c11_constant_node_bias_first", "ConvTranspose", (2, 4, 4, 5),
        (4, 3, 3, 2), "conv_transpose2d", (6, 1, 1), constant_node=True, bias_first=True,
        group=2, strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1],
    ),
    _conv_add_case(
        "conv_transpose3d_add_1c111", "ConvTranspose", (1, 4, 3, 4, 3), (4, 3, 2, 2, 2),
        "conv_transpose3d", (1, 3, 1, 1, 1), strides=[2, 1, 2],
    ),
]  # fmt: skip


def _gemm_case(
    case_id: str,
    x_shape: tuple[int, int],
    w_shape: tuple[int, int],
    *,
    bias: bool = True,
    note: tuple[str, ...] = (),
    **attrs: Any,
) -> Case:
    def build(directory: Path, rng: np.random.Generator) -> Built:
        w = _random(rng, w_shape)
        out = w_shape[0] if attrs.get("transB") else w_shape[1]
        b = _random(rng, (out,))
        inits = [ob.tensor("W", w)] + ([ob.tensor("C", b)] if bias else [])
        node = helper.make_node(
            "Gemm", ["x", "W"] + (["C"] if bias else []), ["y"], "gemm", **attrs
        )
        path = _save(directory, ob.model(ob.graph([node], [_x(x_shape)], [_y(2)], inits)))

        def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            t = layers[0]
            return [gemm_onnx(feed["x"], t["kernel"], t.get("bias"), **attrs)]

        roles = {"kernel": "W", "bias": "C"} if bias else {"kernel": "W"}
        layout = "OI" if attrs.get("transB") else "IO"
        want = Want(
            "dense", roles, name="gemm", config=attrs, layouts={"kernel": layout}, note=note
        )
        size = w.size + (b.size if bias else 0)
        return Built(path, [want], [{"x": _random(rng, x_shape, 1.0)}], reference, (size, size, 0))

    return Case(case_id, build)


GEMM_CASES = [
    _gemm_case(
        "gemm_transB1_alpha_beta", (3, 7), (5, 7), transB=1, alpha=0.5, beta=2.0,
        note=("alpha", "0.5", "2.0"),
    ),
    _gemm_case(
        "gemm_transB0_alpha_beta_large", (3, 64), (64, 40), transB=0, alpha=1.25, beta=-0.5,
        note=("1.25", "-0.5"),
    ),
    _gemm_case("gemm_transA_no_bias", (7, 3), (5, 7), bias=False, transA=1, transB=1),
    _gemm_case("gemm_default_attributes", (4, 6), (6, 3)),
]  # fmt: skip


def _matmul_add(directory: Path, rng: np.random.Generator) -> Built:
    w, b = _random(rng, (6, 4)), _random(rng, (4,))
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], "mm"),
        helper.make_node("Add", ["h", "b"], ["y"], "add"),
    ]
    x_shape = (2, 3, 6)
    inits = [ob.tensor("W", w), ob.tensor("b", b)]
    path = _save(directory, ob.model(ob.graph(nodes, [_x(x_shape)], [_y(3)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [ref.dense(feed["x"], layers[0]["kernel"], layers[0]["bias"])]

    want = Want(
        "dense", {"kernel": "W", "bias": "b"}, name="mm", layouts={"kernel": "IO"},
        note=("bias from Add 'add'",),
    )  # fmt: skip
    return Built(path, [want], [{"x": _random(rng, x_shape, 1.0)}], reference, (28, 28, 0))


def _matmul_add_rank3_bias(directory: Path, rng: np.random.Generator) -> Built:
    """``x @ W + b`` with ``b`` stored ``(1, 1, C)`` for a ``(batch, steps, in)`` input, as
    jax2tf + tf2onnx write a dense layer's bias."""
    w, b = _random(rng, (6, 4)), _random(rng, (1, 1, 4))
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], "mm"),
        helper.make_node("Add", ["h", "b"], ["y"], "add"),
    ]
    x_shape = (2, 3, 6)
    inits = [ob.tensor("W", w), ob.tensor("b", b)]
    path = _save(directory, ob.model(ob.graph(nodes, [_x(x_shape)], [_y(3)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [ref.dense(feed["x"], layers[0]["kernel"], layers[0]["bias"])]

    want = Want(
        "dense", {"kernel": "W", "bias": "b"}, name="mm", layouts={"kernel": "IO"},
        note=("bias from Add 'add' (its (1, 1, 4) constant read as (4,))",),
        derived={"bias": lambda stored: stored.reshape(-1)},
    )  # fmt: skip
    return Built(path, [want], [{"x": _random(rng, x_shape, 1.0)}], reference, (28, 28, 0))


def _matmul_add_constants_bias_first(directory: Path, rng: np.random.Generator) -> Built:
    """``Add(bias, x @ W)`` with both weights in ``Constant`` nodes (the kernel a large one)."""
    w, b = _random(rng, (48, 40)), _random(rng, (40,))
    nodes = [
        ob.constant("W_const", w),
        ob.constant("b_const", b),
        helper.make_node("MatMul", ["x", "W_const"], ["h"], "mm"),
        helper.make_node("Add", ["b_const", "h"], ["y"], "add"),
    ]
    x_shape = (5, 48)
    path = _save(directory, ob.model(ob.graph(nodes, [_x(x_shape)], [_y(2)])))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [ref.dense(feed["x"], layers[0]["kernel"], layers[0]["bias"])]

    want = Want(
        "dense", {"kernel": "W_const", "bias": "b_const"}, name="mm", layouts={"kernel": "IO"},
        note=("bias from Add 'add'",),
    )  # fmt: skip
    size = w.size + b.size
    return Built(path, [want], [{"x": _random(rng, x_shape, 1.0)}], reference, (size, size, 0))


def _matmul_constant_left(directory: Path, rng: np.random.Generator) -> Built:
    """``W @ x``: the constant on the left is an ``(out, in)`` kernel."""
    w = _random(rng, (4, 6))
    nodes = [helper.make_node("MatMul", ["W", "x"], ["y"], "mm")]
    inits = [ob.tensor("W", w)]
    path = _save(directory, ob.model(ob.graph(nodes, [_x((6, 5))], [_y(2)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [ref.dense(feed["x"].T, layers[0]["kernel"]).T]

    want = Want(
        "dense", {"kernel": "W"}, name="mm", layouts={"kernel": "OI"}, note=("on the left",)
    )
    return Built(path, [want], [{"x": _random(rng, (6, 5), 1.0)}], reference, (24, 24, 0))


def _batch_norm(directory: Path, rng: np.random.Generator) -> Built:
    c, eps = 5, 1e-3
    gamma, beta = _random(rng, (c,)), _random(rng, (c,))
    mean, var = _random(rng, (c,), 2.0), _variance(rng, c)
    inits = [
        ob.tensor("gamma", gamma),
        ob.tensor("beta", beta),
        ob.tensor("mean", mean),
        ob.tensor("var", var),
    ]
    node = helper.make_node(
        "BatchNormalization", ["x", "gamma", "beta", "mean", "var"], ["y"], "bn", epsilon=eps
    )
    x_shape = (2, c, 4, 3)
    path = _save(directory, ob.model(ob.graph([node], [_x(x_shape)], [_y(4)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        t = layers[0]
        out = ref.batch_norm(
            feed["x"], t["moving_mean"], t["moving_variance"], t["gamma"], t["beta"], epsilon=eps
        )
        return [out]

    roles = {"gamma": "gamma", "beta": "beta", "moving_mean": "mean", "moving_variance": "var"}
    want = Want("batch_norm", roles, name="bn", config={"epsilon": pytest.approx(eps)})
    return Built(path, [want], [{"x": _random(rng, x_shape, 2.0)}], reference, (20, 10, 10))


def _conv_constant_nodes(directory: Path, rng: np.random.Generator) -> Built:
    """Kernel in a ``Constant`` node's ``value`` (large: cut out of the node), bias in
    ``value_floats``."""
    w, b = _random(rng, (16, 8, 3, 3)), _random(rng, (16,))
    bias_node = helper.make_node("Constant", [], ["b_floats"], "const_b", value_floats=b.tolist())
    nodes = [
        ob.constant("W_const", w),
        bias_node,
        helper.make_node("Conv", ["x", "W_const", "b_floats"], ["y"], "conv", pads=[1, 0, 1, 0]),
    ]
    x_shape = (2, 8, 5, 5)
    path = _save(directory, ob.model(ob.graph(nodes, [_x(x_shape)], [_y(4)])))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        t = layers[0]
        return [conv_onnx(feed["x"], t["kernel"], t["bias"], pads=[1, 0, 1, 0])]

    want = Want("conv2d", {"kernel": "W_const", "bias": "b_floats"}, name="conv")
    size = w.size + b.size
    return Built(path, [want], [{"x": _random(rng, x_shape, 1.0)}], reference, (size, size, 0))


def _if_branches(directory: Path, rng: np.random.Generator) -> Built:
    """``If``: the then branch convolves with an initializer of the main graph, the else branch
    with its own initializer (large) and a bias from its own ``Constant`` node."""
    w_then, b_then = _random(rng, (6, 4, 3, 3)), _random(rng, (6,))
    w_else, b_else = _random(rng, (6, 4, 7, 7)), _random(rng, (6,))
    assert w_else.nbytes > BIG_BYTES
    then_graph = ob.graph(
        [
            helper.make_node(
                "Conv", ["x", "W_then", "B_then"], ["y_then"], "then_conv", pads=[1] * 4
            )
        ],
        [],
        [_y(4, "y_then")],
        name="then_g",
    )
    else_graph = ob.graph(
        [
            ob.constant("B_else", b_else),
            helper.make_node("Conv", ["x", "W_else", "B_else"], ["y_else"], "else_conv",
                             pads=[3] * 4),
        ],
        [],
        [_y(4, "y_else")],
        [ob.tensor("W_else", w_else)],
        name="else_g",
    )  # fmt: skip
    node = helper.make_node(
        "If", ["cond"], ["y"], "branch", then_branch=then_graph, else_branch=else_graph
    )
    x_shape = (1, 4, 6, 6)
    inputs = [_x(x_shape), ob.value_info("cond", TensorProto.BOOL, [])]
    inits = [ob.tensor("W_then", w_then), ob.tensor("B_then", b_then)]
    path = _save(directory, ob.model(ob.graph([node], inputs, [_y(4)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        else_layer, then_layer = layers  # in the order of the If node's attributes
        if feed["cond"]:
            return [conv_onnx(feed["x"], then_layer["kernel"], then_layer["bias"], pads=[1] * 4)]
        return [conv_onnx(feed["x"], else_layer["kernel"], else_layer["bias"], pads=[3] * 4)]

    wants = [  # onnx.helper writes the attributes sorted by name: else_branch first
        Want("conv2d", {"kernel": "W_else", "bias": "B_else"}, name="else_conv",
             note=("inside else_branch of If 'branch'",)),
        Want("conv2d", {"kernel": "W_then", "bias": "B_then"}, name="then_conv",
             note=("inside then_branch of If 'branch'",)),
    ]  # fmt: skip
    x = _random(rng, x_shape, 1.0)
    feeds = [{"x": x, "cond": np.array(True)}, {"x": x, "cond": np.array(False)}]
    size = w_then.size + b_then.size + w_else.size + b_else.size
    return Built(path, wants, feeds, reference, (size, size, 0))


def _loop_body_kernel_from_outer_transpose(directory: Path, rng: np.random.Generator) -> Built:
    """A ``Loop`` body convolves with a kernel that a ``Transpose`` of the main graph makes
    from an initializer of the main graph (a static value seen across graphs)."""
    w = _random(rng, (3, 3, 4, 4))
    x_shape = (1, 4, 5, 5)
    body = ob.graph(
        [
            helper.make_node("Conv", ["h_in", "W_oihw"], ["h_out"], "body_conv", pads=[1] * 4),
            helper.make_node("Identity", ["cond_in"], ["cond_out"], "keep_going"),
        ],
        [
            ob.value_info("i", TensorProto.INT64, []),
            ob.value_info("cond_in", TensorProto.BOOL, []),
            ob.value_info("h_in", TensorProto.FLOAT, x_shape),
        ],
        [ob.value_info("cond_out", TensorProto.BOOL, []), _y(4, "h_out")],
        name="body",
    )
    nodes = [
        helper.make_node("Transpose", ["W_hwio"], ["W_oihw"], "to_oihw", perm=[3, 2, 0, 1]),
        helper.make_node("Loop", ["trips", "", "x"], ["y"], "loop", body=body),
    ]
    inits = [ob.tensor("W_hwio", w), ob.tensor("trips", np.array([3], np.int64).reshape(()))]
    path = _save(directory, ob.model(ob.graph(nodes, [_x(x_shape)], [_y(4)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        h = feed["x"]
        for _ in range(3):
            h = conv_onnx(h, layers[0]["kernel"], pads=[1] * 4)
        return [h]

    want = Want(
        "conv2d", {"kernel": "W_hwio"}, name="body_conv",
        note=("inside body of Loop 'loop'", "Transpose 'to_oihw'"),
        derived={"kernel": lambda s: s.transpose(3, 2, 0, 1)},
    )  # fmt: skip
    feeds = [{"x": _random(rng, x_shape, 0.5)}]
    return Built(path, [want], feeds, reference, (w.size, w.size, 0), unknown=("loop",))


def _kernel_transposed_from_hwio(directory: Path, rng: np.random.Generator) -> Built:
    """A Keras-style ``(kh, kw, in, out)`` kernel made ``OIHW`` by a ``Transpose`` node."""
    w, b = _random(rng, (3, 3, 8, 16)), _random(rng, (16,))
    perm = [3, 2, 0, 1]
    nodes = [
        helper.make_node("Transpose", ["W_hwio"], ["W_oihw"], "to_oihw", perm=perm),
        helper.make_node("Conv", ["x", "W_oihw", "B"], ["y"], "conv", strides=[2, 2]),
    ]
    x_shape = (2, 8, 7, 7)
    inits = [ob.tensor("W_hwio", w), ob.tensor("B", b)]
    path = _save(directory, ob.model(ob.graph(nodes, [_x(x_shape)], [_y(4)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [conv_onnx(feed["x"], layers[0]["kernel"], layers[0]["bias"], strides=[2, 2])]

    want = Want(
        "conv2d", {"kernel": "W_hwio", "bias": "B"}, name="conv",
        note=("Transpose 'to_oihw'", "W_hwio"), derived={"kernel": lambda s: s.transpose(perm)},
    )  # fmt: skip
    size = w.size + b.size
    return Built(path, [want], [{"x": _random(rng, x_shape, 1.0)}], reference, (size, size, 0))


def _kernel_cast_then_identity(directory: Path, rng: np.random.Generator) -> Built:
    """A float16 kernel (in ``int32_data``, as ONNX keeps typed float16 values) that a ``Cast``
    makes float32, then an ``Identity``, for a Gemm."""
    w = _random(rng, (5, 7)).astype(np.float16)
    b = _random(rng, (5,))
    nodes = [
        helper.make_node("Cast", ["W16"], ["W32"], "to_float", to=TensorProto.FLOAT),
        helper.make_node("Identity", ["W32"], ["W"], "same"),
        helper.make_node("Gemm", ["x", "W", "C"], ["y"], "gemm", transB=1),
    ]
    inits = [ob.tensor("W16", w, raw=False), ob.tensor("C", b)]
    path = _save(directory, ob.model(ob.graph(nodes, [_x((3, 7))], [_y(2)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [gemm_onnx(feed["x"], layers[0]["kernel"], layers[0]["bias"])]

    want = Want(
        "dense", {"kernel": "W16", "bias": "C"}, name="gemm",
        note=("Cast 'to_float'", "Identity 'same'"),
        derived={"kernel": lambda s: s.astype(np.float32)},
    )  # fmt: skip
    return Built(path, [want], [{"x": _random(rng, (3, 7), 1.0)}], reference, (40, 40, 0))


def _kernel_reshaped_bias_squeezed(directory: Path, rng: np.random.Generator) -> Built:
    """A flat kernel ``Reshape``d (shape from an int64 initializer) for a MatMul, and a
    ``(1, width)`` bias ``Squeeze``d to ``(width,)`` for its Add."""
    w, b = _random(rng, (24,)), _random(rng, (1, 4))
    nodes = [
        helper.make_node("Reshape", ["W_flat", "shape"], ["W"], "unflatten"),
        helper.make_node("Squeeze", ["b_row", "axes"], ["b"], "squeeze"),
        helper.make_node("MatMul", ["x", "W"], ["h"], "mm"),
        helper.make_node("Add", ["h", "b"], ["y"], "add"),
    ]
    inits = [
        ob.tensor("W_flat", w),
        ob.tensor("shape", np.array([6, -1], np.int64)),
        ob.tensor("b_row", b),
        ob.tensor("axes", np.array([0], np.int64)),
    ]
    path = _save(directory, ob.model(ob.graph(nodes, [_x((2, 6))], [_y(2)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [ref.dense(feed["x"], layers[0]["kernel"], layers[0]["bias"])]

    want = Want(
        "dense", {"kernel": "W_flat", "bias": "b_row"}, name="mm", layouts={"kernel": "IO"},
        note=("Reshape 'unflatten'", "Squeeze 'squeeze'", "bias from Add 'add'"),
        derived={"kernel": lambda s: s.reshape(6, 4), "bias": lambda s: s.reshape(4)},
    )  # fmt: skip
    return Built(path, [want], [{"x": _random(rng, (2, 6), 1.0)}], reference, (28, 28, 0))


def _shared_conv_kernel(directory: Path, rng: np.random.Generator) -> Built:
    """One initializer read by two ``Conv`` nodes (with biases of their own)."""
    w, b1, b2 = _random(rng, (4, 4, 3, 3)), _random(rng, (4,)), _random(rng, (4,))
    nodes = [
        helper.make_node("Conv", ["x", "W", "B1"], ["h"], "conv_a", pads=[1] * 4),
        helper.make_node("Relu", ["h"], ["r"], "relu"),
        helper.make_node("Conv", ["r", "W", "B2"], ["y"], "conv_b", pads=[1] * 4),
    ]
    inits = [ob.tensor("W", w), ob.tensor("B1", b1), ob.tensor("B2", b2)]
    x_shape = (2, 4, 5, 5)
    path = _save(directory, ob.model(ob.graph(nodes, [_x(x_shape)], [_y(4)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        a, b = layers
        h = np.maximum(conv_onnx(feed["x"], a["kernel"], a["bias"], pads=[1] * 4), 0)
        return [conv_onnx(h, b["kernel"], b["bias"], pads=[1] * 4)]

    wants = [
        Want("conv2d", {"kernel": "W", "bias": "B1"}, name="conv_a"),
        Want("conv2d", {"kernel": "W", "bias": "B2"}, name="conv_b",
             shared={"kernel": "conv_a/kernel"}),
    ]  # fmt: skip
    size = w.size + b1.size + b2.size
    return Built(path, wants, [{"x": _random(rng, x_shape, 1.0)}], reference, (size, size, 0))


def _tied_dense_through_identity(directory: Path, rng: np.random.Generator) -> Built:
    """Tied embedding-style weights: ``Gemm(x, E, transB=1)`` encodes, ``MatMul(h, E)``
    decodes, through an ``Identity`` of ``E``."""
    e, c = _random(rng, (5, 7)), _random(rng, (5,))
    nodes = [
        helper.make_node("Gemm", ["x", "E", "C"], ["h"], "encode", transB=1),
        helper.make_node("Identity", ["E"], ["E_alias"], "alias"),
        helper.make_node("MatMul", ["h", "E_alias"], ["y"], "decode"),
    ]
    inits = [ob.tensor("E", e), ob.tensor("C", c)]
    path = _save(directory, ob.model(ob.graph(nodes, [_x((3, 7))], [_y(2)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        encode, decode = layers
        return [ref.dense(gemm_onnx(feed["x"], encode["kernel"], encode["bias"]), decode["kernel"])]

    wants = [
        Want("dense", {"kernel": "E", "bias": "C"}, name="encode"),
        Want("dense", {"kernel": "E"}, name="decode", layouts={"kernel": "IO"},
             shared={"kernel": "encode/kernel"}, note=("Identity 'alias'",)),
    ]  # fmt: skip
    return Built(path, wants, [{"x": _random(rng, (3, 7), 1.0)}], reference, (40, 40, 0))


def _external_data(directory: Path, rng: np.random.Generator) -> Built:
    """Conv -> BatchNormalization -> Flatten -> Gemm, every initializer in ``w.bin``."""
    w, b = _random(rng, (16, 3, 5, 5)), _random(rng, (16,))
    gamma, beta = _random(rng, (16,)), _random(rng, (16,))
    mean, var = _random(rng, (16,)), _variance(rng, 16)
    fc, fc_b = _random(rng, (10, 16 * 2 * 2)), _random(rng, (10,))
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], "conv", strides=[2, 2]),
        helper.make_node(
            "BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["n"], "bn", epsilon=1e-5
        ),
        helper.make_node("Flatten", ["n"], ["f"], "flatten"),
        helper.make_node("Gemm", ["f", "FC", "FC_b"], ["y"], "fc", transB=1),
    ]
    arrays = {"W": w, "B": b, "gamma": gamma, "beta": beta, "mean": mean, "var": var,
              "FC": fc, "FC_b": fc_b}  # fmt: skip
    inits = [ob.tensor(name, array) for name, array in arrays.items()]
    x_shape = (2, 3, 7, 7)
    proto = ob.model(ob.graph(nodes, [_x(x_shape)], [_y(2)], inits))
    path = directory / "model.onnx"
    onnx.save_model(
        proto,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        conv, bn, dense = layers
        h = conv_onnx(feed["x"], conv["kernel"], conv["bias"], strides=[2, 2])
        h = ref.batch_norm(
            h, bn["moving_mean"], bn["moving_variance"], bn["gamma"], bn["beta"], epsilon=1e-5
        )
        return [ref.dense(h.reshape(h.shape[0], -1), dense["kernel"], dense["bias"])]

    bn_roles = {"gamma": "gamma", "beta": "beta", "moving_mean": "mean", "moving_variance": "var"}
    wants = [
        Want("conv2d", {"kernel": "W", "bias": "B"}, name="conv"),
        Want("batch_norm", bn_roles, name="bn"),
        Want("dense", {"kernel": "FC", "bias": "FC_b"}, name="fc"),
    ]
    total = sum(a.size for a in arrays.values())
    feeds = [{"x": _random(rng, x_shape, 1.0)}]
    return Built(path, wants, feeds, reference, (total, total - 32, 32), unknown=())


def _quantize(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: type, axis: int | None = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random integers, their scales and zero points (per channel along ``axis``)."""
    info = np.iinfo(dtype)
    values = rng.integers(info.min, info.max + 1, shape).astype(dtype)
    channels = 1 if axis is None else shape[axis]
    scale = rng.uniform(0.002, 0.02, channels).astype(np.float32)
    zero_point = rng.integers(-8, 9, channels) + (0 if info.min < 0 else 128)
    if axis is None:
        return values, scale.reshape(()), zero_point.astype(dtype).reshape(())
    return values, scale, zero_point.astype(dtype)


def _dequantize_conv(directory: Path, rng: np.random.Generator) -> Built:
    """``DequantizeLinear(int8 kernel, per-channel scale, zero point, axis=0)`` -> Conv."""
    w_q, scale, zp = _quantize(rng, (16, 8, 3, 3), np.int8)
    b = _random(rng, (16,))
    nodes = [
        helper.make_node("DequantizeLinear", ["W_q", "W_scale", "W_zp"], ["W"], "dq", axis=0),
        helper.make_node("Conv", ["x", "W", "B"], ["y"], "conv", pads=[1] * 4, group=1),
    ]
    inits = [
        ob.tensor("W_q", w_q),
        ob.tensor("W_scale", scale),
        ob.tensor("W_zp", zp),
        ob.tensor("B", b),
    ]
    x_shape = (2, 8, 5, 6)
    path = _save(directory, ob.model(ob.graph(nodes, [_x(x_shape)], [_y(4)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        t = layers[0]
        kernel = dequantize(t["kernel:stored"], t["kernel_scale"], t["kernel_zero_point"], axis=0)
        np.testing.assert_allclose(t["kernel"], kernel, rtol=1e-6)  # weightscope's real values
        return [conv_onnx(feed["x"], t["kernel"], t["bias"], pads=[1] * 4)]

    roles = {"kernel": "W_q", "kernel_scale": "W_scale", "kernel_zero_point": "W_zp", "bias": "B"}
    want = Want(
        "conv2d", roles, name="conv", trainable={"kernel": None},
        note=("kernel stored as int8", "per channel along stored axis 0 by DequantizeLinear 'dq'"),
    )  # fmt: skip
    feeds = [{"x": _random(rng, x_shape, 1.0)}]
    return Built(path, [want], feeds, reference, (w_q.size + scale.size + b.size, b.size, 0))


def _dequantize_matmul_per_tensor(directory: Path, rng: np.random.Generator) -> Built:
    """``DequantizeLinear(uint8 kernel, scalar scale, scalar zero point)`` -> MatMul -> Add."""
    w_q, scale, zp = _quantize(rng, (6, 4), np.uint8, axis=None)
    b = _random(rng, (4,))
    nodes = [
        helper.make_node("DequantizeLinear", ["W_q", "W_scale", "W_zp"], ["W"], "dq"),
        helper.make_node("MatMul", ["x", "W"], ["h"], "mm"),
        helper.make_node("Add", ["h", "b"], ["y"], "add"),
    ]
    inits = [
        ob.tensor("W_q", w_q),
        ob.tensor("W_scale", scale),
        ob.tensor("W_zp", zp),
        ob.tensor("b", b),
    ]
    path = _save(directory, ob.model(ob.graph(nodes, [_x((3, 6))], [_y(2)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        t = layers[0]
        kernel = dequantize(t["kernel:stored"], t["kernel_scale"], t["kernel_zero_point"])
        np.testing.assert_allclose(t["kernel"], kernel, rtol=1e-6)  # weightscope's real values
        return [ref.dense(feed["x"], t["kernel"], t["bias"])]

    roles = {"kernel": "W_q", "kernel_scale": "W_scale", "kernel_zero_point": "W_zp", "bias": "b"}
    want = Want(
        "dense", roles, name="mm", layouts={"kernel": "IO"}, trainable={"kernel": None},
        note=("kernel stored as uint8", "DequantizeLinear 'dq'", "bias from Add 'add'"),
    )  # fmt: skip
    feeds = [{"x": _random(rng, (3, 6), 1.0)}]
    return Built(path, [want], feeds, reference, (w_q.size + scale.size + b.size, b.size, 0))


def _qlinear_conv(directory: Path, rng: np.random.Generator) -> Built:
    """``QLinearConv``: uint8 activations, int8 kernel with per-channel scales (zero points 0,
    as onnxruntime requires for int8 kernels), int32 bias."""
    out_channels, groups = 6, 2
    w_q = rng.integers(-127, 128, (out_channels, 2, 3, 3)).astype(np.int8)
    w_scale = rng.uniform(0.005, 0.02, out_channels).astype(np.float32)
    w_zp = np.zeros(out_channels, np.int8)
    bias = rng.integers(-2000, 2000, out_channels).astype(np.int32)
    x_scale, x_zp = np.float32(0.03), np.uint8(120)
    y_scale, y_zp = np.float32(0.08), np.uint8(110)
    names = ["x", "x_scale", "x_zp", "W_q", "W_scale", "W_zp", "y_scale", "y_zp", "bias"]
    node = helper.make_node(
        "QLinearConv", names, ["y"], "qconv", group=groups, pads=[1, 1, 0, 0], strides=[1, 2]
    )
    inits = [
        ob.tensor("x_scale", np.array(x_scale)),
        ob.tensor("x_zp", np.array(x_zp)),
        ob.tensor("W_q", w_q),
        ob.tensor("W_scale", w_scale),
        ob.tensor("W_zp", w_zp),
        ob.tensor("y_scale", np.array(y_scale)),
        ob.tensor("y_zp", np.array(y_zp)),
        ob.tensor("bias", bias),
    ]
    x_shape = (2, 4, 5, 7)
    inputs = [ob.value_info("x", TensorProto.UINT8, x_shape)]
    outputs = [ob.value_info("y", TensorProto.UINT8, ["n", "c", "h", "w"])]
    path = _save(directory, ob.model(ob.graph([node], inputs, outputs, inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        t = layers[0]
        x = feed["x"].astype(np.float64) - t["input_zero_point"]
        kernel = t["kernel:stored"] - t["kernel_zero_point"].reshape(-1, 1, 1, 1)
        # integer accumulation (exact in float64), then requantized
        acc = conv_onnx(
            x, kernel, t["bias:stored"], pads=[1, 1, 0, 0], strides=[1, 2], group=groups
        )
        multiplier = t["input_scale"] * t["kernel_scale"] / t["output_scale"]
        y = np.rint(acc * multiplier.reshape(1, -1, 1, 1)) + t["output_zero_point"]
        return [np.clip(y, 0, 255)]

    roles = {
        "kernel": "W_q",
        "input_scale": "x_scale",
        "input_zero_point": "x_zp",
        "kernel_scale": "W_scale",
        "kernel_zero_point": "W_zp",
        "output_scale": "y_scale",
        "output_zero_point": "y_zp",
        "bias": "bias",
    }
    want = Want(
        "conv2d", roles, groups=groups, name="qconv", config={"group": groups},
        trainable=dict.fromkeys(roles), note=("quantized convolution",),
    )  # fmt: skip
    feeds = [
        {"x": rng.integers(0, 256, x_shape).astype(np.uint8)},  # the whole uint8 range
        # x <= 128: no two uint8 x int8 products sum past int16 (2 * 128 * 127 = 32,512), so
        # onnxruntime's output is the same on every CPU
        {"x": rng.integers(0, 129, x_shape).astype(np.uint8)},
    ]
    exact = [
        [
            qlinear_conv_exact(
                feed["x"], x_scale, x_zp, w_q, w_scale, w_zp, y_scale, y_zp, bias,
                pads=[1, 1, 0, 0], strides=[1, 2], group=groups,
            )
        ]
        for feed in feeds
    ]  # fmt: skip
    return Built(
        path, [want], feeds, reference, (w_q.size + bias.size + w_scale.size + 2, 0, 0),
        quantized_output=True,
        exact_outputs=exact, runtime_comparable=[False, True],
    )  # fmt: skip


def qlinear_conv_exact(
    x: np.ndarray,
    x_scale: np.float32,
    x_zp: np.uint8,
    w: np.ndarray,
    w_scale: np.ndarray,
    w_zp: np.ndarray,
    y_scale: np.float32,
    y_zp: np.uint8,
    bias: np.ndarray,
    *,
    pads: list[int],
    strides: list[int],
    group: int,
) -> np.ndarray:
    """ONNX ``QLinearConv`` (2-D) as its spec defines it, in integers: ``(x - x_zp)`` (padding is
    ``x_zp``, so 0 after the shift) times ``(w - w_zp)``, summed in int32 with the int32 bias,
    then requantized by the real multiplier ``x_scale * w_scale / y_scale`` (per output channel,
    in float64), rounded half to even, shifted by ``y_zp`` and saturated to uint8. Written
    from the stored arrays the model was built from, not from what weightscope reads."""
    xi = np.pad(
        x.astype(np.int32) - np.int32(x_zp),
        [(0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])],
    )
    wi = w.astype(np.int32) - w_zp.astype(np.int32).reshape(-1, 1, 1, 1)
    out_channels, per_group_in, kh, kw = wi.shape
    windows = np.lib.stride_tricks.sliding_window_view(xi, (kh, kw), axis=(2, 3))
    windows = windows[:, :, :: strides[0], :: strides[1]]  # (n, c, oh, ow, kh, kw)
    per_group_out = out_channels // group
    acc = np.empty((x.shape[0], out_channels, *windows.shape[2:4]), np.int32)
    for g in range(group):
        xs = windows[:, g * per_group_in : (g + 1) * per_group_in]
        ws = wi[g * per_group_out : (g + 1) * per_group_out]
        acc[:, g * per_group_out : (g + 1) * per_group_out] = np.einsum(
            "ncijuv,mcuv->nmij", xs, ws, dtype=np.int32
        )
    acc += bias.astype(np.int32).reshape(1, -1, 1, 1)
    multiplier = np.float64(x_scale) * w_scale.astype(np.float64) / np.float64(y_scale)
    y = np.rint(acc * multiplier.reshape(1, -1, 1, 1)) + int(y_zp)
    return np.clip(y, 0, 255).astype(np.uint8)


def _layer_norm(directory: Path, rng: np.random.Generator) -> Built:
    width, eps = 8, 1e-4
    gamma, beta = _random(rng, (width,)), _random(rng, (width,))
    node = helper.make_node(
        "LayerNormalization", ["x", "scale", "B"], ["y"], "ln", axis=-1, epsilon=eps
    )
    x_shape = (2, 3, width)
    inits = [ob.tensor("scale", gamma), ob.tensor("B", beta)]
    path = _save(directory, ob.model(ob.graph([node], [_x(x_shape)], [_y(3)], inits)))

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feed["x"].astype(np.float64)
        centred = x - x.mean(-1, keepdims=True)
        normed = centred / np.sqrt((centred**2).mean(-1, keepdims=True) + eps)
        return [normed * layers[0]["gamma"] + layers[0]["beta"]]

    want = Want(
        "layer_norm", {"gamma": "scale", "beta": "B"}, name="ln",
        config={"axis": -1, "epsilon": pytest.approx(eps)},
    )  # fmt: skip
    return Built(path, [want], [{"x": _random(rng, x_shape, 2.0)}], reference, (16, 16, 0))


def _embedding(directory: Path, rng: np.random.Generator) -> Built:
    """``Gather(table, indices)``: an embedding table (large), looked up by int64 indices."""
    table = _random(rng, (64, 16))
    node = helper.make_node("Gather", ["table", "ids"], ["y"], "embed", axis=0)
    inputs = [ob.value_info("ids", TensorProto.INT64, (2, 5))]
    path = _save(
        directory, ob.model(ob.graph([node], inputs, [_y(3)], [ob.tensor("table", table)]))
    )

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [layers[0]["embeddings"][feed["ids"]]]

    want = Want("embedding", {"embeddings": "table"}, name="embed", layouts={"embeddings": "VE"})
    feeds = [{"ids": rng.integers(0, 64, (2, 5)).astype(np.int64)}]
    return Built(path, [want], feeds, reference, (table.size, table.size, 0))


HELPER_CASES = [
    *CONV_CASES,
    *CONV_ADD_CASES,
    *GEMM_CASES,
    Case("matmul_add_bias", _matmul_add),
    Case("matmul_add_rank3_bias", _matmul_add_rank3_bias),
    Case("matmul_add_bias_first_constant_nodes", _matmul_add_constants_bias_first),
    Case("matmul_constant_on_the_left", _matmul_constant_left),
    Case("batch_norm", _batch_norm),
    Case("conv_weights_in_constant_nodes", _conv_constant_nodes),
    Case("if_branches", _if_branches),
    Case("loop_body_kernel_from_outer_transpose", _loop_body_kernel_from_outer_transpose),
    Case("kernel_transposed_from_hwio", _kernel_transposed_from_hwio),
    Case("kernel_cast_then_identity", _kernel_cast_then_identity),
    Case("kernel_reshaped_bias_squeezed", _kernel_reshaped_bias_squeezed),
    Case("shared_conv_kernel", _shared_conv_kernel),
    Case("tied_dense_through_identity", _tied_dense_through_identity),
    Case("external_data", _external_data),
    Case("dequantize_linear_conv_per_channel", _dequantize_conv),
    Case("dequantize_linear_matmul_per_tensor", _dequantize_matmul_per_tensor),
    Case("qlinear_conv", _qlinear_conv),
    Case("layer_norm", _layer_norm),
    Case("embedding_gather", _embedding),
]

# ---------------------------------------------------------------------------------------------
# models exported from PyTorch


def _randomize(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter random, batch-norm running statistics far from 0 and 1; eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.5 + 0.1)
        for sub in module.modules():
            if isinstance(sub, nn.modules.batchnorm._BatchNorm):
                sub.running_mean.copy_(torch.randn(sub.num_features, generator=generator))
                sub.running_var.copy_(torch.rand(sub.num_features, generator=generator) + 0.5)
    return module.eval()


def _export(
    module: nn.Module, inputs: tuple[Any, ...], path: Path, exporter: str, **options: Any
) -> None:
    """``torch.onnx.export`` to ``path``; the file (and any written beside it) comes from the
    tests' cache when the same module, weights, inputs and options were exported before."""
    names = [f"x{i}" if i else "x" for i in range(len(inputs))]

    def write(folder: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                inputs,
                folder / path.name,
                input_names=names,
                dynamo=exporter == "dynamo",
                **options,
            )

    state = {name: value.detach().numpy() for name, value in module.state_dict().items()}
    key = (path.name, exporter, options, type(module).__qualname__, repr(module))
    build_cached(path.parent, write, *key, digest(state, [x.numpy() for x in inputs]))


def _torch_state(module: nn.Module) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy() for name, value in module.state_dict().items()}


def _module_reference(module: nn.Module) -> Callable[[np.ndarray, Canonical], np.ndarray]:
    """The module's computation from canonical tensors, with its hyperparameters as PyTorch
    holds them (not as the ONNX file says)."""
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        attrs = {
            "strides": list(module.stride),
            "pads": list(module.padding) * 2,
            "dilations": list(module.dilation),
            "output_padding": list(module.output_padding),
            "group": module.groups,
        }
        return lambda x, t: conv_transpose_onnx(x, t["kernel"], t.get("bias"), **attrs)
    if isinstance(module, nn.modules.conv._ConvNd):
        attrs = {
            "strides": list(module.stride),
            "pads": list(module.padding) * 2,
            "dilations": list(module.dilation),
            "group": module.groups,
        }
        return lambda x, t: conv_onnx(x, t["kernel"], t.get("bias"), **attrs)
    if isinstance(module, nn.Linear):
        return lambda x, t: ref.dense(x, t["kernel"], t.get("bias"))
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        eps = module.eps
        return lambda x, t: ref.batch_norm(
            x, t["moving_mean"], t["moving_variance"], t["gamma"], t["beta"], epsilon=eps
        )
    raise TypeError(type(module))


def _torch_canonical(module: nn.Module, index: int) -> dict[tuple[int, str], np.ndarray]:
    """What the canonical tensors of layer ``index`` must be, from the module's own tensors."""
    state = _torch_state(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        roles = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                 "running_var": "moving_variance"}  # fmt: skip
        return {(index, role): state[name] for name, role in roles.items()}
    expected = {(index, "kernel"): state["weight"]}
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        expected[index, "kernel"] = torch_transpose_to_canonical(state["weight"], module.groups)
    if "bias" in state:
        expected[index, "bias"] = state["bias"]
    return expected


def _torch_counts(module: nn.Module) -> tuple[int, int, int]:
    params = sum(p.numel() for p in module.parameters())
    running = sum(b.numel() for n, b in module.named_buffers() if "running_" in n)
    return params + running, params, running


def _torch_layer_case(
    case_id: str,
    make: Callable[[], nn.Module],
    input_shape: tuple[int, ...],
    want: Want,
    **options: Any,
) -> Case:
    """One PyTorch layer exported by the TorchScript-based exporter (``dynamo=False``); without
    constant folding unless ``options`` say otherwise, so that a batch norm stays a node."""

    def build(directory: Path, rng: np.random.Generator) -> Built:
        module = _randomize(make(), zlib.crc32(case_id.encode()))
        path = directory / "model.onnx"
        x = _random(rng, input_shape, 1.0)
        _export(module, (torch.from_numpy(x),), path, "torchscript", **options)
        compute = _module_reference(module)

        def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            return [compute(feed["x"], layers[0])]

        return Built(
            path,
            [want],
            [{"x": x}],
            reference,
            _torch_counts(module),
            producer=f"pytorch {torch.__version__.split('+')[0]}",
            unknown=None,
            torch_canonical=_torch_canonical(module, 0),
        )

    return Case(case_id, build, "torchscript")


NO_FOLDING = {"do_constant_folding": False}
TORCH_LAYER_CASES = [
    _torch_layer_case(
        "torch_conv1d_groups2_dilation2_padding1",
        lambda: nn.Conv1d(4, 6, 3, groups=2, dilation=2, padding=1), (2, 4, 11),
        Want("conv1d", {"kernel": "weight", "bias": "bias"}, groups=2,
             config={"group": 2, "dilations": [2], "pads": [1, 1]}),
        **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_conv2d_groups2_stride2_padding1_large",
        lambda: nn.Conv2d(16, 32, (3, 2), stride=2, padding=1, groups=2), (2, 16, 8, 7),
        Want("conv2d", {"kernel": "weight", "bias": "bias"}, groups=2,
             config={"group": 2, "strides": [2, 2]}),
        **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_conv3d_groups2",
        lambda: nn.Conv3d(4, 4, (2, 3, 2), stride=(1, 2, 1), groups=2), (2, 4, 4, 7, 5),
        Want("conv3d", {"kernel": "weight", "bias": "bias"}, groups=2),
        **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_depthwise_conv2d_multiplier2_no_bias",
        lambda: nn.Conv2d(3, 6, 3, groups=3, padding=1, bias=False), (2, 3, 7, 6),
        Want("depthwise_conv2d", {"kernel": "weight"}, groups=3),
        **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_conv_transpose1d_groups2_stride2_output_padding",
        lambda: nn.ConvTranspose1d(4, 6, 3, stride=2, groups=2, padding=1, output_padding=1),
        (2, 4, 5),
        Want("conv_transpose1d", {"kernel": "weight", "bias": "bias"}, groups=2,
             config={"output_padding": [1]}),
        **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_conv_transpose2d_groups2_stride2_output_padding",
        lambda: nn.ConvTranspose2d(8, 12, (3, 2), stride=2, groups=2, padding=(1, 0),
                                   output_padding=(1, 0)),
        (2, 8, 4, 5),
        Want("conv_transpose2d", {"kernel": "weight", "bias": "bias"}, groups=2),
        **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_conv_transpose3d_groups2_dilation2",
        lambda: nn.ConvTranspose3d(4, 6, 2, stride=(1, 2, 2), dilation=(2, 1, 1), groups=2),
        (1, 4, 3, 4, 3),
        Want("conv_transpose3d", {"kernel": "weight", "bias": "bias"}, groups=2),
        **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_linear_gemm", lambda: nn.Linear(7, 5), (3, 7),
        Want("dense", {"kernel": "weight", "bias": "bias"}, config={"transB": 1}),
        **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_linear_on_3d_input_matmul_transpose_add",
        lambda: nn.Linear(6, 4), (2, 3, 6),
        Want("dense", {"kernel": "weight", "bias": "bias"}, layouts={"kernel": "IO"},
             note=("Transpose", "bias from Add"), derived={"kernel": lambda s: s.T}),
        **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_linear_on_3d_input_folded_transpose",
        lambda: nn.Linear(6, 4), (2, 3, 6),
        Want("dense", {"kernel": None, "bias": "bias"}, layouts={"kernel": "IO"},
             note=("bias from Add",)),
    ),
    _torch_layer_case(
        "torch_conv2d_initializers_also_graph_inputs",
        lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5),
        Want("conv2d", {"kernel": "weight", "bias": "bias"}),
        keep_initializers_as_inputs=True, **NO_FOLDING,
    ),
    _torch_layer_case(
        "torch_batch_norm2d",
        lambda: nn.BatchNorm2d(5, eps=1e-3), (2, 5, 4, 3),
        Want("batch_norm", {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                            "moving_variance": "running_var"},
             config={"epsilon": pytest.approx(1e-3)}),
        **NO_FOLDING,
    ),
]  # fmt: skip


class _Net2d(nn.Module):
    """Grouped conv, depthwise conv, batch norm, grouped transposed conv, two linears on a
    sequence (MatMul + Add in ONNX)."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(4, 16, (3, 2), stride=2, padding=1, groups=2)
        self.dw = nn.Conv2d(16, 32, 3, padding=2, dilation=2, groups=16)
        self.bn = nn.BatchNorm2d(32)
        self.up = nn.ConvTranspose2d(32, 8, (2, 3), stride=2, padding=(0, 1), output_padding=1,
                                     groups=4)  # fmt: skip
        self.fc = nn.Linear(8, 40)
        self.fc2 = nn.Linear(40, 3)

    def forward(self, x: Any) -> Any:
        x = self.up(self.bn(self.dw(self.c1(x))))
        x = x.flatten(2).transpose(1, 2)
        return self.fc2(torch.relu(self.fc(x)))


def _net2d_reference(batch_norm: bool) -> Reference:
    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        c1, dw, *rest = layers
        x = conv_onnx(feed["x"], c1["kernel"], c1["bias"], strides=[2, 2], pads=[1] * 4, group=2)
        x = conv_onnx(x, dw["kernel"], dw["bias"], pads=[2] * 4, dilations=[2, 2], group=16)
        if batch_norm:
            bn, *rest = rest
            x = ref.batch_norm(
                x, bn["moving_mean"], bn["moving_variance"], bn["gamma"], bn["beta"], epsilon=1e-5
            )
        up, fc, fc2 = rest
        x = conv_transpose_onnx(
            x, up["kernel"], up["bias"], strides=[2, 2], pads=[0, 1, 0, 1],
            output_padding=[1, 1], group=4,
        )  # fmt: skip
        x = x.reshape(x.shape[0], x.shape[1], -1).transpose(0, 2, 1)
        x = np.maximum(ref.dense(x, fc["kernel"], fc["bias"]), 0)
        return [ref.dense(x, fc2["kernel"], fc2["bias"])]

    return reference


def _dynamo_net2d(optimize: bool) -> Callable[[Path, np.random.Generator], Built]:
    """The default exporter; optimized (its default) it folds the batch norm into the
    depthwise conv and pre-transposes the linear kernels; unoptimized it keeps a
    ``BatchNormalization`` node and ``Transpose`` nodes."""

    def build(directory: Path, rng: np.random.Generator) -> Built:
        module = _randomize(_Net2d(), 2024)
        path = directory / "model.onnx"
        x = _random(rng, (2, 4, 9, 8), 1.0)
        _export(module, (torch.from_numpy(x),), path, "dynamo", optimize=optimize)
        conv = {"kernel": "weight", "bias": "bias"}

        def names(prefix: str, roles: dict[str, str] = conv) -> dict[str, str | None]:
            return {role: f"{prefix}.{name}" for role, name in roles.items()}

        linear: dict[str, Any] = {"layouts": {"kernel": "IO"}}
        if optimize:  # pre-transposed kernels under made-up names
            fc, fc2 = {"kernel": None, "bias": "fc.bias"}, {"kernel": None, "bias": "fc2.bias"}
            linear["note"] = ("bias from Add",)
        else:
            fc, fc2 = names("fc"), names("fc2")
            linear["note"] = ("Transpose", "bias from Add")
            linear["derived"] = {"kernel": lambda s: s.T}
        bn_roles = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                    "moving_variance": "running_var"}  # fmt: skip
        wants = [
            Want("conv2d", names("c1"), groups=2),
            Want("depthwise_conv2d", names("dw"), groups=16),
            *([] if optimize else [Want("batch_norm", names("bn", bn_roles))]),
            Want("conv_transpose2d", names("up"), groups=4),
            Want("dense", fc, **linear),
            Want("dense", fc2, **linear),
        ]
        modules = [module.c1, module.dw, module.bn, module.up, module.fc, module.fc2]
        if optimize:  # the batch norm lives on in the depthwise kernel and bias
            modules = [module.c1, None, module.up, module.fc, module.fc2]
        expected: dict[tuple[int, str], np.ndarray] = {}
        for index, sub in enumerate(modules):
            if sub is not None:
                expected.update(_torch_canonical(sub, index))
        if optimize:
            stored = ob.stored_tensors(onnx.load(path))
            total = sum(a.size for a in stored.values() if a.dtype.kind == "f")
            counts = (total, total, 0)
        else:
            counts = _torch_counts(module)
        return Built(
            path,
            wants,
            [{"x": x}],
            _net2d_reference(batch_norm=not optimize),
            counts,
            producer=f"pytorch {torch.__version__}",
            unknown=None,
            torch_canonical=expected,
        )

    return build


class _Net13d(nn.Module):
    """Two inputs: a 1-D grouped conv into a grouped transposed conv, and a 3-D depthwise conv
    (groups = input channels, multiplier 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = nn.Conv1d(4, 6, 3, groups=2, dilation=2, padding=1)
        self.t = nn.ConvTranspose1d(6, 4, 3, stride=2, groups=2, padding=1, output_padding=1)
        self.c3 = nn.Conv3d(4, 8, (2, 3, 2), stride=(1, 2, 1), groups=4)

    def forward(self, x: Any, v: Any) -> tuple[Any, Any]:
        return self.t(self.c(x)), self.c3(v)


def _dynamo_net13d(directory: Path, rng: np.random.Generator) -> Built:
    module = _randomize(_Net13d(), 13)
    path = directory / "model.onnx"
    x, v = _random(rng, (2, 4, 11), 1.0), _random(rng, (1, 4, 4, 7, 5), 1.0)
    _export(module, (torch.from_numpy(x), torch.from_numpy(v)), path, "dynamo")

    def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        c, t, c3 = layers
        y = conv_onnx(feed["x"], c["kernel"], c["bias"], pads=[1, 1], dilations=[2], group=2)
        y = conv_transpose_onnx(
            y, t["kernel"], t["bias"], strides=[2], pads=[1, 1], output_padding=[1], group=2
        )
        w = conv_onnx(feed["x1"], c3["kernel"], c3["bias"], strides=[1, 2, 1], group=4)
        return [y, w]

    roles = {"kernel": "weight", "bias": "bias"}
    wants = [
        Want("conv1d", {r: f"c.{n}" for r, n in roles.items()}, groups=2),
        Want("conv_transpose1d", {r: f"t.{n}" for r, n in roles.items()}, groups=2),
        Want("depthwise_conv3d", {r: f"c3.{n}" for r, n in roles.items()}, groups=4),
    ]
    expected = {}
    for index, sub in enumerate([module.c, module.t, module.c3]):
        expected.update(_torch_canonical(sub, index))
    return Built(
        path,
        wants,
        [{"x": x, "x1": v}],
        reference,
        _torch_counts(module),
        producer=f"pytorch {torch.__version__}",
        unknown=None,
        torch_canonical=expected,
    )


def _torchscript_net2d(directory: Path, rng: np.random.Generator) -> Built:
    """The same network through the TorchScript-based exporter, batch norm kept."""
    module = _randomize(_Net2d(), 2024)
    path = directory / "model.onnx"
    x = _random(rng, (2, 4, 9, 8), 1.0)
    _export(module, (torch.from_numpy(x),), path, "torchscript", do_constant_folding=False)
    roles = {"kernel": "weight", "bias": "bias"}
    bn_roles = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
                "moving_variance": "running_var"}  # fmt: skip

    def names(prefix: str, which: dict[str, str] = roles) -> dict[str, str | None]:
        return {role: f"{prefix}.{name}" for role, name in which.items()}

    linear: dict[str, Any] = {
        "layouts": {"kernel": "IO"},
        "note": ("Transpose", "bias from Add"),
        "derived": {"kernel": lambda s: s.T},
    }
    wants = [
        Want("conv2d", names("c1"), groups=2),
        Want("depthwise_conv2d", names("dw"), groups=16),
        Want("batch_norm", names("bn", bn_roles)),
        Want("conv_transpose2d", names("up"), groups=4),
        Want("dense", names("fc"), **linear),
        Want("dense", names("fc2"), **linear),
    ]
    expected: dict[tuple[int, str], np.ndarray] = {}
    subs = [module.c1, module.dw, module.bn, module.up, module.fc, module.fc2]
    for index, sub in enumerate(subs):
        expected.update(_torch_canonical(sub, index))
    return Built(
        path,
        wants,
        [{"x": x}],
        _net2d_reference(batch_norm=True),
        _torch_counts(module),
        producer=f"pytorch {torch.__version__.split('+')[0]}",
        unknown=None,
        torch_canonical=expected,
    )


class _ConvsPlusBiases(nn.Module):
    """Bias-less convs with biases of their own added after them, broadcast per channel as
    StyleGAN2's ``FusedLeakyReLU`` adds its bias: PyTorch's exporters write a ``Conv`` and an
    ``Add`` of a ``(1, C, 1, 1)`` constant (a ``Reshape`` of the ``(C,)`` parameter when not
    folded), and a ``ConvTranspose`` and an ``Add`` of a ``(C, 1)`` one (an ``Unsqueeze``)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
        self.bias = nn.Parameter(torch.zeros(6))
        self.up = nn.ConvTranspose1d(6, 4, 3, stride=2, bias=False)
        self.up_bias = nn.Parameter(torch.zeros(4))

    def forward(self, x: Any, v: Any) -> Any:
        return self.conv(x) + self.bias.view(1, -1, 1, 1), self.up(v) + self.up_bias[:, None]


def _torch_convs_plus_biases(
    exporter: str, **options: Any
) -> Callable[[Path, np.random.Generator], Built]:
    folded = exporter == "dynamo" or options.get("do_constant_folding", True)
    # the TorchScript-based exporter writes the version without its local part, dynamo with it
    version = torch.__version__ if exporter == "dynamo" else torch.__version__.split("+")[0]

    def build(directory: Path, rng: np.random.Generator) -> Built:
        module = _randomize(_ConvsPlusBiases(), 77)
        path = directory / "model.onnx"
        x, v = _random(rng, (2, 4, 5, 5), 1.0), _random(rng, (2, 6, 7), 1.0)
        _export(module, (torch.from_numpy(x), torch.from_numpy(v)), path, exporter, **options)

        def reference(layers: list[Canonical], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
            c, t = layers
            y = conv_onnx(feed["x"], c["kernel"], c["bias"], pads=[1] * 4, group=2)
            return [y, conv_transpose_onnx(feed["x1"], t["kernel"], t["bias"], strides=[2])]

        flat = {"bias": lambda stored: stored.reshape(-1)}
        wants = [
            Want("conv2d", {"kernel": "conv.weight", "bias": None if folded else "bias"},
                 groups=2, note=("bias from Add", "(1, 6, 1, 1) constant read as (6,)",
                                 *(() if folded else ("Reshape",))), derived=flat),
            Want("conv_transpose1d", {"kernel": "up.weight", "bias": None if folded else "up_bias"},
                 note=("bias from Add", "(4, 1) constant read as (4,)",
                       *(() if folded else ("Unsqueeze",))), derived=flat),
        ]  # fmt: skip
        state = _torch_state(module)
        expected = {
            (0, "kernel"): state["conv.weight"],
            (0, "bias"): state["bias"],
            (1, "kernel"): torch_transpose_to_canonical(state["up.weight"], 1),
            (1, "bias"): state["up_bias"],
        }
        return Built(
            path,
            wants,
            [{"x": x, "x1": v}],
            reference,
            _torch_counts(module),
            producer=f"pytorch {version}",
            torch_canonical=expected,
        )

    return build


TORCH_CASES = [
    *TORCH_LAYER_CASES,
    Case(
        "torchscript_convs_plus_biases_folded",
        _torch_convs_plus_biases("torchscript"),
        "torchscript",
    ),
    Case(
        "torchscript_convs_plus_biases_unfolded",
        _torch_convs_plus_biases("torchscript", **NO_FOLDING),
        "torchscript",
    ),
    Case("dynamo_convs_plus_biases", _torch_convs_plus_biases("dynamo"), "dynamo"),
    Case("torchscript_net2d", _torchscript_net2d, "torchscript"),
    Case("dynamo_net2d_optimized", _dynamo_net2d(optimize=True), "dynamo"),
    Case("dynamo_net2d_unoptimized", _dynamo_net2d(optimize=False), "dynamo"),
    Case("dynamo_net_1d_3d", _dynamo_net13d, "dynamo"),
]

CASES = [*HELPER_CASES, *TORCH_CASES]
CASES_BY_ID = {case.id: case for case in CASES}
assert len(CASES_BY_ID) == len(CASES)

# ---------------------------------------------------------------------------------------------
# building, running and loading


def _run(path: Path, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Built]:
    """``built(case_id)``: the case's model, saved and run by onnxruntime on first use."""
    cache: dict[str, Built] = {}
    root = tmp_path_factory.mktemp("onnx_layouts")

    def get(case_id: str) -> Built:
        if case_id not in cache:
            directory = root / case_id
            directory.mkdir(exist_ok=True)
            rng = np.random.default_rng(zlib.crc32(case_id.encode()))
            item = CASES_BY_ID[case_id].build(directory, rng)
            item.outputs = [_run(item.path, feed) for feed in item.feeds]
            cache[case_id] = item
        return cache[case_id]

    return get


SOURCES = ["file", "proto"]


def _load(item: Built, source: str) -> weightscope.Model:
    """The case's file, or the same model as a live ``ModelProto`` (``onnx.load`` reads
    external data into it)."""
    return weightscope.load(item.path if source == "file" else onnx.load(item.path))


def _classified(model: weightscope.Model) -> list[weightscope.Layer]:
    return [layer for layer in model.layers if layer.kind != "unknown"]


def _canonical(layer: weightscope.Layer) -> Canonical:
    """Each tensor canonical where it has a layout (a quantized one: its real values), and a
    quantized one's stored integers as ``<role>:stored``."""
    tensors = {
        t.role: np.asarray(t.canonical() if t.native_layout else t.numpy(), np.float64)
        for t in layer.tensors
    }
    for t in layer.tensors:
        if t.quantization is not None:
            stored = t.stored_canonical() if t.native_layout else t.stored()
            tensors[f"{t.role}:stored"] = np.asarray(stored, np.float64)
    return tensors


CASE_PARAMS = [pytest.param(case.id, id=case.id) for case in CASES]
PARAMS = [
    pytest.param(case.id, source, id=f"{case.id}-{source}") for case in CASES for source in SOURCES
]

# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize(("case_id", "source"), PARAMS)
def test_layer_structure(built: Callable[[str], Built], case_id: str, source: str) -> None:
    item = built(case_id)
    with _load(item, source) as model:
        assert model.framework == "onnx"
        assert model.format == ("onnx" if source == "file" else "live")
        assert model.source == (item.path if source == "file" else None)
        assert model.producer == item.producer
        assert model.opset is not None and model.opset["ai.onnx"] >= ob.OPSET
        layers = _classified(model)
        assert [layer.kind for layer in layers] == [want.kind for want in item.wants]
        for layer, want in zip(layers, item.wants, strict=True):
            if want.name is not None:
                assert layer.name == want.name
            assert layer.groups == want.groups, layer.name
            assert [t.role for t in layer.tensors] == list(want.tensors), layer.name
            for key, value in want.config.items():
                assert layer.config.get(key) == value, (layer.name, key, layer.config)
            if want.note:
                assert layer.note is not None, layer.name
                for word in want.note:
                    assert word in layer.note, (word, layer.note)
            else:
                assert layer.note is None, (layer.name, layer.note)
            for tensor in layer.tensors:
                what = f"{layer.name}/{tensor.role}"
                if want.tensors[tensor.role] is not None:
                    assert tensor.name == want.tensors[tensor.role], what
                assert tensor.native_layout == want.layout(tensor.role), what
                assert tensor.groups == want.groups, what
                assert tensor.trainable is want.expected_trainable(tensor.role), what
                assert tensor.counted is want.counted(tensor.role), what
                assert tensor.shared_with == want.shared.get(tensor.role), what
        unknown = [layer for layer in model.layers if layer.kind == "unknown"]
        if item.unknown is not None:
            assert [layer.name for layer in unknown] == list(item.unknown)
        # whatever weightscope could not classify holds no parameter (shapes, axes only)
        assert all(not t.counted for layer in unknown for t in layer.tensors), [
            (layer.name, t.name, t.dtype) for layer in unknown for t in layer.tensors if t.counted
        ]


@pytest.mark.parametrize(("case_id", "source"), PARAMS)
def test_native_tensors_equal_the_stored_ones(
    built: Callable[[str], Built], case_id: str, source: str
) -> None:
    """Every tensor as onnx reads it back (``numpy_helper.to_array`` on ``onnx.load``), or, for
    a weight behind static nodes, the stored tensor put through them."""
    item = built(case_id)
    stored = ob.stored_tensors(onnx.load(item.path))
    with _load(item, source) as model:
        for layer, want in zip(_classified(model), item.wants, strict=True):
            for tensor in layer.tensors:
                what = f"{layer.name}/{tensor.role} ({tensor.name})"
                assert tensor.name in stored, what
                expected = stored[tensor.name]
                if tensor.role in want.derived:
                    expected = want.derived[tensor.role](expected)
                # a quantized tensor's stored integers (its values are the real ones)
                native = tensor.stored()
                assert tensor.native_shape == expected.shape, what
                assert tensor.dtype == str(expected.dtype), what
                np.testing.assert_array_equal(native, expected, err_msg=what, strict=True)
        for layer in model.layers:
            if layer.kind == "unknown":
                for tensor in layer.tensors:
                    np.testing.assert_array_equal(
                        tensor.numpy(), stored[tensor.name], err_msg=tensor.name, strict=True
                    )


@pytest.mark.parametrize(("case_id", "source"), PARAMS)
def test_every_stored_tensor_is_listed(
    built: Callable[[str], Built], case_id: str, source: str
) -> None:
    """No stored tensor goes unreported, except the int64 shape and axes arguments of the
    static nodes (``Reshape``, ``Squeeze``) weightscope applies to weights."""
    item = built(case_id)
    stored = ob.stored_tensors(onnx.load(item.path))
    with _load(item, source) as model:
        listed = {t.name for _, t in model.tensors()}
    missing = {name for name in set(stored) - listed if stored[name].dtype != np.int64}
    assert not missing, sorted(missing)


@pytest.mark.parametrize(("case_id", "source"), PARAMS)
def test_parameter_totals(built: Callable[[str], Built], case_id: str, source: str) -> None:
    item = built(case_id)
    total, trainable, non_trainable = item.params
    with _load(item, source) as model:
        counts = model.params
        assert (counts.total, counts.trainable, counts.non_trainable) == item.params
        assert counts.unknown == total - trainable - non_trainable
        assert sum(layer.params for layer in model.layers) == total


@pytest.mark.parametrize(("case_id", "source"), PARAMS)
def test_canonical_tensors_reproduce_onnxruntime(
    built: Callable[[str], Built], case_id: str, source: str
) -> None:
    item = built(case_id)
    with _load(item, source) as model:
        layers = []
        for layer in _classified(model):
            for tensor in layer.tensors:
                if tensor.native_layout is not None:
                    assert tensor.canonical().shape == tensor.canonical_shape, tensor.name
            layers.append(_canonical(layer))
    if item.exact_outputs is not None:
        _assert_exact_and_runtime(item, layers)
        return
    for feed, outputs in zip(item.feeds, item.outputs, strict=True):
        expected = item.reference(layers, feed)
        assert len(expected) == len(outputs)
        for mine, theirs in zip(expected, outputs, strict=True):
            assert mine.shape == theirs.shape
            if item.quantized_output:
                # float64 requantization vs onnxruntime's float32 multiplier: ties may round
                # the other way, never by more than one step
                difference = np.abs(mine - theirs.astype(np.float64))
                assert difference.max() <= 1
                assert np.mean(difference == 0) > 0.95
                assert len(np.unique(theirs)) > 20  # not saturated
            else:
                np.testing.assert_allclose(mine, theirs, atol=ATOL, rtol=RTOL)


def _assert_exact_and_runtime(item: Built, layers: list[Canonical]) -> None:
    """The reference on weightscope's canonical tensors equals the test's own integer
    computation on every feed; onnxruntime agrees with it on the feeds where its output does
    not depend on the CPU."""
    assert item.exact_outputs is not None
    checked = list(item.runtime_comparable)
    assert len(checked) == len(item.feeds) and any(checked)
    for feed, exact, outputs, comparable in zip(
        item.feeds, item.exact_outputs, item.outputs, checked, strict=True
    ):
        expected = item.reference(layers, feed)
        assert len(expected) == len(exact) == len(outputs)
        for mine, want, theirs in zip(expected, exact, outputs, strict=True):
            assert mine.shape == want.shape == theirs.shape
            np.testing.assert_array_equal(mine, want.astype(np.float64))
            assert len(np.unique(want)) > 20  # not saturated
            if comparable:
                # onnxruntime requantizes with a float32 multiplier: ties may round the other
                # way, never by more than one step
                difference = np.abs(want.astype(np.int32) - theirs.astype(np.int32))
                assert difference.max() <= 1
                assert np.mean(difference == 0) > 0.95


@pytest.mark.parametrize("case_id", [c.id for c in TORCH_CASES])
def test_canonical_tensors_equal_torch_parameters(
    built: Callable[[str], Built], case_id: str
) -> None:
    """The canonical tensors are PyTorch's own (transposed convs regrouped from ``(in, out/g)``),
    bit for bit, whatever the exporter did to them on the way."""
    item = built(case_id)
    assert item.torch_canonical
    with _load(item, "file") as model:
        layers = _classified(model)
        for (index, role), expected in item.torch_canonical.items():
            tensor = layers[index].tensor(role)
            np.testing.assert_array_equal(
                tensor.canonical(), expected, err_msg=f"{layers[index].name}/{role}", strict=True
            )


@pytest.mark.parametrize("case_id", CASE_PARAMS)
def test_live_proto_gives_the_same_model(built: Callable[[str], Built], case_id: str) -> None:
    item = built(case_id)
    with _load(item, "file") as from_file, _load(item, "proto") as live:
        assert len(from_file.layers) == len(live.layers)
        for a, b in zip(from_file.layers, live.layers, strict=True):
            assert (a.name, a.kind, a.groups, a.class_name, a.note, a.config) == (
                b.name, b.kind, b.groups, b.class_name, b.note, b.config,
            )  # fmt: skip
            assert len(a.tensors) == len(b.tensors)
            for s, t in zip(a.tensors, b.tensors, strict=True):
                fields = ("name", "role", "native_shape", "native_layout", "dtype", "trainable",
                          "counted", "shared_with", "groups")  # fmt: skip
                assert [getattr(s, f) for f in fields] == [getattr(t, f) for f in fields]
                np.testing.assert_array_equal(s.numpy(), t.numpy(), strict=True)
                if s.native_layout is not None:
                    np.testing.assert_array_equal(s.canonical(), t.canonical(), strict=True)
                assert s.stats() == t.stats()
        assert from_file.params == live.params
        assert from_file.weightless_layers == live.weightless_layers


# ---------------------------------------------------------------------------------------------
# what the cases must cover, and details beyond the matrix


def test_cases_cover_the_brief(built: Callable[[str], Built]) -> None:
    kinds = {want.kind for case in CASES for want in built(case.id).wants}
    assert kinds >= {
        "conv1d", "conv2d", "conv3d", "depthwise_conv1d", "depthwise_conv2d",
        "depthwise_conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
        "dense", "batch_norm", "layer_norm", "embedding",
    }  # fmt: skip
    assert {case.exporter for case in CASES} == {"helper", "torchscript", "dynamo"}
    notes = " ".join(word for case in CASES for want in built(case.id).wants for word in want.note)
    for op in ("Transpose", "Reshape", "Squeeze", "Identity", "Cast", "DequantizeLinear",
               "then_branch", "else_branch", "body of Loop", "bias from Add"):  # fmt: skip
        assert op in notes, op


def test_large_and_small_tensors_are_both_covered(built: Callable[[str], Built]) -> None:
    """Tensors of 4 KiB and more are read from the file by offset, smaller ones from the
    parsed skeleton: both paths must be exercised, in the main graph, in a ``Constant`` node,
    in a subgraph, in ``float_data`` and in external data."""
    for case_id in (
        "conv2d_groups2_strides_dilations_pads_large",
        "conv_weights_in_constant_nodes",
        "if_branches",
        "conv2d_weights_in_float_data_large",
        "external_data",
        "torch_conv2d_groups2_stride2_padding1_large",
    ):
        with _load(built(case_id), "file") as model:
            sizes = [t.numpy().nbytes for _, t in model.tensors()]
        assert max(sizes) >= BIG_BYTES, case_id
        assert min(sizes) < BIG_BYTES, case_id


def test_external_data_is_read_from_beside_the_model(built: Callable[[str], Built]) -> None:
    item = built("external_data")
    assert (item.path.parent / "w.bin").stat().st_size > 0
    with weightscope.load(item.path) as model:
        assert "external data read from: w.bin" in model.notes


@pytest.mark.parametrize("case_id", [pytest.param(c.id, id=c.id) for c in HELPER_CASES])
def test_the_same_model_with_external_data(
    built: Callable[[str], Built], tmp_path: Path, case_id: str
) -> None:
    """Every helper-built model saved again with its tensors in ``w.bin`` (subgraph
    initializers, integer and float16 tensors included; onnx leaves typed-field and
    ``Constant`` tensors inline) reads the same as from the single file."""
    item = built(case_id)
    path = tmp_path / "model.onnx"
    onnx.save_model(
        onnx.load(item.path),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="w.bin",
        size_threshold=0,
    )
    with weightscope.load(item.path) as single, weightscope.load(path) as split:
        pairs = list(zip(single.tensors(), split.tensors(), strict=True))
        for (layer, a), (other, b) in pairs:
            assert (layer.name, a.name, a.role) == (other.name, b.name, b.role)
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name, strict=True)
        assert single.params == split.params
        externals = [note for note in split.notes if note.startswith("external data")]
        inline = [t for t in onnx.load(path, load_external_data=False).graph.initializer]
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in inline):
            assert externals == ["external data read from: w.bin"]


def test_live_proto_without_its_external_data_says_so(built: Callable[[str], Built]) -> None:
    item = built("external_data")
    proto = onnx.load(item.path, load_external_data=False)
    with pytest.raises(weightscope.WeightscopeError, match="load the model from its path"):
        weightscope.load(proto)


def test_shared_initializer_is_listed_twice_and_counted_once(
    built: Callable[[str], Built],
) -> None:
    item = built("shared_conv_kernel")
    with weightscope.load(item.path) as model:
        first = model.layer("conv_a").tensor("kernel")
        second = model.layer("conv_b").tensor("kernel")
        assert (first.counted, first.shared_with) == (True, None)
        assert (second.counted, second.shared_with) == (False, "conv_a/kernel")
        np.testing.assert_array_equal(first.numpy(), second.numpy(), strict=True)
        assert model.layer("conv_b").params == 4
        assert model.params.total == 4 * 4 * 3 * 3 + 8


def test_quantized_kernels_keep_their_integers(built: Callable[[str], Built]) -> None:
    """An integer kernel keeps its stored integers (``stored``, ``stored_canonical``, its
    ``dtype``) beside its real values (``numpy``, ``canonical``)."""
    for case_id, dtype in (
        ("dequantize_linear_conv_per_channel", "int8"),
        ("dequantize_linear_matmul_per_tensor", "uint8"),
        ("qlinear_conv", "int8"),
    ):
        item = built(case_id)
        stored = ob.stored_tensors(onnx.load(item.path))
        with weightscope.load(item.path) as model:
            kernel = _classified(model)[0].tensor("kernel")
            assert kernel.dtype == dtype
            assert kernel.stored_canonical().dtype == np.dtype(dtype)
            np.testing.assert_array_equal(kernel.stored(), stored["W_q"], strict=True)
            assert kernel.canonical().dtype == np.float32


@pytest.mark.parametrize("op", ["MatMul+Add", "Gemm"])
def test_folded_row_bias_has_a_canonical_vector(tmp_path: Path, op: str) -> None:
    """A bias stored as a ``(1, width)`` row (converters from Keras/TF write these; ``Gemm``'s
    ``C`` may be any broadcastable shape) is folded into the dense layer as its ``bias``; like
    every bias it must have a canonical ``(width,)`` vector, which reproduces onnxruntime."""
    rng = np.random.default_rng(11)
    w, b = _random(rng, (6, 4)), _random(rng, (1, 4))
    if op == "Gemm":
        nodes = [helper.make_node("Gemm", ["x", "W", "b"], ["y"], "dense")]
    else:
        nodes = [
            helper.make_node("MatMul", ["x", "W"], ["h"], "dense"),
            helper.make_node("Add", ["h", "b"], ["y"], "add"),
        ]
    inits = [ob.tensor("W", w), ob.tensor("b", b)]
    path = _save(tmp_path, ob.model(ob.graph(nodes, [_x((3, 6))], [_y(2)], inits)))
    x = _random(rng, (3, 6), 1.0)
    (expected,) = _run(path, {"x": x})
    with weightscope.load(path) as model:
        (layer,) = model.layers
        assert (layer.kind, [t.role for t in layer.tensors]) == ("dense", ["kernel", "bias"])
        bias = layer.tensor("bias")
        np.testing.assert_array_equal(bias.numpy(), b, strict=True)
        assert bias.canonical_shape == (4,), (bias.native_shape, bias.native_layout)
        canonical = bias.canonical()
        np.testing.assert_array_equal(canonical, b.reshape(4), strict=True)
        mine = ref.dense(x, layer.tensor("kernel").canonical(), canonical)
    np.testing.assert_allclose(mine, expected, atol=ATOL, rtol=RTOL)


def test_batch_norm_statistics_deduplicated_by_the_exporter(tmp_path: Path) -> None:
    """The TorchScript-based exporter stores equal initializers once: a fresh batch norm's
    running mean (zeros) and variance (ones) become ``Identity`` nodes of its beta and gamma.
    The values must still be right; the file stores each once, so each is counted once."""
    module = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 4, 3), bn=nn.BatchNorm2d(4))).eval()
    path = tmp_path / "fresh.onnx"
    x = np.random.default_rng(5).standard_normal((1, 3, 6, 6)).astype(np.float32)
    _export(module, (torch.from_numpy(x),), path, "torchscript", do_constant_folding=False)
    stored = ob.stored_tensors(onnx.load(path))
    assert "bn.running_var" not in stored  # deduplicated: the premise of this test
    (expected,) = _run(path, {"x": x})
    with weightscope.load(path) as model:
        conv, bn = _classified(model)
        assert bn.kind == "batch_norm"
        t = {role: bn.tensor(role) for role in ("gamma", "beta", "moving_mean", "moving_variance")}
        state = _torch_state(module.bn)
        for role, name in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                           ("moving_variance", "running_var")):  # fmt: skip
            np.testing.assert_array_equal(t[role].canonical(), state[name], strict=True)
        assert t["moving_mean"].trainable is False and t["moving_variance"].trainable is False
        assert t["moving_variance"].shared_with == f"{bn.name}/gamma"
        assert t["moving_mean"].shared_with == f"{bn.name}/beta"
        assert model.params.total == sum(a.size for a in stored.values() if a.dtype.kind == "f")
        c, n = _canonical(conv), _canonical(bn)
    y = ref.batch_norm(
        conv_onnx(x, c["kernel"], c["bias"]), n["moving_mean"], n["moving_variance"], n["gamma"],
        n["beta"], epsilon=module.bn.eps,
    )  # fmt: skip
    np.testing.assert_allclose(y, expected, atol=ATOL, rtol=RTOL)


def test_matmul_of_two_constants_lists_both(tmp_path: Path) -> None:
    """A ``MatMul`` of two constants (a product no exporter folded) reads two stored tensors:
    both must be listed and counted, not only the right one."""
    rng = np.random.default_rng(3)
    a, b = _random(rng, (3, 6)), _random(rng, (6, 4))
    nodes = [
        helper.make_node("MatMul", ["A", "B"], ["h"], "mm"),
        helper.make_node("Add", ["x", "h"], ["y"], "add"),
    ]
    inits = [ob.tensor("A", a), ob.tensor("B", b)]
    path = _save(tmp_path, ob.model(ob.graph(nodes, [_x((3, 4))], [_y(2)], inits)))
    with weightscope.load(path) as model:
        listed = {t.name for _, t in model.tensors()}
        assert {"A", "B"} <= listed, listed
        assert model.params.total == a.size + b.size


def test_dequantize_in_the_outer_graph_folds_into_a_branch_conv(tmp_path: Path) -> None:
    """A ``DequantizeLinear`` of the main graph whose output a ``Conv`` inside an ``If`` branch
    uses is folded into that conv, as it is when both sit in one graph: the conv's int8 kernel
    is counted there, and no ``unknown`` DequantizeLinear layer claims it first."""
    rng = np.random.default_rng(4)
    w_q, scale, zp = _quantize(rng, (4, 4, 3, 3), np.int8)
    then_graph = ob.graph(
        [helper.make_node("Conv", ["x", "W"], ["y_then"], "then_conv", pads=[1] * 4)],
        [],
        [_y(4, "y_then")],
        name="then_g",
    )
    else_graph = ob.graph(
        [helper.make_node("Relu", ["x"], ["y_else"], "relu")], [], [_y(4, "y_else")], name="else_g"
    )
    nodes = [
        helper.make_node("DequantizeLinear", ["W_q", "W_scale", "W_zp"], ["W"], "dq", axis=0),
        helper.make_node(
            "If", ["cond"], ["y"], "branch", then_branch=then_graph, else_branch=else_graph
        ),
    ]
    x_shape = (1, 4, 5, 5)
    inputs = [_x(x_shape), ob.value_info("cond", TensorProto.BOOL, [])]
    inits = [ob.tensor("W_q", w_q), ob.tensor("W_scale", scale), ob.tensor("W_zp", zp)]
    path = _save(tmp_path, ob.model(ob.graph(nodes, inputs, [_y(4)], inits)))
    x = _random(rng, x_shape, 1.0)
    (expected,) = _run(path, {"x": x, "cond": np.array(True)})
    with weightscope.load(path) as model:
        layers = {layer.name: layer for layer in model.layers}
        conv = layers["then_conv"]
        kernel = conv.tensor("kernel")
        assert (kernel.name, kernel.dtype) == ("W_q", "int8")
        real = dequantize(kernel.stored_canonical(), conv.tensor("kernel_scale").numpy(), zp)
        np.testing.assert_allclose(kernel.canonical(), real, rtol=1e-6)
        mine = conv_onnx(x, kernel.canonical(), pads=[1] * 4)
        np.testing.assert_allclose(mine, expected, atol=ATOL, rtol=RTOL)
        assert (kernel.counted, kernel.shared_with) == (True, None)
        assert "dq" not in layers, layers["dq"].note
        assert model.params.total == w_q.size + scale.size


NOT_FOLDED = [
    "per_position_1chw",
    "vector_along_the_width",
    "one_value_for_all_channels",
    "conv_output_read_twice",
    "conv_output_is_a_graph_output",
    "conv_output_read_in_a_subgraph",
    "conv_has_its_own_bias",
]


@pytest.mark.parametrize("case", NOT_FOLDED)
def test_conv_add_that_is_not_a_per_channel_bias_stays_listed(tmp_path: Path, case: str) -> None:
    """The ``Add`` after a conv is folded into its bias only when the conv's output goes to it
    alone and its constant adds one value per output channel; otherwise both stay as they are,
    the constant listed (and counted) as an ``unknown (Add)`` layer's, and the two layers still
    reproduce onnxruntime. A conv with a bias of its own keeps it, and says so on both."""
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    channels, x_shape = 6, (2, 4, 5, 6)  # the conv's output is (2, 6, 5, 6): W == channels
    c_shape = {
        "per_position_1chw": (1, channels, 5, 6),
        "vector_along_the_width": (channels,),
        "one_value_for_all_channels": (1, 1, 1, 1),
    }.get(case, (1, channels, 1, 1))
    w, b, c = _random(rng, (channels, 4, 3, 3)), _random(rng, (channels,)), _random(rng, c_shape)
    own_bias = case == "conv_has_its_own_bias"
    nodes = [
        helper.make_node("Conv", ["x", "W", *(["B"] if own_bias else [])], ["h"], "conv",
                         pads=[1] * 4),
        helper.make_node("Add", ["h", "c"], ["y"], "add"),
    ]  # fmt: skip
    outputs = [_y(4)]
    inputs = [_x(x_shape)]
    if case == "conv_output_read_twice":
        nodes.append(helper.make_node("Relu", ["h"], ["r"], "relu"))
        outputs.append(_y(4, "r"))
    elif case == "conv_output_is_a_graph_output":
        outputs.append(_y(4, "h"))
    elif case == "conv_output_read_in_a_subgraph":
        then_g = ob.graph([helper.make_node("Identity", ["h"], ["t"], "id")], [], [_y(4, "t")])
        else_g = ob.graph([helper.make_node("Neg", ["h"], ["e"], "neg")], [], [_y(4, "e")])
        nodes.append(helper.make_node("If", ["cond"], ["s"], "branch", then_branch=then_g,
                                      else_branch=else_g))  # fmt: skip
        inputs.append(ob.value_info("cond", TensorProto.BOOL, []))
        outputs.append(_y(4, "s"))
    inits = [ob.tensor("W", w), ob.tensor("c", c), *([ob.tensor("B", b)] if own_bias else [])]
    path = _save(tmp_path, ob.model(ob.graph(nodes, inputs, outputs, inits)))
    feed = {"x": _random(rng, x_shape, 1.0)}
    if case == "conv_output_read_in_a_subgraph":
        feed["cond"] = np.array(True)
    expected = _run(path, feed)[0]
    with weightscope.load(path) as model:
        conv, add = model.layers
        assert (conv.name, conv.kind) == ("conv", "conv2d")
        assert [t.role for t in conv.tensors] == (["kernel", "bias"] if own_bias else ["kernel"])
        assert (add.name, add.kind_label) == ("add", "unknown (Add)")
        (constant,) = add.tensors
        assert (constant.name, constant.native_shape, constant.counted) == ("c", c_shape, True)
        assert model.params.total == w.size + c.size + (b.size if own_bias else 0)
        if own_bias:
            assert conv.note is not None and "Add 'add' then adds" in conv.note
            assert conv.note.endswith("the effective bias is their sum)")
            assert add.note is not None and "not folded into its bias" in add.note
        else:
            assert conv.note is None
            assert add.note == "Add reads constants weightscope does not classify"
        bias = conv.tensor("bias").canonical() if own_bias else None
        mine = conv_onnx(feed["x"], conv.tensor("kernel").canonical(), bias, pads=[1] * 4)
        mine = mine + constant.numpy()  # ONNX broadcasting is numpy's
    np.testing.assert_allclose(mine, expected, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("op", ["MatMul", "Conv"])
def test_dequantized_add_constant_that_does_not_fit_stays_listed(tmp_path: Path, op: str) -> None:
    """An ``Add`` after a ``MatMul`` or a bias-less ``Conv`` whose constant comes through a
    ``DequantizeLinear`` but is no bias of theirs (its shape does not fit) is not folded: the
    dequantizer is then listed with its integers, which count as parameters, as it is anywhere
    else (looking at the constant once folded the dequantizer, and its integers vanished)."""
    rng = np.random.default_rng(9)
    if op == "MatMul":
        w, q_shape, x_shape = _random(rng, (6, 4)), (3, 4), (3, 6)
        main = helper.make_node("MatMul", ["x", "W"], ["h"], "layer")
    else:
        w, q_shape, x_shape = _random(rng, (4, 2, 3, 3)), (1, 4, 3, 3), (1, 2, 5, 5)
        main = helper.make_node("Conv", ["x", "W"], ["h"], "layer")
    q = rng.integers(-8, 8, q_shape).astype(np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["c_q", "c_scale"], ["c"], "dq"),
        main,
        helper.make_node("Add", ["h", "c"], ["y"], "add"),
    ]
    inits = [ob.tensor("W", w), ob.tensor("c_q", q), ob.tensor("c_scale", np.float32(0.1))]
    path = _save(tmp_path, ob.model(ob.graph(nodes, [_x(x_shape)], [_y(len(x_shape))], inits)))
    with weightscope.load(path) as model:
        layers = {layer.name: layer for layer in model.layers}
        assert [t.role for t in layers["layer"].tensors] == ["kernel"]
        dq = layers["dq"]
        assert dq.kind_label == "unknown (DequantizeLinear)"
        assert [(t.name, t.counted) for t in dq.tensors] == [("c_q", True), ("c_scale", True)]
        assert model.params.total == w.size + q.size + 1


def test_matmul_product_that_is_also_an_output_keeps_its_add(tmp_path: Path) -> None:
    """``x @ W`` that the graph also outputs is not ``x @ W + b``: the ``Add`` reading it is
    not folded into the dense layer (as for a conv, nothing but the ``Add`` may read it)."""
    rng = np.random.default_rng(12)
    w, b = _random(rng, (6, 4)), _random(rng, (4,))
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], "mm"),
        helper.make_node("Add", ["h", "b"], ["y"], "add"),
    ]
    inits = [ob.tensor("W", w), ob.tensor("b", b)]
    graph = ob.graph(nodes, [_x((3, 6))], [_y(2), _y(2, "h")], inits)
    path = _save(tmp_path, ob.model(graph))
    with weightscope.load(path) as model:
        mm, add = model.layers
        assert [t.role for t in mm.tensors] == ["kernel"]
        assert (add.kind_label, [(t.name, t.counted) for t in add.tensors]) == (
            "unknown (Add)", [("b", True)],
        )  # fmt: skip
        assert model.params.total == w.size + b.size
