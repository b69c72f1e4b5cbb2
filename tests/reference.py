"""Reference layer computations from weights in weightscope's canonical layout.

Every function takes numpy arrays, computes in float64 with ``torch.nn.functional`` and returns a
numpy array. Activations are channels-first: ``(N, C, *spatial)``. Kernels are canonical:
convolutions ``(out, in/groups, *k)`` (also transposed ones, from the layer's own point of view),
dense ``(out, in)``.

Padding follows TensorFlow / Keras: ``"valid"`` or ``"same"``, where ``"same"`` puts the odd
extra pixel at the end. ``channels_first`` / ``channels_last`` convert Keras' activations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(array, dtype=np.float64))


def _per_dim(value: int | Sequence[int], dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    value = tuple(int(v) for v in value)
    if len(value) != dims:
        raise ValueError(f"expected {dims} values, got {value}")
    return value


def channels_first(x: np.ndarray) -> np.ndarray:
    """``(N, *spatial, C)`` -> ``(N, C, *spatial)``."""
    return np.moveaxis(np.asarray(x), -1, 1)


def channels_last(x: np.ndarray) -> np.ndarray:
    """``(N, C, *spatial)`` -> ``(N, *spatial, C)``."""
    return np.moveaxis(np.asarray(x), 1, -1)


def tf_same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding of one axis: ``(before, after)``, the extra pixel after."""
    effective = (kernel - 1) * dilation + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


def conv(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding: str = "valid",
) -> np.ndarray:
    """Ordinary (cross-correlation) convolution with a canonical ``(out, in/groups, *k)`` kernel."""
    dims = kernel.ndim - 2
    strides, dilations = _per_dim(stride, dims), _per_dim(dilation, dims)
    inputs = _tensor(x)
    if inputs.shape[1] != kernel.shape[1] * groups:
        raise ValueError(
            f"{inputs.shape[1]} input channels, kernel {kernel.shape} with groups={groups}"
        )
    if padding == "same":
        pads: list[int] = []
        for axis in reversed(range(dims)):  # F.pad wants the last axis first
            pads.extend(
                tf_same_padding(
                    inputs.shape[2 + axis], kernel.shape[2 + axis], strides[axis], dilations[axis]
                )
            )
        inputs = F.pad(inputs, pads)
    elif padding != "valid":
        raise ValueError(f"unknown padding {padding!r}")
    out = _CONV[dims](
        inputs,
        _tensor(kernel),
        None if bias is None else _tensor(bias),
        stride=strides,
        dilation=dilations,
        groups=groups,
    )
    return out.numpy()


def canonical_to_torch_transpose(kernel: np.ndarray, groups: int = 1) -> np.ndarray:
    """Canonical transposed-conv kernel ``(out, in/g, *k)`` -> PyTorch's ``(in, out/g, *k)``."""
    out_channels, in_per_group, *spatial = kernel.shape
    if out_channels % groups:
        raise ValueError(f"{out_channels} output channels do not split into {groups} groups")
    out_per_group = out_channels // groups
    split = kernel.reshape(groups, out_per_group, in_per_group, *spatial)
    return split.swapaxes(1, 2).reshape(groups * in_per_group, out_per_group, *spatial)


def keras_transpose_length(
    size: int, kernel: int, stride: int, dilation: int = 1, padding: str = "valid"
) -> int:
    """Output length of a Keras ConvNDTranspose (``output_padding=None``) along one axis."""
    effective = (kernel - 1) * dilation + 1
    if padding == "valid":
        return size * stride + max(effective - stride, 0)
    if padding == "same":
        return size * stride
    raise ValueError(f"unknown padding {padding!r}")


