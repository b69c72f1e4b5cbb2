"""Keras file structures beyond the one-layer cases: chunked attributes, Keras 2.0-era naming,
nested models, layers weightscope has no canonical form for, bfloat16 storage."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")

import weightscope  # noqa: E402


def weights_by_path(model) -> dict[str, np.ndarray]:
    return {w.path if hasattr(w, "path") else w.name: np.asarray(w) for w in model.weights}


def test_chunked_layer_names_keep_model_order(tmp_path):
    """Over 64 KB of layer names are split by Keras into layer_names0, layer_names1, ..."""
    names = [f"d{i:03d}_" + "x" * 400 for i in range(180)]
    model = tf_keras.Sequential(
        [tf_keras.Input((1,))] + [tf_keras.layers.Dense(1, name=n) for n in names]
    )
    path = tmp_path / "long_names.h5"
    model.save(path)
    with h5py.File(path) as h5:
        attrs = set(h5["model_weights"].attrs)
        assert {"layer_names0", "layer_names1"} <= attrs and "layer_names" not in attrs
    with weightscope.load(path) as loaded:
        assert [layer.name for layer in loaded.layers] == names
        assert loaded.params.total == model.count_params()


def to_keras_20_naming(path: Path) -> None:
    """Rewrite a real tf-keras file the way Keras 2.0/2.1 wrote models built twice: weights
    nested as ``conv2d_1/conv2d_1_1/kernel:0`` and a Sequential config that is a bare list.
    (No Keras 2.0 runs on this Python, so the structure is reproduced from a real file.)"""
    with h5py.File(path, "r+") as h5:
        root = h5["model_weights"]
        for name in [n.decode() if isinstance(n, bytes) else n for n in root.attrs["layer_names"]]:
            group = root[name]
            old = [n.decode() if isinstance(n, bytes) else n for n in group.attrs["weight_names"]]
            new = []
            for weight in old:
                renamed = f"{name}_1/{weight.split('/')[-1]}"
                group.move(weight, renamed)
                new.append(renamed.encode())
            if new:
                del group[name]
                group.attrs["weight_names"] = np.array(new)
        config = json.loads(h5.attrs["model_config"])
        config["config"] = config["config"]["layers"]
        h5.attrs["model_config"] = json.dumps(config)


def test_keras_20_era_names_and_optimizer_weights(tmp_path):
    model = tf_keras.Sequential(
        [
            tf_keras.Input((6, 6, 2)),
            tf_keras.layers.Conv2D(3, 3, name="conv2d_1"),
            tf_keras.layers.BatchNormalization(name="batch_normalization_1"),
            tf_keras.layers.Flatten(name="flatten_1"),
            tf_keras.layers.Dense(2, name="dense_1"),
        ]
    )
    model.compile("adam", "mse")
    model.fit(np.ones((4, 6, 6, 2)), np.ones((4, 2)), verbose=0)
    path = tmp_path / "old.h5"
    model.save(path)
    to_keras_20_naming(path)
    with h5py.File(path) as h5:
        assert "model_weights/conv2d_1/conv2d_1_1/kernel:0" in h5
        assert len(h5["optimizer_weights"].attrs["weight_names"]) > 1
    with weightscope.load(path) as loaded:
        assert [(layer.name, layer.kind) for layer in loaded.layers] == [
            ("conv2d_1", "conv2d"),
            ("batch_normalization_1", "batch_norm"),
            ("dense_1", "dense"),
        ]
        assert loaded.params.total == model.count_params()
        kernel = loaded.layer("conv2d_1").tensor("kernel")
        assert kernel.name == "conv2d_1_1/kernel:0"
        np.testing.assert_array_equal(kernel.numpy(), model.get_layer("conv2d_1").kernel.numpy())


@pytest.mark.parametrize(
    ("K", "fmt"),
    [(keras, "h5"), (keras, "keras"), (keras, "weights.h5"), (tf_keras, "h5"), (tf_keras, "w.h5")],
    ids=["keras3-h5", "keras3-keras", "keras3-weights", "tf_keras-h5", "tf_keras-weights"],
)
def test_functional_inside_sequential_is_walked(K, fmt, tmp_path):
    inputs = K.Input((8, 8, 3))
    x = K.layers.Conv2D(4, 3, name="f_conv")(inputs)
    x = K.layers.BatchNormalization(name="f_bn")(x)
    functional = K.Model(inputs, x, name="features")
    model = K.Sequential(
        [K.Input((8, 8, 3)), functional, K.layers.Flatten(), K.layers.Dense(3, name="out")]
    )
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    path = tmp_path / f"nested.{fmt}"
    if fmt in ("h5", "keras"):
        model.save(path)
    else:
        model.save_weights(path)
    with weightscope.load(path) as loaded:
        assert [layer.name for layer in loaded.layers] == [
            "features/f_conv",
            "features/f_bn",
            "out",
        ]
        conv = loaded.layer("features/f_conv")
        assert conv.kind == "conv2d"
        np.testing.assert_array_equal(
            conv.tensor("kernel").numpy(), functional.get_layer("f_conv").kernel.numpy()
        )
        bn = loaded.layer("features/f_bn")
        np.testing.assert_array_equal(
            bn.tensor("moving_variance").numpy(),
            functional.get_layer("f_bn").moving_variance.numpy(),
        )
        assert loaded.params.total == model.count_params()


@pytest.mark.parametrize("fmt", ["keras", "h5"])
def test_layer_without_canonical_form_is_listed_not_dropped(fmt, tmp_path):
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((4, 6, 2)),
            layers.ConvLSTM1D(3, 3, name="conv_lstm"),
            layers.Dense(2, name="d"),
        ]
    )
    path = tmp_path / f"rnn.{fmt}"
    model.save(path)
    with weightscope.load(path) as loaded:
        lstm = loaded.layer("conv_lstm")
        assert lstm.kind == "unknown" and lstm.class_name == "ConvLSTM1D"
        assert lstm.params == model.get_layer("conv_lstm").count_params()
        assert all(t.canonical_shape is None for t in lstm.tensors)
        assert loaded.params.total == model.count_params()


def test_bfloat16_weights_are_decoded(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, dtype="bfloat16")])
    model.set_weights([np.linspace(-2, 2, 12).reshape(4, 3), np.array([0.5, -1.25, 3.0])])
    path = tmp_path / "bf16.keras"
    model.save(path)
    with weightscope.load(path) as loaded:
        kernel = loaded.layers[0].tensor("kernel")
        assert kernel.dtype == "bfloat16"
        expected = np.asarray(model.layers[0].kernel.numpy(), dtype=np.float32)
        np.testing.assert_array_equal(kernel.numpy(), expected)
        assert kernel.stats().max == pytest.approx(float(expected.max()))


def test_keras_zip_with_compressed_weights_member(tmp_path):
    """Keras stores model.weights.h5 uncompressed (read in place); a .keras re-zipped with
    deflate is read through a temporary extraction and gives the same tensors."""
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3, name="c")])
    stored = tmp_path / "stored.keras"
    model.save(stored)
    deflated = tmp_path / "deflated.keras"
    with (
        zipfile.ZipFile(stored) as src,
        zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as dst,
    ):
        assert src.getinfo("model.weights.h5").compress_type == zipfile.ZIP_STORED
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with weightscope.load(stored) as a, weightscope.load(deflated) as b:
        np.testing.assert_array_equal(
            a.layer("c").tensor("kernel").canonical(), b.layer("c").tensor("kernel").canonical()
        )
        np.testing.assert_array_equal(
            b.layer("c").tensor("kernel").numpy(), model.layers[0].kernel.numpy()
        )


def two_blocks_with_same_layer_names(K):
    """A model holding two sub-models whose layers share names (``s1/d`` and ``s2/d``)."""

    def block(name):
        return K.Sequential([K.Input((4,)), K.layers.Dense(4, name="d")], name=name)

    inputs = K.Input((4,))
    outer = K.Model(inputs, block("s2")(block("s1")(inputs)), name="f")
    model = K.Sequential([K.Input((4,)), outer, K.layers.Dense(2, name="head")])
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


# tf-keras cannot save this model: both weights are named d/kernel:0 and its writer collides.
@pytest.mark.parametrize("fmt", ["h5", "keras", "weights.h5"])
def test_same_layer_names_in_sibling_submodels(fmt, tmp_path):
    K = keras
    model = two_blocks_with_same_layer_names(K)
    path = tmp_path / f"twins.{fmt}"
    if fmt == "weights.h5":
        model.save_weights(path)
    else:
        model.save(path)
    outer = model.layers[0]
    with weightscope.load(path) as loaded:
        assert [layer.name for layer in loaded.layers] == ["f/s1/d", "f/s2/d", "head"]
        for block in ("s1", "s2"):
            layer = loaded.layer(f"f/{block}/d")
            assert [t.role for t in layer.tensors] == ["kernel", "bias"]
            np.testing.assert_array_equal(
                layer.tensor("kernel").numpy(),
                outer.get_layer(block).get_layer("d").kernel.numpy(),
            )
        assert loaded.params.total == model.count_params()


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.stem = keras.layers.Dense(3)
        self.blocks = [keras.layers.Dense(2), keras.layers.Dense(2)]
        self.scale = self.add_weight(shape=(4,), initializer="ones", name="scale")

    def call(self, x):
        return self.blocks[1](self.blocks[0](self.stem(x))) * self.scale[0]


@pytest.mark.parametrize("fmt", ["keras", "weights.h5"])
def test_subclassed_model_layers_and_model_variables(fmt, tmp_path):
    model = Subclassed()
    model(np.zeros((1, 5), dtype="float32"))
    path = tmp_path / f"sub.{fmt}"
    if fmt == "keras":
        model.save(path)
    else:
        model.save_weights(path)
    with weightscope.load(path) as loaded:
        by_shape = {layer.tensors[0].native_shape: layer for layer in loaded.layers}
        assert by_shape[(5, 3)].kind == "dense"
        assert by_shape[(3, 2)].kind == by_shape[(2, 2)].kind == "dense"
        model_vars = by_shape[(4,)]
        assert model_vars.kind == "unknown" and "model itself" in (model_vars.note or "")
        np.testing.assert_array_equal(model_vars.tensors[0].numpy(), model.scale.numpy())
        assert loaded.params.total == model.count_params()


@pytest.mark.parametrize(
    ("K", "fmt"),
    [(keras, "keras"), (keras, "h5"), (tf_keras, "h5")],
    ids=["keras3-keras", "keras3-h5", "tf_keras-h5"],
)
def test_unknown_classes_count_like_keras(K, fmt, tmp_path):
    """Layers without a canonical form keep Keras' trainable / non-trainable split."""
    model = K.Sequential(
        [
            K.Input((5, 2)),
            K.layers.LSTM(3, name="lstm"),
            K.layers.Dense(4, name="frozen_d"),
            K.layers.Dense(2, name="d"),
        ]
    )
    model.get_layer("frozen_d").trainable = False
    path = tmp_path / f"rnn_counts.{fmt}"
    model.save(path)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    non_trainable = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    with weightscope.load(path) as loaded:
        counts = loaded.params
        assert (counts.trainable, counts.non_trainable, counts.unknown) == (
            trainable,
            non_trainable,
            0,
        )


