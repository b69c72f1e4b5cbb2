"""Live Keras models and ``tf.Module`` objects, read by ``weightscope.load(obj)``.

For Keras 3 and for tf-keras, one small functional model holds a Conv1D (dilated), an LSTM, a
TimeDistributed Dense and a Bidirectional GRU on one input, a strided Conv2D, a DepthwiseConv2D
with a depth multiplier, a SeparableConv2D, a Conv2DTranspose and a BatchNormalization on another,
then a nested Sequential (Dense, BatchNormalization), a Dense layer called twice and a frozen
Dense. Its weights are random (batch-norm statistics too). weightscope must read the live model
exactly as it reads the same model saved to ``.keras`` and ``.h5`` (names, kinds, classes,
configs, roles, layouts, trainable flags, canonical arrays), count what Keras counts, follow
``layer.trainable = False`` at once, and its canonical tensors must reproduce each layer's own
output through ``reference``. A variable two layers hold (tied weights) is counted once. A plain
``tf.Module`` is read by attribute path, its dense-like and conv-like variables recognised and
reproducing ``tf.matmul`` and ``tf.nn.conv2d``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

keras3 = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")
tf = pytest.importorskip("tensorflow")
pytest.importorskip("torch")

import reference as ref  # noqa: E402  (needs torch)

import weightscope  # noqa: E402
from weightscope.formats.keras.live import is_keras_layer  # noqa: E402
from weightscope.formats.tensorflow.live import is_tf_module  # noqa: E402

ATOL = RTOL = 1e-5
BATCH = 2
FRAMEWORKS = {"keras3": keras3, "tf_keras": tf_keras}
FILES = {"keras3": (".keras", ".h5"), "tf_keras": (".h5", ".keras")}


def _build(keras: ModuleType) -> Any:
    layers = keras.layers
    sequence = keras.Input((10, 3), name="sequence")
    x = layers.Conv1D(4, 3, dilation_rate=2, name="conv1d")(sequence)  # (6, 4)
    x = layers.LSTM(5, return_sequences=True, name="lstm")(x)
    x = layers.TimeDistributed(layers.Dense(4), name="per_step")(x)
    x = layers.Bidirectional(layers.GRU(3, name="gru"), name="bigru")(x)  # (6,)
    image = keras.Input((8, 8, 3), name="image")
    y = layers.Conv2D(4, 3, strides=2, padding="same", name="conv2d")(image)  # (4, 4, 4)
    y = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")(y)
    y = layers.SeparableConv2D(5, 3, depth_multiplier=2, name="separable")(y)  # (2, 2, 5)
    y = layers.Conv2DTranspose(3, 3, strides=2, name="transpose")(y)  # (5, 5, 3)
    y = layers.BatchNormalization(epsilon=1e-3, name="bn")(y)
    y = layers.GlobalAveragePooling2D(name="pool")(y)
    z = layers.Concatenate(name="concat")([x, y])  # (9,)
    inner = keras.Sequential(
        [
            keras.Input((9,)),
            layers.Dense(7, name="inner_dense"),
            layers.BatchNormalization(name="inner_bn"),
        ],
        name="inner",
    )
    z = inner(z)
    shared = layers.Dense(7, name="shared")
    z = shared(shared(z))
    frozen = layers.Dense(2, name="frozen")
    model = keras.Model([sequence, image], frozen(z), name="live")
    frozen.trainable = False
    return model


def _randomise(model: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = rng.standard_normal(tuple(variable.shape)).astype(np.float32) * 0.5
        if "moving_variance" in variable.name or "moving_variance" in getattr(variable, "path", ""):
            value = np.abs(value) + np.float32(0.5)
        variable.assign(value)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, dict]]:
    """``models(framework)``: the live model and the files it was saved to."""
    built: dict[str, tuple[Any, dict[str, Path]]] = {}

    def get(framework: str) -> tuple[Any, dict[str, Path]]:
        if framework not in built:
            model = _build(FRAMEWORKS[framework])
            _randomise(model, zlib.crc32(framework.encode()))
            folder = tmp_path_factory.mktemp(framework)
            files = {}
            for suffix in FILES[framework]:
                files[suffix] = folder / f"model{suffix}"
                with warnings.catch_warnings():  # tf-keras: HDF5 is legacy
                    warnings.simplefilter("ignore")
                    model.save(files[suffix])
            built[framework] = (model, files)
        return built[framework]

    return get


def _size(variables: list[Any]) -> int:
    return sum(int(np.prod(tuple(v.shape))) for v in variables)


def _assert_same_layers(
    live: list[weightscope.Layer], saved: list[weightscope.Layer], configured: bool
) -> None:
    """Layer by layer the same names and arrays; ``configured`` (a file with the model's config):
    the same kinds, classes, configs, notes, roles, layouts, flags and canonical arrays too
    (without a config, the file's kinds are guesses that the live layers need not make)."""
    assert [layer.name for layer in live] == [layer.name for layer in saved]
    for got, want in zip(live, saved, strict=True):
        assert len(got.tensors) == len(want.tensors), got.name
        if not configured:
            for a, b in zip(got.tensors, want.tensors, strict=True):
                np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=f"{got.name}/{a.role}")
            continue
        assert (got.kind, got.groups, got.class_name, got.inferred, got.note) == (
            want.kind, want.groups, want.class_name, want.inferred, want.note,
        ), got.name  # fmt: skip
        assert _plain(got.config) == _plain(want.config), got.name
        for a, b in zip(got.tensors, want.tensors, strict=True):
            what = f"{got.name}/{a.role}"
            assert (a.role, a.part, a.native_shape, a.native_layout, a.groups) == (
                b.role, b.part, b.native_shape, b.native_layout, b.groups,
            ), what  # fmt: skip
            assert (a.dtype, a.counted, a.trainable) == (b.dtype, b.counted, b.trainable), what
            assert a.declared_init == b.declared_init, what
            values = a.canonical() if a.native_layout else a.numpy()
            stored = b.canonical() if b.native_layout else b.numpy()
            np.testing.assert_array_equal(values, stored, err_msg=what)


def _plain(config: Any) -> Any:
    """A config without the ``shared_object_id`` a ``.keras`` file adds (ids of the objects
    at saving time, shared between configs)."""
    if isinstance(config, dict):
        return {k: _plain(v) for k, v in config.items() if k != "shared_object_id"}
    if isinstance(config, list):
        return [_plain(v) for v in config]
    return config


# ---------------------------------------------------------------------------------------------
# Keras models


@pytest.mark.parametrize(
    ("framework", "suffix"),
    [(fw, suffix) for fw in FRAMEWORKS for suffix in FILES[fw]],
    ids=lambda v: str(v),
)
def test_live_model_reads_as_its_saved_files(models, framework: str, suffix: str) -> None:
    model, files = models(framework)
    live = weightscope.load(model)
    assert (live.framework, live.format, live.source) == ("keras", "live", None)
    with weightscope.load(files[suffix]) as saved:
        _assert_same_layers(live.layers, saved.layers, configured=True)
        assert live.params == saved.params
    kinds = {layer.name: str(layer.kind) for layer in live.layers}
    assert kinds == {
        "conv1d": "conv1d",
        "lstm": "lstm",
        "per_step": "dense",
        "bigru/forward_gru": "gru",
        "bigru/backward_gru": "gru",
        "conv2d": "conv2d",
        "depthwise": "depthwise_conv2d",
        "separable": "separable_conv2d",
        "transpose": "conv_transpose2d",
        "bn": "batch_norm",
        "inner/inner_dense": "dense",
        "inner/inner_bn": "batch_norm",
        "shared": "dense",
        "frozen": "dense",
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_totals_are_keras_counts(models, framework: str) -> None:
    model, _ = models(framework)
    counts = weightscope.load(model).params
    assert counts.total == model.count_params()
    assert counts.trainable == _size(model.trainable_weights)
    assert counts.non_trainable == _size(model.non_trainable_weights)
    assert counts.unknown == 0
    assert counts.non_trainable > 4 * 3  # the frozen layer and the statistics


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_trainable_flags_follow_the_model(models, framework: str) -> None:
    model, _ = models(framework)
    live = weightscope.load(model)
    assert {t.trainable for t in live.layer("frozen").tensors} == {False}
    bn = live.layer("bn")
    assert {t.role: t.trainable for t in bn.tensors} == {
        "gamma": True, "beta": True, "moving_mean": False, "moving_variance": False,
    }  # fmt: skip
    assert {t.trainable for t in live.layer("inner/inner_dense").tensors} == {True}
    inner = model.get_layer("inner")
    inner.trainable = False
    try:
        frozen = weightscope.load(model)
        for name in ("inner/inner_dense", "inner/inner_bn"):
            assert {t.trainable for t in frozen.layer(name).tensors} == {False}, name
        assert {t.trainable for t in frozen.layer("conv2d").tensors} == {True}
        assert frozen.params.trainable == _size(model.trainable_weights)
        assert frozen.params.non_trainable == _size(model.non_trainable_weights)
    finally:
        inner.trainable = True


def _canonical(layer: weightscope.Layer) -> dict[str, np.ndarray]:
    return {t.role: t.canonical().astype(np.float64) for t in layer.tensors}


def _conv_cases() -> dict[str, tuple[tuple[int, ...], Callable[..., np.ndarray]]]:
    """Layer name -> (its input shape, channels-last; the reference on channels-first input)."""
    return {
        "conv1d": ((10, 3), lambda x, t, g: ref.conv(x, t["kernel"], t["bias"], dilation=2)),
        "conv2d": (
            (8, 8, 3),
            lambda x, t, g: ref.conv(x, t["kernel"], t["bias"], stride=2, padding="same"),
        ),
        "depthwise": (
            (4, 4, 4),
            lambda x, t, g: ref.conv(x, t["kernel"], t["bias"], groups=g, padding="same"),
        ),
        "separable": (
            (4, 4, 8),
            lambda x, t, g: ref.separable_conv(
                x, t["depthwise_kernel"], t["pointwise_kernel"], t["bias"]
            ),
        ),
        "transpose": (
            (2, 2, 5),
            lambda x, t, g: ref.conv_transpose(x, t["kernel"], t["bias"], stride=2),
        ),
        "bn": (
            (5, 5, 3),
            lambda x, t, g: ref.batch_norm(
                x, t["moving_mean"], t["moving_variance"], t["gamma"], t["beta"], epsilon=1e-3
            ),
        ),
    }


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_canonical_tensors_reproduce_each_layer(models, framework: str) -> None:
    model, _ = models(framework)
    live = weightscope.load(model)
    rng = np.random.default_rng(7)
    for name, (shape, compute) in _conv_cases().items():
        x = rng.standard_normal((BATCH, *shape)).astype(np.float32)
        want = np.asarray(model.get_layer(name)(x, training=False))
        layer = live.layer(name)
        got = compute(ref.channels_first(x), _canonical(layer), layer.groups)
        np.testing.assert_allclose(ref.channels_last(got), want, atol=ATOL, rtol=RTOL, err_msg=name)
    dense_layers = {
        "shared": model.get_layer("shared"),
        "frozen": model.get_layer("frozen"),
        "inner/inner_dense": model.get_layer("inner").get_layer("inner_dense"),
        "per_step": model.get_layer("per_step").layer,
    }
    for name, keras_layer in dense_layers.items():
        tensors = _canonical(live.layer(name))
        x = rng.standard_normal((BATCH, tensors["kernel"].shape[1])).astype(np.float32)
        want = np.asarray(keras_layer(x))
        got = ref.dense(x, tensors["kernel"], tensors["bias"])
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=name)
    sequence = rng.standard_normal((BATCH, 6, 4)).astype(np.float32)
    want = np.asarray(model.get_layer("lstm")(sequence))
    got = ref.canonical_recurrent_layer("lstm", sequence.astype(np.float64), live.layer("lstm"))
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)
    bigru = model.get_layer("bigru")
    want = np.asarray(bigru(sequence))
    halves = [
        ref.canonical_recurrent_layer(
            "gru", sequence.astype(np.float64), live.layer(f"bigru/{direction}_gru"),
            reset_after=True, go_backwards=direction == "backward", return_sequences=False,
        )
        for direction in ("forward", "backward")
    ]  # fmt: skip
    np.testing.assert_allclose(np.concatenate(halves, axis=-1), want, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_values_are_read_when_asked(models, framework: str) -> None:
    """The tensors read the variables when asked: an assignment after loading shows."""
    model, _ = models(framework)
    live = weightscope.load(model)
    kernel = model.get_layer("frozen").kernel
    before = np.asarray(kernel.numpy()).copy()
    try:
        kernel.assign(before + 1)
        np.testing.assert_array_equal(live.layer("frozen").tensor("kernel").numpy(), before + 1)
    finally:
        kernel.assign(before)


def _subclassed(keras: ModuleType) -> Any:
    layers = keras.layers

    class Net(keras.Model):
        def __init__(self) -> None:
            super().__init__(name="net")
            self.conv = layers.Conv2D(3, 3, name="conv")
            self.norm = layers.BatchNormalization(name="norm")
            self.pool = layers.GlobalAveragePooling2D()
            self.blocks = [layers.Dense(4, name="first"), layers.Dense(2, name="second")]

        def call(self, x: Any) -> Any:
            x = self.pool(self.norm(self.conv(x)))
            for block in self.blocks:
                x = block(x)
            return x

    net = Net()
    net(np.zeros((1, 5, 5, 2), np.float32))
    _randomise(net, 11)
    return net


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_subclassed_model_reads_as_its_weights_file(framework: str, tmp_path: Path) -> None:
    """A subclassed model's files keep no config: the same layers, named as the file names them
    (Keras 3's store by attribute, ``blocks/first``; tf-keras' by layer name)."""
    net = _subclassed(FRAMEWORKS[framework])
    path = tmp_path / ("net.weights.h5" if framework == "keras3" else "net.h5")
    net.save_weights(path)
    live = weightscope.load(net)
    with weightscope.load(path) as saved:
        _assert_same_layers(live.layers, saved.layers, configured=False)
        assert live.params.total == saved.params.total == net.count_params()
    names = [layer.name for layer in live.layers]
    expected = ["conv", "norm", "first", "second"]  # tf-keras: the model's order
    if framework == "keras3":
        expected = ["blocks/first", "blocks/second", "conv", "norm"]
    assert names == expected
    kinds = {layer.name.rsplit("/", 1)[-1]: str(layer.kind) for layer in live.layers}
    assert kinds == {"conv": "conv2d", "norm": "batch_norm", "first": "dense", "second": "dense"}
    assert not any(layer.inferred for layer in live.layers)
    assert live.params.non_trainable == _size(net.non_trainable_weights) == 6


def _tied_model(keras: ModuleType) -> tuple[Any, Any]:
    """An encoder Dense and a layer whose kernel is the encoder's, transposed (tied weights)."""

    class Tied(keras.layers.Layer):
        def __init__(self, source: Any, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.source = source

        def build(self, input_shape: Any) -> None:
            self.tied = self.source.kernel
            units = int(self.source.kernel.shape[0])
            self.bias = self.add_weight(name="bias", shape=(units,), initializer="zeros")

        def call(self, x: Any) -> Any:
            return tf.matmul(x, self.tied, transpose_b=True) + self.bias

    inputs = keras.Input((4,))
    encoder = keras.layers.Dense(3, name="encoder")
    outputs = Tied(encoder, name="decoder")(encoder(inputs))
    return keras.Model(inputs, outputs), encoder


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_a_variable_two_layers_hold_is_counted_once(framework: str) -> None:
    model, encoder = _tied_model(FRAMEWORKS[framework])
    live = weightscope.load(model)
    assert live.params.total == model.count_params() == 4 * 3 + 3 + 4
    decoder = live.layer("decoder")
    shared = [t for t in decoder.tensors if t.shared_with is not None]
    assert {t.shared_with for t in shared} == {t.name for t in live.layer("encoder").tensors}
    assert not any(t.counted for t in shared)
    assert [t.role for t in decoder.tensors if t.counted] == ["decoder/bias"]
    np.testing.assert_array_equal(shared[0].numpy(), np.asarray(encoder.kernel.numpy()))


def test_a_layer_alone_reads_as_a_model() -> None:
    layer = keras3.layers.Conv2D(3, 2, name="alone")
    layer.build((None, 5, 5, 2))
    live = weightscope.load(layer)
    assert [(x.name, str(x.kind)) for x in live.layers] == [("alone", "conv2d")]
    assert live.params.total == layer.count_params()


@pytest.mark.slow  # a fresh interpreter
def test_telling_live_objects_apart_imports_no_tensorflow() -> None:
    """The Keras and TensorFlow readers are asked first about every live object: a PyTorch
    module read imports neither Keras nor TensorFlow."""
    pytest.importorskip("torch")
    code = (
        "import sys, torch, weightscope\n"
        "weightscope.load(torch.nn.Linear(2, 3))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('tensorflow', 'keras', 'tf_keras')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(weightscope.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_keras_objects_are_recognised_by_class_names() -> None:
    assert is_keras_layer(keras3.layers.Dense(2))
    assert is_keras_layer(tf_keras.layers.Dense(2))
    assert not is_keras_layer(tf.Module())
    assert is_tf_module(tf.Module())
    assert not is_tf_module(tf_keras.layers.Dense(2))  # a tf.Module, read as Keras
    assert not is_keras_layer(object()) and not is_tf_module(object())
    with pytest.raises(weightscope.WeightscopeError, match=r"keras\.Model or a tf\.Module"):
        weightscope.load(object())


# ---------------------------------------------------------------------------------------------
# tf.Module


class _Dense(tf.Module):
    def __init__(self, rng: np.random.Generator, inputs: int, outputs: int) -> None:
        super().__init__()
        self.w = tf.Variable(rng.standard_normal((inputs, outputs)).astype(np.float32))
        self.b = tf.Variable(rng.standard_normal(outputs).astype(np.float32))

    def __call__(self, x: Any) -> Any:
        return tf.matmul(x, self.w) + self.b


class _Conv(tf.Module):
    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.kernel = tf.Variable(rng.standard_normal((3, 2, 3, 4)).astype(np.float32))
        self.bias = tf.Variable(rng.standard_normal(4).astype(np.float32), trainable=False)

    def __call__(self, x: Any) -> Any:
        return tf.nn.conv2d(x, self.kernel, strides=2, padding="SAME") + self.bias


class _Net(tf.Module):
    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.conv = _Conv(rng)
        self.blocks = [_Dense(rng, 6, 5), _Dense(rng, 5, 2)]
        self.tied = self.blocks[0].w
        self.step = tf.Variable(0, trainable=False)


def test_tf_module_holding_a_keras_layer_lists_its_weights_once() -> None:
    """A tf-keras layer is a tf.Module too, and keeps its weights in private lists as well."""

    class Holder(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dense = tf_keras.layers.Dense(3)
            self.dense.build((None, 4))

    holder = Holder()
    live = weightscope.load(holder)
    assert [(layer.name, str(layer.kind)) for layer in live.layers] == [("dense", "dense")]
    assert live.params.total == _size(holder.variables) == 4 * 3 + 3
    assert all(t.counted for t in live.layers[0].tensors)
    assert "dense/_trainable_weights/0" in live.notes[0]


def test_tf_module_by_attribute_path(rng: np.random.Generator) -> None:
    net = _Net(rng)
    live = weightscope.load(net)
    assert (live.framework, live.format) == ("tensorflow", "live")
    kinds = {layer.name: (str(layer.kind), layer.class_name) for layer in live.layers}
    assert kinds == {
        "blocks/0": ("dense", "Dense"),
        "blocks/1": ("dense", "Dense"),
        "conv": ("conv2d", "Conv2D"),
        "(root)": ("unknown", None),
    }
    counts = live.params
    assert counts.total == _size(net.variables) == 3 * 2 * 3 * 4 + 4 + 6 * 5 + 5 + 5 * 2 + 2 + 1
    assert counts.trainable == _size(net.trainable_variables)
    assert counts.non_trainable == 4 + 1  # the conv's bias, the step counter
    tied = live.layer("(root)").tensor("tied")
    assert (tied.counted, tied.shared_with) == (False, "blocks/0/w")
    for layer in live.layers:
        for tensor in layer.tensors:
            module, *path = tensor.name.split("/")
            owner: Any = net if layer.name == "(root)" else getattr(net, module)
            for part in path[:-1] if layer.name != "(root)" else ():
                owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
            attribute = tensor.name.rsplit("/", 1)[-1]
            variable = getattr(owner, attribute)
            np.testing.assert_array_equal(tensor.numpy(), variable.numpy())
            assert tensor.trainable is bool(variable.trainable), tensor.name
    x = rng.standard_normal((BATCH, 6)).astype(np.float32)
    for index, block in enumerate(net.blocks):
        tensors = _canonical(live.layer(f"blocks/{index}"))
        want = block(x).numpy()
        got = ref.dense(x, tensors["kernel"], tensors["bias"])
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)
        x = want
    image = rng.standard_normal((BATCH, 7, 6, 3)).astype(np.float32)
    tensors = _canonical(live.layer("conv"))
    got = ref.conv(ref.channels_first(image), tensors["kernel"], stride=2, padding="same")
    got = ref.channels_last(got) + tensors["bias"]
    np.testing.assert_allclose(got, net.conv(image).numpy(), atol=ATOL, rtol=RTOL)
