"""What a SavedModel's graph does with its variables, for models saved without Keras metadata
(Keras 3 ``model.export``, ``tf.saved_model.save`` of a ``tf.Module``).

Each concrete function of the object graph captures variables (``bound_inputs``: node ids, fed
as the function's trailing arguments). Inside the function (a ``FunctionDef`` of the
``GraphDef``'s library, decoded here from protobuf's wire format) a captured variable is read by
``ReadVariableOp`` and may pass through ops that do not change its meaning (``Identity``,
``Cast``, ``Reshape``, ``Squeeze``, ``ExpandDims``: Keras 3's 1-D convs are 2-D convs of an
expanded kernel) and into calls of other functions, before an op consumes it:

- ``Conv2D`` / ``Conv3D`` (filter = input 1, ``HWIO`` / ``DHWIO`` whatever ``data_format``;
  groups = the input's channels over the filter's, when the graph records the input's shape),
- ``DepthwiseConv2dNative`` (filter ``HWIM``),
- ``Conv2DBackpropInput`` / ``Conv3DBackpropInputV2`` (a transposed conv; filter = input 1,
  ``HWOI``),
- ``MatMul`` (input 1: a dense kernel ``(in, out)``, or ``(out, in)`` with ``transpose_b``),
- ``BiasAdd`` / ``AddV2`` / ``Add`` (a bias added to a conv's or matmul's output),
- ``FusedBatchNormV3`` (scale, offset, mean, variance = inputs 1 to 4).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from weightscope.formats._common.protowire import (
    LENGTH_DELIMITED,
    VARINT,
    WireError,
    fields,
    read_varint,
    signed64,
)
from weightscope.formats.tensorflow.bundle import tensor_shape
from weightscope.formats.tensorflow.saved_proto import SavedModelInfo, text

PASS_THROUGH = frozenset(
    {"ReadVariableOp", "Identity", "Cast", "Reshape", "Squeeze", "ExpandDims", "IdentityN"}
)
CALLS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})
KERNEL_OPS = {
    "Conv2D": 1, "Conv3D": 1, "DepthwiseConv2dNative": 1, "Conv2DBackpropInput": 1,
    "Conv3DBackpropInputV2": 1, "MatMul": 1,
}  # fmt: skip
"""Ops that consume a kernel, and the input it is."""
BIAS_OPS = frozenset({"BiasAdd", "AddV2", "Add"})
BATCH_NORM_OPS = frozenset({"FusedBatchNormV3", "FusedBatchNorm", "FusedBatchNormV2"})
BATCH_NORM_ROLES = {1: "gamma", 2: "beta", 3: "moving_mean", 4: "moving_variance"}


@dataclass
class Node:
    name: str
    op: str
    inputs: list[str]
    attr_fields: list[memoryview] = field(default_factory=list)
    """The undecoded ``attr`` entries (decoded only for the nodes that matter)."""


@dataclass
class Function:
    args: list[str]
    nodes: dict[str, Node]
    arg_attrs: dict[int, list[memoryview]]
    _consumers: dict[str, list[tuple[Node, int]]] | None = None

    def consumers(self) -> dict[str, list[tuple[Node, int]]]:
        """Value name -> the nodes that take it, and as which input (built once)."""
        if self._consumers is None:
            self._consumers = {}
            for node in self.nodes.values():
                for position, reference in enumerate(node.inputs):
                    if not reference.startswith("^"):
                        self._consumers.setdefault(_base(reference), []).append((node, position))
        return self._consumers


class _Spent(Exception):
    """The walk took more steps than the graph's size allows for (a hostile graph)."""


STEPS_PER_INPUT = 16
"""Steps the walk may take per node input of the graph: an honest graph's variables each reach
a few ops; a hostile one could make every variable pass through every node."""


@dataclass(frozen=True)
class Use:
    """How a variable is used: the op, which of its inputs it is, its attributes, whether it
    went through ``ExpandDims`` on the way, and the node it came out of."""

    op: str
    position: int
    attrs: dict[str, Any]
    expanded: bool
    node: str
    function: str
    feeds: str = ""
    """For a bias: the node whose output it is added to."""
    groups: int | None = None


def _base(reference: str) -> str:
    """The node (or argument) a ``node:output:0`` input names."""
    return reference.split(":", 1)[0]


def _functions(graph_def: memoryview) -> dict[str, Function]:
    found: dict[str, Function] = {}
    for number, wire, library in fields(graph_def, 0, len(graph_def)):
        if number != 2 or wire != LENGTH_DELIMITED:
            continue
        for inner, inner_wire, message in fields(library, 0, len(library)):
            if inner == 1 and inner_wire == LENGTH_DELIMITED:
                name, function = _function(message)
                found.setdefault(name, function)
    return found


