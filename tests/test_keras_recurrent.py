"""Keras recurrent layers (``LSTM``, ``GRU`` both reset modes, ``SimpleRNN``), stacked, inside
``Bidirectional`` and ``TimeDistributed``, read in their canonical form from every file kind
Keras 3 and tf-keras write.

Each model is built in the framework with random weights (biases included), run on a random
input, and saved in each file kind. weightscope must read every recurrent layer with its kind,
the table's layout for each tensor (a GRU's ``(2, 3 units)`` bias as two parts: input and
recurrent bias), the stored values, ``count_params()``, and the config; and the canonical
tensors must give back the framework's own output of every layer, the full sequence of each
direction, through ``reference.canonical_recurrent`` (which knows nothing of Keras' layouts).

Keras 2's ``CuDNNLSTM`` / ``CuDNNGRU`` build and save on a CPU (they fail only when called): the
facts about how they store their weights are checked against tf-keras' own conversion of a CuDNN
file into an ``LSTM`` / ``GRU``, which runs.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")
pytest.importorskip("torch")

import reference as ref  # noqa: E402  (needs torch)
from framework_cache import build_cached  # noqa: E402

import weightscope  # noqa: E402
from weightscope import layouts  # noqa: E402
from weightscope.model import PartSource  # noqa: E402

ATOL = RTOL = 1e-5
BATCH = 2

# ---------------------------------------------------------------------------------------------
# the models: what each framework builds, and what weightscope must make of it


@dataclass(frozen=True)
class Rnn:
    """One recurrent layer (one direction) of a test model, as built."""

    name: str
    """weightscope's name for it."""
    class_name: str
    kind: str
    units: int
    reset_after: bool | None = None
    go_backwards: bool = False
    sequences: bool = True
    use_bias: bool = True

    def options(self) -> dict[str, Any]:
        """``reference.canonical_recurrent``'s options for this layer."""
        options: dict[str, Any] = {
            "go_backwards": self.go_backwards,
            "return_sequences": self.sequences,
        }
        if self.reset_after is not None:
            options["reset_after"] = self.reset_after
        return options


Outputs = list[np.ndarray]
Run = Callable[[str, np.ndarray], np.ndarray]
"""(layer name, input) -> that layer's output from its canonical tensors."""


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[ModuleType], Any] = field(repr=False)
    """The model (its outputs: every layer's), from the framework's module."""
    input_shape: tuple[int, ...]
    layers: tuple[Rnn, ...]
    reference: Callable[[Run, np.ndarray, Outputs], Outputs] = field(repr=False)
    """(run, input, the framework's outputs) -> each output recomputed, every layer fed the
    framework's own output of the layer before it."""
    store_names: tuple[str, ...]
    """The layers' names where the file keeps none of them (tf-keras' weights store names its
    groups by class): its groups'."""

    def names(self, fmt: Format) -> list[str]:
        return [rnn.name for rnn in self.layers] if fmt.names_kept else list(self.store_names)


def _build_stack(K: ModuleType) -> Any:
    L = K.layers
    x = K.Input((5, 4))
    h1 = L.LSTM(3, return_sequences=True, name="lstm")(x)
    h2 = L.GRU(4, return_sequences=True, name="gru")(h1)
    h3 = L.GRU(3, reset_after=False, return_sequences=True, go_backwards=True, name="gru_before")(
        h2
    )
    h4 = L.SimpleRNN(2, return_sequences=True, name="simple_rnn")(h3)
    h5 = L.Bidirectional(L.LSTM(3, return_sequences=True, name="lstm_b"), name="bi_lstm")(h4)
    h6 = L.Bidirectional(
        L.GRU(2, reset_after=False, name="gru_b"), merge_mode="sum", name="bi_gru"
    )(h5)
    return K.Model(x, [h1, h2, h3, h4, h5, h6])


STACK = (
    Rnn("lstm", "LSTM", "lstm", 3),
    Rnn("gru", "GRU", "gru", 4, reset_after=True),
    Rnn("gru_before", "GRU", "gru", 3, reset_after=False, go_backwards=True),
    Rnn("simple_rnn", "SimpleRNN", "simple_rnn", 2),
    Rnn("bi_lstm/forward_lstm_b", "LSTM", "lstm", 3),
    Rnn("bi_lstm/backward_lstm_b", "LSTM", "lstm", 3, go_backwards=True),
    Rnn("bi_gru/forward_gru_b", "GRU", "gru", 2, reset_after=False, sequences=False),
    Rnn(
        "bi_gru/backward_gru_b", "GRU", "gru", 2,
        reset_after=False, go_backwards=True, sequences=False,
    ),
)  # fmt: skip


