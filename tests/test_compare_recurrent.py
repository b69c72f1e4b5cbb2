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