def _function(message: memoryview) -> tuple[str, Function]:
    name = ""
    args: list[str] = []
    nodes: dict[str, Node] = {}
    arg_attrs: dict[int, list[memoryview]] = {}
    for number, wire, value in fields(message, 0, len(message)):
        if wire != LENGTH_DELIMITED:
            continue
        if number == 1:
            for inner, inner_wire, item in fields(value, 0, len(value)):
                if inner == 1 and inner_wire == LENGTH_DELIMITED:
                    name = text(item)
                elif inner == 2 and inner_wire == LENGTH_DELIMITED:
                    args.append(next((text(v) for n, w, v in fields(item, 0, len(item))
                                      if n == 1 and w == LENGTH_DELIMITED), ""))  # fmt: skip
        elif number == 3:
            node = _node(value)
            nodes.setdefault(node.name, node)
        elif number == 7:
            index, attrs = 0, []
            for inner, inner_wire, item in fields(value, 0, len(value)):
                if inner == 1 and inner_wire == VARINT:
                    index = item
                elif inner == 2 and inner_wire == LENGTH_DELIMITED:
                    attrs = [v for n, w, v in fields(item, 0, len(item))
                             if n == 1 and w == LENGTH_DELIMITED]  # fmt: skip
            arg_attrs[index] = attrs
    return name, Function(args, nodes, arg_attrs)


def _node(message: memoryview) -> Node:
    node = Node("", "", [])
    for number, wire, value in fields(message, 0, len(message)):
        if wire != LENGTH_DELIMITED:
            continue
        if number == 1:
            node.name = text(value)
        elif number == 2:
            node.op = text(value)
        elif number == 3:
            node.inputs.append(text(value))
        elif number == 5:
            node.attr_fields.append(value)
    return node


def _attrs(entries: list[memoryview]) -> dict[str, Any]:
    """The attributes that matter here: strings, ints, bools, int lists, a function's name and
    ``_output_shapes``."""
    found: dict[str, Any] = {}
    for entry in entries:
        key, value = "", None
        for number, wire, item in fields(entry, 0, len(entry)):
            if number == 1 and wire == LENGTH_DELIMITED:
                key = text(item)
            elif number == 2 and wire == LENGTH_DELIMITED:
                value = item
        if value is not None:
            found[key] = _attr_value(value)
    return found


def _attr_value(message: memoryview) -> Any:
    for number, wire, item in fields(message, 0, len(message)):
        if number == 2 and wire == LENGTH_DELIMITED:
            return text(item)
        if number == 3 and wire == VARINT:
            return signed64(item)
        if number == 5 and wire == VARINT:
            return bool(item)
        if number == 10 and wire == LENGTH_DELIMITED:
            return next((text(v) for n, w, v in fields(item, 0, len(item))
                         if n == 1 and w == LENGTH_DELIMITED), "")  # fmt: skip
        if number == 1 and wire == LENGTH_DELIMITED:
            return _list_value(item)
    return None


def _list_value(message: memoryview) -> list[Any]:
    values: list[Any] = []
    for number, wire, item in fields(message, 0, len(message)):
        if number == 3 and wire == LENGTH_DELIMITED:
            pos = 0
            while pos < len(item):
                raw, pos = read_varint(item, pos, len(item))
                values.append(signed64(raw))
        elif number == 3 and wire == VARINT:
            values.append(signed64(item))
        elif number == 2 and wire == LENGTH_DELIMITED:
            values.append(text(item))
        elif number == 7 and wire == LENGTH_DELIMITED:
            values.append(tensor_shape(item))
    return values


def variable_uses(info: SavedModelInfo) -> tuple[dict[int, list[Use]], bool]:
    """Variable node id -> the ops that consume it, over every concrete function that
    captures it, and whether every path was followed (empty when the graph cannot be decoded:
    kinds then come from names)."""
    if info.graph_def is None or not info.bound_inputs:
        return {}, True
    try:
        functions = _functions(info.graph_def)
    except WireError:
        return {}, True
    inputs = sum(len(node.inputs) for f in functions.values() for node in f.nodes.values())
    uses: dict[int, list[Use]] = {}
    try:
        _trace(functions, info.bound_inputs, uses, [STEPS_PER_INPUT * inputs + 10_000])
    except _Spent:
        return uses, False
    except WireError:
        return {}, True
    return uses, True


