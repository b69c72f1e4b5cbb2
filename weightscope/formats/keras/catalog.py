"""What weightscope knows about Keras layer classes: kinds, stored layouts, variable order,
and how to recognise a layer when a file carries no model config."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from weightscope import layouts
from weightscope.formats._common.names import embedding_table
from weightscope.formats.keras import recurrent


@dataclass(frozen=True)
class KerasLayerType:
    kind: str
    layouts: Mapping[str, str]
    """Native layout of each role, from ``weightscope.layouts.USES``."""


def _from_layout_table() -> dict[str, KerasLayerType]:
    """Every Keras class of the layout table, with its kind and the layout of each role."""
    kinds: dict[str, str] = {}
    roles: dict[str, dict[str, str]] = {}
    for use in layouts.uses("keras"):
        if kinds.setdefault(use.owner, use.kind) != use.kind:
            raise ValueError(f"Keras {use.owner}: two kinds in the layout table")
        roles.setdefault(use.owner, {})[use.role] = use.layout
    return {owner: KerasLayerType(kinds[owner], roles[owner]) for owner in kinds}


KERAS_LAYER_TYPES: dict[str, KerasLayerType] = _from_layout_table()

CLASS_ALIASES = {
    "Convolution1D": "Conv1D",
    "Convolution2D": "Conv2D",
    "Convolution3D": "Conv3D",
    "Convolution2DTranspose": "Conv2DTranspose",
    "Convolution3DTranspose": "Conv3DTranspose",
    "Deconvolution2D": "Conv2DTranspose",
    "Deconvolution3D": "Conv3DTranspose",
    "SeparableConvolution1D": "SeparableConv1D",
    "SeparableConvolution2D": "SeparableConv2D",
    "DepthwiseConvolution2D": "DepthwiseConv2D",
    "BatchNormalizationV1": "BatchNormalization",
    "BatchNormalizationV2": "BatchNormalization",
    "SyncBatchNormalization": "BatchNormalization",
}

MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})

NON_TRAINABLE_STATE_CLASSES = frozenset({"Normalization", "Discretization"})
"""Classes outside the table whose variables are state, never trained (adapted statistics)."""


def canonical_class(class_name: str | None) -> str | None:
    if class_name is None:
        return None
    return CLASS_ALIASES.get(class_name, class_name)


def layer_type(class_name: str | None) -> KerasLayerType | None:
    name = canonical_class(class_name)
    return None if name is None else KERAS_LAYER_TYPES.get(name)


def snake_case(class_name: str) -> str:
    """Keras' own ``to_snake_case``: the prefix of auto-generated layer and store names."""
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


_SNAKE_TO_CLASS = {snake_case(name): name for name in KERAS_LAYER_TYPES}

COMPOSITE_LAYERS = frozenset(
    {
        "MultiHeadAttention", "GroupQueryAttention", "Attention", "AdditiveAttention",
        "LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "TimeDistributed",
        "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D", "EinsumDense",
    }
)  # fmt: skip
"""Layers whose variables Keras 2 names like those of sub-layers
(``multi_head_attention/query/kernel:0``, ``lstm/lstm_cell/kernel:0``): without a config they
must not be split up."""

_SNAKE_TO_COMPOSITE = {snake_case(name): name for name in COMPOSITE_LAYERS}


def class_from_name(name: str, table: Mapping[str, str] = _SNAKE_TO_CLASS) -> str | None:
    """The class behind an auto-generated name such as ``conv2d_transpose_3``."""
    base = name.rsplit("/", 1)[-1]
    while True:
        if base in table:
            return table[base]
        stripped = re.sub(r"_\d+$", "", base)
        if stripped == base:
            return None
        base = stripped


def composite_from_name(name: str) -> str | None:
    """The composite class (``MultiHeadAttention``) behind an auto-generated name, if any."""
    return class_from_name(name, _SNAKE_TO_COMPOSITE)


def positional_roles(class_name: str, config: Mapping[str, Any] | None, count: int) -> list[str]:
    """Roles of the numbered variables a Keras 3 weights store keeps for a layer (``vars/0``...).

    Without a config, which optional variables are absent is deduced from ``count``; where that
    cannot tell them apart (one of gamma / beta missing), ``ambiguous_roles`` says so."""
    cfg = config or {}
    kind = KERAS_LAYER_TYPES[class_name].kind
    if kind == "batch_norm" or kind == "layer_norm":
        stats = ["moving_mean", "moving_variance"] if kind == "batch_norm" else []
        if config is None:
            optional = ["gamma", "beta"][2 - max(0, min(2, count - len(stats))) :]
        else:
            optional = [
                r
                for r, on in (("gamma", cfg.get("scale", True)), ("beta", cfg.get("center", True)))
                if on
            ]
        return [*optional, *stats]
    if kind.startswith("separable"):
        roles = ["depthwise_kernel", "pointwise_kernel"]
    elif kind == "embedding":
        roles = ["embeddings"]
    else:
        roles = ["kernel"]
    has_bias = cfg.get("use_bias", True) if config is not None else count > len(roles)
    if has_bias and kind != "embedding":
        roles.append("bias")
    return roles


