"""TensorFlow SavedModel directories, read by weightscope without TensorFlow and checked against
the Keras models and TensorFlow modules that wrote them.

Every layer case of ``test_keras_layouts`` (conv 1-D/2-D/3-D, grouped, dilated, transposed,
depthwise with a depth multiplier, separable, dense, batch norm) is built as a one-layer model
with random weights and saved by tf-keras (``model.save(dir, save_format="tf")``: Keras metadata
in ``keras_metadata.pb``) and by Keras 3 (``model.export(dir)``: no Keras metadata, kinds from
the graph's ops). weightscope must list the layer's variables exactly (values, shapes,
trainable flags), with the kind the layer has, and its canonical tensors must recompute the
model's output to 1e-5. Whole models check totals against Keras' own counts (optimizer state
and metrics listed, not counted; a frozen layer's weights non-trainable), a ``tf.Module`` saved
by ``tf.saved_model.save`` is read from its graph, and damaged directories give one line."""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Callable
from dataclasses import dataclass
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
from cli_runner import run_cli  # noqa: E402
from framework_cache import build_cached  # noqa: E402
from test_keras_layouts import CASES, Case  # noqa: E402

import weightscope  # noqa: E402

ATOL = RTOL = 1e-5
BATCH = 2
FRAMEWORKS = {"tf_keras": tf_keras, "keras3": keras}
"""tf-keras saves with Keras metadata; Keras 3's export has none (kinds come from the graph)."""


@dataclass
class Built:
    case: Case
    x: np.ndarray
    y: np.ndarray
    weights: list[tuple[str, np.ndarray, bool]]
    """(role, value, trainable) of each Keras variable, in the layer's order."""
    folder: Path


def _role(variable_path: str, kind: str) -> str:
    role = variable_path.rsplit("/", 1)[-1].split(":", 1)[0]
    return "kernel" if kind.startswith("depthwise") and role == "depthwise_kernel" else role


def _save(framework: str, case: Case, folder: Path) -> None:
    module = FRAMEWORKS[framework]
    layer = getattr(module.layers, case.class_name)(**case.kwargs)
    inputs = module.Input(shape=case.input_shape)
    model = module.Model(inputs, layer(inputs))
    rng = np.random.default_rng(zlib.crc32(f"savedmodel/{framework}/{case.id}".encode()))
    values = []
    for variable in layer.weights:
        value = rng.standard_normal(tuple(variable.shape)).astype(np.float32)
        if _role(variable.name, case.kind) == "moving_variance":
            value = np.abs(value) + np.float32(0.5)
        values.append(value)
    layer.set_weights(values)
    x = rng.standard_normal((BATCH, *case.input_shape)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    if framework == "tf_keras":
        model.save(folder / "model", save_format="tf")
    else:
        model.export(folder / "model", verbose=False)
    roles = [_role(getattr(v, "path", v.name), case.kind) for v in layer.weights]
    trainable = [bool(v.trainable) for v in layer.weights]
    np.savez(folder / "built.npz", x=x, y=y, **{f"w{i}": v for i, v in enumerate(values)})
    (folder / "built.json").write_text(json.dumps({"roles": roles, "trainable": trainable}))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Built]:
    cache: dict[tuple[str, str], Built] = {}
    root = tmp_path_factory.mktemp("savedmodel")
    by_id = {case.id: case for case in CASES}

    def get(framework: str, case_id: str) -> Built:
        if (framework, case_id) not in cache:
            case = by_id[case_id]
            if getattr(FRAMEWORKS[framework].layers, case.class_name, None) is None:
                pytest.skip(f"{framework} has no layers.{case.class_name}")
            folder = root / framework / case_id

            def save(into: Path) -> None:
                _save(framework, case, into)

            build_cached(folder, save, "savedmodel", framework, case_id)
            saved = json.loads((folder / "built.json").read_text())
            with np.load(folder / "built.npz") as arrays:
                x, y = arrays["x"], arrays["y"]
                values = [arrays[f"w{i}"] for i in range(len(saved["roles"]))]
            weights = list(zip(saved["roles"], values, saved["trainable"], strict=True))
            cache[(framework, case_id)] = Built(case, x, y, weights, folder / "model")
        return cache[(framework, case_id)]

    return get


