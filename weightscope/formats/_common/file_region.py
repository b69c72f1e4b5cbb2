"""Tensor data lying in a region of a file (a torch storage, a safetensors buffer), read with
``os.pread`` on demand, so that a contiguous tensor is held one chunk at a time (a strided view
is read whole, at most the size of its storage).

Statistics of a large contiguous float tensor are the exception: its bytes are mapped and reduced
where they lie in the page cache, a chunk at a time on a few threads, each chunk's pages let go
(``MADV_DONTNEED``) once reduced, so resident memory stays a few chunks. Copying out of the page
cache with ``pread`` cost more than the reduction itself (4-8 GB/s on one core, no faster on two;
the mapped pages are read at 15-20 GB/s). The file's size is checked again just before mapping;
a file cut short by another process *while* it is being reduced would raise SIGBUS, as it would
for any program that maps files (the ONNX and TFLite readers map theirs whole).
"""

from __future__ import annotations

import contextlib
import math
import mmap
import operator
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

from weightscope.chunking import DEFAULT_CHUNK_ELEMENTS
from weightscope.dtypes import BFLOAT16, bfloat16_to_float32
from weightscope.errors import CorruptFileError, UnsupportedFormatError, file_error
from weightscope.formats._common.remote import RemoteFile
from weightscope.stats import (
    SMALL_TENSOR_ELEMENTS,
    Scratch,
    TensorStats,
    compute_stats,
    reduce_slabs,
    segment_stats,
)

_HAS_PREAD = hasattr(os, "pread")  # not on Windows: there a seek and a read, under a lock
_HAS_PREADV = hasattr(os, "preadv")  # not on Windows, nor on macOS before 11
_BINARY = getattr(os, "O_BINARY", 0)  # Windows opens in text mode otherwise
_HAS_MADVISE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_DONTNEED")  # not on Windows
_MAP_ALIGN = max(mmap.ALLOCATIONGRANULARITY, mmap.PAGESIZE)

MAX_RANK = 64
"""Tensors with more dimensions than this are refused as malformed (no real one has more than
a handful). Besides, the product of a million dims from a hostile header is a number whose
computation, one dim at a time, takes quadratic time."""


