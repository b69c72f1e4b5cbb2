"""Which values of an ONNX graph are static: initializers, ``Constant`` node outputs, and what
``Identity``, ``Cast``, ``Reshape``, ``Transpose``, ``Squeeze``, ``Unsqueeze`` and ``Flatten`` make
of them. Subgraphs see the constants of the graphs around them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import replace

import numpy as np

from weightscope.formats._common.file_region import RegionFile, declared_bytes
from weightscope.formats.onnx.constants import Constant, new_storage_id
from weightscope.formats.onnx.proto import (
    AttributeProto,
    AttributeType,
    DataType,
    GraphProto,
    NodeProto,
    SparseTensorProto,
    TensorProto,
)
from weightscope.formats.onnx.sparse import sparse_constant
from weightscope.formats.onnx.tensors import TensorContext, dtype_name, tensor_source
from weightscope.model import ArraySource, TensorSource
from weightscope.stats import TensorStats, compute_stats

MAX_STEPS_SHOWN = 8

MAX_SHAPE_ARGUMENT = 64
"""Shape and axes arguments longer than this are not read (no real shape has that many dims)."""


Transform = Callable[[np.ndarray], np.ndarray]


class DerivedSource:
    """A stored tensor seen through a static operation, itself perhaps seen through others.
    Statistics ignore element order, so the stored tensor's chunks serve, cast by any ``Cast``
    on the way. Chains are walked in loops, not by recursion."""

    def __init__(
        self, base: TensorSource, whole: Transform, element: Transform | None = None
    ) -> None:
        self.base = base
        self.whole = whole
        self.element = element

    def file_regions(self) -> list[tuple[RegionFile, int]]:
        return declared_bytes(self._chain()[0])

    def _chain(self) -> tuple[TensorSource, list[DerivedSource]]:
        """The stored tensor's source, and the operations from it to this one, in order."""
        steps: list[DerivedSource] = []
        source: TensorSource = self
        while isinstance(source, DerivedSource):
            steps.append(source)
            source = source.base
        return source, steps[::-1]

    def read(self) -> np.ndarray:
        stored, steps = self._chain()
        array = stored.read()
        for step in steps:
            array = step.whole(array)
        return array

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        stored, steps = self._chain()
        casts = [step.element for step in steps if step.element is not None]
        for chunk in stored.chunks(max_elements):
            for cast in casts:
                chunk = cast(chunk)
            yield chunk

    def stats(self, max_elements: int) -> TensorStats:
        stored, steps = self._chain()
        if all(step.element is None for step in steps):
            return stored.stats(max_elements)
        return compute_stats(self.chunks(max_elements))


def attributes(node: NodeProto) -> dict[str, object]:
    """A node's attributes as plain Python values (subgraphs and tensors left as messages)."""
    values: dict[str, object] = {}
    for attr in node.attribute:
        kind = attr.type
        A = AttributeType
        if kind == A.INT:
            values[attr.name] = int(attr.i)
        elif kind == A.FLOAT:
            values[attr.name] = float(attr.f)
        elif kind == A.STRING:
            values[attr.name] = attr.s.decode("utf-8", "replace")
        elif kind == A.INTS:
            values[attr.name] = [int(v) for v in attr.ints]
        elif kind == A.FLOATS:
            values[attr.name] = [float(v) for v in attr.floats]
        elif kind == A.STRINGS:
            values[attr.name] = [s.decode("utf-8", "replace") for s in attr.strings]
        elif kind == A.TENSOR:
            values[attr.name] = attr.t
        elif kind == A.GRAPH:
            values[attr.name] = attr.g
    return values


