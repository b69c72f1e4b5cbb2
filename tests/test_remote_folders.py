"""Folders and prefixes by URL read as local folders are: the same choice (an index, the one
model file, the weights HF names, a complete set of shards without an index), the same model
and notes, the same one-line errors; and ``scan`` of a prefix lists an index and its shards, or
a set without an index, as one model, as it does locally."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")
pytest.importorskip("s3fs")

from remote_servers import (
    Counting,
    layers,
    safetensors_file,
    same_tensors,
    sharded,
)

import weightscope
from weightscope import WeightscopeError


def _loose(folder: Path) -> Path:
    """A model in 3 safetensors shards without an index (a layer split across two), and a
    config.json."""
    index = sharded(folder)
    index.unlink()
    return folder


def _put(endpoint: str, bucket: str, folder: Path, prefix: str) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.makedirs(bucket, exist_ok=True)  # moto's buckets outlive the test
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fs.put(str(path), f"{bucket}/{prefix}/{path.relative_to(folder).as_posix()}")
    return f"s3://{bucket}/{prefix}"


def _options(endpoint: str) -> dict[str, object]:
    return {"endpoint_url": endpoint, "skip_instance_cache": True}


def _weights(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return safetensors_file(
        path,
        {
            "fc.weight": rng.normal(size=(8, 16)).astype(np.float32),
            "fc.bias": rng.normal(size=8).astype(np.float32),
        },
    )


def test_shards_without_an_index_by_url_are_one_model(tmp_path: Path, s3: str) -> None:
    """s3://bucket/prefix/ holding model-0000N-of-00003.safetensors and no index: one model,
    the local folder's (layers, a layer split across shards merged, notes, config.json's
    architecture, tensors and statistics)."""
    folder = _loose(tmp_path / "m")
    url = _put(s3, "loose", folder, "tiny")
    with (
        weightscope.load(folder) as local,
        weightscope.load(f"{url}/", storage_options=_options(s3)) as remote,
    ):
        assert str(remote.source) == url
        assert remote.format == local.format == "safetensors-sharded"
        assert layers(remote) == layers(local)
        assert "read from 3 shards, no index" in remote.notes
        assert "config.json: architectures Tiny" in remote.notes
        assert remote.notes == local.notes
        same_tensors(remote, local)


def test_shards_without_an_index_on_the_hub(tmp_path: Path, http: Counting) -> None:
    """hf://org/repo holding a set of shards and no index: one model, as locally."""
    pytest.importorskip("huggingface_hub")
    folder = _loose(tmp_path / "m")
    for path in folder.iterdir():
        http.files[path.name] = path
    options = {"endpoint": http.url, "skip_instance_cache": True}
    with (
        weightscope.load(folder) as local,
        weightscope.load("hf://org/tiny", storage_options=options) as remote,
    ):
        assert str(remote.source) == "hf://org/tiny"
        assert layers(remote) == layers(local)
        assert remote.notes == local.notes


