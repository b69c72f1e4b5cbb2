"""GGUF files written by the ``gguf`` package (llama.cpp's own Python writer), read by
weightscope's reader (which does not import it): every dequantized tensor against
``gguf.quants.dequantize`` of the bytes ``GGUFReader`` maps, shapes in numpy order against the
GGML dims the file declares, metadata, totals, convs recomputed from their canonical form, and
damaged files refused with one line."""

from __future__ import annotations

import json
import math
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

import weightscope
from weightscope.errors import WeightscopeError
from weightscope.formats.gguf import blocks

gguf = pytest.importorskip("gguf")

from gguf_files import finish_gguf  # noqa: E402  (after the skip: it imports gguf)

Q = gguf.GGMLQuantizationType

QUANTIZED_BY_GGUF = ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "BF16", "F16", "F32"]
"""Types ``gguf.quants.quantize`` writes from float values."""
K_QUANTS = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
"""Types it only dequantizes: written here as random blocks with finite float16 scales."""
HALF_FIELDS = {
    "Q2_K": (80, 82), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,),
    "IQ4_NL": (0,), "IQ4_XS": (0,), "TQ1_0": (52,), "TQ2_0": (64,), "MXFP4": (), "NVFP4": (),
}  # fmt: skip
"""Byte offsets of each block's float16 ``d`` (and ``dmin``): set to finite values, since a
float16 field can hold inf and NaN, which no comparison of values can check (MXFP4's E8M0 and
NVFP4's UE4M3 scales have no inf or NaN as GGML reads them: every byte is random)."""
TABLE_TYPES = ["IQ4_NL", "IQ4_XS", "MXFP4", "NVFP4", "TQ1_0", "TQ2_0"]
"""The types of 4-bit codes into a table of levels, and the ternary ones."""


