"""The arithmetic behind ``weightscope explain`` and :meth:`weightscope.model.Layer.explain`: what
one layer holds (weights per filter and per input channel, groups, depth multiplier, parameter
counts and their factors, the span one output reads), and a worked demo with its real weights:
one output value computed as the sum of element-wise products of the kernel volume and an input
patch, and again as the dot product of the two flattened.

Everything here returns frozen dataclasses; the words are in
:mod:`weightscope.reporters.explain`. :func:`explain_layer` gives a :class:`LayerExplanation`
(a kind-specific geometry and, when asked, a :data:`Demo`); :func:`conv_demo`,
:func:`separable_demo`, :func:`dense_demo` and :func:`batch_norm_demo` give the demos alone, with
their input, for anyone who wants to recompute them with the framework itself.

The demo input is seeded random numbers rounded to two decimals, channels first, and the layer
is applied as its equation says, without padding: the value is what the layer computes at any
position whose window lies inside the input.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from weightscope import conventions, layouts
from weightscope.dtypes import is_float
from weightscope.kinds import Kind
from weightscope.model import Layer, Tensor

CHECK_TOLERANCE = 1e-6
"""Largest difference between the sum of products and the dot product that counts as agreeing."""
DEMO_SEED = 0
UNKNOWN_EPSILON = 1e-5
"""Batch norm's eps for a framework without a convention (the common default)."""


class ExplainError(ValueError):
    """The layer lacks what an account or demo needs, or an option does not fit it."""


# ---------------------------------------------------------------------------------------------
# small helpers


