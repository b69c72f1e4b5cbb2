"""Weight initializers as probability distributions: fans, bounds, densities and CDFs.

Formulas only (no plotting, no file reading). Each :class:`Initializer` is the distribution a
framework draws a fresh kernel from, given the kernel's fans, so that a stored kernel can be
compared with it (:mod:`weightscope.analysis.init`).

Fans follow each framework's own convention on the tensor as that framework stores it:

- Keras (``keras.src.initializers.random_initializers.compute_fans``): on the Keras-native
  shape, ``rf = prod(shape[:-2])``, ``fan_in = shape[-2] * rf``, ``fan_out = shape[-1] * rf``;
  a 2-D kernel ``(in, out)`` gives ``(shape[0], shape[1])``. So a depthwise ``(kh, kw, in, M)``
  kernel has ``fan_in = in*kh*kw`` and a transposed ``(kh, kw, filters, in)`` kernel
  ``fan_in = filters*kh*kw``: what Keras itself computes, whatever the layer means.
- PyTorch (``torch.nn.init._calculate_fan_in_and_fan_out``): on the stored tensor,
  ``fan_in = size(1) * rf``, ``fan_out = size(0) * rf``, ``rf = prod(shape[2:])``; so groups
  shrink ``fan_in`` only, and a ConvTranspose ``(in, out/groups, *k)`` has
  ``fan_in = out/groups * rf``.

Distributions (Keras ``VarianceScaling``): ``s = scale / max(1, n)`` with ``n`` the fan the mode
names (``fan_avg`` = their mean); uniform on ``±sqrt(3 s)``; truncated normal of parameter
``sqrt(s) / 0.87962566103423978`` cut at 2 of those sigmas (its actual std is ``sqrt(s)``);
untruncated normal of std ``sqrt(s)``. ``glorot_normal``, ``he_normal`` and ``lecun_normal``
are the *truncated* ones, as in Keras 2 and 3; the plain normal variants (PyTorch's
``xavier_normal_``, ``kaiming_normal_``) are named ``*_normal_untruncated`` here. PyTorch's
default Conv/Linear init ``kaiming_uniform_(a=sqrt(5))`` is uniform on ``±1/sqrt(fan_in)``.
Embedding tables are drawn without fans: ``nn.Embedding`` from N(0, 1), Keras' ``Embedding``
uniformly on ``[-0.05, 0.05]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TRUNCATION_STD = 0.87962566103423978
"""Standard deviation of a standard normal truncated to [-2, 2] (Keras' correction constant)."""

NORMAL_OUTSIDE_SIGMAS = 3.0
"""For untruncated normals, "outside" means beyond this many standard deviations."""

PYTORCH_DEFAULT = "kaiming_uniform(a=sqrt(5))"
KERAS_DEFAULT = "glorot_uniform"
PYTORCH_EMBEDDING_DEFAULT = "normal(0, 1)"
"""``nn.Embedding``'s table: ``normal_`` (the padding row, if any, then set to zeros)."""
KERAS_EMBEDDING_DEFAULT = "random_uniform(-0.05, 0.05)"
"""``keras.layers.Embedding``'s ``embeddings_initializer="uniform"``."""

UNIFORM = "uniform"
NORMAL = "normal"
TRUNCATED_NORMAL = "truncated_normal"
CONSTANT = "constant"
UNKNOWN = "unknown"

# name: (scale, mode, distribution), as Keras defines them
STANDARD: dict[str, tuple[float, str, str]] = {
    "glorot_uniform": (1.0, "fan_avg", UNIFORM),
    "glorot_normal": (1.0, "fan_avg", TRUNCATED_NORMAL),
    "glorot_normal_untruncated": (1.0, "fan_avg", NORMAL),
    "he_uniform": (2.0, "fan_in", UNIFORM),
    "he_normal": (2.0, "fan_in", TRUNCATED_NORMAL),
    "he_normal_untruncated": (2.0, "fan_in", NORMAL),
    "lecun_uniform": (1.0, "fan_in", UNIFORM),
    "lecun_normal": (1.0, "fan_in", TRUNCATED_NORMAL),
    "lecun_normal_untruncated": (1.0, "fan_in", NORMAL),
}
"""The standard family: glorot / he / lecun x uniform / truncated normal / normal."""


# ---------------------------------------------------------------------------------------------
# fans


def keras_fans(
    shape: Sequence[int],
    input_axes: Sequence[int] | None = None,
    output_axes: Sequence[int] | None = None,
) -> tuple[int, int]:
    """``(fan_in, fan_out)`` exactly as Keras 3 ``compute_fans`` (and tf_keras) computes them on
    the Keras-native shape; ``input_axes``/``output_axes`` as Keras 3.x' VarianceScaling takes."""
    shape = tuple(int(d) for d in shape)
    if input_axes is not None and output_axes is not None:
        return (
            math.prod(shape[a] for a in input_axes),
            math.prod(shape[a] for a in output_axes),
        )
    if not shape:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    rf = math.prod(shape[:-2])
    return shape[-2] * rf, shape[-1] * rf


def torch_fans(shape: Sequence[int]) -> tuple[int, int]:
    """``(fan_in, fan_out)`` as ``torch.nn.init._calculate_fan_in_and_fan_out`` computes them on
    the stored tensor (at least 2-D)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2:
        raise ValueError(f"fans need a tensor of at least 2 dimensions, not {shape}")
    rf = math.prod(shape[2:])
    return shape[1] * rf, shape[0] * rf


def torch_equivalent_shape(
    native_shape: Sequence[int], native_layout: str, canonical_shape: Sequence[int]
) -> tuple[int, ...]:
    """The shape PyTorch would store the same kernel in: ``(out, in/groups, *k)`` for convs and
    linear layers, ``(in, out/groups, *k)`` for transposed convs, ``(in*M, 1, *k)`` for
    depthwise kernels (a grouped Conv with ``groups = in``)."""
    shape = tuple(int(d) for d in native_shape)
    if native_layout in ("OI", "OIW", "OIHW", "OIDHW", "IOW", "IOHW", "IODHW"):
        return shape
    if native_layout == "IO":
        return shape[1], shape[0]
    if native_layout in ("WOI", "HWOI", "DHWOI"):  # Keras transposed (*k, out, in)
        return (shape[-1], shape[-2], *shape[:-2])
    return tuple(int(d) for d in canonical_shape)


# ---------------------------------------------------------------------------------------------
# the normal distribution, vectorised without scipy


def _erfc(x: np.ndarray) -> np.ndarray:
    """Complementary error function, fractional error below 1.2e-7 everywhere (Chebyshev fit,
    Numerical Recipes' ``erfcc``). Computed in place in two arrays: a KS test evaluates it on a
    million weights for each candidate initializer, and temporaries would dominate its cost."""
    z = np.abs(x)
    t = z * 0.5
    t += 1.0
    np.reciprocal(t, out=t)
    acc = np.zeros_like(t)
    for c in reversed(_ERFC_COEFFICIENTS):
        acc += c
        acc *= t
    with np.errstate(over="ignore", under="ignore"):  # |x| > 1e154: exp(-inf) = 0 is right
        np.square(z, out=z)
        np.negative(z, out=z)
        z -= 1.26551223
        z += acc
        np.exp(z, out=z)
        z *= t
    negative = x < 0
    z[negative] = 2.0 - z[negative]
    return z


_ERFC_COEFFICIENTS = (
    1.00002368,
    0.37409196,
    0.09678418,
    -0.18628806,
    0.27886807,
    -1.13520398,
    1.48851587,
    -0.82215223,
    0.17087277,
)


def normal_cdf(x: np.ndarray | float) -> np.ndarray:
    """Standard normal CDF, vectorised (absolute error below 1e-7)."""
    values = np.asarray(x, dtype=np.float64)
    result = _erfc(values.reshape(-1) * (-1.0 / math.sqrt(2.0)))
    result *= 0.5
    return result.reshape(values.shape)[()]  # a float in, a numpy float out


def normal_pdf(x: np.ndarray | float) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    return np.exp(-0.5 * arr * arr) / math.sqrt(2.0 * math.pi)


def _phi(c: float) -> float:
    return 0.5 * (1.0 + math.erf(c / math.sqrt(2.0)))


def _truncated_moments(cut: float) -> tuple[float, float]:
    """Variance and kurtosis of a standard normal truncated to ``[-cut, cut]``."""
    mass = 2.0 * _phi(cut) - 1.0
    dens = math.exp(-0.5 * cut * cut) / math.sqrt(2.0 * math.pi)
    m2 = 1.0 - 2.0 * cut * dens / mass
    m4 = (3.0 * mass - 6.0 * cut * dens - 2.0 * cut**3 * dens) / mass
    return m2, m4 / (m2 * m2)


# ---------------------------------------------------------------------------------------------
# initializers


@dataclass(frozen=True)
class Initializer:
    """One initializer for one kernel shape: a distribution with its parameters.

    ``scale`` is the half-width of a uniform, the sigma *parameter* of a (truncated) normal (for
    a truncated normal, its actual std is ``scale * 0.8796...`` at a 2-sigma cut)."""

    name: str
    distribution: str
    """``uniform``, ``normal``, ``truncated_normal``, ``constant`` or ``unknown``."""
    loc: float = 0.0
    scale: float = 0.0
    cut: float = 2.0
    """Truncated normal only: where it is cut, in sigmas (of ``scale``)."""
    approximate: bool = False
    """True where the distribution is an approximation (orthogonal matrices: near normal)."""

    @property
    def known(self) -> bool:
        return self.distribution != UNKNOWN

    @property
    def bound(self) -> float | None:
        """Half-width of the support around ``loc`` (uniform, truncated normal), else None."""
        if self.distribution == UNIFORM:
            return self.scale
        if self.distribution == TRUNCATED_NORMAL:
            return self.cut * self.scale
        return None

    @property
    def std(self) -> float | None:
        """The distribution's actual standard deviation (None when unknown)."""
        if self.distribution == UNIFORM:
            return self.scale / math.sqrt(3.0)
        if self.distribution == NORMAL:
            return self.scale
        if self.distribution == TRUNCATED_NORMAL:
            return self.scale * math.sqrt(_truncated_moments(self.cut)[0])
        if self.distribution == CONSTANT:
            return 0.0
        return None

    @property
    def kurtosis(self) -> float | None:
        """Fourth standardised moment (for the sampling error of a standard deviation)."""
        if self.distribution == UNIFORM:
            return 1.8
        if self.distribution == NORMAL:
            return 3.0
        if self.distribution == TRUNCATED_NORMAL:
            return _truncated_moments(self.cut)[1]
        return None

    @property
    def limits(self) -> tuple[float, float] | None:
        """Where "outside" starts: the support of a uniform or truncated normal, ``±3 sigma``
        of a normal, the value itself for a constant."""
        if self.distribution in (UNIFORM, TRUNCATED_NORMAL):
            half = self.bound or 0.0
            return self.loc - half, self.loc + half
        if self.distribution == NORMAL:
            half = NORMAL_OUTSIDE_SIGMAS * self.scale
            return self.loc - half, self.loc + half
        if self.distribution == CONSTANT:
            return self.loc, self.loc
        return None

    @property
    def limits_label(self) -> str:
        """What :attr:`limits` are, in words."""
        if self.distribution == UNIFORM:
            return "the uniform bound"
        if self.distribution == TRUNCATED_NORMAL:
            return f"the {self.cut:g}-sigma cut"
        if self.distribution == NORMAL:
            return f"{NORMAL_OUTSIDE_SIGMAS:g} sigma"
        if self.distribution == CONSTANT:
            return "the constant"
        return "-"

    @property
    def expected_outside(self) -> float:
        """Fraction of freshly drawn weights beyond :attr:`limits`."""
        if self.distribution == NORMAL:
            return 2.0 * (1.0 - _phi(NORMAL_OUTSIDE_SIGMAS))
        return 0.0

    def cdf(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if self.distribution == UNIFORM:
            return np.clip((x - (self.loc - self.scale)) / (2.0 * self.scale), 0.0, 1.0)
        if self.distribution == NORMAL:
            return normal_cdf((x - self.loc) / self.scale)
        if self.distribution == TRUNCATED_NORMAL:
            z = np.clip((x - self.loc) / self.scale, -self.cut, self.cut)
            low = _phi(-self.cut)
            return np.clip((normal_cdf(z) - low) / (1.0 - 2.0 * low), 0.0, 1.0)
        if self.distribution == CONSTANT:
            return (x >= self.loc).astype(np.float64)
        raise ValueError(f"initializer {self.name} has no known distribution")

    def pdf(self, x: np.ndarray) -> np.ndarray:
        """Density (zero for a constant, whose mass is a point: draw it as a line)."""
        x = np.asarray(x, dtype=np.float64)
        if self.distribution == UNIFORM:
            inside = np.abs(x - self.loc) <= self.scale
            return np.where(inside, 1.0 / (2.0 * self.scale), 0.0)
        if self.distribution == NORMAL:
            return normal_pdf((x - self.loc) / self.scale) / self.scale
        if self.distribution == TRUNCATED_NORMAL:
            z = (x - self.loc) / self.scale
            mass = 2.0 * _phi(self.cut) - 1.0
            return np.where(np.abs(z) <= self.cut, normal_pdf(z) / (self.scale * mass), 0.0)
        if self.distribution == CONSTANT:
            return np.zeros_like(x)
        raise ValueError(f"initializer {self.name} has no known distribution")

    def describe(self) -> str:
        """``±0.0833`` for bounded, ``std 0.0123`` for normal, ``= 0`` for constant."""
        if self.distribution == UNIFORM:
            text = f"±{self.scale:.3g}"
            return text if self.loc == 0 else f"{self.loc:.3g} {text}"
        if self.distribution in (NORMAL, TRUNCATED_NORMAL):
            text = f"std {self.std:.3g}"
            if self.distribution == TRUNCATED_NORMAL:
                text += f" (cut ±{self.bound:.3g})"
            return text if self.loc == 0 else f"mean {self.loc:.3g} {text}"
        if self.distribution == CONSTANT:
            return f"= {self.loc:g}"
        return "-"


def variance_scaling(
    scale: float, mode: str, distribution: str, fan_in: int, fan_out: int, name: str | None = None
) -> Initializer:
    """Keras ``VarianceScaling(scale, mode, distribution)`` for a kernel with these fans.
    ``distribution`` ``normal`` means truncated normal, as in Keras 2 and 3."""
    n = {"fan_in": fan_in, "fan_out": fan_out}.get(mode, (fan_in + fan_out) / 2.0)
    s = scale / max(1.0, float(n))
    dist = distribution.lower()
    if name is None:
        name = _variance_scaling_name(scale, mode, dist)
    if dist == UNIFORM:
        return Initializer(name, UNIFORM, scale=math.sqrt(3.0 * s))
    if dist in (TRUNCATED_NORMAL, NORMAL):
        return Initializer(name, TRUNCATED_NORMAL, scale=math.sqrt(s) / TRUNCATION_STD)
    if dist == "untruncated_normal":
        return Initializer(name, NORMAL, scale=math.sqrt(s))
    return Initializer(name, UNKNOWN)


def _variance_scaling_name(scale: float, mode: str, distribution: str) -> str:
    dist = {"normal": TRUNCATED_NORMAL, "untruncated_normal": NORMAL}.get(
        distribution, distribution
    )
    for name, (s, m, d) in STANDARD.items():
        if math.isclose(s, scale) and m == mode and d == dist:
            return name
    return f"variance_scaling(scale={scale:g}, mode={mode}, distribution={distribution})"


def standard(name: str, fan_in: int, fan_out: int) -> Initializer:
    """One of :data:`STANDARD` (``he_normal``, ...) for a kernel with these fans."""
    scale, mode, distribution = STANDARD[name]
    keras_distribution = {NORMAL: "untruncated_normal"}.get(distribution, distribution)
    return variance_scaling(scale, mode, keras_distribution, fan_in, fan_out, name)


def standard_family(fan_in: int, fan_out: int) -> list[Initializer]:
    return [standard(name, fan_in, fan_out) for name in STANDARD]


def pytorch_default(fan_in: int) -> Initializer:
    """PyTorch's Conv/Linear weight init ``kaiming_uniform_(a=sqrt(5))``: gain
    ``sqrt(2/(1+5))``, bound ``gain*sqrt(3/fan_in)`` = ``1/sqrt(fan_in)``."""
    gain = math.sqrt(2.0 / (1.0 + 5.0))
    return Initializer(PYTORCH_DEFAULT, UNIFORM, scale=gain * math.sqrt(3.0 / max(1, fan_in)))


def pytorch_embedding_default() -> Initializer:
    """PyTorch's ``nn.Embedding`` table: standard normal, whatever its shape."""
    return Initializer(PYTORCH_EMBEDDING_DEFAULT, NORMAL, scale=1.0)


def keras_embedding_default() -> Initializer:
    """Keras' ``Embedding`` table: uniform on ``[-0.05, 0.05]``, whatever its shape."""
    return Initializer(KERAS_EMBEDDING_DEFAULT, UNIFORM, scale=0.05)


def orthogonal(shape: Sequence[int], gain: float = 1.0) -> Initializer:
    """Keras ``Orthogonal(gain)``: the kernel flattened to ``(prod(shape[:-1]), shape[-1])`` has
    orthonormal columns (or rows), so its entries have std ``gain/sqrt(max(rows, cols))`` and
    are close to normal for large matrices (an approximation)."""
    rows = math.prod(int(d) for d in shape[:-1]) if len(shape) > 1 else 1
    cols = int(shape[-1]) if shape else 1
    return Initializer(
        f"orthogonal(gain={gain:g})",
        NORMAL,
        scale=gain / math.sqrt(max(rows, cols, 1)),
        approximate=True,
    )


@dataclass(frozen=True)
class Declared:
    """The initializer a file declares for a kernel (a Keras layer config's
    ``kernel_initializer``), with the fans its framework draws it by."""

    initializer: Initializer
    fan_in: int
    fan_out: int
