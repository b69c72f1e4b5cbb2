"""Plain-language accounts of what one layer computes, from that layer's own numbers
(``weightscope explain``, :meth:`weightscope.model.Layer.explain`), and a worked demo with its
real weights: one output value computed as the sum of element-wise products of the kernel volume
and an input patch, and again as the dot product of the two flattened, checked to agree.

The demo input is seeded random numbers rounded to two decimals, channels first, and the layer
is applied as its equation says, without padding: the value shown is what the layer computes at
any position whose window lies inside the input. :func:`conv_demo`, :func:`dense_demo` and
:func:`batch_norm_demo` return the numbers (input included) for anyone who wants to recompute
them with the framework itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from weightscope.errors import printable
from weightscope.model import Layer, Tensor

CHECK_TOLERANCE = 1e-6
DEMO_SEED = 0
SHOWN_CHANNELS = 8
"""Per-channel lines of a demo before the rest are summed up in one line."""

AXIS_NAMES = {1: ("width",), 2: ("height", "width"), 3: ("depth", "height", "width")}
STRIDE_KEYS = ("strides", "stride")
DILATION_KEYS = ("dilation_rate", "dilation", "dilations")
EPSILON_KEYS = ("epsilon", "eps")
DEFAULT_EPSILON = {"keras": 1e-3, "pytorch": 1e-5, "onnx": 1e-5}

CONV_KINDS = frozenset(
    f"{prefix}{d}d" for prefix in ("conv", "conv_transpose", "depthwise_conv") for d in (1, 2, 3)
)


class ExplainError(ValueError):
    """The layer lacks what an account or demo needs, or an option does not fit it."""


# ---------------------------------------------------------------------------------------------
# small helpers


def _plural(count: int, word: str, plural: str | None = None) -> str:
    return f"{count:,} {word if count == 1 else (plural or word + 's')}"


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape)


def _kernel(k: Sequence[int]) -> str:
    """``3x3`` for a 2-D kernel size, ``length-4`` for a 1-D one (read before "kernel")."""
    return f"length-{k[0]}" if len(k) == 1 else _dims(k)


def _num(value: float) -> str:
    return f"{value:.8g}"


def _short(value: float) -> str:
    return f"{value:.4g}"


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


def _stored(tensor: Tensor) -> str:
    layout = f" {tensor.native_layout}" if tensor.native_layout else ""
    return f"{tuple(tensor.native_shape)}{layout}"


def _is_float(tensor: Tensor) -> bool:
    return tensor.dtype.startswith(("float", "bfloat"))


def _bias_text(count: int, bias: Tensor | None) -> str:
    return f" (+{_plural(count, 'bias', 'biases')})" if bias is not None else " (no bias)"


# ---------------------------------------------------------------------------------------------
# convolutions


@dataclass(frozen=True)
class ConvGeometry:
    """A conv layer's numbers, read from its canonical kernel ``(out, in/groups, *k)``."""

    kernel: Tensor
    bias: Tensor | None
    out: int
    per_group: int
    groups: int
    k: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    transposed: bool
    depthwise: bool

    @property
    def rank(self) -> int:
        return len(self.k)

    @property
    def in_channels(self) -> int:
        return self.per_group * self.groups

    @property
    def taps(self) -> int:
        return math.prod(self.k)

    @property
    def out_per_group(self) -> int:
        return self.out // self.groups

    @property
    def multiplier(self) -> int:
        return self.out // self.groups

    @property
    def pointwise(self) -> bool:
        return all(k == 1 for k in self.k)