class Scope:
    """The static values visible in one graph (and, through ``parent``, in enclosing graphs)."""

    def __init__(
        self,
        graph: GraphProto,
        ctx: TensorContext,
        parent: Scope | None = None,
        where: str | None = None,
    ) -> None:
        self.graph = graph
        self.ctx = ctx
        self.parent = parent
        self.where = where
        """Where this graph sits (``then_branch of If 'check'``), None for the main graph."""
        self.nodes = list(graph.node)
        """The graph's nodes, held so that their ``id()`` is stable while the graph is read."""
        self.constants: dict[str, Constant] = {}
        self.producers: dict[str, NodeProto] = {}
        self.constant_nodes: set[int] = set()
        self._resolved: dict[str, Constant | None] = {}
        self._readers: dict[str, list[NodeProto]] | None = None
        self._escaping: set[str] = set()
        for tensor in graph.initializer:
            self._add_stored(tensor.name, tensor)
        for sparse in graph.sparse_initializer:
            self._add_sparse(sparse.values.name, sparse)
        for index, node in enumerate(self.nodes):
            for output in node.output:
                if output:
                    self.producers[output] = node
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx") and node.output:
                constant = self._constant_node_value(node)
                if constant is not None:
                    self.constants[node.output[0]] = constant
                    self.constant_nodes.add(index)

    def _add_stored(self, name: str, tensor: TensorProto) -> Constant:
        source = tensor_source(tensor, self.ctx)
        shape = tuple(int(d) for d in tensor.dims)
        constant = Constant(name, source, shape, dtype_name(tensor.data_type), new_storage_id())
        self.constants[name] = constant
        return constant

    def _add_sparse(self, name: str, sparse: SparseTensorProto) -> None:

        self.constants[name] = sparse_constant(name, sparse, self.ctx)

    def _constant_node_value(self, node: NodeProto) -> Constant | None:
        name = node.output[0]
        for attr in node.attribute:
            if attr.name == "value" and attr.type == AttributeType.TENSOR:
                tensor = attr.t
                source = tensor_source(tensor, self.ctx)
                shape = tuple(int(d) for d in tensor.dims)
                return Constant(name, source, shape, dtype_name(tensor.data_type), new_storage_id())
            if attr.name == "sparse_value" and attr.type == AttributeType.SPARSE_TENSOR:
                return sparse_constant(name, attr.sparse_tensor, self.ctx)
            array = _scalar_attribute(attr)
            if array is not None:
                return Constant(
                    name, ArraySource(array), array.shape, str(array.dtype), new_storage_id()
                )
        return None

    def resolve(self, name: str) -> Constant | None:
        """The constant value named ``name`` as seen from this graph, or None if it is computed
        at run time. Chains of static nodes are followed in a loop (they can be thousands long
        in a valid model), then applied from the stored tensor outwards."""
        pending: list[tuple[Scope, NodeProto, str]] = []
        seen: set[tuple[int, str]] = set()
        scope: Scope = self
        current = name
        base: Constant | None = None
        while current:
            if current in scope._resolved:
                base = scope._resolved[current]
                break
            if current in scope.constants:
                base = scope.constants[current]
                break
            node = scope.producers.get(current)
            if node is None:
                if scope.parent is None:
                    break
                scope = scope.parent
                continue
            if (id(scope), current) in seen or not _is_static_op(node):
                break  # a cycle (not a valid graph) or a node computed at run time
            limit = self.ctx.limits.max_static_chain
            if len(pending) >= limit:
                for owner, _, output in pending:
                    owner._resolved[output] = None
                self.ctx.note(
                    f"a chain of more than {limit} static nodes was not followed back to its "
                    f"stored tensor: its value is reported as computed at run time (limit "
                    f"max_static_chain; raise it with --limit max_static_chain={2 * max(limit, 1)})"
                )
                return None
            seen.add((id(scope), current))
            pending.append((scope, node, current))
            current = node.input[0]
        for owner, node, output in reversed(pending):
            base = None if base is None else owner._apply(node, base)
            owner._resolved[output] = base
        return base

    def producer(self, name: str) -> NodeProto | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.producers:
                return scope.producers[name]
            if name in scope.constants:
                return None
            scope = scope.parent
        return None

    def sole_reader(self, name: str) -> NodeProto | None:
        """The one node of this graph that reads value ``name``, through one input only; None
        where no node or several read it, or where it is also seen outside this graph's nodes
        (a graph output, or a name used inside a subgraph of one of them)."""
        if self._readers is None:
            self._readers, self._escaping = self._find_readers()
        readers = self._readers.get(name, [])
        if len(readers) != 1 or name in self._escaping:
            return None
        return readers[0]

    def _find_readers(self) -> tuple[dict[str, list[NodeProto]], set[str]]:
        """Each value's readers among this graph's nodes (once per input), and the names seen
        outside them: this graph's outputs and every name a nested graph reads or outputs
        (shadowing ignored: a name counts as escaping even if a subgraph reuses it)."""
        readers: dict[str, list[NodeProto]] = {}
        for node in self.nodes:
            for name in node.input:
                if name:
                    readers.setdefault(name, []).append(node)
        escaping = {output.name for output in self.graph.output}
        pending = [g for node in self.nodes for g in _subgraphs(node)]
        while pending:  # a loop, not recursion: nesting is bounded by the reader, not here
            graph = pending.pop()
            escaping.update(output.name for output in graph.output)
            for node in graph.node:
                escaping.update(node.input)
                pending.extend(_subgraphs(node))
        return readers, escaping

    def small_ints(self, name: str) -> list[int] | None:
        """The values of a small static integer tensor (a shape or an axes list)."""
        constant = self.resolve(name)
        if constant is None or constant.size > MAX_SHAPE_ARGUMENT or "int" not in constant.dtype:
            return None
        return [int(v) for v in np.asarray(constant.source.read()).reshape(-1)]

    def _apply(self, node: NodeProto, base: Constant) -> Constant | None:
        try:
            derived = _STATIC_OPS[node.op_type](self, node, base)
        except (ValueError, TypeError, IndexError):
            return None  # arguments that do not fit: leave it to the runtime (and say so)
        if derived is None:
            return None
        label = f"{node.op_type} '{node.name}'" if node.name else node.op_type
        steps = base.steps
        if len(steps) < MAX_STEPS_SHOWN:
            steps = (*steps, f"{label}{derived.steps[-1]}")
        return replace(derived, name=base.name, steps=steps, step_count=base.step_count + 1)


