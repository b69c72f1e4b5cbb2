"""Tensor data lying in a region of a file (a torch storage, a safetensors buffer), read with
``os.pread`` on demand: nothing is mapped, so statistics of a contiguous tensor hold one chunk
in memory (a strided view is read whole, at most the size of its storage)."""

from __future__ import annotations

import math
import operator
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import numpy as np

from weightscope.dtypes import BFLOAT16, bfloat16_to_float32
from weightscope.errors import CorruptFileError, UnsupportedFormatError, file_error
from weightscope.stats import Scratch, TensorStats, compute_stats, reduce_slabs

_HAS_PREADV = hasattr(os, "preadv")  # not on Windows: there chunks are read one by one

MAX_RANK = 64
"""Tensors with more dimensions than this are refused as malformed (no real one has more than
a handful). Besides, the product of a million dims from a hostile header is a number whose
computation, one dim at a time, takes quadratic time."""


class OpenFile:
    """One read-only descriptor shared by every tensor of a model (``pread`` is thread-safe)."""

    def __init__(self, path: Path, looked_like: str = "model file") -> None:
        self.path = path
        self.looked_like = looked_like
        """The format the file is in, as error lines name it (``PyTorch checkpoint``)."""
        self.fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self.fd).st_size

    def error(self, problem: str) -> Exception:
        return file_error(CorruptFileError, self.path, problem, self.looked_like)

    def read(self, offset: int, nbytes: int) -> bytes:
        if offset + nbytes > self.size:  # checked before pread allocates nbytes
            raise self.error(f"tensor data cut short at byte {offset}")
        data = os.pread(self.fd, nbytes, offset)
        if len(data) != nbytes:  # the file shrank since it was opened
            raise self.error(f"tensor data cut short at byte {offset}")
        return data

    def read_into(self, offset: int, buffer: np.ndarray) -> None:
        """Fill ``buffer`` (contiguous) with the bytes at ``offset``, without allocating."""
        view = buffer.reshape(-1).view(np.uint8).data
        done = 0
        while done < len(view):
            count = os.preadv(self.fd, [view[done:]], offset + done)
            if count <= 0:
                raise self.error(f"tensor data cut short at byte {offset + done}")
            done += count

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
        "base", "contiguous", "dtype_name", "file", "nbytes", "offset", "raw_dtype", "shape",
        "stride",
    )  # fmt: skip

    def __init__(
        self,
        file: OpenFile,
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
        numel = math.prod(shape)
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
        if base + storage_numel * itemsize > file.size:
            raise file.error(f"storage of {storage_numel:,} elements runs past the end of the file")
        self.contiguous = stride == c_strides(shape)
        self.nbytes = (last - offset + 1) * itemsize if numel else 0
        """Bytes of the file this tensor reads."""

    def file_regions(self) -> list[tuple[OpenFile, int]]:
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
        for start in range(0, numel, max_elements):
            count = min(max_elements, numel - start)
            yield self._decode(self.file.read(start_byte + start * itemsize, count * itemsize))

    def stats(self, max_elements: int) -> TensorStats:
        if self.raw_dtype.kind not in "fiub":
            raise file_error(
                UnsupportedFormatError,
                self.file.path,
                f"no statistics for {self.dtype_name} values ({self.file.looked_like})",
            )
        floats = self.raw_dtype.kind == "f" or self.dtype_name == BFLOAT16
        if not (self.contiguous and floats and _HAS_PREADV):
            return compute_stats(self.chunks(max_elements))
        # Floats: read slabs straight into reused buffers, reduced on a few threads.
        itemsize = self.raw_dtype.itemsize
        start_byte = self.base + self.offset * itemsize
        numel = math.prod(self.shape)
        slabs = [(s, min(max_elements, numel - s)) for s in range(0, numel, max_elements)]

        def read(slab: tuple[int, int], scratch: Scratch) -> np.ndarray:
            start, count = slab
            raw = scratch.get("read", count, self.raw_dtype)
            self.file.read_into(start_byte + start * itemsize, raw)
            if self.dtype_name == BFLOAT16:
                widened = scratch.get("bfloat16", count, np.uint32)
                np.left_shift(raw.view(np.uint16), 16, out=widened, dtype=np.uint32)
                return widened.view(np.float32)
            if not self.raw_dtype.isnative:
                raw.byteswap(inplace=True)
                return raw.view(self.raw_dtype.newbyteorder("="))
            return raw

        return reduce_slabs(slabs, read)


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


def declared_bytes(source: object) -> list[tuple[OpenFile, int]]:
    """The file regions a tensor source reads (through any sources it is derived from): what
    :func:`check_read_budget` adds up."""
    method = getattr(source, "file_regions", None)
    return list(method()) if method is not None else []
