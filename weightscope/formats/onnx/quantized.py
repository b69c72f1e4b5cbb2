"""Quantized ONNX operators -> layers whose weights are integers standing for real values:

- ``ConvInteger`` and ``MatMulInteger`` (onnxruntime's ``quantize_dynamic``): the weight and its
  zero point are inputs; the weight's scale is the constant in the ``Mul`` that scales the
  integer result (through a ``Cast``, and an ``Add`` of a bias quantized at run time), itself
  or in the ``Mul(x_scale, w_scale)`` it multiplies by; where none is found the tensor is still
  a quantized weight, its real values ``stored - zero_point``, and the note says the scale is
  missing. The bias is the ``Add`` after that ``Mul``, or (``onnx.quantize`` 0.1) the float
  constant a ``Div`` quantizes at run time and an ``Add`` adds to the integers.
- ``QLinearConv``, ``QLinearMatMul`` and ``com.microsoft.QGemm``: the weight's scale and zero
  point are inputs (per channel along the output-channel axis); their int32 bias stands for
  ``bias * x_scale * w_scale``.
- ``com.microsoft.QAttention`` (``quantize_dynamic``'s ``Attention``): a dense layer whose
  ``(in, 3 * hidden)`` integer kernel projects the input to Q, K and V at once (columns in that
  order), with a float bias; its scale and zero point are inputs, per tensor or per column.
- ``com.microsoft.DynamicQuantizeLSTM`` (see :mod:`.recurrent`) and ``MatMulNBits`` (2-, 4- or
  8-bit integers packed in blocks along K, one scale per block).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from weightscope import layouts
from weightscope.formats.onnx.constants import Constant, new_storage_id
from weightscope.formats.onnx.graph import Scope, attributes
from weightscope.formats.onnx.ops import (
    DEFAULT_DOMAINS,
    Entry,
    GraphReader,
    Handler,
    LayerDraft,
    _as_vector,
    _bias_add,
    _conv_like,
    _is_float_or_complex,
    _label,
    _layout,
    _per_channel,
    _plain_config,
    _runtime,
    add_parameters,
)
from weightscope.formats.onnx.proto import NodeProto
from weightscope.formats.onnx.quantization import (
    Reshaped,
    UnpackedBits,
    granularity,
    quantization_of,
)
from weightscope.formats.onnx.recurrent import recurrent
from weightscope.model import ArraySource, Quantization, TensorSource
from weightscope.stats import TensorStats

MAX_FOLLOWED = 4
"""Nodes followed from an integer op's output to the ``Mul`` that scales it."""

RuntimeBias = tuple[Constant, NodeProto, NodeProto]
"""A bias quantized at run time: the float constant, its ``Div`` and the ``Add``."""


# ---------------------------------------------------------------------------------------------
# helpers


def _quantize_entry(
    draft: LayerDraft,
    entry: Entry,
    scale: Constant | None,
    zero_point: Constant | None,
    axis: int,
    *,
    missing: str | None = None,
) -> None:
    """Make ``entry`` quantized by ``scale`` and ``zero_point`` (listed beside it), per channel
    along stored ``axis`` where they have one value per channel; ``missing``: why no scale was
    found (the values are then the stored integers less the zero point)."""
    role = entry.role
    unit = scale is None and missing is not None
    if unit:
        scale = Constant("", ArraySource(np.ones((), np.float32)), (), "float32", new_storage_id())
    found = quantization_of(entry.constant, scale, zero_point, axis)
    if isinstance(found, str):
        draft.notes.append(f"{role} stored as {entry.constant.dtype}, not dequantized: {found}")
    else:
        if unit:
            found = replace(found, scale_name=None)
            draft.notes.append(
                f"{role} stored as {entry.constant.dtype}; its scale is missing ({missing}): "
                f"its values are the stored integers less the zero point"
            )
        else:
            draft.notes.append(
                f"{role} stored as {entry.constant.dtype}, quantized {granularity(found)}"
            )
        entry.quantization = found
    add_parameters(draft, role, None if unit else scale, zero_point)


