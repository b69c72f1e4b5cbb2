"""h5py helpers shared by the HDF5-based readers: lazy tensor sources and Keras-style attributes."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from weightscope.chunking import iter_slabs, slab_shape
from weightscope.dtypes import bfloat16_to_float32
from weightscope.errors import CorruptFileError, file_error
from weightscope.stats import Scratch, TensorStats, compute_stats, reduce_slabs

CHECKED_ABOVE_BYTES = 64 * 1024 * 1024
MAX_EXPANSION = 1024
"""A dataset may declare at most this many times the bytes the file stores for it (compression
included) before it is taken for a lying header rather than read."""


class H5DatasetSource:
    """Reads one HDF5 dataset on demand, whole or in slabs of bounded size."""

    def __init__(self, dataset: h5py.Dataset, path: Path) -> None:
        self._dataset = dataset
        self._path = path
        # Keras 3 stores bfloat16 as 2-byte opaque (or integer) data tagged with a dtype attribute.
        self.is_bfloat16 = (
            dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16") and dataset.dtype.itemsize == 2
        )

    @property
    def dtype_name(self) -> str:
        return "bfloat16" if self.is_bfloat16 else str(self._dataset.dtype)

    def _check_readable(self) -> None:
        """Refuse non-numeric data and shapes the file cannot back, before allocating anything."""
        dataset = self._dataset
        if dataset.dtype.kind not in "fiub" and not self.is_bfloat16:
            raise file_error(
                CorruptFileError,
                self._path,
                f"dataset {dataset.name} holds {dataset.dtype} values, not numbers",
            )
        declared = int(dataset.size) * dataset.dtype.itemsize
        if declared > CHECKED_ABOVE_BYTES:
            stored = int(dataset.id.get_storage_size())
            if stored * MAX_EXPANSION < declared:
                raise file_error(
                    CorruptFileError,
                    self._path,
                    f"dataset {dataset.name} declares shape {dataset.shape} ({declared:,} bytes) "
                    f"but the file stores {stored:,} bytes for it",
                )

    def _read(self, selection: tuple[slice, ...] | tuple[()]) -> np.ndarray:
        try:
            data = np.asarray(self._dataset[selection])
        except (OSError, ValueError, TypeError) as exc:
            raise self._read_error(exc) from exc
        if self.is_bfloat16:
            return bfloat16_to_float32(data)
        return data

    def _read_error(self, exc: BaseException) -> Exception:
        return file_error(
            CorruptFileError, self._path, f"cannot read dataset {self._dataset.name}: {exc}"
        )

    def read(self) -> np.ndarray:
        self._check_readable()
        return self._read(())

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        self._check_readable()
        for slab in iter_slabs(self._dataset.shape, max_elements):
            yield self._read(slab)

    def stats(self, max_elements: int) -> TensorStats:
        """Statistics read in slabs of at most ``max_elements`` into reused buffers, on a few
        threads (see :func:`weightscope.stats.reduce_slabs`)."""
        self._check_readable()
        dtype = self._dataset.dtype
        if not (self.is_bfloat16 or dtype.kind == "f"):
            return compute_stats(self.chunks(max_elements))
        buffer_dtype = dtype.newbyteorder("=")  # HDF5 swaps bytes as it reads, if need be

        def read(slab: tuple[slice, ...], scratch: Scratch) -> np.ndarray:
            return self._read_slab(slab, scratch, buffer_dtype)

        return reduce_slabs(list(iter_slabs(self._dataset.shape, max_elements)), read)

    def _read_slab(
        self, slab: tuple[slice, ...], scratch: Scratch, buffer_dtype: np.dtype[Any]
    ) -> np.ndarray:
        """One slab's values as float32/64 (float16 as stored), in ``scratch``'s buffers."""
        shape = slab_shape(slab, self._dataset.shape)
        size = int(np.prod(shape))
        raw = scratch.get("read", size, buffer_dtype)
        try:
            self._dataset.read_direct(raw.reshape(shape), source_sel=slab or None)
        except (OSError, ValueError, TypeError) as exc:
            raise self._read_error(exc) from exc
        if not self.is_bfloat16:
            return raw
        widened = scratch.get("bfloat16", size, np.uint32)
        np.left_shift(raw.view(np.uint16), 16, out=widened, dtype=np.uint32)
        return widened.view(np.float32)


def string_list_attr(obj: h5py.HLObject, name: str) -> list[str] | None:
    """A list-of-strings attribute as Keras writes it, including the chunked ``name0..N`` form.

    Keras splits attributes over HDF5's 64 KB header limit into ``name0``, ``name1``, ...
    Returns None when the attribute is absent.
    """
    attrs = obj.attrs
    if name in attrs:
        return _decode_list(attrs[name])
    if f"{name}0" not in attrs:
        return None
    values: list[str] = []
    index = 0
    while f"{name}{index}" in attrs:
        values.extend(_decode_list(attrs[f"{name}{index}"]))
        index += 1
    return values


def _decode_list(value: Any) -> list[str]:
    array = np.atleast_1d(np.asarray(value))
    if array.size == 0:
        return []
    return [item.decode("utf8") if isinstance(item, bytes) else str(item) for item in array.ravel()]


def text_attr(obj: h5py.HLObject, name: str) -> str | None:
    value = obj.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
        return value.decode("utf8") if isinstance(value, bytes) else str(value)
    return str(value)


class FileSlice(io.RawIOBase):
    """A read-only window ``[start, start + length)`` of a file, so that h5py can open a stored
    zip member in place, without extracting it."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        super().__init__()
        self._file: io.BufferedReader = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._start = start
        self._length = length
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._length - self._pos))
        if count == 0:
            return 0
        self._file.seek(self._start + self._pos)
        got = self._file.readinto(view[:count]) or 0
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()