def conv_geometry(layer: Layer, role: str = "kernel") -> ConvGeometry:
    kernel = _optional_tensor(layer, role)
    if kernel is None or kernel.canonical_shape is None:
        raise ExplainError(f"layer {layer.name!r} has no {role} with a canonical form")
    out, per_group, *k = kernel.canonical_shape
    groups = layer.groups if layer.groups >= 1 and out % layer.groups == 0 else 1
    if role == "pointwise_kernel":
        groups = 1
    transposed = layer.kind.startswith("conv_transpose")
    depthwise = not transposed and per_group == 1 and groups > 1
    return ConvGeometry(
        kernel=kernel,
        bias=_optional_tensor(layer, "bias") if role != "depthwise_kernel" else None,
        out=out,
        per_group=per_group,
        groups=groups,
        k=tuple(k),
        stride=_per_axis(layer.config, STRIDE_KEYS, len(k)),
        dilation=_per_axis(layer.config, DILATION_KEYS, len(k)),
        transposed=transposed,
        depthwise=depthwise,
    )


def _conv_account(layer: Layer, g: ConvGeometry) -> list[str]:
    k = _dims(g.k)
    kn = _kernel(g.k)
    volume = g.per_group * g.taps
    weights = g.out * volume
    lines = []
    if g.transposed:
        lines.append(
            f"A transposed convolution scatters each input pixel: the value x[i, p] of input "
            f"channel i at position p, times the {kn} kernel W[o, i], is added onto the output "
            f"window that starts at p * stride, for every output channel o"
            + (f" of the group of i ({g.groups} groups)" if g.groups > 1 else "")
            + "; where windows overlap their contributions add up, plus bias[o]."
        )
        lines.append(
            f"The canonical kernel {tuple(g.kernel.canonical_shape or ())} = "
            f"(out, in/groups, {', '.join(AXIS_NAMES.get(g.rank, ('k',) * g.rank))}) is from "
            f"the layer's own point of view: W[o, i] connects input channel i"
            + (" (counted within o's group)" if g.groups > 1 else "")
            + f" to output channel o (stored as {_stored(g.kernel)}); it is not a flipped "
            "ordinary conv."
        )
        lines.append(
            f"The layer holds {g.out} x {g.per_group} x {k} = {weights:,} weights"
            f"{_bias_text(g.out, g.bias)}; the output depth is {g.out}"
            + (
                f"; with stride {_dims(g.stride)} each spatial axis grows about stride times."
                if any(s > 1 for s in g.stride)
                else "."
            )
        )
        return lines
    if g.depthwise:
        m = g.multiplier
        if m == 1:
            own = f"a {kn} kernel of its own"
            source = "output channel c comes from input channel c alone"
        else:
            own = f"{m} kernels of its own ({kn} each)"
            source = f"output channel o = {m}c + m' comes from input channel c = o // {m} alone"
        lines.append(
            f"A depthwise convolution: each of the {g.groups} input channels is convolved with "
            f"{own}, with no mixing across channels: {source}"
            + (", plus bias[o]." if g.bias is not None else ".")
        )
        lines.append(
            f"The layer holds {g.groups} x {m} x {k} = {weights:,} weights"
            f"{_bias_text(g.out, g.bias)}; the output depth is {g.groups} x {m} = {g.out} "
            f"(depth multiplier {m}). Mixing channels is left to a following 1x1 (pointwise) "
            "convolution."
        )
        return lines
    if g.pointwise:
        lines.append(
            f"A {k} convolution is a per-pixel dense layer mixing channels: at every position, "
            f"output channel o = sum over the {g.per_group} input channels i"
            + (" of its group" if g.groups > 1 else "")
            + " of W[o, i] * x[i]"
            + (" + bias[o]" if g.bias is not None else "")
            + f", the same {g.out} x {g.per_group} matrix applied at every pixel."
        )
        if g.groups > 1:
            lines.append(
                f"In {g.groups} groups of {g.per_group} input channels: filter o sees only the "
                f"channels of its group o // {g.out_per_group}."
            )
        lines.append(
            f"The layer holds {g.out} x {g.per_group} = {weights:,} weights"
            f"{_bias_text(g.out, g.bias)}; the output depth is {g.out}."
        )
        return lines
    if g.groups > 1:
        lines.append(
            f"A grouped convolution: {g.groups} groups of {g.in_channels}/{g.groups} = "
            f"{g.per_group} input channels each; filter o belongs to group o // "
            f"{g.out_per_group} ({g.out_per_group} filters per group) and sees only its "
            f"group's {g.per_group} channels."
        )
    bias_part = ", plus bias[o]." if g.bias is not None else " (no bias)."
    if g.per_group == 1:
        lines.append(
            f"Each filter is a {k}x1 volume, that is one {kn} kernel for the single input "
            f"channel ({volume:,} weights); output channel o is the cross-correlation of the "
            f"input with that kernel{bias_part}"
        )
    else:
        channels = "its group's" if g.groups > 1 else "the"
        lines.append(
            f"Each filter is a {k}x{g.per_group} volume, that is {g.per_group} separate {kn} "
            f"kernels, one per input channel ({volume:,} weights); output channel o is the sum "
            f"over {channels} {g.per_group} input channels of each channel's cross-correlation "
            f"with its own kernel{bias_part}"
        )
    total = f"The layer holds {g.out} x {volume:,} = {weights:,} weights{_bias_text(g.out, g.bias)}"
    if g.groups > 1:
        total += (
            f", {g.groups} times fewer than an ungrouped conv on the same channels "
            f"({g.out * g.in_channels * g.taps:,})"
        )
    lines.append(f"{total}; the output depth is the number of filters, {g.out}.")
    return lines


