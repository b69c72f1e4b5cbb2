"""Layers from PyTorch modules, whatever told us about them: a live module, a pickled module,
a TorchScript archive (classes known), or a bare state dict (kinds inferred from names, shapes
and siblings, and marked so)."""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from weightscope import layouts
from weightscope.dtypes import is_float
from weightscope.formats._common.names import embedding_table, layer_norm_name
from weightscope.formats.pytorch import quantized, recurrent
from weightscope.kinds import Kind
from weightscope.model import Layer, Quantization, Tensor, TensorSource

PARAMETER, BUFFER, UNKNOWN = "parameter", "buffer", "unknown"


@dataclass
class Entry:
    """One tensor of a module."""

    attr: str
    """Its name in the module: ``weight``, ``running_mean``."""
    full_name: str
    shape: tuple[int, ...]
    dtype: str
    source: TensorSource
    identity: Hashable
    """Equal for two names of one tensor (tied weights)."""
    origin: str = UNKNOWN
    """``parameter``, ``buffer`` or ``unknown`` (a state dict does not say)."""
    requires_grad: bool | None = None
    quantization: Quantization | None = None
    """For a quantized tensor (``source`` then gives its real values)."""


@dataclass
class ModuleNode:
    name: str
    class_name: str | None
    """Qualified class, e.g. ``torch.nn.modules.conv.Conv2d``; None for state dicts."""
    entries: list[Entry] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """What reading the module found that its layers' notes should say."""


CONV_KINDS = {
    "Conv1d": "conv1d", "Conv2d": "conv2d", "Conv3d": "conv3d",
    "ConvTranspose1d": "conv_transpose1d", "ConvTranspose2d": "conv_transpose2d",
    "ConvTranspose3d": "conv_transpose3d",
}  # fmt: skip
CLASS_KINDS = {
    **CONV_KINDS,
    "Linear": "dense", "LazyLinear": "dense", "NonDynamicallyQuantizableLinear": "dense",
    "BatchNorm1d": "batch_norm", "BatchNorm2d": "batch_norm", "BatchNorm3d": "batch_norm",
    "SyncBatchNorm": "batch_norm", "LayerNorm": "layer_norm", "Embedding": "embedding",
    "LSTM": "lstm", "GRU": "gru", "RNN": "simple_rnn",
    "quantized.Conv1d": "conv1d", "quantized.Conv2d": "conv2d", "quantized.Conv3d": "conv3d",
    "quantized.Linear": "dense", "quantized.dynamic.Linear": "dense",
    "quantized.dynamic.LSTM": "lstm", "quantized.dynamic.GRU": "gru",
}  # fmt: skip
ROLES = {
    kind: {use.tensor: use.role for use in layouts.uses("pytorch", kind=kind)}
    for kind in dict.fromkeys(use.kind for use in layouts.uses("pytorch"))
}
"""Role of each attribute of a module of each kind (``running_var`` -> ``moving_variance``)."""
CONFIG_KEYS = (
    "in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
    "output_padding", "padding_mode", "in_features", "out_features", "num_features", "eps",
    "momentum", "affine", "track_running_stats", "normalized_shape", "num_embeddings",
    "embedding_dim", "padding_idx", "input_size", "hidden_size", "num_layers", "bidirectional",
    "proj_size", "nonlinearity", "batch_first", "dropout", "scale", "zero_point",
)  # fmt: skip


def short_class(qualname: str | None) -> str | None:
    """``__torch__.torch.nn.modules.conv.___torch_mangle_3.Conv2d`` -> ``Conv2d``; quantized
    modules keep their family: ``torch.ao.nn.quantized.dynamic.modules.linear.Linear`` ->
    ``quantized.dynamic.Linear``."""
    if qualname is None:
        return None
    *path, name = qualname.split(".")
    if "quantized" in path:
        return ("quantized.dynamic." if "dynamic" in path else "quantized.") + name
    return name


def build_layers(nodes: list[ModuleNode]) -> list[Layer]:
    seen: dict[Hashable, str] = {}
    layers: list[Layer] = []
    for node in nodes:
        if node.entries:
            layers.extend(_build(node, seen))
    return layers


