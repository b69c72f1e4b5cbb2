"""The one table of native weight layouts and the single function that maps them to canonical.

``USES`` lists every tensor of every layer class (ONNX: operator) weightscope reads, with the
layout its framework stores it in; the adapters look their layouts up there (``native_layout``),
``LAYOUTS`` groups the entries by layout, and ``weightscope layouts`` prints them.

A layout is a string with one letter per stored axis:

- ``O`` output channels, ``I`` input channels, ``M`` depth multiplier (depthwise kernels),
- ``D``, ``H``, ``W`` spatial axes (1-D kernels use ``W``, 3-D ``DHW``),
- ``C`` the single axis of a per-channel vector (bias, batch-norm statistics), ``N`` an axis of
  size 1 that broadcasts such a vector (a bias stored as a ``(1, C)`` row, or, by whisper.cpp's
  GGUF files, as a ``(C, 1)`` column),
- ``V``/``E`` vocabulary and embedding width of an embedding table,
- a recurrent layer's gates as one stored axis, written as the gates in braces in the order the
  framework stores them (``{ifco}``: a Keras LSTM's ``4 * units`` columns, gate ``i`` first);
  ``G`` and ``U`` the gate and unit axes such an axis splits into. A trailing ``[UI]`` says
  that each gate's ``(in, units)`` block holds that gate's ``(units, in)`` matrix row-major
  (cuDNN's packing, kept by Keras 2's CuDNN layers): its memory, not its axes, is the matrix.

Canonical layouts are ``O I *spatial`` for every convolution (``OIHW`` in 2-D), ``OI`` for dense
kernels, ``GUI`` (gates, units, inputs) for recurrent kernels and ``GU`` for recurrent biases,
the gates in the order of :data:`CANONICAL_GATES`, and the vector and embedding layouts
unchanged. In canonical form the ``I`` axis of a convolution always counts input channels *per
group*, and entry ``[o, i, ...]`` is the weight connecting input channel ``g * in_per_group + i``
to output channel ``o`` (``g = o // out_per_group``), from the layer's own point of view, also
for transposed convolutions. Entry ``[g, u, i]`` of a recurrent kernel is the weight from input
``i`` (the recurrent kernel: unit ``i`` of the previous step's state) to unit ``u`` of gate
``g``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SPATIAL = "DHW"
FRAMEWORKS = ("keras", "pytorch", "onnx", "tflite", "gguf")
FRAMEWORK_NAMES = {
    "keras": "Keras", "pytorch": "PyTorch", "onnx": "ONNX", "tflite": "TFLite", "gguf": "GGUF",
}  # fmt: skip

AXIS_LETTERS = {
    "O": "output channels",
    "I": "input channels",
    "M": "depth multiplier (output channels per input channel of a depthwise kernel)",
    "D": "kernel depth",
    "H": "kernel height",
    "W": "kernel width",
    "C": "channels of a per-channel vector",
    "N": "an axis of size 1 (a vector stored as a row or a column)",
    "V": "vocabulary size",
    "E": "embedding width",
    "G": "gates of a recurrent layer, in canonical order",
    "U": "units of a recurrent layer (its state's width)",
}

CANONICAL_GATES = {"lstm": "ifgo", "gru": "zrn", "simple_rnn": "h"}
"""The canonical gate order of each recurrent kind: LSTM input, forget, cell candidate, output
(Keras and PyTorch store them so); GRU update, reset, new state (Keras and ONNX store them so)."""

GATE_NAMES = {
    "i": "input gate",
    "f": "forget gate",
    "g": "cell candidate",
    "o": "output gate",
    "z": "update gate",
    "r": "reset gate",
    "n": "candidate state",
    "h": "new state",
}
"""The gates by their canonical letter."""

_GATE_SYNONYMS = {"lstm": {"c": "g"}, "gru": {"h": "n"}, "simple_rnn": {}}
"""Frameworks' own letters for a canonical gate: Keras and ONNX call the LSTM's cell candidate
``c``, Keras and ONNX the GRU's candidate state ``h``."""

# conditions of entries that the adapters pass to ``native_layout`` (the rest of ``when`` is
# information: the layer kind, or the rank of the tensor, already tells those entries apart)
GEMM_TRANS_B = "transB=1"
GEMM_NO_TRANS_B = "transB=0"
MATMUL_CONSTANT_B = "constant B: x @ B"
MATMUL_CONSTANT_A = "constant A: A @ x"


@dataclass(frozen=True)
class Use:
    """One tensor of one layer class (ONNX: one operator) that a framework stores in ``layout``."""

    framework: str
    """``keras``, ``pytorch``, ``onnx`` or ``tflite``."""
    owner: str
    """The Keras or PyTorch layer class, or the ONNX operator."""
    tensor: str
    """The framework's own name for the tensor: Keras variable, PyTorch attribute, ONNX input."""
    role: str
    """weightscope's name for it (``Tensor.role``)."""
    kind: str
    """The weightscope layer kind the owner becomes (``Layer.kind``)."""
    layout: str
    when: str = ""
    """The condition under which this entry applies, where the owner, role and kind alone do not
    say (``transB=0``); empty when it always does."""

    def __str__(self) -> str:
        tensor = self.tensor if self.tensor == self.role else f"{self.tensor} ({self.role})"
        when = f" [{self.when}]" if self.when else ""
        return f"{FRAMEWORK_NAMES[self.framework]} {self.owner} {tensor}{when}"