def _layout_line(g: ConvGeometry) -> str:
    shape = g.kernel.canonical_shape or ()
    if g.depthwise:
        return (
            f"Kernel stored as {_stored(g.kernel)}, canonical {tuple(shape)} "
            f"{g.kernel.canonical_layout}: W[o, 0] is the {_kernel(g.k)} kernel that output "
            f"channel o applies to input channel o // {g.multiplier}."
        )
    return (
        f"Kernel stored as {_stored(g.kernel)}, canonical {tuple(shape)} "
        f"{g.kernel.canonical_layout}: W[o, i] is the {_kernel(g.k)} kernel that output channel o "
        f"applies to input channel i{' of its group' if g.groups > 1 else ''}."
    )


def _motion_line(g: ConvGeometry) -> str | None:
    parts = []
    if any(s > 1 for s in g.stride):
        parts.append(f"stride {_dims(g.stride)}: the window moves that many pixels per output")
    if any(d > 1 for d in g.dilation):
        parts.append(f"dilation {_dims(g.dilation)}: the kernel taps are that far apart")
    return "; ".join(parts).capitalize() + "." if parts else None


@dataclass(frozen=True)
class ConvDemo:
    """One output value of a conv layer, worked out with its real weights."""

    input: np.ndarray
    """The demo input, channels first: ``(in_channels, *spatial)`` (float32)."""
    output_channel: int
    position: tuple[int, ...]
    """The output position (spatial indices) computed."""
    channels: tuple[int, int]
    """The input channels the filter reads: ``range(*channels)``."""
    patch: np.ndarray
    """What multiplies the kernel volume, ``(in/groups, *k)``: the input window (for a
    transposed conv: the input pixels that scatter onto ``position``, zero where none does)."""
    kernel: np.ndarray
    """The filter's kernel volume ``W[o]``, ``(in/groups, *k)``."""
    products_sum: float
    dot: float
    bias: float

    @property
    def output(self) -> float:
        return self.products_sum + self.bias

    @property
    def difference(self) -> float:
        return abs(self.products_sum - self.dot)

    @property
    def agree(self) -> bool:
        return self.difference <= CHECK_TOLERANCE