def _input(scope: Scope, node: NodeProto, index: int) -> Constant | None:
    name = node.input[index] if len(node.input) > index else ""
    return scope.resolve(name) if name else None


def _entry(draft: LayerDraft, role: str) -> Entry | None:
    return next((e for e in draft.tensors if e.role == role), None)


class Product:
    """The product of two small sources (a QLinear op's ``x_scale * w_scale``), read lazily."""

    def __init__(self, a: TensorSource, b: TensorSource) -> None:
        self.a, self.b = a, b

    def read(self) -> np.ndarray:
        a = np.asarray(self.a.read(), np.float64)
        b = np.asarray(self.b.read(), np.float64)
        return (a.reshape(-1) * b.reshape(-1)).astype(np.float32)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        return ArraySource(self.read()).chunks(max_elements)

    def stats(self, max_elements: int) -> TensorStats:
        return ArraySource(self.read()).stats(max_elements)


def _integer_bias(
    draft: LayerDraft, entry: Entry | None, x_scale: Constant | None, w_scale: Constant | None
) -> None:
    """A QLinear op's int32 bias stands for ``bias * x_scale * w_scale`` (zero point 0)."""
    if entry is None or x_scale is None or w_scale is None:
        return
    if x_scale.size != 1 or w_scale.size not in (1, *entry.constant.shape[:1]):
        draft.notes.append("bias: its scales x_scale * w_scale do not fit it, not dequantized")
        return
    if len(entry.constant.shape) != 1:
        return
    size = max(w_scale.size, 1)
    product = Product(x_scale.source, w_scale.source)
    scale = Constant("", product, (size,), "float32", new_storage_id())
    found = quantization_of(
        entry.constant, scale if size > 1 else replace(scale, shape=()), None, 0
    )
    if isinstance(found, Quantization):
        entry.quantization = replace(found, scale_name=None)
        draft.notes.append(
            f"bias stored as {entry.constant.dtype} in steps of x_scale * w_scale "
            f"('{x_scale.name}' * '{w_scale.name}')"
        )


# ---------------------------------------------------------------------------------------------
# QLinearConv, QLinearMatMul, QGemm


QLINEAR_CONV_INPUTS = (
    (3, "kernel"),
    (1, "input_scale"),
    (2, "input_zero_point"),
    (4, "kernel_scale"),
    (5, "kernel_zero_point"),
    (6, "output_scale"),
    (7, "output_zero_point"),
    (8, "bias"),
)
"""``QLinearConv``'s inputs, in the order its layer lists them."""


