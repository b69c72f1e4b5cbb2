"""Chunked statistics against numpy on real random data, and slabs that tile a tensor exactly.

The reference is numpy in float64 over the finite values; the reduction under test works in the
data's own float type (float16 in float32), chunk by chunk, possibly on several threads.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from weightscope.chunking import DEFAULT_CHUNK_ELEMENTS, iter_slabs, slab_shape
from weightscope.dtypes import BFLOAT16
from weightscope.errors import CorruptFileError
from weightscope.formats._common.file_region import FileRegionSource, OpenFile, c_strides
from weightscope.formats.keras.hdf5 import H5DatasetSource
from weightscope.model import ArraySource, Tensor, small_tensor_stats
from weightscope.stats import (
    BLOCK,
    SMALL_TENSOR_ELEMENTS,
    TensorStats,
    _sums,
    compute_stats,
    reduce_slabs,
    segment_stats,
)

# Relative tolerance of mean (against mean and spread together) and std, per input type.
RTOL = {np.float16: 1e-6, np.float32: 1e-6, np.float64: 1e-12}

ONE_ELEMENT_CHUNKS = 5_000
"""Elements reduced one per chunk: each is a chunk's moments merged into the total, so a few
thousand exercise that as well as many more, in a tenth of the time."""


def reference(array: np.ndarray) -> TensorStats:
    flat = np.asarray(array).reshape(-1).astype(np.float64)
    finite = flat[np.isfinite(flat)]
    nan = int(np.isnan(flat).sum())
    inf = int(np.isinf(flat).sum())
    zeros = float((flat == 0).sum() / flat.size) if flat.size else 0.0
    if finite.size == 0:
        return TensorStats(flat.size, math.nan, math.nan, math.nan, math.nan, zeros, nan, inf)
    # Scale by a power of two so that float64 extremes do not overflow the reference itself.
    shift = math.frexp(float(np.abs(finite).max()))[1]
    scaled = np.ldexp(finite, -shift)
    return TensorStats(
        flat.size,
        math.ldexp(float(scaled.mean()), shift),
        math.ldexp(float(scaled.std()), shift),
        float(finite.min()),
        float(finite.max()),
        zeros,
        nan,
        inf,
    )


def assert_stats_close(got: TensorStats, want: TensorStats, rtol: float) -> None:
    assert got.count == want.count
    assert (got.nan, got.inf) == (want.nan, want.inf)
    assert got.zeros_fraction == pytest.approx(want.zeros_fraction, abs=1e-12)
    if math.isnan(want.mean):
        for value in (got.mean, got.std, got.min, got.max):
            assert math.isnan(value)
        return
    assert (got.min, got.max) == (want.min, want.max)
    spread = abs(want.mean) + want.std
    assert abs(got.mean - want.mean) <= rtol * spread, (got.mean, want.mean)
    assert got.std == pytest.approx(want.std, rel=rtol, abs=rtol * spread * 1e-3)


def flat_chunks(array: np.ndarray, size: int) -> list[np.ndarray]:
    flat = array.reshape(-1)
    return [flat[start : start + size] for start in range(0, flat.size, size)]


def sprinkle(array: np.ndarray, rng: np.random.Generator, fraction: float = 0.01) -> np.ndarray:
    """A copy of ``array`` with some zeros, NaN, +Inf and -Inf at random places."""
    out = array.copy().reshape(-1)
    count = max(1, int(out.size * fraction))
    for value in (0.0, np.nan, np.inf, -np.inf):
        out[rng.choice(out.size, count, replace=False)] = value
    return out.reshape(array.shape)


@pytest.fixture
def gen() -> np.random.Generator:
    return np.random.default_rng(12345)


# ---------------------------------------------------------------------------------------------
# compute_stats: chunk sizes, types, special values


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("chunk", [1, 7, 1000, 4096, 10_007, 1 << 20])
def test_matches_numpy_with_nan_and_inf(
    dtype: type[np.floating], chunk: int, gen: np.random.Generator
) -> None:
    data = gen.normal(0.01, 0.05, size=(97, 103)).astype(dtype)
    data = sprinkle(data, gen)
    got = compute_stats(flat_chunks(data, chunk))
    want = reference(data)
    assert want.nan > 0 and want.inf > 0 and want.zeros_fraction > 0
    assert_stats_close(got, want, RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("chunk", [3, 64, 999, 100_000])
def test_matches_numpy_on_weight_like_data(
    dtype: type[np.floating], chunk: int, gen: np.random.Generator
) -> None:
    # Glorot-uniform-like kernel: mean tiny against the spread, as in real layers.
    limit = math.sqrt(6 / (512 + 4096))
    data = gen.uniform(-limit, limit, size=(3, 3, 64, 128)).astype(dtype)
    assert_stats_close(compute_stats(flat_chunks(data, chunk)), reference(data), RTOL[dtype])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_large_mean_small_spread_is_centred(dtype: type[np.floating]) -> None:
    gen = np.random.default_rng(7)
    # Batch-norm gamma or moving variance: mean far above the spread.
    data = (1000 + gen.normal(0, 0.5, size=50_000)).astype(dtype)
    want = reference(data)
    for chunk in (333, 4096, 50_000):
        assert_stats_close(compute_stats(flat_chunks(data, chunk)), want, RTOL[dtype])
    # one element per chunk: 5,000 merges of single values (50,000 took seconds, for the same
    # code: one element's moments, merged into a running total as large against its spread)
    head = data[:ONE_ELEMENT_CHUNKS]
    assert_stats_close(compute_stats(flat_chunks(head, 1)), reference(head), RTOL[dtype])


@pytest.mark.parametrize(
    ("dtype", "scale"),
    [
        (np.float32, 1e30),
        (np.float32, 3e38),
        (np.float32, 1e-30),
        (np.float32, 1e-42),  # subnormal float32
        (np.float64, 1e150),
        (np.float64, 1e-150),
        (np.float16, 6e4),
        (np.float16, 1e-7),  # subnormal float16
    ],
)
def test_extreme_magnitudes_neither_overflow_nor_underflow(
    dtype: type[np.floating], scale: float, gen: np.random.Generator
) -> None:
    data = (gen.uniform(-1, 1, size=20_000) * scale).astype(dtype)
    data[::7] = 0
    got = compute_stats(flat_chunks(data, 3000))
    want = reference(data)
    assert math.isfinite(got.std) and got.std > 0
    assert_stats_close(got, want, RTOL[dtype])


def test_float64_beyond_squares_range_gives_infinite_or_zero_std(gen: np.random.Generator) -> None:
    # Sums of squared deviations are float64: past ~1e154 they overflow (std is inf), below
    # ~1e-154 they underflow (std is 0); mean, min and max stay exact.
    for scale, std in ((1e300, math.inf), (1e-300, 0.0)):
        data = gen.uniform(-1, 1, size=5000) * scale
        got, want = compute_stats(flat_chunks(data, 999)), reference(data)
        assert got.std == std
        assert (got.min, got.max) == (want.min, want.max)
        assert got.mean == pytest.approx(want.mean, rel=1e-9, abs=1e-12 * scale)


def test_constant_tensor_has_zero_std() -> None:
    data = np.full(10_001, 0.1, dtype=np.float32)
    got = compute_stats(flat_chunks(data, 1000))
    assert got.std == 0.0
    assert got.mean == pytest.approx(float(np.float32(0.1)), rel=1e-7)
    assert got.min == got.max == float(np.float32(0.1))


def test_integer_and_bool_data(gen: np.random.Generator) -> None:
    data = gen.integers(-5, 6, size=(40, 41)).astype(np.int32)
    assert_stats_close(compute_stats(flat_chunks(data, 100)), reference(data), 1e-12)
    flags = gen.random(1000) < 0.3
    assert_stats_close(compute_stats(flat_chunks(flags, 77)), reference(flags), 1e-12)


def test_non_native_byte_order(gen: np.random.Generator) -> None:
    data = gen.normal(0, 1, size=5000).astype(">f4")
    assert_stats_close(compute_stats(flat_chunks(data, 999)), reference(data), 1e-6)


def test_empty() -> None:
    for chunks in ([], [np.zeros(0, np.float32)], [np.zeros((0, 3)), np.zeros((2, 0))]):
        got = compute_stats(chunks)
        assert got.count == 0 and got.nan == 0 and got.inf == 0
        assert got.zeros_fraction == 0.0
        assert all(math.isnan(v) for v in (got.mean, got.std, got.min, got.max))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_all_nan_and_all_inf(dtype: type[np.floating]) -> None:
    nan = np.full(1000, np.nan, dtype=dtype)
    got = compute_stats(flat_chunks(nan, 300))
    assert (got.count, got.nan, got.inf, got.zeros_fraction) == (1000, 1000, 0, 0.0)
    assert all(math.isnan(v) for v in (got.mean, got.std, got.min, got.max))

    mixed = np.array([np.inf, -np.inf, np.nan, np.inf], dtype=dtype)
    got = compute_stats([mixed])
    assert (got.count, got.nan, got.inf) == (4, 1, 3)
    assert math.isnan(got.mean)


def test_finite_values_after_an_all_nan_chunk() -> None:
    chunks = [np.full(10, np.nan, np.float32), np.array([1, 2, 3, 0], np.float32)]
    got = compute_stats(chunks)
    assert (got.count, got.nan, got.inf) == (14, 10, 0)
    assert got.mean == pytest.approx(1.5)
    assert got.std == pytest.approx(np.std([1, 2, 3, 0]))
    assert (got.min, got.max) == (0.0, 3.0)
    assert got.zeros_fraction == pytest.approx(1 / 14)


def test_chunks_are_not_modified(gen: np.random.Generator) -> None:
    data = sprinkle(gen.normal(5, 1, size=4000).astype(np.float32), gen)
    before = data.copy()
    compute_stats(flat_chunks(data, 1000))
    np.testing.assert_array_equal(data, before)


# ---------------------------------------------------------------------------------------------
# reduce_slabs: threads do not change the result


@pytest.mark.parametrize("shape", [(1000, 37), (3, 3, 64, 65), (12_345,)])
def test_reduce_slabs_same_result_on_any_number_of_threads(
    shape: tuple[int, ...], gen: np.random.Generator
) -> None:
    data = sprinkle(gen.normal(0.1, 2, size=shape).astype(np.float32), gen, 0.001)
    slabs = list(iter_slabs(shape, 2000))

    def read(slab: tuple[slice, ...], scratch: object) -> np.ndarray:
        return data[slab].reshape(-1)

    results = {workers: reduce_slabs(slabs, read, workers) for workers in (1, 2, 3, 8)}
    assert len(set(results.values())) == 1
    assert results[1] == compute_stats(data[slab] for slab in slabs)
    assert_stats_close(results[1], reference(data), 1e-6)


def test_reduce_slabs_raises_what_read_raises() -> None:
    slabs = list(range(50))

    def read(slab: int, scratch: object) -> np.ndarray:
        if slab == 31:
            raise ValueError("bad slab")
        return np.ones(10, np.float32)

    for workers in (1, 2, 4):
        with pytest.raises(ValueError, match="bad slab"):
            reduce_slabs(slabs, read, workers)


# ---------------------------------------------------------------------------------------------
# segment_stats: many small tensors at once, each as if alone


def segments(gen: np.random.Generator) -> list[np.ndarray]:
    """Small tensors of every kind: empty, one value, constant, NaN/Inf only, sprinkled, with a
    mean far above the spread, tiny and huge float32 magnitudes."""
    parts = [
        np.zeros(0, np.float32),
        np.array([2.5], np.float32),
        np.full(17, 0.1, np.float32),
        np.array([np.nan, np.inf, -np.inf], np.float32),
        np.full(5, np.nan, np.float32),
        sprinkle(gen.normal(0, 1, size=300).astype(np.float32), gen, 0.02),
        (1000 + gen.normal(0, 0.5, size=2000)).astype(np.float32),
        (gen.uniform(-1, 1, size=64) * 3e38).astype(np.float32),
        (gen.uniform(-1, 1, size=64) * 1e-42).astype(np.float32),
        np.zeros(0, np.float32),
        gen.normal(0, 0.02, size=(3, 3, 4, 8)).astype(np.float32).reshape(-1),
    ]
    return parts + [gen.normal(0.01, 0.05, size=n).astype(np.float32) for n in (1, 2, 7, 129)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_segment_stats_match_numpy(gen: np.random.Generator, dtype: type) -> None:
    parts = segments(gen)  # float32 values: widened here (no range check) or by the caller
    values = np.concatenate(parts).astype(dtype)
    got = segment_stats(values, np.array([p.size for p in parts]))
    assert len(got) == len(parts)
    for stats, part in zip(got, parts, strict=True):
        # float32 values summed in float64: as exact as the float64 reference
        assert_stats_close(stats, reference(part), 1e-12)


def test_segment_stats_do_not_depend_on_neighbours(gen: np.random.Generator) -> None:
    parts = segments(gen)
    together = segment_stats(np.concatenate(parts).astype(np.float64), [p.size for p in parts])
    alone = [segment_stats(p.astype(np.float64), [p.size])[0] for p in parts]
    for one, other in zip(together, alone, strict=True):
        assert repr(one) == repr(other)  # NaN == NaN in repr: bit for bit


def test_float64_segments_beyond_the_safe_range_are_reduced_as_before(
    gen: np.random.Generator,
) -> None:
    parts = [gen.uniform(-1, 1, size=50) * scale for scale in (1e300, 1e-300, 1.0, 1e200)]
    got = segment_stats(np.concatenate(parts), [p.size for p in parts])
    assert got[0].std == math.inf and got[1].std == 0.0  # as test_float64_beyond_squares_range
    for index in (0, 1, 3):
        assert got[index] == compute_stats([parts[index]])
    assert_stats_close(got[2], reference(parts[2]), 1e-12)


def region_file(tmp_path: Path, gen: np.random.Generator) -> tuple[Path, list[tuple]]:
    """Small tensors of every element type in one file, some end to end, some apart, one
    region named twice (tied weights), one tensor larger than SMALL_TENSOR_ELEMENTS, one strided
    view: (dtype, byteorder, offset, shape, stride, expected values) for each."""
    floats = gen.normal(0, 1, size=40).astype(np.float32)
    arrays = [
        ("float32", "little", sprinkle(gen.normal(0, 1, size=(4, 5)).astype("<f4"), gen, 0.1)),
        ("float32", "little", gen.normal(3, 0.1, size=(7,)).astype("<f4")),
        ("float16", "little", gen.normal(0, 0.5, size=(3, 3)).astype("<f2")),
        (BFLOAT16, "little", (floats.view(np.uint32) >> 16).astype("<u2")),
        ("float64", "big", gen.normal(1, 2, size=(11,)).astype(">f8")),
        ("int64", "little", gen.integers(-9, 9, size=(6,)).astype("<i8")),
        ("uint8", "little", gen.integers(0, 255, size=(13,)).astype("u1")),
        ("bool", "little", gen.random(9) < 0.5),
        ("float32", "little", gen.normal(0, 1, size=SMALL_TENSOR_ELEMENTS + 5).astype("<f4")),
        ("float32", "little", gen.normal(0, 1, size=(2, 3)).astype("<f4")),
        ("float32", "little", np.zeros(0, "<f4")),
    ]
    path = tmp_path / "regions.bin"
    regions = []
    with open(path, "wb") as out:
        out.write(b"hdr")  # odd offsets
        for index, (name, byteorder, array) in enumerate(arrays):
            if index % 3 == 2:
                out.write(b"\0" * (1 + index * 37))  # a gap, as between torch storages
            offset = out.tell()
            out.write(array.tobytes())
            expected = array
            if name == BFLOAT16:
                expected = (array.astype(np.uint32) << 16).view(np.float32)
            regions.append((name, byteorder, offset, array.shape, expected))
    return path, regions


def region_sources(file: OpenFile, regions: list[tuple]) -> list[FileRegionSource]:
    return [
        FileRegionSource(file, offset, math.prod(shape), name, 0, shape, c_strides(shape), order)
        for name, order, offset, shape, _ in regions
    ]


def test_stats_many_is_stats_one_by_one(tmp_path: Path, gen: np.random.Generator) -> None:
    path, regions = region_file(tmp_path, gen)
    file = OpenFile(path)
    try:
        sources = region_sources(file, regions)
        expected = [values for *_, values in regions]
        # the first tensor again (tied), and transposed (a strided view, read whole)
        name, order, offset, shape, values = regions[0]
        sources.append(FileRegionSource(file, offset, 20, name, 0, shape, c_strides(shape), order))
        sources.append(FileRegionSource(file, offset, 20, name, 0, (5, 4), (1, 5), order))
        expected += [values, values.T]
        assert [s.small for s in sources].count(False) == 2  # the large one and the view
        together = FileRegionSource.stats_many(sources[::-1])[::-1]
        alone = [s.stats(DEFAULT_CHUNK_ELEMENTS) for s in sources]
        for one, other, values in zip(together, alone, expected, strict=True):
            assert repr(one) == repr(other)  # bit for bit, NaN included
            assert_stats_close(one, reference(values), 1e-6 if values.itemsize < 8 else 1e-12)
    finally:
        file.close()


def test_small_tensor_stats_caches_each_tensor(tmp_path: Path, gen: np.random.Generator) -> None:
    path, regions = region_file(tmp_path, gen)
    file = OpenFile(path)
    try:
        tensors = [
            Tensor(f"t{i}", "weight", source.shape, None, source.dtype_name, None, source)
            for i, source in enumerate(region_sources(file, regions))
        ]
        in_memory = ArraySource(np.ones(3, np.float32))  # no stats_many: left to Tensor.stats
        tensors.append(Tensor("a", "weight", (3,), None, "float32", None, in_memory))
        small_tensor_stats(tensors)
        cached = [t._stats for t in tensors]
        large = [t.size > SMALL_TENSOR_ELEMENTS for t in tensors[:-1]]
        assert [stats is None for stats in cached] == [*large, True]
        for tensor, stats in zip(tensors, cached, strict=True):
            if stats is not None:
                assert tensor.stats() is stats
                assert repr(stats) == repr(tensor.source.stats(DEFAULT_CHUNK_ELEMENTS))
    finally:
        file.close()


# ---------------------------------------------------------------------------------------------
# HDF5 datasets: read_direct into reused buffers, dtype conversions


@pytest.fixture
def h5_file(tmp_path: Path, gen: np.random.Generator) -> dict[str, np.ndarray]:
    return make_h5_file(tmp_path, gen)


def make_h5_file(
    tmp_path: Path, gen: np.random.Generator, small: bool = False
) -> dict[str, np.ndarray]:
    """Datasets of every kind the reader converts; ``small``: a tenth of the rows (the same
    kinds, shapes of the same rank, NaN and Inf still among the float32 values)."""
    rows = 10 if small else 1
    arrays = {
        "f32": sprinkle(gen.normal(0, 0.02, size=(300 // rows, 77)).astype(np.float32), gen),
        "f16": gen.normal(0, 0.5, size=(3, 3, 16 // (4 if small else 1), 33)).astype(np.float16),
        "f64_big_endian": gen.normal(3, 1, size=(4001 // rows,)).astype(">f8"),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 5), np.float32),
        "int": gen.integers(-3, 4, size=(50, 3)).astype(np.int64),
    }
    floats = gen.normal(0, 1, size=(129 // rows, 65)).astype(np.float32)
    bits = (floats.view(np.uint32) >> 16).astype(np.uint16)
    with h5py.File(tmp_path / "w.h5", "w") as f:
        for name, array in arrays.items():
            f.create_dataset(name, data=array)
        for name, stored in (("bf16_uint16", bits), ("bf16_opaque", bits.view("V2"))):
            f.create_dataset(name, data=stored).attrs["dtype"] = "bfloat16"
    expected_bf16 = (bits.astype(np.uint32) << 16).view(np.float32)
    return {
        **arrays,
        "bf16_uint16": expected_bf16,
        "bf16_opaque": expected_bf16,
        "_path": np.array(str(tmp_path / "w.h5")),
    }


@pytest.mark.parametrize("chunk", [1, 50, 1000, 7777, 1 << 22])
def test_h5_source_stats_match_numpy(tmp_path: Path, gen: np.random.Generator, chunk: int) -> None:
    # one element per slab: thousands of one-element reads of every kind of dataset (with the
    # full-size datasets, 20,000 reads, the same code, took 10-20 s)
    h5_file = make_h5_file(tmp_path, gen, small=chunk == 1)
    path = Path(str(h5_file["_path"]))
    with h5py.File(path, "r") as f:
        for name, array in h5_file.items():
            if name.startswith("_"):
                continue
            source = H5DatasetSource(f[name], path)
            np.testing.assert_array_equal(source.read(), array)
            rtol = 1e-12 if array.dtype.kind in "iu" or array.dtype.itemsize == 8 else 1e-6
            assert_stats_close(source.stats(chunk), reference(array), rtol)


def test_tensor_stats_uses_either_source(h5_file: dict[str, np.ndarray]) -> None:
    path = Path(str(h5_file["_path"]))
    array = h5_file["f32"]
    with h5py.File(path, "r") as f:
        h5_source = H5DatasetSource(f["f32"], path)
        h5_tensor = Tensor("w", "kernel", array.shape, None, "float32", True, h5_source)
        assert h5_tensor.stats(1000) == h5_source.stats(1000)
    array_source = ArraySource(array)
    array_tensor = Tensor("w", "kernel", array.shape, None, "float32", True, array_source)
    assert array_tensor.stats(1000) == compute_stats(array_source.chunks(1000))
    assert_stats_close(array_tensor.stats(), reference(array), 1e-6)


# ---------------------------------------------------------------------------------------------
# iter_slabs: every element exactly once, in C order, within the budget


SHAPES = [
    (),
    (0,),
    (5,),
    (1, 1),
    (7, 3),
    (3, 0, 4),
    (4, 5, 6),
    (2, 3, 4, 5),
    (3, 3, 16, 8),
    (6, 1, 9),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("budget", [1, 2, 3, 7, 20, 60, 121, 1000])
def test_iter_slabs_cover_every_element_once(shape: tuple[int, ...], budget: int) -> None:
    hits = np.zeros(shape, dtype=np.int64)
    order = np.arange(math.prod(shape)).reshape(shape)
    previous_end = 0
    for slab in iter_slabs(shape, budget):
        block = hits[slab]
        assert block.shape == slab_shape(slab, shape)
        assert 0 < block.size <= budget
        hits[slab] += 1
        # C order: each slab starts where the previous one ended.
        positions = order[slab].reshape(-1)
        assert positions[0] == previous_end
        np.testing.assert_array_equal(positions, np.arange(positions[0], positions[0] + block.size))
        previous_end = positions[-1] + 1
    assert np.all(hits == 1)
    assert previous_end == hits.size


# ---------------------------------------------------------------------------------------------
# File regions (PyTorch storages, safetensors, ONNX data): slabs reduced on threads where they
# lie in the mapped file (or, where madvise is missing, read with preadv into reused buffers)


READS = {
    "mapped": {},
    "preadv": {"_HAS_MADVISE": False},
    "pread": {"_HAS_MADVISE": False, "_HAS_PREADV": False},  # macOS before 11
    "seek and read": {"_HAS_MADVISE": False, "_HAS_PREADV": False, "_HAS_PREAD": False},  # Windows
}
"""How a platform reads a file region: what ``file_region`` falls back to where calls are
missing."""


@pytest.mark.parametrize("reads", READS)
@pytest.mark.parametrize("chunk", [1, 50, 1000, 7777, 1 << 22])
def test_file_region_stats_match_numpy(
    tmp_path: Path,
    gen: np.random.Generator,
    chunk: int,
    reads: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from weightscope.formats._common import file_region

    for name, value in READS[reads].items():
        monkeypatch.setattr(file_region, name, value)
    if "_HAS_PREADV" in READS[reads]:
        monkeypatch.delattr(os, "preadv", raising=False)
    if reads == "seek and read":
        monkeypatch.delattr(os, "pread", raising=False)
    rows = 10 if chunk == 1 else 1  # one element per slab: a tenth of the rows, the same kinds
    floats = gen.normal(0, 1, size=(129 // rows, 65)).astype(np.float32)
    bf16_bits = (floats.view(np.uint32) >> 16).astype("<u2")
    float32 = gen.normal(0, 0.02, size=(300 // rows, 77)).astype("<f4")
    arrays = {
        "float32": (sprinkle(float32, gen), "little"),
        "float16": (
            gen.normal(0, 0.5, size=(3, 3, 16 // min(rows, 4), 33)).astype("<f2"),
            "little",
        ),
        "float64": (gen.normal(3, 1, size=(4001 // rows,)).astype(">f8"), "big"),
        "int64": (gen.integers(-3, 4, size=(50, 3)).astype("<i8"), "little"),
        BFLOAT16: (bf16_bits, "little"),
    }
    path = tmp_path / "data.bin"
    offsets = {}
    with open(path, "wb") as out:
        out.write(b"header!")  # odd offsets: no alignment is assumed
        for name, (array, _) in arrays.items():
            offsets[name] = out.tell()
            out.write(array.tobytes())
    file = OpenFile(path)
    try:
        for name, (array, byteorder) in arrays.items():
            source = FileRegionSource(
                file, offsets[name], array.size, name, 0, array.shape, c_strides(array.shape),
                byteorder,
            )  # fmt: skip
            expected = (
                (bf16_bits.astype(np.uint32) << 16).view(np.float32) if name == BFLOAT16 else array
            )
            np.testing.assert_array_equal(source.read(), expected)
            rtol = 1e-12 if expected.dtype.kind in "iu" or expected.dtype.itemsize == 8 else 1e-6
            assert_stats_close(source.stats(chunk), reference(expected), rtol)
    finally:
        file.close()


# ---------------------------------------------------------------------------------------------
# The fast path: sums by blocks, mapped slabs


def fsum_sums(values: np.ndarray) -> tuple[float, float]:
    wide = values.astype(np.float64)
    return math.fsum(wide.tolist()), math.fsum((wide * wide).tolist())


@pytest.mark.parametrize("size", [1, BLOCK - 1, BLOCK, 3 * BLOCK + 17, (1 << 20) + 123])
@pytest.mark.parametrize("kind", ["normal", "lognormal", "cancelling", "offset", "float64"])
def test_block_sums_are_as_accurate_as_pairwise(size: int, kind: str) -> None:
    """The sums by BLAS blocks against exact sums (``math.fsum``), on data made to hurt: all of
    one sign over six decades, large values that cancel, a mean far above the spread."""
    gen = np.random.default_rng(size)
    data = {
        "normal": lambda: gen.normal(0, 0.02, size),
        "lognormal": lambda: gen.lognormal(0, 3, size),
        "cancelling": lambda: np.where(np.arange(size) % 2, 1e4, -1e4) + gen.normal(0, 1e-3, size),
        "offset": lambda: 1e3 + gen.normal(0, 1, size),
        "float64": lambda: gen.normal(1, 1, size),
    }[kind]()
    values = data.astype(np.float64 if kind == "float64" else np.float32)
    total, squares = _sums(values)
    exact_total, exact_squares = fsum_sums(values)
    eps = np.finfo(values.dtype).eps
    magnitude = math.fsum(np.abs(values.astype(np.float64)).tolist())
    # numpy's pairwise add.reduce is the bar: within 4x its error bound, as measured here
    pairwise_bound = (16 + math.log2(max(size, 2))) * eps
    assert abs(total - exact_total) <= 4 * pairwise_bound * magnitude
    assert abs(squares - exact_squares) <= 4 * pairwise_bound * exact_squares


def test_mapped_stats_do_not_depend_on_threads_or_chunks(
    tmp_path: Path, gen: np.random.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from weightscope import stats as stats_module

    size = (3 << 20) + 5
    data = sprinkle((7 + gen.normal(0, 0.5, size)).astype(np.float32), gen, 0.0001)
    path = tmp_path / "big.bin"
    path.write_bytes(b"pad" + data.tobytes())  # an odd offset: the mapped floats are unaligned
    file = OpenFile(path)
    try:
        source = FileRegionSource(file, 3, size, "float32", 0, (size,), (1,))
        by_threads = {}
        for workers in (1, 2, 4):
            monkeypatch.setattr(stats_module, "default_workers", lambda w=workers: w)
            by_threads[workers] = source.stats(1 << 20)
        assert len(set(by_threads.values())) == 1  # slabs merged in order: the same numbers
        want = reference(data)
        for chunk in (1000, 65_536, 1 << 20, 1 << 22):
            assert_stats_close(source.stats(chunk), want, 1e-6)
    finally:
        file.close()


PEAK_RSS_CHILD = """
import sys
from weightscope.formats._common.file_region import FileRegionSource, OpenFile
file = OpenFile(sys.argv[1])
numel = file.size // 4
stats = FileRegionSource(file, 0, numel, "float32", 0, (numel,), (1,)).stats(1 << 20)
assert stats.count == numel and stats.zeros_fraction == 1.0, stats
with open("/proc/self/status") as status:
    print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="peak RSS read from /proc")
def test_mapped_pages_are_let_go_as_slabs_are_reduced(tmp_path: Path) -> None:
    """A 512 MiB tensor reduced where it lies in the page cache: the process never holds more
    than a few of its slabs (without ``MADV_DONTNEED`` it would hold all of them). The peak is
    the child's own (``VmHWM``): ``ru_maxrss`` would count what a forked child shared with
    pytest before it ran Python."""
    path = tmp_path / "zeros.bin"
    with open(path, "wb") as out:
        out.truncate(512 << 20)  # sparse: read back as zeros
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    child = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_CHILD, str(path)],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    assert int(child.stdout) < 200 << 10, child.stdout  # KiB; numpy and Python take ~40 MB


def test_a_file_cut_short_since_it_was_opened_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(np.ones(1 << 20, np.float32).tobytes())
    file = OpenFile(path)
    try:
        source = FileRegionSource(file, 0, 1 << 20, "float32", 0, (1 << 20,), (1,))
        os.truncate(path, 1 << 19)
        with pytest.raises(CorruptFileError, match="cut short"):
            source.stats(1 << 16)
    finally:
        file.close()