def _keras(owner: str, kind: str, **layouts: str) -> tuple[Use, ...]:
    """Keras variables are named by their role."""
    return tuple(Use("keras", owner, role, role, kind, layout) for role, layout in layouts.items())


def _torch(
    owners: Iterable[str], kind: str, layouts: dict[tuple[str, str], str], when: str = ""
) -> tuple[Use, ...]:
    """``layouts``: (attribute, role) -> layout, the same for each class of ``owners``."""
    return tuple(
        Use("pytorch", owner, attr, role, kind, layout, when)
        for owner in owners
        for (attr, role), layout in layouts.items()
    )


def _onnx(
    owner: str, kind: str, layouts: dict[tuple[str, str], str], when: str = ""
) -> tuple[Use, ...]:
    """``layouts``: (input name in the operator's specification, role) -> layout."""
    return tuple(
        Use("onnx", owner, name, role, kind, layout, when)
        for (name, role), layout in layouts.items()
    )


TFLITE_ADD_BIAS = "ADD after a conv without bias"


def _tflite(owner: str, kind: str, kernel: str, layout: str) -> tuple[Use, ...]:
    """A TFLite operator's constant weight input (``filter``/``weights``) and its ``bias``."""
    return (
        Use("tflite", owner, kernel, "kernel", kind, layout),
        Use("tflite", owner, "bias", "bias", kind, "C"),
    )


GGUF_COLUMN = "a (C, 1) column: GGML ne (1, C)"


def _gguf(
    owner: str, kind: str, layouts: dict[tuple[str, str], str], when: str = ""
) -> tuple[Use, ...]:
    """``layouts``: (the tensor's name suffix and its GGML dims, role) -> layout of its
    numpy-order shape (GGML's ``ne`` reversed: ``ne0``, the innermost axis, comes last)."""
    return tuple(
        Use("gguf", owner, name, role, kind, layout, when)
        for (name, role), layout in layouts.items()
    )


def _recurrent(
    framework: str,
    owners: Iterable[str],
    kind: str,
    layouts: dict[tuple[str, str], str],
    when: str = "",
) -> tuple[Use, ...]:
    """``layouts``: (the framework's tensor name, role) -> layout."""
    return tuple(
        Use(framework, owner, name, role, kind, layout, when)
        for owner in owners
        for (name, role), layout in layouts.items()
    )


def _keras_rnn(gates: str) -> dict[tuple[str, str], str]:
    return {
        ("kernel", "kernel"): f"I{{{gates}}}",
        ("recurrent_kernel", "recurrent_kernel"): f"I{{{gates}}}",
    }


def _cudnn_rnn(gates: str) -> dict[tuple[str, str], str]:
    return {
        ("kernel", "kernel"): f"I{{{gates}}}{CUDNN_PACKED}",
        ("recurrent_kernel", "recurrent_kernel"): f"I{{{gates}}}{CUDNN_PACKED}",
    }


def _keras_bias(gates: str, *names: str) -> dict[tuple[str, str], str]:
    roles = ("bias", "recurrent_bias")
    return {(name, role): f"{{{gates}}}" for name, role in zip(names, roles, strict=False)}


def _torch_rnn(gates: str) -> dict[tuple[str, str], str]:
    return {
        ("weight_ih_l{k}", "kernel"): f"{{{gates}}}I",
        ("weight_hh_l{k}", "recurrent_kernel"): f"{{{gates}}}I",
        ("bias_ih_l{k}", "bias"): f"{{{gates}}}",
        ("bias_hh_l{k}", "recurrent_bias"): f"{{{gates}}}",
    }


def _onnx_rnn(gates: str) -> dict[tuple[str, str], str]:
    return {
        ("W[d]", "kernel"): f"{{{gates}}}I",
        ("R[d]", "recurrent_kernel"): f"{{{gates}}}I",
        ("B[d, :gates*units]", "bias"): f"{{{gates}}}",
        ("B[d, gates*units:]", "recurrent_bias"): f"{{{gates}}}",
    }


CUDNN_PACKED = "[UI]"
"""Suffix of a gate layout whose gate blocks hold ``(units, in)`` matrices row-major."""


def _torch_cells(gates: str) -> dict[tuple[str, str], str]:
    """A dynamic quantized LSTM's or GRU's packed cells, one per layer and direction."""
    return {
        ("_all_weight_values.{n}.param.weight_ih", "kernel"): f"{{{gates}}}I",
        ("_all_weight_values.{n}.param.weight_hh", "recurrent_kernel"): f"{{{gates}}}I",
        ("_all_weight_values.{n}.param.bias_ih", "bias"): f"{{{gates}}}",
        ("_all_weight_values.{n}.param.bias_hh", "recurrent_bias"): f"{{{gates}}}",
    }


