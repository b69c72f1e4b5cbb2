"""Every command on TensorFlow's own formats: one tf-keras model written as a SavedModel, a
training checkpoint and a TFLite file, and each of ``inspect`` (with ``--health``), ``export``,
``plot``, ``init``, ``params``, ``explain``, ``report``, ``scan`` and ``compare`` run on it as a
user runs them, checked against what weightscope's reader and the model hold."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")

from cli_runner import run_cli  # noqa: E402

import weightscope  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FORMATS = ("savedmodel", "tf-checkpoint", "tflite")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("tf_formats")
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((10, 10, 3))
    h = tf_keras.layers.Conv2D(8, 3, name="conv")(inputs)
    h = tf_keras.layers.BatchNormalization(name="bn")(h)
    h = tf_keras.layers.Flatten()(tf_keras.layers.ReLU()(h))
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(4, name="fc")(h))
    found = {
        "h5": tmp / "model.h5",
        "savedmodel": tmp / "saved",
        "tf-checkpoint": tmp / "ckpt" / "model.ckpt",
        "tflite": tmp / "model.tflite",
    }
    model.save(found["h5"])
    model.save(found["savedmodel"], save_format="tf")
    tf.train.Checkpoint(model=model).write(str(found["tf-checkpoint"]))
    found["tflite"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return found


def _conv(path: Path) -> str:
    with weightscope.load(path) as model:
        return next(layer.name for layer in model.layers if layer.kind == "conv2d")


@pytest.mark.parametrize("fmt", FORMATS)
def test_inspect_and_health(files: dict[str, Path], fmt: str) -> None:
    result = run_cli("inspect", files[fmt], "--json", "--health")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == fmt
    kinds = {layer["kind"] for layer in data["layers"]}
    assert {"conv2d", "dense"} <= kinds
    with weightscope.load(files[fmt]) as model:
        assert data["params"]["total"] == model.params.total
    table = run_cli("inspect", files[fmt])
    assert table.returncode == 0 and _conv(files[fmt]) in table.stdout


@pytest.mark.parametrize("fmt", FORMATS)
def test_export_writes_the_canonical_tensors(
    files: dict[str, Path], fmt: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.npz"
    result = run_cli("export", files[fmt], "-o", out)
    assert result.returncode == 0, result.stderr
    conv = _conv(files[fmt])
    with np.load(out) as arrays, weightscope.load(files[fmt]) as model:
        kernel = model.layer(conv).kernel
        assert kernel is not None
        np.testing.assert_array_equal(arrays[f"{conv}/{kernel.role}"], kernel.canonical())
        assert arrays[f"{conv}/{kernel.role}"].shape == (8, 3, 3, 3)


@pytest.mark.parametrize("fmt", FORMATS)
def test_plot_init_params_explain(files: dict[str, Path], fmt: str, tmp_path: Path) -> None:
    conv = _conv(files[fmt])
    picture = tmp_path / "conv.png"
    plotted = run_cli("plot", files[fmt], "--layer", conv, "-o", picture)
    assert plotted.returncode == 0, plotted.stderr
    assert picture.read_bytes().startswith(b"\x89PNG")
    init = run_cli("init", files[fmt], "--json")
    assert init.returncode == 0, init.stderr
    assert conv in init.stdout
    params = run_cli("params", files[fmt], "--json")
    assert params.returncode == 0, params.stderr
    rows = {row["name"]: row for row in json.loads(params.stdout)["layers"]}
    assert rows[conv]["stored"] == 8 * 3 * 3 * 3 + 8  # kernel and bias (TFLite: folded)
    explained = run_cli("explain", files[fmt], conv)
    assert explained.returncode == 0, explained.stderr
    assert "216" in explained.stdout  # 8 filters x 3 input channels x 3 x 3


@pytest.mark.parametrize("fmt", FORMATS)
def test_report_and_scan(files: dict[str, Path], fmt: str, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    reported = run_cli("report", files[fmt], "-o", page)
    assert reported.returncode == 0, reported.stderr
    assert _conv(files[fmt]) in page.read_text("utf-8")
    table = tmp_path / "scan.csv"
    scanned = run_cli("scan", files[fmt], "-o", table)
    assert scanned.returncode == 0, scanned.stderr
    with open(table, newline="") as handle:
        models = [row for row in csv.DictReader(handle) if row["record"] == "model"]
    with weightscope.load(files[fmt]) as model:
        assert [(row["format"], int(row["params"])) for row in models] == [
            (fmt, model.params.total)
        ]


def test_scan_reads_a_saved_model_folder_once(files: dict[str, Path], tmp_path: Path) -> None:
    """Its variables checkpoint is part of it, not a second model."""
    table = tmp_path / "scan.csv"
    scanned = run_cli("scan", files["savedmodel"].parent, "-o", table)
    assert scanned.returncode == 0, scanned.stderr
    with open(table, newline="") as handle:
        models = sorted(
            (Path(row["path"]).relative_to(files["savedmodel"].parent).as_posix(), row["format"])
            for row in csv.DictReader(handle)
            if row["record"] == "model"
        )
    assert models == [
        ("ckpt/model.ckpt.index", "tf-checkpoint"),
        ("model.h5", "keras-h5"),
        ("model.tflite", "tflite"),
        ("saved/saved_model.pb", "savedmodel"),
    ]


@pytest.mark.parametrize("fmt", FORMATS)
def test_compare_with_the_keras_file(files: dict[str, Path], fmt: str) -> None:
    result = run_cli("compare", files["h5"], files[fmt], "--json")
    data = json.loads(result.stdout)
    transforms = {pair["a"]: pair["transform"] for pair in data["pairs"]}
    assert all(pair["match"] for pair in data["pairs"]), data
    if fmt == "tflite":
        assert transforms["conv"] == "bn_folded" and result.returncode == 1
    else:
        assert data["verdict"] == "identical" and result.returncode == 0, data
