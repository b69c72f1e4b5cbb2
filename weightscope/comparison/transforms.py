"""The transforms that map one canonical weight tensor onto another, and the search for the one
that holds.

Every transform is a permutation of the tensor's elements, named after the porting mistake (or
convention difference) it undoes. On a canonical conv kernel ``(out, in/groups, *k)``:

- ``identity``: nothing changes;
- ``swap_hw``: the last two spatial axes exchanged (``kh`` and ``kw``; 2-D and 3-D kernels);
- ``flip_hw``: every spatial axis reversed, i.e. a 2-D kernel rotated by 180 degrees (the
  difference between convolution and cross-correlation; a 1-D kernel reversed);
- ``swap_io``: the ``out`` and ``in`` axes exchanged (a kernel loaded transposed, or a transposed
  conv's ``(in, out, *k)`` weight read as an ordinary conv's ``(out, in, *k)``);
- combinations of these, joined by ``+`` (``swap_hw+flip_hw`` is a transpose about the
  anti-diagonal).

On a dense kernel ``(out, in)``: ``identity``, ``swap_io`` (a square kernel loaded without
transposing), and the two flatten orders of the *input* axis (the columns) when the layer reads a
flattened ``h x w x c`` feature map:

- ``flatten_hwc_to_chw``: the columns of A are in ``(h, w, c)`` order (a channels-last flatten,
  as Keras does) and B holds the same weights in ``(c, h, w)`` order (a channels-first flatten,
  as ``nn.Flatten`` on an NCHW tensor does): ``B[:, c*H*W + h*W + w] == A[:, (h*W + w)*C + c]``;
- ``flatten_chw_to_hwc``: the inverse (A channels-first, B channels-last).

Vectors (bias, batch-norm statistics) and embedding tables only have ``identity``.

On a recurrent layer's canonical tensors ``(gates, units, ...)``: ``identity`` and every other
order of the gates, ``gate_order(i,f,g,o->f,i,g,o)`` (B's gates, in canonical order, hold A's
forget, input, candidate and output gates): gates copied in another framework's order.

A transform *holds* when ``max|T(a) - b| <= atol + rtol * max|b|`` (see :class:`Tolerance`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations, permutations

import numpy as np

IDENTITY = "identity"
NONE = "none"
SWAP_HW = "swap_hw"
FLIP_HW = "flip_hw"
SWAP_IO = "swap_io"
FLATTEN_HWC_TO_CHW = "flatten_hwc_to_chw"
FLATTEN_CHW_TO_HWC = "flatten_chw_to_hwc"
GATE_ORDER = "gate_order"
QUANTIZED = "quantized"
"""Not a permutation: the relation of a pair where one side holds quantized integers whose real
values are the other side's within a quantization step."""

DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-5

MAX_FEATURE_MAPS = 16
"""At most this many ``(h, w)`` factorisations of a flattened feature map are tried."""


@dataclass(frozen=True)
class Tolerance:
    """Two tensors agree when ``max|a - b| <= atol + rtol * max|b|`` (``b`` the second model's
    tensor): one absolute and one relative bound on the largest difference, relative to the
    tensor's largest magnitude rather than element by element, so that a weight near zero does not
    demand an exact match."""

    atol: float = DEFAULT_ATOL
    rtol: float = DEFAULT_RTOL

    def allows(self, max_abs_diff: float, max_abs_b: float) -> bool:
        return bool(max_abs_diff <= self.atol + self.rtol * max_abs_b)

    def to_dict(self) -> dict[str, object]:
        return {
            "atol": self.atol,
            "rtol": self.rtol,
            "rule": "max|T(a) - b| <= atol + rtol * max|b|, per tensor",
        }


@dataclass(frozen=True)
class FeatureMap:
    """The ``h x w x c`` feature map a dense layer's input was flattened from."""

    h: int
    w: int
    c: int

    def __str__(self) -> str:
        return f"h={self.h}, w={self.w}, c={self.c}"


@dataclass(frozen=True)
class Transform:
    """One named element permutation, applicable to tensors of some shapes."""

    name: str
    apply: Callable[[np.ndarray], np.ndarray]
    feature_map: FeatureMap | None = None
    gate_order: tuple[int, ...] | None = None
    """For a gate reordering: the gate of A (canonical index) each of B's gates holds."""

    @property
    def steps(self) -> tuple[str, ...]:
        return tuple(self.name.split("+"))