TORCH_QUANTIZED = "qint8 weight: scale per tensor or per output channel"
TORCH_CELLS = "n = layer * directions + direction; qint8 weights, scale per tensor"
RESET_AFTER = "reset_after=True: a (2, 3*units) bias"
RESET_BEFORE = "reset_after=False"
TORCH_DIRECTIONS = "l{k}: layer k; _reverse: backward"
ONNX_DIRECTIONS = "d: direction, 1 backward"


def _weight_bias(kernel: str) -> dict[tuple[str, str], str]:
    return {("weight", "kernel"): kernel, ("bias", "bias"): "C"}


_TORCH_NORM = {("weight", "gamma"): "C", ("bias", "beta"): "C"}
_TORCH_STATS = {("running_mean", "moving_mean"): "C", ("running_var", "moving_variance"): "C"}
_DEPTHWISE = "groups = in_channels"
_ONNX_DEPTHWISE = "group = input channels"
_ROW = "a (1, C) row"
ONNX_CONV_ADD_BIAS = "Add after a conv without B"


INTEGER_BIAS = "Add after the integer op's scaling"
NBITS = "unpacked from (N, blocks, blob) bytes to (N, K)"


def _onnx_convs(owner: str, kernel: str, bias: str) -> tuple[Use, ...]:
    """An integer convolution's (``ConvInteger``) bias is the constant added after it."""
    uses: list[Use] = []
    added = owner == "ConvInteger"
    for dims, layout in ((1, "OIW"), (2, "OIHW"), (3, "OIDHW")):
        for kind, when in ((f"conv{dims}d", ""), (f"depthwise_conv{dims}d", _ONNX_DEPTHWISE)):
            uses += _onnx(owner, kind, {(kernel, "kernel"): layout}, when)
            bias_when = ", ".join(w for w in (when, INTEGER_BIAS if added else "") if w)
            uses += _onnx(owner, kind, {(bias, "bias"): "C"}, bias_when)
    return tuple(uses)


def _onnx_add_biases() -> tuple[Use, ...]:
    """The bias a ``Conv`` or ``ConvTranspose`` without ``B`` takes from the ``Add`` after it."""
    added = {("Add's constant", "bias"): "C"}
    uses: list[Use] = []
    for dims in (1, 2, 3):
        uses += _onnx("Conv", f"conv{dims}d", added, ONNX_CONV_ADD_BIAS)
        uses += _onnx(
            "Conv", f"depthwise_conv{dims}d", added, f"{_ONNX_DEPTHWISE}, {ONNX_CONV_ADD_BIAS}"
        )
        uses += _onnx("ConvTranspose", f"conv_transpose{dims}d", added, ONNX_CONV_ADD_BIAS)
    return tuple(uses)