def ambiguous_roles(class_name: str, config: Mapping[str, Any] | None, count: int) -> str | None:
    """A note when ``positional_roles`` had to guess between roles, else None."""
    kind = KERAS_LAYER_TYPES[class_name].kind
    stats = 2 if kind == "batch_norm" else 0
    if config is None and kind in ("batch_norm", "layer_norm") and count - stats == 1:
        return (
            "no model config and one of gamma / beta absent: the store cannot tell which; "
            "taken as beta (scale=False)"
        )
    return None


def short_role(stored_name: str) -> str:
    """The last component of a stored variable name: ``.../kernel:0`` -> ``kernel``."""
    return stored_name.rsplit("/", 1)[-1].split(":", 1)[0]


def normalise_role(kind: str, role: str) -> str:
    """One name per role across Keras versions: Keras 2 calls a depthwise layer's kernel
    ``depthwise_kernel``, Keras 3 ``kernel``."""
    if kind.startswith("depthwise") and role == "depthwise_kernel":
        return "kernel"
    return role


def roles_fit(class_name: str, roles: Iterable[str]) -> bool:
    """Whether named variables are ones the class keeps (a name hint must not override them)."""
    layer_type = KERAS_LAYER_TYPES[class_name]
    allowed = set(layer_type.layouts)
    if layer_type.kind.startswith("depthwise"):
        allowed.add("depthwise_kernel")  # Keras 2's name for it
    return set(roles) <= allowed


_OTHER_ROLES = {
    role for layer_type in KERAS_LAYER_TYPES.values() for role in layer_type.layouts
} - {"embeddings"} | {"depthwise_kernel", "recurrent_kernel"}
"""Variable names that say a layer is not an embedding, whatever its name says."""


@dataclass(frozen=True)
class Inference:
    class_name: str | None
    note: str


def infer_class(
    names: Sequence[str],
    roles: Mapping[str, Sequence[int]],
    shapes: Sequence[Sequence[int]] = (),
) -> Inference:
    """Recognise a layer without a config: a recurrent layer from its kernels' shapes (which
    tell LSTM, GRU and SimpleRNN apart, whatever a user named it), others first from Keras'
    auto-generated ``names`` (when its named variables fit that class), then as an embedding
    table by the name rule PyTorch state dicts follow too (one 2-D variable that no other class
    would name so), then from its variables' roles and shapes. ``roles`` maps short role ->
    shape (empty when the store keeps variables by position only); ``shapes`` are those of all
    its variables, named or not."""
    if "recurrent_kernel" in roles:
        return _infer_recurrent(roles, names)
    for name in names:
        found = class_from_name(name)
        if found is not None and roles_fit(found, roles):
            return Inference(found, f"no model config: kind read from the name {name!r}")
    if not set(roles) & _OTHER_ROLES:
        table = embedding_table(names, shapes)
        if table is not None:
            return Inference("Embedding", f"no model config: {table}")
    return _infer_from_roles(roles)


RECURRENT_ROLES = ("kernel", "recurrent_kernel", "bias")
"""The variables of a Keras LSTM, GRU or SimpleRNN (its cell's), in the order Keras creates
them: ``bias`` absent with ``use_bias=False``."""


def _numbered(stored: Sequence[str]) -> bool:
    """Whether ``stored`` are a store's numbered paths ``vars/0``, ``vars/1``, ... in order."""
    numbered = [re.fullmatch(r"(?:.*/)?vars/(\d{1,9})", name) for name in stored]
    return all(numbered) and [int(m.group(1)) for m in numbered if m] == list(range(len(stored)))


def recurrent_roles(
    class_name: str | None, config: Mapping[str, Any] | None, stored: Sequence[str]
) -> list[str] | None:
    """The roles of a recurrent layer's variables that a Keras 3 store keeps by position
    (``cell/vars/0``, ``cell/vars/1``, ...); None unless ``class_name`` is a recurrent layer
    and ``stored`` are those numbered paths, as many as the layer keeps."""
    if not recurrent.is_recurrent(class_name) or not _numbered(stored):
        return None
    return recurrent_roles_by_count(config, len(stored))


_SNAKE_TO_RECURRENT = {snake_case(name): name for name in recurrent.GATES}


def positional_recurrent_roles(
    names: Sequence[str], config: Mapping[str, Any] | None, count: int
) -> list[str] | None:
    """The roles of ``count`` variables a Keras 3 store keeps by position (``vars/0``, ...) for
    a recurrent layer that keeps them itself (Keras 2's CuDNN layers: no cell), named by its
    class (``cu_dnnlstm``) or its config; None when neither says it is one or the count does
    not fit."""
    if config is None and not any(class_from_name(n, _SNAKE_TO_RECURRENT) for n in names):
        return None
    return recurrent_roles_by_count(config, count)