def _subgraphs(node: NodeProto) -> list[GraphProto]:
    graphs: list[GraphProto] = []
    for attr in node.attribute:
        if attr.type == AttributeType.GRAPH:
            graphs.append(attr.g)
        graphs.extend(attr.graphs)
    return graphs


def _is_static_op(node: NodeProto) -> bool:
    return node.domain in ("", "ai.onnx") and node.op_type in _STATIC_OPS and bool(node.input)


def _scalar_attribute(attr: AttributeProto) -> np.ndarray | None:
    A = AttributeType
    if attr.name == "value_float" and attr.type == A.FLOAT:
        return np.asarray(attr.f, np.float32)
    if attr.name == "value_floats" and attr.type == A.FLOATS:
        return np.asarray(attr.floats, np.float32)
    if attr.name == "value_int" and attr.type == A.INT:
        return np.asarray(attr.i, np.int64)
    if attr.name == "value_ints" and attr.type == A.INTS:
        return np.asarray(attr.ints, np.int64)
    return None


def _with(
    base: Constant,
    source: TensorSource,
    shape: tuple[int, ...],
    step: str,
    dtype: str | None = None,
) -> Constant:
    return replace(base, source=source, shape=shape, dtype=dtype or base.dtype, steps=(step,))


def _identity(scope: Scope, node: NodeProto, base: Constant) -> Constant:
    return _with(base, base.source, base.shape, "")


_CAST_TYPES: dict[int, type[np.generic]] = {
    DataType.FLOAT: np.float32,
    DataType.DOUBLE: np.float64,
    DataType.FLOAT16: np.float16,
    DataType.INT8: np.int8,
    DataType.UINT8: np.uint8,
    DataType.INT32: np.int32,
    DataType.INT64: np.int64,
}


