"""ONNX ``LSTM``, ``GRU`` and ``RNN`` nodes read as one weightscope layer per direction (``n``
and ``n/reverse``), their kernels and biases parts of the stored ``W``, ``R`` and ``B``: written
by the torch exporter from ``nn.LSTM``/``nn.GRU``/``nn.RNN`` (two layers, bidirectional), by
tf2onnx from a Keras LSTM, and with ``onnx.helper`` (a GRU with ``linear_before_reset=0``);
onnxruntime's output of the whole file is recomputed from weightscope's canonical tensors with
``reference.canonical_recurrent`` (full sequence, both directions) to 1e-5."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

import onnx_builders as ob  # noqa: E402
import reference as ref  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import weightscope  # noqa: E402

ATOL = RTOL = 1e-5
KINDS = {"LSTM": "lstm", "GRU": "gru", "RNN": "simple_rnn"}


def _run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(v) for v in session.run(None, feeds)]


def _float_stored(path: Path) -> int:
    """Elements of every floating-point tensor the file stores (as onnx reads it)."""
    stored = ob.stored_tensors(onnx.load(path))
    return sum(v.size for v in stored.values() if v.dtype.kind == "f")


def _bidirectional(kind: str, x: np.ndarray, forward, backward, **options) -> np.ndarray:  # type: ignore[no-untyped-def]
    """A bidirectional layer's output ``(N, T, 2 * units)``: the backward direction reads the
    sequence from its end, its outputs aligned with the steps they were computed at."""
    ahead = ref.canonical_recurrent_layer(kind, x, forward, **options)
    behind = ref.canonical_recurrent_layer(kind, x, backward, go_backwards=True, **options)
    return np.concatenate([ahead, behind[:, ::-1]], axis=-1)


# ---------------------------------------------------------------------------------------------
# the torch exporter


def _torch_gates(kind: str) -> str:
    return {"lstm": "ifgo", "gru": "rzn", "simple_rnn": "h"}[kind]


@pytest.mark.parametrize("op", ["LSTM", "GRU", "RNN"])
def test_torch_export_two_layers_bidirectional(tmp_path: Path, op: str) -> None:
    torch = pytest.importorskip("torch")
    kind = KINDS[op]
    torch.manual_seed(0)
    module = getattr(torch.nn, op)(5, 4, num_layers=2, bidirectional=True, batch_first=True)
    module.eval()
    x = np.random.default_rng(1).standard_normal((3, 7, 5)).astype(np.float32)
    path = tmp_path / f"{op}.onnx"

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = module

        def forward(self, inputs):  # type: ignore[no-untyped-def]
            return self.rnn(inputs)[0]

    torch.onnx.export(
        Wrapper(), (torch.from_numpy(x),), str(path), input_names=["x"], output_names=["y"],
        opset_version=17, dynamo=False,
    )  # fmt: skip
    (expected,) = _run(path, {"x": x})
    state = {k: v.detach().numpy() for k, v in module.state_dict().items()}
    with weightscope.load(path) as model:
        layers = [layer for layer in model.layers if layer.kind == kind]
        assert len(layers) == 4, [(layer.name, layer.kind_label) for layer in model.layers]
        for stack in (0, 1):
            forward, backward = layers[2 * stack : 2 * stack + 2]
            assert backward.name == f"{forward.name}/reverse"
            assert (forward.config["go_backwards"], backward.config["go_backwards"]) == (
                False,
                True,
            )
            assert forward.config["hidden_size"] == 4
            assert forward.config["direction"] == "bidirectional"
            if kind == "gru":  # torch's GRU is ONNX's linear_before_reset=1
                assert forward.config["reset_after"] is True
            for layer, suffix in ((forward, ""), (backward, "_reverse")):
                kernel = layer.tensor("kernel")
                assert kernel.native_layout == {"lstm": "{iofc}I", "gru": "{zrh}I"}.get(
                    kind, "{h}I"
                )
                assert kernel.part == f"[{int(bool(suffix))}]"
                assert layer.tensor("bias").part.endswith(
                    ":" + str(len(_torch_gates(kind)) * 4) + "]"
                )
                # the canonical tensors are torch's own, put in canonical gate order
                permutation = [
                    _torch_gates(kind).index(g)
                    for g in {"lstm": "ifgo", "gru": "zrn", "simple_rnn": "h"}[kind]
                ]
                for role, name in (
                    ("kernel", "weight_ih"),
                    ("recurrent_kernel", "weight_hh"),
                    ("bias", "bias_ih"),
                    ("recurrent_bias", "bias_hh"),
                ):
                    torch_value = state[f"{name}_l{stack}{suffix}"]
                    gates = len(permutation)
                    split = torch_value.reshape(gates, 4, *torch_value.shape[1:])[permutation]
                    np.testing.assert_array_equal(layer.tensor(role).canonical(), split)
        # recompute the whole stack from the canonical tensors
        h = x.astype(np.float64)
        for stack in (0, 1):
            forward, backward = layers[2 * stack : 2 * stack + 2]
            h = _bidirectional(kind, h, forward, backward)
        np.testing.assert_allclose(h, expected, atol=ATOL, rtol=RTOL)
        # W, R and B are split into parts that cover them exactly: each counted once
        assert model.params.total == _float_stored(path)
        assert all(t.counted for layer in layers for t in layer.tensors)
    assert model.params.total >= sum(v.size for v in state.values())


# ---------------------------------------------------------------------------------------------
# onnx.helper: GRU with linear_before_reset=0, LSTM with peepholes, hostile shapes


def _gru_model(
    rng: np.random.Generator, linear_before_reset: int, hidden: int = 3, inputs: int = 4
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    arrays = {
        "W": rng.standard_normal((2, 3 * hidden, inputs)).astype(np.float32) * 0.5,
        "R": rng.standard_normal((2, 3 * hidden, hidden)).astype(np.float32) * 0.5,
        "B": rng.standard_normal((2, 6 * hidden)).astype(np.float32) * 0.5,
    }
    node = helper.make_node(
        "GRU", ["x", "W", "R", "B"], ["y"], "gru", hidden_size=hidden,
        direction="bidirectional", linear_before_reset=linear_before_reset,
    )  # fmt: skip
    graph = ob.graph(
        [node],
        [ob.value_info("x", TensorProto.FLOAT, ["T", "N", inputs])],
        [ob.value_info("y", TensorProto.FLOAT, ["T", 2, "N", hidden])],
        [ob.tensor(k, v) for k, v in arrays.items()],
    )
    return ob.model(graph), arrays


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_helper_gru_linear_before_reset(tmp_path: Path, linear_before_reset: int) -> None:
    rng = np.random.default_rng(7)
    proto, arrays = _gru_model(rng, linear_before_reset)
    path = tmp_path / "gru.onnx"
    onnx.save(proto, path)
    x = rng.standard_normal((6, 2, 4)).astype(np.float32)  # ONNX layout 0: (T, N, in)
    (y,) = _run(path, {"x": x})  # (T, directions, N, hidden)
    with weightscope.load(path) as model:
        forward, backward = model.layer("gru"), model.layer("gru/reverse")
        reset_after = bool(linear_before_reset)
        assert forward.config["reset_after"] is reset_after
        assert backward.config["reset_after"] is reset_after
        batch_first = x.transpose(1, 0, 2).astype(np.float64)
        mine = _bidirectional("gru", batch_first, forward, backward, reset_after=reset_after)
        expected = np.concatenate([y[:, 0], y[:, 1]], axis=-1).transpose(1, 0, 2)
        np.testing.assert_allclose(mine, expected, atol=ATOL, rtol=RTOL)
        # the wrong reset mode does not reproduce it: the test tells them apart
        wrong = _bidirectional("gru", batch_first, forward, backward, reset_after=not reset_after)
        assert not np.allclose(wrong, expected, atol=1e-3)
        assert model.params.total == sum(a.size for a in arrays.values())
        # parts: B[1, :9] is the backward input bias, B[1, 9:] its recurrent bias
        bias = backward.tensor("recurrent_bias")
        assert (bias.name, bias.part, bias.native_shape) == ("B", "[1, 9:]", (9,))
        np.testing.assert_array_equal(bias.numpy(), arrays["B"][1, 9:])


def test_lstm_peepholes_and_options_are_said(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    h, n_in = 2, 3
    arrays = {
        "W": rng.standard_normal((1, 4 * h, n_in)).astype(np.float32),
        "R": rng.standard_normal((1, 4 * h, h)).astype(np.float32),
        "B": rng.standard_normal((1, 8 * h)).astype(np.float32),
        "P": rng.standard_normal((1, 3 * h)).astype(np.float32),
    }
    node = helper.make_node(
        "LSTM", ["x", "W", "R", "B", "", "", "", "P"], ["y"], "lstm", hidden_size=h,
        direction="reverse", clip=2.0, activations=["Sigmoid", "Relu", "Tanh"],
    )  # fmt: skip
    graph = ob.graph(
        [node],
        [ob.value_info("x", TensorProto.FLOAT, [5, 1, n_in])],
        [ob.value_info("y", TensorProto.FLOAT, [5, 1, 1, h])],
        [ob.tensor(k, v) for k, v in arrays.items()],
    )
    with weightscope.load(ob.model(graph)) as model:
        (layer,) = model.layers
        assert (layer.name, layer.kind, layer.config["go_backwards"]) == ("lstm", "lstm", True)
        peephole = layer.tensor("peephole")
        assert (peephole.native_layout, peephole.counted, peephole.part) == (None, True, "[0]")
        assert "peephole" in layer.note and "without a canonical layout" in layer.note
        assert "clipped" in layer.note and "Relu" in layer.note
        assert model.params.total == sum(a.size for a in arrays.values())


@pytest.mark.parametrize(
    ("shapes", "said"),
    [
        ({"W": (2, 9, 4)}, "W (2, 9, 4) is not"),  # one direction declared, two stored
        ({"W": (1, 12, 4)}, "W (1, 12, 4) is not"),  # four gates, not three
        ({"B": (1, 20)}, "B (1, 20) is not (1, 18)"),
        ({"R": (1, 9, 5)}, "R (1, 9, 5) does not hold 3"),
    ],
)
def test_recurrent_shapes_that_do_not_fit_are_unknown(
    shapes: dict[str, tuple[int, ...]], said: str
) -> None:
    """Stored W/R/B that do not fit the node's directions and hidden size: an ``unknown``
    layer that says why, its tensors listed whole; never a crash."""
    base = {"W": (1, 9, 4), "R": (1, 9, 3), "B": (1, 18)}
    base.update(shapes)
    node = helper.make_node("GRU", ["x", "W", "R", "B"], ["y"], "gru", hidden_size=3)
    graph = helper.make_graph(
        [node], "g", [ob.value_info("x", TensorProto.FLOAT, None)],
        [ob.value_info("y", TensorProto.FLOAT, None)],
        [ob.tensor(k, np.ones(v, np.float32)) for k, v in base.items()],
    )  # fmt: skip
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", ob.OPSET)])
    with weightscope.load(proto) as model:
        (layer,) = model.layers
        assert layer.kind_label == "unknown (GRU)"
        assert said in layer.note
        assert model.params.total == sum(int(np.prod(v)) for v in base.values())


# ---------------------------------------------------------------------------------------------
# tf2onnx


def test_keras_lstm_through_tf2onnx(tmp_path: Path) -> None:
    """A Keras (tf-keras) bidirectional LSTM converted by tf2onnx: its ONNX LSTM node read and
    recomputed against onnxruntime (install: ``pip install --no-deps tf2onnx==1.17.0``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf2onnx = pytest.importorskip("tf2onnx")
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(2)
    inputs = tf_keras.Input((6, 3))
    lstm = tf_keras.layers.LSTM(4, return_sequences=True, name="lstm")
    outputs = tf_keras.layers.Bidirectional(lstm, name="bi")(inputs)
    keras_model = tf_keras.Model(inputs, outputs)
    for weight in keras_model.weights:  # non-zero biases: every bias is exercised
        weight.assign(np.random.default_rng(5).standard_normal(weight.shape) * 0.5)
    spec = (tf.TensorSpec((None, 6, 3), tf.float32, name="x"),)
    proto, _ = tf2onnx.convert.from_keras(keras_model, input_signature=spec, opset=17)
    path = tmp_path / "keras_lstm.onnx"
    onnx.save(proto, path)
    x = np.random.default_rng(6).standard_normal((2, 6, 3)).astype(np.float32)
    (expected,) = _run(path, {"x": x})
    np.testing.assert_allclose(expected, keras_model(x).numpy(), atol=1e-5, rtol=1e-5)
    with weightscope.load(path) as model:
        layers = [layer for layer in model.layers if layer.kind == "lstm"]
        assert [layer.name for layer in layers] == [layers[0].name, f"{layers[0].name}/reverse"]
        mine = _bidirectional("lstm", x.astype(np.float64), *layers)
        np.testing.assert_allclose(mine, expected, atol=ATOL, rtol=RTOL)
        # Keras' own kernel (in, 4 * units) in gates i, f, c, o is the canonical one
        kernel = keras_model.get_layer("bi").forward_layer.weights[0].numpy()
        canonical = kernel.reshape(3, 4, 4).transpose(1, 2, 0)
        np.testing.assert_allclose(layers[0].tensor("kernel").canonical(), canonical, rtol=1e-6)