def _demo_input(shape: Sequence[int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.round(rng.standard_normal(tuple(shape)), 2).astype(np.float32)


def _weights(tensor: Tensor) -> np.ndarray:
    if not _is_float(tensor):
        raise ExplainError(
            f"{tensor.role} is stored as {tensor.dtype} (quantized): no demo with raw integers"
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
    extent = tuple(d * (k - 1) + 1 for k, d in zip(g.k, g.dilation, strict=True))
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
            slice(p * s, p * s + e, d)
            for p, s, e, d in zip(pos, g.stride, extent, g.dilation, strict=True)
        )
        index: tuple[Any, ...] = (slice(first, first + g.per_group), *window)
        patch = x[index].astype(np.float64)
    volume = weights[o]
    return ConvDemo(
        input=x,
        output_channel=o,
        position=pos,
        channels=(first, first + g.per_group),
        patch=patch,
        kernel=volume,
        products_sum=float((volume * patch).sum()),
        dot=float(np.dot(volume.reshape(-1), patch.reshape(-1))),
        bias=_bias_value(g.bias, o),
    )


def _grid(array: np.ndarray, indent: str) -> list[str]:
    """A small 1-D or 2-D array as aligned rows."""
    rows = array.reshape(1, -1) if array.ndim == 1 else array
    return [indent + "  ".join(f"{v:7.3f}" for v in row) for row in rows]


def _conv_demo_text(layer: Layer, demo: ConvDemo, seed: int) -> list[str]:
    g = conv_geometry(layer)
    axes = ", ".join(AXIS_NAMES.get(g.rank, ("axis",) * g.rank))
    o, pos = demo.output_channel, demo.position
    first, stop = demo.channels
    k = _dims(g.k)
    lines = [
        "",
        f"Demo (seed {seed}): input x of shape {demo.input.shape} = (channels, {axes}), "
        "random values rounded to 2 decimals; the layer applied without padding"
        + (f", stride {_dims(g.stride)}" if any(s > 1 for s in g.stride) else "")
        + (f", dilation {_dims(g.dilation)}" if any(d > 1 for d in g.dilation) else "")
        + ".",
    ]
    where = f"output[{o}, {', '.join(map(str, pos))}]"
    if g.transposed:
        lines.append(
            f"{where} collects every input pixel whose scattered {k} window covers position "
            f"{pos}: gathered into a {k}x{g.per_group} volume (zero where no pixel lands), "
            f"input channels {first}..{stop - 1}."
        )
    else:
        span = ", ".join(
            f"{p * s}:{p * s + d * (kk - 1) + 1}" + (f":{d}" if d > 1 else "")
            for p, s, d, kk in zip(pos, g.stride, g.dilation, g.k, strict=True)
        )
        lines.append(
            f"{where} (filter {o}) reads the patch x[{first}:{stop}, {span}], a "
            f"{k}x{g.per_group} volume" + _group_text(g, first, stop) + "."
        )
    products = (demo.kernel * demo.patch).reshape(g.per_group, -1).sum(axis=1)
    shown = min(g.per_group, SHOWN_CHANNELS)
    small = g.taps <= 9 and g.rank <= 2
    for i in range(shown):
        channel = first + i
        if g.pointwise:
            weight, value = (
                float(demo.kernel[i].reshape(-1)[0]),
                float(demo.patch[i].reshape(-1)[0]),
            )
            lines.append(
                f"  channel {channel}: W[{o}, {i}] * x[{channel}] = {_short(weight)} * "
                f"{_short(value)} = {_num(products[i])}"
            )
            continue
        lines.append(
            f"  channel {channel}: sum of the {k} element-wise products of kernel W[{o}, {i}] "
            f"and its patch = {_num(products[i])}"
        )
        if small and i == 0:
            lines.append(f"    kernel W[{o}, {i}]:")
            lines.extend(_grid(demo.kernel[i], "      "))
            lines.append("    patch:")
            lines.extend(_grid(demo.patch[i], "      "))
    if g.per_group > shown:
        rest = float(products[shown:].sum())
        lines.append(f"  channels {first + shown}..{stop - 1}: {_num(rest)} together")
    size = demo.kernel.size
    lines += [
        f"Sum of element-wise products over the {k}x{g.per_group} volume: "
        f"{_num(demo.products_sum)}",
        f"Dot product of the flattened kernel and patch ({size:,} values each): {_num(demo.dot)}",
        f"bias[{o}] = {_num(demo.bias)}" if g.bias is not None else "no bias",
        f"{where} = {_num(demo.products_sum)} {_plus(demo.bias)} = {_num(demo.output)}",
        _check_line(demo.difference, "sum", "dot"),
    ]
    return lines


def _group_text(g: ConvGeometry, first: int, stop: int) -> str:
    if g.groups == 1:
        return ""
    if g.per_group == 1:
        return f" (input channel {first} only)"
    return f" (group {first // g.per_group}: input channels {first}..{stop - 1})"


def _plus(value: float) -> str:
    return f"- {_num(-value)}" if value < 0 else f"+ {_num(value)}"


def _check_line(difference: float, a: str, b: str) -> str:
    verdict = "they agree" if difference <= CHECK_TOLERANCE else "THEY DISAGREE"
    relation = "<=" if difference <= CHECK_TOLERANCE else ">"
    return f"Check: |{a} - {b}| = {difference:.2g} {relation} {CHECK_TOLERANCE:g}: {verdict}."


# ---------------------------------------------------------------------------------------------
# separable convolutions (Keras): a depthwise step, then a pointwise one


@dataclass(frozen=True)
class SeparableDemo:
    input: np.ndarray
    output_channel: int
    position: tuple[int, ...]
    depthwise: np.ndarray
    """The depthwise step's outputs at ``position``, one per intermediate channel."""
    pointwise: np.ndarray
    """The pointwise weights of ``output_channel`` over the intermediate channels."""
    products_sum: float
    dot: float
    bias: float

    @property
    def output(self) -> float:
        return self.products_sum + self.bias

    @property
    def difference(self) -> float:
        return abs(self.products_sum - self.dot)


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
    extent = tuple(d * (k - 1) + 1 for k, d in zip(dw.k, dw.dilation, strict=True))
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
        input=x,
        output_channel=o,
        position=pos,
        depthwise=middle,
        pointwise=weights,
        products_sum=float((weights * middle).sum()),
        dot=float(np.dot(weights, middle)),
        bias=_bias_value(_optional_tensor(layer, "bias"), o),
    )


def _separable_account(layer: Layer) -> list[str]:
    dw = conv_geometry(layer, "depthwise_kernel")
    pw = conv_geometry(layer, "pointwise_kernel")
    bias = _optional_tensor(layer, "bias")
    k = _dims(dw.k)
    kn = _kernel(dw.k)
    depthwise = dw.out * dw.taps
    pointwise = pw.out * pw.per_group
    return [
        f"A separable convolution in two steps. Depthwise: each of the {dw.groups} input "
        f"channels is convolved with {_plural(dw.multiplier, 'kernel')} of its own ({kn}) (no "
        f"mixing), giving {dw.groups} x {dw.multiplier} = {dw.out} channels ({dw.groups} x "
        f"{dw.multiplier} x {k} = {depthwise:,} weights, canonical "
        f"{tuple(dw.kernel.canonical_shape or ())}).",
        f"Pointwise: a 1x1 convolution mixes those {dw.out} channels into {pw.out} filters, a "
        f"per-pixel dense layer ({pw.out} x {pw.per_group} = {pointwise:,} weights"
        f"{_bias_text(pw.out, bias)}).",
        f"The layer holds {depthwise:,} + {pointwise:,} = {depthwise + pointwise:,} weights"
        f"{_bias_text(pw.out, bias)}, against {pw.out * dw.groups * dw.taps:,} for an ordinary "
        f"{k} conv with the same {dw.groups} inputs and {pw.out} filters; the output depth is "
        f"{pw.out}.",
    ]


def _separable_demo_text(layer: Layer, demo: SeparableDemo, seed: int) -> list[str]:
    dw = conv_geometry(layer, "depthwise_kernel")
    axes = ", ".join(AXIS_NAMES.get(dw.rank, ("axis",) * dw.rank))
    where = f"output[{demo.output_channel}, {', '.join(map(str, demo.position))}]"
    lines = [
        "",
        f"Demo (seed {seed}): input x of shape {demo.input.shape} = (channels, {axes}), "
        "random values rounded to 2 decimals; the layer applied without padding.",
        f"Depthwise step at position {demo.position}: channel j = {dw.multiplier}c + m is "
        f"the sum of the {_dims(dw.k)} products of input channel c's patch and its own kernel:",
    ]
    shown = min(len(demo.depthwise), SHOWN_CHANNELS)
    lines += [
        f"  d[{j}] = {_num(demo.depthwise[j])}  (x pointwise weight {_short(demo.pointwise[j])})"
        for j in range(shown)
    ]
    if len(demo.depthwise) > shown:
        lines.append(f"  ... {len(demo.depthwise) - shown} more intermediate channels")
    lines += [
        f"Pointwise step, sum of element-wise products of the {len(demo.depthwise)} values "
        f"and filter {demo.output_channel}'s weights: {_num(demo.products_sum)}",
        f"Dot product of the two ({len(demo.depthwise)} values each): {_num(demo.dot)}",
        f"bias[{demo.output_channel}] = {_num(demo.bias)}",
        f"{where} = {_num(demo.products_sum)} {_plus(demo.bias)} = {_num(demo.output)}",
        _check_line(demo.difference, "sum", "dot"),
    ]
    return lines


# ---------------------------------------------------------------------------------------------
# dense, batch norm, layer norm, embedding


@dataclass(frozen=True)
class DenseDemo:
    input: np.ndarray
    unit: int
    weights: np.ndarray
    products_sum: float
    dot: float
    bias: float

    @property
    def output(self) -> float:
        return self.products_sum + self.bias

    @property
    def difference(self) -> float:
        return abs(self.products_sum - self.dot)


def dense_demo(layer: Layer, output_channel: int | None = None, seed: int = DEMO_SEED) -> DenseDemo:
    kernel = layer.tensor("kernel")
    weights = _weights(kernel)
    if weights.ndim != 2:
        raise ExplainError(f"layer {layer.name!r} has a {weights.ndim}-D kernel")
    unit = _pick_output(weights.shape[0], output_channel, 0, "unit")
    x = _demo_input((weights.shape[1],), seed)
    row = weights[unit]
    return DenseDemo(
        input=x,
        unit=unit,
        weights=row,
        products_sum=float((row * x).sum()),
        dot=float(np.dot(row, x.astype(np.float64))),
        bias=_bias_value(_optional_tensor(layer, "bias"), unit),
    )


def _dense_account(layer: Layer) -> list[str]:
    kernel = layer.tensor("kernel")
    shape = kernel.canonical_shape
    if shape is None or len(shape) != 2:
        raise ExplainError(f"layer {layer.name!r} has no 2-D kernel with a canonical form")
    out, inputs = shape
    bias = _optional_tensor(layer, "bias")
    return [
        f"A dense (fully connected) layer: a matrix W of {out:,} x {inputs:,}, canonical (out, in) "
        f"(stored as {_stored(kernel)}).",
        f"Output unit j = sum over the {inputs:,} inputs of W[j, i] * x[i]"
        + (" + bias[j]" if bias is not None else "")
        + f": each of the {out:,} units has its own {inputs:,} weights, one per input.",
        f"The layer holds {out:,} x {inputs:,} = {out * inputs:,} weights{_bias_text(out, bias)}.",
    ]


def _dense_demo_text(demo: DenseDemo, seed: int) -> list[str]:
    n = demo.input.size
    shown = min(n, SHOWN_CHANNELS)
    lines = [
        "",
        f"Demo (seed {seed}): input x of {n:,} random values rounded to 2 decimals.",
    ]
    lines += [
        f"  W[{demo.unit}, {i}] * x[{i}] = {_short(demo.weights[i])} * {_short(demo.input[i])} "
        f"= {_num(demo.weights[i] * float(demo.input[i]))}"
        for i in range(shown)
    ]
    if n > shown:
        rest = float((demo.weights[shown:] * demo.input[shown:]).sum())
        lines.append(f"  inputs {shown}..{n - 1}: {_num(rest)} together")
    lines += [
        f"Sum of element-wise products of row W[{demo.unit}] and x: {_num(demo.products_sum)}",
        f"Dot product W[{demo.unit}] . x ({n:,} values each): {_num(demo.dot)}",
        f"bias[{demo.unit}] = {_num(demo.bias)}",
        f"output[{demo.unit}] = {_num(demo.products_sum)} {_plus(demo.bias)} = {_num(demo.output)}",
        _check_line(demo.difference, "sum", "dot"),
    ]
    return lines


@dataclass(frozen=True)
class BatchNormDemo:
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
    shift: float

    @property
    def folded(self) -> np.ndarray:
        return self.scale * self.input.astype(np.float64) + self.shift

    @property
    def difference(self) -> float:
        return float(np.max(np.abs(self.formula - self.folded)))


def _epsilon(layer: Layer) -> tuple[float, bool]:
    for key in EPSILON_KEYS:
        value = layer.config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value), True
    return DEFAULT_EPSILON.get(layer.framework or "", 1e-5), False


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
        c, x, gamma, beta, mean, variance, epsilon, formula, scale, beta - scale * mean
    )


