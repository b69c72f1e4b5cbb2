"""Are a layer's weights still as initialized, or trained? Its kernel against its initializer.

For each layer with a kernel (convolutions of every kind and dense layers) or an embedding
table, :func:`analyze` finds the initializer that drew it (declared in a Keras layer config,
else the framework's default: Keras ``glorot_uniform`` for kernels and ``uniform(-0.05, 0.05)``
for tables, PyTorch ``kaiming_uniform(a=sqrt(5))`` for kernels and N(0, 1) for tables; ONNX
files exported by PyTorch count as PyTorch; other ONNX files have no known default), computes
the fans by that framework's convention, and compares the weights with the initializer's
distribution (an embedding table's exact zeros, up to one row of them, are left out: the
padding row ``nn.Embedding(padding_idx=...)`` zeroes, which no random draw makes):

- ``ks``: the Kolmogorov-Smirnov distance between the weights (a deterministic random subsample
  of at most :data:`SAMPLE_SIZE` for large kernels) and the initializer's CDF, against the
  critical value of the KS test at ``alpha = 1e-4`` for that many weights;
- ``std_ratio``: the weights' standard deviation over the initializer's, against
  ``1 ± 3.89 sqrt((kurtosis - 1) / 4n)`` (the same ``alpha``, from the standard error of a
  sample standard deviation);
- ``fraction_outside``: weights beyond the initializer's bound (uniform), its 2-sigma cut
  (truncated normal) or 3 sigma (normal), against what a fresh draw puts there (none, or 0.27 %
  plus 3.89 binomial standard errors for a normal).

Each check is at ``alpha = 1e-4``, so that a freshly initialized layer is called ``trained``
about 3 times in 10,000 (at ``alpha = 0.001`` one layer of the test suite's fresh Keras models
already was); trained layers are typically many times over the critical values.

The verdict is ``at_init`` when all three agree with the initializer, ``trained`` when any does
not, and ``unknown`` below :data:`MIN_WEIGHTS` finite weights (too few for the KS test to tell
distributions apart) or when no initializer is known.
The declared or default initializer alone decides, never the best fit: a trained layer's weights
can pass all three checks against some member of the family by chance (a 16-input layer trained
200 Adam steps fits ``lecun_normal`` at n = 1024). When a default (an assumption: weights-only
Keras files, PyTorch modules that call ``nn.init`` themselves) does not fit but the best fit
passes the same checks, ``evidence`` says so; without any known initializer the verdict is
``unknown``, and ``evidence`` says whether the best fit would pass.
``best_fit`` is the closest (smallest KS distance) of the standard family (glorot / he / lecun x
uniform / truncated normal / normal, with the layer's fans), PyTorch's default and the declared
initializer, reported apart from the verdict.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from weightscope import conventions
from weightscope import initializers as inits
from weightscope.chunking import DEFAULT_CHUNK_ELEMENTS
from weightscope.dtypes import is_float
from weightscope.initializers import Initializer
from weightscope.kinds import Kind
from weightscope.model import Layer, Model, Tensor

MIN_WEIGHTS = 64
"""Below this many finite weights the verdict is ``unknown``: the KS critical value at
``alpha = 1e-4`` is then over 0.27, too wide to tell a trained layer from a fresh one."""

SAMPLE_SIZE = 1_000_000
"""At most this many weights (a seeded Bernoulli subsample, chunk by chunk) enter the KS test."""

SAMPLE_SEED = 0

ALPHA = 1e-4
"""Significance level of each of the three checks."""

KS_COEFFICIENT = math.sqrt(-0.5 * math.log(ALPHA / 2.0))  # 2.225 at alpha = 1e-4
Z_CRITICAL = NormalDist().inv_cdf(1.0 - ALPHA / 2.0)  # 3.891 at alpha = 1e-4


KERNEL_ROLES = ("kernel", "pointwise_kernel", "depthwise_kernel")
"""Which tensor of a layer is compared, in this order of preference: separable convolutions
are judged by their pointwise kernel (usually the larger of their two)."""

TABLE_ROLE = "embeddings"
"""The tensor compared for an embedding layer: its table."""

VERDICTS = ("at_init", "trained", "unknown")


def ks_critical(n: int) -> float:
    """Critical KS distance at :data:`ALPHA` for ``n`` values (Stephens' small-sample form)."""
    root = math.sqrt(n)
    return KS_COEFFICIENT / (root + 0.12 + 0.11 / root)


def ks_distance(sorted_values: np.ndarray, initializer: Initializer) -> float:
    """Kolmogorov-Smirnov distance between the empirical distribution of ``sorted_values``
    (ascending) and the initializer's CDF."""
    n = sorted_values.size
    if n == 0:
        return math.nan
    if initializer.distribution == inits.CONSTANT:
        below = np.searchsorted(sorted_values, initializer.loc, side="left")
        above = n - np.searchsorted(sorted_values, initializer.loc, side="right")
        return float(max(below, above) / n)
    if n <= 8 * KS_BLOCK:
        return _ks_exact(sorted_values, initializer, np.arange(n))
    # D is a maximum over i; F and i/n both rise with i, so within a block a <= i < b the terms
    # are bounded by b/n - F(x_a) and F(x_{b-1}) - a/n. F at the blocks' ends gives a lower
    # bound on D, and only blocks whose bound reaches it are evaluated in full: the same D from
    # a few percent of the CDF evaluations (the KS test of a large kernel against ten
    # candidates was most of the time of a report).
    starts = np.arange(0, n, KS_BLOCK)
    ends = np.minimum(starts + KS_BLOCK, n)
    edges = np.unique(np.concatenate([starts, ends - 1]))
    found = _ks_exact(sorted_values, initializer, edges)
    f_start = initializer.cdf(sorted_values[starts])
    f_last = initializer.cdf(sorted_values[ends - 1])
    bound = np.maximum(ends / n - f_start, f_last - starts / n)
    # the CDFs are monotone only to their approximation's error (1.2e-7): a margin covers it
    open_blocks = np.flatnonzero(bound > found - KS_MONOTONE_SLACK)
    if open_blocks.size:
        lengths = ends[open_blocks] - starts[open_blocks]
        first = np.repeat(starts[open_blocks] - np.cumsum(lengths) + lengths, lengths)
        indices = first + np.arange(int(lengths.sum()))
        found = max(found, _ks_exact(sorted_values, initializer, indices))
    return found


KS_BLOCK = 256
"""Sorted weights per block of :func:`ks_distance`'s bound (n = 1 M: 3,907 blocks)."""

KS_MONOTONE_SLACK = 1e-6


def _ks_exact(sorted_values: np.ndarray, initializer: Initializer, indices: np.ndarray) -> float:
    """max over the given 0-based ``indices`` i of (i+1)/n - F(x_i) and F(x_i) - i/n."""
    n = sorted_values.size
    # from one array of (i+1)/n - F(x_i)
    gaps = indices + 1.0
    gaps /= n
    gaps -= initializer.cdf(sorted_values[indices])
    return float(max(gaps.max(), 1.0 / n - gaps.min()))


@dataclass
class InitReport:
    """A layer's kernel compared with its initializer. :meth:`to_dict` is the JSON form."""

    layer: str
    kind: str
    role: str
    """Which tensor was compared (``kernel``; ``pointwise_kernel`` for separable convs)."""
    convention: str
    """Whose fan convention applies: ``keras``, ``pytorch`` or ``canonical`` (other ONNX)."""
    initializer: Initializer | None
    declared: bool
    fan_in: int
    fan_out: int
    n: int
    """Weights in the kernel."""
    n_finite: int
    n_sample: int
    """Weights that entered the KS test (all of them up to :data:`SAMPLE_SIZE`)."""
    weights_std: float | None
    fraction_outside: float | None
    std_ratio: float | None
    ks: float | None
    ks_critical: float | None
    best_fit: Initializer | None
    best_fit_ks: float | None
    verdict: str
    evidence: str
    candidates: dict[str, float] = field(default_factory=dict)
    """KS distance to every initializer tried, by name."""
    weights_mean: float | None = None
    """Mean of the finite weights (with :attr:`weights_std`, the normal a figure draws when no
    initializer fits)."""

    @property
    def best_fit_fits(self) -> bool:
        """Whether the best fit's KS distance is within the critical value (the best fit may be
        only the least bad of the candidates)."""
        return (
            self.best_fit_ks is not None
            and self.ks_critical is not None
            and self.best_fit_ks <= self.ks_critical
        )

    @property
    def bound(self) -> float | None:
        return None if self.initializer is None else self.initializer.bound

    @property
    def std(self) -> float | None:
        """The initializer's std where it is a normal (truncated or not) or constant."""
        init = self.initializer
        if init is None or init.distribution in (inits.UNIFORM, inits.UNKNOWN):
            return None
        return init.std

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "initializer": None if self.initializer is None else self.initializer.name,
            "declared": self.declared,
            "fan_in": self.fan_in,
            "fan_out": self.fan_out,
            "bound": _finite(self.bound),
            "std": _finite(self.std),
            "fraction_outside": _finite(self.fraction_outside),
            "std_ratio": _finite(self.std_ratio),
            "best_fit": None if self.best_fit is None else self.best_fit.name,
            "ks": {
                "initializer": _finite(self.ks),
                "best_fit": _finite(self.best_fit_ks),
                "critical": _finite(self.ks_critical),
            },
            "verdict": self.verdict,
            "evidence": self.evidence,
            "n": self.n,
        }


