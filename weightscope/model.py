"""The framework-free model of layers and tensors that every adapter produces.

Adapters fill these objects; reporters and the command line only ever read them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from weightscope import conventions, display, layouts
from weightscope.chunking import DEFAULT_CHUNK_ELEMENTS
from weightscope.conventions import Convention
from weightscope.dtypes import has_real_values
from weightscope.initializers import Declared
from weightscope.kinds import Kind
from weightscope.stats import SMALL_TENSOR_ELEMENTS, TensorStats, compute_stats, segment_stats

NON_TRAINABLE_ROLES = frozenset({"moving_mean", "moving_variance"})

KERNEL_ROLES = ("kernel", "depthwise_kernel", "pointwise_kernel")
"""Roles of convolution and dense kernels, in the order :attr:`Layer.kernels` lists them."""

QUANTIZATION_ROLE_SUFFIXES = ("_scale", "_zero_point")
"""Roles of tensors that are a quantized layer's scales and zero points (``kernel_scale``,
``input_zero_point``), not weights of its own."""

VECTOR_LAYOUTS = frozenset({"C"})
"""Native layouts of per-channel vectors (biases, batch-norm statistics)."""


class TensorSource(Protocol):
    """Where a tensor's data lives; read only when asked for.

    A source class may also offer ``stats_many(sources) -> list[TensorStats]`` (a static
    method): the statistics of many of its sources at once, the same as ``stats`` gives each
    (see :func:`small_tensor_stats`)."""

    def read(self) -> np.ndarray:
        """The whole tensor in its native layout."""
        ...

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        """The tensor's elements in pieces of at most ``max_elements`` (any order)."""
        ...

    def stats(self, max_elements: int) -> TensorStats:
        """Statistics of all elements, reading at most ``max_elements`` at a time."""
        ...


class ArraySource:
    """A tensor already in memory."""

    def __init__(self, array: np.ndarray) -> None:
        self._array = array

    def read(self) -> np.ndarray:
        return self._array

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        flat = self._array.reshape(-1)
        for start in range(0, flat.size, max_elements):
            yield flat[start : start + max_elements]

    def stats(self, max_elements: int) -> TensorStats:
        array = self._array
        if array.size <= min(SMALL_TENSOR_ELEMENTS, max_elements) and array.dtype.kind in "fiub":
            # the numbers a small tensor in a file gets (float64 segments), whatever its source
            return segment_stats(array, np.array([array.size]))[0]
        return compute_stats(self.chunks(max_elements))


PartIndex = tuple[int | slice, ...]
"""Which part of a stored tensor a :class:`Tensor` is: numpy indices, ints and slices."""


def part_shape(shape: tuple[int, ...], index: PartIndex) -> tuple[int, ...]:
    """The shape of ``array[index]`` for an array of ``shape`` (ints drop an axis, slices keep
    it, axes past the index are kept whole)."""
    kept = [
        len(range(*item.indices(size)))
        for item, size in zip(index, shape, strict=False)
        if isinstance(item, slice)
    ]
    return (*kept, *shape[len(index) :])


class PartSource:
    """One part of a stored tensor that holds several weights (an ONNX LSTM's ``W`` holds both
    directions' kernels, its ``B`` both biases of each): ``index``, a tuple of ints and slices,
    taken from the stored tensor when read."""

    def __init__(self, base: TensorSource, index: PartIndex) -> None:
        self.base = base
        self.index = index

    def read(self) -> np.ndarray:
        return np.asarray(self.base.read()[self.index])

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        return ArraySource(self.read()).chunks(max_elements)

    def stats(self, max_elements: int) -> TensorStats:
        return ArraySource(self.read()).stats(max_elements)


def part_text(index: PartIndex) -> str:
    """A part's index as numpy writes it: ``[1, :2048]``."""

    def one(item: int | slice) -> str:
        if isinstance(item, int):
            return str(item)
        start = "" if item.start is None else str(item.start)
        stop = "" if item.stop is None else str(item.stop)
        return f"{start}:{stop}"

    return "[" + ", ".join(one(item) for item in index) + "]"


