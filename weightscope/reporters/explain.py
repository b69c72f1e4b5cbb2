"""Plain-language accounts of what one layer computes, from that layer's own numbers
(``weightscope explain``, :meth:`weightscope.model.Layer.explain`), and a worked demo with its
real weights: one output value computed as the sum of element-wise products of the kernel volume
and an input patch, and again as the dot product of the two flattened, checked to agree.

Only the words are here: the numbers come as dataclasses from
:func:`weightscope.analysis.explain.explain_layer` (whose :func:`~weightscope.analysis.explain.
conv_demo`, :func:`~weightscope.analysis.explain.dense_demo` and friends return the demos, input
included, for anyone who wants to recompute them with the framework itself).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from weightscope import layouts
from weightscope.analysis.explain import (
    CHECK_TOLERANCE,
    DEMO_SEED,
    BatchNormDemo,
    BatchNormGeometry,
    ConvDemo,
    ConvGeometry,
    DenseDemo,
    DenseGeometry,
    EmbeddingGeometry,
    LayerExplanation,
    LayerNormGeometry,
    RecurrentGeometry,
    SeparableDemo,
    SeparableGeometry,
    UnknownGeometry,
    explain_layer,
)
from weightscope.errors import printable
from weightscope.model import Layer, Tensor

SHOWN_CHANNELS = 8
"""Per-channel lines of a demo before the rest are summed up in one line."""

AXIS_NAMES = {1: ("width",), 2: ("height", "width"), 3: ("depth", "height", "width")}


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


def _stored(tensor: Tensor) -> str:
    layout = f" {tensor.native_layout}" if tensor.native_layout else ""
    return f"{tuple(tensor.native_shape)}{layout}"


def _bias_text(count: int, bias: Tensor | None) -> str:
    return f" (+{_plural(count, 'bias', 'biases')})" if bias is not None else " (no bias)"


def _plus(value: float) -> str:
    return f"- {_num(-value)}" if value < 0 else f"+ {_num(value)}"


def _check_line(difference: float, agree: bool, a: str, b: str) -> str:
    verdict = "they agree" if agree else "THEY DISAGREE"
    relation = "<=" if agree else ">"
    return f"Check: |{a} - {b}| = {difference:.2g} {relation} {CHECK_TOLERANCE:g}: {verdict}."


def _grid(array: np.ndarray, indent: str) -> list[str]:
    """A small 1-D or 2-D array as aligned rows."""
    rows = array.reshape(1, -1) if array.ndim == 1 else array
    return [indent + "  ".join(f"{v:7.3f}" for v in row) for row in rows]


# ---------------------------------------------------------------------------------------------
# convolutions


def _conv_account(g: ConvGeometry) -> list[str]:
    k = _dims(g.k)
    kn = _kernel(g.k)
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
            f"The layer holds {g.out} x {g.per_group} x {k} = {g.weights:,} weights"
            f"{_bias_text(g.out, g.bias)}; the output depth is {g.out}"
            + (
                f"; with stride {_dims(g.stride)} each spatial axis grows about stride times."
                if g.strided
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
            f"The layer holds {g.groups} x {m} x {k} = {g.weights:,} weights"
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
            f"The layer holds {g.out} x {g.per_group} = {g.weights:,} weights"
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
            f"channel ({g.volume:,} weights); output channel o is the cross-correlation of the "
            f"input with that kernel{bias_part}"
        )
    else:
        channels = "its group's" if g.groups > 1 else "the"
        lines.append(
            f"Each filter is a {k}x{g.per_group} volume, that is {g.per_group} separate {kn} "
            f"kernels, one per input channel ({g.volume:,} weights); output channel o is the sum "
            f"over {channels} {g.per_group} input channels of each channel's cross-correlation "
            f"with its own kernel{bias_part}"
        )
    total = f"The layer holds {g.out} x {g.volume:,} = {g.weights:,} weights"
    total += _bias_text(g.out, g.bias)
    if g.groups > 1:
        total += (
            f", {g.groups} times fewer than an ungrouped conv on the same channels "
            f"({g.ungrouped_weights:,})"
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
    if g.strided:
        parts.append(f"stride {_dims(g.stride)}: the window moves that many pixels per output")
    if g.dilated:
        parts.append(f"dilation {_dims(g.dilation)}: the kernel taps are that far apart")
    return "; ".join(parts).capitalize() + "." if parts else None


def _conv_demo_text(g: ConvGeometry, demo: ConvDemo) -> list[str]:
    axes = ", ".join(AXIS_NAMES.get(g.rank, ("axis",) * g.rank))
    o, pos = demo.output_channel, demo.position
    first, stop = demo.channels
    k = _dims(g.k)
    lines = [
        "",
        f"Demo (seed {demo.seed}): input x of shape {demo.input.shape} = (channels, {axes}), "
        "random values rounded to 2 decimals; the layer applied without padding"
        + (f", stride {_dims(g.stride)}" if g.strided else "")
        + (f", dilation {_dims(g.dilation)}" if g.dilated else "")
        + ".",
    ]
    where = f"output[{o}, {', '.join(map(str, pos))}]"
    if demo.window is None:
        lines.append(
            f"{where} collects every input pixel whose scattered {k} window covers position "
            f"{pos}: gathered into a {k}x{g.per_group} volume (zero where no pixel lands), "
            f"input channels {first}..{stop - 1}."
        )
    else:
        span = ", ".join(
            f"{start}:{end}" + (f":{step}" if step > 1 else "") for start, end, step in demo.window
        )
        lines.append(
            f"{where} (filter {o}) reads the patch x[{first}:{stop}, {span}], a "
            f"{k}x{g.per_group} volume" + _group_text(g, demo) + "."
        )
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
                f"{_short(value)} = {_num(demo.channel_sums[i])}"
            )
            continue
        lines.append(
            f"  channel {channel}: sum of the {k} element-wise products of kernel W[{o}, {i}] "
            f"and its patch = {_num(demo.channel_sums[i])}"
        )
        if small and i == 0:
            lines.append(f"    kernel W[{o}, {i}]:")
            lines.extend(_grid(demo.kernel[i], "      "))
            lines.append("    patch:")
            lines.extend(_grid(demo.patch[i], "      "))
    if g.per_group > shown:
        rest = demo.channel_sums_from(shown)
        lines.append(f"  channels {first + shown}..{stop - 1}: {_num(rest)} together")
    size = demo.kernel.size
    lines += [
        f"Sum of element-wise products over the {k}x{g.per_group} volume: "
        f"{_num(demo.products_sum)}",
        f"Dot product of the flattened kernel and patch ({size:,} values each): {_num(demo.dot)}",
        f"bias[{o}] = {_num(demo.bias)}" if g.bias is not None else "no bias",
        f"{where} = {_num(demo.products_sum)} {_plus(demo.bias)} = {_num(demo.output)}",
        _check_line(demo.difference, demo.agree, "sum", "dot"),
    ]
    return lines


def _group_text(g: ConvGeometry, demo: ConvDemo) -> str:
    if g.groups == 1:
        return ""
    first, stop = demo.channels
    if g.per_group == 1:
        return f" (input channel {first} only)"
    return f" (group {demo.group}: input channels {first}..{stop - 1})"


# ---------------------------------------------------------------------------------------------
# separable convolutions (Keras): a depthwise step, then a pointwise one


def _separable_account(s: SeparableGeometry) -> list[str]:
    dw, pw = s.depthwise, s.pointwise
    k = _dims(dw.k)
    kn = _kernel(dw.k)
    return [
        f"A separable convolution in two steps. Depthwise: each of the {dw.groups} input "
        f"channels is convolved with {_plural(dw.multiplier, 'kernel')} of its own ({kn}) (no "
        f"mixing), giving {dw.groups} x {dw.multiplier} = {dw.out} channels ({dw.groups} x "
        f"{dw.multiplier} x {k} = {s.depthwise_weights:,} weights, canonical "
        f"{tuple(dw.kernel.canonical_shape or ())}).",
        f"Pointwise: a 1x1 convolution mixes those {dw.out} channels into {pw.out} filters, a "
        f"per-pixel dense layer ({pw.out} x {pw.per_group} = {s.pointwise_weights:,} weights"
        f"{_bias_text(pw.out, s.bias)}).",
        f"The layer holds {s.depthwise_weights:,} + {s.pointwise_weights:,} = {s.weights:,} "
        f"weights{_bias_text(pw.out, s.bias)}, against {s.ordinary_weights:,} for an ordinary "
        f"{k} conv with the same {dw.groups} inputs and {pw.out} filters; the output depth is "
        f"{pw.out}.",
    ]


def _separable_demo_text(s: SeparableGeometry, demo: SeparableDemo) -> list[str]:
    dw = s.depthwise
    axes = ", ".join(AXIS_NAMES.get(dw.rank, ("axis",) * dw.rank))
    where = f"output[{demo.output_channel}, {', '.join(map(str, demo.position))}]"
    lines = [
        "",
        f"Demo (seed {demo.seed}): input x of shape {demo.input.shape} = (channels, {axes}), "
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
        _check_line(demo.difference, demo.agree, "sum", "dot"),
    ]
    return lines


# ---------------------------------------------------------------------------------------------
# dense, batch norm, layer norm, embedding


def _dense_account(d: DenseGeometry) -> list[str]:
    out, inputs = d.out, d.inputs
    return [
        f"A dense (fully connected) layer: a matrix W of {out:,} x {inputs:,}, canonical (out, in) "
        f"(stored as {_stored(d.kernel)}).",
        f"Output unit j = sum over the {inputs:,} inputs of W[j, i] * x[i]"
        + (" + bias[j]" if d.bias is not None else "")
        + f": each of the {out:,} units has its own {inputs:,} weights, one per input.",
        f"The layer holds {out:,} x {inputs:,} = {d.weights:,} weights{_bias_text(out, d.bias)}.",
    ]


def _dense_demo_text(demo: DenseDemo) -> list[str]:
    n = demo.input.size
    shown = min(n, SHOWN_CHANNELS)
    lines = [
        "",
        f"Demo (seed {demo.seed}): input x of {n:,} random values rounded to 2 decimals.",
    ]
    lines += [
        f"  W[{demo.unit}, {i}] * x[{i}] = {_short(demo.weights[i])} * {_short(demo.input[i])} "
        f"= {_num(demo.products[i])}"
        for i in range(shown)
    ]
    if n > shown:
        lines.append(f"  inputs {shown}..{n - 1}: {_num(demo.products_from(shown))} together")
    lines += [
        f"Sum of element-wise products of row W[{demo.unit}] and x: {_num(demo.products_sum)}",
        f"Dot product W[{demo.unit}] . x ({n:,} values each): {_num(demo.dot)}",
        f"bias[{demo.unit}] = {_num(demo.bias)}",
        f"output[{demo.unit}] = {_num(demo.products_sum)} {_plus(demo.bias)} = {_num(demo.output)}",
        _check_line(demo.difference, demo.agree, "sum", "dot"),
    ]
    return lines


def _batch_norm_account(b: BatchNormGeometry) -> list[str]:
    channels = b.channels
    learned = b.learned
    return [
        f"Batch normalization of {_plural(channels, 'channel')}, each on its own: at inference "
        "y = "
        + ("gamma[c] * " if b.has_gamma else "")
        + "(x - moving_mean[c]) / sqrt(moving_variance[c] + eps)"
        + (" + beta[c]" if b.has_beta else "")
        + f", eps = {b.epsilon:g}"
        + ("" if b.epsilon_given else " (the framework's default; the file does not say)")
        + ".",
        (
            f"{' and '.join(learned)} {'are' if len(learned) > 1 else 'is'} learned "
            f"(trainable, {len(learned)} x {channels} = {b.learned_weights:,}); "
            if learned
            else "No learned scale or shift; "
        )
        + f"the moving mean and variance are running averages collected during training "
        f"(non-trainable, 2 x {channels} = {b.statistics:,}; PyTorch keeps them as buffers, "
        "outside parameters()).",
        "At inference this is a per-channel affine map y = a[c] * x + b[c], a = gamma / "
        "sqrt(var + eps), b = beta - a * mean; channel 0: "
        f"a = {_short(float(b.scale[0]))}, b = {_short(float(b.shift[0]))}.",
    ]


def _batch_norm_demo_text(demo: BatchNormDemo) -> list[str]:
    c = demo.channel
    lines = [
        "",
        f"Demo (seed {demo.seed}): three input values of channel {c}: "
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
    lines.append(_check_line(demo.difference, demo.agree, "formula", "(a * x + b)"))
    return lines


def _layer_norm_account(n: LayerNormGeometry) -> list[str]:
    return [
        f"Layer normalization: each sample is normalized over its last "
        f"{_dims(n.normalized_shape)} features (mean 0, variance 1 across them, not across the "
        "batch), then "
        + ("scaled by gamma" if n.scaled else "not scaled")
        + " and "
        + ("shifted by beta" if n.shifted else "not shifted")
        + " element-wise.",
        f"The layer holds {n.vectors} x {n.width:,} weights; no "
        "running statistics (the same computation in training and inference).",
    ]


def _embedding_account(e: EmbeddingGeometry) -> list[str]:
    return [
        f"An embedding: a lookup table of {e.vocab:,} rows of {e.width:,} numbers; token id t "
        "becomes row t (no multiplication happens; equivalently a one-hot vector times the "
        "table).",
        f"The layer holds {e.vocab:,} x {e.width:,} = {e.weights:,} weights.",
    ]


_GATE_ROLES = {
    "i": "how much of the candidate enters the cell",
    "f": "how much of the cell state is kept",
    "g": "the candidate values (tanh)",
    "o": "how much of the cell state becomes the output",
    "z": "how much of the old state is kept",
    "r": "how much of the old state the candidate sees",
    "n": "the candidate state (tanh)",
    "h": "the new state (tanh)",
}


def _recurrent_account(r: RecurrentGeometry, kind: str) -> list[str]:
    names = {"lstm": "An LSTM", "gru": "A GRU", "simple_rnn": "A simple RNN"}
    count = len(r.gates)
    lines = [
        f"{names.get(kind, kind)} (one direction of one layer): at every step it reads "
        f"{_plural(r.inputs, 'input feature')} and its own previous state of "
        f"{_plural(r.recurrent_inputs, 'number')}, and computes "
        + (
            f"{count} gates of {r.units:,} units each:"
            if count > 1
            else f"a new state of {r.units:,} units:"
        )
    ]
    for gate in r.gates:
        name = layouts.GATE_NAMES[gate]
        lines.append(f"  {gate} ({name}): {_GATE_ROLES[gate]}")
    if kind == "lstm":
        lines.append("  cell c = f * c + i * g; output h = o * tanh(c)")
    elif kind == "gru":
        where = (
            "r * (R_n h + recurrent bias), the reset after the product"
            if r.reset_after is not False
            else "R_n (r * h), the reset before the product"
        )
        lines.append(f"  h = z * h + (1 - z) * n, where n reads {where}")
    biases = " and ".join(r.biases) if r.biases else "no bias"
    lines.append(
        f"Each gate holds {r.units:,} x {r.inputs:,} input weights + {r.units:,} x "
        f"{r.recurrent_inputs:,} recurrent weights + {biases} ({r.units:,} each) = "
        f"{r.per_gate:,} weights; {count} x {r.per_gate:,} = {count * r.per_gate:,}."
    )
    if r.projection is not None:
        out, units = r.projection
        lines.append(f"A projection maps the {units:,} units to {out:,}: {out * units:,} weights.")
    if r.stored_gates is not None and count > 1:
        stored = ",".join(r.stored_gates)
        canonical = ",".join(r.gates)
        order = "the canonical order" if stored == canonical else f"canonical order {canonical}"
        lines.append(f"The file stores the gates in the order {stored} ({order} here).")
    return lines


def _unknown_account(u: UnknownGeometry, class_name: str | None) -> list[str]:
    tensors = ", ".join(f"{role} {shape}" for role, shape in u.tensors)
    return [
        f"weightscope has no account of {class_name or 'this layer'}: it stores "
        f"{tensors or 'nothing'} ({u.params:,} parameters)."
    ]


# ---------------------------------------------------------------------------------------------
# the entry points


def explanation_text(explanation: LayerExplanation, demo: bool = False) -> str:
    """The account of :func:`explain`, from numbers already found; ``demo`` says a demo was
    asked for (a kind without one says so)."""
    e = explanation
    framework = f", {e.framework}" if e.framework else ""
    title = f"{printable(e.name)}: {e.class_name or e.kind} ({e.kind}{framework})"
    lines = [title]
    g = e.geometry
    if isinstance(g, ConvGeometry):
        lines += _conv_account(g)
        if not g.transposed:  # the transposed account has its own layout sentence
            lines.append(_layout_line(g))
            motion = _motion_line(g)
            if motion:
                lines.append(motion)
        if isinstance(e.demo, ConvDemo):
            lines += _conv_demo_text(g, e.demo)
    elif isinstance(g, SeparableGeometry):
        lines += _separable_account(g)
        if isinstance(e.demo, SeparableDemo):
            lines += _separable_demo_text(g, e.demo)
    elif isinstance(g, DenseGeometry):
        lines += _dense_account(g)
        if isinstance(e.demo, DenseDemo):
            lines += _dense_demo_text(e.demo)
    elif isinstance(g, BatchNormGeometry):
        lines += _batch_norm_account(g)
        if isinstance(e.demo, BatchNormDemo):
            lines += _batch_norm_demo_text(e.demo)
    else:
        if isinstance(g, LayerNormGeometry):
            lines += _layer_norm_account(g)
        elif isinstance(g, EmbeddingGeometry):
            lines += _embedding_account(g)
        elif isinstance(g, RecurrentGeometry):
            lines += _recurrent_account(g, str(e.kind))
        else:
            lines += _unknown_account(g, e.class_name)
        if demo:
            lines += ["", f"No demo for a {e.kind} layer: it has no kernel volume to show."]
    if e.quantized:
        lines.append(
            f"Quantized: {', '.join(e.quantized)}; the numbers above are the real values the "
            "stored integers stand for, (stored - zero point) * scale."
        )
    if e.inferred:
        lines.append(f"(Kind inferred: {e.inferred}.)")
    return "\n".join(lines)


def explain(
    layer: Layer,
    demo: bool = False,
    position: Sequence[int] | None = None,
    output_channel: int | None = None,
    seed: int = DEMO_SEED,
) -> str:
    """A short plain-language account of what ``layer`` computes, from its own numbers; with
    ``demo``, one output value worked out with the real weights (see
    :func:`weightscope.analysis.explain.conv_demo`). ``position`` (output spatial indices) and
    ``output_channel`` (filter, unit or channel) choose the value shown. Raises
    :class:`weightscope.analysis.explain.ExplainError` when the layer lacks what its kind needs
    or an option does not fit it."""
    found = explain_layer(layer, demo, position, output_channel, seed)
    return explanation_text(found, demo)