def _batch_norm_account(layer: Layer) -> list[str]:
    channels = _bn_channels(layer)
    epsilon, given = _epsilon(layer)
    has_gamma = _optional_tensor(layer, "gamma") is not None
    has_beta = _optional_tensor(layer, "beta") is not None
    learned = [r for r, on in (("gamma", has_gamma), ("beta", has_beta)) if on]
    lines = [
        f"Batch normalization of {_plural(channels, 'channel')}, each on its own: at inference "
        "y = "
        + ("gamma[c] * " if has_gamma else "")
        + "(x - moving_mean[c]) / sqrt(moving_variance[c] + eps)"
        + (" + beta[c]" if has_beta else "")
        + f", eps = {epsilon:g}"
        + ("" if given else " (the framework's default; the file does not say)")
        + ".",
        (
            f"{' and '.join(learned)} {'are' if len(learned) > 1 else 'is'} learned "
            f"(trainable, {len(learned)} x {channels} = {len(learned) * channels:,}); "
            if learned
            else "No learned scale or shift; "
        )
        + f"the moving mean and variance are running averages collected during training "
        f"(non-trainable, 2 x {channels} = {2 * channels:,}; PyTorch keeps them as buffers, "
        "outside parameters()).",
    ]
    gamma = _vector(layer, "gamma", 1.0, channels)
    beta = _vector(layer, "beta", 0.0, channels)
    mean = _vector(layer, "moving_mean", 0.0, channels)
    variance = _vector(layer, "moving_variance", 1.0, channels)
    scale = gamma / np.sqrt(variance + epsilon)
    shift = beta - scale * mean
    lines.append(
        "At inference this is a per-channel affine map y = a[c] * x + b[c], a = gamma / "
        "sqrt(var + eps), b = beta - a * mean; channel 0: "
        f"a = {_short(float(scale[0]))}, b = {_short(float(shift[0]))}."
    )
    return lines