def _stack_reference(run: Run, x: np.ndarray, y: Outputs) -> Outputs:
    h1 = run("lstm", x)
    h2 = run("gru", y[0])
    h3 = run("gru_before", y[1])
    h4 = run("simple_rnn", y[2])
    h5 = ref.bidirectional(
        run("bi_lstm/forward_lstm_b", y[3]), run("bi_lstm/backward_lstm_b", y[3]), sequences=True
    )
    h6 = ref.bidirectional(
        run("bi_gru/forward_gru_b", y[4]),
        run("bi_gru/backward_gru_b", y[4]),
        merge_mode="sum",
        sequences=False,
    )
    return [h1, h2, h3, h4, h5, h6]


def _build_time_distributed(K: ModuleType) -> Any:
    L = K.layers
    x = K.Input((3, 5, 4))
    h1 = L.TimeDistributed(
        L.LSTM(2, return_sequences=True, use_bias=False, name="lstm"), name="td_lstm"
    )(x)
    h2 = L.TimeDistributed(L.Bidirectional(L.GRU(2, name="gru"), name="bi"), name="td_bi")(h1)
    h3 = L.SimpleRNN(3, use_bias=False, go_backwards=True, name="simple_rnn")(h2)
    return K.Model(x, [h1, h2, h3])


TIME_DISTRIBUTED = (
    Rnn("td_lstm", "LSTM", "lstm", 2, use_bias=False),
    Rnn("td_bi/forward_gru", "GRU", "gru", 2, reset_after=True, sequences=False),
    Rnn(
        "td_bi/backward_gru", "GRU", "gru", 2,
        reset_after=True, go_backwards=True, sequences=False,
    ),
    Rnn("simple_rnn", "SimpleRNN", "simple_rnn", 3, go_backwards=True, sequences=False,
        use_bias=False),
)  # fmt: skip


def _time_distributed_reference(run: Run, x: np.ndarray, y: Outputs) -> Outputs:
    h1 = ref.time_distributed(x, lambda s: run("td_lstm", s))

    def bidirectional(s: np.ndarray) -> np.ndarray:
        forward, backward = run("td_bi/forward_gru", s), run("td_bi/backward_gru", s)
        return ref.bidirectional(forward, backward, sequences=False)

    h2 = ref.time_distributed(y[0], bidirectional)
    return [h1, h2, run("simple_rnn", y[1])]


CASES = {
    case.id: case
    for case in (
        Case(
            "stack",
            _build_stack,
            (5, 4),
            STACK,
            _stack_reference,
            (
                "lstm",
                "gru",
                "gru_1",
                "simple_rnn",
                "bidirectional/forward",
                "bidirectional/backward",
                "bidirectional_1/forward",
                "bidirectional_1/backward",
            ),
        ),
        Case(
            "time_distributed",
            _build_time_distributed,
            (3, 5, 4),
            TIME_DISTRIBUTED,
            _time_distributed_reference,
            (
                "time_distributed",
                "time_distributed_1/forward",
                "time_distributed_1/backward",
                "simple_rnn",
            ),
        ),
    )
}


@dataclass(frozen=True)
class Format:
    id: str
    filename: str
    weights_only: bool
    weightscope_format: str
    names_kept: bool = True
    """False where the file keeps no layer's name."""


FORMATS: dict[str, list[Format]] = {
    "keras3": [
        Format("keras", "model.keras", False, "keras-v3"),
        Format("h5", "model.h5", False, "keras-h5"),
        Format("weights_h5", "model.weights.h5", True, "keras-weights-h5"),
    ],
    "tf_keras": [
        Format("h5", "model.h5", False, "keras-h5"),
        Format("keras", "model.keras", False, "keras-v3"),
        Format("weights_only_h5", "weights.h5", True, "keras-h5-weights"),
        Format("weights_h5", "model.weights.h5", True, "keras-weights-h5", names_kept=False),
    ],
}

# ---------------------------------------------------------------------------------------------
# building and saving, once per (framework, case)