def _cast(scope: Scope, node: NodeProto, base: Constant) -> Constant | None:
    to = attributes(node).get("to")
    if not isinstance(to, int) or to not in _CAST_TYPES:
        return None
    target = _CAST_TYPES[to]

    def cast(array: np.ndarray) -> np.ndarray:
        return np.asarray(array).astype(target)

    return _with(
        base,
        DerivedSource(base.source, cast, cast),
        base.shape,
        f"(to={dtype_name(to)})",
        dtype_name(to),
    )


def _reshaped(base: Constant, shape: tuple[int, ...], step: str) -> Constant:
    if math.prod(shape) != base.size:
        raise ValueError(f"cannot reshape {base.shape} to {shape}")

    def reshape(array: np.ndarray) -> np.ndarray:
        return np.asarray(array).reshape(shape)

    return _with(base, DerivedSource(base.source, reshape), shape, step)


def _reshape(scope: Scope, node: NodeProto, base: Constant) -> Constant | None:
    if len(node.input) < 2:
        return None
    target = scope.small_ints(node.input[1])
    if target is None:
        return None
    allow_zero = attributes(node).get("allowzero", 0)
    dims = [
        base.shape[i] if d == 0 and not allow_zero and i < len(base.shape) else d
        for i, d in enumerate(target)
    ]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        return None
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or base.size % known:
            return None
        dims[dims.index(-1)] = base.size // known
    return _reshaped(base, tuple(dims), f"(shape={list(dims)})")


def _transpose(scope: Scope, node: NodeProto, base: Constant) -> Constant | None:
    perm_value = attributes(node).get("perm")
    rank = len(base.shape)
    perm = list(perm_value) if isinstance(perm_value, list) else list(reversed(range(rank)))
    if sorted(perm) != list(range(rank)):
        return None
    shape = tuple(base.shape[p] for p in perm)

    def transpose(array: np.ndarray) -> np.ndarray:
        return np.asarray(array).transpose(perm)

    return _with(base, DerivedSource(base.source, transpose), shape, f"(perm={perm})")


def _axes(scope: Scope, node: NodeProto) -> list[int] | None:
    axes = attributes(node).get("axes")
    if isinstance(axes, list):
        return axes
    if len(node.input) > 1 and node.input[1]:
        return scope.small_ints(node.input[1])
    return None


def _squeeze(scope: Scope, node: NodeProto, base: Constant) -> Constant | None:
    rank = len(base.shape)
    axes = _axes(scope, node)
    if axes is None:
        drop = {i for i, d in enumerate(base.shape) if d == 1}
    else:
        drop = {a % rank for a in axes}
        if any(base.shape[a] != 1 for a in drop):
            return None
    shape = tuple(d for i, d in enumerate(base.shape) if i not in drop)
    return _reshaped(base, shape, f"(axes={sorted(drop)})")


def _unsqueeze(scope: Scope, node: NodeProto, base: Constant) -> Constant | None:
    axes = _axes(scope, node)
    if axes is None or len(axes) > MAX_SHAPE_ARGUMENT:
        return None
    rank = len(base.shape) + len(axes)
    positions = sorted(a % rank for a in axes)
    dims = list(base.shape)
    for position in positions:
        dims.insert(position, 1)
    return _reshaped(base, tuple(dims), f"(axes={positions})")


def _flatten(scope: Scope, node: NodeProto, base: Constant) -> Constant | None:
    axis_value = attributes(node).get("axis", 1)
    axis = int(axis_value) if isinstance(axis_value, int) else 1
    axis %= len(base.shape) + 1
    shape = (math.prod(base.shape[:axis]), math.prod(base.shape[axis:]))
    return _reshaped(base, shape, f"(axis={axis})")


_STATIC_OPS: dict[str, Callable[[Scope, NodeProto, Constant], Constant | None]] = {
    "Identity": _identity,
    "Cast": _cast,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Flatten": _flatten,
}
STATIC_OPS = frozenset(_STATIC_OPS)
