"""``explain`` and ``params`` on recurrent layers: the gates named in words, the weights each
holds, and a parameter formula that gives what the framework counts."""

from __future__ import annotations

from pathlib import Path

import pytest

keras = pytest.importorskip("keras")

import weightscope  # noqa: E402
from weightscope.analysis.params import verify  # noqa: E402


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    inputs = keras.Input((6, 7))
    h = keras.layers.LSTM(5, return_sequences=True, name="lstm")(inputs)
    h = keras.layers.GRU(4, return_sequences=True, name="gru")(h)
    h = keras.layers.GRU(3, reset_after=False, return_sequences=True, name="gru_before")(h)
    out = keras.layers.SimpleRNN(2, name="rnn")(h)
    model = keras.Model(inputs, out)
    path = tmp_path_factory.mktemp("explain") / "rnn.keras"
    model.save(path)
    return path, {layer.name: layer.count_params() for layer in model.layers[1:]}


def test_explain_names_each_gate_and_its_weights(model_file: tuple[Path, dict[str, int]]) -> None:
    path, counts = model_file
    with weightscope.load(path) as model:
        lstm = model.layer("lstm").explain()
        gru = model.layer("gru").explain()
        before = model.layer("gru_before").explain()
        rnn = model.layer("rnn").explain()
    assert "4 gates of 5 units each" in lstm
    for words in ("i (input gate)", "f (forget gate)", "g (cell candidate)", "o (output gate)"):
        assert words in lstm
    # 5 x 7 input + 5 x 5 recurrent + 5 bias = 65 per gate
    assert "= 65 weights; 4 x 65 = 260." in lstm and counts["lstm"] == 260
    assert "The file stores the gates in the order i,f,c,o (canonical order i,f,g,o here)." in lstm
    assert "z (update gate)" in gru and "r (reset gate)" in gru and "n (candidate state)" in gru
    assert "the reset after the product" in gru and "the reset before the product" in before
    # a reset_after GRU has both biases: 4 x 5 + 4 x 4 + 2 x 4 = 44 per gate
    assert f"3 x 44 = {counts['gru']}." in gru
    assert f"3 x {counts['gru_before'] // 3} = {counts['gru_before']}." in before
    assert "a new state of 2 units" in rnn and f"= {counts['rnn']}." in rnn


def test_params_formula_gives_what_keras_counts(model_file: tuple[Path, dict[str, int]]) -> None:
    path, counts = model_file
    with weightscope.load(path) as model:
        report = verify(model)
    for layer in report.layers:
        assert layer.formula == counts[layer.name] == layer.stored, (layer.name, layer.issues)
        assert not layer.issues, layer.issues