def _framework(name: str) -> ModuleType:
    return keras if name == "keras3" else tf_keras


def _random_weights(model: Any, rng: np.random.Generator) -> list[np.ndarray]:
    """Random values of every variable, biases included (they start at zero), small enough
    that no gate saturates."""
    values = [(0.6 * rng.standard_normal(w.shape)).astype(np.float32) for w in model.get_weights()]
    model.set_weights(values)
    for value, got in zip(values, model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, value)  # the weights really were set
    return values


def _recurrent_layers(layer: Any) -> list[Any]:
    """The recurrent layers a model layer holds, wrappers unwrapped, in Keras' order."""
    if hasattr(layer, "forward_layer"):
        return [*_recurrent_layers(layer.forward_layer), *_recurrent_layers(layer.backward_layer)]
    if hasattr(layer, "layer"):
        return _recurrent_layers(layer.layer)
    return [layer] if layer.weights else []


def _save(framework: str, case: Case, folder: Path) -> None:
    K = _framework(framework)
    model = case.build(K)
    rng = np.random.default_rng(zlib.crc32(f"{framework}/{case.id}".encode()))
    _random_weights(model, rng)
    x = rng.standard_normal((BATCH, *case.input_shape)).astype(np.float32)
    outputs = [np.asarray(y) for y in model(x, training=False)]
    if framework == "keras3":
        model.save(folder / "model.keras")
        model.save(folder / "model.h5")
        model.save_weights(folder / "model.weights.h5")
    else:
        model.save(folder / "model.h5", save_format="h5")
        model.save(folder / "model.keras")
        model.save_weights(folder / "weights.h5", save_format="h5")
        model.save_weights(folder / "model.weights.h5")
    held = [inner for layer in model.layers for inner in _recurrent_layers(layer)]
    assert len(held) == len(case.layers)
    arrays = {f"y{i}": y for i, y in enumerate(outputs)}
    for i, layer in enumerate(held):
        arrays.update({f"w{i}_{j}": np.asarray(w) for j, w in enumerate(layer.get_weights())})
    np.savez(folder / "built.npz", x=x, **arrays)
    counts = {
        "params": model.count_params(),
        "weights": [len(layer.get_weights()) for layer in held],
        "classes": [type(layer).__name__ for layer in held],
    }
    (folder / "built.json").write_text(json.dumps(counts))


@dataclass
class Built:
    case: Case
    x: np.ndarray
    outputs: Outputs
    weights: list[list[np.ndarray]]
    """The framework's variables of each recurrent layer, in Keras' order."""
    params: int
    classes: list[str]
    folder: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Built]:
    cache: dict[tuple[str, str], Built] = {}
    root = tmp_path_factory.mktemp("keras_recurrent")

    def get(framework: str, case_id: str) -> Built:
        if (framework, case_id) not in cache:
            case = CASES[case_id]
            folder = root / framework / case_id

            def save(target: Path) -> None:
                _save(framework, case, target)

            build_cached(folder, save, framework, case_id)
            saved = json.loads((folder / "built.json").read_text())
            with np.load(folder / "built.npz", allow_pickle=False) as data:
                outputs = [data[f"y{i}"] for i in range(sum(k.startswith("y") for k in data))]
                weights = [
                    [data[f"w{i}_{j}"] for j in range(count)]
                    for i, count in enumerate(saved["weights"])
                ]
                x = data["x"]
            cache[(framework, case_id)] = Built(
                case, x, outputs, weights, saved["params"], saved["classes"], folder
            )
        return cache[(framework, case_id)]

    return get


PARAMS = [
    pytest.param(framework, case_id, fmt, id=f"{framework}-{case_id}-{fmt.id}")
    for framework, formats in FORMATS.items()
    for case_id in CASES
    for fmt in formats
]

# ---------------------------------------------------------------------------------------------
# helpers


def _stored(layer: weightscope.Layer) -> list[np.ndarray]:
    """A layer's stored variables, in its order, each put back together from its parts."""
    by_name: dict[str, np.ndarray] = {}
    for tensor in layer.tensors:
        if tensor.part is None:
            by_name[tensor.name] = tensor.numpy()
            continue
        source = tensor.source
        assert isinstance(source, PartSource)
        whole = by_name.setdefault(tensor.name, np.full_like(source.base.read(), np.nan))
        whole[source.index] = tensor.numpy()
    return list(by_name.values())


