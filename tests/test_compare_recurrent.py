"""``compare`` on recurrent layers: gates copied in another order are found and named, the
other tensors of the layer follow the same reordering, and a layer whose gates are in order is
identical."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import weightscope  # noqa: E402

UNITS, FEATURES = 3, 5


def _lstm_file(path: Path, weights: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """A Keras LSTM saved to ``path`` (random weights, or ``weights``); its weights."""
    keras.utils.set_random_seed(7)
    inputs = keras.Input((4, FEATURES))
    layer = keras.layers.LSTM(UNITS, return_sequences=True, name="lstm")
    model = keras.Model(inputs, layer(inputs))
    if weights is None:
        rng = np.random.default_rng(3)
        weights = [rng.standard_normal(w.shape).astype(np.float32) for w in layer.get_weights()]
    layer.set_weights(weights)
    model.save(path)
    return weights


def _gates_reordered(weights: list[np.ndarray], order: list[int]) -> list[np.ndarray]:
    """Every tensor's gate blocks (its last axis, 4 * units) taken in ``order``."""
    return [np.concatenate([np.split(w, 4, axis=-1)[g] for g in order], axis=-1) for w in weights]


def test_a_gate_reordering_is_found_and_named(tmp_path: Path) -> None:
    stored = _lstm_file(tmp_path / "a.keras")
    # the port put forget where input goes and input where forget goes (Keras order i,f,c,o)
    _lstm_file(tmp_path / "b.keras", _gates_reordered(stored, [1, 0, 2, 3]))
    result = weightscope.compare(tmp_path / "a.keras", tmp_path / "b.keras")
    (pair,) = result.pairs
    assert pair.kind == "lstm"
    assert pair.transform == "gate_order(i,f,g,o->f,i,g,o)"
    assert pair.match
    by_role = {t.role: t for t in pair.tensors}
    assert set(by_role) == {"kernel", "recurrent_kernel", "bias"}
    assert all(t.match and t.transform == pair.transform for t in by_role.values())
    assert result.verdict == "transformed"


def test_gates_in_order_are_identical(tmp_path: Path) -> None:
    stored = _lstm_file(tmp_path / "a.keras")
    _lstm_file(tmp_path / "b.keras", stored)
    result = weightscope.compare(tmp_path / "a.keras", tmp_path / "b.keras")
    assert [p.transform for p in result.pairs] == ["identity"]
    assert result.verdict == "identical"


def test_gates_that_are_not_a_reordering_differ(tmp_path: Path) -> None:
    stored = _lstm_file(tmp_path / "a.keras")
    changed = [w.copy() for w in stored]
    changed[0][:, :UNITS] += 1.0  # the input gate's kernel changed, nothing moved
    _lstm_file(tmp_path / "b.keras", changed)
    result = weightscope.compare(tmp_path / "a.keras", tmp_path / "b.keras")
    (pair,) = result.pairs
    assert not pair.match and pair.transform == "none"


# ---------------------------------------------------------------------------------------------
# a Keras LSTM ported to ONNX by hand: right, and with the gates copied in Keras' order