def _per_axis(config: dict[str, Any], keys: Sequence[str], rank: int) -> tuple[int, ...]:
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return (value,) * rank
        if (
            isinstance(value, (list, tuple))
            and len(value) == rank
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            return tuple(value)
    return (1,) * rank


def _optional_tensor(layer: Layer, role: str) -> Tensor | None:
    for tensor in layer.tensors:
        if tensor.role == role:
            return tensor
    return None


# ---------------------------------------------------------------------------------------------
# what each kind of layer holds


@dataclass(frozen=True)
class ConvGeometry:
    """A conv layer's numbers, read from its canonical kernel ``(out, in/groups, *k)``."""

    kernel: Tensor
    bias: Tensor | None
    """The bias tensor; None when the layer has none (and always for a depthwise kernel read as
    the first step of a separable conv)."""
    out: int
    """Output channels: the number of filters."""
    per_group: int
    """Input channels each filter reads: ``in / groups``."""
    groups: int
    k: tuple[int, ...]
    """Kernel size per spatial axis."""
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    transposed: bool
    depthwise: bool
    """One input channel per group and more than one group (and not transposed)."""

    @property
    def rank(self) -> int:
        """Spatial axes: 1, 2 or 3."""
        return len(self.k)

    @property
    def in_channels(self) -> int:
        return self.per_group * self.groups

    @property
    def taps(self) -> int:
        """Weights of one kernel, the one a filter applies to one input channel: prod(k)."""
        return math.prod(self.k)

    @property
    def out_per_group(self) -> int:
        return self.out // self.groups

    @property
    def multiplier(self) -> int:
        """Depth multiplier of a depthwise conv: output channels per input channel."""
        return self.out // self.groups

    @property
    def pointwise(self) -> bool:
        """A 1x1 (1, 1x1x1) kernel."""
        return all(k == 1 for k in self.k)

    @property
    def strided(self) -> bool:
        return any(s > 1 for s in self.stride)

    @property
    def dilated(self) -> bool:
        return any(d > 1 for d in self.dilation)

    @property
    def volume(self) -> int:
        """Weights per filter: ``in/groups x prod(k)``."""
        return self.per_group * self.taps

    @property
    def weights(self) -> int:
        """Weights of the layer (bias excluded): ``out x in/groups x prod(k)``."""
        return self.out * self.volume

    @property
    def ungrouped_weights(self) -> int:
        """Weights of an ungrouped conv on the same channels: ``out x in x prod(k)``."""
        return self.out * self.in_channels * self.taps

    @property
    def extent(self) -> tuple[int, ...]:
        """Span of input one output reads on each axis (its receptive field in this layer):
        ``dilation x (k - 1) + 1``."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.k, self.dilation, strict=True))


def conv_geometry(layer: Layer, role: str = "kernel") -> ConvGeometry:
    kernel = _optional_tensor(layer, role)
    if kernel is None or kernel.canonical_shape is None:
        raise ExplainError(f"layer {layer.name!r} has no {role} with a canonical form")
    out, per_group, *k = kernel.canonical_shape
    groups = layer.groups if layer.groups >= 1 and out % layer.groups == 0 else 1
    if role == "pointwise_kernel":
        groups = 1
    transposed = layer.kind.is_transposed
    depthwise = not transposed and per_group == 1 and groups > 1
    return ConvGeometry(
        kernel=kernel,
        bias=_optional_tensor(layer, "bias") if role != "depthwise_kernel" else None,
        out=out,
        per_group=per_group,
        groups=groups,
        k=tuple(k),
        stride=_per_axis(layer.config, conventions.STRIDE_KEYS, len(k)),
        dilation=_per_axis(layer.config, conventions.DILATION_KEYS, len(k)),
        transposed=transposed,
        depthwise=depthwise,
    )


@dataclass(frozen=True)
class SeparableGeometry:
    """A separable conv (Keras): a depthwise step, then a pointwise (1x1) one."""

    depthwise: ConvGeometry
    """The depthwise step; its ``out`` is the number of intermediate channels."""
    pointwise: ConvGeometry
    """The 1x1 step over the intermediate channels (ungrouped); it carries the bias."""

    @property
    def bias(self) -> Tensor | None:
        return self.pointwise.bias

    @property
    def depthwise_weights(self) -> int:
        """``in x multiplier x prod(k)``."""
        return self.depthwise.out * self.depthwise.taps

    @property
    def pointwise_weights(self) -> int:
        """``out x intermediate channels``."""
        return self.pointwise.out * self.pointwise.per_group

    @property
    def weights(self) -> int:
        return self.depthwise_weights + self.pointwise_weights

    @property
    def ordinary_weights(self) -> int:
        """Weights of an ordinary conv with the same inputs, kernel size and filters."""
        return self.pointwise.out * self.depthwise.groups * self.depthwise.taps


def separable_geometry(layer: Layer) -> SeparableGeometry:
    return SeparableGeometry(
        depthwise=conv_geometry(layer, "depthwise_kernel"),
        pointwise=conv_geometry(layer, "pointwise_kernel"),
    )


@dataclass(frozen=True)
class DenseGeometry:
    """A dense layer: a canonical ``(out, in)`` matrix."""

    kernel: Tensor
    bias: Tensor | None
    out: int
    inputs: int

    @property
    def weights(self) -> int:
        return self.out * self.inputs


def dense_geometry(layer: Layer) -> DenseGeometry:
    kernel = layer.tensor("kernel")
    shape = kernel.canonical_shape
    if shape is None or len(shape) != 2:
        raise ExplainError(f"layer {layer.name!r} has no 2-D kernel with a canonical form")
    out, inputs = shape
    return DenseGeometry(kernel, _optional_tensor(layer, "bias"), out, inputs)


@dataclass(frozen=True)
class BatchNormGeometry:
    """A batch norm's channels, eps and its per-channel affine map at inference."""

    channels: int
    epsilon: float
    epsilon_given: bool
    """False when the file does not record eps and :attr:`epsilon` is the framework's default."""
    has_gamma: bool
    has_beta: bool
    scale: np.ndarray
    """Per channel ``a = gamma / sqrt(moving_variance + eps)`` (float64; gamma 1 if absent)."""
    shift: np.ndarray
    """Per channel ``b = beta - a * moving_mean`` (float64; beta and mean 0, variance 1 if
    absent)."""

    @property
    def learned(self) -> tuple[str, ...]:
        """The trainable vectors the layer stores, of ``gamma`` and ``beta``."""
        return tuple(r for r, on in (("gamma", self.has_gamma), ("beta", self.has_beta)) if on)

    @property
    def learned_weights(self) -> int:
        return len(self.learned) * self.channels

    @property
    def statistics(self) -> int:
        """Non-trainable values: moving mean and variance, one each per channel."""
        return 2 * self.channels


def _epsilon(layer: Layer) -> tuple[float, bool]:
    for key in conventions.EPSILON_KEYS:
        value = layer.config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), True
    defaults = layer.convention.batch_norm
    return (UNKNOWN_EPSILON if defaults is None else defaults.eps), False