def _runner(model: weightscope.Model, case: Case, fmt: Format) -> Run:
    specs = {rnn.name: rnn for rnn in case.layers}
    names = dict(zip(specs, case.names(fmt), strict=True))

    def run(name: str, x: np.ndarray) -> np.ndarray:
        spec = specs[name]
        layer = model.layer(names[name])
        assert layer.kind == spec.kind, name
        return ref.canonical_recurrent_layer(
            spec.kind, x.astype(np.float64), layer, **spec.options()
        )

    return run


def _expected_tensors(spec: Rnn) -> list[tuple[str, str | None, str]]:
    """(role, part, layout) of each tensor a layer of ``spec`` must have, from the table."""

    def layout(role: str, rank: int) -> str:
        found = layouts.native_layout("keras", role, rank, owner=spec.class_name)
        assert found is not None, (spec.class_name, role)
        return found

    tensors = [("kernel", None, layout("kernel", 2))]
    tensors.append(("recurrent_kernel", None, layout("recurrent_kernel", 2)))
    if spec.use_bias and spec.reset_after:
        tensors.append(("bias", "[0]", layout("bias", 1)))
        tensors.append(("recurrent_bias", "[1]", layout("recurrent_bias", 1)))
    elif spec.use_bias:
        tensors.append(("bias", None, layout("bias", 1)))
    return tensors


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize(("framework", "case_id", "fmt"), PARAMS)
def test_recurrent_layers_are_read_in_the_tables_layouts(built, framework, case_id, fmt) -> None:
    item = built(framework, case_id)
    with weightscope.load(item.folder / fmt.filename) as model:
        assert model.format == fmt.weightscope_format
        specs = item.case.layers
        assert [(layer.name, layer.kind_label) for layer in model.layers] == [
            (name, spec.kind) for name, spec in zip(item.case.names(fmt), specs, strict=True)
        ]
        assert [layer.class_name for layer in model.layers] == item.classes
        for layer, spec, weights in zip(model.layers, specs, item.weights, strict=True):
            assert layer.inferred is fmt.weights_only
            found = [(t.role, t.part, t.native_layout) for t in layer.tensors]
            assert found == _expected_tensors(spec), layer.name
            for tensor in layer.tensors:
                assert tensor.canonical().shape == tensor.canonical_shape
                assert tensor.trainable is (None if fmt.weights_only else True)
            stored = _stored(layer)
            assert len(stored) == len(weights)
            for got, value in zip(stored, weights, strict=True):
                np.testing.assert_array_equal(got, value, err_msg=layer.name)
            assert layer.config["units"] == spec.units
            if spec.reset_after is not None and spec.use_bias:
                assert layer.config["reset_after"] is spec.reset_after
            if not fmt.weights_only:
                assert layer.config["go_backwards"] is spec.go_backwards, layer.name
                assert layer.config["return_sequences"] is spec.sequences, layer.name
                assert layer.config["activation"] == "tanh"
                assert layer.tensor("kernel").declared_init is not None
                assert layer.tensor("recurrent_kernel").declared_init is not None
        assert model.params.total == item.params


@pytest.mark.parametrize(("framework", "case_id", "fmt"), PARAMS)
def test_canonical_tensors_reproduce_the_frameworks_output(built, framework, case_id, fmt) -> None:
    item = built(framework, case_id)
    with weightscope.load(item.folder / fmt.filename) as model:
        expected = item.case.reference(_runner(model, item.case, fmt), item.x, item.outputs)
    assert len(expected) == len(item.outputs)
    for index, (got, want) in enumerate(zip(expected, item.outputs, strict=True)):
        assert got.shape == want.shape, index
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL, err_msg=f"output {index}")


# ---------------------------------------------------------------------------------------------
# what the tensors alone do not say