def _trace(
    functions: dict[str, Function],
    bound: dict[str, list[int]],
    uses: dict[int, list[Use]],
    budget: list[int],
) -> None:
    seen: set[tuple[str, str]] = set()
    work: deque[tuple[str, str, int]] = deque()  # function, argument, variable
    for name, captured in bound.items():
        function = functions.get(name)
        if function is None or len(captured) > len(function.args):
            continue
        for arg, variable in zip(function.args[len(function.args) - len(captured) :], captured,
                                 strict=True):  # fmt: skip
            work.append((name, arg, variable))
    while work:
        name, arg, variable = work.popleft()
        if (name, arg) in seen:
            continue
        seen.add((name, arg))
        function = functions[name]
        for use, call in _follow(name, function, arg, budget):
            if use is not None:
                uses.setdefault(variable, []).append(use)
            elif call is not None and call[0] in functions:
                callee = functions[call[0]]
                if call[1] < len(callee.args):
                    work.append((call[0], callee.args[call[1]], variable))


def _follow(
    name: str, function: Function, start: str, budget: list[int]
) -> Iterator[tuple[Use | None, tuple[str, int] | None]]:
    """The uses of the value named ``start`` in ``function``, and the calls it is passed to
    (callee, argument index). ``budget`` holds the steps left to the whole walk."""
    consumers = function.consumers()
    queue = deque([(start, False)])
    reached = {start}
    while queue:
        current, expanded = queue.popleft()
        for node, position in consumers.get(current, []):
            budget[0] -= 1
            if budget[0] < 0:
                raise _Spent
            if node.op in PASS_THROUGH and position == 0:
                if node.name not in reached:
                    reached.add(node.name)
                    queue.append((node.name, expanded or node.op == "ExpandDims"))
            elif node.op in CALLS:
                callee = _attrs(node.attr_fields).get("f")
                if isinstance(callee, str):
                    yield None, (callee, position)
            elif _matters(node.op, position):
                yield _use(name, function, node, position, expanded), None


def _matters(op: str, position: int) -> bool:
    return (
        KERNEL_OPS.get(op) == position
        or (op in BIAS_OPS and position == 1)
        or (op in BATCH_NORM_OPS and position in BATCH_NORM_ROLES)
    )


def _use(name: str, function: Function, node: Node, position: int, expanded: bool) -> Use:
    attrs = _attrs(node.attr_fields)
    feeds = _producer(function, node.inputs[0]) if node.op in BIAS_OPS and node.inputs else ""
    groups = None
    if node.op in ("Conv2D", "Conv3D") and node.inputs:
        groups = _groups(function, node, attrs)
    return Use(node.op, position, attrs, expanded, node.name, name, feeds, groups)


SHAPE_OPS = frozenset(
    {"Squeeze", "Reshape", "ExpandDims", "Identity", "BatchToSpaceND", "SpaceToBatchND"}
)
"""Ops between a conv and its bias that only reshape its output (a 1-D conv's ``Squeeze``, a
dilated conv's ``BatchToSpaceND``)."""


def _producer(function: Function, reference: str) -> str:
    """The op whose output ``reference`` is, looking through ``SHAPE_OPS``."""
    name = _base(reference)
    for _ in range(len(SHAPE_OPS) * 4):  # a few reshapes at most; bounded whatever the graph
        node = function.nodes.get(name)
        if node is None or node.op not in SHAPE_OPS or not node.inputs:
            return name
        name = _base(node.inputs[0])
    return name


def _groups(function: Function, node: Node, attrs: dict[str, Any]) -> int | None:
    """Input channels over the filter's input channels, when the graph records both."""
    data = _output_shape(function, node.inputs[0])
    kernel = _output_shape(function, node.inputs[1]) if len(node.inputs) > 1 else None
    if data is None or kernel is None or len(kernel) < 2 or len(data) != len(kernel):
        return None
    channels_first = str(attrs.get("data_format", "NHWC")).startswith("NC")
    channels = data[1] if channels_first else data[-1]
    per_group = kernel[-2]
    if channels <= 0 or per_group <= 0 or channels % per_group:
        return None
    return channels // per_group


def _output_shape(function: Function, reference: str) -> tuple[int, ...] | None:
    base = _base(reference)
    node = function.nodes.get(base)
    shapes: Any = None
    if node is not None:
        shapes = _attrs(node.attr_fields).get("_output_shapes")
        index = 0
        parts = reference.split(":")
        if len(parts) == 3 and parts[2].isdigit():
            index = int(parts[2])
    elif base in function.args:
        shapes = _attrs(function.arg_attrs.get(function.args.index(base), [])).get("_output_shapes")
        index = 0
    if not isinstance(shapes, list) or index >= len(shapes):
        return None
    shape = shapes[index]
    return shape if isinstance(shape, tuple) else None