def _vector(layer: Layer, role: str, default: float, channels: int) -> np.ndarray:
    tensor = _optional_tensor(layer, role)
    if tensor is None:
        return np.full(channels, default)
    return np.asarray(tensor.numpy(), dtype=np.float64).reshape(-1)


def _bn_channels(layer: Layer) -> int:
    for role in ("moving_mean", "moving_variance", "gamma", "beta"):
        tensor = _optional_tensor(layer, role)
        if tensor is not None:
            return tensor.size
    raise ExplainError(f"layer {layer.name!r} stores none of gamma, beta, mean, variance")


def batch_norm_geometry(layer: Layer) -> BatchNormGeometry:
    channels = _bn_channels(layer)
    epsilon, given = _epsilon(layer)
    gamma = _vector(layer, "gamma", 1.0, channels)
    beta = _vector(layer, "beta", 0.0, channels)
    mean = _vector(layer, "moving_mean", 0.0, channels)
    variance = _vector(layer, "moving_variance", 1.0, channels)
    scale = gamma / np.sqrt(variance + epsilon)
    return BatchNormGeometry(
        channels=channels,
        epsilon=epsilon,
        epsilon_given=given,
        has_gamma=_optional_tensor(layer, "gamma") is not None,
        has_beta=_optional_tensor(layer, "beta") is not None,
        scale=scale,
        shift=beta - scale * mean,
    )


@dataclass(frozen=True)
class LayerNormGeometry:
    normalized_shape: tuple[int, ...]
    """The trailing shape each sample is normalized over (that of gamma, else beta; () if
    neither is stored)."""
    width: int
    """Values in :attr:`normalized_shape`."""
    scaled: bool
    """gamma is stored."""
    shifted: bool
    """beta is stored."""

    @property
    def vectors(self) -> int:
        """Learned vectors stored, of gamma and beta."""
        return int(self.scaled) + int(self.shifted)


def layer_norm_geometry(layer: Layer) -> LayerNormGeometry:
    gamma = _optional_tensor(layer, "gamma")
    beta = _optional_tensor(layer, "beta")
    first = gamma or beta
    return LayerNormGeometry(
        normalized_shape=tuple(first.native_shape) if first is not None else (),
        width=first.size if first is not None else 0,
        scaled=gamma is not None,
        shifted=beta is not None,
    )


@dataclass(frozen=True)
class EmbeddingGeometry:
    vocab: int
    """Rows of the table: token ids."""
    width: int
    """Numbers per row."""

    @property
    def weights(self) -> int:
        return self.vocab * self.width


def embedding_geometry(layer: Layer) -> EmbeddingGeometry:
    table = layer.tensor("embeddings")
    shape = table.canonical_shape or table.native_shape
    return EmbeddingGeometry(vocab=shape[0], width=shape[-1])


@dataclass(frozen=True)
class RecurrentGeometry:
    """One direction of one layer of an LSTM, GRU or simple RNN, in canonical form."""

    gates: str
    """Canonical gate letters, in canonical order (``ifgo``)."""
    stored_gates: str | None
    """The gate letters in the order the file stores them (``iofc``), where a layout says."""
    units: int
    inputs: int
    recurrent_inputs: int
    """Width of the state the recurrent kernel reads (``units``, or an LSTM's projection)."""
    biases: tuple[str, ...]
    """Bias roles present: ``bias`` and/or ``recurrent_bias``."""
    reset_after: bool | None
    """GRU: the reset gate applies after the recurrent product (None for other kinds)."""
    projection: tuple[int, int] | None
    """An LSTM projection's ``(out, units)``."""

    @property
    def per_gate(self) -> int:
        """Weights of one gate: its input and recurrent kernels and biases."""
        per_bias = self.units * len(self.biases)
        return self.units * (self.inputs + self.recurrent_inputs) + per_bias

    @property
    def weights(self) -> int:
        extra = self.projection[0] * self.projection[1] if self.projection else 0
        return len(self.gates) * self.per_gate + extra


