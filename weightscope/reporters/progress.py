"""Progress on long work: a bar on stderr when there is much to read and stderr is a terminal;
nothing otherwise (and never under ``--json``, whose callers pass ``quiet=True``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from weightscope.model import Tensor, small_tensor_stats

PROGRESS_MIN_BYTES = 64 * 1024 * 1024

Item = TypeVar("Item")


def progress(
    items: Sequence[Item], weights: Sequence[int], label: str, quiet: bool = False
) -> Iterator[Item]:
    """Yield ``items``, advancing a bar by each item's weight (bytes, say) once it is done.

    The bar shows only when the total weight is at least ``PROGRESS_MIN_BYTES`` and stderr is a
    terminal, and disappears when the work is done."""
    total = sum(weights)
    if quiet or total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield from items
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        for item, weight in zip(items, weights, strict=True):
            yield item
            bar.advance(task, weight)


def compute_stats(tensors: Iterable[Tensor], quiet: bool = False) -> None:
    """Reduce every tensor that has statistics once (they are cached on the tensor): the small
    ones together first, where their sources can (:func:`small_tensor_stats`)."""
    todo = [t for t in tensors if t.has_stats]
    small_tensor_stats(todo)
    for tensor in progress(todo, [t.size * 4 for t in todo], "reading weights", quiet):
        tensor.stats()