@pytest.mark.parametrize(
    ("K", "fmt"), [(keras, "weights.h5"), (tf_keras, "w.h5")], ids=["keras3", "tf_keras"]
)
def test_recurrent_and_attention_layers_without_config_are_not_dense(K, fmt, tmp_path):
    """Their 2-D and 3-D kernels must not pass for dense or conv kernels: attention stays
    unknown, an LSTM is known by its kernels' shapes (tests/test_keras_recurrent.py)."""
    inputs = K.Input((5, 4))
    x = K.layers.MultiHeadAttention(num_heads=2, key_dim=3)(inputs, inputs)
    x = K.layers.LSTM(3, name="lstm")(x)
    model = K.Model(inputs, K.layers.Dense(2, name="out")(x))
    path = tmp_path / f"attention.{fmt}"
    model.save_weights(path)
    with weightscope.load(path) as loaded:
        kinds = {layer.name: layer.kind for layer in loaded.layers}
        assert kinds.pop("out") == "dense"
        assert kinds.pop("lstm") == "lstm"
        assert kinds and set(kinds.values()) == {"unknown"}, kinds
        assert loaded.params.total == model.count_params()


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_chunked_threaded_statistics_inside_a_keras_zip(compression, tmp_path):
    """Statistics read in many slabs on several threads through the in-place zip member (or the
    temporary extraction) equal numpy's on the whole tensor."""
    model = keras.Sequential([keras.Input((300,)), keras.layers.Dense(200, name="wide")])
    rng = np.random.default_rng(7)
    kernel = rng.normal(0.1, 2.0, size=(300, 200)).astype("float32")
    kernel[::17, ::5] = 0.0
    model.layers[0].set_weights([kernel, np.zeros(200, "float32")])
    saved = tmp_path / "saved.keras"
    model.save(saved)
    path = tmp_path / "model.keras"
    with zipfile.ZipFile(saved) as src, zipfile.ZipFile(path, "w", compression) as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info.filename))
    with weightscope.load(path) as loaded:
        stats = loaded.layer("wide").tensor("kernel").stats(chunk_elements=1000)
    values = kernel.astype(np.float64)
    assert stats.mean == pytest.approx(values.mean(), rel=1e-6)
    assert stats.std == pytest.approx(values.std(), rel=1e-6)
    assert (stats.min, stats.max) == (values.min(), values.max())
    assert stats.zeros_fraction == np.mean(values == 0)