@dataclass(frozen=True, slots=True)
class Quantization:
    """How a tensor's stored integers stand for real values: ``real = (stored - zero_point) *
    scale`` (``+ offset`` where there is one), with one scale for the whole tensor, one per
    channel along ``axis`` (of the stored tensor), or one per block of ``block_size`` elements
    along ``axis``."""

    stored: TensorSource
    """The integers as the file stores them (native layout, unpacked)."""
    scale: TensorSource
    zero_point: TensorSource | None = None
    axis: int | None = None
    """The stored axis the scales run along; None for one scale."""
    block_size: int | None = None
    scale_name: str | None = None
    """The stored tensor the scales come from, where they are one (ONNX); None where they are
    part of the quantized tensor itself (PyTorch)."""
    zero_point_name: str | None = None
    offset: TensorSource | None = None
    """Added after scaling, one per scale (GGML's block minimums: ``real = scale * stored -
    dmin * min``); None where there is none."""

    @property
    def granularity(self) -> str:
        """``per tensor``, ``per channel`` or ``per block of N``."""
        if self.axis is None:
            return "per tensor"
        return "per channel" if self.block_size is None else f"per block of {self.block_size}"

    def scales(self) -> np.ndarray:
        return np.asarray(self.scale.read())

    def zero_points(self) -> np.ndarray | None:
        return None if self.zero_point is None else np.asarray(self.zero_point.read())

    def offsets(self) -> np.ndarray | None:
        return None if self.offset is None else np.asarray(self.offset.read())

    def dequantize(self, stored: np.ndarray) -> np.ndarray:
        """The real values of ``stored`` (the whole tensor), as float32."""
        with np.errstate(over="ignore", invalid="ignore"):  # a damaged scale: inf, NaN
            values = stored.astype(np.float64)
            scale = self.scales().astype(np.float64)
            zero = self.zero_points()
            offset = np.zeros(1) if zero is None else zero.astype(np.float64)
            added = self.offsets()
            after = np.zeros(1) if added is None else added.astype(np.float64)
            if self.axis is not None:
                scale, offset, after = (
                    self._along_axis(v, stored.shape) for v in (scale, offset, after)
                )
            else:
                scale, offset = scale.reshape(()), offset.reshape(-1)[0]
                after = after.reshape(-1)[0]
            return ((values - offset) * scale + after).astype(np.float32)

    def _along_axis(self, values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """``values`` (per channel or per block) spread over the stored tensor's ``shape``."""
        axis = self.axis % len(shape)  # type: ignore[operator]
        if values.size == 1:  # one value (no zero point, no offset) for every element
            return values.reshape([1] * len(shape))
        if self.block_size is not None:
            # one value per block along ``axis`` and per index of every other axis: a table
            # ((rows, blocks) for MatMulNBits), however it is stored
            blocks = -(-shape[axis] // self.block_size)
            table = [blocks if i == axis else d for i, d in enumerate(shape)]
            if values.size == math.prod(table):
                spread = np.repeat(values.reshape(table), self.block_size, axis=axis)
                return np.take(spread, np.arange(shape[axis]), axis=axis)
        values = values.reshape(-1) if values.size > 1 else np.full(1, values.reshape(-1)[0])
        if self.block_size is not None:
            values = np.repeat(values, self.block_size)[: shape[axis]]
        elif values.size == 1:
            values = np.repeat(values, shape[axis])
        view = [1] * len(shape)
        view[axis] = shape[axis]
        return values.reshape(view)


class DequantizedSource:
    """The real values a quantized tensor stands for, computed from its stored integers when
    read (the whole tensor at once: a quantized weight is a quarter of its float size)."""

    def __init__(self, quantization: Quantization) -> None:
        self.quantization = quantization

    def read(self) -> np.ndarray:
        return self.quantization.dequantize(np.asarray(self.quantization.stored.read()))

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        return ArraySource(self.read()).chunks(max_elements)

    def stats(self, max_elements: int) -> TensorStats:
        return ArraySource(self.read()).stats(max_elements)


@dataclass(eq=False, slots=True)
class Tensor:
    """One stored weight tensor. Data is read from the file only on demand."""

    name: str
    role: str
    native_shape: tuple[int, ...]
    native_layout: str | None
    dtype: str
    trainable: bool | None
    source: TensorSource = field(repr=False)
    groups: int = 1
    """Groups used to convert this tensor (only layouts with a per-group ``O`` axis need it)."""
    counted: bool = True
    """False for tensors that are not parameters (an integer step counter such as
    ``num_batches_tracked``) and for the second name of a shared (tied) tensor."""
    shared_with: str | None = None
    """Name of the tensor this one shares its data with (tied weights), counted there."""
    declared_init: Declared | None = None
    """The initializer the file declares for this kernel, where it declares one (Keras
    configs); analysis falls back on the framework's default."""
    part: str | None = None
    """Which part of the stored tensor ``name`` this is (``[1, :2048]``), where the file keeps
    several weights in one tensor; None for a whole stored tensor."""
    quantization: Quantization | None = None
    """How the stored integers (``dtype``) stand for real values, for a quantized weight: then
    ``source`` gives the real (dequantized) values and :meth:`stored` the integers."""
    _stats: TensorStats | None = field(default=None, init=False, repr=False)
    _stored_stats: TensorStats | None = field(default=None, init=False, repr=False)

    @property
    def size(self) -> int:
        return math.prod(self.native_shape)

    @property
    def canonical_layout(self) -> str | None:
        return None if self.native_layout is None else layouts.canonical_layout(self.native_layout)

    @property
    def canonical_shape(self) -> tuple[int, ...] | None:
        if self.native_layout is None:
            return None
        return layouts.canonical_shape(self.native_shape, self.native_layout, self.groups)

    def numpy(self) -> np.ndarray:
        """The tensor in its native layout: as stored, or, quantized, the real values it stands
        for (see :meth:`stored`)."""
        return self.source.read()

    def stored(self) -> np.ndarray:
        """The values as the file stores them, native layout: the integers of a quantized
        tensor (the same as :meth:`numpy` for others)."""
        if self.quantization is None:
            return self.numpy()
        return np.asarray(self.quantization.stored.read())

    def stored_canonical(self) -> np.ndarray:
        """:meth:`stored` in canonical layout."""
        if self.native_layout is None:
            raise ValueError(f"tensor {self.name!r} ({self.role}) has no canonical layout")
        return layouts.to_canonical(self.stored(), self.native_layout, self.groups)

    def stored_stats(self, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> TensorStats:
        """Statistics of the stored values: the integer range of a quantized tensor."""
        if self.quantization is None:
            return self.stats(chunk_elements)
        if self._stored_stats is None:
            self._stored_stats = ArraySource(self.stored()).stats(chunk_elements)
        return self._stored_stats

    @property
    def is_quantization_parameter(self) -> bool:
        """A scale or zero point of a quantized layer (stored as a tensor of its own)."""
        return self.role.endswith(QUANTIZATION_ROLE_SUFFIXES)

    def quantization_step(self) -> float | None:
        """The largest step between two neighbouring real values of a quantized tensor (its
        largest scale); None for others."""
        if self.quantization is None:
            return None
        scales = np.abs(self.quantization.scales().astype(np.float64))
        return float(scales.max()) if scales.size else None

    @property
    def quantization_axis(self) -> int | None:
        """The canonical axis a per-channel or per-block scale runs along; None for one scale
        (or a tensor without a canonical layout)."""
        quantization = self.quantization
        if quantization is None or quantization.axis is None or self.native_layout is None:
            return None
        axes = layouts.axes_of(self.native_layout)
        letter = axes[quantization.axis % len(axes)]
        canonical = self.canonical_layout or ""
        if letter.startswith("{"):
            return 0
        if letter == "M":  # depthwise (*k, I, M): output channel c*M + m, canonical axis 0
            return 0
        return canonical.index(letter) if letter in canonical else None

    def canonical(self) -> np.ndarray:
        """The tensor in canonical layout: convs ``(out, in/groups, *k)``, dense ``(out, in)``."""
        if self.native_layout is None:
            raise ValueError(f"tensor {self.name!r} ({self.role}) has no canonical layout")
        return layouts.to_canonical(self.numpy(), self.native_layout, self.groups)

    @property
    def has_stats(self) -> bool:
        """False for elements statistics do not apply to (complex numbers, strings, int4...);
        True for every quantized tensor (its real values)."""
        return self.quantization is not None or has_real_values(self.dtype)

    def stats(self, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> TensorStats:
        """Mean, std, min, max, zeros fraction, NaN and Inf counts, computed once, in chunks
        (only where :attr:`has_stats`)."""
        if self._stats is None:
            self._stats = self.source.stats(chunk_elements)
        return self._stats


def small_tensor_stats(tensors: Iterable[Tensor]) -> None:
    """Compute the statistics of the small tensors among ``tensors`` (at most
    :data:`~weightscope.stats.SMALL_TENSOR_ELEMENTS` elements) whose sources reduce many at once
    (``stats_many``), a source class at a time, and cache them on each tensor; the others are
    left to :meth:`Tensor.stats`. A file of 200,000 tiny tensors spent seconds in the calls of
    reducing them one by one."""
    batches: dict[Any, list[Tensor]] = {}
    for tensor in tensors:
        if tensor._stats is not None or not tensor.has_stats:
            continue
        if tensor.size > SMALL_TENSOR_ELEMENTS:
            continue
        many = getattr(type(tensor.source), "stats_many", None)
        if many is not None:
            batches.setdefault(many, []).append(tensor)
    for many, batch in batches.items():
        for tensor, stats in zip(batch, many([t.source for t in batch]), strict=True):
            tensor._stats = stats


@dataclass(eq=False, slots=True)
class Layer:
    """A weight-bearing layer, its tensors, and what its framework said about it."""

    name: str
    kind: Kind
    tensors: list[Tensor]
    config: dict[str, Any] = field(default_factory=dict)
    groups: int = 1
    inferred: bool = False
    """True when the kind was inferred from names and shapes rather than read from a config."""
    class_name: str | None = None
    note: str | None = None
    """Why the kind was inferred, or what stays ambiguous."""
    framework: str | None = None
    """The framework whose conventions apply (default initializers, fans); set by the Model."""
    producer: str | None = None
    """The program that wrote the model file (an ONNX exporter, whose conventions then apply);
    set by the Model."""
    module: str | None = None
    """The module the layer was exported from, where the file records one apart from ``name``:
    the PyTorch module path (``layer1.0.conv1``) of an ONNX node named ``/layer1/layer1.0/conv1/
    Conv``. What ``export`` keys the layer's arrays by; None where ``name`` is that already."""

    @property
    def user_name(self) -> str:
        """The name the model's authors know the layer by: :attr:`module`, else :attr:`name`."""
        return self.module or self.name

    @property
    def kind_label(self) -> str:
        """The kind as tables show it: ``unknown (<class or op>)`` for a layer not understood."""
        if self.kind.is_unknown and self.class_name:
            return f"unknown ({self.class_name})"
        return str(self.kind)

    @property
    def convention(self) -> Convention:
        """The conventions of the framework (and exporter) that wrote the layer: config keys,
        defaults, initializer; see :mod:`weightscope.conventions`."""
        return conventions.lookup(self.framework, self.producer)

    @property
    def kernels(self) -> list[Tensor]:
        """The layer's convolution or dense kernels (roles :data:`KERNEL_ROLES`), in that order:
        one for most layers, the depthwise and then the pointwise kernel of a separable conv."""
        return [t for role in KERNEL_ROLES for t in self.tensors if t.role == role]

    @property
    def kernel(self) -> Tensor | None:
        """The kernel that holds the layer's spatial filters: ``kernel`` (convs of every kind,
        transposed and depthwise included, and dense layers), or a separable conv's
        ``depthwise_kernel`` (its ``pointwise_kernel`` is a 1x1 conv, see :attr:`kernels`);
        None for layers without one."""
        return next((t for t in self.kernels if t.role != "pointwise_kernel"), None)

    @property
    def principal(self) -> Tensor | None:
        """The tensor that stands for the layer in one-row views (tables, pairing across
        models): its first tensor with a multi-dimensional layout, else its scale (``gamma``),
        else its first tensor."""
        for tensor in self.tensors:
            if tensor.native_layout is not None and tensor.native_layout not in VECTOR_LAYOUTS:
                return tensor
        for tensor in self.tensors:
            if tensor.role == "gamma":
                return tensor
        return self.tensors[0] if self.tensors else None

    @property
    def params(self) -> int:
        return sum(t.size for t in self.tensors if t.counted)

    @property
    def param_counts(self) -> ParamCounts:
        """This layer's parameters split by trainability, as :attr:`Model.params` counts them."""
        trainable = non_trainable = unknown = 0
        for tensor in self.tensors:
            if not tensor.counted:
                continue
            if tensor.trainable is True:
                trainable += tensor.size
            elif tensor.trainable is False:
                non_trainable += tensor.size
            else:
                unknown += tensor.size
        return ParamCounts(trainable + non_trainable + unknown, trainable, non_trainable, unknown)

    def plot_kernels(self, **options: Any) -> Any:
        """The kernel-slice figure of this layer (a matplotlib Figure); see
        :func:`weightscope.reporters.kernels.plot_kernels` for the options."""
        return display.presenter().plot_kernels(self, **options)

    def plot_init(self, **options: Any) -> Any:
        """Histogram of the weights against their initializer (a matplotlib Figure); see
        :func:`weightscope.reporters.init.plot_init`."""
        return display.presenter().plot_init(self, **options)

    def explain(self, **options: Any) -> str:
        """A plain-language account of what this layer computes, from its own numbers; see
        :func:`weightscope.reporters.explain.explain`."""
        return display.presenter().explain(self, **options)

    def _repr_html_(self) -> str:
        return display.presenter().layer_html(self)

    def tensor(self, role: str) -> Tensor:
        for tensor in self.tensors:
            if tensor.role == role:
                return tensor
        roles = ", ".join(t.role for t in self.tensors)
        raise KeyError(f"layer {self.name!r} has no {role!r} tensor (it has: {roles})")


@dataclass(frozen=True)
class ParamCounts:
    total: int
    trainable: int
    non_trainable: int
    unknown: int = 0
    """Parameters whose trainability the file does not say (weights-only files)."""

    @staticmethod
    def sum(counts: Iterable[ParamCounts]) -> ParamCounts:
        total = trainable = non_trainable = unknown = 0
        for count in counts:
            total += count.total
            trainable += count.trainable
            non_trainable += count.non_trainable
            unknown += count.unknown
        return ParamCounts(total, trainable, non_trainable, unknown)

    def to_dict(self) -> dict[str, int]:
        data = {
            "total": self.total,
            "trainable": self.trainable,
            "non_trainable": self.non_trainable,
        }
        if self.unknown:
            data["trainable_unknown"] = self.unknown
        return data


@dataclass(eq=False)
class Model:
    """A model read from a file: ordered weight-bearing layers and where they came from."""

    source: Path | None
    format: str
    framework: str
    framework_version: str | None
    layers: list[Layer]
    weightless_layers: list[str] = field(default_factory=list)
    """Names of layers that hold no weights (pooling, flatten, ...), in model order."""
    notes: list[str] = field(default_factory=list)
    """What the reader did that a user should know (where in a checkpoint the weights were)."""
    producer: str | None = None
    """The program that wrote the file, where the file says (an ONNX exporter and its version)."""
    opset: dict[str, int] | None = None
    """ONNX operator set version per domain (``ai.onnx`` for the default domain)."""
    inputs: list[Path] = field(default_factory=list)
    """Every file the model was read from: ``source`` and, for ONNX, its external data files
    (outputs must never be written onto any of them)."""
    _resources: ExitStack = field(default_factory=ExitStack, repr=False)

    def __post_init__(self) -> None:
        if self.source is not None and self.source not in self.inputs:
            self.inputs.insert(0, self.source)
        for layer in self.layers:
            layer.framework = layer.framework or self.framework
            layer.producer = layer.producer or self.producer

    def _repr_html_(self) -> str:
        return display.presenter().model_html(self)

    @property
    def params(self) -> ParamCounts:
        return ParamCounts.sum(layer.param_counts for layer in self.layers)

    def layer(self, name: str) -> Layer:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no layer named {name!r}; layers: {', '.join(x.name for x in self.layers)}")

    def tensors(self) -> Iterator[tuple[Layer, Tensor]]:
        for layer in self.layers:
            for tensor in layer.tensors:
                yield layer, tensor

    def close(self) -> None:
        """Release the open file; tensor data can no longer be read afterwards."""
        self._resources.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = self.params
        return (
            f"<weightscope.Model {self.framework} {self.format} from {self.source}: "
            f"{len(self.layers)} weight layers, {counts.total:,} params>"
        )
