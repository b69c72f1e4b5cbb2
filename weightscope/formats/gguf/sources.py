"""The data of block-quantized GGUF tensors, read from the file when asked for: the real values
(dequantized a run of whole blocks at a time, so statistics hold one run in memory, never the
whole tensor), and the stored integers, scales, zero points and offsets they are computed from
(the grid types, dequantized by the ``gguf`` package, have values only)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from weightscope.chunking import DEFAULT_CHUNK_ELEMENTS
from weightscope.errors import UnsupportedFormatError, file_error
from weightscope.formats._common.file_region import RegionFile
from weightscope.formats.gguf import grid
from weightscope.formats.gguf.blocks import GGMLType, Parts, real_values
from weightscope.model import ArraySource, Quantization
from weightscope.stats import SMALL_TENSOR_ELEMENTS, Scratch, TensorStats, reduce_slabs

Run = tuple[int, int]
"""A run of blocks: the first block's index and how many."""


class BlockSource:
    """The real values of a block-quantized tensor of numpy-order ``shape`` whose blocks start
    at byte ``start`` of ``file`` (of a big-endian file: their 16-bit fields swapped)."""

    __slots__ = (
        "big_endian", "file", "ggml_type", "n_blocks", "name", "nbytes", "numel", "shape", "start",
    )  # fmt: skip

    def __init__(
        self,
        file: RegionFile,
        start: int,
        ggml_type: GGMLType,
        shape: tuple[int, ...],
        name: str = "",
        big_endian: bool = False,
    ) -> None:
        assert ggml_type.decode is not None or ggml_type.grid
        assert not big_endian or ggml_type.byteswap is not None
        self.file = file
        self.start = start
        self.ggml_type = ggml_type
        self.shape = shape
        self.name = name
        self.big_endian = big_endian
        self.numel = int(np.prod(shape, dtype=object))
        self.n_blocks = self.numel // ggml_type.block_size
        self.nbytes = self.n_blocks * ggml_type.type_size

    def file_regions(self) -> list[tuple[RegionFile, int]]:
        return [(self.file, self.nbytes)]

    def runs(self, max_elements: int) -> list[Run]:
        per = max(1, max_elements // self.ggml_type.block_size)
        return [(first, min(per, self.n_blocks - first)) for first in range(0, self.n_blocks, per)]

    def blocks(self, run: Run) -> np.ndarray:
        """The bytes of the run's blocks, ``(count, type_size)``, in little-endian order."""
        first, count = run
        size = self.ggml_type.type_size
        raw = self.file.read(self.start + first * size, count * size)
        blocks = np.frombuffer(raw, np.uint8).reshape(count, size)
        if self.big_endian and self.ggml_type.byteswap:
            blocks = blocks.copy()
            for at in self.ggml_type.byteswap:
                blocks[:, [at, at + 1]] = blocks[:, [at + 1, at]]
        return blocks

    def parts(self, run: Run) -> Parts:
        decode = self.ggml_type.decode
        assert decode is not None
        with np.errstate(all="ignore"):  # damaged scales: inf and NaN, as GGML computes them
            return decode(self.blocks(run))

    def values(self, run: Run) -> np.ndarray:
        if self.ggml_type.decode is None:
            return self._grid_values(run)
        with np.errstate(all="ignore"):
            return real_values(self.parts(run), self.ggml_type.sub_block).reshape(-1)

    def _grid_values(self, run: Run) -> np.ndarray:
        blocks = self.blocks(run)
        try:
            with np.errstate(all="ignore"):
                return grid.dequantize(blocks, self.ggml_type.type_id).reshape(-1)
        except ImportError as exc:  # installed when the file was read, broken or gone since
            raise file_error(
                UnsupportedFormatError,
                self.file.path,
                f"tensor {self.name!r}: {self.ggml_type.name} blocks are dequantized by the "
                f"gguf package, which cannot be imported ({exc}); {grid.EXTRA}",
            ) from None

    def read(self) -> np.ndarray:
        out = np.empty(self.numel, np.float32)
        size = self.ggml_type.block_size
        for run in self.runs(DEFAULT_CHUNK_ELEMENTS):
            out[run[0] * size : (run[0] + run[1]) * size] = self.values(run)
        return out.reshape(self.shape)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        for run in self.runs(max_elements):
            yield self.values(run)

    def stats(self, max_elements: int) -> TensorStats:
        if self.numel <= min(SMALL_TENSOR_ELEMENTS, max_elements):
            return ArraySource(self.read()).stats(max_elements)

        def read(run: Run, scratch: Scratch) -> np.ndarray:
            return self.values(run)

        return reduce_slabs(self.runs(max_elements), read)


PART_NAMES = ("stored", "scale", "zero_point", "offset")


class BlockPartSource:
    """One part of a block-quantized tensor, whole: the stored integers in the tensor's shape,
    or the scales, zero points or offsets, one per sub-block (the shape with its last axis
    counting sub-blocks)."""

    def __init__(self, base: BlockSource, part: str) -> None:
        assert part in PART_NAMES
        self.base = base
        self.part = part

    def read(self) -> np.ndarray:
        base = self.base
        ggml_type = base.ggml_type
        if self.part == "stored":
            shape = base.shape
        else:
            per_row = ggml_type.sub_block
            shape = (*base.shape[:-1], base.shape[-1] // per_row) if base.shape else (1,)
        pieces = []
        for run in base.runs(DEFAULT_CHUNK_ELEMENTS):
            parts = base.parts(run)
            if self.part == "zero_point":
                piece = np.full(parts.scale.size, parts.zero_point, np.int8)
            else:
                piece = np.asarray(getattr(parts, self.part)).reshape(-1)
                if piece.dtype.kind == "f":  # signalling NaNs from damaged scales made quiet
                    piece = np.where(np.isnan(piece), np.float32(np.nan), piece)
            pieces.append(piece)
        if not pieces:
            dtype = np.float32 if self.part in ("scale", "offset") else np.int8
            return np.zeros(shape, dtype)
        return np.concatenate(pieces).reshape(shape)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        return ArraySource(self.read()).chunks(max_elements)

    def stats(self, max_elements: int) -> TensorStats:
        return ArraySource(self.read()).stats(max_elements)


def block_quantization(source: BlockSource) -> Quantization:
    """How the stored integers of ``source`` stand for its real values: a scale (and an offset
    for the types with minimums, a zero point for the types centred on one) per sub-block along
    the last numpy axis."""
    ggml_type = source.ggml_type
    assert ggml_type.decode is not None
    probe = ggml_type.decode(np.zeros((1, ggml_type.type_size), np.uint8))
    return Quantization(
        stored=BlockPartSource(source, "stored"),
        scale=BlockPartSource(source, "scale"),
        zero_point=BlockPartSource(source, "zero_point") if probe.zero_point else None,
        axis=-1,
        block_size=ggml_type.sub_block,
        offset=BlockPartSource(source, "offset") if probe.offset is not None else None,
    )


class UndecodedSource:
    """A tensor of a GGML type weightscope does not dequantize: listed and counted, its values
    refused with one line when asked for (``why``: what would decode it, if anything)."""

    def __init__(
        self, file: RegionFile, name: str, ggml_type: GGMLType, nbytes: int, why: str = ""
    ) -> None:
        self.file = file
        self.name = name
        self.ggml_type = ggml_type
        self.nbytes = nbytes
        self.why = why

    def file_regions(self) -> list[tuple[RegionFile, int]]:
        return [(self.file, self.nbytes)]

    def _refuse(self) -> Exception:
        return file_error(
            UnsupportedFormatError,
            self.file.path,
            f"tensor {self.name!r}: {self.ggml_type.name} blocks are not dequantized by "
            f"weightscope (no values, statistics or export){self.why}",
        )

    def read(self) -> np.ndarray:
        raise self._refuse()

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        raise self._refuse()

    def stats(self, max_elements: int) -> TensorStats:
        raise self._refuse()