def _batch_norm_demo_text(demo: BatchNormDemo, seed: int) -> list[str]:
    c = demo.channel
    lines = [
        "",
        f"Demo (seed {seed}): three input values of channel {c}: "
        + ", ".join(_short(float(v)) for v in demo.input),
        f"gamma[{c}] = {_num(demo.gamma)}, beta[{c}] = {_num(demo.beta)}, moving_mean[{c}] = "
        f"{_num(demo.mean)}, moving_variance[{c}] = {_num(demo.variance)}, eps = "
        f"{demo.epsilon:g}",
    ]
    for x, y, z in zip(demo.input, demo.formula, demo.folded, strict=True):
        lines.append(
            f"  x = {_short(float(x))}: gamma * (x - mean) / sqrt(var + eps) + beta = {_num(y)}; "
            f"a * x + b = {_num(z)}"
        )
    lines.append(_check_line(demo.difference, "formula", "(a * x + b)"))
    return lines


def _layer_norm_account(layer: Layer) -> list[str]:
    gamma = _optional_tensor(layer, "gamma")
    beta = _optional_tensor(layer, "beta")
    first = gamma or beta
    width = first.size if first is not None else 0
    shape = tuple(first.native_shape) if first is not None else ()
    return [
        f"Layer normalization: each sample is normalized over its last {_dims(shape)} "
        f"features (mean 0, variance 1 across them, not across the batch), then "
        + ("scaled by gamma" if gamma is not None else "not scaled")
        + " and "
        + ("shifted by beta" if beta is not None else "not shifted")
        + " element-wise.",
        f"The layer holds {sum(t is not None for t in (gamma, beta))} x {width:,} weights; no "
        "running statistics (the same computation in training and inference).",
    ]


