"""Quantized ONNX weights: how a stored integer constant, its scales and zero points make a
:class:`~weightscope.model.Quantization`, checked against each other's shapes first (a file's
scales that do not fit its integers are said, never broadcast into a wrong or huge array), and
the real values read from them."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from weightscope.formats.onnx.constants import Constant
from weightscope.model import (
    ArraySource,
    PartIndex,
    PartSource,
    Quantization,
    TensorSource,
    part_shape,
)
from weightscope.stats import TensorStats

Index = PartIndex


def granularity(quantization: Quantization) -> str:
    """``per tensor``, ``per channel along stored axis 0``, ``per block of 32 along stored
    axis 1``."""
    if quantization.axis is None:
        return "per tensor"
    return f"{quantization.granularity} along stored axis {quantization.axis}"


def quantization_of(
    stored: Constant,
    scale: Constant | None,
    zero_point: Constant | None,
    axis: int,
    block_size: int | None = None,
    *,
    index: Index | None = None,
) -> Quantization | str:
    """How ``stored`` (or its part ``index``, with the same part of the scales and zero
    points) stands for real values, ``(stored - zero_point) * scale``; or why it cannot be read
    so (a missing or non-float scale, scales that do not fit the integers)."""
    if scale is None:
        return "its scale is computed at run time"
    if not scale.dtype.startswith(("float", "bfloat")):
        return f"its scale '{scale.name}' is {scale.dtype}, not floating point"
    shape = stored.shape if index is None else part_shape(stored.shape, index)
    rank = len(shape)
    if not -rank <= axis < max(rank, 1):
        return f"axis {axis} is not an axis of its {shape} integers"
    along = axis % rank if rank else 0
    parameters = [(scale, "scale")] + ([] if zero_point is None else [(zero_point, "zero point")])
    sizes = []
    for constant, what in parameters:
        found = constant.shape if index is None else part_shape(constant.shape, index)
        sizes.append(math.prod(found))
        if block_size is not None:
            blocks = -(-shape[along] // block_size) if rank else 0
            expected = tuple(blocks if i == along else d for i, d in enumerate(shape))
            if found != expected and not (rank == 1 and math.prod(found) == blocks):
                return (
                    f"its block {what}s '{constant.name}' {found} do not fit its {shape} "
                    f"integers in blocks of {block_size} along axis {along}"
                )
        elif math.prod(found) != 1 and (
            sum(d != 1 for d in found) != 1 or not rank or math.prod(found) != shape[along]
        ):
            return (
                f"its {what}s '{constant.name}' {found} are not one per channel along axis "
                f"{along} of its {shape} integers"
            )
    size = max(sizes)
    one = size == 1 and block_size is None
    return Quantization(
        stored=_part(stored.source, index),
        scale=_part(scale.source, index),
        zero_point=None if zero_point is None else _part(zero_point.source, index),
        axis=None if one else along,
        block_size=block_size,
        scale_name=scale.name,
        zero_point_name=None if zero_point is None else zero_point.name,
    )


def _part(source: TensorSource, index: Index | None) -> TensorSource:
    return source if index is None else PartSource(source, index)


class UnpackedBits:
    """Integers of ``bits`` bits packed into the bytes of a ``(rows, blocks, blob)`` tensor
    (``MatMulNBits``' ``B``), the lowest bits first, unpacked to ``(rows, columns)``: the
    first ``columns`` of each row's ``blocks * blob * 8 / bits`` values."""

    def __init__(self, base: TensorSource, rows: int, columns: int, bits: int) -> None:
        self.base = base
        self.rows = rows
        self.columns = columns
        self.bits = bits

    def read(self) -> np.ndarray:
        packed = np.asarray(self.base.read(), np.uint8).reshape(self.rows, -1)
        per_byte = 8 // self.bits
        mask = (1 << self.bits) - 1
        shifts = np.arange(per_byte, dtype=np.uint8) * self.bits
        values = (packed[:, :, None] >> shifts) & mask
        return values.reshape(self.rows, -1)[:, : self.columns].astype(np.uint8)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        return ArraySource(self.read()).chunks(max_elements)

    def stats(self, max_elements: int) -> TensorStats:
        return ArraySource(self.read()).stats(max_elements)


class Reshaped:
    """A source read in another shape (a flat table of block scales as ``(rows, blocks)``)."""

    def __init__(self, base: TensorSource, shape: tuple[int, ...]) -> None:
        self.base = base
        self.shape = shape

    def read(self) -> np.ndarray:
        return np.asarray(self.base.read()).reshape(self.shape)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        return self.base.chunks(max_elements)

    def stats(self, max_elements: int) -> TensorStats:
        return self.base.stats(max_elements)
