"""The initializer a Keras layer config declares for a kernel (``kernel_initializer``,
``depthwise_initializer``, ``pointwise_initializer``), a recurrent layer's recurrent kernel
(``recurrent_initializer``) or an embedding table (``embeddings_initializer``), read into a
framework-free :class:`~weightscope.initializers.Declared` with the fans Keras draws it by."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from weightscope.initializers import (
    CONSTANT,
    NORMAL,
    STANDARD,
    TRUNCATED_NORMAL,
    UNIFORM,
    UNKNOWN,
    Declared,
    Initializer,
    keras_fans,
    orthogonal,
    standard,
    variance_scaling,
)
from weightscope.model import KERNEL_ROLES

RECURRENT_KERNEL = "recurrent_kernel"


def declared(
    config: Mapping[str, Any], kind: str, role: str, shape: Sequence[int]
) -> Declared | None:
    """What ``config`` declares for the ``role`` tensor (of Keras-native ``shape``) of a layer
    of ``kind``: a kernel, a recurrent kernel, or an embedding table; None when it declares
    nothing (Keras' default, ``glorot_uniform`` for kernels, ``orthogonal`` for recurrent
    kernels, ``uniform(-0.05, 0.05)`` for tables, applies)."""
    if role not in KERNEL_ROLES and role not in ("embeddings", RECURRENT_KERNEL):
        return None
    spec = _declared_spec(config, kind, role)
    if spec is None:
        return None
    try:
        fan_in, fan_out = keras_fans(shape, *_axes(spec))
    except (IndexError, TypeError):
        fan_in, fan_out = keras_fans(shape)
    return Declared(from_keras(spec, shape, fan_in, fan_out), fan_in, fan_out)


def _config_keys(kind: str, role: str) -> tuple[str, ...]:
    if role == "embeddings":
        return ("embeddings_initializer", "init")
    if role == RECURRENT_KERNEL:
        return ("recurrent_initializer", "inner_init")
    if role == "pointwise_kernel":
        return ("pointwise_initializer",)
    if role == "depthwise_kernel" or kind.startswith("depthwise"):
        return ("depthwise_initializer", "kernel_initializer")
    return ("kernel_initializer", "init")


def _declared_spec(config: Mapping[str, Any], kind: str, role: str) -> Any:
    for key in _config_keys(kind, role):
        if config.get(key) is not None:
            return config[key]
    return None


def _axes(spec: Any) -> tuple[Any, Any]:
    if isinstance(spec, Mapping) and isinstance(spec.get("config"), Mapping):
        return spec["config"].get("input_axes"), spec["config"].get("output_axes")
    return None, None


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _number(config: Mapping[str, Any], key: str, default: float) -> float | None:
    value = config.get(key, default)
    if value is None:
        value = default
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def from_keras(
    spec: Any, shape: Sequence[int], fan_in: int | None = None, fan_out: int | None = None
) -> Initializer:
    """The initializer a Keras layer config declares (``{'class_name': 'HeNormal', 'config':
    {...}}``, or a string such as ``'he_normal'``), for a kernel of Keras-native ``shape``.
    Fans default to Keras' own on ``shape`` (with the config's ``input_axes``/``output_axes``).
    Unrecognised initializers come back with distribution ``unknown``."""
    if isinstance(spec, Mapping):
        class_name = str(spec.get("class_name", ""))
        config = spec.get("config") or {}
        if not isinstance(config, Mapping):
            config = {}
    elif isinstance(spec, str):
        class_name, config = spec, {}
    else:
        return Initializer(str(spec), UNKNOWN)
    key = class_name.replace("_", "").lower()
    if fan_in is None or fan_out is None:
        axes_in, axes_out = config.get("input_axes"), config.get("output_axes")
        try:
            fan_in, fan_out = keras_fans(shape, axes_in, axes_out)
        except (IndexError, TypeError):
            fan_in, fan_out = keras_fans(shape)
    for name in STANDARD:
        if key == name.replace("_", "") and not name.endswith("untruncated"):
            return standard(name, fan_in, fan_out)
    if key == "variancescaling":
        scale = _number(config, "scale", 1.0)
        mode = str(config.get("mode", "fan_in"))
        distribution = str(config.get("distribution", TRUNCATED_NORMAL))
        if scale is None:
            return Initializer("variance_scaling", UNKNOWN)
        return variance_scaling(scale, mode, distribution, fan_in, fan_out)
    if key in ("randomuniform", "uniform"):
        low, high = _number(config, "minval", -0.05), _number(config, "maxval", 0.05)
        if low is None or high is None or not high > low:
            return Initializer("random_uniform", UNKNOWN)
        return Initializer(
            f"random_uniform({low:g}, {high:g})",
            UNIFORM,
            loc=(low + high) / 2.0,
            scale=(high - low) / 2.0,
        )
    if key in ("randomnormal", "normal", "truncatednormal"):
        mean, stddev = _number(config, "mean", 0.0), _number(config, "stddev", 0.05)
        if mean is None or stddev is None or not stddev > 0:
            return Initializer(_snake(class_name), UNKNOWN)
        if key == "truncatednormal":
            return Initializer(
                f"truncated_normal({mean:g}, {stddev:g})", TRUNCATED_NORMAL, mean, stddev
            )
        return Initializer(f"random_normal({mean:g}, {stddev:g})", NORMAL, mean, stddev)
    if key in ("orthogonal", "orthogonalinitializer"):
        gain = _number(config, "gain", 1.0)
        if gain is None:
            return Initializer("orthogonal", UNKNOWN)
        return orthogonal(shape, gain)
    if key in ("zeros", "zero"):
        return Initializer("zeros", CONSTANT, 0.0)
    if key in ("ones", "one"):
        return Initializer("ones", CONSTANT, 1.0)
    if key == "constant":
        value = _number(config, "value", 0.0)
        if value is None:
            return Initializer("constant", UNKNOWN)
        return Initializer(f"constant({value:g})", CONSTANT, value)
    return Initializer(_snake(class_name) or "unknown", UNKNOWN)