def test_activations_the_canonical_computation_does_not_assume_are_noted(tmp_path) -> None:
    L = tf_keras.layers
    model = tf_keras.Sequential(
        [
            tf_keras.Input((5, 4)),
            L.LSTM(3, recurrent_activation="hard_sigmoid", return_sequences=True, name="lstm"),
            L.GRU(3, activation="relu", return_sequences=True, name="gru"),
            L.SimpleRNN(2, name="simple_rnn"),
        ]
    )
    model.save(tmp_path / "model.h5", save_format="h5")
    model.save_weights(tmp_path / "weights.h5", save_format="h5")
    with weightscope.load(tmp_path / "model.h5") as loaded:
        notes = {layer.name: layer.note or "" for layer in loaded.layers}
        assert "recurrent_activation hard_sigmoid" in notes["lstm"]
        assert "assumes sigmoid" in notes["lstm"]
        assert "activation relu" in notes["gru"] and "assumes tanh" in notes["gru"]
        assert notes["simple_rnn"] == ""
        lstm = loaded.layer("lstm")
        assert lstm.config["recurrent_activation"] == "hard_sigmoid"
        assert lstm.config["units"] == 3
    with weightscope.load(tmp_path / "weights.h5") as loaded:  # no config: nothing to say
        assert [layer.kind for layer in loaded.layers] == ["lstm", "gru", "simple_rnn"]
        assert all("activation" not in (layer.note or "") for layer in loaded.layers)