def conv_transpose(
    x: np.ndarray,
    kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    groups: int = 1,
    padding: str = "valid",
) -> np.ndarray:
    """Transposed convolution with a canonical ``(out, in/groups, *k)`` kernel, shaped and
    cropped as TensorFlow / Keras do: the gradient of a ``padding`` convolution whose input has
    ``keras_transpose_length`` samples per axis."""
    dims = kernel.ndim - 2
    strides, dilations = _per_dim(stride, dims), _per_dim(dilation, dims)
    inputs = _tensor(x)
    if inputs.shape[1] != kernel.shape[1] * groups:
        raise ValueError(
            f"{inputs.shape[1]} input channels, kernel {kernel.shape} with groups={groups}"
        )
    full = _CONV_TRANSPOSE[dims](
        inputs,
        _tensor(canonical_to_torch_transpose(kernel, groups)),
        None,
        stride=strides,
        groups=groups,
        dilation=dilations,
    )
    for axis in range(dims):
        size, k = inputs.shape[2 + axis], kernel.shape[2 + axis]
        length = keras_transpose_length(size, k, strides[axis], dilations[axis], padding)
        # the forward conv (length -> size) pads `before` in front: drop that many samples
        before = 0
        if padding == "same":
            effective = (k - 1) * dilations[axis] + 1
            before = max((size - 1) * strides[axis] + effective - length, 0) // 2
        dim = 2 + axis
        full = full.narrow(dim, before, min(length, full.shape[dim] - before))
        short = length - full.shape[dim]
        if short > 0:  # positions no input sample reaches stay zero
            shape = list(full.shape)
            shape[dim] = short
            full = torch.cat([full, full.new_zeros(shape)], dim=dim)
    if bias is not None:
        full = full + _tensor(bias).reshape(1, -1, *([1] * dims))
    return full.numpy()


def separable_conv(
    x: np.ndarray,
    depthwise_kernel: np.ndarray,
    pointwise_kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    stride: int | Sequence[int] = 1,
    dilation: int | Sequence[int] = 1,
    padding: str = "valid",
) -> np.ndarray:
    """Depthwise conv (canonical ``(in*M, 1, *k)``, groups = in) then a pointwise 1x1 conv."""
    depthwise = conv(
        x,
        depthwise_kernel,
        stride=stride,
        dilation=dilation,
        groups=np.asarray(x).shape[1],
        padding=padding,
    )
    return conv(depthwise, pointwise_kernel, bias)