def recurrent_roles_by_count(config: Mapping[str, Any] | None, count: int) -> list[str] | None:
    """A recurrent layer's roles, in Keras' order, for ``count`` variables; None when the count
    does not fit (a config's ``use_bias`` says whether there is a bias)."""
    if config is None:
        counts: tuple[int, ...] = (2, 3)
    else:
        counts = (3,) if config.get("use_bias", True) is not False else (2,)
    return list(RECURRENT_ROLES[:count]) if count in counts else None


def cell_roles(stored: Sequence[str]) -> list[str] | None:
    """The roles of a layer's variables that a Keras 3 store keeps as a recurrent cell's
    (``cell/vars/0``, ``cell/vars/1`` and maybe ``cell/vars/2``), for a layer without a config;
    None for any other variables."""
    if len(stored) not in (2, 3) or not all(name.startswith("cell/vars/") for name in stored):
        return None
    return list(RECURRENT_ROLES[: len(stored)]) if _numbered(stored) else None


def _recurrent_class(roles: Mapping[str, Sequence[int]]) -> str | None:
    """The recurrent class whose variables have these shapes: the gates are the recurrent
    kernel's width over its units; a CuDNN layer's bias holds two biases."""
    recurrent_kernel = roles["recurrent_kernel"]
    if len(recurrent_kernel) != 2 or recurrent_kernel[0] == 0:
        return None
    units, width = recurrent_kernel
    candidates = [name for name, gates in recurrent.GATES.items() if gates * units == width]
    for name in candidates:
        if recurrent.shape_problem(name, roles) is None:
            return name
    return None


def _infer_recurrent(roles: Mapping[str, Sequence[int]], names: Sequence[str] = ()) -> Inference:
    """A recurrent layer from its kernels' shapes, which tell the classes apart where a name
    (a user's, in Keras 2 files) may not."""
    class_name = _recurrent_class(roles)
    if class_name is None:
        return Inference(None, "no model config: recurrent kernels of no known layer")
    gates = recurrent.GATES[class_name]
    note = f"no model config: a {class_name}, from its {gates}-gate recurrent kernels"
    if class_name in recurrent.CUDNN:
        note += " and its bias of input and recurrent halves"
    for name in names:
        named = class_from_name(name)
        if recurrent.is_recurrent(named) and named != class_name:
            note += f" (its name {name!r} says {named})"
            break
    return Inference(class_name, note)


def _infer_from_roles(roles: Mapping[str, Sequence[int]]) -> Inference:
    present = set(roles)
    if present == {"depthwise_kernel", "pointwise_kernel"} or present == {
        "depthwise_kernel", "pointwise_kernel", "bias"
    }:  # fmt: skip
        rank = len(roles["depthwise_kernel"])
        return Inference(
            "SeparableConv2D" if rank == 4 else "SeparableConv1D",
            "no model config: depthwise and pointwise kernels",
        )
    if present in ({"depthwise_kernel"}, {"depthwise_kernel", "bias"}):
        rank = len(roles["depthwise_kernel"])
        return Inference(
            "DepthwiseConv2D" if rank == 4 else "DepthwiseConv1D",
            "no model config: depthwise kernel",
        )
    if {"moving_mean", "moving_variance"} <= present <= {
        "gamma", "beta", "moving_mean", "moving_variance"
    }:  # fmt: skip
        return Inference("BatchNormalization", "no model config: moving statistics")
    if present == {"embeddings"}:
        return Inference("Embedding", "no model config: embeddings table")
    kernel = roles.get("kernel")
    bias = roles.get("bias")
    if kernel is None or not present <= {"kernel", "bias"} or (bias is not None and len(bias) != 1):
        return Inference(None, "no model config and variables of no known layer kind")
    rank = len(kernel)
    if rank == 2:
        if bias is not None and bias[0] != kernel[1]:
            return Inference(None, "no model config: a 2-D kernel whose bias fits no dense layer")
        return Inference("Dense", "no model config: 2-D kernel")
    if rank not in (3, 4, 5):
        return Inference(None, f"no model config and a {rank}-D kernel")
    dims = rank - 2
    if bias is not None and bias[0] == kernel[-2] != kernel[-1]:
        return Inference(
            f"Conv{dims}DTranspose",
            "no model config: bias length matches the kernel's second-last axis",
        )
    if bias is not None and bias[0] != kernel[-1]:
        return Inference(None, f"no model config: a {rank}-D kernel whose bias fits no conv")
    note = f"no model config: {rank}-D kernel taken as Conv{dims}D"
    if bias is None or kernel[-1] == kernel[-2]:
        note += " (a transposed conv cannot be ruled out)"
    return Inference(f"Conv{dims}D", note)
