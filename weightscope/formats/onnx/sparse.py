"""ONNX sparse tensors (``sparse_initializer``, a ``Constant``'s ``sparse_value``), densified
when read."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from weightscope.errors import short
from weightscope.formats._common.file_region import MAX_RANK, RegionFile, declared_bytes
from weightscope.formats.onnx.constants import Constant, new_storage_id
from weightscope.formats.onnx.proto import SparseTensorProto
from weightscope.formats.onnx.tensors import TensorContext, dtype_name, tensor_source
from weightscope.limits import LimitExceeded, limit_error
from weightscope.model import TensorSource
from weightscope.stats import Moments, StatsAccumulator, TensorStats, compute_stats


class SparseSource:
    def __init__(
        self,
        values: TensorSource,
        indices: TensorSource,
        shape: tuple[int, ...],
        nnz: int,
        ctx: TensorContext,
        name: str,
    ) -> None:
        self.values = values
        self.indices = indices
        self.shape = shape
        self.nnz = nnz
        self.ctx = ctx
        self.name = name

    def file_regions(self) -> list[tuple[RegionFile, int]]:
        return declared_bytes(self.values) + declared_bytes(self.indices)

    def _check_dense(self) -> int:
        numel = math.prod(self.shape)
        limit = self.ctx.limits.max_dense_elements
        if numel > limit:
            raise limit_error(
                self.ctx.label,
                LimitExceeded(
                    "max_dense_elements",
                    limit,
                    numel,
                    f"sparse tensor {short(self.name)} of shape {list(self.shape)} is too large "
                    f"to densify ({numel:,} elements)",
                ),
            )
        return numel

    def _entries(self, numel: int) -> tuple[np.ndarray, np.ndarray]:
        """The values and their flat positions in the dense tensor, indices checked."""
        values = np.asarray(self.values.read()).reshape(-1)
        indices = np.asarray(self.indices.read(), dtype=np.int64)
        if indices.ndim == 2 and indices.shape == (self.nnz, len(self.shape)):
            if np.any(indices < 0) or np.any(indices >= np.asarray(self.shape)):
                raise self.ctx.error(f"sparse tensor {short(self.name)} has indices out of range")
            flat = np.ravel_multi_index(tuple(indices.T), self.shape) if self.nnz else indices[:, 0]
        elif indices.ndim == 1 and indices.size == self.nnz:
            flat = indices
            if np.any(flat < 0) or np.any(flat >= numel):
                raise self.ctx.error(f"sparse tensor {short(self.name)} has indices out of range")
        else:
            raise self.ctx.error(
                f"sparse tensor {short(self.name)} has indices of shape {indices.shape}"
            )
        return values, flat

    def read(self) -> np.ndarray:
        numel = self._check_dense()
        values, flat = self._entries(numel)
        dense = np.zeros(numel, dtype=values.dtype)
        dense[flat] = values
        return dense.reshape(self.shape)

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        flat = self.read().reshape(-1)
        for start in range(0, flat.size, max_elements):
            yield flat[start : start + max_elements]

    def stats(self, max_elements: int) -> TensorStats:
        """Statistics of the dense tensor: densified when it fits in one chunk, else from the
        stored values and a count of the zeros around them, so that a few bytes declaring a huge
        shape cost no more memory than the values they hold."""
        numel = self._check_dense()
        if numel <= max_elements:
            return compute_stats(self.chunks(max_elements))
        values, flat = self._entries(numel)
        # where an index repeats, the dense tensor holds the last value written there
        positions, last = np.unique(flat[::-1], return_index=True)
        stored = values[::-1][last]
        acc = StatsAccumulator()
        for start in range(0, stored.size, max_elements):
            acc.add(stored[start : start + max_elements])
        zeros = numel - positions.size
        acc.moments.merge(Moments(zeros, zeros, 0.0, 0.0, 0.0, 0.0, zeros))
        return acc.result()


def sparse_constant(name: str, sparse: SparseTensorProto, ctx: TensorContext) -> Constant:

    if len(sparse.dims) > MAX_RANK:
        raise ctx.error(f"sparse tensor {short(name)} has {len(sparse.dims):,} dims")
    shape = tuple(int(d) for d in sparse.dims)
    if any(d < 0 for d in shape):
        raise ctx.error(f"sparse tensor {short(name)} has negative dims {list(shape)}")
    nnz = int(sparse.values.dims[0]) if len(sparse.values.dims) == 1 else -1
    if nnz < 0:
        raise ctx.error(
            f"sparse tensor {short(name)} has values of dims {list(sparse.values.dims)}"
        )
    values = tensor_source(sparse.values, ctx)
    indices = tensor_source(sparse.indices, ctx)
    source = SparseSource(values, indices, shape, nnz, ctx, name)
    return Constant(name, source, shape, dtype_name(sparse.values.data_type), new_storage_id())
