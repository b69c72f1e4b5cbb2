"""Summary statistics of a tensor, reduced chunk by chunk so memory stays bounded.

Mean, std, min and max are taken over the finite values; NaN and Inf are counted apart, so one
bad value does not hide the shape of the rest of the distribution.

Each chunk is reduced in its own float type (float16 and bfloat16 in float32), never widened to
float64, with a handful of passes over memory that is reused from chunk to chunk: min and max
(which also reveal NaN and Inf), zeros, the sum and the sum of squares. The sums are taken
first, in the pass that brings the chunk into cache, in blocks of :data:`BLOCK` elements by the
BLAS dot product (``matmul`` of the blocks with ones, and of each block with itself: one pass,
no squares written out, two to three times as fast as numpy's ``add.reduce``), and the block
sums are added in float64: as in numpy's pairwise summation, which adds blocks of 128 on 8
accumulators, each rounded sum gathers a few dozen terms at most, so the error is a few ulps
whatever the chunk's length. Chunks are merged with Chan's parallel update.
When the mean is large against the spread the chunk is centred first, so that the variance does
not drown in cancellation; chunks of very large or very small magnitude are scaled by a power of
two (exact) so that their squares neither overflow nor underflow.

:func:`reduce_slabs` reads and reduces the slabs of one tensor on a few threads: numpy releases
the GIL inside these passes, so reading one slab overlaps reducing another. Results are merged in
slab order, so they do not depend on the number of threads.

:func:`segment_stats` reduces many small tensors at once (a file can hold 200,000 of a few
elements each, where a reduction per tensor costs more in calls than in arithmetic): their values,
widened to float64 and laid end to end, are reduced per segment by ``reduceat``, with an exact
two-pass variance. A segment's result depends on its own values only, so a small tensor's
statistics are the same whether it was reduced alone or with others.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

Slab = TypeVar("Slab")

MAX_WORKERS = 4
"""Threads :func:`reduce_slabs` uses at most (never more than the CPUs this process may use)."""

SMALL_TENSOR_ELEMENTS = 1 << 14
"""Tensors of at most this many elements (that fit in one chunk) are reduced by
:func:`segment_stats`, alone or together, when their source can read them so."""

BLOCK = 512
"""Elements summed by one BLAS dot product (a few vector accumulators, of 16 to 64 terms each)."""

_ONES = {np.dtype(t): np.ones((BLOCK, 1), t) for t in (np.float32, np.float64)}

_CENTRE_ABOVE = 0.25
"""Centre a chunk before squaring when mean**2 exceeds this fraction of its mean square."""


@dataclass(frozen=True)
class TensorStats:
    count: int
    mean: float
    std: float
    min: float
    max: float
    zeros_fraction: float
    nan: int
    inf: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "zeros_fraction": self.zeros_fraction,
            "nan": self.nan,
            "inf": self.inf,
        }


@dataclass
class Moments:
    """Sufficient statistics of some elements; two of them merge into the moments of both."""

    count: int = 0
    """Elements seen, including NaN and Inf."""
    finite: int = 0
    mean: float = 0.0
    m2: float = 0.0
    """Sum of squared deviations from ``mean`` over the finite elements."""
    min: float = math.inf
    max: float = -math.inf
    zeros: int = 0
    nan: int = 0
    inf: int = 0

    def merge(self, other: Moments) -> None:
        """Fold ``other`` into these moments (Chan et al.'s parallel update)."""
        self.count += other.count
        self.zeros += other.zeros
        self.nan += other.nan
        self.inf += other.inf
        if other.finite == 0:
            return
        if self.finite == 0:
            self.finite, self.mean, self.m2 = other.finite, other.mean, other.m2
            self.min, self.max = other.min, other.max
            return
        total = self.finite + other.finite
        delta = other.mean - self.mean
        self.mean += delta * other.finite / total
        self.m2 += other.m2 + delta * delta * self.finite * other.finite / total
        self.finite = total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    def result(self) -> TensorStats:
        zeros_fraction = self.zeros / self.count if self.count else 0.0
        if self.finite == 0:
            nan = math.nan
            return TensorStats(self.count, nan, nan, nan, nan, zeros_fraction, self.nan, self.inf)
        std = math.sqrt(max(self.m2, 0.0) / self.finite)
        return TensorStats(
            self.count, self.mean, std, self.min, self.max, zeros_fraction, self.nan, self.inf
        )


class Scratch:
    """Work buffers of one thread, kept between chunks (and tensors) so that memory is not
    allocated, page-faulted and freed again for every chunk."""

    def __init__(self) -> None:
        self._buffers: dict[str, np.ndarray] = {}

    def get(self, key: str, size: int, dtype: Any) -> np.ndarray:
        """A 1-D array of ``size`` elements of ``dtype``, uninitialised, backed by the buffer
        called ``key``: it stays valid until the next ``get`` of the same key."""
        dtype = np.dtype(dtype)
        nbytes = size * dtype.itemsize
        buffer = self._buffers.get(key)
        if buffer is None or buffer.nbytes < nbytes:
            buffer = np.empty(max(nbytes, 1), dtype=np.uint8)
            self._buffers[key] = buffer
        return buffer[:nbytes].view(dtype)

    @property
    def nbytes(self) -> int:
        return sum(buffer.nbytes for buffer in self._buffers.values())


_POOL: list[Scratch] = []
_POOL_LOCK = threading.Lock()
_POOL_KEEP_BYTES = 64 * 1024 * 1024
"""Scratch sets larger than this are freed after use instead of being kept for the next tensor."""


@contextmanager
def borrowed_scratch() -> Iterator[Scratch]:
    """A scratch set from the process-wide pool, returned to it afterwards."""
    with _POOL_LOCK:
        scratch = _POOL.pop() if _POOL else Scratch()
    try:
        yield scratch
    finally:
        if scratch.nbytes <= _POOL_KEEP_BYTES:
            with _POOL_LOCK:
                if len(_POOL) < MAX_WORKERS:
                    _POOL.append(scratch)


def chunk_moments(values: np.ndarray, scratch: Scratch) -> Moments:
    """Moments of the elements of ``values``, a 1-D float16/32/64 array (float16 is widened to
    float32 first). ``values`` is not modified; it may itself live in ``scratch`` under a key other
    than ``"widened"``, ``"mask"``, ``"finite"``, ``"scaled"`` or ``"work"``."""
    if values.dtype == np.float16:
        wide = scratch.get("widened", values.size, np.float32)
        np.copyto(wide, values)
        values = wide
    values = values.reshape(-1)
    n = int(values.size)
    if n == 0:
        return Moments()
    # The sums first: the pass that brings the chunk into cache then does the costliest work.
    # They are used only if every value is finite and needs no scaling (nearly always).
    with np.errstate(all="ignore"):
        sums: tuple[float, float] | None = _sums(values)
    mask = scratch.get("mask", n, np.bool_)
    zeros = int(np.count_nonzero(np.equal(values, 0, out=mask)))
    low, high = float(np.minimum.reduce(values)), float(np.maximum.reduce(values))
    nan = inf = 0
    if not (math.isfinite(low) and math.isfinite(high)):
        sums = None
        finite_mask = np.isfinite(values, out=mask)
        finite = int(np.count_nonzero(finite_mask))
        nan = int(np.count_nonzero(np.isnan(values)))
        inf = n - finite - nan
        if finite == 0:
            return Moments(count=n, zeros=zeros, nan=nan, inf=inf)
        packed = scratch.get("finite", finite, values.dtype)
        np.compress(finite_mask, values, out=packed)
        values = packed
        low, high = float(np.minimum.reduce(values)), float(np.maximum.reduce(values))
    mean, m2 = _mean_m2(values, max(abs(low), abs(high)), scratch, sums)
    return Moments(n, int(values.size), mean, m2, low, high, zeros, nan, inf)


def _mean_m2(
    values: np.ndarray,
    scale: float,
    scratch: Scratch,
    sums: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """Mean and sum of squared deviations of finite ``values``; ``scale`` = max |value|;
    ``sums``: :func:`_sums` of ``values`` if already taken."""
    info = np.finfo(values.dtype)
    # Squares of up to 2**31 elements must stay within the type's range: keep |value| in
    # [2**(minexp/3), 2**(maxexp/3)], else scale by a power of two (exact) and scale back.
    if scale > 2.0 ** (info.maxexp // 3) or 0.0 < scale < 2.0 ** (info.minexp // 3):
        exponent = math.frexp(scale)[1]
        # In two steps: 2**-exponent alone may not be representable (subnormal inputs).
        first = -exponent // 2
        kind = values.dtype.type
        scaled = scratch.get("scaled", values.size, values.dtype)
        np.multiply(values, kind(math.ldexp(1.0, first)), out=scaled)
        np.multiply(scaled, kind(math.ldexp(1.0, -exponent - first)), out=scaled)
        mean, m2 = _mean_m2(scaled, 1.0, scratch)
        try:
            m2 = math.ldexp(m2, 2 * exponent)
        except OverflowError:  # float64 beyond ~1e154: the squares do not fit in a float64
            m2 = math.inf
        return math.ldexp(mean, exponent), m2
    n = values.size
    total, squares = sums if sums is not None else _sums(values)
    mean = total / n
    if total * mean <= _CENTRE_ABOVE * squares:
        # The mean is small against the spread: m2 = sum(x**2) - n*mean**2 loses little.
        return mean, max(squares - total * mean, 0.0)
    # Corrected two-pass: centre on the mean rounded to the data's type, then correct by the
    # residual sum (rounding in the first pass, and in the centre, cancel out).
    centre = values.dtype.type(mean)
    centred = np.subtract(values, centre, out=scratch.get("work", n, values.dtype))
    residual, squares = _sums(centred)
    return float(centre) + residual / n, max(squares - residual * residual / n, 0.0)


def _sums(values: np.ndarray) -> tuple[float, float]:
    """The sum and the sum of squares of the 1-D float32/float64 ``values`` (see the module's
    docstring), without writing anything of their size."""
    whole = values.size - values.size % BLOCK
    total = squares = 0.0
    if whole:
        blocks = values[:whole].reshape(-1, 1, BLOCK)
        ones = _ONES.get(values.dtype)
        if ones is None:  # long double, say: numpy's own loops, not BLAS
            ones = np.ones((BLOCK, 1), values.dtype)
        total = float(np.add.reduce(np.matmul(blocks, ones), axis=None,
                                    dtype=np.float64))  # fmt: skip
        squares = float(np.add.reduce(np.matmul(blocks, blocks.reshape(-1, BLOCK, 1)), axis=None,
                                      dtype=np.float64))  # fmt: skip
    if whole < values.size:
        tail = values[whole:]
        total += float(np.add.reduce(tail, dtype=np.float64))
        squares += float(np.add.reduce(np.square(tail, dtype=np.float64)))
    return total, squares


class StatsAccumulator:
    """Merges the moments of chunks added one by one."""

    def __init__(self) -> None:
        self.moments = Moments()

    def add(self, chunk: np.ndarray) -> None:
        with borrowed_scratch() as scratch:
            self.moments.merge(chunk_moments(_as_float(chunk), scratch))

    def result(self) -> TensorStats:
        return self.moments.result()


def _as_float(chunk: np.ndarray) -> np.ndarray:
    chunk = np.asarray(chunk)
    if chunk.dtype.kind == "f":  # float16 is widened to float32 inside chunk_moments
        return chunk if chunk.dtype.isnative else chunk.astype(chunk.dtype.newbyteorder("="))
    return chunk.astype(np.float64)


def compute_stats(chunks: Iterable[np.ndarray]) -> TensorStats:
    """Statistics over all elements of all ``chunks``."""
    acc = StatsAccumulator()
    for chunk in chunks:
        acc.add(chunk)
    return acc.result()


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def reduce_slabs(
    slabs: Sequence[Slab],
    read: Callable[[Slab, Scratch], np.ndarray],
    workers: int | None = None,
    done: Callable[[Slab], None] | None = None,
) -> TensorStats:
    """Statistics of a tensor made of ``slabs``, reduced on up to ``workers`` threads.

    ``read(slab, scratch)`` returns the slab's values as a float array, typically read into a
    buffer of ``scratch`` (under any key but those :func:`chunk_moments` uses) or a view of a
    mapped file; each thread has its own scratch. ``done(slab)``, if given, is called once the
    slab is reduced (to let go of its mapped pages, say). The first exception raised by ``read``
    stops the work and is raised here.
    """
    results: list[Moments | None] = [None] * len(slabs)
    count = min(workers or default_workers(), len(slabs))
    claim = iter(range(len(slabs)))
    claim_lock = threading.Lock()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with borrowed_scratch() as scratch:
                while not errors:
                    with claim_lock:
                        index = next(claim, None)
                    if index is None:
                        return
                    results[index] = chunk_moments(read(slabs[index], scratch), scratch)
                    if done is not None:
                        done(slabs[index])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(count - 1)]
    for thread in threads:
        thread.start()
    work()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    total = Moments()
    for moments in results:
        assert moments is not None
        total.merge(moments)
    return total.result()


_SEGMENT_SAFE = (2.0**-300, 2.0**300)
"""Finite magnitudes whose squares, and sums of up to 2**31 of them, a float64 holds without
underflow or overflow; a float64 segment with values outside is reduced by :func:`compute_stats`
(which scales them)."""


def segment_stats(values: np.ndarray, sizes: np.ndarray) -> list[TensorStats]:
    """Statistics of consecutive segments of ``values``: the first ``sizes[0]`` elements, the
    next ``sizes[1]``, and so on (``sizes`` may hold zeros; they sum to ``values.size``).

    ``values`` of any real type are widened to float64: from a narrower one (float32, float16,
    integers of up to 64 bits, bools) no square or sum can overflow or underflow; a segment of
    float64 data with magnitudes outside :data:`_SEGMENT_SAFE` is reduced by
    :func:`compute_stats` (which scales them), as it would have been alone."""
    widened = values.dtype.itemsize < 8 or values.dtype.kind != "f"
    if values.dtype != np.float64:
        with np.errstate(invalid="ignore"):  # a signalling NaN warns on the cast
            values = values.astype(np.float64)
    values = values.reshape(-1)
    sizes = np.asarray(sizes, dtype=np.int64)
    count = len(sizes)
    results: list[TensorStats | None] = [None] * count
    filled = sizes > 0
    if not filled.all():
        empty = Moments().result()
        for index in np.flatnonzero(~filled).tolist():
            results[index] = empty
        if not filled.any():
            return results  # type: ignore[return-value]
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        # float64 data beyond _SEGMENT_SAFE overflows here; those segments are reduced again
        return _segments(values, sizes, filled, results, widened)


def _segments(
    values: np.ndarray,
    sizes: np.ndarray,
    filled: np.ndarray,
    results: list[TensorStats | None],
    widened: bool,
) -> list[TensorStats]:
    present = sizes[filled]
    starts = np.zeros(present.size, dtype=np.int64)
    np.cumsum(present[:-1], out=starts[1:])
    finite_mask = np.isfinite(values)
    all_finite = bool(finite_mask.all())
    zeros = np.add.reduceat(values == 0, starts, dtype=np.int64)
    if all_finite:
        finite = present
        nan = inf = np.zeros(present.size, dtype=np.int64)
        summed, low_in, high_in = values, values, values
    else:
        finite = np.add.reduceat(finite_mask, starts, dtype=np.int64)
        nan = np.add.reduceat(np.isnan(values), starts, dtype=np.int64)
        inf = present - finite - nan
        summed = np.where(finite_mask, values, 0.0)
        low_in = np.where(finite_mask, values, np.inf)
        high_in = np.where(finite_mask, values, -np.inf)
    low = np.minimum.reduceat(low_in, starts)
    high = np.maximum.reduceat(high_in, starts)
    has_finite = finite > 0
    divisor = np.maximum(finite, 1)
    mean = np.add.reduceat(summed, starts) / divisor
    centred = np.subtract(summed, np.repeat(mean, present))
    if not all_finite:
        centred[~finite_mask] = 0.0
    np.square(centred, out=centred)
    std = np.sqrt(np.add.reduceat(centred, starts) / divisor)
    if widened:  # widened data never leaves the safe range; float64 data may
        unsafe = np.zeros(present.size, dtype=bool)
    else:
        largest = np.maximum(
            np.abs(np.where(has_finite, low, 0.0)), np.abs(np.where(has_finite, high, 0.0))
        )
        smallest = np.minimum.reduceat(np.where(summed != 0, np.abs(summed), np.inf), starts)
        unsafe = (largest > _SEGMENT_SAFE[1]) | (smallest < _SEGMENT_SAFE[0])
    slots = np.flatnonzero(filled).tolist()
    if has_finite.all() and not unsafe.any():  # the usual case: built at C speed
        fractions = (zeros / present).tolist()  # int / int in float64, as zero / n below
        columns = (present, mean, std, low, high)
        built = map(TensorStats, *(c.tolist() for c in columns), fractions, nan.tolist(),
                    inf.tolist())  # fmt: skip
        for slot, stats in zip(slots, built, strict=True):
            results[slot] = stats
        return results  # type: ignore[return-value]
    rows = zip(
        present.tolist(),
        mean.tolist(),
        std.tolist(),
        low.tolist(),
        high.tolist(),
        zeros.tolist(),
        nan.tolist(),
        inf.tolist(),
        has_finite.tolist(),
        unsafe.tolist(),
        starts.tolist(),
        strict=True,
    )
    for slot, (n, mu, sigma, lo, hi, zero, nans, infs, some, extreme, start) in zip(
        slots, rows, strict=True
    ):
        if extreme:
            results[slot] = compute_stats([values[start : start + n]])
        elif some:
            results[slot] = TensorStats(n, mu, sigma, lo, hi, zero / n, nans, infs)
        else:
            results[slot] = TensorStats(
                n, math.nan, math.nan, math.nan, math.nan, zero / n, nans, infs
            )
    return results  # type: ignore[return-value]