USES: tuple[Use, ...] = (
    # Keras / TensorFlow: (*k, in, out) kernels, (*k, out, in) transposed, (*k, in, M) depthwise
    *_keras("Conv1D", "conv1d", kernel="WIO", bias="C"),
    *_keras("Conv2D", "conv2d", kernel="HWIO", bias="C"),
    *_keras("Conv3D", "conv3d", kernel="DHWIO", bias="C"),
    *_keras("Conv1DTranspose", "conv_transpose1d", kernel="WOI", bias="C"),
    *_keras("Conv2DTranspose", "conv_transpose2d", kernel="HWOI", bias="C"),
    *_keras("Conv3DTranspose", "conv_transpose3d", kernel="DHWOI", bias="C"),
    # Keras 2 names a depthwise layer's kernel ``depthwise_kernel``; its role is ``kernel``
    *_keras("DepthwiseConv1D", "depthwise_conv1d", kernel="WIM", bias="C"),
    *_keras("DepthwiseConv2D", "depthwise_conv2d", kernel="HWIM", bias="C"),
    *_keras(
        "SeparableConv1D", "separable_conv1d",
        depthwise_kernel="WIM", pointwise_kernel="WIO", bias="C",
    ),
    *_keras(
        "SeparableConv2D", "separable_conv2d",
        depthwise_kernel="HWIM", pointwise_kernel="HWIO", bias="C",
    ),
    *_keras("Dense", "dense", kernel="IO", bias="C"),
    *_keras(
        "BatchNormalization", "batch_norm",
        gamma="C", beta="C", moving_mean="C", moving_variance="C",
    ),
    *_keras("LayerNormalization", "layer_norm", gamma="C", beta="C"),
    *_keras("Embedding", "embedding", embeddings="VE"),
    # Keras recurrent: (in, gates*units) kernels, (units, gates*units) recurrent kernels
    *_recurrent("keras", ["LSTM"], "lstm", {**_keras_rnn("ifco"), **_keras_bias("ifco", "bias")}),
    *_recurrent("keras", ["GRU"], "gru", _keras_rnn("zrh")),
    *_recurrent("keras", ["GRU"], "gru", _keras_bias("zrh", "bias"), RESET_BEFORE),
    *_recurrent("keras", ["GRU"], "gru", _keras_bias("zrh", "bias[0]", "bias[1]"), RESET_AFTER),
    # Keras 2's CuDNN layers: each gate's (in, units) block holds cuDNN's (units, in) matrix
    *_recurrent(
        "keras", ["CuDNNLSTM"], "lstm",
        {**_cudnn_rnn("ifco"), **_keras_bias("ifco", "bias[:4*units]", "bias[4*units:]")},
    ),
    *_recurrent(
        "keras", ["CuDNNGRU"], "gru",
        {**_cudnn_rnn("zrh"), **_keras_bias("zrh", "bias[:3*units]", "bias[3*units:]")},
    ),
    *_recurrent(
        "keras", ["SimpleRNN"], "simple_rnn", {**_keras_rnn("h"), **_keras_bias("h", "bias")}
    ),
    # PyTorch: (out, in/groups, *k) kernels, (in, out/groups, *k) transposed, (out, in) linear
    *_torch(["Conv1d"], "conv1d", _weight_bias("OIW")),
    *_torch(["Conv2d"], "conv2d", _weight_bias("OIHW")),
    *_torch(["Conv2d"], "depthwise_conv2d", _weight_bias("OIHW"), _DEPTHWISE),
    *_torch(["Conv3d"], "conv3d", _weight_bias("OIDHW")),
    *_torch(["ConvTranspose1d"], "conv_transpose1d", _weight_bias("IOW")),
    *_torch(["ConvTranspose2d"], "conv_transpose2d", _weight_bias("IOHW")),
    *_torch(["ConvTranspose3d"], "conv_transpose3d", _weight_bias("IODHW")),
    *_torch(
        ["Linear", "LazyLinear", "NonDynamicallyQuantizableLinear"], "dense", _weight_bias("OI")
    ),
    *_torch(
        ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"], "batch_norm",
        {**_TORCH_NORM, **_TORCH_STATS},
    ),
    *_torch(["LayerNorm"], "layer_norm", _TORCH_NORM),
    *_torch(["Embedding"], "embedding", {("weight", "embeddings"): "VE"}),
    # PyTorch recurrent: (gates*hidden, in) weights, two biases, a tensor per layer and direction
    *_recurrent("pytorch", ["LSTM"], "lstm", _torch_rnn("ifgo"), TORCH_DIRECTIONS),
    *_recurrent(
        "pytorch", ["LSTM"], "lstm", {("weight_hr_l{k}", "projection"): "OI"}, "proj_size > 0"
    ),
    *_recurrent("pytorch", ["GRU"], "gru", _torch_rnn("rzn"), TORCH_DIRECTIONS),
    *_recurrent("pytorch", ["RNN"], "simple_rnn", _torch_rnn("h"), TORCH_DIRECTIONS),
    # PyTorch quantized (torch.ao.nn.quantized): int8 weights in the float layouts, scales per
    # tensor or per output channel; a Linear keeps (weight, bias) packed
    *_torch(["quantized.Conv1d"], "conv1d", _weight_bias("OIW"), TORCH_QUANTIZED),
    *_torch(["quantized.Conv2d"], "conv2d", _weight_bias("OIHW"), TORCH_QUANTIZED),
    *_torch(
        ["quantized.Conv2d"], "depthwise_conv2d", _weight_bias("OIHW"),
        f"{_DEPTHWISE}, {TORCH_QUANTIZED}",
    ),
    *_torch(["quantized.Conv3d"], "conv3d", _weight_bias("OIDHW"), TORCH_QUANTIZED),
    *_torch(
        ["quantized.Linear", "quantized.dynamic.Linear"], "dense",
        {("_packed_params._packed_params.0", "kernel"): "OI",
         ("_packed_params._packed_params.1", "bias"): "C"},
        TORCH_QUANTIZED,
    ),
    *_recurrent(
        "pytorch", ["quantized.dynamic.LSTM"], "lstm", _torch_cells("ifgo"), TORCH_CELLS
    ),
    *_recurrent("pytorch", ["quantized.dynamic.GRU"], "gru", _torch_cells("rzn"), TORCH_CELLS),
    # ONNX: convolutions as PyTorch stores them (inputs named as in the operator specification)
    *_onnx_convs("Conv", "W", "B"),
    *_onnx("ConvTranspose", "conv_transpose1d", {("W", "kernel"): "IOW", ("B", "bias"): "C"}),
    *_onnx("ConvTranspose", "conv_transpose2d", {("W", "kernel"): "IOHW", ("B", "bias"): "C"}),
    *_onnx("ConvTranspose", "conv_transpose3d", {("W", "kernel"): "IODHW", ("B", "bias"): "C"}),
    *_onnx_add_biases(),
    *_onnx_convs("QLinearConv", "w", "B"),
    *_onnx("Gemm", "dense", {("B", "kernel"): "OI"}, GEMM_TRANS_B),
    *_onnx("Gemm", "dense", {("B", "kernel"): "IO"}, GEMM_NO_TRANS_B),
    *_onnx("Gemm", "dense", {("C", "bias"): "C"}),
    *_onnx("Gemm", "dense", {("C", "bias"): "NC"}, _ROW),
    *_onnx("MatMul", "dense", {("B", "kernel"): "IO"}, MATMUL_CONSTANT_B),
    *_onnx("MatMul", "dense", {("A", "kernel"): "OI"}, MATMUL_CONSTANT_A),
    *_onnx("MatMul", "dense", {("Add's constant", "bias"): "C"}, "Add after x @ B"),
    *_onnx("MatMul", "dense", {("Add's constant", "bias"): "NC"}, f"Add after x @ B, {_ROW}"),
    *_onnx(
        "BatchNormalization", "batch_norm",
        {("scale", "gamma"): "C", ("B", "beta"): "C", ("input_mean", "moving_mean"): "C",
         ("input_var", "moving_variance"): "C"},
    ),
    *_onnx("LayerNormalization", "layer_norm", {("Scale", "gamma"): "C", ("B", "beta"): "C"}),
    *_onnx("Gather", "embedding", {("data", "embeddings"): "VE"}, "constant table, axis 0"),
    # ONNX recurrent: (directions, gates*hidden, in) weights, both biases in one B
    *_recurrent("onnx", ["LSTM"], "lstm", _onnx_rnn("iofc"), ONNX_DIRECTIONS),
    *_recurrent("onnx", ["GRU"], "gru", _onnx_rnn("zrh"), ONNX_DIRECTIONS),
    *_recurrent("onnx", ["RNN"], "simple_rnn", _onnx_rnn("h"), ONNX_DIRECTIONS),
    # ONNX integer ops (weights stored as integers; their scales and zero points beside them)
    *_onnx_convs("ConvInteger", "w", "Add's constant"),
    *_onnx("MatMulInteger", "dense", {("B", "kernel"): "IO"}, MATMUL_CONSTANT_B),
    *_onnx("MatMulInteger", "dense", {("Add's constant", "bias"): "C"}, INTEGER_BIAS),
    *_onnx("QLinearMatMul", "dense", {("b", "kernel"): "IO"}, MATMUL_CONSTANT_B),
    # onnxruntime's contrib operators (domain com.microsoft)
    *_onnx("QGemm", "dense", {("B", "kernel"): "OI"}, GEMM_TRANS_B),
    *_onnx("QGemm", "dense", {("B", "kernel"): "IO"}, GEMM_NO_TRANS_B),
    *_onnx("QGemm", "dense", {("C", "bias"): "C"}),
    *_onnx("MatMulNBits", "dense", {("B", "kernel"): "OI"}, NBITS),
    # the input projection of an attention: (in, 3*hidden), columns Q, K, V
    *_onnx("QAttention", "dense", {("weight", "kernel"): "IO", ("bias", "bias"): "C"}),
    *_recurrent(
        "onnx", ["DynamicQuantizeLSTM"], "lstm",
        {("W[d]", "kernel"): "I{iofc}", ("R[d]", "recurrent_kernel"): "I{iofc}",
         **{k: v for k, v in _onnx_rnn("iofc").items() if k[1].endswith("bias")}},
        ONNX_DIRECTIONS,
    ),
    # TFLite: convs output-first with channels last (CONV_3D's are TensorFlow's own); a
    # depthwise filter (1, kh, kw, in*M) is already (in/groups = 1, *k, out) with output
    # channel c*M + m; a transposed conv's filter is (out, kh, kw, in); a fully connected one
    # (out, in)
    *_tflite("CONV_2D", "conv2d", "filter", "OHWI"),
    *_tflite("DEPTHWISE_CONV_2D", "depthwise_conv2d", "filter", "IHWO"),
    *_tflite("TRANSPOSE_CONV", "conv_transpose2d", "weights", "OHWI"),
    *_tflite("CONV_3D", "conv3d", "filter", "DHWIO"),
    Use("tflite", "CONV_3D", "ADD's constant", "bias", "conv3d", "C", TFLITE_ADD_BIAS),
    *_tflite("FULLY_CONNECTED", "dense", "weights", "OI"),
    # a 3-D transposed conv's filter is TensorFlow's own (kd, kh, kw, out, in); the converter
    # adds a Keras Conv3DTranspose's bias with an ADD after it, as for CONV_3D
    *_tflite("CONV_3D_TRANSPOSE", "conv_transpose3d", "filter", "DHWOI"),
    Use(
        "tflite", "CONV_3D_TRANSPOSE", "ADD's constant", "bias", "conv_transpose3d", "C",
        TFLITE_ADD_BIAS,
    ),
    # an embedding: a GATHER along axis 0 of a constant 2-D table by run-time indices
    Use("tflite", "GATHER", "params", "embeddings", "embedding", "VE"),
    # GGUF: the layouts of numpy-order shapes, GGML's ne reversed (ne0 is the innermost axis,
    # numpy's last); the tensor is named by its suffix and GGML dims, the owner by the GGML op
    # that uses it. Converters write PyTorch's tensors as they are, so the layouts are its own.
    *_gguf("ggml_mul_mat", "dense", {("weight ne=(in, out)", "kernel"): "OI"}),
    *_gguf("ggml_mul_mat", "dense", {("bias ne=(out)", "bias"): "C"}),
    *_gguf("ggml_get_rows", "embedding", {("weight ne=(width, vocabulary)", "embeddings"): "VE"}),
    *_gguf(
        "ggml_norm", "layer_norm",
        {("weight ne=(C)", "gamma"): "C", ("bias ne=(C)", "beta"): "C"},
    ),
    *_gguf("ggml_conv_1d", "conv1d", {("weight ne=(k, in, out)", "kernel"): "OIW"}),
    *_gguf("ggml_conv_1d", "conv1d", {("bias ne=(out)", "bias"): "C"}),
    *_gguf("ggml_conv_1d", "conv1d", {("bias ne=(1, out)", "bias"): "CN"}, GGUF_COLUMN),
    *_gguf("ggml_conv_2d", "conv2d", {("weight ne=(kw, kh, in, out)", "kernel"): "OIHW"}),
    *_gguf("ggml_conv_2d", "conv2d", {("bias ne=(out)", "bias"): "C"}),
)  # fmt: skip
"""Every (framework, layer class or operator, tensor) weightscope reads, with its native layout:
the adapters look their layouts up here (``native_layout``), so this is what they produce."""


