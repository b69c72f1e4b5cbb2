""".tflite reader: the flatbuffer parsed with checked accessors (never tensorflow), each
operator with constant weights a layer, buffer data located in the file and read lazily.

Layouts come from the one table (``layouts.USES``, TFLite section). Weights behind a
``DEQUANTIZE`` operator (float16 conversion) are the float16 constants it reads; int8/uint8
weights and int32 biases carry their scales and zero points (``Tensor.quantization``). Every
constant no layer takes is listed under an ``unknown`` layer named after its operator."""

from __future__ import annotations

import math
import mmap
from typing import Any

import numpy as np

from weightscope import layouts
from weightscope.dtypes import has_real_values
from weightscope.formats._common.file_region import FileRegionSource, OpenFile, c_strides
from weightscope.formats.protocol import Match, Probe
from weightscope.formats.tflite import ops
from weightscope.formats.tflite.flatbuf import FlatBuffer
from weightscope.formats.tflite.schema import (
    IDENTIFIER,
    ModelInfo,
    OperatorInfo,
    SubGraphInfo,
    TensorInfo,
    parse,
)
from weightscope.kinds import Kind
from weightscope.limits import Limits
from weightscope.model import ArraySource, DequantizedSource, Layer, Model, Quantization, Tensor

FRAMEWORK = "tflite"
TFLITE = "TFLite flatbuffer"

NO_INPUT = 1 << 30
"""The bias input of an operator that has none."""

# operator -> (layer kind, the table's owner, filter input, bias input)
LAYER_OPS: dict[int, tuple[Kind, str, int, int]] = {
    ops.CONV_2D: (Kind.CONV2D, "CONV_2D", 1, 2),
    ops.DEPTHWISE_CONV_2D: (Kind.DEPTHWISE_CONV2D, "DEPTHWISE_CONV_2D", 1, 2),
    ops.TRANSPOSE_CONV: (Kind.CONV_TRANSPOSE2D, "TRANSPOSE_CONV", 1, 3),
    ops.CONV_3D: (Kind.CONV3D, "CONV_3D", 1, 2),
    ops.CONV_3D_TRANSPOSE: (Kind.CONV_TRANSPOSE3D, "CONV_3D_TRANSPOSE", 1, 3),
    ops.FULLY_CONNECTED: (Kind.DENSE, "FULLY_CONNECTED", 1, 2),
    ops.GATHER: (Kind.EMBEDDING, "GATHER", 0, NO_INPUT),
}
ADD_BIAS_KINDS = (Kind.CONV3D, Kind.CONV_TRANSPOSE3D)
"""The converter adds these layers' biases with an ``ADD`` after them."""
KERNEL_ROLES = {Kind.EMBEDDING: "embeddings"}
"""The weight's role where it is not ``kernel``."""

BN_FOLDED = (
    "the TFLite converter folds a following batch normalization into this kernel and bias "
    "(kernel scaled per output channel by gamma / sqrt(var + eps), bias shifted)"
)
FLOAT16 = "weights stored float16, widened to float32 by a DEQUANTIZE operator when run"
INT32_BIAS = "int32 bias quantized with scale = input scale * weight scale, zero point 0"

_NUMPY_TYPES = {
    "float32", "float16", "float64", "int32", "int64", "int16", "int8", "uint8", "uint16",
    "uint32", "uint64", "bool", "bfloat16", "complex64", "complex128",
}  # fmt: skip
_QUANTIZED_TYPES = {"int8", "uint8", "int16", "int32"}


def match(probe: Probe) -> Match | None:
    """The ``TFL3`` identifier at byte 4, or a ``.tflite`` file without it (refused by
    :func:`load`, which says why)."""
    if probe.is_zip:
        return None
    if probe.head[4:8] == IDENTIFIER or probe.path.suffix.lower() == ".tflite":
        return Match(TFLITE, "tflite", probe)
    return None


def match_object(obj: Any) -> bool:
    return False


def load_object(obj: Any, limits: Limits) -> Model:
    raise TypeError("TFLite has no live objects")


