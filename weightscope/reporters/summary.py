"""The JSON form of a model (``weightscope inspect --json``), the contract scripts rely on."""

from __future__ import annotations

import math
from typing import Any

from weightscope.model import Layer, Model, Tensor

SCHEMA_VERSION = 1


def model_to_dict(model: Model, with_stats: bool = True) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "source": None if model.source is None else str(model.source),
        "format": model.format,
        "framework": model.framework,
        "framework_version": _text(model.framework_version),
        "producer": _text(model.producer),
        "opset": model.opset,
        "layers": [layer_to_dict(layer, with_stats) for layer in model.layers],
        "weightless_layers": list(model.weightless_layers),
        "notes": list(model.notes),
        "params": model.params.to_dict(),
    }


def layer_to_dict(layer: Layer, with_stats: bool = True) -> dict[str, Any]:
    return {
        "name": layer.name,
        "kind": layer.kind,
        "class_name": layer.class_name,
        "groups": layer.groups,
        "inferred": layer.inferred,
        "note": layer.note,
        "params": layer.params,
        "config": _jsonable(layer.config),
        "tensors": [tensor_to_dict(t, with_stats) for t in layer.tensors],
    }


def tensor_to_dict(tensor: Tensor, with_stats: bool = True) -> dict[str, Any]:
    canonical = tensor.canonical_shape
    data: dict[str, Any] = {
        "name": tensor.name,
        "role": tensor.role,
        "native_shape": list(tensor.native_shape),
        "native_layout": tensor.native_layout,
        "canonical_shape": None if canonical is None else list(canonical),
        "canonical_layout": tensor.canonical_layout,
        "groups": tensor.groups,
        "dtype": tensor.dtype,
        "size": tensor.size,
        "trainable": tensor.trainable,
        "counted": tensor.counted,
        "shared_with": tensor.shared_with,
    }
    if with_stats and tensor.has_stats:
        data["stats"] = {k: _finite_or_none(v) for k, v in tensor.stats().to_dict().items()}
    elif with_stats:
        data["stats"] = None  # complex numbers, strings: no mean or std
    return data


def _finite_or_none(value: float | int) -> float | int | None:
    """JSON has no NaN: statistics of a tensor with no finite value are null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _text(value: Any) -> str | None:
    """A version or producer as text, whatever type the file gave it (a hostile metadata.json
    can make ``keras_version`` a number, even an infinite one)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        return _finite_or_none(value)
    return str(value)
