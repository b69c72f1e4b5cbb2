"""``weightscope.compare(a, b)``: are two models' weights the same, layer by layer, whatever
frameworks wrote them, and if not, how do they differ?

The layers of A and B are paired (:mod:`weightscope.comparison.matching`), then for each pair
the transforms of :mod:`weightscope.comparison.transforms` are tried on A's canonical principal
tensor until one maps it onto B's within tolerance; that transform is applied to the pair's
other kernel-like tensors (vectors such as biases are compared as they are) and every tensor the
two layers share is compared. Values are read one pair at a time, so two large models are never
held in memory at once.

A quantized tensor is compared by its real values: it agrees with the other side's when they
differ by at most one quantization step (its largest scale) beyond the tolerance, and the pair's
relation is then ``quantized`` (``swap_hw+quantized`` after a transform), with the signal to
quantization noise ratio in dB (SQNR, the float side's energy over the difference's).

Verdict: ``identical`` when every pair matches under ``identity`` and no layer is unmatched
(exit status 0 on the command line), ``quantized`` when every pair matches, some only as
quantized and none under another transform, ``transformed`` when every pair matches but some only
under a transform, ``different`` when a pair differs or a layer is unmatched (exit status 1 for
all three).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from weightscope import display, layouts
from weightscope.comparison.folding import BN_FOLDED, fold
from weightscope.comparison.matching import (
    MATCHED_BY_ORDER,
    Entry,
    Matching,
    Pair,
    Sketch,
    entries,
    float_tensors,
    match,
    sketch,
)
from weightscope.comparison.transforms import (
    DEFAULT_ATOL,
    DEFAULT_RTOL,
    FLATTEN_CHW_TO_HWC,
    FLATTEN_HWC_TO_CHW,
    IDENTITY,
    NONE,
    QUANTIZED,
    FeatureMap,
    Tolerance,
    Transform,
    candidates,
    difference,
    feature_maps,
    gate_name,
    gate_transforms,
    search,
    transformed_shape,
)
from weightscope.conventions import Convention
from weightscope.errors import WeightscopeError, printable
from weightscope.formats.registry import load
from weightscope.kinds import Kind
from weightscope.limits import Limits
from weightscope.model import Layer, Model, Tensor

IDENTICAL = "identical"
QUANTIZED_VERDICT = QUANTIZED
TRANSFORMED = "transformed"
DIFFERENT = "different"


@dataclass
class TensorResult:
    """One tensor of a pair, compared after the pair's transform."""

    role: str
    transform: str
    max_abs_diff: float
    max_rel_diff: float
    match: bool
    where: tuple[int, ...] | None = None
    sqnr_db: float | None = None
    """Signal to quantization noise ratio, where one side is quantized (inf: no error)."""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "role": self.role,
            "transform": self.transform,
            "max_abs_diff": _json_number(self.max_abs_diff),
            "max_rel_diff": _json_number(self.max_rel_diff),
            "match": self.match,
        }
        if self.sqnr_db is not None:
            data["sqnr_db"] = _json_number(self.sqnr_db)
        return data


@dataclass
class PairResult:
    """One layer of A, the layer of B it was paired with, and how their weights compare."""

    a: str
    b: str
    kind: str
    """The kind, or ``A's kind/B's kind`` when they differ."""
    transform: str
    """The transform that maps A's principal tensor onto B's (``identity``, ``swap_hw``...), or
    ``none`` when no transform does."""
    max_abs_diff: float
    """Largest absolute difference over the pair's tensors, after the transform (after the
    closest one when none holds)."""
    max_rel_diff: float
    """Largest difference relative to ``max|b|`` of its tensor, over the pair's tensors."""
    match: bool
    """Every tensor the layers share agrees within tolerance (and no weight is on one side
    only)."""
    matched_by: str
    tensors: list[TensorResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def note(self) -> str | None:
        return "; ".join(self.notes) if self.notes else None

    @property
    def sqnr_db(self) -> float | None:
        """The lowest SQNR of the pair's quantized tensors; None when neither side is."""
        found = [t.sqnr_db for t in self.tensors if t.sqnr_db is not None]
        return min(found) if found else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "kind": self.kind,
            "transform": self.transform,
            "max_abs_diff": _json_number(self.max_abs_diff),
            "max_rel_diff": _json_number(self.max_rel_diff),
            "match": self.match,
            "note": self.note,
            "matched_by": self.matched_by,
            "sqnr_db": None if self.sqnr_db is None else _json_number(self.sqnr_db),
            "tensors": [t.to_dict() for t in self.tensors],
        }


