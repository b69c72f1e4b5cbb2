"""The recurrent layouts of the table (a gate axis such as ``{ifco}``), element by element."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from weightscope import layouts

GATED = sorted(layout for layout in layouts.LAYOUTS if layouts.gate_axis(layout) is not None)
UNITS, INPUTS = 3, 5


def _shape(layout: str) -> tuple[int, ...]:
    index, gates = layouts.gate_axis(layout)  # type: ignore[misc]
    shape = [INPUTS] * layouts.rank(layout)
    shape[index] = len(gates) * UNITS
    return tuple(shape)


def test_every_framework_has_each_recurrent_kind() -> None:
    """Keras, PyTorch and ONNX (TFLite's recurrent operators are not read yet)."""
    for kind in layouts.CANONICAL_GATES:
        assert {u.framework for u in layouts.uses(kind=kind)} == {"keras", "pytorch", "onnx"}, kind


@pytest.mark.parametrize("layout", GATED)
def test_every_gate_layout_maps_each_element_by_its_gate(layout) -> None:
    """Element ``[.., gate * units + unit, ..]`` of the stored tensor (gate in the stored order)
    is ``[canonical position of that gate, unit, ..]`` in canonical form."""
    shape = _shape(layout)
    native = np.arange(np.prod(shape)).reshape(shape)
    canonical = layouts.to_canonical(native, layout)
    index, gates = layouts.gate_axis(layout)  # type: ignore[misc]
    order = layouts.canonical_gates(gates)

    assert canonical.shape == layouts.canonical_shape(shape, layout)
    assert canonical.shape[:2] == (len(gates), UNITS)
    assert layouts.canonical_layout(layout) == ("GUI" if len(shape) == 2 else "GU")
    np.testing.assert_array_equal(np.sort(canonical, axis=None), native.ravel())
    synonyms = {"c": "g"} if layouts.gate_family(gates) == "lstm" else {}
    if layouts.gate_family(gates) == "gru":
        synonyms = {"h": "n"}
    packed = layout.endswith(layouts.CUDNN_PACKED)
    for position in itertools.product(*(range(n) for n in shape)):
        gate, unit = divmod(position[index], UNITS)
        letter = synonyms.get(gates[gate], gates[gate])
        rest = tuple(p for i, p in enumerate(position) if i != index)
        if packed:  # the gate's (in, units) block holds its (units, in) matrix row-major
            unit, column = divmod(position[0] * UNITS + unit, shape[0])
            rest = (column,)
        assert canonical[(order.index(letter), unit, *rest)] == native[position], position


@pytest.mark.parametrize(
    ("gates", "canonical"),
    [("ifco", "ifgo"), ("ifgo", "ifgo"), ("iofc", "ifgo"), ("zrh", "zrn"), ("rzn", "zrn"),
     ("h", "h"), ("iof", "ifo")],
)  # fmt: skip
def test_gate_orders(gates, canonical) -> None:
    assert layouts.canonical_gates(gates) == canonical
    permutation = layouts.gate_permutation(gates)
    named = {"c": "g"} if layouts.gate_family(gates) == "lstm" else {"h": "n"}
    if gates == "h":
        named = {}
    assert "".join(named.get(gates[i], gates[i]) for i in permutation) == canonical


def test_a_gate_named_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        layouts.gate_permutation("icgo")