@dataclass(frozen=True)
class Member:
    """A variable of a group to classify: its node id, the role its name gives, its shape."""

    node_id: int
    role: str
    shape: tuple[int, ...]


@dataclass
class Recognised:
    """A layer recognised from the ops: its Keras class, the role of each member (in order),
    groups when the graph tells them, and the note saying how."""

    class_name: str
    members: list[Member]
    roles: list[str]
    groups: int | None
    note: str


def _kernel_class(use: Use, rank: int) -> str | None:
    one_d = use.expanded and rank == 3
    if use.op == "Conv2D":
        return "Conv1D" if one_d else "Conv2D" if rank == 4 else None
    if use.op == "Conv3D":
        return "Conv3D" if rank == 5 else None
    if use.op == "DepthwiseConv2dNative":
        return "DepthwiseConv1D" if one_d else "DepthwiseConv2D" if rank == 4 else None
    if use.op == "Conv2DBackpropInput":
        return "Conv1DTranspose" if one_d else "Conv2DTranspose" if rank == 4 else None
    if use.op == "Conv3DBackpropInputV2":
        return "Conv3DTranspose" if rank == 5 else None
    if use.op == "MatMul" and rank == 2 and not use.attrs.get("transpose_b"):
        return "Dense" if not use.attrs.get("transpose_a") else None
    return None


def recognise(members: list[Member], uses: dict[int, list[Use]]) -> list[Recognised]:
    """Layers the ops tell among a group of variables: one per kernel (its bias, the variable
    added to the kernel op's output, with it), a separable conv's two kernels together, a
    batch norm's four statistics together. Members no op tells stay out of every layer."""
    kernel_uses = {
        m.node_id: next((u for u in uses.get(m.node_id, []) if u.op in KERNEL_OPS), None)
        for m in members
    }
    kernels = [m for m in members if kernel_uses[m.node_id] is not None]
    found: list[Recognised] = []
    taken: set[int] = set()
    roles = {m.role for m in members}
    if {"depthwise_kernel", "pointwise_kernel"} <= roles and len(kernels) == 2:
        depthwise = next(m for m in members if m.role == "depthwise_kernel")
        rank = len(depthwise.shape)
        chosen = [m for m in members if m.role in ("depthwise_kernel", "pointwise_kernel", "bias")]
        found.append(
            Recognised(
                "SeparableConv2D" if rank == 4 else "SeparableConv1D",
                chosen,
                [m.role for m in chosen],
                None,
                "no Keras metadata: depthwise and pointwise kernels (a depthwise conv, then a "
                "1x1 conv, in the graph)",
            )
        )
        return found
    for kernel in kernels:
        use = kernel_uses[kernel.node_id]
        assert use is not None
        class_name = _kernel_class(use, len(kernel.shape))
        if class_name is None:
            continue
        chosen, chosen_roles = [kernel], ["kernel"]
        for other in members:
            if other.node_id == kernel.node_id or other.node_id in taken:
                continue
            bias = [u for u in uses.get(other.node_id, []) if u.op in BIAS_OPS]
            if any(u.feeds == use.node and u.function == use.function for u in bias):
                chosen.append(other)
                chosen_roles.append("bias")
        if len(kernels) == 1 and "bias" not in chosen_roles:
            # the kernel op inside a called function (Keras 3 compiles a grouped conv apart):
            # the group's one variable named bias, added by a bias op, is its bias
            bias_named = [m for m in members if m.role == "bias" and m is not kernel and any(
                u.op in BIAS_OPS for u in uses.get(m.node_id, []))]  # fmt: skip
            if len(bias_named) == 1:
                chosen.append(bias_named[0])
                chosen_roles.append("bias")
        taken.update(m.node_id for m in chosen)
        note = f"no Keras metadata: a {class_name}, from the graph's {use.op} op"
        if use.expanded:
            note += " on its kernel expanded by one axis"
        if use.groups is None and class_name in ("Conv1D", "Conv2D", "Conv3D"):
            note += " (groups not recorded in the graph: 1 assumed)"
        found.append(Recognised(class_name, chosen, chosen_roles, use.groups, note))
    statistics = {}
    for member in members:
        if member.node_id in taken:
            continue
        norm = [u for u in uses.get(member.node_id, []) if u.op in BATCH_NORM_OPS]
        if norm:
            statistics[BATCH_NORM_ROLES[norm[0].position]] = member
    if len(statistics) == len(BATCH_NORM_ROLES):
        chosen = list(statistics.values())
        found.append(
            Recognised(
                "BatchNormalization",
                chosen,
                list(statistics),
                None,
                f"no Keras metadata: a BatchNormalization, from the graph's "
                f"{uses[chosen[0].node_id][0].op} op",
            )
        )
    return found