PARAMS = [
    pytest.param(framework, case.id, id=f"{framework}-{case.id}")
    for framework in FRAMEWORKS
    for case in CASES
]


def _layer(model: weightscope.Model) -> weightscope.Layer:
    counted = [layer for layer in model.layers if any(t.counted for t in layer.tensors)]
    assert len(counted) == 1, [layer.name for layer in model.layers]
    return counted[0]


@pytest.mark.parametrize(("framework", "case_id"), PARAMS)
def test_layer_read_as_keras_holds_it(built: Callable[[str, str], Built], framework, case_id):
    """The layer's kind, roles, values, shapes and trainable flags are Keras' own; totals are
    the layer's weights (Keras 3's second copies listed, not counted)."""
    item = built(framework, case_id)
    with weightscope.load(item.folder) as model:
        assert (model.framework, model.format) == ("tensorflow", "savedmodel")
        layer = _layer(model)
        assert layer.kind == item.case.kind, layer.note
        assert [t.role for t in layer.tensors] == [role for role, _, _ in item.weights]
        for tensor, (role, value, trainable) in zip(layer.tensors, item.weights, strict=True):
            assert tensor.native_shape == value.shape, role
            np.testing.assert_array_equal(tensor.numpy(), value, err_msg=role)
            assert tensor.trainable is trainable, role
        if framework == "tf_keras":
            assert layer.class_name == item.case.class_name
            assert not layer.inferred
        if item.case.groups is not None:  # Keras 3: the input's shape the graph records
            assert layer.groups == item.case.groups
        counts = model.params
        assert counts.total == sum(value.size for _, value, _ in item.weights)
        assert counts.non_trainable == sum(
            v.size for _, v, trainable in item.weights if not trainable
        )
        assert counts.unknown == 0


