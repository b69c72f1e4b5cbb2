"""Pair the weight-bearing layers of two models: by kind and shape where that is unambiguous, by
value where it is not.

Each model's layers become :class:`Entry` objects (layers with no floating-point weights, such
as an ONNX ``Reshape`` holding an int64 shape, are left out, and so are ``unknown`` layers whose
only floating-point tensors are single-element constants, such as the operand of a scalar
``Mul``). Two entries are *compatible* when their kinds are, and some transform
(:mod:`weightscope.comparison.transforms`) maps the canonical shape of A's principal tensor
(kernel, else gamma, else embeddings) onto B's:

- a conv, a depthwise conv and a transposed conv of the same dimensionality are compatible with
  one another (all three are stored canonically as ``(out, in/groups, *k)``; a depthwise conv
  read from a bare state dict is often just ``conv2d``, and a transposed conv's weight read as
  an ordinary conv's is the ``swap_io`` mistake);
- a dense layer and an ungrouped conv whose kernel is all ones spatially (a 1x1 conv computes a
  dense layer at every position) are compatible, compared as ``(out, in)``;
- separable convs, batch norms, layer norms and embeddings only with their own kind;
- ``unknown`` layers only with ``unknown`` layers holding the same roles and shapes.

Compatibility splits the layers into connected groups. A group with one layer on each side is a
pair ("matched by shape"). In a larger group (several layers of one shape, heads declared in a
different order, a layer missing on one side) the pairs are an optimal assignment, computed with
the Hungarian algorithm (implemented below, no scipy), on a cost that ranks, most important
first: values that agree within tolerance up to a permutation of the elements (every transform
is one, so this is compared on sorted values, transform-free and at most 4096 quantiles per
tensor); as many pairs as possible; kind and shape equal rather than only compatible; the same
relative position in the two models; and the distance between the sorted values. Pairs whose
values agree are "matched by value", the others in such a group "matched by order".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from weightscope import dtypes
from weightscope.comparison.transforms import Tolerance, difference, reachable
from weightscope.kinds import Kind
from weightscope.model import Layer, Model, Tensor

SKETCH_SIZE = 4096
"""Sorted values kept per tensor for pairing by value (all of them for smaller tensors)."""

MATCHED_BY_SHAPE = "shape"
MATCHED_BY_VALUE = "value"
MATCHED_BY_ORDER = "order"


def is_float(dtype: str) -> bool:
    """Floating-point element types whose values can be compared."""
    return dtypes.is_float(dtype) and dtypes.has_real_values(dtype)


def float_tensors(layer: Layer) -> list[Tensor]:
    """The layer's tensors of real values: floating point, or quantized integers (their real
    values); a quantized layer's scales and zero points are not weights to compare."""
    return [
        t
        for t in layer.tensors
        if (is_float(t.dtype) or t.quantization is not None) and not t.is_quantization_parameter
    ]


@dataclass(eq=False)
class Entry:
    """One weight-bearing layer as the matcher sees it."""

    index: int
    """Position among the model's compared layers."""
    layer: Layer
    family: tuple[object, ...]
    principal: Tensor | None
    shape: tuple[int, ...]
    """Canonical shape of the principal tensor (native where it has no canonical form)."""

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def kind(self) -> Kind:
        return self.layer.kind

    @property
    def dense_like(self) -> bool:
        """A dense layer, or an ungrouped conv whose kernel is 1 wide in every spatial axis."""
        if self.kind == Kind.DENSE:
            return len(self.shape) == 2
        return (
            self.family[0] == "conv"
            and self.kind.is_plain_conv
            and self.layer.groups == 1
            and len(self.shape) > 2
            and all(s == 1 for s in self.shape[2:])
        )

    @property
    def out_channels(self) -> int | None:
        """Channels this layer outputs, for inferring a flattened feature map after it."""
        if self.kind.is_separable:
            for tensor in self.layer.tensors:
                if tensor.role == "pointwise_kernel" and tensor.canonical_shape:
                    return tensor.canonical_shape[0]
        if self.family[0] == "unknown" or not self.shape:
            return None
        return self.shape[0]


def principal_tensor(layer: Layer) -> Tensor | None:
    """The tensor that stands for the layer: its kernel (depthwise kernel for separable convs),
    else gamma (beta, moving statistics), else its embeddings; None for ``unknown`` layers."""
    if layer.kind.is_unknown:
        return None
    tensors = {t.role: t for t in float_tensors(layer)}
    order = ("kernel", "depthwise_kernel", "embeddings", "gamma", "beta", "moving_mean")
    for role in (*order, "moving_variance"):
        if role in tensors:
            return tensors[role]
    return next(iter(tensors.values()), None)


def tensor_shape(tensor: Tensor) -> tuple[int, ...]:
    shape = tensor.canonical_shape
    return tuple(shape) if shape is not None else tuple(tensor.native_shape)


