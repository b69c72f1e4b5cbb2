"""``compare`` of a Keras model with its TFLite conversion: the converter folds the batch norm
into the conv before it (named ``bn_folded``), keeps the dense layer's weights, and flattens
channels-last as Keras does (no flatten note)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import weightscope  # noqa: E402


def test_keras_against_its_tflite_conversion(tmp_path: Path) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(6, 3, name="conv")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.Flatten()(keras.layers.ReLU()(h))
    model = keras.Model(inputs, keras.layers.Dense(4, name="fc")(h))
    rng = np.random.default_rng(1)
    model.get_layer("bn").set_weights(
        [rng.uniform(0.5, 1.5, 6), rng.uniform(-1, 1, 6), rng.uniform(-1, 1, 6),
         rng.uniform(0.5, 2, 6)]
    )  # fmt: skip
    model.save(tmp_path / "m.keras")
    (tmp_path / "m.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    result = weightscope.compare(tmp_path / "m.keras", tmp_path / "m.tflite")
    by_a = {pair.a: pair for pair in result.pairs}
    assert by_a["conv"].transform == "bn_folded" and by_a["conv"].match, by_a["conv"].note
    assert "eps 0.001, from the file" in (by_a["conv"].note or "")
    assert by_a["fc"].transform == "identity" and "flattens" not in (by_a["fc"].note or "")
    assert not result.unmatched_a and not result.unmatched_b
    assert result.verdict == "transformed"
    # The converter's constants without float weights (the flatten's shape) are left out:
    # counted by reason in the note, each listed in the JSON.
    tflite = weightscope.load(tmp_path / "m.tflite")
    no_floats = [
        layer.name
        for layer in tflite.layers
        if not any(t.dtype.startswith(("float", "bfloat")) for t in layer.tensors)
    ]
    left = result.to_dict()["left_out_b"]
    assert no_floats and left == [
        {"name": name, "reason": "no floating-point weights"} for name in no_floats
    ]
    note = next(n for n in result.notes if n.startswith("B: "))
    assert note.startswith(f"B: {len(left)} layer") and no_floats[0] in note
