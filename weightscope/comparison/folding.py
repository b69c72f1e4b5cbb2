"""Batch normalization folded into the layer before it, as converters do (the TFLite converter,
PyTorch's ONNX exporter in eval mode): a conv or dense layer followed by a batch norm on one side,
the same layer with the batch norm absorbed on the other. Folding scales the kernel's output
channel ``o`` (canonical axis 0) by ``s[o] = gamma[o] / sqrt(var[o] + eps)`` and makes the bias
``(bias - mean) * s + beta``; :func:`fold` computes that from the unfolded side, in float64, to
compare with the folded side."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from weightscope.model import Layer, Tensor

BN_FOLDED = "bn_folded"


@dataclass(frozen=True)
class Folded:
    """A layer's kernel and bias with a batch norm folded in, and the batch norm's name."""

    kernel: np.ndarray
    bias: np.ndarray
    batch_norm: str
    eps: float


def channels(layer: Layer) -> int | None:
    """Output channels of a conv or dense layer's canonical kernel (axis 0); None otherwise."""
    kernel = layer.kernel
    if kernel is None or kernel.canonical_shape is None or layer.kind.is_separable:
        return None
    return kernel.canonical_shape[0]


def batch_norm_channels(layer: Layer) -> int | None:
    for role in ("moving_variance", "moving_mean", "gamma"):
        for tensor in layer.tensors:
            if tensor.role == role:
                return tensor.size
    return None


def fold(
    layer: Layer,
    batch_norm: Layer,
    eps: float,
    read: Callable[[Layer, Tensor], np.ndarray],
) -> Folded | None:
    """``layer``'s canonical kernel and bias with ``batch_norm`` folded in; None where the batch
    norm lacks its moving statistics or does not fit the layer's output channels."""
    kernel_tensor = layer.kernel
    out = channels(layer)
    if kernel_tensor is None or out is None or batch_norm_channels(batch_norm) != out:
        return None
    stored = {t.role: t for t in batch_norm.tensors}
    if "moving_mean" not in stored or "moving_variance" not in stored:
        return None

    def vector(role: str, default: float) -> np.ndarray:
        if role not in stored:
            return np.full(out, default)
        return np.asarray(read(batch_norm, stored[role]), np.float64).reshape(-1)

    scale = vector("gamma", 1.0) / np.sqrt(vector("moving_variance", 1.0) + eps)
    kernel = np.asarray(read(layer, kernel_tensor), np.float64)
    bias_tensor = next((t for t in layer.tensors if t.role == "bias"), None)
    bias = (
        np.zeros(out)
        if bias_tensor is None
        else np.asarray(read(layer, bias_tensor), np.float64).reshape(-1)
    )
    folded_kernel = kernel * scale.reshape(out, *([1] * (kernel.ndim - 1)))
    folded_bias = (bias - vector("moving_mean", 0.0)) * scale + vector("beta", 0.0)
    return Folded(folded_kernel, folded_bias, batch_norm.name, eps)
