"""PyTorch ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN``: one module holds every layer of its stack
and both directions (``weight_ih_l1_reverse``); weightscope makes one layer of each (layer,
direction). A state dict names no class: the kind comes from the gates' count, the rows of
``weight_hh_l0`` over its columns (4 LSTM, 3 GRU, 1 simple RNN), or from a projection
(``weight_hr_l0``: only LSTMs have one)."""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

TENSOR = re.compile(r"(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d{1,4})(_reverse)?")
"""A recurrent module's tensor: its kind, stack layer and direction."""
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
_BY_GATES = {count: kind for kind, count in GATES.items()}


@dataclass(frozen=True)
class Part:
    """Where a tensor of a recurrent module belongs."""

    base: str
    """``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` or ``weight_hr``."""
    layer: int
    reverse: bool

    @property
    def table_name(self) -> str:
        """Its name in the layout table: ``weight_ih_l{k}``."""
        return f"{self.base}_l{{k}}"


def part(attr: str) -> Part | None:
    found = TENSOR.fullmatch(attr)
    if found is None:
        return None
    return Part(found.group(1), int(found.group(2)), found.group(3) is not None)


def is_recurrent(attrs: Collection[str]) -> bool:
    """Whether a module's tensors are those of a recurrent module (and only those)."""
    return "weight_hh_l0" in attrs and all(part(a) is not None for a in attrs)


def infer(shapes: dict[str, tuple[int, ...]]) -> tuple[str, str]:
    """The kind of a recurrent module known only by its tensors, and a note on how."""
    hh = shapes["weight_hh_l0"]
    hr = shapes.get("weight_hr_l0")
    if len(hh) != 2 or (hr is not None and len(hr) != 2):
        return "unknown", "from a state dict: recurrent names, but weights that are not 2-D"
    if hr is not None:
        hidden = hr[1]
        if hidden and hh[0] == 4 * hidden:
            return "lstm", (
                f"from a state dict: a projection (weight_hr_l0) makes an LSTM; "
                f"{hh[0]} rows of weight_hh_l0 = 4 gates x {hidden} hidden units"
            )
        return "unknown", "from a state dict: a projection whose width fits no LSTM"
    rows, columns = hh
    gates = rows // columns if columns and rows % columns == 0 else 0
    kind = _BY_GATES.get(gates)
    if kind is None:
        return "unknown", (
            f"from a state dict: weight_hh_l0 {rows}x{columns} fits no LSTM, GRU or RNN"
        )
    note = (
        f"from a state dict: weight_hh_l0 has {gates} x {columns} rows: "
        + {"lstm": "an LSTM", "gru": "a GRU", "simple_rnn": "a simple RNN"}[kind]
    )
    if kind == "simple_rnn":
        note += " (tanh or relu: a state dict does not say)"
    return kind, note


def layer_name(module: str, layer: int, reverse: bool, single: bool) -> str:
    """``rnn`` for a one-layer one-direction module, else ``rnn.l0``, ``rnn.l0_reverse``..."""
    if single:
        return module
    own = f"l{layer}" + ("_reverse" if reverse else "")
    return own if module == "(root)" else f"{module}.{own}"


def fits(kind: str, base: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor's gate axis splits into the kind's gates (a hostile file's may not)."""
    if base == "weight_hr":
        return len(shape) == 2
    rank = 2 if base.startswith("weight") else 1
    return len(shape) == rank and shape[0] % GATES[kind] == 0
