"""A checkpoint tensor's data, checked against the CRC32C its index keeps of it
(``BundleEntryProto.crc32c``: the masked CRC32C of the tensor's bytes as stored, which
TensorFlow checks on every read). The check is made where the bytes are in hand anyway: when
the tensor is read whole, or streamed in order to its end, so no byte is read twice for it.
Statistics, read in slabs on several threads, are not checked."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from weightscope.formats._common.file_region import FileRegionSource, OpenFile, c_strides
from weightscope.formats.tensorflow.crc32c import crc32c, mask


class ChecksummedSource(FileRegionSource):
    """A contiguous bundle tensor whose bytes must have the masked CRC32C ``expected``."""

    __slots__ = ("expected", "tensor_name")

    def __init__(
        self,
        file: OpenFile,
        base: int,
        dtype: str,
        shape: tuple[int, ...],
        byteorder: str,
        expected: int,
        tensor_name: str,
    ) -> None:
        numel = math.prod(shape)
        super().__init__(file, base, numel, dtype, 0, shape, c_strides(shape), byteorder)
        self.expected = expected
        self.tensor_name = tensor_name

    def _verify(self, crc: int) -> None:
        if mask(crc) != self.expected:
            raise self.file.error(
                f"tensor {self.tensor_name!r} fails its CRC32C check (the index says "
                f"{self.expected:#010x}, its {self.nbytes:,} bytes give {mask(crc):#010x}): "
                f"the data is damaged"
            )

    def read(self) -> np.ndarray:
        raw = self.file.read(self.start, self.nbytes)
        self._verify(crc32c(raw))
        return self._decode(raw).reshape(self.shape)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        itemsize = self.raw_dtype.itemsize
        crc = 0
        for start in range(0, self.numel, max_elements):
            count = min(max_elements, self.numel - start)
            raw = self.file.read(self.start + start * itemsize, count * itemsize)
            crc = crc32c(raw, crc)
            yield self._decode(raw)
        self._verify(crc)