@dataclass
class Unmatched:
    """A layer with no partner on the other side."""

    name: str
    kind: str
    shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape)}


@dataclass
class Comparison:
    """The outcome of :func:`compare`."""

    a: str
    b: str
    """What was compared: file paths, or a description of a live object."""
    a_format: str
    b_format: str
    pairs: list[PairResult]
    unmatched_a: list[Unmatched]
    unmatched_b: list[Unmatched]
    tolerance: Tolerance
    notes: list[str] = field(default_factory=list)
    left_out_a: list[tuple[str, str]] = field(default_factory=list)
    left_out_b: list[tuple[str, str]] = field(default_factory=list)
    """Layers with no weights to compare: (name, why)."""

    @property
    def verdict(self) -> str:
        """``identical``, ``quantized``, ``transformed`` or ``different`` (see the module
        docstring)."""
        if self.unmatched_a or self.unmatched_b or not all(p.match for p in self.pairs):
            return DIFFERENT
        if all(p.transform == IDENTITY for p in self.pairs):
            return IDENTICAL
        if all(p.transform in (IDENTITY, QUANTIZED) for p in self.pairs):
            return QUANTIZED_VERDICT
        return TRANSFORMED

    @property
    def exit_code(self) -> int:
        """0 for ``identical``, 1 otherwise (the command line's exit status)."""
        return 0 if self.verdict == IDENTICAL else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a,
            "b": self.b,
            "a_format": self.a_format,
            "b_format": self.b_format,
            "pairs": [p.to_dict() for p in self.pairs],
            "unmatched_a": [u.to_dict() for u in self.unmatched_a],
            "unmatched_b": [u.to_dict() for u in self.unmatched_b],
            "verdict": self.verdict,
            "tolerance": self.tolerance.to_dict(),
            "notes": list(self.notes),
            "left_out_a": [{"name": n, "reason": r} for n, r in self.left_out_a],
            "left_out_b": [{"name": n, "reason": r} for n, r in self.left_out_b],
        }

    def __rich__(self) -> Any:
        return display.presenter().comparison(self)


