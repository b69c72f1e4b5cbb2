"""Keras' recurrent layers: ``LSTM``, ``GRU``, ``SimpleRNN`` and Keras 2's ``CuDNNLSTM`` and
``CuDNNGRU``. Their cell's variables are a kernel ``(in, gates * units)``, a recurrent kernel
``(units, gates * units)`` and a bias, which holds one stored tensor for two canonical roles
where the layer keeps an input-side and a recurrent-side bias: a ``GRU(reset_after=True)``'s
``(2, 3 * units)`` (rows), a CuDNN layer's ``2 * gates * units`` (halves). Layouts come from the
layout table; this module says how the stored tensors split, what shapes fit a class, and what
a config says that the canonical computation (tanh, sigmoid gates) does not assume."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from weightscope.model import PartIndex

GATES = {"SimpleRNN": 1, "GRU": 3, "LSTM": 4, "CuDNNGRU": 3, "CuDNNLSTM": 4}
"""Keras' recurrent layer classes by their number of gates."""

CUDNN = frozenset({"CuDNNLSTM", "CuDNNGRU"})
CUDNN_PACKING = (
    "cuDNN keeps each gate's (units, in) matrix row-major in that gate's (in, units) block of "
    "the kernel (and its (units, units) matrix untransposed in the recurrent kernel's), as "
    "tf-keras' conversion to LSTM / GRU shows: no layout of the table expresses that yet"
)

Index = PartIndex

ACTIVATION = "tanh"
RECURRENT_ACTIVATION = "sigmoid"
KERAS_2_2_RECURRENT_ACTIVATION = "hard_sigmoid"


def is_recurrent(class_name: str | None) -> bool:
    return class_name in GATES


def units_of(shapes: Mapping[str, Sequence[int]]) -> int | None:
    """A layer's units: its recurrent kernel's first axis."""
    recurrent = shapes.get("recurrent_kernel")
    return int(recurrent[0]) if recurrent is not None and len(recurrent) == 2 else None


def bias_shapes(class_name: str, units: int) -> list[tuple[int, ...]]:
    """The bias shapes a layer of ``class_name`` with ``units`` keeps."""
    width = GATES[class_name] * units
    if class_name in CUDNN:
        return [(2 * width,)]
    if class_name == "GRU":
        return [(width,), (2, width)]  # reset_after=False, True
    return [(width,)]


def shape_problem(class_name: str, shapes: Mapping[str, Sequence[int]]) -> str | None:
    """Why the variables (role -> shape) fit no ``class_name`` layer; None when they do."""
    gates = GATES[class_name]
    kernel, recurrent = shapes.get("kernel"), shapes.get("recurrent_kernel")
    if kernel is None or recurrent is None or not set(shapes) <= {
        "kernel", "recurrent_kernel", "bias"
    }:  # fmt: skip
        return f"variables {sorted(shapes)} are not those of a {class_name}"
    units = units_of(shapes)
    width = None if units is None else gates * units
    if not units or tuple(recurrent) != (units, width) or len(kernel) != 2 or kernel[1] != width:
        return (
            f"kernel {tuple(kernel)} and recurrent kernel {tuple(recurrent)} are not a "
            f"{class_name}'s (in, {gates}*units) and (units, {gates}*units)"
        )
    bias = shapes.get("bias")
    if bias is not None and tuple(bias) not in bias_shapes(class_name, units):
        return f"bias {tuple(bias)} fits no {class_name} of {units} units"
    return None


def bias_parts(class_name: str, shape: Sequence[int]) -> list[tuple[str, Index | None]]:
    """The canonical roles a stored bias of ``shape`` holds, with the index of each in it (None:
    all of it)."""
    if class_name == "GRU" and len(shape) == 2:
        return [("bias", (0,)), ("recurrent_bias", (1,))]
    if class_name in CUDNN:
        half = int(shape[0]) // 2
        return [("bias", (slice(None, half),)), ("recurrent_bias", (slice(half, None),))]
    return [("bias", None)]