def recurrent_geometry(layer: Layer) -> RecurrentGeometry:
    kernel = layer.tensor("kernel")
    recurrent = layer.tensor("recurrent_kernel")
    if kernel.canonical_shape is None or recurrent.canonical_shape is None:
        raise ExplainError(f"layer {layer.name!r}: its kernels have no canonical layout")
    _, units, inputs = kernel.canonical_shape
    gated = layouts.gate_axis(kernel.native_layout or "")
    stored = gated[1] if gated else None
    gates = layouts.canonical_gates(stored) if stored else layouts.CANONICAL_GATES[layer.kind.value]
    projection = _optional_tensor(layer, "projection")
    reset_after = layer.config.get("reset_after")
    return RecurrentGeometry(
        gates=gates,
        stored_gates=stored,
        units=units,
        inputs=inputs,
        recurrent_inputs=recurrent.canonical_shape[2],
        biases=tuple(r for r in ("bias", "recurrent_bias") if _optional_tensor(layer, r)),
        reset_after=bool(reset_after)
        if layer.kind == Kind.GRU and reset_after is not None
        else None,
        projection=None if projection is None else tuple(projection.native_shape[:2]),  # type: ignore[arg-type]
    )


@dataclass(frozen=True)
class UnknownGeometry:
    """A layer weightscope has no account of: only what it stores."""

    tensors: tuple[tuple[str, tuple[int, ...]], ...]
    """``(role, native shape)`` of each stored tensor."""
    params: int


def unknown_geometry(layer: Layer) -> UnknownGeometry:
    return UnknownGeometry(
        tensors=tuple((t.role, tuple(t.native_shape)) for t in layer.tensors),
        params=layer.params,
    )


LayerGeometry: TypeAlias = (
    ConvGeometry
    | SeparableGeometry
    | DenseGeometry
    | BatchNormGeometry
    | LayerNormGeometry
    | EmbeddingGeometry
    | RecurrentGeometry
    | UnknownGeometry
)


# ---------------------------------------------------------------------------------------------
# demos


@dataclass(frozen=True)
class DotProductDemo:
    """One output value as the sum of element-wise products of weights and inputs, and again as
    the dot product of the two flattened."""

    seed: int
    """Seed of the demo input."""
    input: np.ndarray
    """The demo input: seeded random values rounded to 2 decimals (float32), channels first."""
    products_sum: float
    dot: float
    bias: float
    """The output's bias (0.0 without one)."""

    @property
    def output(self) -> float:
        return self.products_sum + self.bias

    @property
    def difference(self) -> float:
        return abs(self.products_sum - self.dot)

    @property
    def agree(self) -> bool:
        return self.difference <= CHECK_TOLERANCE


@dataclass(frozen=True)
class ConvDemo(DotProductDemo):
    """One output value of a conv layer, worked out with its real weights. :attr:`input` is
    ``(in_channels, *spatial)``."""

    output_channel: int
    position: tuple[int, ...]
    """The output position (spatial indices) computed."""
    group: int
    """The group of :attr:`output_channel` (0 for an ungrouped conv)."""
    channels: tuple[int, int]
    """The input channels the filter reads: ``range(*channels)``."""
    window: tuple[tuple[int, int, int], ...] | None
    """The input window of :attr:`position`, ``(start, stop, step)`` per spatial axis; None
    for a transposed conv, whose patch is gathered from scattered pixels."""
    patch: np.ndarray
    """What multiplies the kernel volume, ``(in/groups, *k)``: the input window (for a
    transposed conv: the input pixels that scatter onto ``position``, zero where none does)."""
    kernel: np.ndarray
    """The filter's kernel volume ``W[o]``, ``(in/groups, *k)``."""
    channel_sums: np.ndarray
    """Per input channel of the filter, the sum of that channel's element-wise products of
    kernel and patch: ``(in/groups,)``."""

    def channel_sums_from(self, start: int) -> float:
        """The channel sums of channels ``start`` (counted within the filter) onwards, added."""
        return float(self.channel_sums[start:].sum())


