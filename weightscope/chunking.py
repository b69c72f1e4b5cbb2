"""Split a tensor's index space into slabs of bounded size, for reading large tensors in pieces."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

DEFAULT_CHUNK_ELEMENTS = 1024 * 1024  # 4 MB of float32: stays in cache across the passes over it


def iter_slabs(
    shape: Sequence[int], max_elements: int = DEFAULT_CHUNK_ELEMENTS
) -> Iterator[tuple[slice, ...]]:
    """Yield index tuples, in C order, covering ``shape`` with at most ``max_elements`` each.

    Whole leading rows are grouped when they fit; a row larger than the budget is split along the
    next axis, recursively.
    """
    shape = tuple(int(s) for s in shape)
    if not shape:
        yield ()
        return
    if math.prod(shape) == 0:
        return
    row = math.prod(shape[1:])
    if row <= max_elements:
        step = max(1, max_elements // max(row, 1))
        for start in range(0, shape[0], step):
            yield (slice(start, min(start + step, shape[0])),)
        return
    for index in range(shape[0]):
        for inner in iter_slabs(shape[1:], max_elements):
            yield (slice(index, index + 1), *inner)


def slab_shape(slab: Sequence[slice], shape: Sequence[int]) -> tuple[int, ...]:
    """Shape of the block that ``slab`` (as made by :func:`iter_slabs` for ``shape``) selects."""
    shape = tuple(int(s) for s in shape)
    head = shape[: len(slab)]
    leading = tuple(
        len(range(*index.indices(size))) for index, size in zip(slab, head, strict=True)
    )
    return leading + shape[len(slab) :]