def _build(node: ModuleNode, seen: dict[Hashable, str]) -> list[Layer]:
    class_name = short_class(node.class_name)
    activation = _activation_entries(node)
    if activation:
        node = replace(node, entries=[e for e in node.entries if e not in activation])
        if not node.entries:
            return [_activation_layer(node, class_name, activation)]
    shapes = {e.attr: e.shape for e in node.entries}
    notes: list[str] = list(node.notes)
    groups = _int(node.attrs.get("groups"), 1)
    if class_name in CLASS_KINDS:
        kind, inferred = CLASS_KINDS[class_name], False
        if kind in CONV_KINDS.values() and "groups" not in node.attrs:
            _, groups, _ = infer_kind(shapes, ())
            notes.append(
                "groups are not recorded in this file"
                + (f": {groups} from the bias length" if groups > 1 else ": 1 assumed")
            )
        weight = shapes.get("weight")
        if kind == "conv2d" and groups > 1 and weight is not None and weight[1] == 1:
            kind = "depthwise_conv2d"  # one input channel per group
    else:
        hints = [node.name] if class_name is None else [node.name, class_name]
        kind, groups, note = infer_kind(shapes, hints)
        inferred = True
        notes.append(note)
        if class_name is not None:
            notes.append(f"class {class_name} has no canonical form in weightscope")
    attrs = node.attrs
    config = {k: _plain(attrs[k]) for k in CONFIG_KEYS if k in attrs} if attrs else {}
    if kind in RECURRENT_KINDS and recurrent.is_recurrent(shapes):
        return _build_recurrent(node, kind, inferred, class_name, config, notes, seen)
    roles = ROLES.get(kind, {})
    tensors = []
    for entry in node.entries:
        role = roles.get(entry.attr, entry.attr)
        tensors.append(_tensor(entry, role, _layout(kind, role, len(entry.shape)), groups, seen))
    tensors += [_activation_tensor(entry) for entry in activation]
    return [
        Layer(
            name=node.name,
            kind=_KINDS[kind],
            tensors=tensors,
            config=config,
            groups=groups,
            inferred=inferred,
            class_name=class_name,
            note="; ".join(n for n in notes if n) or None,
        )
    ]


def _tensor(
    entry: Entry, role: str, layout: str | None, groups: int, seen: dict[Hashable, str]
) -> Tensor:
    # parameters always count, and quantized weights; of buffers only float ones (not
    # num_batches_tracked)
    quantized = entry.quantization is not None
    counted = entry.origin == PARAMETER or is_float(entry.dtype) or quantized
    shared_with = seen.get(entry.identity)
    if shared_with is None:
        seen[entry.identity] = entry.full_name
    return Tensor(
        name=entry.full_name,
        role=role,
        native_shape=entry.shape,
        native_layout=layout,
        dtype=entry.dtype,
        trainable=False if quantized else _trainable(entry, role),
        source=entry.source,
        groups=groups if layout in _GROUPED_O else 1,
        counted=counted and shared_with is None,
        shared_with=shared_with,
        quantization=entry.quantization,
    )


RECURRENT_KINDS = frozenset({"lstm", "gru", "simple_rnn"})


def _activation_entries(node: ModuleNode) -> list[Entry]:
    """A quantized module's ``scale`` and ``zero_point`` (one number each): how its output is
    quantized. Taken so only where the module is quantized (a class of ``torch.ao.nn.
    quantized``, a quantized or packed weight beside them, or a state dict's module of just
    these two)."""
    found = [
        e for e in node.entries
        if e.attr in quantized.ACTIVATION and len(e.shape) <= 1 and math.prod(e.shape) == 1
    ]  # fmt: skip
    if not found:
        return []
    attrs = {e.attr for e in node.entries}
    if (
        quantized.is_quantized_class(node.class_name)
        or any(e.quantization is not None for e in node.entries)
        or any(quantized.state_dict_attr(e.full_name) for e in node.entries)
        or (node.class_name is None and attrs == set(quantized.ACTIVATION))
    ):
        return found
    return []


def _activation_tensor(entry: Entry) -> Tensor:
    return Tensor(
        name=entry.full_name,
        role=quantized.ACTIVATION[entry.attr],
        native_shape=entry.shape,
        native_layout=None,
        dtype=entry.dtype,
        trainable=False,
        source=entry.source,
        counted=False,
    )


def _activation_layer(node: ModuleNode, class_name: str | None, entries: list[Entry]) -> Layer:
    """A module holding only an output quantization (``QuantStub`` converted: ``Quantize``)."""
    return Layer(
        name=node.name,
        kind=Kind.UNKNOWN,
        tensors=[_activation_tensor(entry) for entry in entries],
        inferred=class_name is None,
        class_name=class_name,
        note="the quantization of the module's output (scale, zero point): no weights",
    )


def _build_recurrent(
    node: ModuleNode,
    kind: str,
    inferred: bool,
    class_name: str | None,
    config: dict[str, Any],
    notes: list[str],
    seen: dict[Hashable, str],
) -> list[Layer]:
    """One layer per (stack layer, direction) of an LSTM, GRU or RNN module, its tensors under
    their own names (``rnn.weight_ih_l0_reverse``)."""
    roles = ROLES[kind]
    stacks: dict[tuple[int, bool], list[Tensor]] = {}
    misfits = []
    for entry in node.entries:
        where = recurrent.part(entry.attr)
        assert where is not None  # is_recurrent checked every name
        role = roles.get(where.table_name, entry.attr)
        layout = None
        if recurrent.fits(kind, where.base, entry.shape):
            layout = _layout(kind, role, len(entry.shape))
        else:
            misfits.append(entry.attr)
        stacks.setdefault((where.layer, where.reverse), []).append(
            _tensor(entry, role, layout, 1, seen)
        )
    if misfits:
        notes.append(f"shapes that fit no {kind} gates: {', '.join(misfits[:4])}")
    if kind == "simple_rnn" and config.get("nonlinearity") == "relu":
        notes.append("nonlinearity relu: h = relu(W x + b + R h + rb), not tanh")
    single = set(stacks) == {(0, False)}
    layers = []
    for (index, reverse), tensors in sorted(stacks.items()):
        layers.append(
            Layer(
                name=recurrent.layer_name(node.name, index, reverse, single),
                kind=_KINDS[kind],
                tensors=tensors,
                config={**config, "stack_layer": index, "go_backwards": reverse},
                inferred=inferred,
                class_name=class_name,
                note="; ".join(n for n in notes if n) or None,
            )
        )
    return layers


