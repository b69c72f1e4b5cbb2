"""Split GGUF (llama.cpp's gguf-split layout: ``NAME-0000N-of-0000M.gguf``, every file with
``split.no``, ``split.count`` and ``split.tensors.count``, the first with all the metadata),
written by the ``gguf`` package: read as one model from the first file or the folder, equal to
the unsplit file tensor for tensor; a missing or inconsistent file is one line naming it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

import weightscope

gguf = pytest.importorskip("gguf")

from gguf_files import finish_gguf  # noqa: E402  (after the skip: it imports gguf)

Q = gguf.GGMLQuantizationType


def _tensors() -> list[tuple[str, np.ndarray, object]]:
    rng = np.random.default_rng(31)

    def q(rows: int, cols: int, qtype) -> np.ndarray:
        return gguf.quants.quantize(rng.standard_normal((rows, cols)).astype(np.float32), qtype)

    return [
        ("token_embd.weight", q(40, 64, Q.Q8_0), Q.Q8_0),
        ("blk.0.attn_norm.weight", np.ones(64, np.float32), None),
        ("blk.0.attn_q.weight", q(64, 64, Q.Q4_0), Q.Q4_0),
        # the bias in the next file: the layer is put together again
        ("blk.0.attn_q.bias", rng.standard_normal(64).astype(np.float32), None),
        ("blk.0.ffn_up.weight", rng.standard_normal((96, 64)).astype(np.float16), None),
        ("blk.0.ffn_down.weight", q(64, 256, Q.Q5_1), Q.Q5_1),
        ("output_norm.weight", np.ones(64, np.float32), None),
        ("output.weight", q(40, 64, Q.Q8_0), Q.Q8_0),
    ]


GROUPS = [(0, 3), (3, 6), (6, 8)]
"""The tensors of each of three files: blk.0.attn_q.bias opens the second."""
SPLIT_KEYS = ("split.no", "split.count", "split.tensors.count")


def _writer(path: Path, first: bool) -> gguf.GGUFWriter:
    writer = gguf.GGUFWriter(str(path), "llama")
    if first:
        writer.add_name("tiny split model")
        writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))
        writer.add_context_length(2048)
        writer.add_block_count(1)
    else:  # gguf-split writes the split keys alone in every file after the first
        del writer.kv_data[0]["general.architecture"]
    return writer


def write_whole(path: Path) -> Path:
    finish_gguf(_writer(path, True), _tensors())
    return path


def write_split(
    folder: Path, groups=GROUPS, keys: dict[int, dict[str, int | None]] | None = None
) -> list[Path]:
    """The tensors in ``len(groups)`` files named as gguf-split names them, the split keys
    written here (``keys[i]`` overrides file i's: None leaves a key out)."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors = _tensors()
    count = len(groups)
    paths = []
    for number, (start, end) in enumerate(groups):
        path = folder / f"tiny-{number + 1:05d}-of-{count:05d}.gguf"
        writer = _writer(path, number == 0)
        values = {"split.no": number, "split.count": count, "split.tensors.count": len(tensors)}
        values.update((keys or {}).get(number, {}))
        if values["split.no"] is not None:
            writer.add_uint16("split.no", values["split.no"])
        if values["split.count"] is not None:
            writer.add_uint16("split.count", values["split.count"])
        if values["split.tensors.count"] is not None:
            writer.add_int32("split.tensors.count", values["split.tensors.count"])
        finish_gguf(writer, tensors[start:end])
        paths.append(path)
    return paths


def _assert_same_model(split: weightscope.Model, whole: weightscope.Model) -> None:
    assert split.format == "gguf-sharded" and whole.format == "gguf"
    assert [layer.name for layer in split.layers] == [layer.name for layer in whole.layers]
    for a, b in zip(split.layers, whole.layers, strict=True):
        assert (a.kind, a.note, a.class_name) == (b.kind, b.note, b.class_name), a.name
        assert [(t.name, t.role, t.native_layout) for t in a.tensors] == [
            (t.name, t.role, t.native_layout) for t in b.tensors
        ]
        for x, y in zip(a.tensors, b.tensors, strict=True):
            assert (x.native_shape, x.dtype, x.size) == (y.native_shape, y.dtype, y.size)
            np.testing.assert_array_equal(x.numpy(), y.numpy())
            assert (x.quantization is None) == (y.quantization is None)
            if x.quantization is not None:
                np.testing.assert_array_equal(x.stored(), y.stored())
    assert split.params.total == whole.params.total


def test_split_reads_as_the_unsplit_file_from_its_first_file_and_its_folder(tmp_path) -> None:
    whole_path = write_whole(tmp_path / "whole.gguf")
    paths = write_split(tmp_path / "split")
    reader = [gguf.GGUFReader(str(p)) for p in paths]
    assert [len(r.tensors) for r in reader] == [3, 3, 2]
    assert "general.architecture" not in reader[1].fields  # the first file alone has metadata
    per_file = [sum(math.prod(int(d) for d in t.shape) for t in r.tensors) for r in reader]
    with weightscope.load(whole_path) as whole:
        assert whole.params.total == sum(per_file)  # the totals are the sum of the files'
        for source in (paths[0], paths[0].parent):
            with weightscope.load(source) as model:
                _assert_same_model(model, whole)
                assert model.layer("blk.0.attn_q").kind == "dense"  # weight and bias, 2 files
                notes = "\n".join(model.notes)
                assert model.notes[0] == "read from 3 files of a split GGUF"
                assert "architecture llama" in notes and "name tiny split model" in notes
                assert "file type MOSTLY_Q8_0 (7)" in notes and "8 tensors" in notes
                assert "llama.context_length=2048" in notes
                assert "split 1 of 3" not in notes
                assert model.source == paths[0] and model.inputs[: len(paths)] == paths
    result = run_cli("inspect", paths[0])
    assert result.returncode == 0, result.stderr
    assert "blk.0.ffn_down" in result.stdout and "Q5_1" in result.stdout


def test_split_written_by_the_gguf_package_itself(tmp_path) -> None:
    """``GGUFWriter(split_max_tensors=3)`` names and keys the files as gguf-split does."""
    whole_path = write_whole(tmp_path / "whole.gguf")
    writer = gguf.GGUFWriter(str(tmp_path / "pkg" / "tiny.gguf"), "llama", split_max_tensors=3)
    (tmp_path / "pkg").mkdir()
    writer.add_name("tiny split model")
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q8_0))
    writer.add_context_length(2048)
    writer.add_block_count(1)
    finish_gguf(writer, _tensors())
    paths = sorted((tmp_path / "pkg").iterdir())
    assert [p.name for p in paths] == [f"tiny-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    with weightscope.load(paths[0]) as model, weightscope.load(whole_path) as whole:
        _assert_same_model(model, whole)


def test_a_later_file_alone_says_which_reads_the_whole(tmp_path) -> None:
    paths = write_split(tmp_path)
    with weightscope.load(paths[1]) as model:
        assert model.format == "gguf"
        names = sorted(t.name for _, t in model.tensors())
        assert names == ["blk.0.attn_q.bias", "blk.0.ffn_down.weight", "blk.0.ffn_up.weight"]
        assert model.notes[0].startswith("split 2 of 3: this file alone")
        assert "tiny-00001-of-00003.gguf reads the whole model" in model.notes[0]


def _one_line(source: Path, names: Path) -> str:
    result = run_cli("inspect", source, timeout=60)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith(f"weightscope: {names}: "), lines[0]
    return lines[0]


BROKEN = {
    "a file missing": (None, 1, "split file missing: tiny-00001-of-00003.gguf is split 1 of 3"),
    "split.count differs": ({1: {"split.count": 4}}, 1, "split.count is 4, tiny-00001"),
    "split.no differs": ({2: {"split.no": 1}}, 2, "split.no is 1, its name says 2"),
    "no split keys": ({2: {"split.no": None, "split.count": None}}, 2, "has no split.no"),
    "tensor count": (
        {i: {"split.tensors.count": 9} for i in range(3)},
        0,
        "split.tensors.count is 9, but the 3 files hold 8 tensors",
    ),
    "tensor count differs": ({1: {"split.tensors.count": 9}}, 1, "split.tensors.count is 9"),
    "split.no past the count": ({0: {"split.no": 5}}, 0, "split.no is 5, split.count 3"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
@pytest.mark.parametrize("by", ["first file", "folder"])
def test_a_missing_or_inconsistent_file_is_one_line_naming_it(case, by, tmp_path) -> None:
    keys, culprit, says = BROKEN[case]
    paths = write_split(tmp_path / "m", keys=keys)
    if case == "a file missing":
        paths[1].unlink()
    source = paths[0] if by == "first file" else paths[0].parent
    if case == "a file missing" and by == "folder":  # the names say it before any file does
        says = "shard missing from the folder"
    assert says in _one_line(source, paths[culprit])


def test_a_tensor_in_two_files_is_one_line_naming_the_second(tmp_path) -> None:
    paths = write_split(tmp_path, groups=[(0, 4), (3, 6), (6, 8)])
    line = _one_line(paths[0], paths[1])
    assert "tensor 'blk.0.attn_q.bias' is also in the shard tiny-00001-of-00003.gguf" in line


def test_split_keys_on_a_file_not_named_as_the_first(tmp_path) -> None:
    paths = write_split(tmp_path)
    renamed = paths[0].rename(tmp_path / "model.gguf")
    line = _one_line(renamed, renamed)
    assert "is split 1 of 3 (split.count), but not named NAME-00001-of-00003.gguf" in line


def test_a_folder_whose_first_file_has_no_split_keys(tmp_path) -> None:
    paths = write_split(tmp_path, keys={0: {"split.no": None, "split.count": None}})
    line = _one_line(tmp_path, paths[0])
    assert "is named as the first of 3 files, but says it is a file of its own" in line


def test_a_scan_reads_the_split_once_from_its_first_file(tmp_path) -> None:
    import csv

    from weightscope.scan.walk import walk

    paths = write_split(tmp_path / "m")
    found = walk([str(tmp_path)])
    assert found.files == [str(paths[0])]
    assert sorted(found.not_models) == sorted(map(str, paths[1:]))
    out = tmp_path / "scan.csv"
    result = run_cli("scan", tmp_path / "m", "-o", out)
    assert result.returncode == 0, result.stderr
    with out.open(newline="") as handle:
        models = [row for row in csv.DictReader(handle) if row["record"] == "model"]
    assert [(row["path"], row["format"]) for row in models] == [(str(paths[0]), "gguf-sharded")]
    assert int(models[0]["params"]) == sum(
        math.prod(int(d) for d in t.shape) for p in paths for t in gguf.GGUFReader(str(p)).tensors
    )