def _family(layer: Layer, floats: Sequence[Tensor]) -> tuple[object, ...]:
    kind = layer.kind
    if kind.is_conv and not kind.is_separable:
        return ("conv", str(kind.spatial_rank))
    if kind.is_separable:
        return ("separable", str(kind.spatial_rank))
    if kind.is_unknown:
        return ("unknown", tuple(sorted((t.role, tuple(t.native_shape)) for t in floats)))
    return (layer.kind,)


NO_FLOATS = "no floating-point weights"
SCALARS_ONLY = "single-element constants only"
NOT_PARAMETERS = "no parameters (optimizer state, counters, stored copies)"


def entries(model: Model) -> tuple[list[Entry], list[tuple[str, str]]]:
    """The model's comparable layers in model order, and those left out: (name, why)."""
    found: list[Entry] = []
    left_out: list[tuple[str, str]] = []
    for layer in model.layers:
        floats = float_tensors(layer)
        if not floats:
            left_out.append((layer.name, NO_FLOATS))
            continue
        if not any(t.counted for t in floats):
            left_out.append((layer.name, NOT_PARAMETERS))
            continue
        if layer.kind.is_unknown and all(t.size <= 1 for t in floats):
            left_out.append((layer.name, SCALARS_ONLY))
            continue
        principal = principal_tensor(layer)
        shape = tensor_shape(principal) if principal is not None else ()
        found.append(Entry(len(found), layer, _family(layer, floats), principal, shape))
    return found, left_out


def comparable_shapes(a: Entry, b: Entry) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """The principal shapes to compare (a 1x1 conv against a dense layer as ``(out, in)``), or
    None when the kinds are not compatible."""
    if a.family == b.family:
        return a.shape, b.shape
    if a.dense_like and b.dense_like:
        return a.shape[:2], b.shape[:2]
    return None


def relation(a: Entry, b: Entry) -> str | None:
    """``"exact"`` (same kind and shape), ``"compatible"`` (a transform or a compatible kind
    bridges them) or None."""
    shapes = comparable_shapes(a, b)
    if shapes is None:
        return None
    shape_a, shape_b = shapes
    if a.family[0] == "unknown":
        return "exact"
    if shape_a == shape_b and a.kind == b.kind and a.shape == b.shape:
        return "exact"
    return "compatible" if reachable(shape_a, shape_b) else None


@dataclass
class Sketch:
    """Sorted values (or evenly spaced quantiles of them) of each floating-point tensor."""

    values: dict[str, np.ndarray]
    sizes: dict[str, int]
    steps: dict[str, float] = field(default_factory=dict)
    """A quantized tensor's largest quantization step, by role: values within it agree."""


def sketch(layer: Layer, read: Callable[[Layer, Tensor], np.ndarray]) -> Sketch:
    """The layer's sketch, reading each of its tensors once."""
    values: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    steps: dict[str, float] = {}
    for tensor in float_tensors(layer):
        step = tensor.quantization_step()
        if step is not None:
            steps[tensor.role] = step
        flat = np.sort(np.asarray(read(layer, tensor)).reshape(-1))
        sizes[tensor.role] = flat.size
        if flat.size > SKETCH_SIZE:
            picks = np.linspace(0, flat.size - 1, SKETCH_SIZE).round().astype(np.intp)
            flat = flat[picks]
        values[tensor.role] = flat.astype(np.float64)
    return Sketch(values, sizes, steps)


def sketch_distance(a: Sketch, b: Sketch, tolerance: Tolerance) -> tuple[bool, float]:
    """Whether the values agree up to a permutation (within tolerance, on every role both
    hold), and the largest distance relative to ``max|b|``."""
    agree = True
    distance = 0.0
    common = [r for r in a.values if r in b.values and a.sizes[r] == b.sizes[r]]
    if not common:
        return False, 1.0
    for role in common:
        found = difference(a.values[role], b.values[role])
        step = max(a.steps.get(role, 0.0), b.steps.get(role, 0.0))
        allowed = replace(tolerance, atol=tolerance.atol + step) if step else tolerance
        agree = agree and allowed.allows(found.max_abs_diff, found.max_abs_b)
        distance = max(distance, min(found.max_rel_diff, 1.0))
    return agree, distance


@dataclass
class Pair:
    a: Entry
    b: Entry
    matched_by: str
    group_size: tuple[int, int]
    """Layers on each side of the compatibility group the pair came from."""


@dataclass
class Matching:
    pairs: list[Pair] = field(default_factory=list)
    unmatched_a: list[Entry] = field(default_factory=list)
    unmatched_b: list[Entry] = field(default_factory=list)