def _embedding_account(layer: Layer) -> list[str]:
    table = layer.tensor("embeddings")
    shape = table.canonical_shape or table.native_shape
    vocab, width = shape[0], shape[-1]
    return [
        f"An embedding: a lookup table of {vocab:,} rows of {width:,} numbers; token id t "
        "becomes row t (no multiplication happens; equivalently a one-hot vector times the "
        "table).",
        f"The layer holds {vocab:,} x {width:,} = {vocab * width:,} weights.",
    ]


def _unknown_account(layer: Layer) -> list[str]:
    tensors = ", ".join(f"{t.role} {tuple(t.native_shape)}" for t in layer.tensors)
    return [
        f"weightscope has no account of {layer.class_name or 'this layer'}: it stores "
        f"{tensors or 'nothing'} ({layer.params:,} parameters)."
    ]


# ---------------------------------------------------------------------------------------------
# the entry point


def explain(
    layer: Layer,
    demo: bool = False,
    position: Sequence[int] | None = None,
    output_channel: int | None = None,
    seed: int = DEMO_SEED,
) -> str:
    """A short plain-language account of what ``layer`` computes, from its own numbers; with
    ``demo``, one output value worked out with the real weights (see :func:`conv_demo`).
    ``position`` (output spatial indices) and ``output_channel`` (filter, unit or channel)
    choose the value shown."""
    framework = f", {layer.framework}" if layer.framework else ""
    title = f"{printable(layer.name)}: {layer.class_name or layer.kind} ({layer.kind}{framework})"
    kind = layer.kind
    lines = [title]
    if kind in CONV_KINDS:
        g = conv_geometry(layer)
        lines += _conv_account(layer, g)
        if not g.transposed:  # the transposed account has its own layout sentence
            lines.append(_layout_line(g))
            motion = _motion_line(g)
            if motion:
                lines.append(motion)
        if demo:
            lines += _conv_demo_text(layer, conv_demo(layer, output_channel, position, seed), seed)
    elif kind.startswith("separable_conv"):
        lines += _separable_account(layer)
        if demo:
            result = separable_demo(layer, output_channel, position, seed)
            lines += _separable_demo_text(layer, result, seed)
    elif kind == "dense":
        lines += _dense_account(layer)
        if demo:
            lines += _dense_demo_text(dense_demo(layer, output_channel, seed), seed)
    elif kind == "batch_norm":
        lines += _batch_norm_account(layer)
        if demo:
            lines += _batch_norm_demo_text(batch_norm_demo(layer, output_channel, seed), seed)
    else:
        if kind == "layer_norm":
            lines += _layer_norm_account(layer)
        elif kind == "embedding":
            lines += _embedding_account(layer)
        else:
            lines += _unknown_account(layer)
        if demo:
            lines += ["", f"No demo for a {kind} layer: it has no kernel volume to show."]
    if layer.inferred and layer.note:
        lines.append(f"(Kind inferred: {layer.note}.)")
    return "\n".join(lines)
