"""Parameter totals equal Keras' own counts, on real models saved in every Keras file format."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")

import weightscope  # noqa: E402

# (module, format): full-model formats carry a config, weights-only ones do not.
FORMATS = [
    (keras, "h5"),
    (keras, "keras"),
    (keras, "weights.h5"),
    (tf_keras, "h5"),
    (tf_keras, "weights-only.h5"),
]
FULL_MODEL = {"h5", "keras"}


def save(model, fmt: str, folder: Path) -> Path:
    if fmt in ("h5", "keras"):
        path = folder / f"model.{fmt}"
        model.save(path)
    elif fmt == "weights.h5":
        path = folder / "model.weights.h5"
        model.save_weights(path)
    else:
        path = folder / "model.h5"
        model.save_weights(path)
    return path


def keras_counts(model) -> tuple[int, int]:
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    return trainable, non_trainable


def doc_example(K):
    """The example from the Keras documentation: Conv2D(32, 5) on 28x28x3, then 17, 13 and 7
    filters of 3x3, all without bias (with biases Keras counts 10,141, not 10,104)."""
    return K.Sequential(
        [
            K.Input((28, 28, 3)),
            K.layers.Conv2D(32, 5, use_bias=False, name="c32"),
            K.layers.Conv2D(17, 3, use_bias=False, name="c17"),
            K.layers.Conv2D(13, 3, use_bias=False, name="c13"),
            K.layers.Conv2D(7, 3, use_bias=False, name="c7"),
        ]
    )


@pytest.mark.parametrize(("K", "fmt"), FORMATS, ids=lambda v: getattr(v, "__name__", v))
def test_keras_documentation_example(K, fmt, tmp_path):
    model = doc_example(K)
    path = save(model, fmt, tmp_path)
    with weightscope.load(path) as loaded:
        assert [layer.params for layer in loaded.layers] == [2400, 4896, 1989, 819]
        assert loaded.params.total == 10_104 == model.count_params()
        first = loaded.layers[0].tensor("kernel")
        # 32 filters x 3 input channels = 96 distinct 5x5 kernels
        assert first.canonical_shape == (32, 3, 5, 5)
        if fmt in FULL_MODEL:
            assert (loaded.params.trainable, loaded.params.non_trainable) == (10_104, 0)


def bn_model(K):
    """Batch norm (moving statistics are non-trainable), a frozen dense layer, a nested model."""
    inner = K.Sequential(
        [
            K.Input((6, 6, 4)),
            K.layers.Conv2D(5, 3, name="inner_conv"),
            K.layers.BatchNormalization(name="inner_bn"),
        ],
        name="inner",
    )
    inputs = K.Input((8, 8, 3))
    x = K.layers.Conv2D(4, 3, name="stem")(inputs)
    x = inner(x)
    x = K.layers.BatchNormalization(name="bn", center=False)(x)
    x = K.layers.Flatten()(x)
    x = K.layers.Dense(6, name="frozen")(x)
    outputs = K.layers.Dense(2, name="head")(x)
    model = K.Model(inputs, outputs)
    model.get_layer("frozen").trainable = False
    model.compile("adam", "mse")  # an optimizer with state, which is never a parameter
    model.fit(np.ones((4, 8, 8, 3)), np.ones((4, 2)), verbose=0)
    return model


@pytest.mark.parametrize(("K", "fmt"), FORMATS, ids=lambda v: getattr(v, "__name__", v))
def test_trainable_and_non_trainable_totals_match_keras(K, fmt, tmp_path):
    model = bn_model(K)
    trainable, non_trainable = keras_counts(model)
    path = save(model, fmt, tmp_path)
    with weightscope.load(path) as loaded:
        counts = loaded.params
        assert counts.total == model.count_params() == trainable + non_trainable
        names = [layer.name for layer in loaded.layers]
        assert names == ["stem", "inner/inner_conv", "inner/inner_bn", "bn", "frozen", "head"]
        assert [layer.kind for layer in loaded.layers] == [
            "conv2d", "conv2d", "batch_norm", "batch_norm", "dense", "dense"
        ]  # fmt: skip
        if fmt in FULL_MODEL:
            assert (counts.trainable, counts.non_trainable) == (trainable, non_trainable)
            assert counts.unknown == 0
        else:
            # weights-only: batch-norm statistics are known non-trainable, frozen layers are not
            bn_stats = sum(
                t.size for _, t in loaded.tensors() if t.role in ("moving_mean", "moving_variance")
            )
            assert counts.non_trainable == bn_stats
            assert counts.unknown == counts.total - bn_stats


def test_example_model_totals_match_keras():
    path = weightscope.example_path()
    model = keras.models.load_model(path, compile=False)
    trainable, non_trainable = keras_counts(model)
    with weightscope.load(path) as loaded:
        assert loaded.params.to_dict() == {
            "total": model.count_params(),
            "trainable": trainable,
            "non_trainable": non_trainable,
        }