def load(match: Match, limits: Limits) -> Model:
    path = match.probe.path
    file = OpenFile(path, TFLITE)
    try:
        with (
            open(path, "rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            view = memoryview(data)
            try:
                info = parse(FlatBuffer(view, file.error))
            finally:
                view.release()
        builder = _Builder(file, info)
        layers, weightless = builder.build()
    except BaseException:
        file.close()
        raise
    notes = [f"TFLite schema version {info.version}"]
    if info.description:
        notes.append(f"description: {info.description}")
    model = Model(path, "tflite", FRAMEWORK, None, layers, weightless, notes=notes)
    model._resources.callback(file.close)
    return model


class _Builder:
    def __init__(self, file: OpenFile, info: ModelInfo) -> None:
        self.file = file
        self.info = info
        self.names: set[str] = set()
        self.read: dict[tuple[int, int], str] = {}
        """(subgraph, tensor) -> the model tensor name it was listed under."""
        self.uses: dict[str, int] = {}
        self.readers: dict[int, list[OperatorInfo]] = {}
        """Tensor -> the operators of the current graph that read it."""
        self.repeats: dict[str, int] = {}
        self.tensor_names: set[str] = set()

    def build(self) -> tuple[list[Layer], list[str]]:
        layers: list[Layer] = []
        weightless: list[str] = []
        several = len(self.info.subgraphs) > 1
        for number, graph in enumerate(self.info.subgraphs):
            prefix = f"{graph.name or f'subgraph_{number}'}/" if several else ""
            layers += self._graph(number, graph, prefix, weightless)
        return layers, weightless

    def _constant(self, tensor: TensorInfo) -> bool:
        return self.info.buffers[tensor.buffer][1] > 0 if self.info.buffers else False

    def _graph(
        self, number: int, graph: SubGraphInfo, prefix: str, weightless: list[str]
    ) -> list[Layer]:
        tensors = graph.tensors
        producer = {out: op for op in graph.operators for out in op.outputs if out >= 0}
        self.readers = {}  # once per graph: a lookup per operator would take quadratic time
        for op in graph.operators:
            for index in dict.fromkeys(op.inputs):
                if index >= 0:
                    self.readers.setdefault(index, []).append(op)
        layers: list[Layer] = []
        taken: set[int] = set()
        for op in graph.operators:
            name = self._op_name(graph, op)
            spec = LAYER_OPS.get(op.code) if op.custom is None else None
            if spec is not None and spec[0] is Kind.EMBEDDING:
                # any other GATHER (of shapes, of activations) is no layer
                spec = spec if self._embedding_lookup(graph, op, producer) else None
            built = None if spec is None else self._layer(number, graph, op, spec, producer, name)
            if built is not None:
                layers.append(built[0])
                taken |= built[1]
            elif spec is not None and not any(
                i >= 0 and self._constant(tensors[i]) for i in op.inputs
            ):  # (its constants, if any, are listed below under the operator's name)
                weightless.append(prefix + name)
        for op in graph.operators:  # constants no layer took, by the operator that reads them
            rest = [
                i for i in dict.fromkeys(op.inputs)
                if i >= 0 and i not in taken and self._constant(tensors[i])
            ]  # fmt: skip
            if rest:
                taken |= set(rest)
                label = ops.name(op.code, op.custom)
                layers.append(self._unknown(number, graph, rest, self._op_name(graph, op), label))
        rest = [t.index for t in tensors if t.index not in taken and self._constant(t)]
        if rest:
            layers.append(
                self._unknown(number, graph, rest, "(constants no operator reads)", "constant")
            )
        for layer in layers:
            layer.name = self._unique(prefix + layer.name)
        return layers

    def _unique(self, name: str) -> str:
        """``name``, or ``name#2``, ``name#3``... where it is taken (counted per name: a file of
        many operators with one output name must not take quadratic time)."""
        unique = name
        while unique in self.names:
            self.repeats[name] = self.repeats.get(name, 1) + 1
            unique = f"{name}#{self.repeats[name]}"
        self.names.add(unique)
        return unique

    @staticmethod
    def _op_name(graph: SubGraphInfo, op: OperatorInfo) -> str:
        outputs = [o for o in op.outputs if o >= 0]
        if outputs:
            return graph.tensors[outputs[0]].name.split(";")[0]
        return ops.name(op.code, op.custom)

    def _layer(
        self,
        number: int,
        graph: SubGraphInfo,
        op: OperatorInfo,
        spec: tuple[Kind, str, int, int],
        producer: dict[int, OperatorInfo],
        name: str,
    ) -> tuple[Layer, set[int]] | None:
        kind, owner, filter_at, bias_at = spec
        kernel = self._weight(graph, op, filter_at, producer)
        if kernel is None:
            return self._sparse(number, graph, op, owner, filter_at, bias_at, producer, name)
        used = {kernel[0].index, *kernel[1]}
        role = KERNEL_ROLES.get(kind, "kernel")
        layout = layouts.native_layout(
            FRAMEWORK, role, len(kernel[0].shape), owner=owner, kind=kind
        )
        if layout is None or kernel[0].sparse or kernel[0].dtype not in _NUMPY_TYPES:
            return None  # listed with the constants no layer takes
        notes = []
        groups = 1
        if kind is Kind.DEPTHWISE_CONV2D:
            groups = self._depthwise_groups(graph, op, kernel[0])
        elif kind in (Kind.CONV2D, Kind.CONV3D):
            groups = self._conv_groups(graph, op, kernel[0])
        tensors = [self._tensor(number, kernel[0], role, layout, groups)]
        if kernel[1]:
            notes.append(FLOAT16)
        bias = self._weight(graph, op, bias_at, producer)
        when = ""
        if bias is None and kind in ADD_BIAS_KINDS:
            bias = self._added_bias(graph, op, kernel[0], layout, producer)
            when = layouts.TFLITE_ADD_BIAS
            if bias is not None:
                notes.append("bias: the constant the ADD after the conv adds")
        if bias is not None and not _plain_vector(bias[0]):
            bias = None  # listed with the constants no layer takes
        if bias is not None:
            bias_layout = layouts.native_layout(
                FRAMEWORK, "bias", 1, owner=owner, kind=kind, when=when
            )
            tensors.append(self._tensor(number, bias[0], "bias", bias_layout, 1))
            used |= {bias[0].index, *bias[1]}
            if bias[0].dtype == "int32" and tensors[-1].quantization is not None:
                notes.append(INT32_BIAS)
        if kind not in (Kind.DENSE, Kind.EMBEDDING):
            notes.append(BN_FOLDED)
        layer = Layer(
            _layer_name(kernel[0].name) or name,
            kind,
            tensors,
            groups=groups,
            class_name=owner,
            note="; ".join(notes) or None,
        )
        return layer, used

    def _embedding_lookup(
        self, graph: SubGraphInfo, op: OperatorInfo, producer: dict[int, OperatorInfo]
    ) -> bool:
        """A GATHER that looks rows of a constant float (or quantized, or float16 behind a
        ``DEQUANTIZE``) 2-D table up by indices computed at run time, along axis 0
        (``GatherOptions.axis``, field 0)."""
        if len(op.inputs) < 2 or op.inputs[1] < 0:
            return False
        table = self._weight(graph, op, 0, producer)
        if table is None:
            return False
        params, indices = table[0], graph.tensors[op.inputs[1]]
        axis = int(op.options.scalar(0, "i")) if op.options is not None else 0
        real = params.dtype.startswith(("float", "bfloat")) or params.quantization is not None
        return len(params.shape) == 2 and real and axis == 0 and not self._constant(indices)

    def _weight(
        self,
        graph: SubGraphInfo,
        op: OperatorInfo,
        at: int,
        producer: dict[int, OperatorInfo],
    ) -> tuple[TensorInfo, tuple[int, ...]] | None:
        """The constant input ``at`` of ``op``, and the tensors it passed through (a
        ``DEQUANTIZE``'s output): None when the input is computed at run time."""
        if at >= len(op.inputs) or op.inputs[at] < 0:
            return None
        tensor = graph.tensors[op.inputs[at]]
        if self._constant(tensor):
            return tensor, ()
        source = producer.get(tensor.index)
        if source is not None and source.code == ops.DEQUANTIZE and source.inputs:
            stored = source.inputs[0]
            if stored >= 0 and self._constant(graph.tensors[stored]):
                return graph.tensors[stored], (tensor.index,)
        return None

    def _sparse(
        self,
        number: int,
        graph: SubGraphInfo,
        op: OperatorInfo,
        owner: str,
        filter_at: int,
        bias_at: int,
        producer: dict[int, OperatorInfo],
        name: str,
    ) -> tuple[Layer, set[int]] | None:
        """A layer whose weights a ``DENSIFY`` operator expands from a sparse constant at run
        time: listed as ``unknown``, the compressed values as stored beside the bias (weightscope
        does not densify them)."""
        if filter_at >= len(op.inputs) or op.inputs[filter_at] < 0:
            return None
        source = producer.get(op.inputs[filter_at])
        if source is None or source.code != ops.DENSIFY or not source.inputs:
            return None
        stored = source.inputs[0]
        if stored < 0 or not self._constant(graph.tensors[stored]):
            return None
        used = [stored]
        bias = self._weight(graph, op, bias_at, producer)
        if bias is not None:
            used += [bias[0].index, *bias[1]]
        constants = [i for i in dict.fromkeys(used) if self._constant(graph.tensors[i])]
        layer = self._unknown(number, graph, constants, name, "")
        layer.class_name = f"{owner} (sparse weights)"
        return layer, set(used)

    def _added_bias(
        self,
        graph: SubGraphInfo,
        op: OperatorInfo,
        kernel: TensorInfo,
        layout: str,
        producer: dict[int, OperatorInfo],
    ) -> tuple[TensorInfo, tuple[int, ...]] | None:
        """The constant an ``ADD`` adds to the output of a conv without bias (the converter
        writes a Keras Conv3D's bias so): a vector of one value per output channel, where the
        ``ADD`` is the only operator that reads the conv's output."""
        add, output = self._only_reader(op)
        if add is not None and add.code == ops.QUANTIZE:  # full-integer: a float Conv3D
            add, output = self._only_reader(add)
        if add is None or add.code != ops.ADD or output is None:
            return None
        others = [at for at, i in enumerate(add.inputs) if i != output and i >= 0]
        if len(others) != 1:
            return None
        added = self._weight(graph, add, others[0], producer)
        channels = kernel.shape[layouts.axes_of(layout).index("O")]
        return added if added is not None and added[0].shape == (channels,) else None

    def _only_reader(self, op: OperatorInfo) -> tuple[OperatorInfo | None, int | None]:
        """The one builtin operator that reads ``op``'s one output, and that output."""
        outputs = [o for o in op.outputs if o >= 0]
        if len(outputs) != 1:
            return None, None
        readers = self.readers.get(outputs[0], [])
        if len(readers) != 1 or readers[0].custom is not None:
            return None, None
        return readers[0], outputs[0]

    @staticmethod
    def _conv_groups(graph: SubGraphInfo, op: OperatorInfo, kernel: TensorInfo) -> int:
        """A grouped conv's filter holds ``in / groups`` input channels (its last axis): groups
        are the input's channels (NHWC, last axis) over those, 1 when the input's are unknown."""
        data = graph.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
        per_group = kernel.shape[-1] if kernel.shape else 0
        if data is None or not data.shape or per_group <= 0:
            return 1
        channels = data.shape[-1]
        if channels > per_group and channels % per_group == 0:
            return channels // per_group
        return 1

    @staticmethod
    def _depthwise_groups(graph: SubGraphInfo, op: OperatorInfo, kernel: TensorInfo) -> int:
        """Input channels: the input's last axis (NHWC), else the kernel's channels divided by
        the options' depth multiplier (field 3 of ``DepthwiseConv2DOptions``)."""
        data = graph.tensors[op.inputs[0]] if op.inputs and op.inputs[0] >= 0 else None
        channels = kernel.shape[-1]
        if (
            data is not None
            and data.shape
            and data.shape[-1] > 0
            and channels % data.shape[-1] == 0
        ):
            return data.shape[-1]
        multiplier = int(op.options.scalar(3, "i")) if op.options is not None else 1
        return max(channels // max(multiplier, 1), 1)

    def _source(self, tensor: TensorInfo) -> tuple[FileRegionSource, str, tuple[int, ...]]:
        """The tensor's data in the file: (source, dtype, shape); a type numpy cannot read, or
        a sparse tensor's compressed values, as its bytes."""
        offset, nbytes = self.info.buffers[tensor.buffer]
        shape, dtype = tensor.shape, tensor.dtype
        if min(shape, default=0) < 0:
            raise self.file.error(f"constant {tensor.name[:80]} has shape {shape}")
        if dtype not in _NUMPY_TYPES:
            shape, dtype = (nbytes,), "uint8"
        elif tensor.sparse:
            size = np.dtype(np.uint16 if dtype == "bfloat16" else dtype).itemsize
            shape = (nbytes // size,)
        numel = math.prod(shape)
        size = np.dtype(np.uint16 if dtype == "bfloat16" else dtype).itemsize
        if numel * size > nbytes:
            raise self.file.error(
                f"constant {tensor.name[:80]} of shape {shape} needs {numel * size:,} bytes, its "
                f"buffer holds {nbytes:,}"
            )
        source = FileRegionSource(self.file, offset, numel, dtype, 0, shape, c_strides(shape))
        return source, dtype, shape

    def _tensor(
        self, number: int, info: TensorInfo, role: str, layout: str | None, groups: int
    ) -> Tensor:
        source, dtype, shape = self._source(info)
        name, first = self._tensor_name(number, info)
        quantization = self._quantization(info, source, shape)
        tensor = Tensor(
            name,
            role,
            shape,
            layout,
            dtype,
            None,
            source if quantization is None else DequantizedSource(quantization),
            groups=groups if layout is not None and "O" in layout else 1,
            quantization=quantization,
        )
        if first is not None:
            tensor.shared_with, tensor.counted = first, False
        return tensor

    def _tensor_name(self, number: int, info: TensorInfo) -> tuple[str, str | None]:
        """The name to list ``info`` under, and the name it was listed under before (a constant
        two operators read: counted once, there)."""
        first = self.read.get((number, info.index))
        name = info.name if first is None else f"{first} ({self.uses[first] + 1})"
        if name in self.tensor_names:
            name = f"{name}#{info.index}"
        self.tensor_names.add(name)
        if first is None:
            self.read[(number, info.index)] = name
            self.uses[name] = 1
        else:
            self.uses[first] += 1
        return name, first

    def _quantization(
        self, info: TensorInfo, source: FileRegionSource, shape: tuple[int, ...]
    ) -> Quantization | None:
        q = info.quantization
        if q is None or info.dtype not in _QUANTIZED_TYPES or info.sparse:
            return None
        scales, zero_points = q.scale.astype(np.float32), q.zero_point
        axis = None
        if scales.size > 1:
            axis = q.quantized_dimension
            if not 0 <= axis < len(shape) or scales.size != shape[axis]:
                raise self.file.error(
                    f"{info.name[:80]}: {scales.size} scales along dimension {axis} of {shape}"
                )
        if zero_points.size not in (0, 1, scales.size):
            raise self.file.error(f"{info.name[:80]}: {zero_points.size} zero points")
        return Quantization(
            source,
            ArraySource(scales),
            ArraySource(zero_points) if zero_points.size else None,
            axis,
        )

    def _unknown(
        self, number: int, graph: SubGraphInfo, indices: list[int], name: str, label: str
    ) -> Layer:
        tensors = []
        notes = []
        for index in indices:
            info = graph.tensors[index]
            tensor = self._tensor(number, info, "constant", None, 1)
            tensor.counted = (
                tensor.shared_with is None
                and has_real_values(info.dtype)
                and (info.dtype.startswith(("float", "bfloat")) or tensor.quantization is not None)
            )
            if info.sparse:
                notes.append(
                    f"{tensor.name[:80]} is sparse (TFLite SparsityParameters): its compressed "
                    "values as stored, not densified"
                )
            elif info.dtype not in _NUMPY_TYPES:
                notes.append(f"{tensor.name[:80]} is {info.dtype[:20]}: listed as its bytes")
            tensors.append(tensor)
        return Layer(name, Kind.UNKNOWN, tensors, class_name=label, note="; ".join(notes) or None)


def _plain_vector(tensor: TensorInfo) -> bool:
    """Whether ``tensor`` can be a bias: a dense vector of a type numpy reads."""
    return len(tensor.shape) == 1 and not tensor.sparse and tensor.dtype in _NUMPY_TYPES


def _layer_name(kernel: str) -> str:
    """The layer a converter's weight name comes from: ``model/conv/Conv2D`` -> ``model/conv``
    (the first of the names a fused constant lists); empty where it names no scope."""
    first = kernel.split(";")[0].removesuffix("/ReadVariableOp")
    return first.rsplit("/", 1)[0] if "/" in first else ""