def reset_after(
    class_name: str, config: Mapping[str, Any] | None, bias: Sequence[int] | None
) -> bool | None:
    """Whether a GRU applies its reset gate after the recurrent matrix product: a CuDNN GRU
    always does; a GRU as its stored bias says (two rows), else as its config says (Keras'
    default, True, where the config leaves it out); None when neither says (a weights-only file
    of a GRU without bias), and for other classes."""
    if class_name == "CuDNNGRU":
        return True
    if class_name != "GRU":
        return None
    if bias is not None:
        return len(bias) == 2
    if config is None:
        return None
    stated = config.get("reset_after", True)
    return stated if isinstance(stated, bool) else None


def inferred_config(class_name: str, shapes: Mapping[str, Sequence[int]]) -> dict[str, Any]:
    """What the variables of a layer without a config tell of it: its units and, for a GRU,
    ``reset_after`` (where a bias tells)."""
    config: dict[str, Any] = {}
    units = units_of(shapes)
    if units is not None:
        config["units"] = units
    after = reset_after(class_name, None, shapes.get("bias"))
    if after is not None and class_name == "GRU":
        config["reset_after"] = after
    return config


def notes(
    class_name: str, config: Mapping[str, Any] | None, shapes: Mapping[str, Sequence[int]]
) -> list[str]:
    """What a reader of the canonical tensors must know beyond them: activations other than the
    tanh and sigmoid the canonical computation assumes, a GRU's reset mode where the file
    does not settle it, and a config that disagrees with the stored bias."""
    found: list[str] = []
    bias = shapes.get("bias")
    if class_name == "GRU":
        found += _reset_notes(config, bias)
    if config is None or class_name in CUDNN:
        return found  # CuDNN layers run tanh and sigmoid, whatever the config
    found += _activation_notes(class_name, config)
    return found


def _reset_notes(config: Mapping[str, Any] | None, bias: Sequence[int] | None) -> list[str]:
    stated = None if config is None else config.get("reset_after")
    if bias is not None:
        after = len(bias) == 2
        if isinstance(stated, bool) and stated != after:
            return [
                f"the config says reset_after={stated}, the stored bias {tuple(bias)} means "
                f"reset_after={after}: read by the bias"
            ]
        return []
    if config is None:
        return [
            "no model config and no bias: whether the reset gate applies after the recurrent "
            "product (reset_after) cannot be told"
        ]
    if "reset_after" not in config:
        return [
            "reset_after not in the config: taken as True (Keras 2.3 and later; Keras 2.0-2.2 "
            "default to False)"
        ]
    return []


def _activation_notes(class_name: str, config: Mapping[str, Any]) -> list[str]:
    found = []
    activation = _name(config.get("activation", ACTIVATION))
    if activation != ACTIVATION:
        found.append(f"activation {activation}: the canonical computation assumes {ACTIVATION}")
    if GATES[class_name] > 1:
        if "recurrent_activation" not in config:
            found.append(
                f"recurrent_activation not in the config: taken as {RECURRENT_ACTIVATION} "
                f"(Keras 2.3 and later; Keras 2.0-2.2 default to "
                f"{KERAS_2_2_RECURRENT_ACTIVATION})"
            )
        else:
            gate = _name(config["recurrent_activation"])
            if gate != RECURRENT_ACTIVATION:
                found.append(
                    f"recurrent_activation {gate}: the canonical computation assumes "
                    f"{RECURRENT_ACTIVATION} gates"
                )
    return found


def _name(activation: Any) -> str:
    """An activation as a config gives it: a name, or (serialized) ``{"class_name": ...}``."""
    if isinstance(activation, Mapping):
        inner = activation.get("config")
        if isinstance(inner, Mapping) and isinstance(inner.get("name"), str):
            return str(inner["name"])
        return str(activation.get("class_name", activation))
    return "linear" if activation is None else str(activation)
