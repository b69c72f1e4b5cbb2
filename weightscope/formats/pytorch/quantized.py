"""PyTorch quantized modules (``torch.ao.nn.quantized``), read as data: where their weights
are in a state dict, in a pickled module and in the state of the packed-parameter objects
(``torch.ScriptObject``) torch pickles them in. Nothing of torch is imported or called: a
packed object's state is a tuple of tensors and numbers, read as such.

- ``Linear`` (static and dynamic): state dict ``fc._packed_params._packed_params`` = (weight
  qtensor, float bias or None), ``fc.scale``/``fc.zero_point`` (the output's quantization, not
  weights); a pickled module keeps a ``LinearPackedParams`` whose ``_packed_params``
  ScriptObject holds ``((weight, bias), "__torch__.torch.classes.quantized.
  LinearPackedParamsBase")``.
- ``Conv1d/2d/3d``: state dict ``weight`` (qtensor), ``bias``, ``scale``, ``zero_point``; a pickled
  module's state is the tuple of ``_ConvNd.__getstate__``.
- dynamic ``LSTM``/``GRU``: ``_all_weight_values.{n}.param``, one ScriptObject per (layer,
  direction), ``(("quantized_dynamic", [b_ih, b_hh], [], [reduce_range], [packed w_ih, packed
  w_hh]), "__torch__.torch.classes.rnn.CellParamsBase")`` (``quantized_fp16``: float weights,
  each packed with its bias).

A quantized weight's ``dtype`` is the integer type its storage holds, numpy's name for it:
torch's ``qint8`` is ``int8``, ``quint8`` ``uint8``, ``qint32`` ``int32``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from weightscope.formats.pytorch.records import Opaque, TensorRef

SCRIPT_OBJECT = "torch.ScriptObject"
LINEAR_PACKED = "__torch__.torch.classes.quantized.LinearPackedParamsBase"
CELL_PARAMS = "__torch__.torch.classes.rnn.CellParamsBase"
PACKED_PREFIX = "_packed_params._packed_params"
"""Where a quantized Linear's (weight, bias) are in its state dict."""
ACTIVATION = {"scale": "output_scale", "zero_point": "output_zero_point"}
"""A quantized module's ``scale``/``zero_point`` tensors: how its output is quantized (not
weights; listed, not counted), and their roles."""
CONV_STATE = (
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
    "transposed", "output_padding", "groups", "padding_mode",
)  # fmt: skip
"""The first items of a pickled quantized conv's state; then weight, bias, scale, zero point,
training."""
_PACKED_NAME = re.compile(r"(?:(.*)\.)?_packed_params\._packed_params\.([01])")
_CELL_NAME = re.compile(r"(?:(.*)\.)?_all_weight_values\.(\d{1,6})\.param")
CELL_KINDS = ("quantized_dynamic", "quantized_fp16")
"""Dynamic recurrent cells read: int8 weights with their biases apart, or float weights (run
in float16) packed with their biases."""


def is_quantized_class(qualname: str | None) -> bool:
    return qualname is not None and ".quantized." in f".{qualname}."


def state_dict_attr(name: str) -> tuple[str, str] | None:
    """A packed Linear's tensor in a state dict (``fc._packed_params._packed_params.0``): its
    module and attribute (``fc``, ``weight``); None for other names."""
    if "_packed_params" not in name:  # the common case, without a regular expression
        return None
    found = _PACKED_NAME.fullmatch(name)
    if found is None:
        return None
    return found.group(1) or "", "weight" if found.group(2) == "0" else "bias"


def is_state_dict_extra(key: Any, value: Any) -> bool:
    """Entries of a quantized model's state dict that are not tensors: packed (weight, bias)
    tuples, their dtype, recurrent cells' packed objects."""
    if type(key) is not str:
        return False
    if key.endswith(PACKED_PREFIX) and type(value) is tuple:
        return True
    if key.endswith("_packed_params.dtype"):
        return True
    if "_all_weight_values" not in key:
        return False
    return _CELL_NAME.fullmatch(key) is not None and _script_state(value, CELL_PARAMS) is not None


def _script_state(obj: Any, class_name: str) -> tuple[Any, ...] | None:
    """The state of a ScriptObject of ``class_name``: ``(state, class_name)`` as ``torch.save``
    pickles it; a TorchScript archive pickles the object of that class with its state."""
    if isinstance(obj, Opaque) and obj.qualname == class_name:
        return obj.state if type(obj.state) is tuple else None
    if not isinstance(obj, Opaque) or obj.qualname != SCRIPT_OBJECT:
        return None
    state = obj.state
    if type(state) is tuple and len(state) == 2 and state[1] == class_name:
        inner = state[0]
        return inner if type(inner) is tuple else None
    return None


