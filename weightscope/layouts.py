"""The one table of native weight layouts and the single function that maps them to canonical.

A layout is a string with one letter per stored axis:

- ``O`` output channels, ``I`` input channels, ``M`` depth multiplier (depthwise kernels),
- ``D``, ``H``, ``W`` spatial axes (1-D kernels use ``W``, 3-D ``DHW``),
- ``C`` the single axis of a per-channel vector (bias, batch-norm statistics), ``N`` a leading
  axis of size 1 that broadcasts such a vector over a batch (a bias stored as a ``(1, C)`` row),
- ``V``/``E`` vocabulary and embedding width of an embedding table.

Canonical layouts are ``O I *spatial`` for every convolution (``OIHW`` in 2-D), ``OI`` for dense
kernels, and the vector and embedding layouts unchanged. In canonical form the ``I`` axis always
counts input channels *per group*, and entry ``[o, i, ...]`` is the weight connecting input
channel ``g * in_per_group + i`` to output channel ``o`` (``g = o // out_per_group``), from the
layer's own point of view, also for transposed convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SPATIAL = "DHW"


@dataclass(frozen=True)
class Layout:
    """How one native layout is laid out, and where it comes from."""

    axes: str
    grouped_axis: str
    """Which channel axis holds channels per group when ``groups > 1``: ``I`` for ordinary convs
    (all frameworks), ``O`` for transposed convs stored input-first (PyTorch, ONNX)."""
    used_by: str

    @property
    def canonical(self) -> str:
        return canonical_layout(self.axes)


LAYOUTS: dict[str, Layout] = {
    # canonical, also PyTorch / ONNX Conv and Linear
    "OIW": Layout("OIW", "I", "canonical; PyTorch Conv1d, ONNX Conv"),
    "OIHW": Layout("OIHW", "I", "canonical; PyTorch Conv2d, ONNX Conv"),
    "OIDHW": Layout("OIDHW", "I", "canonical; PyTorch Conv3d, ONNX Conv"),
    "OI": Layout("OI", "I", "canonical; PyTorch Linear, ONNX Gemm transB=1"),
    # Keras / TensorFlow ordinary convs and dense
    "WIO": Layout("WIO", "I", "Keras Conv1D"),
    "HWIO": Layout("HWIO", "I", "Keras Conv2D, SeparableConv2D pointwise"),
    "DHWIO": Layout("DHWIO", "I", "Keras Conv3D"),
    "IO": Layout("IO", "I", "Keras Dense, ONNX MatMul / Gemm transB=0"),
    # Keras transposed convs: (*k, filters, in)
    "WOI": Layout("WOI", "I", "Keras Conv1DTranspose"),
    "HWOI": Layout("HWOI", "I", "Keras Conv2DTranspose"),
    "DHWOI": Layout("DHWOI", "I", "Keras Conv3DTranspose"),
    # PyTorch / ONNX transposed convs: (in, out/groups, *k)
    "IOW": Layout("IOW", "O", "PyTorch ConvTranspose1d, ONNX ConvTranspose"),
    "IOHW": Layout("IOHW", "O", "PyTorch ConvTranspose2d, ONNX ConvTranspose"),
    "IODHW": Layout("IODHW", "O", "PyTorch ConvTranspose3d, ONNX ConvTranspose"),
    # Keras depthwise kernels: (*k, in, depth_multiplier); output channel o = c * M + m
    "WIM": Layout("WIM", "I", "Keras DepthwiseConv1D, SeparableConv1D depthwise"),
    "HWIM": Layout("HWIM", "I", "Keras DepthwiseConv2D, SeparableConv2D depthwise"),
    # vectors and tables: already canonical
    "C": Layout("C", "I", "bias, batch-norm and layer-norm vectors"),
    "NC": Layout("NC", "I", "ONNX bias stored as a (1, C) row (Gemm C, Add after MatMul)"),
    "VE": Layout("VE", "I", "Keras Embedding, PyTorch Embedding"),
}


def canonical_layout(axes: str) -> str:
    """The canonical layout string for a native one (``HWIO`` -> ``OIHW``)."""
    if "O" in axes or "M" in axes:
        return "OI" + "".join(a for a in SPATIAL if a in axes)
    return axes.replace("N", "")


def _lookup(layout: str) -> Layout:
    try:
        return LAYOUTS[layout]
    except KeyError:
        raise ValueError(f"unknown native layout {layout!r}") from None


def _check_rank(layout: str, shape: Sequence[int]) -> None:
    if len(shape) != len(layout):
        raise ValueError(
            f"layout {layout} needs a {len(layout)}-D tensor, got shape {tuple(shape)}"
        )


def canonical_shape(shape: Sequence[int], layout: str, groups: int = 1) -> tuple[int, ...]:
    """The canonical shape of a tensor of native ``shape`` and ``layout``, without its data."""
    spec = _lookup(layout)
    _check_rank(layout, shape)
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
