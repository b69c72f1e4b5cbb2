"""ONNX operators -> weightscope layers: which input of ``Conv``, ``ConvTranspose``, ``Gemm``,
``MatMul``, ``BatchNormalization``, ``LayerNormalization``, ``Gather`` (embeddings) and
``QLinearConv`` is which weight, in which layout; a ``MatMul``'s, or a bias-less ``Conv``'s or
``ConvTranspose``'s, bias may come from the ``Add`` of a constant that alone reads its output.
Every other node that reads a constant becomes an ``unknown`` layer listing it; every stored
tensor no node reads is listed too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from weightscope import layouts
from weightscope.dtypes import is_float
from weightscope.formats.onnx.graph import (
    STATIC_OPS,
    Constant,
    DerivedSource,
    Scope,
    attributes,
)
from weightscope.formats.onnx.proto import AttributeType, NodeProto
from weightscope.formats.onnx.quantization import (
    granularity,
    quantization_of,
)
from weightscope.kinds import Kind
from weightscope.limits import LimitExceeded
from weightscope.model import (
    NON_TRAINABLE_ROLES,
    DequantizedSource,
    Layer,
    PartIndex,
    PartSource,
    Tensor,
    TensorSource,
    part_shape,
    part_text,
)
from weightscope.model import Quantization as ModelQuantization

DEFAULT_DOMAINS = ("", "ai.onnx")
QUANTIZATION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})


@dataclass(frozen=True)
class Quantization:
    """A ``DequantizeLinear`` that turns a stored integer constant into a weight."""

    node: NodeProto
    scale: Constant | None
    zero_point: Constant | None
    axis: int
    block_size: int | None = None


@dataclass(frozen=True)
class Weight:
    constant: Constant
    quantization: Quantization | None = None


Index = PartIndex
Handler = Callable[["GraphReader", Scope, NodeProto], "LayerDraft | list[LayerDraft] | None"]


@dataclass
class Entry:
    """One tensor of a layer being assembled: a stored constant, or a part of one, perhaps
    quantized (then its values are the real ones the stored integers stand for)."""

    role: str
    constant: Constant
    layout: str | None
    trainable: bool | None
    counted: bool
    part: Index | None = None
    """The part of the stored constant this tensor is (an ONNX LSTM's ``W[1]``)."""
    quantization: ModelQuantization | None = None
    shape: tuple[int, ...] | None = None
    """The tensor's shape where it is not the stored one's (or its part's): unpacked 4-bit
    integers."""
    dtype: str | None = None
    """The element type where it is not the stored one's (``uint4`` unpacked from bytes)."""
    source: TensorSource | None = None
    """The values where they are not the stored ones' (or their dequantization)."""


@dataclass
class LayerDraft:
    """A layer being assembled from one node (and the nodes folded into it)."""

    node: NodeProto
    scope: Scope
    kind: str
    groups: int = 1
    config: dict[str, object] = field(default_factory=dict)
    tensors: list[Entry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    name: str | None = None
    """The layer's name where it is not the node's (``lstm/reverse``)."""


class GraphReader:
    """Walks a model's graphs (subgraphs included) and collects its layers."""

    def __init__(self, handler_of: Callable[[NodeProto], Handler | None]) -> None:
        self.handler_of = handler_of
        """The handler of a node's operator (:func:`.handlers.handler_of`), None for others."""
        self.layers: list[Layer] = []
        self.weightless: list[str] = []
        self.claimed: dict[int, str] = {}
        """Storage id -> ``layer/role`` of the tensor it was first listed as (counted there)."""
        self.handled: set[int] = set()
        """Nodes that became layers."""
        self.folded: set[int] = set()
        """Nodes folded into a layer (a bias ``Add``, a weight's ``DequantizeLinear``)."""
        self.node_notes: dict[int, list[str]] = {}
        """Notes for the ``unknown`` layer a node may become (an ``Add`` left unfolded)."""
        self.scopes: list[Scope] = []
        self._names: set[str] = set()
        self._whole: set[int] = set()
        """Stored data first listed whole (its parts are then shared, not counted)."""
        self._parts: dict[tuple[int, str], str] = {}
        """(storage, part) -> ``layer/role`` of the part's first listing."""

    def read(self, root: Scope) -> None:
        """Read the layers of every graph (the main one and those nested in it), then list what
        else reads constants: a subgraph's layer may fold a node of an enclosing graph (the
        ``DequantizeLinear`` of its weight) that must not be listed on its own."""
        self._read_layers(root)
        for scope in self.scopes:
            for index, node in enumerate(scope.nodes):
                if id(node) in self.handled or id(node) in self.folded:
                    continue
                if index not in scope.constant_nodes:
                    self._other_node(scope, node)

    def _read_layers(self, scope: Scope, depth: int = 1) -> None:
        """The layers of ``scope``'s graph, then of the subgraphs in it (``depth`` graphs deep,
        within ``max_graph_depth``, which the wire reader already held the file to)."""
        limit = scope.ctx.limits.max_graph_depth
        if depth > limit:
            raise LimitExceeded(
                "max_graph_depth", limit, depth, f"graphs nested more than {limit} deep"
            )
        self.scopes.append(scope)
        for node in scope.nodes:
            handler = self.handler_of(node)
            if handler is not None and id(node) not in self.folded:
                drafts = handler(self, scope, node)
                if drafts is not None:
                    for draft in drafts if isinstance(drafts, list) else [drafts]:
                        self._finish(draft)
                    self.handled.add(id(node))
            for attr in node.attribute:
                graphs = [attr.g] if attr.type == AttributeType.GRAPH else list(attr.graphs)
                for graph in graphs:
                    where = f"{attr.name} of {node.op_type} '{node.name}'"
                    if scope.where:
                        where += f" ({scope.where})"
                    self._read_layers(Scope(graph, scope.ctx, scope, where), depth + 1)

    def unused_constants(self) -> None:
        """List the stored tensors that no node reads (and no graph outputs)."""
        referenced: set[str] = set()
        for scope in self.scopes:
            referenced.update(n for node in scope.nodes for n in node.input)
            referenced.update(out.name for out in scope.graph.output)
        for scope in self.scopes:
            for name, constant in scope.constants.items():
                if name in referenced or constant.storage in self.claimed:
                    continue
                draft = LayerDraft(NodeProto(name=name), scope, "unknown")
                draft.tensors.append(
                    Entry("value", constant, None, None, _is_float_or_complex(constant))
                )
                draft.notes.append("stored tensor that no node reads")
                self._finish(draft, class_name="initializer")

    def weight(self, scope: Scope, name: str) -> Weight | None:
        """The static weight behind input ``name``: a constant, or an integer constant that a
        ``DequantizeLinear`` turns into the weight (folded into the layer once ``add`` lists the
        weight there, so a weight looked at and not taken leaves its dequantizer listed)."""
        constant = scope.resolve(name)
        if constant is not None:
            return Weight(constant)
        node = scope.producer(name)
        if node is None or node.op_type != "DequantizeLinear" or not node.input:
            return None
        quantized = scope.resolve(node.input[0])
        if quantized is None:
            return None
        scale = scope.resolve(node.input[1]) if len(node.input) > 1 else None
        zero_point = scope.resolve(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        attrs = attributes(node)
        axis, block_size = attrs.get("axis", 1), attrs.get("block_size", 0)
        return Weight(
            quantized,
            Quantization(
                node,
                scale,
                zero_point,
                axis if isinstance(axis, int) else 1,
                block_size if isinstance(block_size, int) and block_size > 0 else None,
            ),
        )

    def add(
        self,
        draft: LayerDraft,
        role: str,
        weight: Weight,
        layout: str | None,
        trainable: bool | None = True,
    ) -> None:
        dequantizer = weight.quantization
        if dequantizer is None:
            draft.tensors.append(Entry(role, weight.constant, layout, trainable, True))
        else:
            self.folded.add(id(dequantizer.node))
            found = quantization_of(
                weight.constant,
                dequantizer.scale,
                dequantizer.zero_point,
                dequantizer.axis,
                dequantizer.block_size,
            )
            entry = Entry(role, weight.constant, layout, None, True)
            if isinstance(found, str):
                draft.notes.append(
                    f"{role} stored as {weight.constant.dtype}, not dequantized: {found}"
                )
            else:
                entry.quantization = found
                draft.notes.append(
                    f"{role} stored as {weight.constant.dtype}, dequantized "
                    f"{granularity(found)} by {_label(dequantizer.node)}"
                )
            draft.tensors.append(entry)
            add_parameters(draft, role, dequantizer.scale, dequantizer.zero_point)
        constant = weight.constant
        if constant.steps:
            steps = " then ".join(constant.steps)
            if constant.step_count > len(constant.steps):
                steps += f" then {constant.step_count - len(constant.steps)} more"
            draft.notes.append(f"{role} is {steps} of '{constant.name}' (applied here, statically)")

    def _claim(self, entry: Entry, label: str) -> str | None:
        """Record the first listing of ``entry``'s stored data (or part of it); the label of an
        earlier listing it shares its data with, where there is one."""
        storage = entry.constant.storage
        if entry.part is None:
            shared_with = self.claimed.get(storage)
            if shared_with is None:
                self.claimed[storage] = label
                self._whole.add(storage)
            return shared_with
        if storage in self._whole:
            return self.claimed[storage]
        key = (storage, part_text(entry.part))
        shared_with = self._parts.get(key)
        if shared_with is None:
            self._parts[key] = label
            self.claimed.setdefault(storage, label)
        return shared_with

    def _finish(self, draft: LayerDraft, class_name: str | None = None) -> None:
        node = draft.node
        base = _text(
            draft.name
            or node.name
            or (draft.tensors[0].constant.name if draft.tensors else "")
            or node.op_type
        )
        name = base
        suffix = 2
        while name in self._names:
            name = f"{base}#{suffix}"
            suffix += 1
        self._names.add(name)
        tensors = []
        for entry in draft.tensors:
            constant, role = entry.constant, entry.role
            if entry.counted:
                shared_with = self._claim(entry, f"{name}/{role}")
            elif entry.part is not None:
                key = (constant.storage, part_text(entry.part))
                shared_with = self._parts.setdefault(key, f"{name}/{role}")
                shared_with = None if shared_with == f"{name}/{role}" else shared_with
                self.claimed.setdefault(constant.storage, f"{name}/{role}")
            else:
                shared_with = self.claimed.get(constant.storage)
                self.claimed.setdefault(constant.storage, f"{name}/{role}")
            source: TensorSource = constant.source
            shape = constant.shape
            if entry.part is not None:
                source = PartSource(constant.source, entry.part)
                shape = part_shape(constant.shape, entry.part)
            if entry.quantization is not None:
                source = DequantizedSource(entry.quantization)
            if entry.source is not None:
                source = entry.source
            shape = entry.shape or shape
            layout = entry.layout
            tensors.append(
                Tensor(
                    name=_text(constant.name),
                    role=role,
                    native_shape=shape,
                    native_layout=layout if layout and layouts.rank(layout) == len(shape) else None,
                    dtype=entry.dtype or constant.dtype,
                    trainable=False if role in NON_TRAINABLE_ROLES else entry.trainable,
                    source=source,
                    groups=draft.groups,
                    counted=entry.counted and shared_with is None,
                    shared_with=shared_with,
                    part=None if entry.part is None else part_text(entry.part),
                    quantization=entry.quantization,
                )
            )
        notes = list(draft.notes)
        if draft.scope.where:
            notes.insert(0, f"inside {draft.scope.where}")
        self.layers.append(
            Layer(
                name=name,
                kind=Kind(draft.kind),
                tensors=tensors,
                config=draft.config,
                groups=draft.groups,
                class_name=_text(class_name or node.op_type),
                note="; ".join(notes) or None,
            )
        )

    def _other_node(self, scope: Scope, node: NodeProto) -> None:
        if node.op_type in STATIC_OPS and all(scope.resolve(o) for o in node.output if o):
            return  # a static function of constants: listed where it is used
        draft = LayerDraft(node, scope, "unknown")
        quantizer = node.op_type in QUANTIZATION_OPS
        for index, name in enumerate(node.input):
            constant = scope.resolve(name) if name else None
            if constant is not None:
                # floating-point constants (scales too), and of a (de)quantizer the quantized
                # data (a weight), are parameters
                counted = _is_float_or_complex(constant) or (quantizer and index == 0)
                draft.tensors.append(Entry(f"input{index}", constant, None, None, counted))
        if not draft.tensors:
            self.weightless.append(_text(node.name or node.op_type))
            return
        draft.notes.append(f"{node.op_type} reads constants weightscope does not classify")
        draft.notes.extend(self.node_notes.get(id(node), []))
        if any(not _is_float_or_complex(e.constant) for e in draft.tensors):
            draft.notes.append("integer constants (shapes, axes, indices) are not counted")
        self._finish(draft)


def _text(value: str | bytes) -> str:
    """A name from the file as text: the wire reader (as protobuf) hands out a string field that
    is not valid UTF-8 as bytes."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _is_float_or_complex(constant: Constant) -> bool:
    return (is_float(constant.dtype) or constant.dtype.startswith("complex")) and constant.size > 0


def _label(node: NodeProto) -> str:
    return f"{node.op_type} '{node.name}'" if node.name else node.op_type


def _plain_config(node: NodeProto) -> dict[str, object]:
    return {k: v for k, v in attributes(node).items() if isinstance(v, (int, float, str, list))}


def _runtime(draft: LayerDraft, role: str, name: str) -> None:
    draft.notes.append(f"{role} '{name}' is computed at run time, not stored in the file")


def add_parameters(
    draft: LayerDraft,
    role: str,
    scale: Constant | None,
    zero_point: Constant | None,
    index: Index | None = None,
) -> None:
    """List a quantized ``role``'s scale (``<role>_scale``, a floating-point stored tensor:
    counted) and zero point (``<role>_zero_point``: an integer, not counted), or their part
    ``index``."""
    for suffix, constant in (("scale", scale), ("zero_point", zero_point)):
        if constant is not None:
            counted = suffix == "scale" and _is_float_or_complex(constant)
            entry = Entry(f"{role}_{suffix}", constant, None, None, counted)
            if index is not None:
                entry.part = index
            draft.tensors.append(entry)


def _conv(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    return _conv_like(reader, scope, node, weight_index=1, bias_index=2)


def _conv_like(
    reader: GraphReader,
    scope: Scope,
    node: NodeProto,
    weight_index: int,
    bias_index: int,
    extra: tuple[tuple[int, str], ...] = (),
) -> LayerDraft | None:
    if len(node.input) <= weight_index:
        return None
    config = _plain_config(node)
    group = config.get("group", 1)
    groups = group if isinstance(group, int) and group > 0 else 1
    transposed = node.op_type == "ConvTranspose"
    weight = reader.weight(scope, node.input[weight_index])
    kernel_shape = config.get("kernel_shape")
    if weight is not None:
        rank = len(weight.constant.shape) - 2
    else:
        rank = len(kernel_shape) if isinstance(kernel_shape, list) else 0
    if transposed:
        kind = f"conv_transpose{rank}d"
    elif weight is not None and groups > 1 and weight.constant.shape[1:2] == (1,):
        kind = f"depthwise_conv{rank}d"  # one input channel per group: group == in channels
    else:
        kind = f"conv{rank}d"
    layout = _layout(node, "kernel", rank + 2, kind)
    if layout is None:
        kind = "unknown"  # a rank no conv of the table has
    draft = LayerDraft(node, scope, kind, groups=groups, config=config)
    if weight is None:
        _runtime(draft, "kernel", node.input[weight_index])
    else:
        reader.add(draft, "kernel", weight, layout)
    for index, role in extra:
        if len(node.input) > index and node.input[index]:
            constant = scope.resolve(node.input[index])
            if constant is not None:
                draft.tensors.append(
                    Entry(role, constant, None, None, _is_float_or_complex(constant))
                )
    has_bias = len(node.input) > bias_index and bool(node.input[bias_index])
    if has_bias:
        bias = reader.weight(scope, node.input[bias_index])
        if bias is None:
            _runtime(draft, "bias", node.input[bias_index])
        else:
            reader.add(draft, "bias", bias, _vector_layout(node, kind, bias.constant))
    if weight is not None and layout is not None and node.op_type in ("Conv", "ConvTranspose"):
        shape = weight.constant.shape
        channels = shape[1] * groups if transposed else shape[0]
        _fold_channel_bias(reader, scope, node, draft, channels, rank, has_bias)
    return draft


def _gemm(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    if len(node.input) < 2:
        return None
    config = _plain_config(node)
    if scope.resolve(node.input[0]) is not None:
        return None  # a constant left operand: not a dense layer (listed as an unknown node)
    weight = reader.weight(scope, node.input[1])
    draft = LayerDraft(node, scope, "dense", config=config)
    if weight is None:
        _runtime(draft, "kernel", node.input[1])
    else:
        when = layouts.GEMM_TRANS_B if config.get("transB", 0) else layouts.GEMM_NO_TRANS_B
        rank = len(weight.constant.shape)
        reader.add(draft, "kernel", weight, _layout(node, "kernel", rank, "dense", when))
    alpha, beta = config.get("alpha", 1.0), config.get("beta", 1.0)
    if alpha != 1.0 or beta != 1.0:
        draft.notes.append(
            f"scaled: output = {alpha} (alpha) * x . kernel + {beta} (beta) * bias; the "
            "canonical kernel and bias are the stored ones, unscaled"
        )
    if len(node.input) > 2 and node.input[2]:
        bias = reader.weight(scope, node.input[2])
        if bias is None:
            _runtime(draft, "bias", node.input[2])
        else:
            reader.add(draft, "bias", bias, _vector_layout(node, "dense", bias.constant))
    return draft


def _matmul(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    if len(node.input) != 2:
        return None
    if scope.resolve(node.input[0]) is not None and scope.resolve(node.input[1]) is not None:
        return None  # a product of two constants: listed as an unknown node
    right = reader.weight(scope, node.input[1])
    left = None if right is not None else reader.weight(scope, node.input[0])
    weight = right or left
    if weight is None:
        return None
    draft = LayerDraft(node, scope, "dense" if len(weight.constant.shape) == 2 else "unknown")
    if left is not None:
        draft.notes.append("constant on the left: output = kernel @ x")
    when = layouts.MATMUL_CONSTANT_B if right is not None else layouts.MATMUL_CONSTANT_A
    rank = len(weight.constant.shape)
    reader.add(draft, "kernel", weight, _layout(node, "kernel", rank, draft.kind, when))
    if right is not None and len(weight.constant.shape) == 2:
        _fold_bias(reader, scope, node, draft, weight.constant.shape[1])
    return draft


def _layout(
    node: NodeProto, role: str, rank: int, kind: str, when: str | None = None
) -> str | None:
    """The native layout of a ``rank``-D ``role`` of ``node``, from the layout table."""
    return layouts.native_layout("onnx", role, rank, owner=node.op_type, kind=kind, when=when)


def _vector_layout(node: NodeProto, kind: str, constant: Constant) -> str | None:
    """``C`` for a vector, ``NC`` for a vector broadcast as a ``(1, C)`` row where the table
    has one for the operator (``Gemm``, ``MatMul``); None for other shapes."""
    shape = constant.shape
    if len(shape) == 2 and shape[0] != 1:
        return None
    return _layout(node, "bias", len(shape), kind)


def _bias_add(
    reader: GraphReader, scope: Scope, node: NodeProto
) -> tuple[NodeProto, Weight] | None:
    """The ``Add`` of a static weight that alone reads ``node``'s output (nothing else does:
    no other node, no graph output, no subgraph), and that weight."""
    if not node.output or not node.output[0]:
        return None
    add = scope.sole_reader(node.output[0])
    if add is None or add.op_type != "Add" or add.domain not in DEFAULT_DOMAINS:
        return None
    if len(add.input) != 2 or id(add) in reader.folded:
        return None
    other = add.input[1] if add.input[0] == node.output[0] else add.input[0]
    weight = reader.weight(scope, other)
    return None if weight is None else (add, weight)


def _fold_bias(
    reader: GraphReader, scope: Scope, node: NodeProto, draft: LayerDraft, width: int
) -> None:
    """Take the bias of ``x @ kernel + bias`` from the single ``Add`` that reads the product."""
    found = _bias_add(reader, scope, node)
    if found is None:
        return
    add, bias = found
    stored = bias.constant.shape
    if not stored or stored[-1] != width or any(d != 1 for d in stored[:-1]):
        return
    reader.folded.add(id(add))
    if len(stored) > 2:  # (1, 1, width): a bias broadcast over (batch, steps, width)
        bias = replace(bias, constant=_as_vector(bias.constant))
        draft.notes.append(f"bias from {_label(add)} (its {stored} constant read as ({width},))")
    else:
        draft.notes.append(f"bias from {_label(add)}")
    reader.add(draft, "bias", bias, _vector_layout(node, draft.kind, bias.constant))


def _per_channel(shape: tuple[int, ...], channels: int, rank: int) -> bool:
    """Whether a constant of ``shape`` added to a ``rank``-D conv's ``(N, channels, *spatial)``
    output adds one value per channel and changes nothing else: by ONNX's (numpy's) broadcasting
    it lines up from the right, so it is ``(channels, 1, ...)`` or ``(1, channels, 1, ...)``
    with ``rank`` trailing ones. A ``(channels,)`` vector is not: it lines up with the last
    spatial axis."""
    if len(shape) not in (rank + 1, rank + 2):
        return False
    axis = len(shape) - rank - 1
    return shape[axis] == channels and all(d == 1 for i, d in enumerate(shape) if i != axis)


def _fold_channel_bias(
    reader: GraphReader,
    scope: Scope,
    node: NodeProto,
    draft: LayerDraft,
    channels: int,
    rank: int,
    has_bias: bool,
) -> None:
    """Take a bias-less conv's bias from the single ``Add`` of a per-channel constant that
    reads its output (Paddle's exporter writes a conv's bias so), read as a ``(channels,)``
    vector. A conv with a bias input of its own keeps it, and the ``Add`` stays a layer of its
    own that says so: one ``bias`` cannot be two stored tensors, and their sum, a tensor the
    file does not hold, would leave one of them uncounted."""
    found = _bias_add(reader, scope, node)
    if found is None:
        return
    add, bias = found
    stored = bias.constant.shape
    if not _per_channel(stored, channels, rank):
        return
    constant = bias.constant.name
    if has_bias:
        draft.notes.append(
            f"{_label(add)} then adds the per-channel constant '{constant}' (listed on its own, "
            "not folded: this node has a bias of its own; the effective bias is their sum)"
        )
        reader.node_notes.setdefault(id(add), []).append(
            f"adds one value per output channel to the output of {_label(node)}, not folded "
            "into its bias, which it has of its own (the effective bias is their sum)"
        )
        return
    reader.folded.add(id(add))
    if len(stored) != 1:
        bias = replace(bias, constant=_as_vector(bias.constant))
    reader.add(draft, "bias", bias, _vector_layout(node, draft.kind, bias.constant))
    draft.notes.append(
        f"bias from {_label(add)} (its {stored} constant read as ({channels},), one value per "
        "output channel)"
    )


def _as_vector(constant: Constant) -> Constant:
    """``constant`` read as a vector of its elements (all its other axes have size 1)."""
    shape = (constant.size,)

    def flatten(array: np.ndarray) -> np.ndarray:
        return np.asarray(array).reshape(shape)

    return replace(constant, source=DerivedSource(constant.source, flatten), shape=shape)


def _norm(
    roles: tuple[str, ...], kind: str
) -> Callable[[GraphReader, Scope, NodeProto], LayerDraft | None]:
    def handler(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
        draft = LayerDraft(node, scope, kind, config=_plain_config(node))
        for index, role in enumerate(roles, start=1):
            if len(node.input) <= index or not node.input[index]:
                continue
            weight = reader.weight(scope, node.input[index])
            if weight is None:
                _runtime(draft, role, node.input[index])
            else:
                rank = len(weight.constant.shape)
                reader.add(draft, role, weight, _layout(node, role, rank, kind))
        return draft

    return handler


def _gather(reader: GraphReader, scope: Scope, node: NodeProto) -> LayerDraft | None:
    if len(node.input) != 2 or attributes(node).get("axis", 0) != 0:
        return None
    table = scope.resolve(node.input[0])
    if table is None or len(table.shape) != 2 or scope.resolve(node.input[1]) is not None:
        return None
    draft = LayerDraft(node, scope, "embedding")
    reader.add(draft, "embeddings", Weight(table), _layout(node, "embeddings", 2, "embedding"))
    return draft


HANDLERS: dict[str, Handler] = {  # the float operators; all: ``handlers.HANDLERS``
    "Conv": _conv,
    "ConvTranspose": _conv,
    "Gemm": _gemm,
    "MatMul": _matmul,
    "BatchNormalization": _norm(("gamma", "beta", "moving_mean", "moving_variance"), "batch_norm"),
    "LayerNormalization": _norm(("gamma", "beta"), "layer_norm"),
    "Gather": _gather,
}
