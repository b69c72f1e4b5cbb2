"""``compare`` across TensorFlow's formats: one model written as a Keras file, a SavedModel, its
TFLite conversion and its ONNX export (tf2onnx), compared in one command. The converters fold the
batch norm into the conv before it (``bn_folded``, naming the batch norm); the SavedModel keeps
every layer as Keras wrote it (identity); the dense layer after a channels-last flatten is the
same everywhere."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
keras = pytest.importorskip("keras")
tf2onnx = pytest.importorskip("tf2onnx")
onnx = pytest.importorskip("onnx")

from cli_runner import run_cli  # noqa: E402

import weightscope  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _set_batch_norm(layer, rng: np.random.Generator) -> None:
    """Trained-looking statistics: folding then changes every kernel value."""
    n = layer.weights[0].shape[0]
    layer.set_weights(
        [rng.uniform(0.5, 1.5, n), rng.uniform(-1, 1, n), rng.uniform(-1, 1, n),
         rng.uniform(0.5, 2, n)]
    )  # fmt: skip


@pytest.fixture(scope="module")
def tf_keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tf-keras model as .h5, SavedModel (``save_format="tf"``), TFLite and ONNX."""
    tmp = tmp_path_factory.mktemp("four_formats")
    tf_keras.utils.set_random_seed(0)
    inputs = tf_keras.Input((8, 8, 3), name="x")
    h = tf_keras.layers.Conv2D(6, 3, name="conv")(inputs)
    h = tf_keras.layers.BatchNormalization(name="bn")(h)
    h = tf_keras.layers.ReLU()(h)
    h = tf_keras.layers.Conv2D(4, 3, name="conv2")(h)
    h = tf_keras.layers.Flatten()(h)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(5, name="fc")(h))
    _set_batch_norm(model.get_layer("bn"), np.random.default_rng(1))
    files = {
        "h5": tmp / "model.h5",
        "saved": tmp / "saved_model",
        "tflite": tmp / "model.tflite",
        "onnx": tmp / "model.onnx",
    }
    model.save(files["h5"])
    model.save(files["saved"], save_format="tf")
    files["tflite"].write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32, name="x"),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    onnx.save(proto, files["onnx"])
    return files


def _by_a(comparison: dict) -> dict[str, dict]:
    return {pair["a"]: pair for pair in comparison["pairs"]}


def test_one_model_in_four_formats(tf_keras_files: dict[str, Path]) -> None:
    files = tf_keras_files
    result = run_cli(
        "compare", files["saved"], files["h5"], files["tflite"], files["onnx"], "--json"
    )
    assert result.returncode == 1, result.stderr  # the converters folded the batch norm
    to_h5, to_tflite, to_onnx = json.loads(result.stdout)
    assert to_h5["verdict"] == "identical", to_h5
    assert set(_by_a(to_h5)) == {"conv", "bn", "conv2", "fc"}
    for converted in (to_tflite, to_onnx):
        pairs = _by_a(converted)
        assert converted["verdict"] == "transformed", converted
        assert pairs["conv"]["transform"] == "bn_folded" and pairs["conv"]["match"]
        assert "bn" in pairs["conv"]["note"] and "eps 0.001" in pairs["conv"]["note"]
        assert pairs["conv2"]["transform"] == "identity"
        assert pairs["fc"]["transform"] == "identity"  # both flatten channels-last
        assert "bn" not in pairs  # absorbed, not unmatched
        assert converted["unmatched_a"] == converted["unmatched_b"] == []


def test_a_changed_batch_norm_is_no_fold(tf_keras_files: dict[str, Path], tmp_path: Path) -> None:
    """The control: a SavedModel whose batch norm is not the one folded does not match."""
    model = tf_keras.models.load_model(tf_keras_files["h5"])
    _set_batch_norm(model.get_layer("bn"), np.random.default_rng(9))
    model.save(tmp_path / "other", save_format="tf")
    comparison = weightscope.compare(tmp_path / "other", tf_keras_files["tflite"])
    conv = {pair.a: pair for pair in comparison.pairs}["conv"]
    assert conv.transform != "bn_folded" and not conv.match


def test_keras3_export_against_its_tflite_conversion(tmp_path: Path) -> None:
    """Keras 3's ``model.export`` (a SavedModel without Keras metadata, read from its graph)
    against the TFLite file converted from it and the ``.keras`` file."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten()(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.Dense(4, name="fc")(h))
    _set_batch_norm(model.get_layer("bn"), np.random.default_rng(1))
    model.save(tmp_path / "m.keras")
    model.export(tmp_path / "exported", verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "exported"))
    (tmp_path / "m.tflite").write_bytes(converter.convert())
    same = weightscope.compare(tmp_path / "m.keras", tmp_path / "exported")
    assert same.verdict == "identical", same.to_dict()
    folded = weightscope.compare(tmp_path / "exported", tmp_path / "m.tflite")
    pairs = {pair.b.split(";")[0]: pair for pair in folded.pairs}
    assert [p.transform for p in folded.pairs].count("bn_folded") == 1, folded.to_dict()
    assert all(p.match for p in pairs.values()) and not folded.unmatched_a