def _random_blocks(rng: np.random.Generator, name: str, rows: int, row: int) -> np.ndarray:
    ggml = blocks.TYPES[Q[name].value]
    count = rows * row // ggml.block_size
    raw = rng.integers(0, 256, (count, ggml.type_size), dtype=np.uint8)
    for at in HALF_FIELDS[name]:
        halves = rng.uniform(0.001, 0.05, count).astype("<f2")
        raw[:, at : at + 2] = halves.view(np.uint8).reshape(count, 2)
    return raw.reshape(rows, row // ggml.block_size * ggml.type_size)


def write_gguf(path: Path, tensors: list[tuple[str, np.ndarray, object]], **metadata) -> Path:
    """A GGUF file of ``(name, array, GGMLQuantizationType or None)`` (arrays already in the
    quantized bytes where a type is given), with the llama metadata a converter writes."""
    writer = gguf.GGUFWriter(str(path), metadata.pop("arch", "llama"))
    writer.add_name(metadata.pop("name", "tiny test model"))
    for key, value in metadata.items():
        getattr(writer, f"add_{key}")(value)
    finish_gguf(writer, tensors)
    return path


def reference(path: Path) -> dict[str, tuple[np.ndarray, tuple[int, ...]]]:
    """Each tensor's values as the ``gguf`` package dequantizes them (an empty array for a type
    it does not), and its GGML dims."""
    reader = gguf.GGUFReader(str(path))
    found = {}
    for tensor in reader.tensors:
        ne = tuple(int(d) for d in tensor.shape)
        try:
            values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        except NotImplementedError:
            found[tensor.name] = (np.zeros(0, np.float32), ne)
            continue
        found[tensor.name] = (np.asarray(values).reshape(ne[::-1]), ne)
    return found


@pytest.fixture(scope="module")
def every_type(tmp_path_factory) -> Path:
    rng = np.random.default_rng(19)
    tensors: list[tuple[str, np.ndarray, object]] = []
    for index, name in enumerate(QUANTIZED_BY_GGUF):
        values = (rng.standard_normal((6, 512)) * (index + 1) / 4).astype(np.float32)
        if name in ("F32", "F16"):
            array = values.astype(np.float16) if name == "F16" else values
            tensors.append((f"blk.{index}.ffn_up.weight", array, None))
        else:
            tensors.append(
                (f"blk.{index}.ffn_up.weight", gguf.quants.quantize(values, Q[name]), Q[name])
            )
    for index, name in enumerate(K_QUANTS, start=len(QUANTIZED_BY_GGUF)):
        tensors.append((f"blk.{index}.ffn_up.weight", _random_blocks(rng, name, 4, 512), Q[name]))
    return write_gguf(tmp_path_factory.mktemp("gguf") / "every.gguf", tensors)


@pytest.mark.parametrize("index", range(len(QUANTIZED_BY_GGUF) + len(K_QUANTS)))
def test_every_type_dequantizes_as_gguf_does(every_type, index) -> None:
    expected = reference(every_type)
    name = f"blk.{index}.ffn_up.weight"
    values, ne = expected[name]
    with weightscope.load(every_type) as model:
        layer = model.layer(f"blk.{index}.ffn_up")
        tensor = layer.tensor("kernel")
        assert layer.kind == "dense" and tensor.native_layout == "OI"
        assert tensor.native_shape == ne[::-1] == values.shape  # numpy order: ne reversed
        got = tensor.numpy()
        assert got.dtype == (np.float16 if tensor.dtype == "float16" else np.float32)
        np.testing.assert_allclose(got, values, rtol=1e-6, atol=0)
        # statistics of the real values, in runs of whole blocks, as numpy has them
        stats = tensor.stats(chunk_elements=300)
        assert stats.count == values.size
        wide = values.astype(np.float64)  # statistics reduce float32 chunks in float32
        assert math.isclose(stats.mean, wide.mean(), rel_tol=1e-6, abs_tol=1e-6 * wide.std())
        assert math.isclose(stats.std, wide.std(), rel_tol=1e-6)
        assert (stats.min, stats.max) == (float(values.min()), float(values.max()))
        q = tensor.quantization
        if q is None:  # float types: read in place
            assert tensor.dtype in ("float32", "float16", "bfloat16")
            return
        assert (
            tensor.dtype == model.layer(layer.name).tensors[0].dtype in QUANTIZED_BY_GGUF + K_QUANTS
        )
        ggml = blocks.TYPES[Q[tensor.dtype].value]
        # the stored integers, scales, zero points and offsets give the same values
        stored = tensor.stored()
        assert stored.shape == values.shape and stored.dtype.kind in "iu"
        assert q.block_size == ggml.sub_block and q.axis == -1
        assert q.scales().shape == (values.shape[0], values.shape[1] // ggml.sub_block)
        np.testing.assert_allclose(q.dequantize(stored), values, rtol=1e-5, atol=1e-6)
        assert tensor.quantization_axis == 1  # the OI kernel's input axis: ne0


@pytest.mark.parametrize("name", TABLE_TYPES)
def test_table_and_ternary_types_dequantize_exactly_as_gguf_does(name, tmp_path) -> None:
    """Random blocks of every bit pattern (finite float16 scales) decode to the values of
    ``gguf.quants.dequantize``, bit for bit, through the file reader, its statistics, and the
    stored levels and scales ``real = scale * (stored - zero_point)``."""
    rng = np.random.default_rng(list(TABLE_TYPES).index(name))
    ggml = blocks.TYPES[Q[name].value]
    raw = _random_blocks(rng, name, 6, 4 * ggml.block_size)
    with np.errstate(over="ignore"):  # MXFP4: 2**127 * 6 overflows to inf, in GGML too
        expected = gguf.quants.dequantize(raw, Q[name])
        parts = ggml.decode(raw.reshape(-1, ggml.type_size))
        got = blocks.real_values(parts, ggml.sub_block).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected)  # infs where gguf has them
    if name == "MXFP4":  # for the statistics below: exponents whose values stay finite
        raw.reshape(-1, ggml.type_size)[:, 0] %= 250
        expected = gguf.quants.dequantize(raw, Q[name])
    assert expected.shape == (6, 4 * ggml.block_size) and np.isfinite(expected).all()
    path = write_gguf(tmp_path / "t.gguf", [("blk.0.ffn_up.weight", raw, Q[name])])
    with weightscope.load(path) as model:
        tensor = model.layer("blk.0.ffn_up").tensor("kernel")
        assert (
            tensor.dtype == name and tensor.has_stats and "not dequantized" not in str(model.notes)
        )
        np.testing.assert_array_equal(tensor.numpy(), expected)
        stats = tensor.stats(chunk_elements=2 * ggml.block_size)
        wide = expected.astype(np.float64)
        assert stats.count == expected.size
        assert math.isclose(stats.mean, wide.mean(), rel_tol=1e-6, abs_tol=1e-6 * wide.std())
        assert math.isclose(stats.std, wide.std(), rel_tol=1e-6)
        assert (stats.min, stats.max) == (float(expected.min()), float(expected.max()))
        q = tensor.quantization
        assert q is not None and q.block_size == ggml.sub_block and q.offset is None
        stored = tensor.stored()
        np.testing.assert_array_equal(q.dequantize(stored), expected)
        levels = {
            "IQ4_NL": blocks.IQ4_LEVELS, "IQ4_XS": blocks.IQ4_LEVELS,
            "MXFP4": blocks.E2M1_DOUBLED, "NVFP4": blocks.E2M1_DOUBLED,
            "TQ1_0": np.arange(3), "TQ2_0": np.arange(4),
        }[name]  # fmt: skip
        assert set(np.unique(stored).tolist()) <= set(levels.tolist())
        assert q.scales().shape == (6, 4 * ggml.block_size // ggml.sub_block)
        zero = q.zero_points()
        assert (zero is not None and set(zero.ravel().tolist()) == {1}) == name.startswith("TQ")


@pytest.mark.parametrize("name", ["TQ1_0", "TQ2_0", "MXFP4"])
def test_values_quantized_by_gguf_read_back(name, tmp_path) -> None:
    """Blocks ``gguf.quants.quantize`` makes from real values (TQ1_0 from ternary ones, as
    BitNet's are) read back as ``gguf.quants.dequantize`` gives them."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal((4, 512)).astype(np.float32)
    if name.startswith("TQ"):
        values = np.sign(np.round(values)) * np.float32(0.25)
    raw = gguf.quants.quantize(values, Q[name])
    expected = gguf.quants.dequantize(raw, Q[name])
    path = write_gguf(tmp_path / "q.gguf", [("blk.0.attn_q.weight", raw, Q[name])])
    with weightscope.load(path) as model:
        got = model.layer("blk.0.attn_q").tensor("kernel").numpy()
    np.testing.assert_array_equal(got, expected)
    if name.startswith("TQ"):  # ternary values are held exactly
        np.testing.assert_array_equal(got, values)


GRID_TYPES = ["IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"]
"""The types whose blocks index lattices: dequantized through the gguf package."""


def _grid_file(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """One tensor of random blocks per grid type (a finite float16 ``d`` first, where the type
    has one: IQ1_M spreads its ``d`` over its scales), and the values gguf gives them."""
    rng = np.random.default_rng(21)
    tensors, expected = [], {}
    for index, name in enumerate(GRID_TYPES):
        ggml = blocks.TYPES[Q[name].value]
        raw = rng.integers(0, 256, (3 * 2, ggml.type_size), dtype=np.uint8)
        if name != "IQ1_M":
            raw[:, :2] = rng.uniform(0.001, 0.05, 6).astype("<f2").view(np.uint8).reshape(6, 2)
        raw = raw.reshape(3, 2 * ggml.type_size)
        tensors.append((f"blk.{index}.ffn_down.weight", raw, Q[name]))
        with np.errstate(all="ignore"):
            expected[name] = gguf.quants.dequantize(raw, Q[name])
    return write_gguf(tmp_path / "grid.gguf", tensors), expected


def test_grid_types_dequantize_through_the_gguf_package(tmp_path) -> None:
    path, expected = _grid_file(tmp_path)
    with weightscope.load(path) as model:
        assert "not dequantized" not in "\n".join(model.notes)
        for index, name in enumerate(GRID_TYPES):
            tensor = model.layer(f"blk.{index}.ffn_down").tensor("kernel")
            values = expected[name]
            assert tensor.dtype == name and tensor.native_shape == values.shape == (3, 512)
            assert tensor.has_stats and tensor.quantization is None  # values, no parts
            np.testing.assert_array_equal(tensor.numpy(), values)
            # in runs of one block, each the package's own dequantization of those bytes
            pieces = list(tensor.source.chunks(256))
            assert [p.size for p in pieces] == [256] * 6
            np.testing.assert_array_equal(np.concatenate(pieces), values.reshape(-1))
            if not np.isfinite(values).all():  # IQ1_M's random d: inf or NaN, counted
                assert tensor.stats().nan + tensor.stats().inf > 0
                continue
            stats = tensor.stats(chunk_elements=256)
            wide = values.astype(np.float64)
            assert math.isclose(stats.mean, wide.mean(), rel_tol=1e-6, abs_tol=1e-6 * wide.std())
            assert math.isclose(stats.std, wide.std(), rel_tol=1e-6)
            assert (stats.min, stats.max) == (float(values.min()), float(values.max()))
    out = tmp_path / "grid.npz"
    result = run_cli("export", path, "-o", out)
    assert result.returncode == 0, result.stderr
    with np.load(out) as arrays:
        np.testing.assert_array_equal(arrays["blk.2.ffn_down/kernel"], expected["IQ2_XXS"])
        assert "blk.2.ffn_down/kernel/stored" not in arrays.files


def test_grid_types_without_the_gguf_package_are_listed_and_say_what_decodes_them(
    tmp_path, monkeypatch
) -> None:
    path, _ = _grid_file(tmp_path)
    for name in [m for m in sys.modules if m == "gguf" or m.startswith("gguf.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf: ImportError; find_spec: None
    with weightscope.load(path) as model:
        notes = "\n".join(model.notes)
        assert "not dequantized by weightscope: 1 IQ1_S, 1 IQ1_M, 1 IQ2_XXS" in notes
        assert "the gguf package decodes them: pip install 'weightscope[gguf]'" in notes
        tensor = model.layer("blk.2.ffn_down").tensor("kernel")
        assert tensor.dtype == "ggml IQ2_XXS" and not tensor.has_stats and tensor.counted
        assert model.params.total == len(GRID_TYPES) * 3 * 512
        with pytest.raises(WeightscopeError, match=r"the gguf package decodes them"):
            tensor.numpy()
    # loaded while the package was there, then gone: the values are refused with one line
    monkeypatch.undo()
    model = weightscope.load(path)
    with model:
        monkeypatch.setitem(sys.modules, "gguf", None)
        monkeypatch.setitem(sys.modules, "gguf.quants", None)
        tensor = model.layer("blk.2.ffn_down").tensor("kernel")
        with pytest.raises(WeightscopeError, match=r"gguf package, which cannot be imported"):
            tensor.numpy()


def test_runs_of_whole_blocks_bound_memory(every_type) -> None:
    with weightscope.load(every_type) as model:
        tensor = model.layer("blk.0.ffn_up").tensor("kernel")  # Q8_0: blocks of 32
        pieces = list(tensor.source.chunks(100))
        assert {piece.size for piece in pieces} == {96}  # three whole blocks, never more
        np.testing.assert_array_equal(np.concatenate(pieces), tensor.numpy().reshape(-1))
        k_tensor = model.layer(f"blk.{len(QUANTIZED_BY_GGUF)}.ffn_up").tensor("kernel")
        assert {p.size for p in k_tensor.source.chunks(100)} == {256}  # one super-block


@pytest.mark.parametrize("name", ["Q4_K", "IQ4_XS", "IQ2_XS"])
def test_statistics_of_a_large_quantized_tensor_hold_one_run_at_a_time(name, tmp_path) -> None:
    """Statistics of 8 million quantized values (32 MB as float32) reduced in runs of 65,536:
    the peak of Python's allocations (numpy's included, on every thread) stays under 4 MB,
    an eighth of the dequantized tensor, and the result is the whole tensor's."""
    import tracemalloc

    rng = np.random.default_rng(11)
    if name == "IQ2_XS":  # a grid type, through the gguf package: finite d first
        ggml = blocks.TYPES[Q[name].value]
        raw = rng.integers(0, 256, (2048 * 16, ggml.type_size), dtype=np.uint8)
        raw[:, :2] = (
            rng.uniform(0.001, 0.05, raw.shape[0]).astype("<f2").view(np.uint8).reshape(-1, 2)
        )
        raw = raw.reshape(2048, -1)
    else:
        raw = _random_blocks(rng, name, 2048, 4096)
    path = write_gguf(tmp_path / "big.gguf", [("blk.0.ffn_up.weight", raw, Q[name])])
    chunk = 1 << 16
    with weightscope.load(path) as model:
        tensor = model.layer("blk.0.ffn_up").tensor("kernel")
        assert tensor.size == 2048 * 4096
        tracemalloc.start()
        try:
            stats = tensor.stats(chunk_elements=chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, f"{peak / 1e6:.1f} MB"
        assert peak < tensor.size * 4 / 8
        whole = tensor.numpy().astype(np.float64)
    np.testing.assert_array_equal(whole, gguf.quants.dequantize(raw, Q[name]))
    assert stats.count == whole.size and stats.nan == stats.inf == 0
    assert math.isclose(stats.mean, whole.mean(), rel_tol=1e-6, abs_tol=1e-7 * whole.std())
    assert math.isclose(stats.std, whole.std(), rel_tol=1e-6)
    assert (stats.min, stats.max) == (whole.min(), whole.max())
    assert math.isclose(stats.zeros_fraction, float(np.mean(whole == 0)), abs_tol=1e-9)


def test_q8_k_blocks(tmp_path) -> None:
    """Q8_K (a float32 ``d``, 256 int8 values, 16 sums kept for dot products): no writer or
    reference quantizes it, so the blocks are built here."""
    rng = np.random.default_rng(3)
    d = np.array([0.5, -0.125, 3.0], np.float32)
    qs = rng.integers(-128, 128, (3, 256)).astype(np.int8)
    sums = qs.reshape(3, 16, 16).sum(axis=2).astype("<i2")
    raw = np.concatenate(
        [d.astype("<f4").view(np.uint8).reshape(3, 4), qs.view(np.uint8), sums.view(np.uint8)],
        axis=1,
    )
    assert raw.shape == (3, 292)
    path = write_gguf(tmp_path / "q8k.gguf", [("output.weight", raw.reshape(1, -1), Q.Q8_K)])
    with weightscope.load(path) as model:
        tensor = model.layer("output").tensor("kernel")
        assert tensor.native_shape == (1, 768)
        expected = (d[:, None] * qs.astype(np.float32)).reshape(1, 768)
        np.testing.assert_array_equal(tensor.numpy(), expected)
        np.testing.assert_array_equal(tensor.stored(), qs.reshape(1, 768))


@pytest.fixture(scope="module")
def llama(tmp_path_factory) -> Path:
    """A two-block llama as convert_hf_to_gguf.py writes one (Q4_K_M mixes types)."""
    rng = np.random.default_rng(5)
    width, vocab, hidden = 64, 96, 128

    def mat(rows: int, cols: int, qtype) -> tuple[np.ndarray, object]:
        values = rng.standard_normal((rows, cols)).astype(np.float32) / 8
        return gguf.quants.quantize(values, qtype), qtype

    tensors: list[tuple[str, np.ndarray, object]] = [
        ("token_embd.weight", *mat(vocab, width, Q.Q8_0)),
    ]
    for block in range(2):
        experts = rng.standard_normal((4, hidden, width))
        tensors += [
            (f"blk.{block}.attn_norm.weight", np.ones(width, np.float32), None),
            (f"blk.{block}.attn_q.weight", *mat(width, width, Q.Q4_0)),
            (f"blk.{block}.attn_q.bias", rng.standard_normal(width).astype(np.float32), None),
            (f"blk.{block}.attn_k.weight", *mat(width, width, Q.Q5_1)),
            (f"blk.{block}.ffn_up.weight", *mat(hidden, width, Q.Q4_1)),
            (f"blk.{block}.ffn_down.weight", *mat(width, hidden, Q.Q8_0)),
            (f"blk.{block}.ffn_norm.weight", np.ones(width, np.float32), None),
            # a mixture of 4 experts: one (hidden, width) matrix each, ne (width, hidden, 4)
            (f"blk.{block}.ffn_gate_exps.weight", experts.astype(np.float16), None),
        ]  # fmt: skip
    tensors += [
        ("output_norm.weight", np.ones(width, np.float32), None),
        ("output.weight", *mat(vocab, width, Q.Q8_0)),
        # a type weightscope does not dequantize: listed and counted
        ("blk.1.attn_v.weight", np.zeros((width, 18), np.uint8), Q.Q1_0),
    ]
    tokens = [f"tok{i}" for i in range(vocab)]
    return write_gguf(
        tmp_path_factory.mktemp("gguf") / "llama.gguf",
        tensors,
        file_type=int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
        context_length=2048,
        embedding_length=width,
        block_count=2,
        feed_forward_length=hidden,
        head_count=4,
        tokenizer_model="llama",
        token_list=tokens,
        chat_template="{{ messages }}",
    )


def test_llama_layers_metadata_and_totals(llama) -> None:
    expected = reference(llama)
    with weightscope.load(llama) as model:
        assert (model.format, model.framework) == ("gguf", "gguf")
        names = [t.name for _, t in model.tensors()]
        assert sorted(names) == sorted(expected)
        kinds = {layer.name: str(layer.kind) for layer in model.layers}
        assert kinds["token_embd"] == "embedding"
        assert kinds["blk.0.attn_norm"] == kinds["output_norm"] == "layer_norm"
        assert kinds["blk.0.attn_q"] == kinds["blk.1.ffn_down"] == kinds["output"] == "dense"
        assert kinds["blk.0.ffn_gate_exps"] == "unknown"  # experts, not a conv
        assert kinds["blk.1.attn_v"] == "dense"  # its shape says so; its values are unread
        assert "Q1_0 blocks are not dequantized" in (model.layer("blk.1.attn_v").note or "")
        assert all(layer.inferred for layer in model.layers)
        q = model.layer("blk.0.attn_q")
        assert [t.role for t in q.tensors] == ["kernel", "bias"]
        assert model.layer("token_embd").tensor("embeddings").native_layout == "VE"
        for _, tensor in model.tensors():
            values, ne = expected[tensor.name]
            assert tensor.native_shape == ne[::-1]
            if tensor.dtype != "ggml Q1_0":
                np.testing.assert_allclose(tensor.numpy(), values, rtol=1e-6, atol=0)
        # every element counted, whatever its type: the totals are the file's
        total = sum(math.prod(ne) for _, ne in expected.values())
        assert model.params.total == total
        notes = "\n".join(model.notes)
    assert "architecture llama" in notes and "name tiny test model" in notes
    assert "file type MOSTLY_Q4_K_M (15)" in notes
    assert "llama.context_length=2048" in notes and "llama.block_count=2" in notes
    assert "tokenizer.ggml.model=llama" in notes
    assert "tokenizer.ggml.tokens: 96 entries" in notes
    assert "tok5" not in notes  # the vocabulary is counted, never listed
    assert "not dequantized by weightscope: 1 Q1_0" in notes


def test_undecoded_type_is_listed_counted_and_refused_alone(llama) -> None:
    with weightscope.load(llama) as model:
        layer = model.layer("blk.1.attn_v")
        tensor = layer.tensors[0]
        assert tensor.dtype == "ggml Q1_0" and not tensor.has_stats and tensor.counted
        assert tensor.size == 64 * 128
        with pytest.raises(WeightscopeError, match="Q1_0 blocks are not dequantized"):
            tensor.numpy()
    result = run_cli("inspect", llama)
    assert result.returncode == 0, result.stderr
    assert "ggml Q1_0" in result.stdout and "MOSTLY_Q4_K_M" in result.stdout
    result = run_cli("inspect", llama, "--json")
    assert result.returncode == 0, result.stderr


def test_export_writes_real_values_and_their_parts(tmp_path) -> None:
    rng = np.random.default_rng(8)
    values = rng.standard_normal((4, 64)).astype(np.float32)
    raw = gguf.quants.quantize(values, Q.Q4_1)
    path = write_gguf(tmp_path / "m.gguf", [("blk.0.ffn_up.weight", raw, Q.Q4_1)])
    out = tmp_path / "m.npz"
    result = run_cli("export", path, "-o", out)
    assert result.returncode == 0, result.stderr
    with np.load(out) as arrays:
        real = gguf.quants.dequantize(raw, Q.Q4_1)
        np.testing.assert_allclose(arrays["blk.0.ffn_up/kernel"], real, rtol=1e-6, atol=0)
        stored, scale = arrays["blk.0.ffn_up/kernel/stored"], arrays["blk.0.ffn_up/kernel/scale"]
        offset = arrays["blk.0.ffn_up/kernel/offset"]
        assert stored.shape == (4, 64) and scale.shape == offset.shape == (4, 2)
        rebuilt = stored.astype(np.float32).reshape(4, 2, 32) * scale[..., None] + offset[..., None]
        np.testing.assert_array_equal(rebuilt.reshape(4, 64), real)


# ---------------------------------------------------------------------------------------------
# convs: GGML dims reversed, canonical, recomputed


def test_whisper_conv1d_recomputed_from_its_canonical_form(tmp_path) -> None:
    """whisper.cpp's ``encoder.conv1``: a float16 kernel of GGML dims (k, in, out) and a bias
    of dims (1, out) (a (out, 1) column in numpy order)."""
    torch = pytest.importorskip("torch")
    import reference as ref

    torch.manual_seed(0)
    conv = torch.nn.Conv1d(5, 8, 3, padding=1).double()
    weight = conv.weight.detach().numpy().astype(np.float16)
    bias = conv.bias.detach().numpy().astype(np.float32).reshape(8, 1)
    path = write_gguf(
        tmp_path / "whisper.gguf",
        [("encoder.conv1.weight", weight, None), ("encoder.conv1.bias", bias, None)],
        arch="whisper",
    )
    assert reference(path)["encoder.conv1.weight"][1] == (3, 5, 8)  # GGML: (k, in, out)
    with weightscope.load(path) as model:
        layer = model.layer("encoder.conv1")
        assert layer.kind == "conv1d"
        kernel, b = layer.tensor("kernel"), layer.tensor("bias")
        assert (kernel.native_layout, b.native_layout) == ("OIW", "CN")
        assert kernel.canonical_shape == (8, 5, 3) and b.canonical_shape == (8,)
        x = np.random.default_rng(1).standard_normal((2, 5, 11))
        with torch.no_grad():
            conv.weight.copy_(torch.as_tensor(weight.astype(np.float64)))
            expected = conv(torch.as_tensor(x)).numpy()
        padded = np.pad(x, [(0, 0), (0, 0), (1, 1)])
        got = ref.conv(
            padded, kernel.canonical().astype(np.float64), b.canonical().astype(np.float64)
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_image_conv2d_recomputed_from_its_canonical_form(tmp_path) -> None:
    """A vision tower's patch embedding: a conv2d kernel of GGML dims (kw, kh, in, out)."""
    torch = pytest.importorskip("torch")
    import reference as ref

    torch.manual_seed(1)
    conv = torch.nn.Conv2d(3, 6, (2, 3), stride=2).double()
    weight = conv.weight.detach().numpy().astype(np.float32)
    bias = conv.bias.detach().numpy().astype(np.float32)
    path = write_gguf(
        tmp_path / "mmproj.gguf",
        [("v.patch_embd.weight", weight, None), ("v.patch_embd.bias", bias, None)],
        arch="clip",
    )
    assert reference(path)["v.patch_embd.weight"][1] == (3, 2, 3, 6)
    with weightscope.load(path) as model:
        layer = model.layer("v.patch_embd")
        assert layer.kind == "conv2d" and layer.tensor("kernel").native_layout == "OIHW"
        x = np.random.default_rng(2).standard_normal((1, 3, 8, 9))
        with torch.no_grad():
            expected = conv(torch.as_tensor(x)).numpy()
        got = ref.conv(
            x,
            layer.tensor("kernel").canonical().astype(np.float64),
            layer.tensor("bias").canonical().astype(np.float64),
            stride=2,
        )
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_dense_weight_is_what_ggml_mul_mat_multiplies(tmp_path) -> None:
    """``ggml_mul_mat(W, x)`` with W of dims (in, out): y = W_numpy @ x, W_numpy (out, in)."""
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 32)).astype(np.float32)
    path = write_gguf(tmp_path / "d.gguf", [("blk.0.attn_output.weight", w, None)])
    assert reference(path)["blk.0.attn_output.weight"][1] == (32, 6)
    with weightscope.load(path) as model:
        kernel = model.layer("blk.0.attn_output").tensor("kernel")
        x = rng.standard_normal(32)
        np.testing.assert_allclose(kernel.canonical() @ x, w @ x, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# damaged and hostile files: one line, exit 2


def _header(
    tensors: list[tuple[str, tuple[int, ...], int, int]],
    kv: bytes = b"",
    kv_count: int = 0,
    version: int = 3,
    tensor_count: int | None = None,
) -> bytes:
    """A GGUF header of ``(name, ne, type id, offset)`` tensor infos, padded to 32."""
    out = b"GGUF" + struct.pack(
        "<IQQ", version, len(tensors) if tensor_count is None else tensor_count, kv_count
    )
    out += kv
    for name, ne, type_id, offset in tensors:
        raw = name.encode()
        out += struct.pack("<Q", len(raw)) + raw + struct.pack("<I", len(ne))
        out += struct.pack(f"<{len(ne)}Q", *ne) + struct.pack("<IQ", type_id, offset)
    return out + b"\0" * (-len(out) % 32)


def _kv_string(key: str, value: str) -> bytes:
    return (
        struct.pack("<Q", len(key))
        + key.encode()
        + struct.pack("<IQ", 8, len(value))
        + value.encode()
    )


def _kv_u32(key: str, value: int, value_type: int = 4) -> bytes:
    fmt = {4: "I", 5: "i", 8: "Q"}[value_type] if value_type != 8 else "Q"
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack(f"<I{fmt}", value_type, value)


GOOD_DATA = np.arange(8, dtype="<f4").tobytes()

HOSTILE = {
    "truncated header": lambda: _header([("w.weight", (8,), 0, 0)])[:30],
    "truncated data": lambda: _header([("w.weight", (8,), 0, 0)]) + GOOD_DATA[:20],
    "tensor count 2**60": lambda: _header([], tensor_count=1 << 60),
    "metadata count 2**40": lambda: _header([], kv_count=1 << 40),
    "string length past the end": lambda: _header(
        [], kv=struct.pack("<Q", 1 << 50) + b"general.name", kv_count=1
    ),
    "array length 2**62": lambda: _header(
        [],
        kv=struct.pack("<Q", 3) + b"arr" + struct.pack("<IIQ", 9, 0, 1 << 62),
        kv_count=1,
    ),
    "array of 2**30 strings": lambda: _header(
        [],
        kv=struct.pack("<Q", 3) + b"arr" + struct.pack("<IIQ", 9, 8, 1 << 30),
        kv_count=1,
    ),
    "string array cut short": lambda: (
        b"GGUF"
        + struct.pack("<IQQ", 3, 0, 1)
        + struct.pack("<Q", 3)
        + b"arr"
        + struct.pack("<IIQ", 9, 8, 20)
        + (struct.pack("<Q", 2) + b"ab") * 19
        + struct.pack("<Q", 5)
        + b"ab"
    ),
    "unknown value type": lambda: _header(
        [], kv=struct.pack("<Q", 1) + b"k" + struct.pack("<I", 99), kv_count=1
    ),
    "offset past the end": lambda: _header([("w.weight", (8,), 0, 1 << 40)]) + GOOD_DATA,
    "misaligned offset": lambda: _header([("w.weight", (8,), 0, 4)]) + GOOD_DATA * 2,
    "unknown type id": lambda: _header([("w.weight", (8,), 77, 0)]) + GOOD_DATA,
    "five dims": lambda: _header([("w.weight", (1, 1, 1, 1, 8), 0, 0)]) + GOOD_DATA,
    "dims of 2**63": lambda: _header([("w.weight", (1 << 63, 2), 0, 0)]) + GOOD_DATA,
    "blocks of no dims": lambda: _header([("w.weight", (), 8, 0)]) + b"\0" * 64,
    "rows not whole blocks": lambda: _header([("w.weight", (40,), 8, 0)]) + b"\0" * 64,
    "same name twice": lambda: (
        _header([("w.weight", (4,), 0, 0), ("w.weight", (4,), 0, 32)]) + GOOD_DATA * 4
    ),
    "overlapping tensors": lambda: (
        _header([("a.weight", (8,), 0, 0), ("b.weight", (8,), 0, 0)]) + GOOD_DATA
    ),
    "alignment 3": lambda: (
        _header([("w.weight", (8,), 0, 0)], kv=_kv_u32("general.alignment", 3), kv_count=1)
        + GOOD_DATA
    ),
    "alignment a string": lambda: (
        _header([("w.weight", (8,), 0, 0)], kv=_kv_string("general.alignment", "32"), kv_count=1)
        + GOOD_DATA
    ),
    "version 99": lambda: _header([], version=99),
    "version 1": lambda: _header([], version=1),
    "big-endian, tensor count 2**60": lambda: b"GGUF" + struct.pack(">IQQ", 3, 1 << 60, 0),
    "big-endian, truncated data": lambda: (
        b"GGUF"
        + struct.pack(">IQQ", 3, 1, 0)
        + struct.pack(">Q", 8)
        + b"w.weight"
        + struct.pack(">IQIQ", 1, 8, 0, 0)
        + b"\0" * 20
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_file_is_one_line_exit_2(case, tmp_path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(HOSTILE[case]())
    before = path.read_bytes()
    result = run_cli("inspect", path, timeout=20)
    assert result.returncode == 2, (case, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"weightscope: {path}"), result.stderr
    assert "Traceback" not in result.stderr
    # each is a lie or a variant not read, told as such (never a limit to raise)
    assert "damaged GGUF file: " in lines[0] or "not read" in lines[0], lines[0]
    assert path.read_bytes() == before


@pytest.mark.parametrize("version", [2, 3])
def test_a_well_formed_handmade_file_reads(tmp_path, version) -> None:
    """The hostile files' builder makes valid files too: what they break is what is refused.
    Versions 2 and 3 are laid out alike (3 allowed big-endian files)."""
    path = tmp_path / "model.gguf"
    path.write_bytes(
        _header(
            [("w.weight", (8,), 0, 0)],
            kv=_kv_u32("general.alignment", 64),
            kv_count=1,
            version=version,
        )
        + GOOD_DATA  # the header pads to 128 bytes, a multiple of 64
    )
    with weightscope.load(path) as model:
        np.testing.assert_array_equal(model.layer("w").tensors[0].numpy(), np.arange(8))


def test_reader_produces_exactly_the_table(tmp_path) -> None:
    """Every GGUF entry of the layout table, and nothing else, from a file holding each."""
    from weightscope import layouts

    rng = np.random.default_rng(6)

    def f32(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    path = write_gguf(
        tmp_path / "all.gguf",
        [
            ("token_embd.weight", f32(10, 4), None),
            ("blk.0.attn_norm.weight", f32(4), None),
            ("enc.ln_post.weight", f32(4), None),
            ("enc.ln_post.bias", f32(4), None),
            ("blk.0.attn_q.weight", f32(4, 4), None),
            ("blk.0.attn_q.bias", f32(4), None),
            ("encoder.conv1.weight", f32(4, 2, 3), None),
            ("encoder.conv1.bias", f32(4, 1), None),
            ("encoder.conv2.weight", f32(4, 4, 3), None),
            ("encoder.conv2.bias", f32(4), None),
            ("v.patch_embd.weight", f32(4, 3, 2, 2), None),
            ("v.patch_embd.bias", f32(4), None),
        ],
    )
    with weightscope.load(path) as model:
        produced = {
            (
                "gguf",
                str(layer.class_name),
                tensor.role,
                str(layer.kind),
                tensor.native_layout,
                layouts.GGUF_COLUMN if tensor.native_layout == "CN" else "",
            )
            for layer in model.layers
            for tensor in layer.tensors
        }
    table = {(u.framework, u.owner, u.role, u.kind, u.layout, u.when) for u in layouts.uses("gguf")}
    assert produced == table


def test_empty_quantized_tensor_reads(tmp_path) -> None:
    """A Q8_0 tensor of dims (32, 0): no blocks, no scales; listed with no values."""
    path = tmp_path / "empty.gguf"
    path.write_bytes(_header([("e.weight", (32, 0), 8, 0), ("w.weight", (8,), 0, 0)]) + GOOD_DATA)
    with weightscope.load(path) as model:
        tensor = model.layer("e").tensors[0]
        assert tensor.native_shape == (0, 32) and tensor.numpy().shape == (0, 32)
        assert tensor.stats().count == 0
    result = run_cli("inspect", path, "--json")
    assert result.returncode == 0, result.stderr


def test_tensors_of_no_known_kind_are_listed_and_counted(tmp_path) -> None:
    """Mamba's ``ssm_a`` (no ``weight`` suffix), a 1-D weight not named a norm, a bias that
    fits no weight: unknown layers, every element counted."""
    rng = np.random.default_rng(9)
    tensors = [
        ("blk.0.ssm_a", rng.standard_normal((16, 4)).astype(np.float32), None),
        ("rope_freqs.weight", rng.standard_normal(8).astype(np.float32), None),
        ("blk.0.odd.weight", rng.standard_normal((4, 6)).astype(np.float32), None),
        ("blk.0.odd.bias", rng.standard_normal(5).astype(np.float32), None),
    ]
    path = write_gguf(tmp_path / "odd.gguf", tensors)
    with weightscope.load(path) as model:
        kinds = {layer.name: str(layer.kind) for layer in model.layers}
        assert kinds == {"blk.0.ssm_a": "unknown", "rope_freqs": "unknown", "blk.0.odd": "unknown"}
        assert model.layer("blk.0.ssm_a").tensors[0].role == "ssm_a"
        assert all(t.native_layout is None and t.counted for _, t in model.tensors())
        assert model.params.total == 64 + 8 + 24 + 5


def test_compare_pairs_a_float_gguf_with_its_quantized_version(tmp_path) -> None:
    """The same tensors written as float32 and as Q8_0: every pair within a quantization step."""
    rng = np.random.default_rng(10)
    values = {
        "token_embd.weight": rng.standard_normal((50, 64)).astype(np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((64, 64)).astype(np.float32),
        "blk.0.attn_norm.weight": rng.standard_normal(64).astype(np.float32),
    }
    plain = write_gguf(tmp_path / "f32.gguf", [(n, v, None) for n, v in values.items()])
    quantized = write_gguf(
        tmp_path / "q8.gguf",
        [
            (n, v, None) if v.ndim == 1 else (n, gguf.quants.quantize(v, Q.Q8_0), Q.Q8_0)
            for n, v in values.items()
        ],
    )
    result = weightscope.compare(plain, quantized)
    assert result.verdict == "quantized"
    by_name = {pair.a: pair for pair in result.pairs}
    assert set(by_name) == {"token_embd", "blk.0.attn_q", "blk.0.attn_norm"}
    assert by_name["blk.0.attn_norm"].transform == "identity"
    for name in ("token_embd", "blk.0.attn_q"):
        pair = by_name[name]
        assert pair.match and pair.sqnr_db is not None and pair.sqnr_db > 40  # 8 bits: ~45 dB


def test_export_leaves_out_only_what_it_cannot_decode(llama, tmp_path) -> None:
    """The Q1_0 tensor has no values to write: it is named on stderr and in the archive's
    comment, and every other tensor is exported."""
    out = tmp_path / "llama.npz"
    result = run_cli("export", llama, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "not exported" in result.stderr and "blk.1.attn_v/kernel (ggml Q1_0)" in result.stderr
    with zipfile.ZipFile(out) as archive:
        comment = json.loads(archive.comment)
    assert [item["key"] for item in comment["not_exported"]] == ["blk.1.attn_v/kernel"]
    with np.load(out) as arrays, weightscope.load(llama) as model:
        for layer, tensor in model.tensors():
            key = f"{layer.name}/{tensor.role}"
            if tensor.dtype == "ggml Q1_0":
                assert key not in arrays.files
            else:
                values = tensor.canonical() if tensor.native_layout else tensor.numpy()
                np.testing.assert_array_equal(arrays[key], values)


# ---------------------------------------------------------------------------------------------
# big-endian files: numbers and elements swapped


BIG_ENDIAN_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q8_0", "Q4_K", "Q6_K", "MXFP4", "NVFP4"]
"""The types gguf's own gguf_convert_endian writes big-endian (it refuses any other)."""


def _big_endian_copy(little: Path, big: Path, monkeypatch) -> Path:
    """``little`` converted by the gguf package's own ``gguf_convert_endian`` (in place, on a
    copy): the header's numbers, the float elements and the blocks' float16 fields swapped."""
    import argparse
    import shutil

    from gguf.scripts import gguf_convert_endian

    shutil.copy(little, big)
    monkeypatch.setattr("builtins.input", lambda prompt="": "YES")
    reader = gguf.GGUFReader(str(big), "r+")
    gguf_convert_endian.convert_byteorder(reader, argparse.Namespace(order="big", dry_run=False))
    reader.data.flush()
    del reader
    return big


def test_big_endian_file_reads_as_its_little_endian_original(tmp_path, monkeypatch) -> None:
    rng = np.random.default_rng(17)
    tensors: list[tuple[str, np.ndarray, object]] = []
    for index, name in enumerate(BIG_ENDIAN_TYPES):
        values = rng.standard_normal((4, 256)).astype(np.float32)
        if name in ("F32", "F16"):
            array, qtype = values.astype(np.float16) if name == "F16" else values, None
        elif name in ("Q4_K", "Q6_K", "NVFP4"):  # no quantizer in gguf: random blocks
            array, qtype = _random_blocks(rng, name, 4, 256), Q[name]
        else:
            array, qtype = gguf.quants.quantize(values, Q[name]), Q[name]
        tensors.append((f"blk.{index}.ffn_up.weight", array, qtype))
    little = write_gguf(
        tmp_path / "little.gguf",
        tensors,
        file_type=int(gguf.LlamaFileType.MOSTLY_Q4_K_M),
        context_length=4096,
        token_list=["a", "bb", "ccc"],
    )
    big = _big_endian_copy(little, tmp_path / "big.gguf", monkeypatch)
    assert gguf.GGUFReader(str(big)).endianess == gguf.GGUFEndian.BIG
    assert little.read_bytes() != big.read_bytes()
    with weightscope.load(little) as a, weightscope.load(big) as b:
        assert a.notes == b.notes  # the same metadata, read from swapped numbers
        assert "llama.context_length=4096" in "\n".join(b.notes)
        for (_, x), (_, y) in zip(a.tensors(), b.tensors(), strict=True):
            assert (x.name, x.dtype, x.native_shape) == (y.name, y.dtype, y.native_shape)
            np.testing.assert_array_equal(y.numpy(), x.numpy())
            assert y.stats(chunk_elements=256) == x.stats(chunk_elements=256)
            if x.quantization is not None:
                np.testing.assert_array_equal(y.quantization.scales(), x.quantization.scales())
                np.testing.assert_array_equal(y.stored(), x.stored())


def test_big_endian_file_of_plain_types_as_gguf_reads_it(tmp_path) -> None:
    """``GGUFWriter(endianess=BIG)`` swaps plain arrays as it writes them; block types it
    writes unchanged, and those GGML's tools define no big-endian layout for (Q5_1 here) are
    listed, counted and said not to be read."""
    rng = np.random.default_rng(18)
    arrays = {
        "a.weight": rng.standard_normal((3, 8)).astype(np.float32),
        "b.weight": rng.standard_normal(8).astype(np.float64),
        "c.weight": rng.integers(-1000, 1000, (2, 8)).astype(np.int32),
        "d.weight": rng.integers(-1000, 1000, 8).astype(np.int16),
        "e.weight": rng.integers(-100, 100, 8).astype(np.int8),
        "f.weight": rng.standard_normal((2, 8)).astype(np.float16),
    }
    path = tmp_path / "big.gguf"
    writer = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    writer.add_name("big")
    writer.add_context_length(512)
    for name, array in arrays.items():
        writer.add_tensor(name, array)
    q5 = gguf.quants.quantize(rng.standard_normal((2, 64)).astype(np.float32), Q.Q5_1)
    writer.add_tensor("g.weight", q5, raw_dtype=Q.Q5_1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader = gguf.GGUFReader(str(path))
    expected = {t.name: np.asarray(t.data) for t in reader.tensors}
    with weightscope.load(path) as model:
        notes = "\n".join(model.notes)
        assert "name big" in notes and "llama.context_length=512" in notes
        for name, array in arrays.items():
            tensor = model.layer(name.removesuffix(".weight")).tensors[0]
            got = tensor.numpy()
            assert got.dtype.isnative and got.dtype.kind == array.dtype.kind
            np.testing.assert_array_equal(got, array)
            np.testing.assert_array_equal(got, expected[name].reshape(array.shape))
        tensor = model.layer("g").tensors[0]
        assert tensor.dtype == "ggml Q5_1" and tensor.size == 128 and tensor.counted
        assert "no big-endian Q5_1 blocks" in notes
        with pytest.raises(WeightscopeError, match="in a big-endian file"):
            tensor.numpy()