def compare(
    a: str | os.PathLike[str] | Any,
    b: str | os.PathLike[str] | Any,
    *,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    limits: Limits | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Comparison:
    """Compare the weights of two models, layer by layer: two files in any supported format
    (same or different frameworks) or their URLs, live ``torch.nn.Module`` /
    ``onnx.ModelProto`` objects, or already loaded :class:`~weightscope.Model` objects (left
    open). Tensors agree when ``max|T(a) - b| <= atol + rtol * max|b|``. Files are read within
    ``limits``, URLs with ``storage_options`` (see :func:`weightscope.load`).

    Raises ``WeightscopeError`` (one line) when a model cannot be read.
    """
    tolerance = _tolerance(atol, rtol)
    model_a, label_a, close_a = _open(a, limits, storage_options)
    try:
        model_b, label_b, close_b = _open(b, limits, storage_options)
        try:
            return _compare_models(model_a, label_a, model_b, label_b, tolerance)
        finally:
            if close_b:
                model_b.close()
    finally:
        if close_a:
            model_a.close()


def _tolerance(atol: float, rtol: float) -> Tolerance:
    for name, value in (("atol", atol), ("rtol", rtol)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise WeightscopeError(f"{name} must be a finite number >= 0, not {value!r}")
    return Tolerance(float(atol), float(rtol))


def _open(
    source: Any, limits: Limits | None, storage_options: Mapping[str, Any] | None
) -> tuple[Model, str, bool]:
    if isinstance(source, Model):
        label = str(source.source) if source.source else f"live {source.framework} model"
        return source, label, False
    model = load(source, limits=limits, storage_options=storage_options)
    if isinstance(source, (str, os.PathLike)):
        return model, os.fspath(source), True
    return model, f"live {type(source).__qualname__} ({model.framework})", True


class _Reader:
    """Reads a model's tensors, turning any failure into a one-line WeightscopeError."""

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, layer: Layer, tensor: Tensor) -> np.ndarray:
        try:
            array = tensor.canonical() if tensor.native_layout else tensor.numpy()
            return np.asarray(array)
        except WeightscopeError:
            raise
        except Exception as exc:
            raise WeightscopeError(
                printable(
                    f"{self.label}: layer {layer.name!r}, tensor {tensor.role!r}: cannot read: "
                    f"{' '.join(str(exc).split())}"
                )
            ) from exc


def _compare_models(
    model_a: Model, label_a: str, model_b: Model, label_b: str, tolerance: Tolerance
) -> Comparison:
    side_a, left_a = entries(model_a)
    side_b, left_b = entries(model_b)
    readers = {"a": _Reader(label_a), "b": _Reader(label_b)}
    cache: dict[tuple[str, int], Sketch] = {}

    def sketches(side: str, entry: Entry) -> Sketch:
        key = (side, entry.index)
        if key not in cache:
            cache[key] = sketch(entry.layer, readers[side])
        return cache[key]

    matching = match(side_a, side_b, sketches, tolerance)
    cache.clear()
    results = [
        _compare_pair(pair, side_a, side_b, readers["a"], readers["b"], tolerance)
        for pair in matching.pairs
    ]
    notes = _absorb_folded_batch_norms(matching, results, side_a, side_b, readers, tolerance)
    for label, left in (("A", left_a), ("B", left_b)):
        if left:
            notes.append(f"{label}: {left_out_summary(left)}")
    if not side_a and not side_b:
        notes.append("neither model has weight-bearing layers")
    return Comparison(
        a=label_a,
        b=label_b,
        a_format=model_a.format,
        b_format=model_b.format,
        pairs=results,
        unmatched_a=[_unmatched(e) for e in matching.unmatched_a],
        unmatched_b=[_unmatched(e) for e in matching.unmatched_b],
        tolerance=tolerance,
        notes=notes,
        left_out_a=left_a,
        left_out_b=left_b,
    )


SHOWN_LEFT_OUT = 3
"""Names shown per reason in the left-out note; ``--json`` (``left_out_a``/``_b``) has all."""


def left_out_summary(left: list[tuple[str, str]]) -> str:
    """``45 layers left out, holding no weights to compare: no floating-point weights (40:
    Pad, Reshape/shape, strided_slice, +37 more); ...``."""
    reasons: dict[str, list[str]] = {}
    for name, reason in left:
        reasons.setdefault(reason, []).append(name)
    parts = []
    for reason, names in reasons.items():
        shown = ", ".join(names[:SHOWN_LEFT_OUT])
        more = f", +{len(names) - SHOWN_LEFT_OUT} more" if len(names) > SHOWN_LEFT_OUT else ""
        parts.append(f"{reason} ({len(names)}: {shown}{more})")
    layers = f"{len(left)} layer{'s' if len(left) != 1 else ''}"
    return f"{layers} left out, holding no weights to compare: {'; '.join(parts)}"


def _absorb_folded_batch_norms(
    matching: Matching,
    results: list[PairResult],
    side_a: list[Entry],
    side_b: list[Entry],
    readers: dict[str, _Reader],
    tolerance: Tolerance,
) -> list[str]:
    """Pairs whose weights differ because one side's batch norm was folded into the layer
    before it (a converter's doing): each such pair becomes ``bn_folded``, the batch norm is
    no longer unmatched, and a note says so. Returns those notes."""
    notes: list[str] = []
    for label, unmatched, side in (
        ("A", matching.unmatched_a, side_a),
        ("B", matching.unmatched_b, side_b),
    ):
        for entry in list(unmatched):
            if entry.kind != Kind.BATCH_NORM or entry.index == 0:
                continue
            before = side[entry.index - 1]
            index = next(
                (
                    i
                    for i, pair in enumerate(matching.pairs)
                    if (pair.a if label == "A" else pair.b) is before
                ),
                None,
            )
            if index is None or results[index].match:
                continue
            pair = matching.pairs[index]
            folded = _folded_pair(pair, label, entry.layer, readers, tolerance)
            if folded is None:
                continue
            results[index] = folded
            unmatched.remove(entry)
            notes.append(
                f"{label}: batch norm {entry.name!r} is folded into {before.name!r} on the other "
                "side (see its pair)"
            )
    return notes


def _folded_pair(
    pair: Pair, label: str, batch_norm: Layer, readers: dict[str, _Reader], tolerance: Tolerance
) -> PairResult | None:
    """``pair`` compared with ``batch_norm`` (on side ``label``) folded into its layer there;
    None when the folded weights do not agree with the other side's."""
    mine, other = (pair.a, pair.b) if label == "A" else (pair.b, pair.a)
    read_mine = readers["a" if label == "A" else "b"]
    read_other = readers["b" if label == "A" else "a"]
    settings = _batch_norm_settings(batch_norm)
    defaults = batch_norm.convention.batch_norm
    stated = defaults is not None and defaults.eps_key in batch_norm.config
    known = settings[0].value if settings is not None else None
    other_kernel = other.layer.kernel
    if other_kernel is None or other_kernel.native_layout is None:
        return None
    target_kernel = np.asarray(read_other(other.layer, other_kernel), np.float64)
    other_bias = next((t for t in other.layer.tensors if t.role == "bias"), None)
    # a file that does not state eps (a state dict) may have used another than the default
    tried = [known] if stated else list(dict.fromkeys([known, *COMMON_EPSILONS]))
    for eps in [e for e in tried if e is not None]:
        folded = fold(mine.layer, batch_norm, eps, read_mine)
        if folded is None:
            return None
        kernel_a, kernel_b = _align(folded.kernel, target_kernel)
        if kernel_a.shape != kernel_b.shape:
            return None
        target_bias = (
            np.zeros_like(folded.bias)
            if other_bias is None
            else np.asarray(read_other(other.layer, other_bias), np.float64).reshape(-1)
        )
        if target_bias.shape != folded.bias.shape:
            return None
        found = [difference(kernel_a, kernel_b), difference(folded.bias, target_bias)]
        if all(tolerance.allows(d.max_abs_diff, d.max_abs_b) for d in found):
            break
    else:
        return None
    tensors = [
        TensorResult(role, BN_FOLDED, d.max_abs_diff, d.max_rel_diff, True)
        for role, d in zip(("kernel", "bias"), found, strict=True)
    ]
    if stated:
        how = "from the file"
    elif folded.eps == known:
        how = "the framework's default"
    else:
        how = "not stated in the file; the value that fits"
    note = (
        f"{label}'s batch norm {batch_norm.name!r} folded into {mine.name!r} matches the other "
        f"side: kernel x gamma / sqrt(var + eps) per output channel, bias (bias - mean) x that "
        f"+ beta (eps {folded.eps:g}, {how}); residual max abs diff "
        f"{max(d.max_abs_diff for d in found):.3g}"
    )
    kinds = (pair.a.layer.kind, pair.b.layer.kind)
    return PairResult(
        a=pair.a.layer.name,
        b=pair.b.layer.name,
        kind=str(kinds[0]) if kinds[0] == kinds[1] else f"{kinds[0]}/{kinds[1]}",
        transform=BN_FOLDED,
        max_abs_diff=max(d.max_abs_diff for d in found),
        max_rel_diff=max(d.max_rel_diff for d in found),
        match=True,
        matched_by=pair.matched_by,
        tensors=tensors,
        notes=[note],
    )


COMMON_EPSILONS = (1e-3, 1e-5)
"""Batch-norm epsilons tried, Keras' then PyTorch's and ONNX's default, where a file does not
state its own and its framework's default is not known."""


def _unmatched(entry: Entry) -> Unmatched:
    return Unmatched(entry.name, entry.kind, entry.shape)


def _previous_channels(side: list[Entry], entry: Entry) -> tuple[int | None, str | None]:
    """Output channels of the nearest layer before ``entry`` that has them, and its name."""
    for earlier in reversed(side[: entry.index]):
        channels = earlier.out_channels
        if channels is not None:
            return channels, earlier.name
    return None, None


def _align(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 1x1 conv kernel against a dense kernel: both as ``(out, in)``."""
    if a.ndim > b.ndim == 2 and all(s == 1 for s in a.shape[2:]):
        a = a.reshape(a.shape[:2])
    elif b.ndim > a.ndim == 2 and all(s == 1 for s in b.shape[2:]):
        b = b.reshape(b.shape[:2])
    return a, b


NEUTRAL = {"bias": 0.0, "recurrent_bias": 0.0, "beta": 0.0, "gamma": 1.0}
"""Values of a tensor stored on one side only that leave the layer's output unchanged (a zero
bias where the other side has none)."""


def _compare_pair(
    pair: Pair,
    side_a: list[Entry],
    side_b: list[Entry],
    read_a: _Reader,
    read_b: _Reader,
    tolerance: Tolerance,
) -> PairResult:
    layer_a, layer_b = pair.a.layer, pair.b.layer
    tensors_a = {t.role: t for t in float_tensors(layer_a)}
    tensors_b = {t.role: t for t in float_tensors(layer_b)}
    kind = layer_a.kind if layer_a.kind == layer_b.kind else f"{layer_a.kind}/{layer_b.kind}"
    notes: list[str] = []
    if layer_a.kind != layer_b.kind:
        inferred = [side for side, layer in (("A", layer_a), ("B", layer_b)) if layer.inferred]
        why = f" ({' and '.join(inferred)} inferred from names and shapes)" if inferred else ""
        notes.append(f"kinds differ: {layer_a.kind} in A, {layer_b.kind} in B{why}")
    if pair.matched_by == MATCHED_BY_ORDER:
        notes.append(
            f"paired by position among {max(pair.group_size)} layers of compatible kind and "
            "shape (no values agree)"
        )
    results: list[TensorResult] = []
    shared = [role for role in tensors_a if role in tensors_b]
    principal = _principal_role(pair)
    chosen: Transform | None = None
    if principal is not None:
        shared.remove(principal)
        context = _Context(side_a, side_b, read_a, read_b, tolerance)
        chosen = _search_principal(pair, principal, context, results, notes)
    summed = _summed_biases(layer_a, layer_b, tensors_a, tensors_b)
    if summed is not None:
        notes.append(
            f"bias compared as bias + recurrent_bias of {summed} (the other keeps one bias; "
            "only their sum acts)"
        )
    for role in shared:
        array_a = read_a(layer_a, tensors_a[role])
        array_b = read_b(layer_b, tensors_b[role])
        if role == "bias" and summed is not None:
            if summed == "A":
                array_a = array_a + read_a(layer_a, tensors_a.pop("recurrent_bias"))
            else:
                array_b = array_b + read_b(layer_b, tensors_b.pop("recurrent_bias"))
        quantized = _Quantized(tensors_a[role], tensors_b[role], tolerance)
        results.append(_compare_tensor(role, chosen, array_a, array_b, quantized, notes))
    for side, mine, other, read, layer in (
        ("A", tensors_a, tensors_b, read_a, layer_a),
        ("B", tensors_b, tensors_a, read_b, layer_b),
    ):
        for role in mine:
            if role in other:
                continue
            neutral = NEUTRAL.get(role)
            if neutral is not None and np.all(read(layer, mine[role]) == neutral):
                notes.append(f"{role} only in {side} (all {neutral:g}: no effect)")
            else:
                notes.append(f"{role} only in {side}")
                results.append(TensorResult(role, NONE, math.inf, math.inf, False))
    for result in results:
        if not result.match and result.where is not None:
            notes.append(f"{result.role} differs most at index {list(result.where)}")
    if layer_a.kind == Kind.BATCH_NORM and layer_b.kind == Kind.BATCH_NORM:
        notes.append(_batch_norm_note(layer_a, layer_b))
    match = bool(results) and all(r.match for r in results)
    if principal is not None:
        transform = chosen.name if chosen is not None else NONE
    else:
        transform = IDENTITY if match else NONE
    if match and any(r.sqnr_db is not None for r in results):
        transform = QUANTIZED if transform == IDENTITY else f"{transform}+{QUANTIZED}"
    return PairResult(
        a=layer_a.name,
        b=layer_b.name,
        kind=kind,
        transform=transform,
        max_abs_diff=max((r.max_abs_diff for r in results), default=0.0),
        max_rel_diff=max((r.max_rel_diff for r in results), default=0.0),
        match=match,
        matched_by=pair.matched_by,
        tensors=results,
        notes=notes,
    )


@dataclass
class _Context:
    side_a: list[Entry]
    side_b: list[Entry]
    read_a: _Reader
    read_b: _Reader
    tolerance: Tolerance


def _principal_role(pair: Pair) -> str | None:
    """The role both layers' principal tensors have, where they have the same one."""
    a, b = pair.a.principal, pair.b.principal
    if a is None or b is None or a.role != b.role:
        return None
    return a.role


def _search_principal(
    pair: Pair, role: str, context: _Context, results: list[TensorResult], notes: list[str]
) -> Transform | None:
    """Try every candidate transform on the principal tensors; record the result and return the
    transform that holds (None when none does)."""
    layer_a, layer_b = pair.a.layer, pair.b.layer
    maps, origin = _maps(pair, context.side_a, context.side_b)
    tensor_a, tensor_b = layer_a.tensor(role), layer_b.tensor(role)
    array_a, array_b = _align(context.read_a(layer_a, tensor_a), context.read_b(layer_b, tensor_b))
    gates = _shared_gates(tensor_a, tensor_b)
    if gates is not None and array_a.shape == array_b.shape:
        transforms = gate_transforms(gates)
    else:
        transforms = candidates(array_a.shape, array_b.shape, maps=maps)
    quantized = _Quantized(tensor_a, tensor_b, context.tolerance)
    found = search(array_a, array_b, transforms, quantized.tolerance)
    if found.transform is not None and found.transform.gate_order is not None:
        found = replace(found, transform=_named_gate_order(found.transform, tensor_a, tensor_b))
    shown = found.transform or found.closest
    if found.difference is None or shown is None:
        results.append(TensorResult(role, NONE, math.inf, math.inf, False))
        notes.append(f"{role}: no transform maps shape {array_a.shape} onto {array_b.shape}")
        return None
    holds = found.transform is not None
    diff = found.difference
    results.append(
        TensorResult(
            role,
            shown.name if holds else NONE,
            diff.max_abs_diff,
            diff.max_rel_diff,
            holds,
            None if holds else diff.where,
            quantized.sqnr(shown.apply(array_a), array_b),
        )
    )
    if quantized.step is not None and not holds:
        notes.append(
            f"{role}: quantized, but differs by more than a quantization step "
            f"({quantized.step:.3g})"
        )
    if not holds and shown.name != IDENTITY:
        notes.append(f"no transform holds; closest: {shown.name}")
    if shown.feature_map is not None:
        notes.append(_flatten_note(shown.feature_map, origin))
    if maps:
        note = _framework_flatten_note(layer_a, layer_b)
        if note:
            notes.append(note)
    return found.transform


def _compare_tensor(
    role: str,
    transform: Transform | None,
    array_a: np.ndarray,
    array_b: np.ndarray,
    quantized: _Quantized,
    notes: list[str],
) -> TensorResult:
    """One of the pair's other tensors, after the principal's transform where it applies to
    this tensor's shape (kernel-like tensors; vectors stay as they are)."""
    array_a, array_b = _align(array_a, array_b)
    name = IDENTITY
    if (
        transform is not None
        and transform.name != IDENTITY
        and array_a.ndim >= 2
        and transformed_shape(transform, array_a.shape) == array_b.shape
    ):
        array_a = transform.apply(array_a)
        name = transform.name
    if array_a.shape != array_b.shape:
        notes.append(f"{role}: shapes {array_a.shape} and {array_b.shape} differ")
        return TensorResult(role, NONE, math.inf, math.inf, False)
    found = difference(array_a, array_b)
    agree = quantized.tolerance.allows(found.max_abs_diff, found.max_abs_b)
    return TensorResult(
        role,
        name if agree else NONE,
        found.max_abs_diff,
        found.max_rel_diff,
        agree,
        None if agree else found.where,
        quantized.sqnr(array_a, array_b),
    )


SUMMED_BIAS_KINDS = (Kind.LSTM, Kind.SIMPLE_RNN)
"""Recurrent kinds in which the input and the recurrent bias only ever act as their sum (a GRU's
candidate reads the recurrent bias inside its reset gate)."""


def _summed_biases(
    layer_a: Layer, layer_b: Layer, tensors_a: dict[str, Tensor], tensors_b: dict[str, Tensor]
) -> str | None:
    """``A`` or ``B``: the side whose two biases are compared, summed, with the other's one (a
    Keras LSTM's bias against a PyTorch or ONNX LSTM's two); None when nothing is summed."""
    if layer_a.kind != layer_b.kind or layer_a.kind not in SUMMED_BIAS_KINDS:
        return None
    if "bias" not in tensors_a or "bias" not in tensors_b:
        return None
    in_a, in_b = "recurrent_bias" in tensors_a, "recurrent_bias" in tensors_b
    if in_a == in_b:
        return None
    return "A" if in_a else "B"


class _Quantized:
    """The tolerance for one tensor pair: ``tolerance``, widened by a quantization step where
    either side is quantized, and the SQNR of such a pair."""

    def __init__(self, a: Tensor, b: Tensor, tolerance: Tolerance) -> None:
        steps = [s for s in (a.quantization_step(), b.quantization_step()) if s is not None]
        self.step = max(steps) if steps else None
        self.float_side = "a" if b.quantization is not None and a.quantization is None else "b"
        self.tolerance = (
            tolerance if self.step is None else replace(tolerance, atol=tolerance.atol + self.step)
        )

    def sqnr(self, a: np.ndarray, b: np.ndarray) -> float | None:
        """``10 log10(sum(signal^2) / sum((a - b)^2))`` with the float side as the signal;
        None when neither side is quantized."""
        if self.step is None or a.shape != b.shape:
            return None
        signal = np.asarray(a if self.float_side == "a" else b, dtype=np.float64)
        noise = float(np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
        power = float(np.sum(signal**2))
        if noise == 0:
            return math.inf
        if power == 0:
            return -math.inf
        return 10 * math.log10(power / noise)


def _shared_gates(a: Tensor, b: Tensor) -> str | None:
    """The canonical gates of two recurrent tensors of the same family; None otherwise."""
    found = []
    for tensor in (a, b):
        gated = layouts.gate_axis(tensor.native_layout) if tensor.native_layout else None
        if gated is None:
            return None
        found.append(layouts.canonical_gates(gated[1]))
    return found[0] if found[0] == found[1] else None


def _named_gate_order(transform: Transform, a: Tensor, b: Tensor) -> Transform:
    """A gate reordering named by the two files' own gate orders where it is what copying A's
    stored gates into B's slots unchanged gives (``gate_order(i,f,c,o->i,o,f,c)``: a Keras
    LSTM's gates written into an ONNX LSTM as they were)."""
    native_a = layouts.gate_axis(a.native_layout or "")
    native_b = layouts.gate_axis(b.native_layout or "")
    if native_a is None or native_b is None or transform.gate_order is None:
        return transform
    gates_a, gates_b = native_a[1], native_b[1]
    canonical = layouts.canonical_gates(gates_a)
    slot_of_a = layouts.gate_permutation(gates_a)  # canonical gate -> A's stored position
    stored_in_a = {position: gate for gate, position in enumerate(slot_of_a)}
    copied = tuple(stored_in_a[p] for p in layouts.gate_permutation(gates_b))
    if copied == transform.gate_order:
        name = f"gate_order({','.join(gates_a)}->{','.join(gates_b)})"
    else:
        name = gate_name(transform.gate_order, canonical)
    return replace(transform, name=name)


def _maps(pair: Pair, side_a: list[Entry], side_b: list[Entry]) -> tuple[list[FeatureMap], str]:
    """Feature maps a dense layer's input may have been flattened from, with where the channel
    count came from."""
    if not (pair.a.dense_like and pair.b.dense_like and pair.a.kind == Kind.DENSE):
        return [], ""
    channels: list[int] = []
    origins: list[str] = []
    for side, entry, label in ((side_a, pair.a, "A"), (side_b, pair.b, "B")):
        count, name = _previous_channels(side, entry)
        if count is not None:
            channels.append(count)
            origins.append(f"{label}'s {name}")
    return feature_maps(pair.a.shape[1], channels), " and ".join(dict.fromkeys(origins))


def _flatten_note(fm: FeatureMap, origin: str) -> str:
    where = f" (c from the out channels of {origin})" if origin else ""
    return f"input columns read as a flattened {fm.h}x{fm.w}x{fm.c} (h x w x c) map{where}"


def _framework_flatten_note(layer_a: Layer, layer_b: Layer) -> str | None:
    """Keras against PyTorch (or ONNX, usually exported from PyTorch): which dense weights are
    right depends on how the other model flattens, which the weights cannot show."""
    a, b = layer_a.convention, layer_b.convention
    if a.flattens_channels_last == b.flattens_channels_last:
        return None
    last, other = (a, b) if a.flattens_channels_last else (b, a)
    port = FLATTEN_HWC_TO_CHW if a.flattens_channels_last else FLATTEN_CHW_TO_HWC
    return (
        f"{last.display_name} flattens (h, w, c), {other.display_name} NCHW maps as (c, h, w): "
        f"the same weights are right only if the {other.display_name} model permutes to "
        f"channels-last before flattening, {port} if not"
    )


@dataclass(frozen=True)
class _Setting:
    """One batch-norm hyperparameter of one side."""

    value: float | None
    """In Keras' convention for momentum; None for PyTorch's ``momentum=None`` (a cumulative
    average)."""
    known: bool
    """Recorded in the file, or the ONNX default, which then applies by the specification.
    False where the file does not say (a PyTorch state dict, a weights-only Keras file): the
    value is then the framework's default, an assumption."""

    def same_as(self, other: _Setting) -> bool | None:
        """Whether the two agree; None when either is an assumption."""
        if not (self.known and other.known):
            return None
        if self.value is None or other.value is None:
            return self.value is other.value
        return math.isclose(self.value, other.value, rel_tol=1e-6)


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _batch_norm_settings(layer: Layer) -> tuple[_Setting, _Setting] | None:
    """(eps, momentum in Keras' convention), None for a framework weightscope has no defaults
    for."""
    defaults = layer.convention.batch_norm
    if defaults is None:
        return None
    eps_key, eps_default = defaults.eps_key, defaults.eps
    momentum_key, momentum_default = defaults.momentum_key, defaults.momentum
    by_spec = defaults.defaults_by_spec
    eps_value = _number(layer.config.get(eps_key))
    eps = _Setting(eps_value, True) if eps_value is not None else _Setting(eps_default, by_spec)
    if momentum_key in layer.config:
        raw = layer.config[momentum_key]
        value = _number(raw)
        momentum = _Setting(value, value is not None or raw is None)
    else:
        momentum = _Setting(momentum_default, by_spec)
    if defaults.momentum_weights_new and momentum.value is not None:
        momentum = _Setting(1.0 - momentum.value, momentum.known)
    return eps, momentum


def _describe(setting: _Setting, label: str, convention: Convention, momentum: bool) -> str:
    name = convention.display_name
    weights_new = convention.batch_norm is not None and convention.batch_norm.momentum_weights_new
    if setting.value is None:
        return f"cumulative average ({label})"
    shown = setting.value
    if momentum and weights_new:
        shown = 1.0 - setting.value
    if not setting.known:
        text = f"not recorded in {label} ({name} default {_g(shown)})"
    else:
        text = f"{_g(shown)} ({label})"
    if momentum and weights_new:
        text = text[:-1] + f", {name} convention: {_g(setting.value)} as Keras counts it)"
    return text


def _batch_norm_note(layer_a: Layer, layer_b: Layer) -> str:
    """eps and momentum of both sides, momentum in both conventions: a note, never a mismatch
    (neither is a stored weight). Read from the layer configs; where a file does not record
    them (a PyTorch state dict), the framework's default is named as such and not compared."""
    settings = (_batch_norm_settings(layer_a), _batch_norm_settings(layer_b))
    if settings[0] is None or settings[1] is None:
        return "batch norm: eps and momentum unknown for this framework"
    conventions = (layer_a.convention, layer_b.convention)
    parts = []
    for index, what in ((0, "eps"), (1, "momentum")):
        a, b = settings[0][index], settings[1][index]
        texts = [
            _describe(setting, label, convention, momentum=index == 1)
            for setting, label, convention in ((a, "A", conventions[0]), (b, "B", conventions[1]))
        ]
        text = f"{what} {' vs '.join(texts)}"
        same = a.same_as(b)
        if same is False:
            text += (
                ": differ, normalised outputs shift slightly"
                if index == 0
                else ": differ, matters for training only"
            )
        parts.append(text)
    return (
        f"batch norm {parts[0]}; {parts[1]} (Keras and ONNX momentum = 1 - PyTorch momentum; "
        "eps defaults: Keras 1e-3, PyTorch and ONNX 1e-5)"
    )


def _g(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "?"
    return f"{value:.3g}"


def _json_number(value: float) -> float | None:
    """JSON has no infinity: an unbounded difference is null."""
    return value if math.isfinite(value) else None