class RegionFile(Protocol):
    """What tensor sources read from: a local :class:`OpenFile`, or a file read by URL
    (:class:`~weightscope.formats._common.remote.RemoteFile`, whose ``remote`` is True)."""

    path: Path
    looked_like: str
    size: int
    remote: bool

    def error(self, problem: str) -> Exception: ...

    def read(self, offset: int, nbytes: int) -> bytes: ...

    def read_into(self, offset: int, buffer: np.ndarray) -> None: ...

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class OpenFile:
    """One read-only descriptor shared by every tensor of a model (``pread`` is thread-safe;
    where it is missing, reads take turns)."""

    def __init__(self, path: Path, looked_like: str = "model file") -> None:
        self.path = path
        self.looked_like = looked_like
        """The format the file is in, as error lines name it (``PyTorch checkpoint``)."""
        self.fd = os.open(path, os.O_RDONLY | _BINARY)
        self.size = os.fstat(self.fd).st_size
        self._turn = threading.Lock()

    remote = False

    def error(self, problem: str) -> Exception:
        return file_error(CorruptFileError, self.path, problem, self.looked_like)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The bytes of each ``(offset, nbytes)`` in turn (a file by URL reads one ahead)."""
        for offset, nbytes in ranges:
            yield self.read(offset, nbytes)

    def read(self, offset: int, nbytes: int) -> bytes:
        if offset + nbytes > self.size:  # checked before pread allocates nbytes
            raise self.error(f"tensor data cut short at byte {offset}")
        if not _HAS_PREAD:
            buffer = np.empty(nbytes, np.uint8)
            self.read_into(offset, buffer)
            return buffer.tobytes()
        data = os.pread(self.fd, nbytes, offset)
        if len(data) != nbytes:  # the file shrank since it was opened
            raise self.error(f"tensor data cut short at byte {offset}")
        return data

    def check_holds(self, end: int) -> None:
        """Raise the usual error if the file, as it is now, ends before byte ``end``."""
        if os.fstat(self.fd).st_size < end:
            raise self.error(f"tensor data cut short: the file now ends before byte {end}")

    def read_into(self, offset: int, buffer: np.ndarray) -> None:
        """Fill ``buffer`` (contiguous) with the bytes at ``offset``, without allocating."""
        view = buffer.reshape(-1).view(np.uint8).data
        done = 0
        while done < len(view):
            count = self._read_at(view[done:], offset + done)
            if count <= 0:
                raise self.error(f"tensor data cut short at byte {offset + done}")
            done += count

    def _read_at(self, view: memoryview, offset: int) -> int:
        """Read into ``view`` from ``offset``: how many bytes came."""
        if _HAS_PREADV:
            return os.preadv(self.fd, [view], offset)
        if _HAS_PREAD:
            data = os.pread(self.fd, len(view), offset)
        else:
            with self._turn:
                os.lseek(self.fd, offset, os.SEEK_SET)
                data = os.read(self.fd, len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@lru_cache(maxsize=64)
def numpy_dtype(name: str, byteorder: str = "little") -> np.dtype:
    """The dtype to read raw elements as (``bfloat16`` as its 16-bit patterns)."""
    dtype = np.dtype(np.uint16 if name == BFLOAT16 else name)
    return (
        dtype.newbyteorder("<" if byteorder == "little" else ">") if dtype.itemsize > 1 else dtype
    )


class FileRegionSource:
    """A strided tensor over a storage that starts at ``base`` in the file and holds
    ``storage_numel`` elements."""

    __slots__ = (
        "base", "contiguous", "dtype_name", "file", "nbytes", "numel", "offset", "raw_dtype",
        "shape", "start", "stride",
    )  # fmt: skip

    def __init__(
        self,
        file: RegionFile,
        base: int,
        storage_numel: int,
        dtype: str,
        offset: int,
        shape: tuple[int, ...],
        stride: tuple[int, ...],
        byteorder: str = "little",
    ) -> None:
        # Every check in builtins over whole tuples: a file may hold 200,000 tensors.
        self.file = file
        self.dtype_name = dtype
        self.raw_dtype = raw_dtype = numpy_dtype(dtype, byteorder)
        self.shape = shape
        self.stride = stride
        self.offset = offset
        self.base = base
        self.numel = numel = math.prod(shape)
        if len(stride) != len(shape) or offset < 0 or min((*shape, *stride), default=0) < 0:
            raise file.error(f"tensor of shape {shape} is malformed")
        if numel > storage_numel:
            # only overlapping views (zero strides, from expand) can be larger than their storage;
            # reading one would allocate far more than the file holds
            raise file.error(
                f"tensor of shape {shape} has more elements than its storage ({storage_numel:,})"
            )
        # the last element's index: sum((n - 1) * s) over the axes
        last = offset + sum(map(operator.mul, shape, stride)) - sum(stride) if numel else 0
        if numel and last >= storage_numel:
            raise file.error(
                f"tensor of shape {shape} reaches element {last} of a storage of {storage_numel}"
            )
        itemsize = raw_dtype.itemsize
        if not numel and math.prod(n for n in shape if n) * itemsize > sys.maxsize:
            # empty, yet numpy cannot even shape an empty array so (its sizes ignoring the 0)
            raise file.error(f"tensor of shape {shape} is larger than any array can be")
        if base + storage_numel * itemsize > file.size:
            raise file.error(f"storage of {storage_numel:,} elements runs past the end of the file")
        self.contiguous = stride == c_strides(shape)
        self.nbytes = (last - offset + 1) * itemsize if numel else 0
        """Bytes of the file this tensor reads."""
        self.start = base + offset * itemsize
        """File offset of the first byte it reads."""

    def file_regions(self) -> list[tuple[RegionFile, int]]:
        return [(self.file, self.nbytes)]

    def _decode(self, raw: bytes) -> np.ndarray:
        values = np.frombuffer(raw, dtype=self.raw_dtype)
        if self.dtype_name == BFLOAT16:
            return bfloat16_to_float32(values)
        return values.astype(self.raw_dtype.newbyteorder("="), copy=False)

    def read(self) -> np.ndarray:
        itemsize = self.raw_dtype.itemsize
        numel = math.prod(self.shape)
        if self.contiguous or numel == 0:
            raw = self.file.read(self.base + self.offset * itemsize, numel * itemsize)
            return self._decode(raw).reshape(self.shape)
        span = 1 + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True))
        flat = self._decode(self.file.read(self.base + self.offset * itemsize, span * itemsize))
        strides = tuple(s * flat.itemsize for s in self.stride)
        return np.lib.stride_tricks.as_strided(flat, self.shape, strides).copy()

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        if not self.contiguous:
            flat = self.read().reshape(-1)
            for start in range(0, flat.size, max_elements):
                yield flat[start : start + max_elements]
            return
        itemsize = self.raw_dtype.itemsize
        numel = math.prod(self.shape)
        start_byte = self.base + self.offset * itemsize
        ranges = [
            (start_byte + start * itemsize, min(max_elements, numel - start) * itemsize)
            for start in range(0, numel, max_elements)
        ]
        for raw in self.file.read_ranges(ranges):
            yield self._decode(raw)

    def _check_statistics(self) -> None:
        if self.raw_dtype.kind not in "fiub":
            raise file_error(
                UnsupportedFormatError,
                self.file.path,
                f"no statistics for {self.dtype_name} values ({self.file.looked_like})",
            )

    @property
    def small(self) -> bool:
        """Whether :func:`~weightscope.stats.segment_stats` reduces this tensor (read with
        others by :meth:`stats_many`)."""
        return self.contiguous and self.numel <= SMALL_TENSOR_ELEMENTS

    def stats(self, max_elements: int) -> TensorStats:
        self._check_statistics()
        if self.small and self.numel <= max_elements:
            return _small_stats([self])[0]  # the numbers stats_many gives it
        floats = self.raw_dtype.kind == "f" or self.dtype_name == BFLOAT16
        remote = self.file if isinstance(self.file, RemoteFile) else None
        if remote is not None:  # slabs of its remote_range_bytes, ranges_in_flight at once
            max_elements = max(1, remote.range_bytes // self.raw_dtype.itemsize)
            if not (self.contiguous and floats and self.numel):
                return compute_stats(self.chunks(max_elements))  # the next range in flight
        elif not (self.contiguous and floats and self.numel and (_HAS_MADVISE or _HAS_PREADV)):
            return compute_stats(self.chunks(max_elements))
        numel = self.numel
        slabs = [(s, min(max_elements, numel - s)) for s in range(0, numel, max_elements)]
        if remote is None and _HAS_MADVISE:
            return self._mapped_stats(slabs)
        # Floats: read slabs straight into reused buffers, reduced on a few threads (by URL,
        # in_flight of them, each fetching its range while the others reduce theirs).
        itemsize = self.raw_dtype.itemsize

        def read(slab: tuple[int, int], scratch: Scratch) -> np.ndarray:
            start, count = slab
            raw = scratch.get("read", count, self.raw_dtype)
            self.file.read_into(self.start + start * itemsize, raw)
            return self._native_floats(raw, scratch, copied=True)

        return reduce_slabs(slabs, read, None if remote is None else remote.ranges_in_flight)

    def _native_floats(self, raw: np.ndarray, scratch: Scratch, copied: bool) -> np.ndarray:
        """``raw`` elements as floats of the machine's byte order (bfloat16 widened); ``raw`` is
        changed in place only if ``copied`` (it is a buffer of ours, not the file's pages)."""
        if self.dtype_name == BFLOAT16:
            widened = scratch.get("bfloat16", raw.size, np.uint32)
            bits = raw if raw.dtype.isnative else raw.astype(np.uint16)  # a big-endian file's
            np.left_shift(bits.view(np.uint16), 16, out=widened, dtype=np.uint32)
            return widened.view(np.float32)
        if self.raw_dtype.isnative:
            return raw
        native = self.raw_dtype.newbyteorder("=")
        if copied:
            raw.byteswap(inplace=True)
            return raw.view(native)
        swapped = scratch.get("swapped", raw.size, native)
        np.copyto(swapped, raw)  # the cast swaps the bytes
        return swapped

    def _mapped_stats(self, slabs: list[tuple[int, int]]) -> TensorStats:
        """Statistics of a contiguous float tensor reduced where it lies in the page cache, each
        slab's pages let go once reduced (see the module's docstring)."""
        itemsize = self.raw_dtype.itemsize
        end = self.start + self.nbytes
        file = self.file
        assert isinstance(file, OpenFile)  # a local file: stats() maps no URL
        file.check_holds(end)
        begin = self.start - self.start % _MAP_ALIGN
        mapped = mmap.mmap(file.fd, end - begin, offset=begin, access=mmap.ACCESS_READ)
        # in a list, emptied at the end: the mapping cannot close while an array shows it
        view = [np.frombuffer(mapped, self.raw_dtype, self.numel, self.start - begin)]

        def pages(slab: tuple[int, int]) -> tuple[int, int]:
            """The offset in ``mapped`` of the slab's first page, and the bytes from there."""
            first = self.start - begin + slab[0] * itemsize
            first -= first % mmap.PAGESIZE
            return first, self.start - begin + (slab[0] + slab[1]) * itemsize - first

        def read(slab: tuple[int, int], scratch: Scratch) -> np.ndarray:
            # Pages are faulted in by numpy, which lets go of the GIL meanwhile: populating
            # them first with madvise(MADV_POPULATE_READ) is faster on one thread, but holds
            # the GIL, and two threads then reduced at the speed of one.
            start, count = slab
            return self._native_floats(view[0][start : start + count], scratch, copied=False)

        def done(slab: tuple[int, int]) -> None:
            # (with the GIL held too, but dropping page-table entries is quick); pages shared
            # with a neighbouring slab are mapped again if it still reads them
            mapped.madvise(mmap.MADV_DONTNEED, *pages(slab))

        try:
            return reduce_slabs(slabs, read, done=done)
        finally:
            view.clear()
            with contextlib.suppress(BufferError):  # a traceback holds a slab: unmapped later
                mapped.close()

    @staticmethod
    def stats_many(sources: Sequence[FileRegionSource]) -> list[TensorStats]:
        """``[source.stats(DEFAULT_CHUNK_ELEMENTS) for source in sources]``, the small ones read a
        run of neighbours at a time and reduced together (the same numbers as one by one):
        a file of 200,000 tiny tensors spent 50 us on each, in calls."""
        results: list[TensorStats | None] = [None] * len(sources)
        small = []
        for index, source in enumerate(sources):
            source._check_statistics()
            if source.small:
                small.append(index)
            else:
                results[index] = source.stats(DEFAULT_CHUNK_ELEMENTS)
        for index, stats in zip(small, _small_stats([sources[i] for i in small]), strict=True):
            results[index] = stats
        return results  # type: ignore[return-value]


RUN_BYTES = 1 << 20
"""Most bytes :meth:`FileRegionSource.stats_many` reads at once for small tensors."""

RUN_GAP = 4096
"""Most bytes between two small tensors that one read still spans (torch puts a zip header and
padding between storages)."""


def _small_stats(sources: Sequence[FileRegionSource]) -> list[TensorStats]:
    """Statistics of small contiguous sources: those of one file and element type read in runs
    of neighbours, each run reduced by :func:`segment_stats`."""
    results: list[TensorStats | None] = [None] * len(sources)
    groups: dict[tuple[int, np.dtype, str], list[int]] = {}
    for index, source in enumerate(sources):
        key = (id(source.file), source.raw_dtype, source.dtype_name)
        groups.setdefault(key, []).append(index)
    for members in groups.values():
        members.sort(key=lambda i: sources[i].start)
        run: list[int] = []
        run_start = run_end = 0
        for index in members:
            source = sources[index]
            start, end = source.start, source.start + source.nbytes
            if run and (start > run_end + RUN_GAP or max(end, run_end) - run_start > RUN_BYTES):
                _reduce_run([sources[i] for i in run], run_start, run_end, results, run)
                run = []
            if not run:
                run_start = run_end = start
            run.append(index)
            run_end = max(run_end, end)
        if run:
            _reduce_run([sources[i] for i in run], run_start, run_end, results, run)
    return results  # type: ignore[return-value]


def _reduce_run(
    run: list[FileRegionSource],
    run_start: int,
    run_end: int,
    results: list[TensorStats | None],
    slots: list[int],
) -> None:
    """Read the bytes from ``run_start`` to ``run_end`` once and put the statistics of each
    source of ``run`` (sorted by start, all within) in ``results`` at ``slots``."""
    first = run[0]
    raw = first.file.read(run_start, run_end - run_start)
    starts = np.fromiter((s.start - run_start for s in run), np.int64, len(run))
    lengths = np.fromiter((s.nbytes for s in run), np.int64, len(run))
    ends = np.cumsum(lengths)
    if starts[0] == 0 and ends[-1] == len(raw) and np.array_equal(starts[1:], ends[:-1]):
        data = np.frombuffer(raw, dtype=first.raw_dtype)  # end to end, as safetensors lays them
    else:  # gaps between them (or tied tensors over one region): gather their bytes
        offsets = np.repeat(starts - (ends - lengths), lengths)
        offsets += np.arange(int(ends[-1]), dtype=np.int64)
        data = np.frombuffer(raw, dtype=np.uint8)[offsets].view(first.raw_dtype)
    values = bfloat16_to_float32(data) if first.dtype_name == BFLOAT16 else data
    sizes = np.fromiter((s.numel for s in run), np.int64, len(run))
    for slot, stats in zip(slots, segment_stats(values, sizes), strict=True):
        results[slot] = stats


@lru_cache(maxsize=4096)
def c_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The strides, in elements, of a C-contiguous tensor of ``shape`` (cached: most tensors
    of a model share a few shapes)."""
    strides = []
    step = 1
    for size in reversed(shape):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides))


def declared_bytes(source: object) -> list[tuple[RegionFile, int]]:
    """The file regions a tensor source reads (through any sources it is derived from): what
    :func:`check_read_budget` adds up."""
    method = getattr(source, "file_regions", None)
    return list(method()) if method is not None else []