@pytest.mark.parametrize(("framework", "case_id"), PARAMS)
def test_canonical_tensors_recompute_the_layer(
    built: Callable[[str, str], Built], framework, case_id
):
    item = built(framework, case_id)
    with weightscope.load(item.folder) as model:
        layer = _layer(model)
        canonical = {}
        for tensor in layer.tensors:
            assert tensor.native_layout is not None, tensor.role
            canonical[tensor.role] = tensor.canonical().astype(np.float64)
        groups = layer.groups
    expected = item.case.reference(ref.channels_first(item.x), canonical, groups)
    np.testing.assert_allclose(ref.channels_last(expected), item.y, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# whole models


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A tf-keras model of several layers, one frozen, fitted one step with Adam (optimizer
    slots and metric state saved too), and a Keras 3 model of the same layers, exported."""
    folder = tmp_path_factory.mktemp("savedmodel_trained")
    tf_keras.utils.set_random_seed(4)
    L = tf_keras.layers
    inputs = tf_keras.Input((12, 12, 3))
    x = L.Conv2D(6, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="norm")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(x)
    x = L.SeparableConv2D(4, 3, name="separable")(x)
    x = L.Conv2DTranspose(3, 3, strides=2, name="transpose")(x)
    x = L.Flatten()(x)
    outputs = L.Dense(4, name="fc")(x)
    model = tf_keras.Model(inputs, outputs)
    model.get_layer("norm").trainable = False
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    rng = np.random.default_rng(1)
    model.fit(rng.random((4, 12, 12, 3)), rng.random((4, 4)), verbose=0)
    model.save(folder / "tf_keras", save_format="tf")
    return {"model": model, "folder": folder}


def _weight_sizes(variables: Any) -> int:
    return sum(int(np.prod(v.shape)) for v in variables)


def test_totals_equal_keras_counts(trained: dict[str, Any]) -> None:
    model = trained["model"]
    with weightscope.load(trained["folder"] / "tf_keras") as read:
        counts = read.params
        assert counts.total == model.count_params()
        assert counts.trainable == _weight_sizes(model.trainable_weights)
        assert counts.non_trainable == _weight_sizes(model.non_trainable_weights)
        assert counts.unknown == 0
        layers = {layer.name: layer for layer in read.layers}
        assert all(t.trainable is False for t in layers["norm"].tensors)  # frozen
        assert not any(t.counted for t in layers["optimizer"].tensors)
        assert not any(t.counted for t in layers["metrics"].tensors)
        assert {
            n: layers[n].kind for n in ("conv", "depthwise", "separable", "transpose", "fc")
        } == {
            "conv": "conv2d",
            "depthwise": "depthwise_conv2d",
            "separable": "separable_conv2d",
            "transpose": "conv_transpose2d",
            "fc": "dense",
        }


def test_every_variable_is_what_tensorflow_loads(trained: dict[str, Any]) -> None:
    """Each tensor weightscope lists from the model's layers is a variable of
    ``tf.saved_model.load``, with its shape, values and trainable flag as the variable has
    them (a frozen layer's variables stay trainable in TensorFlow: the Keras metadata freezes
    them)."""
    folder = trained["folder"] / "tf_keras"
    loaded = tf.saved_model.load(str(folder))
    by_name = {v.name.removesuffix(":0"): v for v in loaded.variables}
    with weightscope.load(folder) as read:
        names = set()
        for layer, tensor in read.tensors():
            if not tensor.counted:
                continue
            variable = by_name[tensor.name]
            names.add(tensor.name)
            assert tensor.native_shape == tuple(variable.shape)
            np.testing.assert_array_equal(tensor.numpy(), variable.numpy())
            if layer.name != "norm":
                assert tensor.trainable is variable.trainable, tensor.name
    assert names == set(by_name)


def test_tf_module_read_from_its_graph(tmp_path: Path) -> None:
    """A ``tf.Module`` of a conv and a dense layer as ``tf.Variable`` attributes, saved by
    ``tf.saved_model.save``: no Keras metadata, so the kinds come from the Conv2D and MatMul
    ops that use the variables; its canonical tensors recompute the module's output."""
    rng = np.random.default_rng(2)

    class Net(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.filters = tf.Variable(rng.standard_normal((3, 3, 4, 6)).astype(np.float32))
            self.offset = tf.Variable(rng.standard_normal(6).astype(np.float32))
            self.weights = tf.Variable(rng.standard_normal((150, 5)).astype(np.float32))
            self.shift = tf.Variable(rng.standard_normal(5).astype(np.float32), trainable=False)

        @tf.function(input_signature=[tf.TensorSpec((None, 7, 7, 4), tf.float32)])
        def __call__(self, x: Any) -> Any:
            y = tf.nn.bias_add(tf.nn.conv2d(x, self.filters, 1, "VALID"), self.offset)
            return tf.matmul(tf.reshape(y, (-1, 150)), self.weights) + self.shift

    net = Net()
    tf.saved_model.save(net, str(tmp_path / "net"))
    x = rng.standard_normal((2, 7, 7, 4)).astype(np.float32)
    y = net(x).numpy()
    with weightscope.load(tmp_path / "net") as read:
        kinds = {layer.name: layer.kind for layer in read.layers}
        assert kinds == {"filters": "conv2d", "weights": "dense"}
        conv = read.layer("filters")
        dense = read.layer("weights")
        assert [t.role for t in conv.tensors] == ["kernel", "bias"]
        assert dense.tensor("bias").trainable is False
        assert read.params.total == 3 * 3 * 4 * 6 + 6 + 150 * 5 + 5
        hidden = ref.conv(ref.channels_first(x), conv.tensor("kernel").canonical(),
                          conv.tensor("bias").canonical())  # fmt: skip
        flat = ref.channels_last(hidden).reshape(2, 150)
        out = ref.dense(flat, dense.tensor("kernel").canonical(), dense.tensor("bias").canonical())
    np.testing.assert_allclose(out, y, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# damaged directories


def _copy(trained: dict[str, Any], tmp_path: Path) -> Path:
    folder = tmp_path / "copy"
    shutil.copytree(trained["folder"] / "tf_keras", folder)
    return folder


def _one_line(path: Path, *words: str) -> None:
    result = run_cli("inspect", path)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_truncated_saved_model_pb(trained: dict[str, Any], tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    pb = folder / "saved_model.pb"
    pb.write_bytes(pb.read_bytes()[: pb.stat().st_size // 2])
    _one_line(folder, "damaged TensorFlow SavedModel")


def test_garbled_saved_model_pb(trained: dict[str, Any], tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    (folder / "saved_model.pb").write_bytes(b"\x12\xff\xff\xff\xff\x0f" + b"\0" * 64)
    _one_line(folder, "damaged TensorFlow SavedModel")


def test_missing_variables(trained: dict[str, Any], tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    shutil.rmtree(folder / "variables")
    _one_line(folder, "variables/variables.index", "missing")


def test_missing_shard(trained: dict[str, Any], tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    (folder / "variables" / "variables.data-00000-of-00001").unlink()
    _one_line(folder / "saved_model.pb", "variables.data-00000-of-00001", "missing")


def test_truncated_shard(trained: dict[str, Any], tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    shard = folder / "variables" / "variables.data-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:100])
    _one_line(folder, "lie past the end")


def test_garbled_keras_metadata(trained: dict[str, Any], tmp_path: Path) -> None:
    folder = _copy(trained, tmp_path)
    (folder / "keras_metadata.pb").write_bytes(b"\x0a\x80")
    _one_line(folder, "keras_metadata.pb")


def test_other_directories_are_still_refused(tmp_path: Path) -> None:
    _one_line(tmp_path, "is a directory, not a model file, and it is empty")


WRITER_KEYS = {"name", "zero_output_for_mask"}
"""Config entries the two files write differently for one layer: a Bidirectional's copies are
``forward_gru`` in the SavedModel, ``gru`` (as given) in the .h5 file."""


def _plain(value: Any) -> Any:
    """A config value without what only one writer adds: the SavedModel's ``shared_object_id``
    and ``{"class_name": "__tuple__", "items": [...]}`` tuples, the .h5 file's ``module`` and
    ``registered_name``."""
    if isinstance(value, dict):
        if value.get("class_name") == "__tuple__":
            return [_plain(item) for item in value.get("items", [])]
        extra = {"shared_object_id", "module", "registered_name"}
        return {k: _plain(v) for k, v in value.items() if k not in extra}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def test_same_layers_as_the_keras_h5_file(tmp_path: Path) -> None:
    """A tf-keras model of an embedding, a nested model, recurrent layers, a Bidirectional, a
    TimeDistributed and a layer used twice, saved as SavedModel and as .h5: weightscope reads
    both into the same layers (names, order, kinds, classes, configs, roles, layouts, values,
    trainable flags), the SavedModel's from its Keras metadata and object graph."""
    tf_keras.utils.set_random_seed(5)
    L = tf_keras.layers
    inner = tf_keras.Sequential([L.Input((5, 8)), L.Dense(8, name="inner_dense")], name="inner")
    ids = L.Input((5,), dtype="int32")
    x = inner(L.Embedding(20, 8, name="emb")(ids))
    x = L.LSTM(6, return_sequences=True, name="lstm")(x)
    x = L.Bidirectional(L.GRU(4, return_sequences=True), name="bi")(x)
    x = L.TimeDistributed(L.Dense(3), name="td")(x)
    shared = L.Dense(3, name="shared")
    model = tf_keras.Model(ids, L.SimpleRNN(2, name="rnn")(shared(shared(x))))
    model.get_layer("lstm").trainable = False
    model.save(tmp_path / "saved", save_format="tf")
    model.save(tmp_path / "model.h5")

    def described(layer: weightscope.Layer) -> tuple[Any, ...]:
        tensors = [(t.role, t.native_shape, t.native_layout, t.trainable, t.part, t.declared_init)
                   for t in layer.tensors]  # fmt: skip
        config = {k: _plain(v) for k, v in layer.config.items() if k not in WRITER_KEYS}
        return layer.name, layer.kind, layer.class_name, config, layer.note, tensors

    with (
        weightscope.load(tmp_path / "saved") as saved,
        weightscope.load(tmp_path / "model.h5") as h5,
    ):
        assert [described(layer) for layer in saved.layers] == [
            described(layer) for layer in h5.layers
        ]
        for mine, theirs in zip(saved.tensors(), h5.tensors(), strict=True):
            np.testing.assert_array_equal(mine[1].numpy(), theirs[1].numpy())
        assert saved.params == h5.params
        assert saved.params.total == model.count_params()
        assert saved.params.non_trainable == _weight_sizes(model.non_trainable_weights)


def test_keras3_export_totals_and_kinds(tmp_path: Path) -> None:
    """A Keras 3 model exported with ``model.export``: no Keras metadata, every layer's kind
    from the graph (batch norm from its variables' names), totals equal to Keras' count (the
    export's second copies of the variables listed, not counted), trainable flags as Keras has
    them (a frozen layer's variables are in the root's non-trainable list)."""
    keras.utils.set_random_seed(6)
    L = keras.layers
    inputs = keras.Input((12, 12, 3))
    x = L.Conv2D(6, 3, name="conv")(inputs)
    x = L.BatchNormalization(name="norm")(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise")(x)
    x = L.SeparableConv2D(4, 3, name="separable")(x)
    x = L.Conv2DTranspose(3, 3, strides=2, name="transpose")(x)
    x = L.Conv2D(3, 1, groups=3, name="grouped")(L.Conv2D(6, 1, name="widen")(x))
    model = keras.Model(inputs, L.Dense(4, name="fc")(L.Flatten()(x)))
    model.get_layer("conv").trainable = False  # each variable still records itself trainable
    model.export(tmp_path / "export", verbose=False)
    with weightscope.load(tmp_path / "export") as read:
        assert read.params.total == model.count_params()
        assert read.params.unknown == 0
        assert read.params.non_trainable == _weight_sizes(model.non_trainable_weights)
        kinds = {layer.name: (layer.kind, layer.groups) for layer in read.layers if layer.params}
        assert kinds == {
            "conv": ("conv2d", 1),
            "norm": ("batch_norm", 1),
            "depthwise": ("depthwise_conv2d", 6),
            "separable": ("separable_conv2d", 12),
            "transpose": ("conv_transpose2d", 1),
            "widen": ("conv2d", 1),
            "grouped": ("conv2d", 3),
            "fc": ("dense", 1),
        }
        copies = read.layer("(copies)")
        assert not any(t.counted for t in copies.tensors)
        assert sum(t.size for t in copies.tensors) == model.count_params()
        trainable = {v.path: v.trainable for v in model.weights}
        for _, tensor in read.tensors():
            if tensor.counted:
                assert tensor.trainable is trainable[tensor.name], tensor.name


def test_scan_reads_a_saved_model_once(trained: dict[str, Any], tmp_path: Path) -> None:
    """A folder holding a SavedModel is one model to ``scan``: its ``variables/`` bundle is
    read with ``saved_model.pb``, not as a checkpoint of its own."""
    result = run_cli("scan", trained["folder"] / "tf_keras", "-o", tmp_path / "scan.parquet")
    assert result.returncode == 0, result.stderr
    assert "wrote 1 model to" in result.stdout + result.stderr, result.stdout


def test_wrapper_names_agree_with_the_keras_readers() -> None:
    from weightscope.formats.keras import wrappers
    from weightscope.formats.tensorflow import keras_objects

    assert keras_objects.WRAPPERS == wrappers.WRAPPERS
    assert keras_objects.TIME_DISTRIBUTED == wrappers.TIME_DISTRIBUTED


def test_keras3_export_recurrent_layers(tmp_path: Path) -> None:
    """Keras 3's export of recurrent layers (no Keras metadata): each cell's variables are one
    layer named without the cell, its class told by its kernels' shapes, with the roles,
    layouts, bias parts and values the model's .h5 file gives; the dropout seed generators'
    state listed, not counted; totals equal to Keras' count."""
    keras.utils.set_random_seed(7)
    L = keras.layers
    ids = L.Input((5,), dtype="int32")
    x = L.Embedding(20, 8, name="emb")(ids)
    x = L.LSTM(6, return_sequences=True, dropout=0.1, name="lstm")(x)
    x = L.Bidirectional(L.GRU(4, return_sequences=True), name="bi")(x)
    model = keras.Model(ids, L.SimpleRNN(2, name="rnn")(x))
    model.export(tmp_path / "export", verbose=False)
    model.save(tmp_path / "model.h5")

    def described(layer: weightscope.Layer) -> list[Any]:
        return [(t.role, t.native_shape, t.native_layout, t.part) for t in layer.tensors]

    with (
        weightscope.load(tmp_path / "export") as read,
        weightscope.load(tmp_path / "model.h5") as h5,
    ):
        assert read.params.total == model.count_params()
        assert not any(t.counted for t in read.layer("seed_generators").tensors)
        for name in ("emb", "lstm", "bi/forward_gru", "bi/backward_gru", "rnn"):
            mine, theirs = read.layer(name), h5.layer(name)
            assert mine.kind == theirs.kind, name
            assert described(mine) == described(theirs), name
            for a, b in zip(mine.tensors, theirs.tensors, strict=True):
                np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_deep_object_graph_costs_its_size(tmp_path: Path) -> None:
    """A hostile object graph: a chain of 30,000 objects with 30,000 variables at its end. Each
    variable's path is 30,000 deep; the walk carries what it needs down the tree instead of
    climbing each path back, so reading stays linear (one line or a model, in seconds)."""
    from tensorflow.core.protobuf import saved_model_pb2

    module = tf.Module()
    module.w = tf.Variable(tf.ones((2, 2)))
    tf.saved_model.save(module, str(tmp_path / "deep"))
    pb = tmp_path / "deep" / "saved_model.pb"
    saved = saved_model_pb2.SavedModel.FromString(pb.read_bytes())
    graph = saved.meta_graphs[0].object_graph_def
    count = 30_000
    first = len(graph.nodes)
    graph.nodes[0].children.add(node_id=first, local_name="deep")
    for i in range(count):
        node = graph.nodes.add()
        node.user_object.identifier = "_generic_user_object"
        if i + 1 < count:
            node.children.add(node_id=first + i + 1, local_name="next")
    last = graph.nodes[first + count - 1]
    for i in range(count):
        last.children.add(node_id=first + count + i, local_name=f"v{i}")
        variable = graph.nodes.add().variable
        variable.dtype = 1
        variable.name = f"v{i}"
    pb.write_bytes(saved.SerializeToString())
    result = run_cli("inspect", tmp_path / "deep", timeout=30)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("command", ["inspect", "export", "params", "init", "report"])
def test_commands_read_saved_models(trained: dict[str, Any], tmp_path: Path, command) -> None:
    """The commands that read a file take a SavedModel directory, a Keras 3 export (its second
    copies and seed state in layers of their own, every role distinct) included."""
    keras.utils.set_random_seed(8)
    L = keras.layers
    ids = keras.Input((4,), dtype="int32")
    x = L.LSTM(3, dropout=0.1, name="lstm")(L.Embedding(9, 5, name="emb")(ids))
    model = keras.Model(ids, L.Dense(2, name="fc")(x))
    model.export(tmp_path / "export", verbose=False)
    for folder in (trained["folder"] / "tf_keras", tmp_path / "export"):
        out = {"export": ["-o", tmp_path / "w.npz"], "report": ["-o", tmp_path / "r.html"]}
        result = run_cli(command, folder, *out.get(command, []), timeout=120)
        assert result.returncode == 0, result.stderr


def test_tf1_saved_model(tmp_path: Path) -> None:
    """A TF1 graph saved by ``simple_save``: no object graph, variables named as in the graph,
    trainable as its ``trainable_variables`` collection says; without its variables/ folder,
    one line."""
    v1 = tf.compat.v1
    rng = np.random.default_rng(9)
    kernel = rng.standard_normal((3, 2)).astype(np.float32)
    bias = rng.standard_normal(2).astype(np.float32)
    with tf.Graph().as_default(), v1.Session() as session:
        w = v1.get_variable("dense/kernel", initializer=kernel)
        b = v1.get_variable("dense/bias", initializer=bias, trainable=False)
        x = v1.placeholder(tf.float32, (None, 3))
        session.run(v1.global_variables_initializer())
        v1.saved_model.simple_save(session, str(tmp_path / "tf1"), {"x": x}, {"y": x @ w + b})
    with weightscope.load(tmp_path / "tf1") as read:
        layer = read.layer("dense")
        assert layer.kind == "dense"
        np.testing.assert_array_equal(layer.tensor("kernel").numpy(), kernel)
        np.testing.assert_array_equal(layer.tensor("bias").numpy(), bias)
        assert layer.tensor("kernel").trainable is True
        assert layer.tensor("bias").trainable is False
    shutil.rmtree(tmp_path / "tf1" / "variables")
    _one_line(tmp_path / "tf1", "variables/variables.index", "missing")