@dataclass(frozen=True)
class Layout:
    """How one native layout is laid out, and where it comes from."""

    axes: str
    grouped_axis: str
    """Which channel axis holds channels per group when ``groups > 1``: ``I`` for ordinary convs
    (all frameworks), ``O`` for transposed convs stored input-first (PyTorch, ONNX)."""
    used_by: tuple[Use, ...]
    """The entries of ``USES`` stored in this layout."""

    @property
    def canonical(self) -> str:
        return canonical_layout(self.axes)

    @property
    def used_by_text(self) -> str:
        """``used_by`` in words: ``Keras Conv2D kernel; Keras SeparableConv2D pointwise_kernel``."""
        return "; ".join(dict.fromkeys(str(use) for use in self.used_by))


def _layout(axes: str, grouped_axis: str = "I") -> tuple[str, Layout]:
    return axes, Layout(axes, grouped_axis, tuple(u for u in USES if u.layout == axes))


LAYOUTS: dict[str, Layout] = dict(
    [
        # canonical, also PyTorch / ONNX Conv and Linear
        _layout("OIW"),
        _layout("OIHW"),
        _layout("OIDHW"),
        _layout("OI"),
        # Keras / TensorFlow ordinary convs and dense
        _layout("WIO"),
        _layout("HWIO"),
        _layout("DHWIO"),
        _layout("IO"),
        # Keras transposed convs: (*k, filters, in)
        _layout("WOI"),
        _layout("HWOI"),
        _layout("DHWOI"),
        # PyTorch / ONNX transposed convs: (in, out/groups, *k)
        _layout("IOW", "O"),
        _layout("IOHW", "O"),
        _layout("IODHW", "O"),
        # Keras depthwise kernels: (*k, in, depth_multiplier); output channel o = c * M + m
        _layout("WIM"),
        _layout("HWIM"),
        # TFLite convs: output channels first, input channels last; depthwise (1, *k, in*M)
        _layout("OHWI"),
        _layout("IHWO"),
        # vectors and tables: already canonical
        _layout("C"),
        _layout("NC"),
        _layout("CN"),
        _layout("VE"),
        # recurrent kernels and biases: gates * units on one axis, in each framework's order
        *(_layout(gated) for gated in dict.fromkeys(u.layout for u in USES if "{" in u.layout)),
    ]
)