def packed_linear(obj: Any) -> tuple[TensorRef, TensorRef | None] | None:
    """(weight, bias) of a ``LinearPackedParamsBase`` ScriptObject, or of the tuple a state
    dict keeps; None if it is not that."""
    state = _script_state(obj, LINEAR_PACKED) if isinstance(obj, Opaque) else obj
    if type(state) is not tuple or len(state) < 2:
        return None
    weight, bias = state[0], state[1]
    if not isinstance(weight, TensorRef) or not (bias is None or isinstance(bias, TensorRef)):
        return None
    return weight, bias


def module_packed_linear(module_state: Mapping[Any, Any]) -> tuple[Any, ...] | None:
    """(weight, bias) of a pickled quantized Linear: its ``_packed_params`` submodule's packed
    object."""
    packed = submodules(module_state).get("_packed_params")
    if not isinstance(packed, Opaque) or not isinstance(packed.state, dict):
        return None
    return packed_linear(packed.state.get("_packed_params"))


def submodules(module_state: Mapping[Any, Any]) -> Mapping[Any, Any]:
    """A pickled module's submodules: its ``_modules``; a TorchScript module's attributes."""
    modules = module_state.get("_modules")
    if "_parameters" in module_state:
        return modules if isinstance(modules, Mapping) else {}
    return module_state


def cell_tensors(obj: Any) -> dict[str, TensorRef] | None:
    """``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` of a dynamic recurrent cell's
    ``CellParamsBase`` ScriptObject (``quantized_dynamic``: int8 weights); None for another."""
    state = _script_state(obj, CELL_PARAMS)
    if state is None or len(state) != 5 or state[0] not in CELL_KINDS:
        return None
    biases, packed = state[1], state[4]
    if type(biases) is not list or type(packed) is not list or len(packed) != 2:
        return None
    weights = [packed_linear(p) for p in packed]
    if weights[0] is None or weights[1] is None:
        return None
    found = {"weight_ih": weights[0][0], "weight_hh": weights[1][0]}
    if state[0] == "quantized_fp16":  # float weights, each packed with its bias
        biases = [weights[0][1], weights[1][1]]
    for name, bias in zip(("bias_ih", "bias_hh"), biases, strict=False):
        if isinstance(bias, TensorRef):
            found[name] = bias
    return found


def cell_name(name: str) -> tuple[str, int] | None:
    """``rnn._all_weight_values.3.param`` -> (``rnn``, 3)."""
    found = _CELL_NAME.fullmatch(name)
    return None if found is None else (found.group(1) or "", int(found.group(2)))


def cell_positions(
    cells: list[dict[str, TensorRef]], bidirectional: bool | None
) -> tuple[list[tuple[int, bool]], str | None]:
    """(stack layer, reverse) of each cell (torch orders them layer by layer, forward first),
    and a note where a state dict leaves the directions to be inferred."""
    note = None
    if bidirectional is None:
        bidirectional = _looks_bidirectional(cells)
        note = "directions inferred from the cells' input widths: " + (
            "bidirectional" if bidirectional else "one direction"
        )
    directions = 2 if bidirectional else 1
    return [(n // directions, bool(n % directions)) for n in range(len(cells))], note


def _looks_bidirectional(cells: list[dict[str, TensorRef]]) -> bool:
    """Layer 0's two directions read the same input; a second layer reads both directions'
    outputs (twice the hidden width)."""
    if len(cells) < 2 or len(cells) % 2:
        return False
    widths = [cell["weight_ih"].shape[-1] for cell in cells]
    hidden = cells[0]["weight_hh"].shape[-1]
    return widths[0] == widths[1] and all(w == 2 * hidden for w in widths[2:])


def cell_attr(base: str, layer: int, reverse: bool) -> str:
    """The float module's name of a cell's tensor: ``weight_ih_l1_reverse``."""
    return f"{base}_l{layer}" + ("_reverse" if reverse else "")


def conv_state(state: Any) -> tuple[dict[str, Any], TensorRef, TensorRef | None] | None:
    """Config, weight and bias of a pickled quantized conv (``_ConvNd.__getstate__``)."""
    if type(state) is not tuple or len(state) < 14:
        return None
    weight, bias = state[10], state[11]
    if not isinstance(weight, TensorRef) or not (bias is None or isinstance(bias, TensorRef)):
        return None
    config = dict(zip(CONV_STATE, state[:10], strict=True))
    config["scale"], config["zero_point"] = state[12], state[13]
    return config, weight, bias
