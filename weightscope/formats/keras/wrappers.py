"""Keras' wrapper layers, unwrapped into the layers they hold.

``TimeDistributed`` applies one inner layer at every time step: it stands for that layer (its
kind, layouts and declared initializers) under the wrapper's name. ``Bidirectional`` holds two
recurrent layers run in opposite directions: they become two layers, ``<wrapper>/<forward>`` and
``<wrapper>/<backward>``, named as Keras names them (``forward_lstm``, ``backward_lstm``).

What the files keep of them:

- legacy ``.h5``, Keras 2 (tf-keras, and Keras from 2.0): the inner layer's variables under the
  wrapper's scope, ``time_distributed/kernel:0``; a Bidirectional's forward layer's, then its
  backward layer's, ``bidirectional/forward_lstm/lstm_cell/kernel:0``, ...
  ``bidirectional/backward_lstm/lstm_cell/kernel:0`` (Keras 2.0 had no scope per direction:
  ``bidirectional_1/kernel:0`` ... ``bidirectional_1/kernel_1:0``, told apart, as Keras' own
  ``set_weights`` does, by halves).
- legacy ``.h5``, Keras 3: whole paths, ``time_distributed/conv2d/kernel``; a backward layer
  the model was given keeps its own name (``bidirectional/gru/gru_cell/kernel``).
- Keras 3 weights store: ``time_distributed/layer/vars/0``, ``bidirectional/forward_layer/cell/
  vars/0`` and ``backward_layer/...``; since Keras 3.6 each ``vars`` group names its layer.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence

from weightscope.formats.keras import catalog
from weightscope.formats.keras.layers import LayerConfig, Variable, layer_config
from weightscope.model import Layer

TIME_DISTRIBUTED = "TimeDistributed"
BIDIRECTIONAL = "Bidirectional"
WRAPPERS = frozenset({TIME_DISTRIBUTED, BIDIRECTIONAL})

FORWARD = "forward"
BACKWARD = "backward"
DIRECTIONS = (FORWARD, BACKWARD)

STORE_KEYS = {TIME_DISTRIBUTED: ("layer",), BIDIRECTIONAL: ("forward_layer", "backward_layer")}
"""The groups of a Keras 3 store that hold a wrapper's layers, in the order Keras lists their
variables."""


def wrapper_class(layer_config: LayerConfig | None) -> str | None:
    """``TimeDistributed`` or ``Bidirectional`` when the config is one of them, else None."""
    if layer_config is None:
        return None
    name = catalog.canonical_class(layer_config.class_name)
    return name if name in WRAPPERS else None


def inner_config(wrapper: LayerConfig) -> LayerConfig | None:
    """The layer a ``TimeDistributed`` applies, frozen when the wrapper is; None when the
    config does not say."""
    return layer_config(wrapper.config.get("layer"), wrapper.trainable)


def direction_configs(wrapper: LayerConfig) -> tuple[LayerConfig, LayerConfig] | None:
    """The forward and backward layers of a ``Bidirectional``: the backward one as the config
    gives it (Keras 3 always, Keras 2 when the model was given one), else Keras' own copy of the
    forward one with ``go_backwards`` flipped. None when the config does not say."""
    forward = layer_config(wrapper.config.get("layer"), wrapper.trainable)
    if forward is None:
        return None
    if wrapper.config.get("backward_layer") is None:
        config = dict(forward.config)
        config["go_backwards"] = not forward.config.get("go_backwards", False)
        return forward, LayerConfig(forward.name, forward.class_name, config, forward.trainable)
    backward = layer_config(wrapper.config["backward_layer"], wrapper.trainable)
    return None if backward is None else (forward, backward)


def direction_name(direction: str, config_name: str | None, seen: Collection[str]) -> str:
    """The name Keras gave a Bidirectional's ``direction`` layer: Keras 2 prefixes the name in
    the config (``lstm`` -> ``forward_lstm``), Keras 3 writes the prefixed name in the config,
    and a backward layer the model was given keeps its name in Keras 3. ``seen`` holds the names
    the file shows (variable scopes, a store's ``vars`` name), which settle it."""
    prefix = f"{direction}_"
    if config_name is None:
        return next((name for name in seen if name.startswith(prefix)), direction)
    prefixed = config_name if config_name.startswith(prefix) else prefix + config_name
    for candidate in (prefixed, config_name):
        if candidate in seen:
            return candidate
    return prefixed


def scopes(variables: Sequence[Variable]) -> set[str]:
    """Every scope component of the variables' stored names (``a/b/kernel:0`` -> a, b)."""
    return {part for v in variables for part in v.stored_name.split("/")[:-1]}


def split_directions(
    variables: Sequence[Variable], names: tuple[str, str] | None
) -> tuple[list[Variable], list[Variable]] | None:
    """A Bidirectional's variables, forward then backward, as Keras lists them: by the scope
    that names each direction's layer (``names``, or any ``forward_``/``backward_`` scope), else,
    for Keras 2.0's unscoped names, in halves of matching roles. None when neither tells them
    apart."""
    sides: list[int] = []
    for variable in variables:
        scope = variable.stored_name.split("/")[:-1]
        if names is None:
            hits = {i for i, d in enumerate(DIRECTIONS) for p in scope if p.startswith(f"{d}_")}
        else:
            hits = {i for i, name in enumerate(names) if name in scope}
        if len(hits) != 1:
            break
        sides.append(hits.pop())
    else:
        if sides == sorted(sides) and set(sides) == {0, 1}:
            count = sides.count(0)
            return list(variables[:count]), list(variables[count:])
    return _halves(variables)


_NUMBERED = re.compile(r"^(.*)_\d+$")


def _halves(variables: Sequence[Variable]) -> tuple[list[Variable], list[Variable]] | None:
    """Keras 2.0 built both directions in the wrapper's scope, so the backward layer's names got
    TensorFlow's ``_1`` (``kernel:0``, ..., ``kernel_1:0``): halves whose roles then match. The
    backward half's roles lose that suffix."""
    if not variables or len(variables) % 2:
        return None
    half = len(variables) // 2
    forward, backward = variables[:half], variables[half:]
    roles = [catalog.short_role(v.stored_name) for v in forward]
    renamed = []
    for role, variable in zip(roles, backward, strict=True):
        short = catalog.short_role(variable.stored_name)
        match = _NUMBERED.match(short)
        if short != role and (match is None or match.group(1) != role):
            return None
        renamed.append(Variable(variable.stored_name, role, variable.dataset))
    return list(forward), renamed


def time_distributed_note(wrapper: str, inner: str | None) -> str:
    what = f"the {inner} it applies" if inner else "the layer it applies"
    return f"TimeDistributed {wrapper!r} unwrapped: {what} at every time step"


def direction_note(direction: str, wrapper: str | None) -> str:
    """``wrapper``: the Bidirectional's name, None where the file does not say it."""
    of = "a Bidirectional" if wrapper is None else f"Bidirectional {wrapper!r}"
    return f"the {direction} layer of {of}"


def unsplit_note() -> str:
    return "its forward and backward variables could not be told apart: kept as one layer"


def noted(layers: list[Layer], note: str) -> list[Layer]:
    """``layers`` with ``note`` put before what each already says."""
    for layer in layers:
        layer.note = note if not layer.note else f"{note}; {layer.note}"
    return layers