def _demo_input(shape: Sequence[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.standard_normal(tuple(shape)), 2).astype(np.float32)


def _weights(tensor: Tensor) -> np.ndarray:
    """The canonical tensor as float64: a quantized one's real values."""
    if not is_float(tensor.dtype) and tensor.quantization is None:
        raise ExplainError(
            f"{tensor.role} is stored as {tensor.dtype} with no scale: no demo with raw integers"
        )
    return np.asarray(tensor.canonical(), dtype=np.float64)


def _bias_value(bias: Tensor | None, index: int) -> float:
    if bias is None:
        return 0.0
    return float(np.asarray(bias.canonical(), dtype=np.float64).reshape(-1)[index])


def _pick_output(count: int, output_channel: int | None, default: int, what: str) -> int:
    o = default if output_channel is None else output_channel
    if not 0 <= o < count:
        raise ExplainError(f"{what} {o} is out of range: the layer has {count} (0 to {count - 1})")
    return o


def _pick_position(
    position: Sequence[int] | None, rank: int, default: tuple[int, ...]
) -> tuple[int, ...]:
    if position is None:
        return default
    pos = tuple(int(p) for p in position)
    if len(pos) != rank:
        raise ExplainError(f"position needs {rank} index(es), got {len(pos)}")
    if any(p < 0 for p in pos):
        raise ExplainError(f"position {pos} has a negative index")
    return pos


def _busiest(
    sizes_in: tuple[int, ...], sizes_out: tuple[int, ...], g: ConvGeometry
) -> tuple[int, ...]:
    """The output position of a transposed conv that the most input pixels scatter onto (the
    first such), so that the demo adds up several of them."""

    def landing(p: int, axis: int) -> int:
        s, d, n = g.stride[axis], g.dilation[axis], sizes_in[axis]
        return sum(
            1 for j in range(g.k[axis]) if (p - j * d) % s == 0 and 0 <= (p - j * d) // s < n
        )

    best = []
    for axis, size in enumerate(sizes_out):
        counts = [landing(p, axis) for p in range(size)]
        best.append(counts.index(max(counts)))
    return tuple(best)


def conv_demo(
    layer: Layer,
    output_channel: int | None = None,
    position: Sequence[int] | None = None,
    seed: int = DEMO_SEED,
    role: str = "kernel",
) -> ConvDemo:
    """Output channel ``output_channel`` of a conv layer at output ``position``, from a seeded
    random input, as the sum of element-wise products of its kernel volume and the input
    patch, and as a dot product of the two flattened. The default channel is 0, or the last one
    of a grouped layer (so that the demo reads a group other than the first); the default
    position is 1 on every axis (for a transposed conv: the first position the most input
    pixels scatter onto)."""
    g = conv_geometry(layer, role)
    weights = _weights(g.kernel)
    o = _pick_output(g.out, output_channel, g.out - 1 if g.groups > 1 else 0, "output channel")
    group = o // g.out_per_group
    first = group * g.per_group
    extent = g.extent
    window: tuple[tuple[int, int, int], ...] | None = None
    if g.transposed:
        sizes_in = (3,) * g.rank
        sizes_out = tuple(
            (n - 1) * s + e for n, s, e in zip(sizes_in, g.stride, extent, strict=True)
        )
        pos = _pick_position(position, g.rank, _busiest(sizes_in, sizes_out, g))
        if any(p >= n for p, n in zip(pos, sizes_out, strict=True)):
            raise ExplainError(f"position {pos} is outside the demo output {sizes_out}")
        x = _demo_input((g.in_channels, *sizes_in), seed)
        patch = np.zeros((g.per_group, *g.k), dtype=np.float64)
        for tap in np.ndindex(*g.k):
            source = []
            for p, j, s, d, n in zip(pos, tap, g.stride, g.dilation, sizes_in, strict=True):
                q, rest = divmod(p - j * d, s)
                if rest or not 0 <= q < n:
                    break
                source.append(q)
            else:
                target: tuple[Any, ...] = (slice(None), *tap)
                read: tuple[Any, ...] = (slice(first, first + g.per_group), *source)
                patch[target] = x[read]
    else:
        pos = _pick_position(position, g.rank, (1,) * g.rank)
        sizes = tuple(
            s * max(p, 2) + e for p, s, e in zip(pos, g.stride, extent, strict=True)
        )  # at least 3 outputs per axis, the position among them
        x = _demo_input((g.in_channels, *sizes), seed)
        window = tuple(
            (p * s, p * s + e, d)
            for p, s, e, d in zip(pos, g.stride, extent, g.dilation, strict=True)
        )
        index: tuple[Any, ...] = (
            slice(first, first + g.per_group),
            *(slice(*axis) for axis in window),
        )
        patch = x[index].astype(np.float64)
    volume = weights[o]
    return ConvDemo(
        seed=seed,
        input=x,
        output_channel=o,
        position=pos,
        group=group,
        channels=(first, first + g.per_group),
        window=window,
        patch=patch,
        kernel=volume,
        channel_sums=(volume * patch).reshape(g.per_group, -1).sum(axis=1),
        products_sum=float((volume * patch).sum()),
        dot=float(np.dot(volume.reshape(-1), patch.reshape(-1))),
        bias=_bias_value(g.bias, o),
    )


@dataclass(frozen=True)
class SeparableDemo(DotProductDemo):
    """One output value of a separable conv: the depthwise step's values at :attr:`position`,
    then the pointwise step's sum of products over them. :attr:`input` is
    ``(in_channels, *spatial)``."""

    output_channel: int
    position: tuple[int, ...]
    depthwise: np.ndarray
    """The depthwise step's outputs at ``position``, one per intermediate channel."""
    pointwise: np.ndarray
    """The pointwise weights of ``output_channel`` over the intermediate channels."""


def separable_demo(
    layer: Layer,
    output_channel: int | None = None,
    position: Sequence[int] | None = None,
    seed: int = DEMO_SEED,
) -> SeparableDemo:
    dw = conv_geometry(layer, "depthwise_kernel")
    pw = conv_geometry(layer, "pointwise_kernel")
    depthwise_weights = _weights(dw.kernel)
    pointwise_weights = _weights(pw.kernel).reshape(pw.out, -1)
    o = _pick_output(pw.out, output_channel, 0, "output channel")
    pos = _pick_position(position, dw.rank, (1,) * dw.rank)
    extent = dw.extent
    sizes = tuple(s * max(p, 2) + e for p, s, e in zip(pos, dw.stride, extent, strict=True))
    x = _demo_input((dw.groups, *sizes), seed)
    window = tuple(
        slice(p * s, p * s + e, d)
        for p, s, e, d in zip(pos, dw.stride, extent, dw.dilation, strict=True)
    )
    multiplier = dw.multiplier
    middle = np.zeros(dw.out)
    for j in range(dw.out):
        index: tuple[Any, ...] = (j // multiplier, *window)
        middle[j] = float((depthwise_weights[j, 0] * x[index]).sum())
    weights = pointwise_weights[o]
    return SeparableDemo(
        seed=seed,
        input=x,
        output_channel=o,
        position=pos,
        depthwise=middle,
        pointwise=weights,
        products_sum=float((weights * middle).sum()),
        dot=float(np.dot(weights, middle)),
        bias=_bias_value(_optional_tensor(layer, "bias"), o),
    )


@dataclass(frozen=True)
class DenseDemo(DotProductDemo):
    """One output unit of a dense layer. :attr:`input` is ``(in,)``."""

    unit: int
    weights: np.ndarray
    """Row ``W[unit]`` of the canonical ``(out, in)`` kernel (float64)."""
    products: np.ndarray
    """``W[unit, i] * x[i]`` for every input i (float64)."""

    def products_from(self, start: int) -> float:
        """The products of inputs ``start`` onwards, added."""
        return float(self.products[start:].sum())


def dense_demo(layer: Layer, output_channel: int | None = None, seed: int = DEMO_SEED) -> DenseDemo:
    kernel = layer.tensor("kernel")
    weights = _weights(kernel)
    if weights.ndim != 2:
        raise ExplainError(f"layer {layer.name!r} has a {weights.ndim}-D kernel")
    unit = _pick_output(weights.shape[0], output_channel, 0, "unit")
    x = _demo_input((weights.shape[1],), seed)
    row = weights[unit]
    products = row * x
    return DenseDemo(
        seed=seed,
        input=x,
        unit=unit,
        weights=row,
        products=products,
        products_sum=float(products.sum()),
        dot=float(np.dot(row, x.astype(np.float64))),
        bias=_bias_value(_optional_tensor(layer, "bias"), unit),
    )


@dataclass(frozen=True)
class BatchNormDemo:
    """Three values of one batch-norm channel, normalized by the formula and by the folded
    affine map, checked to agree."""

    seed: int
    channel: int
    input: np.ndarray
    """Three demo values of that channel."""
    gamma: float
    beta: float
    mean: float
    variance: float
    epsilon: float
    formula: np.ndarray
    """``gamma * (x - mean) / sqrt(variance + epsilon) + beta``."""
    scale: float
    """``a = gamma / sqrt(variance + epsilon)``."""
    shift: float
    """``b = beta - a * mean``."""

    @property
    def folded(self) -> np.ndarray:
        """``a * x + b``."""
        return self.scale * self.input.astype(np.float64) + self.shift

    @property
    def difference(self) -> float:
        return float(np.max(np.abs(self.formula - self.folded)))

    @property
    def agree(self) -> bool:
        return self.difference <= CHECK_TOLERANCE


def batch_norm_demo(
    layer: Layer, output_channel: int | None = None, seed: int = DEMO_SEED
) -> BatchNormDemo:
    channels = _bn_channels(layer)
    c = _pick_output(channels, output_channel, 0, "channel")
    gamma = float(_vector(layer, "gamma", 1.0, channels)[c])
    beta = float(_vector(layer, "beta", 0.0, channels)[c])
    mean = float(_vector(layer, "moving_mean", 0.0, channels)[c])
    variance = float(_vector(layer, "moving_variance", 1.0, channels)[c])
    epsilon, _ = _epsilon(layer)
    x = _demo_input((3,), seed)
    scale = gamma / math.sqrt(variance + epsilon)
    formula = gamma * (x.astype(np.float64) - mean) / math.sqrt(variance + epsilon) + beta
    return BatchNormDemo(
        seed=seed,
        channel=c,
        input=x,
        gamma=gamma,
        beta=beta,
        mean=mean,
        variance=variance,
        epsilon=epsilon,
        formula=formula,
        scale=scale,
        shift=beta - scale * mean,
    )


Demo: TypeAlias = ConvDemo | SeparableDemo | DenseDemo | BatchNormDemo


# ---------------------------------------------------------------------------------------------
# one layer


@dataclass(frozen=True)
class LayerExplanation:
    """What :func:`explain_layer` finds in one layer: who it is, what it holds, and the demo."""

    name: str
    class_name: str | None
    kind: Kind
    framework: str | None
    geometry: LayerGeometry
    """The kind-specific numbers: :class:`ConvGeometry` for convs of every kind (transposed and
    depthwise included), :class:`SeparableGeometry`, :class:`DenseGeometry`,
    :class:`BatchNormGeometry`, :class:`LayerNormGeometry`, :class:`EmbeddingGeometry`, or
    :class:`UnknownGeometry` for any other kind."""
    demo: Demo | None
    """The worked demo; None when none was asked for or the kind has none (layer norm,
    embedding, unknown)."""
    inferred: str | None
    """How the layer's kind was inferred (the layer's note), when it was."""
    quantized: tuple[str, ...] = ()
    """``role (dtype, granularity)`` of each quantized tensor: its numbers here are the real
    values its stored integers stand for."""


def explain_layer(
    layer: Layer,
    demo: bool = False,
    position: Sequence[int] | None = None,
    output_channel: int | None = None,
    seed: int = DEMO_SEED,
) -> LayerExplanation:
    """``layer``'s numbers and, with ``demo``, one output value worked out with its real weights
    (see :func:`conv_demo`). ``position`` (output spatial indices) and ``output_channel`` (filter,
    unit or channel) choose the value. Raises :class:`ExplainError` when the layer lacks what
    its kind needs or an option does not fit it."""
    kind = layer.kind
    geometry: LayerGeometry
    worked: Demo | None = None
    if kind.is_separable:
        geometry = separable_geometry(layer)
        if demo:
            worked = separable_demo(layer, output_channel, position, seed)
    elif kind.is_conv:  # ordinary, grouped, depthwise and transposed
        geometry = conv_geometry(layer)
        if demo:
            worked = conv_demo(layer, output_channel, position, seed)
    elif kind == Kind.DENSE:
        geometry = dense_geometry(layer)
        if demo:
            worked = dense_demo(layer, output_channel, seed)
    elif kind == Kind.BATCH_NORM:
        geometry = batch_norm_geometry(layer)
        if demo:
            worked = batch_norm_demo(layer, output_channel, seed)
    elif kind == Kind.LAYER_NORM:
        geometry = layer_norm_geometry(layer)
    elif kind == Kind.EMBEDDING:
        geometry = embedding_geometry(layer)
    elif kind.is_recurrent:
        geometry = recurrent_geometry(layer)
    else:
        geometry = unknown_geometry(layer)
    return LayerExplanation(
        name=layer.name,
        class_name=layer.class_name,
        kind=kind,
        framework=layer.framework,
        geometry=geometry,
        demo=worked,
        inferred=layer.note if layer.inferred else None,
        quantized=tuple(
            f"{t.role} ({t.dtype}, {t.quantization.granularity}"
            + (", plus an offset per block)" if t.quantization.offset is not None else ")")
            for t in layer.tensors
            if t.quantization is not None
        ),
    )
