"""A variable a checkpoint stores as slices (a TF1 partitioned variable, or one that
``tf.train.CheckpointOptions(experimental_sharding_callback=MaxShardSizePolicy(...))`` cut across
shards), read back as one tensor: each slice's extents come from its key, and the slices must
tile the variable exactly."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np

from weightscope.formats.tensorflow.bundle import BundleEntry
from weightscope.model import TensorSource
from weightscope.stats import TensorStats, compute_stats

MAX_SLICES = 1024
"""Most slices one variable is put together from (their overlap is checked pairwise); a
variable cut into more is listed as its slices."""

Box = tuple[tuple[int, int], ...]
"""``(start, stop)`` along each axis."""


class AssembledSource:
    """A variable put together from its slices when read; its statistics reduce each slice in
    turn (statistics take elements in any order)."""

    def __init__(self, shape: tuple[int, ...], parts: list[tuple[Box, TensorSource]]) -> None:
        self.shape = shape
        self.parts = parts

    def read(self) -> np.ndarray:
        arrays = [(box, source.read()) for box, source in self.parts]
        whole = np.empty(self.shape, arrays[0][1].dtype)
        for box, array in arrays:
            whole[tuple(slice(start, stop) for start, stop in box)] = array
        return whole

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        for _, source in self.parts:
            yield from source.chunks(max_elements)

    def stats(self, max_elements: int) -> TensorStats:
        return compute_stats(self.chunks(max_elements))


def assemble(
    variable: BundleEntry, slices: list[BundleEntry], sources: Sequence[TensorSource]
) -> AssembledSource | str:
    """The variable's source from its slices' sources, or why they do not make it."""
    shape = variable.shape
    if not slices or len(slices) > MAX_SLICES:
        return f"{len(slices)} slices"
    boxes: list[Box] = []
    for entry in slices:
        if entry.extents is None or len(entry.extents) != len(shape):
            return "a slice key that does not decode"
        if entry.dtype != variable.dtype:
            return f"a slice of {entry.dtype}, the variable of {variable.dtype}"
        box = []
        for (start, length), size in zip(entry.extents, shape, strict=True):
            if length == -1 and start in (-1, 0):
                start, length = 0, size  # the whole axis
            if start < 0 or length < 0 or start + length > size:
                return f"a slice ({start}, {length}) outside an axis of {size}"
            box.append((start, start + length))
        if tuple(stop - start for start, stop in box) != entry.shape:
            return f"a slice of shape {entry.shape} stored for extents {tuple(box)}"
        boxes.append(tuple(box))
    if sum(math.prod(entry.shape) for entry in slices) != math.prod(shape):
        return "slices that do not add up to the variable"
    for a, b in itertools.combinations(boxes, 2):
        if all(a0 < b1 and b0 < a1 for (a0, a1), (b0, b1) in zip(a, b, strict=True)):
            return "slices that overlap"
    return AssembledSource(shape, list(zip(boxes, sources, strict=True)))