def _finite(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------
# which tensor, which fans, which initializer


def kernel_tensor(layer: Layer) -> Tensor | None:
    """The floating-point (or quantized: its real values) convolution or dense kernel of a
    layer, or None."""
    if not layer.kind.has_kernel:
        return None
    return _first_float(layer, KERNEL_ROLES)


def judged_tensor(layer: Layer) -> Tensor | None:
    """The tensor of a layer that :func:`analyze` compares with an initializer: its kernel, or
    an embedding's table; None when it has neither in floating point."""
    if layer.kind is Kind.EMBEDDING:
        return _first_float(layer, (TABLE_ROLE,))
    return kernel_tensor(layer)


def _first_float(layer: Layer, roles: Iterable[str]) -> Tensor | None:
    for role in roles:
        for tensor in layer.tensors:
            if (
                tensor.role == role
                and tensor.has_stats
                and (is_float(tensor.dtype) or tensor.quantization is not None)
                and len(tensor.native_shape) >= 2
                and tensor.size > 0
            ):
                return tensor
    return None


def _safe_canonical_shape(tensor: Tensor) -> tuple[int, ...]:
    try:
        shape = tensor.canonical_shape
    except ValueError:
        shape = None
    return shape if shape is not None else tuple(tensor.native_shape)


@dataclass(frozen=True)
class _Setting:
    convention: str
    fan_in: int
    fan_out: int
    torch_fan_in: int
    initializer: Initializer | None
    declared: bool


def _setting(layer: Layer, tensor: Tensor, producer: str | None) -> _Setting:
    native = tuple(tensor.native_shape)
    layout = tensor.native_layout or ""
    canonical = _safe_canonical_shape(tensor)
    torch_shape = inits.torch_equivalent_shape(native, layout, canonical)
    torch_fan_in = inits.torch_fans(torch_shape)[0]
    convention = conventions.lookup(layer.framework, producer)
    table = layer.kind is Kind.EMBEDDING
    if convention.initializer == conventions.KERAS_INIT:
        declared = tensor.declared_init
        if declared is None:
            fan_in, fan_out = inits.keras_fans(native)
            if table:
                init = inits.keras_embedding_default()
            else:
                init = inits.standard(inits.KERAS_DEFAULT, fan_in, fan_out)
            return _Setting("keras", fan_in, fan_out, torch_fan_in, init, False)
        return _Setting(
            "keras", declared.fan_in, declared.fan_out, torch_fan_in, declared.initializer, True
        )
    if convention.initializer == conventions.PYTORCH_INIT:
        fan_in, fan_out = inits.torch_fans(torch_shape)
        init = inits.pytorch_embedding_default() if table else inits.pytorch_default(fan_in)
        return _Setting("pytorch", fan_in, fan_out, torch_fan_in, init, False)
    fan_in, fan_out = inits.torch_fans(canonical)
    return _Setting("canonical", fan_in, fan_out, torch_fan_in, None, False)


# ---------------------------------------------------------------------------------------------
# reading the weights once: moments, values beyond the limits, a subsample


@dataclass
class _Pass:
    count: int = 0
    finite: int = 0
    mean: float = 0.0
    m2: float = 0.0
    outside: int = 0
    skipped_zeros: int = 0
    """Exact zeros left out (an embedding's padding row)."""
    sample: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def std(self) -> float | None:
        return math.sqrt(self.m2 / self.finite) if self.finite else None


def _read(tensor: Tensor, limits: tuple[float, float] | None, skip_zeros: int = 0) -> _Pass:
    """One pass over ``tensor``: moments, values beyond ``limits``, a subsample; the first
    ``skip_zeros`` exact zeros are left out of all three (and counted)."""
    result = _Pass()
    keep = min(1.0, SAMPLE_SIZE / max(1, tensor.size))
    rng = np.random.default_rng(SAMPLE_SEED)
    parts: list[np.ndarray] = []
    for chunk in tensor.source.chunks(DEFAULT_CHUNK_ELEMENTS):
        values = np.asarray(chunk).reshape(-1)
        result.count += values.size
        if values.dtype.kind != "f":
            values = values.astype(np.float64)
        finite = np.isfinite(values)
        if not finite.all():
            values = values[finite]
        if result.skipped_zeros < skip_zeros:
            zeros = np.flatnonzero(values == 0)[: skip_zeros - result.skipped_zeros]
            if zeros.size:
                values = np.delete(values, zeros)
                result.skipped_zeros += int(zeros.size)
        if values.size == 0:
            continue
        wide = values.astype(np.float64)
        n_c = wide.size
        mean_c = float(wide.mean())
        m2_c = float(np.square(wide - mean_c).sum())
        total = result.finite + n_c
        delta = mean_c - result.mean
        result.mean += delta * n_c / total
        result.m2 += m2_c + delta * delta * result.finite * n_c / total
        result.finite = total
        if limits is not None:
            slack = 4.0 * float(np.finfo(values.dtype).eps) * max(abs(limits[0]), abs(limits[1]))
            result.outside += int(
                np.count_nonzero((wide < limits[0] - slack) | (wide > limits[1] + slack))
            )
        parts.append(wide if keep >= 1.0 else wide[rng.random(n_c) < keep])
    if parts:
        result.sample = np.sort(np.concatenate(parts))
    return result


def _outside_in_sample(sample: np.ndarray, init: Initializer) -> int:
    limits = init.limits
    if limits is None or sample.size == 0:
        return 0
    slack = 4.0 * float(np.finfo(np.float32).eps) * max(abs(limits[0]), abs(limits[1]))
    low = np.searchsorted(sample, limits[0] - slack, side="left")
    high = sample.size - np.searchsorted(sample, limits[1] + slack, side="right")
    return int(low + high)


# ---------------------------------------------------------------------------------------------
# the verdict


def _std_tolerance(init: Initializer, n: int) -> float:
    kurtosis = init.kurtosis or 3.0
    return Z_CRITICAL * math.sqrt(max(kurtosis - 1.0, 0.0) / (4.0 * max(n, 1)))


def _outside_allowed(init: Initializer, n: int) -> float:
    p = init.expected_outside
    return p * n + Z_CRITICAL * math.sqrt(n * p * (1.0 - p))


def _bounds_text(init: Initializer) -> str:
    limits = init.limits
    if limits is None:
        return "-"
    low, high = limits
    if math.isclose(low, -high):
        return f"±{high:.3g}"
    return f"[{low:.3g}, {high:.3g}]"


def _judge(
    init: Initializer,
    ks: float,
    critical: float,
    n_sample: int,
    std_ratio: float | None,
    n: int,
    outside: int,
) -> tuple[bool, list[str], list[str]]:
    """Whether the weights agree with ``init``; what agrees and what does not, in words."""
    good: list[str] = []
    bad: list[str] = []
    ks_text = f"KS {ks:.3g} {'≤' if ks <= critical else '>'} {critical:.3g} (n={n_sample:,})"
    (good if ks <= critical else bad).append(ks_text)
    if std_ratio is not None:
        tolerance = _std_tolerance(init, n)
        ok = abs(std_ratio - 1.0) <= tolerance
        (good if ok else bad).append(f"std ratio {std_ratio:.3f} (1 ± {tolerance:.3f})")
    allowed = _outside_allowed(init, n)
    where = f"outside {_bounds_text(init)} ({init.limits_label})"
    if outside <= allowed:
        good.append(f"{outside:,} {where}")
    else:
        bad.append(f"{outside / n:.1%} {where}")
    return not bad, good, bad


def _verdict(
    setting: _Setting,
    data: _Pass,
    n: int,
    best: Initializer | None,
    best_ks: float | None,
    ks: float | None,
    critical: float | None,
) -> tuple[str, str]:
    verdict, evidence = _verdict_on(
        setting, data, n - data.skipped_zeros, best, best_ks, ks, critical
    )
    if data.skipped_zeros:
        evidence += f"; {data.skipped_zeros:,} exact zeros (a padding row) left out"
    return verdict, evidence


def _verdict_on(
    setting: _Setting,
    data: _Pass,
    n: int,
    best: Initializer | None,
    best_ks: float | None,
    ks: float | None,
    critical: float | None,
) -> tuple[str, str]:
    init = setting.initializer
    nonfinite = data.count - data.skipped_zeros - data.finite
    if data.finite < MIN_WEIGHTS:
        return (
            "unknown",
            f"only {data.finite} finite weights: too few to tell (at least {MIN_WEIGHTS})",
        )
    if nonfinite:
        return "trained", f"{nonfinite:,} NaN/Inf weights: not as any initializer draws them"
    assert critical is not None
    if init is None or not init.known:
        what = (
            "no known default initializer"
            if init is None
            else f"initializer {init.name} has no known distribution"
        )
        if best is None or best_ks is None:
            return "unknown", what
        ok, good, bad = _judge_best(best, best_ks, critical, data)
        if ok:
            return "unknown", f"{what}; {best.name} fits: " + ", ".join(good)
        return "unknown", f"{what}; closest is {best.name}, which does not fit: " + ", ".join(bad)
    source = "declared" if setting.declared else "default"
    if init.distribution == inits.CONSTANT:
        if data.outside == 0:
            return "at_init", f"all {n:,} weights equal {init.loc:g} ({source} {init.name})"
        return (
            "trained",
            f"{data.outside / n:.1%} of weights differ from {init.loc:g} ({source} {init.name})",
        )
    assert ks is not None and init.std
    ratio = data.std / init.std if data.std is not None else None
    ok, good, bad = _judge(init, ks, critical, data.sample.size, ratio, n, data.outside)
    approx = " (approximated as normal)" if init.approximate else ""
    if ok:
        return "at_init", f"matches {source} {init.name}{approx}: " + ", ".join(good)
    differs = f"differs from {source} {init.name}{approx}: " + ", ".join(bad)
    if not setting.declared and best is not None and best_ks is not None and best != init:
        # the default is only assumed (weights-only files, PyTorch modules that call nn.init
        # themselves): say when another initializer fits, without letting it decide, for a
        # trained layer's weights can fit one of the family by chance (see the module doc)
        best_ok, _, _ = _judge_best(best, best_ks, critical, data)
        if best_ok:
            differs += f"; {best.name} would fit (KS {best_ks:.3g}), if that was its initializer"
    return "trained", differs


def _judge_best(
    best: Initializer, best_ks: float, critical: float, data: _Pass
) -> tuple[bool, list[str], list[str]]:
    """:func:`_judge` against the best fit, counting weights outside in the subsample."""
    ratio = data.std / best.std if data.std is not None and best.std else None
    outside = _outside_in_sample(data.sample, best)
    m = data.sample.size
    return _judge(best, best_ks, critical, m, ratio, m, outside)


# ---------------------------------------------------------------------------------------------
# public API


def analyze_with_sample(
    layer: Layer, producer: str | None = None
) -> tuple[InitReport, np.ndarray] | None:
    tensor = judged_tensor(layer)
    if tensor is None:
        return None
    setting = _setting(layer, tensor, producer or layer.producer)
    init = setting.initializer
    table = layer.kind is Kind.EMBEDDING
    width = tensor.native_shape[-1] if table else 0  # one row of the (vocabulary, width) table
    data = _read(tensor, init.limits if init is not None and init.known else None, width)
    n = tensor.size
    candidates: list[Initializer] = []
    if init is not None and init.known:
        candidates.append(init)
    if table:
        candidates += [inits.pytorch_embedding_default(), inits.keras_embedding_default()]
    candidates += inits.standard_family(setting.fan_in, setting.fan_out)
    candidates.append(inits.pytorch_default(setting.torch_fan_in))
    distances: dict[str, float] = {}
    best: Initializer | None = None
    for candidate in candidates:
        if candidate.name in distances:
            continue
        distance = ks_distance(data.sample, candidate)
        distances[candidate.name] = distance
        if math.isfinite(distance) and (best is None or distance < distances[best.name]):
            best = candidate
    best_ks = distances[best.name] if best is not None else None
    ks = distances.get(init.name) if init is not None and init.known else None
    critical = ks_critical(data.sample.size) if data.sample.size else None
    verdict, evidence = _verdict(setting, data, n, best, best_ks, ks, critical)
    init_std = init.std if init is not None else None
    report = InitReport(
        layer=layer.name,
        kind=layer.kind,
        role=tensor.role,
        convention=setting.convention,
        initializer=init,
        declared=setting.declared,
        fan_in=setting.fan_in,
        fan_out=setting.fan_out,
        n=n,
        n_finite=data.finite,
        n_sample=int(data.sample.size),
        weights_std=data.std,
        weights_mean=data.mean if data.finite else None,
        fraction_outside=(
            data.outside / data.finite if init is not None and init.known and data.finite else None
        ),
        std_ratio=(data.std / init_std if data.std is not None and init_std else None),
        ks=ks,
        ks_critical=critical,
        best_fit=best,
        best_fit_ks=best_ks,
        verdict=verdict,
        evidence=evidence,
        candidates=distances,
    )
    return report, data.sample


def analyze(layer: Layer, *, producer: str | None = None) -> InitReport | None:
    """Compare ``layer``'s kernel or embedding table with its initializer; None for layers
    without either (batch norm, ...) or whose kernel is not floating point (quantized).

    ``producer`` overrides the layer's own :attr:`~weightscope.model.Layer.producer` (that of
    its model): ONNX layers follow PyTorch's conventions only when it names PyTorch."""
    result = analyze_with_sample(layer, producer)
    return None if result is None else result[0]


def analyze_model(model: Model, layers: Iterable[Layer] | None = None) -> list[InitReport]:
    """:func:`analyze` for every layer of ``model`` (or the given ones) that has a kernel or
    an embedding table."""
    reports = []
    for layer in model.layers if layers is None else layers:
        report = analyze(layer, producer=model.producer)
        if report is not None:
            reports.append(report)
    return reports