@pytest.mark.parametrize("K", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_gru_without_bias_keeps_its_reset_mode_only_where_a_config_says_it(K, tmp_path) -> None:
    model = K.Sequential(
        [K.Input((5, 4)), K.layers.GRU(3, use_bias=False, reset_after=False, name="gru")]
    )
    files = {"config": tmp_path / "model.keras", "weights": tmp_path / "model.weights.h5"}
    model.save(files["config"])
    model.save_weights(files["weights"])
    with weightscope.load(files["config"]) as loaded:
        gru = loaded.layer("gru")
        assert (gru.kind, gru.config["reset_after"]) == ("gru", False)
        assert [t.role for t in gru.tensors] == ["kernel", "recurrent_kernel"]
    with weightscope.load(files["weights"]) as loaded:
        (gru,) = loaded.layers
        assert gru.kind == "gru" and "reset_after" not in gru.config
        assert gru.note and "reset_after) cannot be told" in gru.note
        assert loaded.params.total == model.count_params()


def test_weights_only_layers_are_known_by_their_shapes_not_their_names(tmp_path) -> None:
    """Keras 2 files name layers as their users did: a GRU named ``lstm`` is a GRU."""
    L = tf_keras.layers
    model = tf_keras.Sequential(
        [
            tf_keras.Input((5, 4)),
            L.GRU(3, return_sequences=True, name="lstm"),
            L.LSTM(2, return_sequences=True, name="gru"),
            L.SimpleRNN(2, name="simple_rnn_1"),
        ]
    )
    path = tmp_path / "weights.h5"
    model.save_weights(path, save_format="h5")
    with weightscope.load(path) as loaded:
        assert [(layer.name, layer.kind, layer.class_name) for layer in loaded.layers] == [
            ("lstm", "gru", "GRU"),
            ("gru", "lstm", "LSTM"),
            ("simple_rnn_1", "simple_rnn", "SimpleRNN"),
        ]
        assert "its name 'lstm' says LSTM" in (loaded.layer("lstm").note or "")


def test_shapes_that_fit_no_recurrent_layer_leave_it_unknown_and_counted(tmp_path) -> None:
    model = tf_keras.Sequential([tf_keras.Input((5, 4)), tf_keras.layers.LSTM(3, name="lstm")])
    path = tmp_path / "model.h5"
    model.save(path, save_format="h5")
    import h5py

    with h5py.File(path, "r+") as h5:
        group = h5["model_weights/lstm/lstm/lstm_cell"]
        del group["recurrent_kernel:0"]
        group["recurrent_kernel:0"] = np.zeros((3, 10), np.float32)  # not (units, 4 * units)
    with weightscope.load(path) as loaded:
        (lstm,) = loaded.layers
        assert lstm.kind_label == "unknown (LSTM)"
        assert lstm.note and "no canonical form" in lstm.note
        assert all(t.native_layout is None for t in lstm.tensors)
        assert loaded.params.total == model.count_params() - 36 + 30


@pytest.mark.parametrize("K", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_declared_initializers_of_a_fresh_layer_fit_its_values(K, tmp_path) -> None:
    """glorot_uniform draws the kernel with Keras' fans of ``(in, 4 units)``; orthogonal makes
    the recurrent kernel's rows orthonormal: its mean square is exactly 1 / (4 units), the
    square of the scale declared."""
    units, inputs = 6, 5
    model = K.Sequential([K.Input((7, inputs)), K.layers.LSTM(units, name="lstm")])
    path = tmp_path / "model.keras"
    model.save(path)
    with weightscope.load(path) as loaded:
        lstm = loaded.layer("lstm")
        kernel, recurrent = lstm.tensor("kernel"), lstm.tensor("recurrent_kernel")
        assert kernel.declared_init is not None and recurrent.declared_init is not None
        glorot = kernel.declared_init
        assert (glorot.initializer.name, glorot.fan_in, glorot.fan_out) == (
            "glorot_uniform", inputs, 4 * units,
        )  # fmt: skip
        bound = np.sqrt(6 / (inputs + 4 * units))
        assert glorot.initializer.scale == pytest.approx(bound)
        assert np.abs(kernel.numpy()).max() <= bound
        orthogonal = recurrent.declared_init.initializer
        assert orthogonal.name == "orthogonal(gain=1)"
        values = recurrent.numpy().astype(np.float64)
        np.testing.assert_allclose(values @ values.T, np.eye(units), atol=1e-5)
        assert np.mean(values**2) == pytest.approx(orthogonal.scale**2, rel=1e-5)
        assert lstm.tensor("bias").declared_init is None


# ---------------------------------------------------------------------------------------------
# Keras 2's CuDNN layers


def _cudnn_classes() -> tuple[type, type]:
    """tf-keras' CuDNNLSTM and CuDNNGRU (no longer exported under ``tf_keras.layers``)."""
    cudnn_lstm = pytest.importorskip("tf_keras.src.layers.rnn.cudnn_lstm")
    cudnn_gru = pytest.importorskip("tf_keras.src.layers.rnn.cudnn_gru")
    return cudnn_lstm.CuDNNLSTM, cudnn_gru.CuDNNGRU


def _cudnn_canonical(kernel: np.ndarray, recurrent: np.ndarray, bias: np.ndarray, gates: int):
    """The canonical tensors of a CuDNN layer's variables, by cuDNN's packing: each gate's
    ``(in, units)`` block of the kernel holds the gate's ``(units, in)`` matrix row-major, each
    ``(units, units)`` block of the recurrent kernel the gate's matrix as it is, and the bias the
    input biases then the recurrent ones (gates in Keras' order, canonical for LSTM and GRU)."""
    units = recurrent.shape[0]
    blocks = np.split(kernel, gates, axis=1)
    w = np.stack([block.reshape(units, kernel.shape[0]) for block in blocks])
    r = np.stack(np.split(recurrent, gates, axis=1))
    b, rb = (half.reshape(gates, units) for half in np.split(bias, 2))
    return w, r, b, rb


def test_cudnn_weights_are_packed_as_tf_keras_converts_them(tmp_path) -> None:
    """The fact behind the CuDNN layouts: tf-keras loads a CuDNNLSTM / CuDNNGRU file into an
    LSTM / GRU(reset_after=True) (converting the weights), and that model's output is what the
    canonical computation gives from the CuDNN variables read as cuDNN packs them."""
    cudnn_lstm, cudnn_gru = _cudnn_classes()
    L = tf_keras.layers
    x_in = tf_keras.Input((5, 4))
    h = cudnn_lstm(3, return_sequences=True, name="lstm")(x_in)
    cudnn = tf_keras.Model(x_in, cudnn_gru(2, return_sequences=True, name="gru")(h))
    rng = np.random.default_rng(17)
    values = _random_weights(cudnn, rng)
    path = tmp_path / "cudnn.h5"
    cudnn.save(path, save_format="h5")

    x_in = tf_keras.Input((5, 4))
    h = L.LSTM(3, return_sequences=True, name="lstm")(x_in)
    plain = tf_keras.Model(x_in, [h, L.GRU(2, return_sequences=True, name="gru")(h)])
    plain.load_weights(path)  # tf-keras' own conversion of CuDNN weights
    x = rng.standard_normal((BATCH, 5, 4)).astype(np.float32)
    lstm_out, gru_out = (np.asarray(y) for y in plain(x))

    lstm = _cudnn_canonical(*values[:3], gates=4)
    gru = _cudnn_canonical(*values[3:], gates=3)
    np.testing.assert_allclose(
        ref.canonical_recurrent("lstm", x.astype(np.float64), *lstm), lstm_out, atol=ATOL
    )
    np.testing.assert_allclose(
        ref.canonical_recurrent("gru", lstm_out.astype(np.float64), *gru, reset_after=True),
        gru_out,
        atol=ATOL,
    )
    # the packing is not the plain layout of an LSTM: read as I{ifco}, the output differs
    plain_kernel = np.stack(np.split(values[0], 4, axis=1)).transpose(0, 2, 1)
    wrong = ref.canonical_recurrent("lstm", x.astype(np.float64), plain_kernel, *lstm[1:])
    assert np.abs(wrong - lstm_out).max() > 1e-2


CUDNN_FORMATS = {
    "h5": "keras-h5", "weights_only.h5": "keras-h5-weights", "keras": "keras-v3",
    "weights.h5": "keras-weights-h5",
}  # fmt: skip


@pytest.mark.parametrize("fmt", list(CUDNN_FORMATS))
def test_cudnn_layers_reproduce_the_lstm_and_gru_tf_keras_converts_them_to(fmt, tmp_path) -> None:
    """A CuDNNLSTM / CuDNNGRU file, in each file kind tf-keras writes, reads as an lstm / gru
    (bias halves as input and recurrent parts) whose canonical tensors give the output of the
    LSTM / GRU(reset_after=True) that tf-keras loads the file into (CuDNN layers run on GPUs
    only), with the table's layouts (those of the CuDNN entries, all of them)."""
    cudnn_lstm, cudnn_gru = _cudnn_classes()
    L = tf_keras.layers
    x_in = tf_keras.Input((5, 4))
    h = cudnn_lstm(3, return_sequences=True, name="lstm")(x_in)
    cudnn = tf_keras.Model(x_in, cudnn_gru(2, return_sequences=True, name="gru")(h))
    rng = np.random.default_rng(23)
    values = _random_weights(cudnn, rng)
    path = tmp_path / f"cudnn.{fmt}"
    if fmt == "h5":
        cudnn.save(path, save_format="h5")
    elif fmt == "weights_only.h5":
        cudnn.save_weights(path, save_format="h5")
    elif fmt == "keras":
        cudnn.save(path)
    else:
        cudnn.save_weights(path)
    converted = tmp_path / "for_conversion.h5"
    cudnn.save_weights(converted, save_format="h5")
    x_in = tf_keras.Input((5, 4))
    h = L.LSTM(3, return_sequences=True, name="lstm")(x_in)
    plain = tf_keras.Model(x_in, [h, L.GRU(2, return_sequences=True, name="gru")(h)])
    plain.load_weights(converted)  # tf-keras' own conversion of CuDNN weights
    x = rng.standard_normal((BATCH, 5, 4)).astype(np.float32)
    lstm_out, gru_out = (np.asarray(y) for y in plain(x))

    with weightscope.load(path) as loaded:
        assert loaded.format == CUDNN_FORMATS[fmt]
        lstm, gru = loaded.layers
        assert [(layer.kind, layer.class_name) for layer in loaded.layers] == [
            ("lstm", "CuDNNLSTM"), ("gru", "CuDNNGRU"),
        ]  # fmt: skip
        for layer, units in ((lstm, 3 * 4), (gru, 2 * 3)):
            assert [(t.role, t.part) for t in layer.tensors] == [
                ("kernel", None), ("recurrent_kernel", None),
                ("bias", f"[:{units}]"), ("recurrent_bias", f"[{units}:]"),
            ]  # fmt: skip
        np.testing.assert_array_equal(_stored(lstm)[2], values[2])
        np.testing.assert_allclose(
            ref.canonical_recurrent_layer("lstm", x.astype(np.float64), lstm), lstm_out, atol=ATOL
        )
        np.testing.assert_allclose(
            ref.canonical_recurrent_layer(
                "gru", lstm_out.astype(np.float64), gru, reset_after=True
            ),
            gru_out,
            atol=ATOL,
        )
        assert loaded.params.total == cudnn.count_params()
        produced = {
            (layer.class_name, t.role, layer.kind, t.native_layout)
            for layer in loaded.layers
            for t in layer.tensors
        }
    table = {
        (u.owner, u.role, u.kind, u.layout)
        for u in layouts.uses("keras")
        if u.owner in ("CuDNNLSTM", "CuDNNGRU")
    }
    assert produced == table