def test_a_shard_missing_by_url_is_one_line_naming_it(
    tmp_path: Path, s3: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from weightscope.cli.app import main

    folder = _loose(tmp_path / "m")
    (folder / "model-00002-of-00003.safetensors").unlink()
    url = _put(s3, "missing", folder, "tiny")
    status = main(["inspect", f"{url}/", "--storage-option", f"endpoint_url={s3}"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1, err
    assert err == (
        f"weightscope: {url}/model-00002-of-00003.safetensors: shard missing from the folder\n"
    )
    with pytest.raises(WeightscopeError) as local:
        weightscope.load(folder)
    assert str(local.value).replace(str(folder), url) == err.removeprefix("weightscope: ").strip()


def _index_beside_a_single_file(folder: Path) -> None:
    sharded(folder)
    _weights(folder / "model.safetensors")


def _one_model_file(folder: Path) -> None:
    folder.mkdir()
    _weights(folder / "weights.safetensors")
    (folder / "README.md").write_text("# a model")
    (folder / "config.json").write_text(json.dumps({"architectures": ["Net"], "model_type": "x"}))


def _hf_weights_beside_others(folder: Path) -> None:
    folder.mkdir()
    _weights(folder / "model.safetensors")
    _weights(folder / "other.safetensors", seed=1)
    torch = pytest.importorskip("torch")
    torch.save({"lr": torch.tensor(0.1)}, folder / "training_args.bin")


def _shards_beside_another_model(folder: Path) -> None:
    _loose(folder)
    _weights(folder / "extra.safetensors", seed=2)


def _onnx_and_its_external_data(folder: Path) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir()
    weight = np.random.default_rng(3).normal(size=(16, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/fc/MatMul")],
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
        [numpy_helper.from_array(weight, "w")],
    )
    onnx.save_model(
        helper.make_model(graph),
        str(folder / "net.onnx"),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )


def _two_models(folder: Path) -> None:
    folder.mkdir()
    _weights(folder / "a.safetensors")
    _weights(folder / "b.safetensors", seed=1)


def _nothing_of_a_model(folder: Path) -> None:
    folder.mkdir()
    (folder / "README.md").write_text("# nothing")


@pytest.mark.parametrize(
    "build",
    [
        _index_beside_a_single_file,
        _one_model_file,
        _hf_weights_beside_others,
        _shards_beside_another_model,
        _onnx_and_its_external_data,
        _two_models,
        _nothing_of_a_model,
    ],
)
def test_a_folder_url_reads_what_the_local_folder_reads(
    tmp_path: Path, s3: str, build: Callable[[Path], None]
) -> None:
    """The folder's precedence by URL is the local one: an index first, then the one model
    file, then the weights HF names, then a complete set of shards; the same model and notes,
    or the same line (the folder's name aside)."""
    folder = tmp_path / "m"
    build(folder)
    url = _put(s3, "precedence", folder, build.__name__.strip("_"))
    try:
        local = weightscope.load(folder)
    except WeightscopeError as exc:
        with pytest.raises(WeightscopeError) as remote_error:
            weightscope.load(f"{url}/", storage_options=_options(s3))
        assert type(remote_error.value) is type(exc)
        assert str(remote_error.value) == str(exc).replace(str(folder), url)
        return
    with local, weightscope.load(f"{url}/", storage_options=_options(s3)) as remote:
        assert str(remote.source).removeprefix(url) == str(local.source).removeprefix(str(folder))
        assert layers(remote) == layers(local)
        assert remote.notes == [n.replace(str(folder), url) for n in local.notes]
        same_tensors(remote, local)


# --- scan of a prefix: one row per model --------------------------------------------------


def test_scan_of_a_prefix_lists_each_model_once(tmp_path: Path, s3: str) -> None:
    """A prefix holding an indexed model, a set of shards without an index and a single file:
    three models, as the same folders scanned locally (an index and its shards one row, a set
    without an index one row in its first shard's name); the shards are counted as not models
    in both."""
    from weightscope.scan import scan

    zoo = tmp_path / "zoo"
    sharded(zoo / "indexed")
    _loose(zoo / "loose")
    (zoo / "single").mkdir()
    _weights(zoo / "single" / "w.safetensors")
    url = _put(s3, "zoo", zoo, "models")
    local_out, remote_out = tmp_path / "local.jsonl", tmp_path / "remote.jsonl"
    local = scan([str(zoo)], local_out, jobs=1, timeout=120)
    remote = scan([f"{url}/"], remote_out, jobs=1, storage_options=_options(s3), timeout=120)
    assert remote.models == local.models == 3
    assert remote.errors == local.errors == 0
    assert remote.not_models == local.not_models

    def models(out: Path, base: str) -> dict[str, dict]:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        return {row["path"].removeprefix(base): row for row in rows if row["record"] == "model"}

    ours, theirs = models(remote_out, url), models(local_out, str(zoo))
    assert (
        set(ours)
        == set(theirs)
        == {
            "/indexed/model.safetensors.index.json",
            "/loose/model-00001-of-00003.safetensors",
            "/single/w.safetensors",
        }
    )
    for name, row in theirs.items():
        assert ours[name]["params"] == row["params"], name
        assert ours[name]["format"] == row["format"], name
        assert ours[name]["layers"] == row["layers"], name


def test_scan_of_a_prefix_reads_a_bad_index_shards_alone(tmp_path: Path, s3: str) -> None:
    """An index that cannot be read names no shards: it is a row with its error, and its
    shards are scanned alone, as locally."""
    from weightscope.scan import scan

    zoo = tmp_path / "zoo"
    index = sharded(zoo / "bad")
    index.write_text("{not json")
    url = _put(s3, "badzoo", zoo, "models")
    local = scan([str(zoo)], tmp_path / "l.jsonl", jobs=1, timeout=120)
    remote = scan(
        [f"{url}/"], tmp_path / "r.jsonl", jobs=1, storage_options=_options(s3), timeout=120
    )
    assert (remote.models, remote.errors) == (local.models, local.errors) == (3, 1)