def match(
    side_a: Sequence[Entry],
    side_b: Sequence[Entry],
    sketches: Callable[[str, Entry], Sketch],
    tolerance: Tolerance,
) -> Matching:
    """Pair ``side_a`` with ``side_b``. ``sketches("a" | "b", entry)`` reads a layer's values;
    it is only called for layers in ambiguous groups. Pairs come back in A's order."""
    result = Matching()
    for group_a, group_b in _groups(side_a, side_b):
        if not group_a or not group_b:
            result.unmatched_a.extend(group_a)
            result.unmatched_b.extend(group_b)
            continue
        size = (len(group_a), len(group_b))
        if size == (1, 1):
            result.pairs.append(Pair(group_a[0], group_b[0], MATCHED_BY_SHAPE, size))
            continue
        paired = _assign(group_a, group_b, sketches, tolerance)
        used_a = {id(p.a) for p in paired}
        used_b = {id(p.b) for p in paired}
        result.pairs.extend(paired)
        result.unmatched_a.extend(e for e in group_a if id(e) not in used_a)
        result.unmatched_b.extend(e for e in group_b if id(e) not in used_b)
    result.pairs.sort(key=lambda p: p.a.index)
    result.unmatched_a.sort(key=lambda e: e.index)
    result.unmatched_b.sort(key=lambda e: e.index)
    return result


def _groups(
    side_a: Sequence[Entry], side_b: Sequence[Entry]
) -> list[tuple[list[Entry], list[Entry]]]:
    """Connected groups of the compatibility graph (union-find), each side in model order."""
    parent = list(range(len(side_a) + len(side_b)))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, a in enumerate(side_a):
        for j, b in enumerate(side_b):
            if relation(a, b) is not None:
                parent[root(i)] = root(len(side_a) + j)
    groups: dict[int, tuple[list[Entry], list[Entry]]] = {}
    for i, a in enumerate(side_a):
        groups.setdefault(root(i), ([], []))[0].append(a)
    for j, b in enumerate(side_b):
        groups.setdefault(root(len(side_a) + j), ([], []))[1].append(b)
    return list(groups.values())


def _assign(
    group_a: list[Entry],
    group_b: list[Entry],
    sketches: Callable[[str, Entry], Sketch],
    tolerance: Tolerance,
) -> list[Pair]:
    n, m = len(group_a), len(group_b)
    most = min(n, m)
    # Weights that make the cost lexicographic: each level outweighs everything below it
    # summed over the most pairs there can be (order and distance are each at most 1 a pair).
    below = most + 1.0
    exact_weight = below
    pair_weight = (most + 1) * (exact_weight + below)
    agree_weight = (most + 1) * (pair_weight + exact_weight + below)
    cost = np.zeros((n, m))
    agrees = np.zeros((n, m), dtype=bool)
    sketch_a = [sketches("a", e) for e in group_a]
    sketch_b = [sketches("b", e) for e in group_b]
    for i, a in enumerate(group_a):
        for j, b in enumerate(group_b):
            kind = relation(a, b)
            if kind is None:
                continue  # cost 0: the same as leaving both unpaired
            agree, distance = sketch_distance(sketch_a[i], sketch_b[j], tolerance)
            agrees[i, j] = agree
            order = abs(_position(i, n) - _position(j, m))
            cost[i, j] = (
                -agree_weight * agree
                - pair_weight
                - exact_weight * (kind == "exact")
                + order
                + 1e-3 * distance
            )
    pairs = []
    for i, j in hungarian(cost):
        if cost[i, j] < 0:
            how = MATCHED_BY_VALUE if agrees[i, j] else MATCHED_BY_ORDER
            pairs.append(Pair(group_a[i], group_b[j], how, (n, m)))
    return pairs


def _position(i: int, count: int) -> float:
    return i / (count - 1) if count > 1 else 0.0


def hungarian(cost: np.ndarray) -> list[tuple[int, int]]:
    """Minimum-cost assignment of the rows of ``cost`` to distinct columns (of the columns to
    rows when there are fewer columns): the Hungarian algorithm with potentials (Kuhn-Munkres,
    O(n^2 m)), its inner loop vectorised over columns. Returns ``(row, column)`` pairs."""
    matrix = np.asarray(cost, dtype=np.float64)
    transposed = matrix.shape[0] > matrix.shape[1]
    if transposed:
        matrix = matrix.T
    n, m = matrix.shape
    if n == 0:
        return []
    u = np.zeros(n + 1)
    v = np.zeros(m + 1)
    row_of = np.zeros(m + 1, dtype=np.intp)  # row (1-based) assigned to each column; 0: none
    way = np.zeros(m + 1, dtype=np.intp)
    for row in range(1, n + 1):
        row_of[0] = row
        column = 0
        slack = np.full(m + 1, np.inf)
        used = np.zeros(m + 1, dtype=bool)
        while True:
            used[column] = True
            current_row = row_of[column]
            free = ~used
            free[0] = False
            reduced = matrix[current_row - 1] - u[current_row] - v[1:]
            better = free[1:] & (reduced < slack[1:])
            slack[1:][better] = reduced[better]
            way[1:][better] = column
            candidates = np.where(free, slack, np.inf)
            next_column = int(np.argmin(candidates))
            delta = candidates[next_column]
            u[row_of[used]] += delta
            v[used] -= delta
            slack[~used] -= delta
            column = next_column
            if row_of[column] == 0:
                break
        while column:
            previous = way[column]
            row_of[column] = row_of[previous]
            column = previous
    pairs = [(int(row_of[j]) - 1, j - 1) for j in range(1, m + 1) if row_of[j]]
    if transposed:
        pairs = [(j, i) for i, j in pairs]
    return sorted(pairs)
