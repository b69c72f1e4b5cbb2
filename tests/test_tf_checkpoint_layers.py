"""Every conv kind, dense and batch norm, built in Keras 3 and in tf-keras, saved as TensorFlow
checkpoints (``tf.train.Checkpoint.write``, tf-keras ``save_weights`` in TF format, a TF1
``Saver``), read by weightscope and recomputed from its canonical tensors against each Keras
layer's own output. A checkpoint records no classes: the kind comes from the layer name the
variables were saved under (the object graph's ``full_name``, or the path of a TF1 or
subclassed-model checkpoint) or from the shapes; where neither can tell, the note says so."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
tf_keras = pytest.importorskip("tf_keras")
keras = pytest.importorskip("keras")
pytest.importorskip("torch")

import reference as ref  # noqa: E402

import weightscope  # noqa: E402

ATOL = RTOL = 1e-5

FAMILIES: dict[str, tuple[tuple[int, ...], list[tuple[str, dict[str, Any]]]]] = {
    # input shape (channels last), then (class, arguments) of each layer in order
    "one": (
        (9, 4),
        [
            ("Conv1D", {"filters": 6, "kernel_size": 3}),
            ("SeparableConv1D", {"filters": 5, "kernel_size": 3, "depth_multiplier": 2}),
            ("Dense", {"units": 3}),
        ],
    ),
    "two": (
        (9, 9, 4),
        [
            ("Conv2D", {"filters": 6, "kernel_size": 3, "padding": "same"}),
            ("Conv2D", {"filters": 6, "kernel_size": 3, "groups": 3}),
            ("DepthwiseConv2D", {"kernel_size": 3, "depth_multiplier": 2}),
            ("SeparableConv2D", {"filters": 5, "kernel_size": 2, "depth_multiplier": 3}),
            ("Conv2DTranspose", {"filters": 4, "kernel_size": 3, "strides": 2}),
            ("BatchNormalization", {}),
        ],
    ),
    "three": (
        (6, 6, 6, 2),
        [
            ("Conv3D", {"filters": 3, "kernel_size": 2}),
            ("Conv3DTranspose", {"filters": 2, "kernel_size": 2, "strides": 2}),
        ],
    ),
}


def _build(api: Any) -> dict[str, Any]:
    models = {}
    for family, (shape, specs) in FAMILIES.items():
        layers = [getattr(api.layers, cls)(**kwargs) for cls, kwargs in specs]
        model = api.Sequential([api.Input(shape), *layers])
        rng = np.random.default_rng(len(family))
        for weight in model.weights:  # biases and statistics away from their initial values
            values = rng.standard_normal(weight.shape) * 0.5
            if "variance" in getattr(weight, "path", weight.name):
                values = np.abs(values) + 0.5
            weight.assign(values.astype(np.float32))
        models[family] = model
    return models


@pytest.fixture(scope="module", params=["keras3", "tf_keras"])
def saved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    api = keras if request.param == "keras3" else tf_keras
    api.utils.set_random_seed(7)
    models = _build(api)
    folder = tmp_path_factory.mktemp(request.param)
    prefix = tf.train.Checkpoint(**models).write(str(folder / "ckpt"))
    return request.param, models, prefix


def _out(value: Any) -> np.ndarray:
    return np.asarray(value).astype(np.float64)


def _recompute(cls: str, layer: Any, x: np.ndarray, tensors: dict[str, np.ndarray]) -> np.ndarray:
    """The layer's output from weightscope's canonical tensors (channels last, like Keras)."""
    cfg = layer.get_config()
    bias = tensors.get("bias")
    cf = ref.channels_first(x)
    if cls == "Dense":
        return ref.dense(x, tensors["kernel"], bias)
    if cls == "BatchNormalization":
        out = ref.batch_norm(
            cf,
            tensors["moving_mean"],
            tensors["moving_variance"],
            tensors["gamma"],
            tensors["beta"],
            epsilon=cfg["epsilon"],
        )
    elif cls.startswith("Separable"):
        out = ref.separable_conv(cf, tensors["depthwise_kernel"], tensors["pointwise_kernel"], bias)
    elif cls.startswith("Depthwise"):
        out = ref.conv(cf, tensors["kernel"], bias, groups=cf.shape[1])
    elif cls.endswith("Transpose"):
        out = ref.conv_transpose(
            cf, tensors["kernel"], bias, stride=cfg["strides"], padding=cfg["padding"]
        )
    else:
        out = ref.conv(cf, tensors["kernel"], bias, groups=cfg["groups"], padding=cfg["padding"])
    return ref.channels_last(out)


KINDS = {
    "Conv1D": "conv1d", "SeparableConv1D": "separable_conv1d", "Dense": "dense",
    "Conv2D": "conv2d", "DepthwiseConv2D": "depthwise_conv2d",
    "SeparableConv2D": "separable_conv2d", "Conv2DTranspose": "conv_transpose2d",
    "BatchNormalization": "batch_norm", "Conv3D": "conv3d", "Conv3DTranspose": "conv_transpose3d",
}  # fmt: skip


def test_every_kind_recomputes_its_keras_layer(saved: Any) -> None:
    """Each layer is found by its kind (from the default names Keras gave the layers) and its
    canonical tensors give the Keras layer's own output; the totals are Keras' counts."""
    flavour, models, prefix = saved
    with weightscope.load(prefix) as model:
        assert model.params.total == sum(m.count_params() for m in models.values())
        non_trainable = sum(
            int(np.prod(w.shape)) for m in models.values() for w in m.non_trainable_weights
        )
        assert model.params.non_trainable == non_trainable
        for family, keras_model in models.items():
            found = sorted(
                (layer for layer in model.layers if layer.name.startswith(family + "/")),
                key=lambda layer: int(layer.name.rsplit("/", 1)[-1].rsplit("-", 1)[-1]),
            )
            specs = FAMILIES[family][1]
            assert [layer.kind.value for layer in found] == [KINDS[cls] for cls, _ in specs]
            x = np.random.default_rng(3).standard_normal((2, *FAMILIES[family][0]))
            x = x.astype(np.float32)
            for (cls, _), keras_layer, layer in zip(specs, keras_model.layers, found, strict=True):
                assert layer.inferred and layer.framework == "keras"
                tensors = {t.role: t.canonical() for t in layer.tensors}
                expected = _out(keras_layer(x))
                mine = _recompute(cls, keras_layer, x, tensors)
                np.testing.assert_allclose(
                    mine, expected, rtol=RTOL, atol=ATOL, err_msg=f"{flavour} {cls}"
                )
                x = expected.astype(np.float32)


def test_grouped_conv_note_says_groups_are_not_recorded(saved: Any) -> None:
    _, _, prefix = saved
    with weightscope.load(prefix) as model:
        notes = [layer.note or "" for layer in model.layers if layer.kind.value == "conv2d"]
        assert notes and all("groups are not recorded in a checkpoint" in n for n in notes)


def _user_named(api: Any, folder: Path) -> tuple[Any, str]:
    """Layers named by a user (no class in the name), whose shapes fit two kinds: a transposed
    conv with as many input as output channels, a plain conv alike, and in Keras 3 a depthwise
    conv of multiplier 1 (its kernel named ``kernel``, like a transposed conv's)."""
    inputs = api.Input((6, 6, 4))
    up = api.layers.Conv2DTranspose(4, 3, name="up")(inputs)
    same = api.layers.Conv2D(4, 3, name="same")(up)
    per_channel = api.layers.DepthwiseConv2D(3, name="per_channel")(same)
    model = api.Model(inputs, per_channel)
    return model, tf.train.Checkpoint(model=model).write(str(folder / "named"))


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_what_a_checkpoint_cannot_tell_is_said(flavour: str, tmp_path: Path) -> None:
    api = keras if flavour == "keras3" else tf_keras
    keras_model, prefix = _user_named(api, tmp_path)
    with weightscope.load(prefix) as model:
        layers = [layer for layer in model.layers if layer.name.startswith("model/")]
        assert model.params.total == keras_model.count_params()
    up, same, per_channel = layers
    # square in channels: read as a plain conv, and the note says a transposed one fits too
    assert up.kind.value == "conv2d"
    assert "conv or transposed conv: not recorded in a checkpoint" in (up.note or "")
    assert same.kind.value == "conv2d"
    assert "conv or transposed conv: not recorded" in (same.note or "")
    if flavour == "keras3":  # kernel (3, 3, 4, 1), bias (4): a transposed conv's shapes too
        assert per_channel.kind.value == "conv_transpose2d"
        assert "depthwise conv of multiplier 1" in (per_channel.note or "")
    else:  # tf-keras names it depthwise_kernel
        assert per_channel.kind.value == "depthwise_conv2d"


@pytest.mark.parametrize("flavour", ["keras3", "tf_keras"])
def test_default_names_settle_what_shapes_cannot(flavour: str, tmp_path: Path) -> None:
    """The same layers under Keras' default names: the names the variables were saved under
    say the class, and the transposed conv square in channels recomputes as one."""
    api = keras if flavour == "keras3" else tf_keras
    api.utils.set_random_seed(2)
    inputs = api.Input((6, 6, 4))
    up = api.layers.Conv2DTranspose(4, 3)
    per_channel = api.layers.DepthwiseConv2D(3)
    keras_model = api.Model(inputs, per_channel(up(inputs)))
    prefix = tf.train.Checkpoint(model=keras_model).write(str(tmp_path / "default"))
    x = np.random.default_rng(4).standard_normal((1, 6, 6, 4)).astype(np.float32)
    with weightscope.load(prefix) as model:
        first, second = (layer for layer in model.layers if layer.name.startswith("model/"))
        assert first.kind.value == "conv_transpose2d"
        assert "from the name 'conv2d_transpose" in (first.note or "")
        assert second.kind.value == "depthwise_conv2d"
        tensors = {t.role: t.canonical() for t in first.tensors}
    mine = ref.channels_last(ref.conv_transpose(ref.channels_first(x), tensors["kernel"],
                                                tensors["bias"]))  # fmt: skip
    np.testing.assert_allclose(mine, _out(up(x)), rtol=RTOL, atol=ATOL)


def test_tf_keras_save_weights_of_a_subclassed_model(tmp_path: Path) -> None:
    """tf-keras ``save_weights`` (TF format) of a subclassed model keys each layer by its
    attribute (``head``, no class in it); the name its variables were saved under
    (``conv2d_transpose/kernel``) says it is a transposed conv, which its shapes (3 channels
    in and out) cannot."""
    tf_keras.utils.set_random_seed(5)

    class Net(tf_keras.Model):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.head = tf_keras.layers.Conv2DTranspose(3, 3)
            self.fc = tf_keras.layers.Dense(2)

        def call(self, x: Any) -> Any:
            return self.fc(self.head(x))

    net = Net()
    x = np.random.default_rng(1).standard_normal((1, 5, 5, 3)).astype(np.float32)
    net(x)
    net.save_weights(str(tmp_path / "sub" / "w"), save_format="tf")
    with weightscope.load(tmp_path / "sub" / "w") as model:
        assert {layer.name: layer.kind.value for layer in model.layers} == {
            "head": "conv_transpose2d", "fc": "dense",
        }  # fmt: skip
        assert model.params.total == net.count_params()
        head = {t.role: t.canonical() for t in model.layer("head").tensors}
    mine = ref.conv_transpose(ref.channels_first(x), head["kernel"], head["bias"])
    np.testing.assert_allclose(ref.channels_last(mine), _out(net.head(x)), rtol=RTOL, atol=ATOL)


def test_tf1_saver_names_carry_the_class(tmp_path: Path) -> None:
    """A TF1 ``Saver`` checkpoint has no object graph: the scope in each variable's path is
    the only name, and ``conv2d_transpose`` says what its shapes cannot."""
    tf1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        tf1.get_variable("conv2d_transpose/kernel", (3, 3, 4, 4))
        tf1.get_variable("conv2d_transpose/bias", (4,))
        tf1.get_variable("block/kernel", (3, 3, 4, 4))
        with tf1.Session() as session:
            session.run(tf1.global_variables_initializer())
            prefix = tf1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
    with weightscope.load(prefix) as model:
        assert model.layer("conv2d_transpose").kind.value == "conv_transpose2d"
        block = model.layer("block")
        assert block.kind.value == "conv2d"
        assert "conv or transposed conv: not recorded" in (block.note or "")


def test_tf_keras_save_weights_of_every_kind(tmp_path: Path) -> None:
    """The same layers saved by tf-keras ``save_weights`` in TF format (keys
    ``layer_with_weights-N/...`` at the root): the same kinds, canonical tensors and totals."""
    tf_keras.utils.set_random_seed(8)
    models = _build(tf_keras)
    x = np.random.default_rng(9).standard_normal((2, *FAMILIES["two"][0])).astype(np.float32)
    keras_model = models["two"]
    keras_model.save_weights(str(tmp_path / "w" / "two"), save_format="tf")
    with weightscope.load(tmp_path / "w" / "two") as model:
        assert model.params.total == keras_model.count_params()
        specs = FAMILIES["two"][1]
        found = [model.layer(f"layer_with_weights-{i}") for i in range(len(specs))]
        assert [layer.kind.value for layer in found] == [KINDS[cls] for cls, _ in specs]
        for (cls, _), keras_layer, layer in zip(specs, keras_model.layers, found, strict=True):
            tensors = {t.role: t.canonical() for t in layer.tensors}
            expected = _out(keras_layer(x))
            mine = _recompute(cls, keras_layer, x, tensors)
            np.testing.assert_allclose(mine, expected, rtol=RTOL, atol=ATOL, err_msg=cls)
            x = expected.astype(np.float32)