def uses(
    framework: str | None = None, owner: str | None = None, kind: str | None = None
) -> tuple[Use, ...]:
    """The entries of ``USES`` that match every argument given."""
    return tuple(
        u
        for u in USES
        if (framework is None or u.framework == framework)
        and (owner is None or u.owner == owner)
        and (kind is None or u.kind == kind)
    )


@lru_cache(maxsize=256)
def axes_of(layout: str) -> tuple[str, ...]:
    """The stored axes of a layout: its letters, a gate axis (``{ifco}``) as one (a packing
    suffix, ``[UI]``, is none)."""
    axes: list[str] = []
    rest = layout.removesuffix(CUDNN_PACKED)
    while rest:
        if rest[0] == "{":
            end = rest.find("}")
            if end < 2:
                raise ValueError(f"layout {layout!r}: unclosed or empty gate axis")
            axes.append(rest[: end + 1])
            rest = rest[end + 1 :]
        else:
            axes.append(rest[0])
            rest = rest[1:]
    return tuple(axes)


def rank(layout: str) -> int:
    """How many axes a tensor in ``layout`` has."""
    return len(axes_of(layout))


_rank = rank  # ``native_layout``'s argument ``rank`` hides the function


def gate_axis(layout: str) -> tuple[int, str] | None:
    """Where a recurrent layout keeps its gates and their stored order (``I{ifco}`` ->
    ``(1, "ifco")``); None for other layouts."""
    for index, axis in enumerate(axes_of(layout)):
        if axis.startswith("{"):
            return index, axis[1:-1]
    return None