@dataclass(frozen=True)
class Difference:
    """How far ``T(a)`` is from ``b``."""

    max_abs_diff: float
    max_abs_b: float
    where: tuple[int, ...] | None
    """Index (in B's layout) of the largest difference, None when there is none."""

    @property
    def max_rel_diff(self) -> float:
        """The largest difference relative to ``max|b|`` (inf when ``b`` is all zeros and
        ``a`` is not)."""
        if self.max_abs_diff == 0:
            return 0.0
        if self.max_abs_b == 0:
            return math.inf
        return self.max_abs_diff / self.max_abs_b


def _swap_hw(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def _flip_hw(x: np.ndarray) -> np.ndarray:
    return np.flip(x, axis=tuple(range(2, x.ndim)))


def _swap_io(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, 0, 1)


def _compose(steps: Sequence[Callable[[np.ndarray], np.ndarray]]) -> Callable[..., np.ndarray]:
    def apply(x: np.ndarray) -> np.ndarray:
        for step in steps:
            x = step(x)
        return x

    return apply


def _hwc_to_chw(fm: FeatureMap) -> Callable[[np.ndarray], np.ndarray]:
    def apply(x: np.ndarray) -> np.ndarray:
        out = x.shape[0]
        return x.reshape(out, fm.h, fm.w, fm.c).transpose(0, 3, 1, 2).reshape(out, -1)

    return apply


def _chw_to_hwc(fm: FeatureMap) -> Callable[[np.ndarray], np.ndarray]:
    def apply(x: np.ndarray) -> np.ndarray:
        out = x.shape[0]
        return x.reshape(out, fm.c, fm.h, fm.w).transpose(0, 2, 3, 1).reshape(out, -1)

    return apply


def _kernel_transforms(rank: int) -> list[Transform]:
    """identity first, then single steps, then combinations (the order of preference when
    several hold, e.g. on a symmetric kernel)."""
    spatial = rank - 2
    steps: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = []
    if spatial >= 2:
        steps.append((SWAP_HW, _swap_hw))
    if spatial >= 1:
        steps.append((FLIP_HW, _flip_hw))
    steps.append((SWAP_IO, _swap_io))
    found = [Transform(IDENTITY, lambda x: x)]
    for size in range(1, len(steps) + 1):
        for combo in combinations(steps, size):
            name = "+".join(_ordered_names(n for n, _ in combo))
            found.append(Transform(name, _compose([f for _, f in combo])))
    return found


def _ordered_names(names: Iterable[str]) -> list[str]:
    order = [SWAP_IO, SWAP_HW, FLIP_HW]
    return sorted(names, key=order.index)


def gate_name(order: Sequence[int], gates: str) -> str:
    """``gate_order(i,f,g,o->f,i,g,o)``: B's gates (canonical letters ``gates``) hold A's
    gates ``order``."""
    held = ",".join(gates[i] for i in order)
    return f"{GATE_ORDER}({','.join(gates)}->{held})"


def gate_transforms(gates: str) -> list[Transform]:
    """``identity``, then every other order of a recurrent tensor's gates (its axis 0), for a
    layer whose canonical gates are ``gates`` (``ifgo``)."""
    found = [Transform(IDENTITY, lambda x: x)]
    for order in permutations(range(len(gates))):
        if order == tuple(range(len(gates))):
            continue
        found.append(Transform(gate_name(order, gates), _reorder(order), gate_order=order))
    return found


def _reorder(order: tuple[int, ...]) -> Callable[[np.ndarray], np.ndarray]:
    def apply(x: np.ndarray) -> np.ndarray:
        return np.asarray(x)[list(order)]

    return apply


def feature_maps(in_features: int, channels: Iterable[int]) -> list[FeatureMap]:
    """Every ``h x w x c`` with ``h * w * c == in_features`` for the given channel counts and
    ``h * w > 1``: square maps first, then the others by how far from square (``1 x n`` and
    ``n x 1`` give the same flatten order, so only one is kept)."""
    maps: list[FeatureMap] = []
    for c in dict.fromkeys(channels):
        if c <= 0 or in_features % c:
            continue
        hw = in_features // c
        if hw <= 1:
            continue
        pairs = [(h, hw // h) for h in range(1, hw + 1) if hw % h == 0 and h != hw]
        pairs.sort(key=lambda p: (abs(p[0] - p[1]), -p[0]))
        maps.extend(FeatureMap(h, w, c) for h, w in pairs)
    return maps[:MAX_FEATURE_MAPS]


def candidates(
    shape_a: tuple[int, ...],
    shape_b: tuple[int, ...],
    *,
    maps: Sequence[FeatureMap] = (),
) -> list[Transform]:
    """The transforms applicable to a tensor of ``shape_a`` that give ``shape_b``, in order of
    preference. ``maps`` are the feature maps a dense kernel's input may have been flattened from
    (only used for 2-D tensors)."""
    if len(shape_a) != len(shape_b):
        return []
    if len(shape_a) < 2:
        return [Transform(IDENTITY, lambda x: x)] if shape_a == shape_b else []
    found = [
        t for t in _kernel_transforms(len(shape_a)) if transformed_shape(t, shape_a) == shape_b
    ]
    if len(shape_a) == 2 and shape_a == shape_b:
        for fm in maps:
            if fm.h * fm.w * fm.c == shape_a[1]:
                found.append(Transform(FLATTEN_HWC_TO_CHW, _hwc_to_chw(fm), fm))
                found.append(Transform(FLATTEN_CHW_TO_HWC, _chw_to_hwc(fm), fm))
    return found


def transformed_shape(transform: Transform, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape ``transform`` turns ``shape`` into (without any data)."""
    result = list(shape)
    if transform.gate_order is not None:
        return tuple(result)
    for step in transform.steps:
        if step == SWAP_IO:
            result[0], result[1] = result[1], result[0]
        elif step == SWAP_HW:
            result[-1], result[-2] = result[-2], result[-1]
    return tuple(result)


def reachable(shape_a: tuple[int, ...], shape_b: tuple[int, ...]) -> bool:
    """Whether some transform turns a tensor of ``shape_a`` into one of ``shape_b``."""
    return bool(candidates(shape_a, shape_b))


DIFFERENCE_CHUNK_ELEMENTS = 1 << 22
"""Elements compared at a time, so that comparing two large tensors needs little more memory
than the tensors themselves."""


def difference(a: np.ndarray, b: np.ndarray) -> Difference:
    """Largest absolute difference between two same-shaped arrays, computed in float32 (float64
    when either is float64) over slabs of the first axis. NaNs in the same place agree; a NaN
    against a number, or infinities of different sign, is an infinite difference."""
    if a.shape != b.shape:
        raise ValueError(f"shapes {a.shape} and {b.shape} differ")
    if a.ndim == 0:
        a, b = a.reshape(1), b.reshape(1)
    if a.size == 0:
        return Difference(0.0, 0.0, None)
    row = max(1, math.prod(a.shape[1:]))
    step = max(1, DIFFERENCE_CHUNK_ELEMENTS // row)
    largest, max_b, where = 0.0, 0.0, None
    for start in range(0, a.shape[0], step):
        diff, slab_max_b = _slab_difference(a[start : start + step], b[start : start + step])
        max_b = max(max_b, slab_max_b)
        flat = int(np.argmax(diff))
        value = float(diff.reshape(-1)[flat])
        if value > largest:
            largest = value
            index = np.unravel_index(flat, diff.shape)
            where = (int(index[0]) + start, *(int(i) for i in index[1:]))
    return Difference(largest, max_b, where)


def _slab_difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, float]:
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    finite_b = np.abs(b[np.isfinite(b)])
    max_b = float(finite_b.max()) if finite_b.size else 0.0
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.abs(a - b)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    diff[same] = 0
    diff[np.isnan(diff)] = np.inf
    return diff, max_b


@dataclass(frozen=True)
class Search:
    """The outcome of trying every candidate transform on one tensor pair."""

    transform: Transform | None
    """The first candidate (in order of preference) that holds; None when none does."""
    closest: Transform | None
    """The candidate with the smallest difference (the one that holds, when one does)."""
    difference: Difference | None
    """The difference under ``transform`` when one holds, else under ``closest``."""


def search(
    a: np.ndarray, b: np.ndarray, transforms: Sequence[Transform], tolerance: Tolerance
) -> Search:
    """Try ``transforms`` on ``a`` in order and stop at the first under which it equals ``b``
    within ``tolerance``."""
    best: tuple[Transform, Difference] | None = None
    for transform in transforms:
        found = difference(transform.apply(a), b)
        if tolerance.allows(found.max_abs_diff, found.max_abs_b):
            return Search(transform, transform, found)
        if best is None or found.max_abs_diff < best[1].max_abs_diff:
            best = (transform, found)
    if best is None:
        return Search(None, None, None)
    return Search(None, best[0], best[1])
