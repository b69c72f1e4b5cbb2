"""Keras wrappers, unwrapped: a ``TimeDistributed`` is the layer it applies (its kind, layouts
and declared initializer) and a ``Bidirectional`` its forward and backward layers, in every Keras
file kind.

For every case, in Keras 3 and in Keras 2 (tf_keras), a model of one wrapper gets random weights,
computes its output on a random input, and is saved in each file kind the framework writes
(Keras 3: ``.h5``, ``.keras``, ``.weights.h5``; Keras 2: ``.h5`` and weights-only ``.h5``, and
both rewritten with the names Keras 2.0 gave, which no Keras here writes). weightscope must
report the unwrapped layers with their names, kinds, roles and the framework's own values, count
the parameters as ``count_params()`` does, and its tensors must reproduce the output through
``reference``: canonical tensors for every layer (recurrent ones through
``reference.canonical_recurrent``, which knows nothing of Keras' layouts).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import h5py
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")
pytest.importorskip("torch")

import reference as ref  # noqa: E402  (needs torch)
from cli_runner import run_cli  # noqa: E402
from framework_cache import build_cached  # noqa: E402

import weightscope  # noqa: E402
from weightscope.model import PartSource  # noqa: E402

ATOL = RTOL = 1e-5
STATISTICS = ("moving_mean", "moving_variance")
BATCH = 2

# ---------------------------------------------------------------------------------------------
# cases

Tensors = dict[str, np.ndarray]
Reference = Callable[[np.ndarray, list[Tensors]], np.ndarray]
"""(input, channels-last; each unwrapped layer's tensors by role) -> the model's output."""


def _per_step(compute: Callable[[np.ndarray, Tensors], np.ndarray]) -> Reference:
    """A TimeDistributed layer: ``compute`` (channels-first) at every time step."""

    def run(x: np.ndarray, layers: list[Tensors]) -> np.ndarray:
        (t,) = layers

        def step(frames: np.ndarray) -> np.ndarray:
            return ref.channels_last(compute(ref.channels_first(frames), t))

        return ref.time_distributed(x, step)

    return run


def _conv(**geometry: Any) -> Reference:
    return _per_step(lambda x, t: ref.conv(x, t["kernel"], t.get("bias"), **geometry))


def _depthwise(**geometry: Any) -> Reference:
    return _per_step(
        lambda x, t: ref.conv(x, t["kernel"], t.get("bias"), groups=x.shape[1], **geometry)
    )


def _batch_norm(epsilon: float) -> Reference:
    return _per_step(
        lambda x, t: ref.batch_norm(
            x, t["moving_mean"], t["moving_variance"], t.get("gamma"), t.get("beta"),
            epsilon=epsilon,
        )
    )  # fmt: skip


def _dense(x: np.ndarray, layers: list[Tensors]) -> np.ndarray:
    (t,) = layers
    return ref.dense(x, t["kernel"], t.get("bias"))


def _rnn(kind: str, t: Tensors, x: np.ndarray, **options: Any) -> np.ndarray:
    """One recurrent layer (a GRU resets after its recurrent product: Keras' default) from its
    canonical tensors."""
    return ref.canonical_recurrent(
        kind, x, t["kernel"], t["recurrent_kernel"], t.get("bias"), t.get("recurrent_bias"),
        **options,
    )  # fmt: skip


def _bidirectional(
    forward: str,
    backward: str | None = None,
    *,
    sequences: bool = False,
    merge_mode: str = "concat",
) -> Reference:
    """A Bidirectional of a recurrent layer of kind ``forward`` (and ``backward``, where the
    model was given another backward layer)."""

    def run(x: np.ndarray, layers: list[Tensors]) -> np.ndarray:
        f, b = layers
        options = {"return_sequences": sequences}
        y = _rnn(forward, f, x, **options)
        y_rev = _rnn(backward or forward, b, x, go_backwards=True, **options)
        return ref.bidirectional(y, y_rev, merge_mode=merge_mode, sequences=sequences)

    return run


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[ModuleType], Any] = field(repr=False)
    """The wrapper layer, from the framework's module (keras or tf_keras)."""
    input_shape: tuple[int, ...]
    """Without the batch axis."""
    layers: tuple[tuple[str, str], ...]
    """(name, kind label) of each layer weightscope unwraps the wrapper into."""
    reference: Reference = field(repr=False)
    keras20: bool = True
    """Keras 2.0 had this wrapper: also checked with the names Keras 2.0 wrote."""
    keras3_layers: tuple[tuple[str, str], ...] | None = None
    """Where Keras 3 names them otherwise."""
    frozen: bool = False

    def expected(self, framework: str) -> tuple[tuple[str, str], ...]:
        return self.keras3_layers if framework == "keras3" and self.keras3_layers else self.layers


TD = "time_distributed"
BI = "bidirectional"

CASES = [
    Case(
        "td_dense",
        lambda K: K.layers.TimeDistributed(K.layers.Dense(5, name="dense"), name=TD),
        (4, 7),
        ((TD, "dense"),),
        _dense,
    ),
    Case(
        "td_dense_frozen",
        lambda K: K.layers.TimeDistributed(K.layers.Dense(3, name="dense"), name=TD),
        (3, 4),
        ((TD, "dense"),),
        _dense,
        frozen=True,
    ),
    Case(
        "td_conv2d_stride2_same",
        lambda K: K.layers.TimeDistributed(
            K.layers.Conv2D(4, (3, 2), strides=2, padding="same", name="conv2d"), name=TD
        ),
        (3, 7, 6, 2),
        ((TD, "conv2d"),),
        _conv(stride=2, padding="same"),
    ),
    Case(
        "td_conv1d_dilation2",
        lambda K: K.layers.TimeDistributed(
            K.layers.Conv1D(3, 3, dilation_rate=2, name="conv1d"), name=TD
        ),
        (3, 9, 2),
        ((TD, "conv1d"),),
        _conv(dilation=2),
    ),
    Case(
        "td_depthwise_conv2d_m2",
        lambda K: K.layers.TimeDistributed(
            K.layers.DepthwiseConv2D((3, 2), depth_multiplier=2, name="depthwise_conv2d"),
            name=TD,
        ),
        (2, 6, 5, 3),
        ((TD, "depthwise_conv2d"),),
        _depthwise(),
    ),
    Case(
        "td_batch_norm",
        lambda K: K.layers.TimeDistributed(
            K.layers.BatchNormalization(epsilon=0.01, name="batch_normalization"), name=TD
        ),
        (3, 5, 4),
        ((TD, "batch_norm"),),
        _batch_norm(0.01),
    ),
    Case(
        "td_td_dense",
        lambda K: K.layers.TimeDistributed(
            K.layers.TimeDistributed(K.layers.Dense(2, name="dense"), name=f"{TD}_1"), name=TD
        ),
        (2, 3, 4),
        ((TD, "dense"),),
        _dense,
        keras20=False,
    ),
    Case(
        "bi_lstm_sequences",
        lambda K: K.layers.Bidirectional(
            K.layers.LSTM(3, return_sequences=True, name="lstm"), name=BI
        ),
        (5, 4),
        ((f"{BI}/forward_lstm", "lstm"), (f"{BI}/backward_lstm", "lstm")),
        _bidirectional("lstm", sequences=True),
    ),
    Case(
        "bi_gru_ave",
        lambda K: K.layers.Bidirectional(K.layers.GRU(2, name="gru"), merge_mode="ave", name=BI),
        (4, 3),
        ((f"{BI}/forward_gru", "gru"), (f"{BI}/backward_gru", "gru")),
        _bidirectional("gru", merge_mode="ave"),
    ),
    Case(
        "bi_simple_rnn_no_bias_sum",
        lambda K: K.layers.Bidirectional(
            K.layers.SimpleRNN(3, use_bias=False, return_sequences=True, name="simple_rnn"),
            merge_mode="sum",
            name=BI,
        ),
        (4, 2),
        ((f"{BI}/forward_simple_rnn", "simple_rnn"), (f"{BI}/backward_simple_rnn", "simple_rnn")),
        _bidirectional("simple_rnn", sequences=True, merge_mode="sum"),
    ),
    Case(
        "td_bi_lstm",
        lambda K: K.layers.TimeDistributed(
            K.layers.Bidirectional(K.layers.LSTM(2, name="lstm"), name=BI), name=TD
        ),
        (3, 4, 5),
        ((f"{TD}/forward_lstm", "lstm"), (f"{TD}/backward_lstm", "lstm")),
        lambda x, layers: ref.time_distributed(x, lambda s: _bidirectional("lstm")(s, layers)),
        keras20=False,
    ),
    Case(
        "bi_lstm_given_gru_backward",
        lambda K: K.layers.Bidirectional(
            K.layers.LSTM(2, return_sequences=True, name="lstm"),
            backward_layer=K.layers.GRU(2, go_backwards=True, return_sequences=True, name="gru"),
            name=BI,
        ),
        (4, 3),
        ((f"{BI}/forward_lstm", "lstm"), (f"{BI}/backward_gru", "gru")),
        _bidirectional("lstm", "gru", sequences=True),
        keras20=False,  # backward_layer came with Keras 2.3
        keras3_layers=((f"{BI}/forward_lstm", "lstm"), (f"{BI}/gru", "gru")),
    ),
]
CASES_BY_ID = {case.id: case for case in CASES}

# ---------------------------------------------------------------------------------------------
# file kinds


@dataclass(frozen=True)
class Format:
    id: str
    filename: str
    weights_only: bool
    weightscope_format: str
    keras20: bool = False
    """Rewritten from the tf_keras file with Keras 2.0's names."""


FORMATS: dict[str, list[Format]] = {
    "keras3": [
        Format("h5", "model.h5", False, "keras-h5"),
        Format("keras", "model.keras", False, "keras-v3"),
        Format("weights_h5", "model.weights.h5", True, "keras-weights-h5"),
    ],
    "tf_keras": [
        Format("h5", "model.h5", False, "keras-h5"),
        Format("weights_h5", "weights.h5", True, "keras-h5-weights"),
        Format("keras20_h5", "keras20.h5", False, "keras-h5", keras20=True),
        Format("keras20_weights_h5", "keras20_weights.h5", True, "keras-h5-weights", keras20=True),
    ],
}


def _framework(name: str) -> ModuleType:
    return keras if name == "keras3" else tf_keras


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def to_keras_20_names(source: Path, target: Path) -> None:
    """Copy a tf-keras ``.h5`` with the names Keras 2.0 wrote: every weight in its layer's scope
    alone (``time_distributed/kernel:0``), and a Bidirectional's backward weights, built in the
    same scope as the forward ones, uniquified by TensorFlow (``bidirectional/kernel_1:0``).
    No Keras 2.0 runs on this Python, so its names are reproduced on a real file."""
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as h5:
        root = h5.get("model_weights", h5)
        for name in map(_text, root.attrs["layer_names"]):
            group = root[name]
            renamed = []
            used: set[str] = set()
            for weight in map(_text, group.attrs["weight_names"]):
                short = weight.rsplit("/", 1)[-1].split(":", 1)[0]
                unique = short if short not in used else f"{short}_1"
                used.add(short)
                renamed.append(f"{name}/{unique}:0")
                group.move(weight, f"__{len(renamed)}")
            for index, new in enumerate(renamed, 1):
                if new in group:
                    del group[new]
                group.move(f"__{index}", new)
            group.attrs["weight_names"] = np.array([n.encode() for n in renamed])


# ---------------------------------------------------------------------------------------------
# one model per (framework, case), saved once in every file kind


@dataclass
class Built:
    case: Case
    x: np.ndarray
    y: np.ndarray
    """The framework's own output."""
    weights: list[tuple[str, np.ndarray, bool]]
    """(short name, value, trainable) of the wrapper's variables, in Keras' order."""
    count_params: int
    classes: list[str]
    """The class of each layer the wrapper holds, wrappers within it unwrapped."""
    files: dict[str, Path]


def _save(framework: str, case: Case, directory: Path) -> None:
    module = _framework(framework)
    layer = case.build(module)
    inputs = module.Input(shape=case.input_shape)
    model = module.Model(inputs, layer(inputs))
    if case.frozen:
        layer.trainable = False

    rng = np.random.default_rng(zlib.crc32(f"{framework}/{case.id}".encode()))
    names = [(v.path if hasattr(v, "path") else v.name).rsplit("/", 1)[-1] for v in layer.weights]
    names = [name.split(":", 1)[0] for name in names]
    values = []
    for name, current in zip(names, layer.get_weights(), strict=True):
        value = rng.standard_normal(current.shape).astype(np.float32)
        if name == "moving_variance":
            value = np.abs(value) + np.float32(0.5)
        values.append(value)
    layer.set_weights(values)
    stored = layer.get_weights()
    for value, got in zip(values, stored, strict=True):
        np.testing.assert_array_equal(got, value)  # the weights really were set

    x = rng.standard_normal((BATCH, *case.input_shape)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    if framework == "keras3":
        model.save(directory / "model.h5")
        model.save(directory / "model.keras")
        model.save_weights(directory / "model.weights.h5")
    else:
        model.save(directory / "model.h5", save_format="h5")
        model.save_weights(directory / "weights.h5", save_format="h5")
        to_keras_20_names(directory / "model.h5", directory / "keras20.h5")
        to_keras_20_names(directory / "weights.h5", directory / "keras20_weights.h5")
    arrays = {f"w{i}": np.asarray(value) for i, value in enumerate(stored)}
    np.savez(directory / "built.npz", x=x, y=y, **arrays)
    saved = {
        "names": names,
        "trainable": [any(v is t for t in layer.trainable_weights) for v in layer.weights],
        "params": model.count_params(),
        "classes": _held_classes(layer),
    }
    (directory / "built.json").write_text(json.dumps(saved))


def _held_classes(layer: Any) -> list[str]:
    if hasattr(layer, "forward_layer"):
        return [*_held_classes(layer.forward_layer), *_held_classes(layer.backward_layer)]
    if hasattr(layer, "layer"):
        return _held_classes(layer.layer)
    return [type(layer).__name__]


def _build(framework: str, case: Case, directory: Path) -> Built:
    def save(folder: Path) -> None:
        _save(framework, case, folder)

    build_cached(directory, save, framework, case.id)
    saved = json.loads((directory / "built.json").read_text())
    with np.load(directory / "built.npz", allow_pickle=False) as arrays:
        x, y = arrays["x"], arrays["y"]
        values = [arrays[f"w{i}"] for i in range(len(saved["names"]))]
    weights = list(zip(saved["names"], values, saved["trainable"], strict=True))
    files = {fmt.id: directory / fmt.filename for fmt in FORMATS[framework]}
    return Built(case, x, y, weights, saved["params"], saved["classes"], files)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Built]:
    """``built(framework, case_id)``: the model of one case, built and saved on first use."""
    cache: dict[tuple[str, str], Built] = {}
    root = tmp_path_factory.mktemp("keras_wrappers")

    def get(framework: str, case_id: str) -> Built:
        key = (framework, case_id)
        if key not in cache:
            cache[key] = _build(framework, CASES_BY_ID[case_id], root / framework / case_id)
        return cache[key]

    return get


PARAMS = [
    pytest.param(framework, case.id, fmt, id=f"{framework}-{case.id}-{fmt.id}")
    for framework in FORMATS
    for case in CASES
    for fmt in FORMATS[framework]
    if case.keras20 or not fmt.keras20
]


def _canonical(layer: weightscope.Layer) -> Tensors:
    """A layer's canonical tensors by role (every layer here has a known kind)."""
    assert not layer.kind.is_unknown, layer.name
    tensors = {}
    for tensor in layer.tensors:
        assert tensor.native_layout is not None, tensor.role
        array = tensor.canonical()
        assert array.shape == tensor.canonical_shape, tensor.role
        tensors[tensor.role] = array.astype(np.float64)
    return tensors


def _stored_tensors(model: weightscope.Model) -> list[tuple[weightscope.Tensor, np.ndarray]]:
    """Each stored tensor of the model (the first of its parts, where one holds several, as a
    GRU's input and recurrent biases) and its values, put back together from its parts."""
    stored: dict[tuple[str, str], tuple[weightscope.Tensor, np.ndarray]] = {}
    for layer in model.layers:
        for tensor in layer.tensors:
            key = (layer.name, tensor.name)
            if tensor.part is None:
                stored[key] = (tensor, tensor.numpy())
                continue
            assert isinstance(tensor.source, PartSource)
            whole = tensor.source.base.read()
            _, values = stored.setdefault(key, (tensor, np.full_like(whole, np.nan)))
            values[tensor.source.index] = tensor.numpy()
    return list(stored.values())


def _role(name: str) -> str:
    """Keras 2 names a DepthwiseConv kernel ``depthwise_kernel``; weightscope's role is
    ``kernel``."""
    return "kernel" if name == "depthwise_kernel" else name


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize(("framework", "case_id", "fmt"), PARAMS)
def test_wrapper_is_unwrapped(built: Callable[[str, str], Built], framework, case_id, fmt) -> None:
    item = built(framework, case_id)
    case = item.case
    with weightscope.load(item.files[fmt.id]) as model:
        assert model.format == fmt.weightscope_format
        found = tuple((layer.name, layer.kind_label) for layer in model.layers)
        assert found == case.expected(framework)
        assert [layer.class_name for layer in model.layers] == item.classes
        tensors = _stored_tensors(model)
        assert [t.role for t, _ in tensors] == [_role(name) for name, _, _ in item.weights]
        for (tensor, stored), (name, value, trainable) in zip(tensors, item.weights, strict=True):
            np.testing.assert_array_equal(stored, value, err_msg=name)
            if fmt.weights_only:  # the file cannot say, but for moving statistics
                assert tensor.trainable is (False if name in STATISTICS else None), name
            else:
                assert tensor.trainable is trainable, name
        for layer in model.layers:
            assert layer.inferred is fmt.weights_only
            assert layer.note and ("TimeDistributed" in layer.note or "Bidirectional" in layer.note)
        counts = model.params
        assert counts.total == item.count_params
        frozen = sum(
            value.size
            for name, value, trainable in item.weights
            if name in STATISTICS or not (trainable or fmt.weights_only)
        )
        assert counts.non_trainable == frozen


@pytest.mark.parametrize(("framework", "case_id", "fmt"), PARAMS)
def test_unwrapped_tensors_reproduce_framework_output(
    built: Callable[[str, str], Built], framework, case_id, fmt
) -> None:
    item = built(framework, case_id)
    with weightscope.load(item.files[fmt.id]) as model:
        kinds = [kind for _, kind in item.case.expected(framework)]
        assert [layer.kind_label for layer in model.layers] == kinds
        layers = [_canonical(layer) for layer in model.layers]
    expected = item.case.reference(item.x.astype(np.float64), layers)
    assert expected.shape == item.y.shape
    np.testing.assert_allclose(expected, item.y, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# wrappers inside a nested model, what cannot be split, and the commands


def _save_all(model: Any, K: ModuleType, folder: Path) -> dict[str, Path]:
    """``model`` in every file kind its framework writes."""
    if K is keras:
        paths = {k: folder / f"model.{k}" for k in ("h5", "keras", "weights.h5")}
        model.save(paths["h5"])
        model.save(paths["keras"])
        model.save_weights(paths["weights.h5"])
    else:
        paths = {"h5": folder / "model.h5", "weights.h5": folder / "weights.h5"}
        model.save(paths["h5"], save_format="h5")
        model.save_weights(paths["weights.h5"], save_format="h5")
    return paths


@pytest.mark.parametrize("K", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_wrappers_inside_a_nested_model(K, tmp_path):
    inputs = K.Input((3, 6, 6, 2))
    x = K.layers.TimeDistributed(K.layers.Conv2D(4, 3, name="conv2d"), name=TD)(inputs)
    x = K.layers.TimeDistributed(K.layers.Flatten(), name="td_flatten")(x)
    x = K.layers.Bidirectional(K.layers.LSTM(2, name="lstm"), name=BI)(x)
    features = K.Model(inputs, x, name="features")
    model = K.Sequential([K.Input((3, 6, 6, 2)), features, K.layers.Dense(2, name="out")])
    rng = np.random.default_rng(5)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    td = features.get_layer(TD).layer
    for kind, path in _save_all(model, K, tmp_path).items():
        with weightscope.load(path) as loaded:
            assert [(layer.name, layer.kind_label) for layer in loaded.layers] == [
                (f"features/{TD}", "conv2d"),
                (f"features/{BI}/forward_lstm", "lstm"),
                (f"features/{BI}/backward_lstm", "lstm"),
                ("out", "dense"),
            ], kind
            kernel = loaded.layer(f"features/{TD}").tensor("kernel")
            np.testing.assert_array_equal(
                kernel.canonical(), np.asarray(td.kernel).transpose(3, 2, 0, 1)
            )
            assert loaded.params.total == model.count_params(), kind


def _without_direction_scopes(path: Path, drop_last: bool) -> None:
    """Names that tell no direction apart (``bidirectional/w0:0``, ...), and, with
    ``drop_last``, an odd count: neither scopes nor halves can split them."""
    with h5py.File(path, "r+") as h5:
        group = h5.get("model_weights", h5)[BI]
        names = list(map(_text, group.attrs["weight_names"]))
        if drop_last:
            del group[names.pop()]
        renamed = [f"{BI}/w{i}:0" for i in range(len(names))]
        for old, new in zip(names, renamed, strict=True):
            group.move(old, new)
        group.attrs["weight_names"] = np.array([n.encode() for n in renamed])


@pytest.mark.parametrize("weights_only", [False, True], ids=["h5", "weights_h5"])
def test_bidirectional_that_cannot_be_split_stays_one_counted_layer(weights_only, tmp_path):
    model = tf_keras.Sequential(
        [tf_keras.Input((4, 3)), tf_keras.layers.Bidirectional(tf_keras.layers.LSTM(2), name=BI)]
    )
    path = tmp_path / "bi.h5"
    if weights_only:
        model.save_weights(path, save_format="h5")
    else:
        model.save(path, save_format="h5")
    _without_direction_scopes(path, drop_last=True)
    with weightscope.load(path) as loaded:
        (layer,) = loaded.layers
        assert (layer.name, layer.kind_label) == (BI, "unknown (Bidirectional)")
        assert layer.note and "could not be told apart" in layer.note
        assert len(layer.tensors) == 5
        assert loaded.params.total == model.count_params() - 8  # all but the dropped bias


def test_unwrapped_layers_take_the_inner_layers_declared_initializer(tmp_path):
    """The init check reads the initializer the wrapped layer's config declares, with its fans."""
    reports = {}
    for K in (keras, tf_keras):
        inputs = K.Input((3, 10, 10, 8))
        x = K.layers.TimeDistributed(
            K.layers.Conv2D(32, 3, kernel_initializer="he_uniform", name="conv2d"), name=TD
        )(inputs)
        x = K.layers.TimeDistributed(K.layers.Flatten(), name="td_flatten")(x)
        x = K.layers.TimeDistributed(
            K.layers.Dense(64, kernel_initializer="lecun_normal", name="dense"), name="td_dense"
        )(x)
        paths = _save_all(K.Model(inputs, x), K, tmp_path / K.__name__)
        for kind in ("h5", "keras"):
            if kind in paths:
                with weightscope.load(paths[kind]) as loaded:
                    reports[(K.__name__, kind)] = {
                        r.layer: r for r in weightscope.check_init(loaded)
                    }
    assert len(reports) == 3
    for key, by_layer in reports.items():
        conv, dense = by_layer[TD], by_layer["td_dense"]
        assert (conv.initializer.name, conv.declared) == ("he_uniform", True), key
        assert (conv.fan_in, conv.fan_out) == (3 * 3 * 8, 3 * 3 * 32), key
        assert (dense.initializer.name, dense.declared) == ("lecun_normal", True), key
        assert (dense.fan_in, dense.fan_out) == (8 * 8 * 32, 64), key
        assert conv.verdict == dense.verdict == "at_init", (key, conv.evidence, dense.evidence)


def test_commands_show_the_unwrapped_layers(tmp_path):
    inputs = keras.Input((3, 5, 4))
    x = keras.layers.TimeDistributed(keras.layers.Dense(3, name="dense"), name=TD)(inputs)
    x = keras.layers.TimeDistributed(keras.layers.Flatten(), name="td_flatten")(x)
    x = keras.layers.Bidirectional(keras.layers.GRU(2, name="gru"), name=BI)(x)
    model = keras.Model(inputs, x)
    paths = _save_all(model, keras, tmp_path)

    result = run_cli("inspect", paths["keras"], "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    layers = {layer["name"]: layer for layer in data["layers"]}
    assert list(layers) == [TD, f"{BI}/forward_gru", f"{BI}/backward_gru"]
    dense = layers[TD]
    assert (dense["kind"], dense["class_name"]) == ("dense", "Dense")
    assert "TimeDistributed" in dense["note"]
    kernel = dense["tensors"][0]
    assert (kernel["native_shape"], kernel["canonical_shape"]) == ([4, 3], [3, 4])
    assert dense["config"]["units"] == 3  # the inner layer's config
    backward = layers[f"{BI}/backward_gru"]
    assert (backward["kind"], backward["class_name"]) == ("gru", "GRU")
    assert backward["config"]["go_backwards"] is True
    roles = ["kernel", "recurrent_kernel", "bias", "recurrent_bias"]
    assert [t["role"] for t in backward["tensors"]] == roles
    assert data["params"]["total"] == model.count_params()

    result = run_cli("inspect", paths["h5"])
    assert result.returncode == 0, result.stderr
    assert "unknown" not in result.stdout and f"{BI}/forward_gru" in result.stdout

    for other in ("h5", "weights.h5"):
        result = run_cli("compare", paths[other], paths["keras"], "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        compared = json.loads(result.stdout)
        assert compared["verdict"] == "identical"
        assert [(p["a"], p["b"]) for p in compared["pairs"]] == [(n, n) for n in layers]


def test_wrappers_nested_past_max_nesting_are_refused(tmp_path):
    layer = keras.layers.Dense(2, name="dense")
    for name in ("time_distributed_2", "time_distributed_1", TD):
        layer = keras.layers.TimeDistributed(layer, name=name)
    model = keras.Sequential([keras.Input((2, 2, 2, 3)), layer])
    path = tmp_path / "deep.h5"
    model.save(path)
    with pytest.raises(weightscope.LimitError, match="nests wrappers more than 2 deep"):
        weightscope.load(path, limits=weightscope.Limits(max_nesting=2))
    with weightscope.load(path, limits=weightscope.Limits(max_nesting=3)) as loaded:
        assert [(layer.name, layer.kind) for layer in loaded.layers] == [(TD, "dense")]