def gate_family(gates: str) -> str:
    """The recurrent kind a stored gate order belongs to: ``lstm``, ``gru`` or ``simple_rnn``."""
    if gates == "h":
        return "simple_rnn"
    if set(gates) <= set("ifgoc"):
        return "lstm"
    if set(gates) <= set("zrhn"):
        return "gru"
    raise ValueError(f"unknown gates {gates!r}")


def canonical_gates(gates: str) -> str:
    """A stored gate order's gates in canonical order and letters (``iofc`` -> ``ifgo``)."""
    family = gate_family(gates)
    named = {_GATE_SYNONYMS[family].get(g, g) for g in gates}
    return "".join(g for g in CANONICAL_GATES[family] if g in named)


def gate_permutation(gates: str) -> tuple[int, ...]:
    """For each canonical gate, its index in the stored order ``gates``."""
    family = gate_family(gates)
    named = [_GATE_SYNONYMS[family].get(g, g) for g in gates]
    if len(set(named)) != len(named):
        raise ValueError(f"gates {gates!r} name a gate twice")
    return tuple(named.index(g) for g in canonical_gates(gates))


@lru_cache(maxsize=1024)
def native_layout(
    framework: str,
    role: str,
    rank: int,
    *,
    owner: str | None = None,
    kind: str | None = None,
    when: str | None = None,
) -> str | None:
    """The layout the table gives a ``rank``-D tensor of ``role``: None where no entry fits.

    Entries are matched on every argument given (``when=""``: only unconditional entries); the
    rank tells a ``C`` bias from an ``NC`` row and a 1-D conv from a 2-D one."""
    found = {
        u.layout
        for u in uses(framework, owner, kind)
        if u.role == role and _rank(u.layout) == rank and (when is None or u.when == when)
    }
    if len(found) > 1:
        raise ValueError(
            f"the layout table is ambiguous for {framework} {owner or kind} {role} ({rank}-D): "
            f"{sorted(found)}"
        )
    return found.pop() if found else None


def axis_words(axes: str) -> tuple[str, ...]:
    """What each axis of a layout in the table counts: ``HWIO`` -> ``(kh, kw, in/groups, out)``.

    Ordinary convs store input channels per group (``in/groups``), transposed ones stored
    input-first output channels per group (``out/groups``); Keras' transposed convs have no
    groups."""
    spec = _lookup(axes)
    conv = any(a in SPATIAL for a in axes) and "M" not in axes
    keras_transposed = conv and axes.endswith("OI")
    gated = gate_axis(axes)
    if gated is not None:
        index, gates = gated
        width = "units" if len(gates) == 1 else f"{len(gates)}*units ({','.join(gates)})"
        if axes.endswith(CUDNN_PACKED):
            width += " cuDNN-packed"
        others = ["in"] * (rank(axes) - 1)
        return (*others[:index], width, *others[index:])
    words = {
        "O": "out/groups" if spec.grouped_axis == "O" else "out",
        "I": "in/groups" if conv and spec.grouped_axis == "I" and not keras_transposed else "in",
        "M": "multiplier",
        "C": "channels",
        "N": "1",
        "V": "vocabulary",
        "E": "width",
    }
    return tuple(words.get(a, f"k{a.lower()}") for a in axes)


def canonical_words(axes: str) -> tuple[str, ...]:
    """``axis_words`` of the canonical form of a native layout; a depthwise kernel's canonical
    form is ``(in*multiplier, 1, *k)``."""
    if "M" in axes:
        return ("in*multiplier", "1", *(f"k{a.lower()}" for a in axes if a in SPATIAL))
    gated = gate_axis(axes)
    if gated is not None:
        gates = ",".join(canonical_gates(gated[1]))
        return (f"gates ({gates})", "units", *(["in"] * (rank(axes) - 1)))
    return axis_words(canonical_layout(axes))


@lru_cache(maxsize=256)
def canonical_layout(axes: str) -> str:
    """The canonical layout string for a native one (``HWIO`` -> ``OIHW``, ``I{ifco}`` ->
    ``GUI``)."""
    if "{" in axes:
        return "GU" + "".join(a for a in axes_of(axes) if not a.startswith("{"))
    if "O" in axes or "M" in axes:
        return "OI" + "".join(a for a in SPATIAL if a in axes)
    return axes.replace("N", "")