def _layout(kind: str, role: str, rank: int) -> str | None:
    """From the layout table, by kind: a state dict does not name the class."""
    return layouts.native_layout("pytorch", role, rank, kind=kind)


_GROUPED_O = frozenset(name for name, spec in layouts.LAYOUTS.items() if spec.grouped_axis == "O")
"""Layouts whose ``O`` axis is per group: their tensors take the layer's groups."""
_KINDS = {kind.value: kind for kind in Kind}


def _trainable(entry: Entry, role: str) -> bool | None:
    if entry.origin == BUFFER or role in ("moving_mean", "moving_variance"):
        return False
    if entry.origin == PARAMETER:
        return bool(entry.requires_grad) if entry.requires_grad is not None else True
    return None


def infer_kind(shapes: dict[str, tuple[int, ...]], names: Sequence[str]) -> tuple[str, int, str]:
    """Kind, groups and a note for a module known only by its tensors (a state dict) and
    ``names`` (its path, and its class where the file names one)."""
    attrs = set(shapes)
    if recurrent.is_recurrent(shapes):
        kind, note = recurrent.infer(shapes)
        return kind, 1, note
    if {"running_mean", "running_var"} <= attrs:
        return "batch_norm", 1, "from a state dict: running statistics make a batch norm"
    weight, bias = shapes.get("weight"), shapes.get("bias")
    if attrs == {"weight"}:
        table = embedding_table(names, [shapes["weight"]])
        if table is not None:
            return "embedding", 1, f"from a state dict: {table}"
    if (
        weight is not None
        and len(weight) == 1
        and attrs <= {"weight", "bias"}
        and bias in (None, weight)
        and (part := layer_norm_name(names)) is not None
    ):
        return "layer_norm", 1, f"from a state dict: a (C,) scale named {part!r}: a layer norm"
    if weight is None or not attrs <= {"weight", "bias"} or (bias is not None and len(bias) != 1):
        return "unknown", 1, "from a state dict: tensors of no known layer kind"
    rank = len(weight)
    if rank == 2:
        if bias is not None and bias[0] != weight[0]:
            return "unknown", 1, "from a state dict: a 2-D weight whose bias fits no linear layer"
        return "dense", 1, "from a state dict: a 2-D weight is a linear layer"
    if rank not in (3, 4, 5):
        return "unknown", 1, f"from a state dict: a {rank}-D weight"
    dims = rank - 2
    out_channels, second = weight[0], weight[1]
    if bias is not None and bias[0] != out_channels:
        fits = second and bias[0] and bias[0] % second == 0  # empty axes fit nothing
        if fits and out_channels % (bias[0] // second) == 0:
            groups = bias[0] // second
            note = f"from a state dict: bias of length {bias[0]} makes a transposed conv"
            if groups > 1:
                note += f" with {groups} groups"
            return f"conv_transpose{dims}d", groups, note
        return "unknown", 1, "from a state dict: a conv weight whose bias fits no conv"
    note = f"from a state dict: a {rank}-D weight taken as a conv{dims}d; groups are not recorded"
    if second == 1:
        note += " (depthwise if groups equal the input channels)"
    if bias is None:
        note += "; without a bias a transposed conv cannot be ruled out"
    elif bias[0] == second:
        note += "; as many inputs as outputs: a transposed conv cannot be ruled out"
    return f"conv{dims}d", 1, note


def group_state_dict(names: list[str]) -> dict[str, list[str]]:
    """Tensor names by module prefix (``features.0.weight`` -> ``features.0``), in file order."""
    modules: dict[str, list[str]] = {}
    for name in names:
        prefix = name.rsplit(".", 1)[0] if "." in name else ""
        modules.setdefault(prefix, []).append(name)
    return modules


def group_pickled_state_dict(names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """(tensor name, attribute) by module prefix, as :func:`group_state_dict`, a quantized
    Linear's ``fc._packed_params._packed_params.0`` taken as ``fc``'s ``weight``."""
    modules: dict[str, list[tuple[str, str]]] = {}
    for name in names:
        packed = quantized.state_dict_attr(name)
        prefix, _, attr = name.rpartition(".")
        if packed is not None:
            prefix, attr = packed
        modules.setdefault(prefix, []).append((name, attr))
    return modules


def _int(value: Any, default: int) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    return default


def _plain(value: Any, depth: int = 0) -> Any:
    """A config value from a pickle as plain JSON-able data (what nests past a few levels, as
    no real module attribute does, is shown as text)."""
    if isinstance(value, (tuple, list)) and depth < 8:
        return [_plain(v, depth + 1) for v in value[:64]]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return re.sub(r"\s+", " ", reprlib.repr(value))[:80]  # bounded in depth and length