def _onnx_lstm(
    path: Path,
    kernel: np.ndarray,
    recurrent: np.ndarray,
    bias: np.ndarray,
    recurrent_bias: np.ndarray | None = None,
) -> None:
    """An ONNX LSTM node whose ``W``, ``R``, ``B`` hold ``kernel.T``, ``recurrent.T``, ``bias``
    and ``recurrent_bias`` (zeros by default), gate blocks in the order given."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    inits = [
        numpy_helper.from_array(kernel.T[None].astype(np.float32), "W"),
        numpy_helper.from_array(recurrent.T[None].astype(np.float32), "R"),
        numpy_helper.from_array(
            np.concatenate(
                [bias, np.zeros_like(bias) if recurrent_bias is None else recurrent_bias]
            )[None].astype(np.float32),
            "B",
        ),
    ]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], "lstm", hidden_size=UNITS)
    graph = helper.make_graph(
        [node], "port", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 1, FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def _keras_to_onnx_order(w: np.ndarray) -> np.ndarray:
    """Keras' gate blocks i, f, c, o (last axis) in ONNX's order i, o, f, c."""
    i, f, c, o = np.split(w, 4, axis=-1)
    return np.concatenate([i, o, f, c], axis=-1)


def test_a_port_with_keras_gates_copied_into_onnx_is_named(tmp_path: Path) -> None:
    kernel, recurrent, bias = _lstm_file(tmp_path / "a.keras")
    _onnx_lstm(tmp_path / "copied.onnx", kernel, recurrent, bias)  # gates not reordered
    result = weightscope.compare(tmp_path / "a.keras", tmp_path / "copied.onnx")
    (pair,) = result.pairs
    assert pair.transform == "gate_order(i,f,c,o->i,o,f,c)" and pair.match, pair.note
    by_role = {t.role: t for t in pair.tensors}
    assert by_role["kernel"].match and by_role["recurrent_kernel"].match and by_role["bias"].match
    assert any("bias compared as bias + recurrent_bias of B" in note for note in pair.notes)


def test_a_right_port_to_onnx_is_identical_and_computes_the_same(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    kernel, recurrent, bias = _lstm_file(tmp_path / "a.keras")
    path = tmp_path / "right.onnx"
    _onnx_lstm(path, *(_keras_to_onnx_order(w) for w in (kernel, recurrent, bias)))
    result = weightscope.compare(tmp_path / "a.keras", path)
    (pair,) = result.pairs
    assert pair.transform == "identity" and pair.match, pair.note
    # and it is a right port: ONNX computes what Keras computes
    x = np.random.default_rng(0).standard_normal((1, 4, FEATURES)).astype(np.float32)
    expected = keras.models.load_model(tmp_path / "a.keras")(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": x.transpose(1, 0, 2)})  # (steps, dirs, batch, units)
    np.testing.assert_allclose(y[:, 0].transpose(1, 0, 2), expected, atol=1e-5, rtol=1e-5)


def test_a_keras_bias_split_between_onnx_biases_is_the_same_bias(tmp_path: Path) -> None:
    """An LSTM's two biases act only as their sum: a port that puts half of Keras' one bias in
    each is right, and compare says identity; a bias moved between gates is not."""
    kernel, recurrent, bias = _lstm_file(tmp_path / "a.keras")
    ordered = [_keras_to_onnx_order(w) for w in (kernel, recurrent, bias)]
    _onnx_lstm(tmp_path / "halves.onnx", *ordered, recurrent_bias=ordered[2] / 2)
    halves = [*ordered[:2], ordered[2] / 2]
    _onnx_lstm(tmp_path / "split.onnx", *halves, recurrent_bias=ordered[2] / 2)
    result = weightscope.compare(tmp_path / "a.keras", tmp_path / "split.onnx")
    (pair,) = result.pairs
    assert pair.transform == "identity" and pair.match, pair.note
    result = weightscope.compare(tmp_path / "a.keras", tmp_path / "halves.onnx")
    (pair,) = result.pairs
    assert not pair.match  # 1.5 times the bias
    assert [t.role for t in pair.tensors if not t.match] == ["bias"]


def test_a_torch_gru_copied_into_keras_unreordered_is_named(tmp_path: Path) -> None:
    """PyTorch stores a GRU's gates r, z, n, Keras z, r, h: weights copied without reordering
    swap the update and reset gates."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(3)
    gru = torch.nn.GRU(FEATURES, UNITS, batch_first=True)
    torch.save(gru.state_dict(), tmp_path / "gru.pt")
    w = {name: p.detach().numpy() for name, p in gru.named_parameters()}
    inputs = keras.Input((4, FEATURES))
    layer = keras.layers.GRU(UNITS, return_sequences=True, name="gru")
    model = keras.Model(inputs, layer(inputs))
    copied = [
        w["weight_ih_l0"].T,
        w["weight_hh_l0"].T,
        np.stack([w["bias_ih_l0"], w["bias_hh_l0"]]),
    ]
    layer.set_weights(copied)
    model.save(tmp_path / "gru.keras")
    result = weightscope.compare(tmp_path / "gru.pt", tmp_path / "gru.keras")
    (pair,) = result.pairs
    assert pair.kind == "gru" and pair.match, pair.note
    assert pair.transform == "gate_order(r,z,n->z,r,h)"
    assert {t.role for t in pair.tensors} == {
        "kernel",
        "recurrent_kernel",
        "bias",
        "recurrent_bias",
    }