def _lookup(layout: str) -> Layout:
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown native layout {layout!r}") from None


def _check_rank(layout: str, shape: Sequence[int]) -> None:
    if len(shape) != rank(layout):
        raise ValueError(
            f"layout {layout} needs a {rank(layout)}-D tensor, got shape {tuple(shape)}"
        )


def _split_gates(layout: str, shape: Sequence[int]) -> tuple[int, int, int]:
    """(gate axis, gates, units) of a recurrent layout's tensor of ``shape``."""
    index, gates = gate_axis(layout)  # type: ignore[misc]
    width = int(shape[index])
    if width % len(gates):
        raise ValueError(f"{layout}: {width} does not split into {len(gates)} gates")
    return index, len(gates), width // len(gates)


def canonical_shape(shape: Sequence[int], layout: str, groups: int = 1) -> tuple[int, ...]:
    """The canonical shape of a tensor of native ``shape`` and ``layout``, without its data."""
    return _canonical_shape(tuple(shape), layout, groups)


@lru_cache(maxsize=4096)
def _canonical_shape(shape: tuple[int, ...], layout: str, groups: int) -> tuple[int, ...]:
    """:func:`canonical_shape`, cached: most tensors of a model share a few shapes (and a file
    may hold 200,000 tensors)."""
    spec = _lookup(layout)
    _check_rank(layout, shape)
    if "{" in layout:
        index, gates, units = _split_gates(layout, shape)
        return (gates, units, *(int(s) for i, s in enumerate(shape) if i != index))
    dims = dict(zip(spec.axes, (int(s) for s in shape), strict=True))
    _check_broadcast_axis(dims.get("N", 1), layout)
    target = spec.canonical
    if "M" in spec.axes:
        return (dims["I"] * dims["M"], 1, *(dims[a] for a in target[2:]))
    if spec.grouped_axis == "O" and groups > 1:
        _check_groups(dims["I"], groups, layout)
        return (dims["O"] * groups, dims["I"] // groups, *(dims[a] for a in target[2:]))
    return tuple(dims[a] for a in target)


def to_canonical(array: np.ndarray, layout: str, groups: int = 1) -> np.ndarray:
    """Convert a native tensor to the canonical layout (returns a view where numpy can).

    ``groups`` matters only for layouts whose ``O`` axis is per group (transposed convs stored
    input-first); ordinary convs already store input channels per group.
    """
    spec = _lookup(layout)
    _check_rank(layout, array.shape)
    target = spec.canonical
    if "{" in layout:
        # (..., gates*units, ...) -> (..., gates, units, ...) in canonical gate order -> (G, U, ...)
        index, gates, units = _split_gates(layout, array.shape)
        permutation = gate_permutation(gate_axis(layout)[1])  # type: ignore[index]
        if layout.endswith(CUDNN_PACKED):  # (in, G*U): each gate's block is (U, in) in memory
            inputs = array.shape[0]
            blocks = array.reshape(inputs, gates, units).transpose(1, 0, 2)
            return blocks.reshape(gates, units, inputs)[list(permutation)]
        shape = array.shape
        split = array.reshape(*shape[:index], gates, units, *shape[index + 1 :])
        if permutation != tuple(range(gates)):
            split = np.take(split, permutation, axis=index)
        rest = [i for i in range(split.ndim) if i not in (index, index + 1)]
        return split.transpose([index, index + 1, *rest])
    if "N" in spec.axes:
        axis = spec.axes.index("N")
        _check_broadcast_axis(array.shape[axis], layout)
        return to_canonical(array.squeeze(axis), spec.axes.replace("N", ""), groups)
    if "M" in spec.axes:
        # (*k, I, M) -> (I, M, *k) -> (I*M, 1, *k): output channel o = c * M + m
        order = [spec.axes.index(a) for a in "IM" + target[2:]]
        moved = array.transpose(order)
        in_channels, multiplier = moved.shape[:2]
        return moved.reshape(in_channels * multiplier, 1, *moved.shape[2:])
    moved = array.transpose([spec.axes.index(a) for a in target])
    if spec.grouped_axis == "O" and groups > 1:
        out_per_group, in_total = moved.shape[:2]
        _check_groups(in_total, groups, layout)
        spatial = moved.shape[2:]
        split = moved.reshape(out_per_group, groups, in_total // groups, *spatial)
        return split.swapaxes(0, 1).reshape(groups * out_per_group, in_total // groups, *spatial)
    return moved


def _check_broadcast_axis(size: int, layout: str) -> None:
    if size != 1:
        raise ValueError(f"{layout}: the N axis must have size 1, not {size}")


def _check_groups(in_total: int, groups: int, layout: str) -> None:
    if in_total % groups:
        raise ValueError(f"{layout}: {in_total} input channels do not split into {groups} groups")