def dense(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """``x @ kernel.T + bias`` with a canonical ``(out, in)`` kernel, on the last axis of ``x``."""
    return F.linear(_tensor(x), _tensor(kernel), None if bias is None else _tensor(bias)).numpy()


def batch_norm(
    x: np.ndarray,
    moving_mean: np.ndarray,
    moving_variance: np.ndarray,
    gamma: np.ndarray | None = None,
    beta: np.ndarray | None = None,
    *,
    epsilon: float,
) -> np.ndarray:
    """Inference-mode batch normalization over axis 1:
    ``gamma * (x - mean) / sqrt(variance + epsilon) + beta``."""
    inputs = _tensor(x)
    shape = (1, -1, *([1] * (inputs.ndim - 2)))

    def per_channel(vector: np.ndarray) -> torch.Tensor:
        return _tensor(vector).reshape(shape)

    out = (inputs - per_channel(moving_mean)) / torch.sqrt(per_channel(moving_variance) + epsilon)
    if gamma is not None:
        out = out * per_channel(gamma)
    if beta is not None:
        out = out + per_channel(beta)
    return out.numpy()


# ---------------------------------------------------------------------------------------------
# Recurrent layers, in Keras' own layout (weightscope has no canonical form for them yet):
# kernel ``(in, gates * units)``, recurrent kernel ``(units, gates * units)``, gates side by side
# in Keras' order (LSTM i, f, c, o; GRU z, r, h). Inputs ``(N, T, features)``.


def _recurrent(
    x: np.ndarray,
    step: Callable[[torch.Tensor, list[torch.Tensor]], list[torch.Tensor]],
    states: list[torch.Tensor],
    *,
    go_backwards: bool,
    return_sequences: bool,
) -> np.ndarray:
    """Run ``step(x_t, states) -> states`` (output: the first state) over the time axis as a
    Keras RNN does: ``go_backwards`` reads the sequence from its end, and its sequence output
    stays in reading order."""
    inputs = _tensor(x)
    order = range(inputs.shape[1] - 1, -1, -1) if go_backwards else range(inputs.shape[1])
    outputs = []
    for t in order:
        states = step(inputs[:, t], states)
        outputs.append(states[0])
    return (torch.stack(outputs, dim=1) if return_sequences else outputs[-1]).numpy()


def simple_rnn(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    go_backwards: bool = False,
    return_sequences: bool = False,
) -> np.ndarray:
    """Keras SimpleRNN (tanh): ``h = tanh(x W + h U + b)``."""
    w, u = _tensor(kernel), _tensor(recurrent_kernel)
    b = torch.zeros(w.shape[1], dtype=torch.float64) if bias is None else _tensor(bias)

    def step(x_t: torch.Tensor, states: list[torch.Tensor]) -> list[torch.Tensor]:
        return [torch.tanh(x_t @ w + states[0] @ u + b)]

    start = [torch.zeros(x.shape[0], u.shape[0], dtype=torch.float64)]
    return _recurrent(x, step, start, go_backwards=go_backwards, return_sequences=return_sequences)


def lstm(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    go_backwards: bool = False,
    return_sequences: bool = False,
) -> np.ndarray:
    """Keras LSTM (tanh, sigmoid gates i, f, c, o): ``c = f c + i tanh(z_c)``, ``h = o tanh(c)``."""
    w, u = _tensor(kernel), _tensor(recurrent_kernel)
    b = torch.zeros(w.shape[1], dtype=torch.float64) if bias is None else _tensor(bias)

    def step(x_t: torch.Tensor, states: list[torch.Tensor]) -> list[torch.Tensor]:
        h, c = states
        i, f, g, o = torch.chunk(x_t @ w + h @ u + b, 4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return [torch.sigmoid(o) * torch.tanh(c), c]

    units = u.shape[0]
    start = [torch.zeros(x.shape[0], units, dtype=torch.float64) for _ in range(2)]
    return _recurrent(x, step, start, go_backwards=go_backwards, return_sequences=return_sequences)


def gru(
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    reset_after: bool = True,
    go_backwards: bool = False,
    return_sequences: bool = False,
) -> np.ndarray:
    """Keras GRU (tanh, sigmoid gates z, r, h): ``h = z h + (1 - z) tanh(...)``. With
    ``reset_after`` (Keras' default) the bias is ``(2, 3 units)``, input then recurrent, and the
    reset gate scales the recurrent term after its matrix product."""
    w, u = _tensor(kernel), _tensor(recurrent_kernel)
    units = u.shape[0]
    zeros = torch.zeros(3 * units, dtype=torch.float64)
    if bias is None:
        b_in, b_rec = zeros, zeros
    elif reset_after:
        b_in, b_rec = _tensor(bias)[0], _tensor(bias)[1]
    else:
        b_in, b_rec = _tensor(bias), zeros

    def step(x_t: torch.Tensor, states: list[torch.Tensor]) -> list[torch.Tensor]:
        h = states[0]
        x_z, x_r, x_h = torch.chunk(x_t @ w + b_in, 3, dim=-1)
        u_h = u[:, 2 * units :]
        r_z, r_r, r_h = torch.chunk(h @ u + b_rec, 3, dim=-1)
        z = torch.sigmoid(x_z + r_z)
        r = torch.sigmoid(x_r + r_r)
        candidate = torch.tanh(x_h + (r * r_h if reset_after else (r * h) @ u_h))
        return [z * h + (1 - z) * candidate]

    start = [torch.zeros(x.shape[0], units, dtype=torch.float64)]
    return _recurrent(x, step, start, go_backwards=go_backwards, return_sequences=return_sequences)


def bidirectional(
    forward: np.ndarray, backward: np.ndarray, *, merge_mode: str = "concat", sequences: bool
) -> np.ndarray:
    """A Keras Bidirectional's output from its forward and backward layers' outputs (the
    backward one in its reading order, put back in time order when ``sequences``)."""
    if sequences:
        backward = np.flip(backward, axis=1)
    if merge_mode == "concat":
        return np.concatenate([forward, backward], axis=-1)
    if merge_mode == "sum":
        return forward + backward
    if merge_mode == "mul":
        return forward * backward
    if merge_mode == "ave":
        return (forward + backward) / 2
    raise ValueError(f"unknown merge_mode {merge_mode!r}")


def time_distributed(x: np.ndarray, layer: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``layer`` applied to each step of ``x``'s axis 1, as a Keras TimeDistributed does."""
    x = np.asarray(x)
    batch, steps = x.shape[:2]
    out = np.asarray(layer(x.reshape(batch * steps, *x.shape[2:])))
    return out.reshape(batch, steps, *out.shape[1:])


# ---------------------------------------------------------------------------------------------
# Recurrent layers from weightscope's canonical form (``weightscope.layouts``): kernels
# ``(gates, units, in)``, recurrent kernels ``(gates, units, units)``, biases ``(gates, units)``,
# gates in canonical order (LSTM i, f, g, o; GRU z, r, n; simple RNN h). Inputs ``(N, T, in)``.


def canonical_recurrent(
    kind: str,
    x: np.ndarray,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None = None,
    recurrent_bias: np.ndarray | None = None,
    *,
    reset_after: bool = True,
    projection: np.ndarray | None = None,
    go_backwards: bool = False,
    return_sequences: bool = True,
) -> np.ndarray:
    """One direction of one layer of an ``lstm``, ``gru`` or ``simple_rnn`` (tanh, sigmoid
    gates), from canonical tensors, as every framework computes it:

    - LSTM: ``c = f c + i g``, ``h = o tanh(c)`` (then ``h = projection @ h`` if given);
    - GRU: ``h = z h + (1 - z) n`` with ``n = tanh(W_n x + b_n + r (R_n h + rb_n))`` when
      ``reset_after`` (PyTorch; Keras ``reset_after=True``; ONNX ``linear_before_reset=1``),
      else ``n = tanh(W_n x + b_n + R_n (r h) + rb_n)``;
    - simple RNN: ``h = tanh(W x + b + R h + rb)``.

    Output ``(N, T, units)`` in reading order (``go_backwards``: from the sequence's end), or
    the last step's ``(N, units)``."""
    w, r = _tensor(kernel), _tensor(recurrent_kernel)
    gates, units = w.shape[:2]
    zeros = torch.zeros(gates, units, dtype=torch.float64)
    b = zeros if bias is None else _tensor(bias)
    rb = zeros if recurrent_bias is None else _tensor(recurrent_bias)
    p = None if projection is None else _tensor(projection)
    width = r.shape[2]

    def gate_inputs(x_t: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, gates, units)`` input and recurrent terms, biases included."""
        return torch.einsum("gui,ni->ngu", w, x_t) + b, torch.einsum("gui,ni->ngu", r, h) + rb

    def step(x_t: torch.Tensor, states: list[torch.Tensor]) -> list[torch.Tensor]:
        h = states[0]
        xs, hs = gate_inputs(x_t, h)
        if kind == "simple_rnn":
            return [torch.tanh(xs[:, 0] + hs[:, 0])]
        if kind == "lstm":
            i, f, g, o = (xs[:, k] + hs[:, k] for k in range(4))
            c = torch.sigmoid(f) * states[1] + torch.sigmoid(i) * torch.tanh(g)
            out = torch.sigmoid(o) * torch.tanh(c)
            return [out if p is None else out @ p.T, c]
        if kind == "gru":
            z = torch.sigmoid(xs[:, 0] + hs[:, 0])
            reset = torch.sigmoid(xs[:, 1] + hs[:, 1])
            if reset_after:
                n = torch.tanh(xs[:, 2] + reset * hs[:, 2])
            else:
                n = torch.tanh(xs[:, 2] + (reset * h) @ r[2].T + rb[2])
            return [z * h + (1 - z) * n]
        raise ValueError(f"unknown recurrent kind {kind!r}")

    start = [torch.zeros(x.shape[0], width, dtype=torch.float64)]
    if kind == "lstm":
        start.append(torch.zeros(x.shape[0], units, dtype=torch.float64))
    return _recurrent(x, step, start, go_backwards=go_backwards, return_sequences=return_sequences)


def canonical_recurrent_layer(
    kind: str, x: np.ndarray, layer: object, **options: object
) -> np.ndarray:
    """:func:`canonical_recurrent` with the canonical tensors of a weightscope ``Layer``."""
    tensors = {t.role: t.canonical() for t in layer.tensors if t.native_layout}  # type: ignore[attr-defined]
    return canonical_recurrent(
        kind,
        x,
        tensors["kernel"],
        tensors["recurrent_kernel"],
        tensors.get("bias"),
        tensors.get("recurrent_bias"),
        projection=tensors.get("projection"),
        **options,  # type: ignore[arg-type]
    )