def _qlinear_conv(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    extra = (
        (1, "input_scale"),
        (2, "input_zero_point"),
        (6, "output_scale"),
        (7, "output_zero_point"),
    )
    draft = _conv_like(reader, scope, node, weight_index=3, bias_index=8, extra=extra)
    if draft is None:
        return None
    kernel = _entry(draft, "kernel")
    w_scale, w_zero_point = _input(scope, node, 4), _input(scope, node, 5)
    if kernel is not None:
        _quantize_entry(draft, kernel, w_scale, w_zero_point, 0)
    _integer_bias(draft, _entry(draft, "bias"), _input(scope, node, 1), w_scale)
    order = [role for _, role in QLINEAR_CONV_INPUTS]
    draft.tensors.sort(key=lambda e: order.index(e.role) if e.role in order else len(order))
    for entry in draft.tensors:
        entry.trainable = None
    draft.notes.append("quantized convolution: kernel and bias are integers")
    return draft


def _qlinear_matmul(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    if len(node.input) < 8:
        return None
    found = _constant_right_operand(scope, node, 3, _plain_config(node))
    if found is None:
        return None
    draft, entry = found
    _quantize_entry(draft, entry, _input(scope, node, 4), _input(scope, node, 5), -1)
    _other_parameters(draft, scope, node, ((1, "input"), (6, "output")))
    return draft


def _constant_right_operand(
    scope: Scope, node: NodeProto, index: int, config: dict[str, object]
) -> tuple[LayerDraft, Entry] | None:
    """A quantized ``x @ W`` whose ``W`` (input ``index``) is a constant: its layer, a dense one
    where ``W`` is 2-D, and the kernel entry in it; None for another product."""
    weight = _input(scope, node, index)
    if weight is None or _input(scope, node, 0) is not None:
        return None  # only x @ constant is a dense layer
    kind = "dense" if len(weight.shape) == 2 else "unknown"
    draft = LayerDraft(node, scope, kind, config=config)
    layout = _layout(node, "kernel", len(weight.shape), kind, layouts.MATMUL_CONSTANT_B)
    entry = Entry("kernel", weight, layout, None, True)
    draft.tensors.append(entry)
    return draft, entry


def _other_parameters(
    draft: LayerDraft, scope: Scope, node: NodeProto, which: tuple[tuple[int, str], ...]
) -> None:
    """The input's and output's scales and zero points (inputs ``index``, ``index + 1``)."""
    for index, role in which:
        add_parameters(draft, role, _input(scope, node, index), _input(scope, node, index + 1))


def _qgemm(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    if len(node.input) < 6 or _input(scope, node, 0) is not None:
        return None
    weight = _input(scope, node, 3)
    config = _plain_config(node)
    draft = LayerDraft(node, scope, "dense", config=config)
    trans_b = bool(config.get("transB", 0))
    if weight is None:
        _runtime(draft, "kernel", node.input[3])
    else:
        when = layouts.GEMM_TRANS_B if trans_b else layouts.GEMM_NO_TRANS_B
        layout = _layout(node, "kernel", len(weight.shape), "dense", when)
        entry = Entry("kernel", weight, layout, None, True)
        draft.tensors.append(entry)
        w_scale, w_zero_point = _input(scope, node, 4), _input(scope, node, 5)
        _quantize_entry(draft, entry, w_scale, w_zero_point, 0 if trans_b else 1)
    bias = _input(scope, node, 6)
    if bias is not None:
        layout = _layout(node, "bias", len(bias.shape), "dense")
        draft.tensors.append(Entry("bias", bias, layout, None, True))
        _integer_bias(draft, _entry(draft, "bias"), _input(scope, node, 1), _input(scope, node, 4))
    _other_parameters(draft, scope, node, ((1, "input"), (7, "output")))
    if config.get("alpha", 1.0) != 1.0:
        draft.notes.append(f"scaled: output = {config['alpha']} (alpha) * x . kernel + bias")
    return draft


QATTENTION_INPUTS = {"weight": 1, "bias": 2, "weight_scale": 4, "weight_zero_point": 7}
"""``QAttention``'s stored inputs (``input``, ``input_scale``, ``mask_index``,
``input_zero_point`` and ``past`` are inputs 0, 3, 5, 6 and 8)."""


def _qattention(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    weight = _input(scope, node, QATTENTION_INPUTS["weight"])
    if weight is None or _input(scope, node, 0) is not None:
        return None  # only a constant projection of the input is a layer
    kind = "dense" if len(weight.shape) == 2 else "unknown"
    config = _plain_config(node)
    draft = LayerDraft(node, scope, kind, config=config)
    entry = Entry("kernel", weight, _layout(node, "kernel", len(weight.shape), kind), None, True)
    draft.tensors.append(entry)
    scale = _input(scope, node, QATTENTION_INPUTS["weight_scale"])
    zero_point = _input(scope, node, QATTENTION_INPUTS["weight_zero_point"])
    _quantize_entry(draft, entry, scale, zero_point, -1)
    bias = _input(scope, node, QATTENTION_INPUTS["bias"])
    if bias is None:
        _runtime(draft, "bias", node.input[2] if len(node.input) > 2 else "")
    else:
        layout = _layout(node, "bias", len(bias.shape), kind)
        draft.tensors.append(Entry("bias", bias, layout, None, True))
    add_parameters(draft, "input", _input(scope, node, 3), _input(scope, node, 6))
    heads = config.get("num_heads")
    columns = weight.shape[-1] if weight.shape else 0
    draft.notes.append(
        f"attention's input projection: the kernel's {columns} output columns are Q, K and V "
        f"in that order ({columns // 3} each, {heads} heads); the attention itself has no "
        f"weights"
    )
    return draft


# ---------------------------------------------------------------------------------------------
# ConvInteger, MatMulInteger: the scale in the Mul after them


def _sole(reader: GraphReader, scope: Scope, name: str) -> NodeProto | None:
    node = scope.sole_reader(name)
    if node is None or node.domain not in DEFAULT_DOMAINS or id(node) in reader.folded:
        return None
    return node


def _scaling(
    reader: GraphReader, scope: Scope, node: NodeProto
) -> tuple[NodeProto | None, Constant | None, list[NodeProto], RuntimeBias | None]:
    """Follow ``node``'s output through ``Cast`` (and the ``Add`` of a bias quantized at run
    time) to the ``Mul`` that scales it: (that Mul, the weight's scale, the nodes that compute
    it and the bias to fold, the bias and its ``Add``)."""
    value = node.output[0] if node.output else ""
    bias = None
    for _ in range(MAX_FOLLOWED):
        follower = _sole(reader, scope, value) if value else None
        if follower is None or not follower.output:
            break
        if follower.op_type == "Cast":
            value = follower.output[0]
            continue
        if follower.op_type == "Add" and bias is None and len(follower.input) == 2:
            other = follower.input[1] if follower.input[0] == value else follower.input[0]
            found = _runtime_bias(scope, other)
            if found is None:
                break
            bias = (found[0], found[1], follower)
            value = follower.output[0]
            continue
        if follower.op_type != "Mul" or len(follower.input) != 2:
            break
        other = follower.input[1] if follower.input[0] == value else follower.input[0]
        constant = scope.resolve(other)
        if constant is not None:
            return follower, constant, [], bias
        product = scope.producer(other)
        if product is None or product.op_type != "Mul" or len(product.input) != 2:
            return follower, None, [], bias
        operands = [scope.resolve(name) for name in product.input]
        constants = [c for c in operands if c is not None]
        if len(constants) != 1:
            return follower, None, [], bias
        extra = [product] if _sole(reader, scope, other) is follower else []
        return follower, constants[0], extra, bias
    return None, None, [], bias


def _runtime_bias(scope: Scope, name: str) -> tuple[Constant, NodeProto] | None:
    """``onnx.quantize`` 0.1's bias: a float constant divided by ``x_scale * w_scale`` at run
    time (``Div``), then ``Floor``, ``Cast`` and ``Reshape`` on the way to the ``Add``: the
    constant and its ``Div``."""
    for _ in range(MAX_FOLLOWED + 1):
        node = scope.producer(name)
        if node is None or not node.input:
            return None
        if node.op_type in ("Floor", "Cast", "Reshape", "Unsqueeze", "Round"):
            name = node.input[0]
            continue
        if node.op_type != "Div" or len(node.input) != 2:
            return None
        constant = scope.resolve(node.input[0])
        if constant is None or not _is_float_or_complex(constant):
            return None
        return constant, node
    return None


def _conv_integer(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    draft = _conv_like(reader, scope, node, weight_index=1, bias_index=len(node.input))
    if draft is None:
        return None
    kernel = _entry(draft, "kernel")
    for entry in draft.tensors:
        entry.trainable = None
    if kernel is None:
        return draft
    channels = kernel.constant.shape[0] if kernel.constant.shape else 0
    _scale_and_bias(reader, scope, node, draft, kernel, axis=0, channels=channels)
    return draft


def _matmul_integer(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    if len(node.input) < 2:
        return None
    found = _constant_right_operand(scope, node, 1, {})
    if found is None:
        return None
    draft, entry = found
    weight = entry.constant
    channels = weight.shape[-1] if weight.shape else 0
    _scale_and_bias(reader, scope, node, draft, entry, axis=-1, channels=channels)
    return draft


def _scale_and_bias(
    reader: GraphReader,
    scope: Scope,
    node: NodeProto,
    draft: LayerDraft,
    kernel: Entry,
    axis: int,
    channels: int,
) -> None:
    zero_point = _input(scope, node, 3)
    mul, scale, computing, runtime_bias = _scaling(reader, scope, node)
    missing = None
    if scale is not None and scale.size == channels and len(scale.shape) > 1:
        scale = _as_vector(scale)
    if zero_point is not None and zero_point.size == channels and len(zero_point.shape) > 1:
        zero_point = _as_vector(zero_point)
    if scale is None:
        missing = (
            "no Mul scales the integer result"
            if mul is None
            else f"{_label(mul)} scales it by a value computed at run time"
        )
    elif not _is_float_or_complex(scale):
        missing = f"{_label(mul)} scales it by the integer '{scale.name}'"  # type: ignore[arg-type]
        scale = None
    _quantize_entry(draft, kernel, scale, zero_point, axis, missing=missing)
    if mul is not None and scale is not None:
        reader.folded.update(id(n) for n in computing)
        draft.notes.append(f"scale from {_label(mul)}")
    if runtime_bias is not None:
        constant, div, add = runtime_bias
        if constant.size == channels:
            reader.folded.update((id(add), id(div)))
            divisor = scope.producer(div.input[1])
            sole = scope.sole_reader(div.input[1]) is div
            if divisor is not None and divisor.op_type == "Mul" and sole:
                reader.folded.add(id(divisor))
            layout = _layout(node, "bias", 1, draft.kind, None)
            vector = constant if len(constant.shape) == 1 else _as_vector(constant)
            draft.tensors.append(Entry("bias", vector, layout, None, True))
            draft.notes.append(
                f"bias '{constant.name}' quantized at run time (divided by x_scale * w_scale, "
                f"rounded down) and added to the integers by {_label(add)}"
            )
            return
    if mul is None or draft.kind == "unknown":
        return
    found = _bias_add(reader, scope, mul)
    if found is None:
        return
    add, bias = found
    stored = bias.constant.shape
    if node.op_type == "ConvInteger":
        fits = _per_channel(stored, channels, len(kernel.constant.shape) - 2)
    else:
        fits = bool(stored) and stored[-1] == channels and all(d == 1 for d in stored[:-1])
    if not fits:
        return
    reader.folded.add(id(add))
    if len(stored) != 1:
        bias = replace(bias, constant=_as_vector(bias.constant))
    layout = _layout(node, "bias", 1, draft.kind, None)
    reader.add(draft, "bias", bias, layout, trainable=None)
    draft.notes.append(f"bias from {_label(add)} after the scaling")


# ---------------------------------------------------------------------------------------------
# MatMulNBits


def _matmul_nbits(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    attrs = attributes(node)
    packed, scales = _input(scope, node, 1), _input(scope, node, 2)
    zero_points = _input(scope, node, 3)
    if packed is None or _input(scope, node, 0) is not None:
        return None
    sizes = {key: attrs.get(key) for key in ("K", "N", "bits", "block_size")}
    sizes["bits"] = sizes["bits"] if sizes["bits"] is not None else 4
    problem = _nbits_problem(sizes, packed, scales, zero_points)
    if problem is not None:
        reader.node_notes.setdefault(id(node), []).append(problem)
        return None
    k, n, bits, block = (int(sizes[key]) for key in ("K", "N", "bits", "block_size"))  # type: ignore[call-overload]
    blocks = -(-k // block)
    draft = LayerDraft(node, scope, "dense", config=_plain_config(node))
    assert scales is not None
    stored = UnpackedBits(packed.source, n, k, bits)
    scale_table = Reshaped(scales.source, (n, blocks))
    if zero_points is None:
        zero: object = ArraySource(np.full((n, blocks), 1 << (bits - 1), np.uint8))
    elif zero_points.dtype == "uint8":
        zero = UnpackedBits(zero_points.source, n, blocks, bits)
    else:
        zero = Reshaped(zero_points.source, (n, blocks))
    quantization = Quantization(
        stored=stored,
        scale=scale_table,
        zero_point=zero,  # type: ignore[arg-type]
        axis=1,
        block_size=block,
        scale_name=scales.name,
        zero_point_name=None if zero_points is None else zero_points.name,
    )
    layout = _layout(node, "kernel", 2, "dense", layouts.NBITS)
    dtype = f"uint{bits}"
    draft.tensors.append(
        Entry(
            "kernel",
            packed,
            layout,
            None,
            True,
            quantization=quantization,
            shape=(n, k),
            dtype=dtype,
        )
    )
    add_parameters(draft, "kernel", scales, zero_points)
    default = "" if zero_points is not None else f", zero point {1 << (bits - 1)}"
    draft.notes.append(
        f"kernel: {bits}-bit integers packed in bytes (lowest bits first), {n} x {k} unpacked, "
        f"one scale per block of {block} along K{default}; {n * k:,} integers counted"
    )
    if len(node.input) > 5 and node.input[5]:
        bias = _input(scope, node, 5)
        if bias is None:
            _runtime(draft, "bias", node.input[5])
        else:
            draft.tensors.append(Entry("bias", bias, None, None, True))
    return draft


def _nbits_problem(
    sizes: dict[str, object],
    packed: Constant,
    scales: Constant | None,
    zero_points: Constant | None,
) -> str | None:
    """Why ``MatMulNBits``' attributes do not fit the tensors it stores."""
    for key, value in sizes.items():
        if not isinstance(value, int) or value <= 0:
            return f"attribute {key} = {value!r} is not a positive integer"
    k, n, bits, block = (int(sizes[key]) for key in ("K", "N", "bits", "block_size"))  # type: ignore[call-overload]
    if bits not in (2, 4, 8):
        return f"{bits}-bit integers are not read (2, 4 or 8)"
    if block * bits % 8:
        return f"blocks of {block} {bits}-bit integers do not fill whole bytes"
    blocks = -(-k // block)
    expected = (n, blocks, block * bits // 8)
    if packed.dtype != "uint8" or packed.shape != expected:
        return (
            f"B {packed.dtype} {packed.shape} is not uint8 {expected} for N={n}, K={k}, "
            f"{bits} bits in blocks of {block}"
        )
    if scales is None or scales.size != n * blocks:
        found = None if scales is None else scales.shape
        return f"scales {found} are not one per block ({n} x {blocks})"
    if zero_points is not None:
        packed_size = n * -(-blocks * bits // 8)
        wanted = packed_size if zero_points.dtype == "uint8" else n * blocks
        if zero_points.size != wanted:
            return f"zero points {zero_points.shape} are not {wanted} values"
    return None


HANDLERS: dict[str, Handler] = {
    "QLinearConv": _qlinear_conv,
    "QLinearMatMul": _qlinear_matmul,
    "ConvInteger": _conv_integer,
    "MatMulInteger": _matmul_integer,
}
CONTRIB_HANDLERS: dict[str, Handler] = {
    "QGemm": _qgemm,
    "DynamicQuantizeLSTM": recurrent,
    "MatMulNBits": _matmul_nbits,
    "QAttention": _qattention,
}
