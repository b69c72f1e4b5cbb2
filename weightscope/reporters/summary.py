"""The JSON form of a model (``weightscope inspect --json``), the contract scripts rely on.

:func:`model_to_dict` builds it; :func:`write_json` writes the text ``json.dump(...,
indent=2)`` would write of it, a batch of layers at a time, straight from the model: a file of
200,000 tiny tensors makes 200 MB of that text, which the standard encoder took a minute to write
a token at a time (and building the whole dict first, 600 MB). Tests hold the two to the same
text on every kind of model."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from json.encoder import encode_basestring_ascii
from typing import Any, TextIO

from weightscope.model import Layer, Model, Tensor

SCHEMA_VERSION = 1


def model_to_dict(model: Model, with_stats: bool = True) -> dict[str, Any]:
    return _model_dict(model, [layer_to_dict(layer, with_stats) for layer in model.layers])


def _model_dict(model: Model, layers: Any) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "source": None if model.source is None else str(model.source),
        "format": model.format,
        "framework": model.framework,
        "framework_version": _text(model.framework_version),
        "producer": _text(model.producer),
        "opset": model.opset,
        "layers": layers,
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
    data.update(_extras(tensor, with_stats))
    return data


def _extras(tensor: Tensor, with_stats: bool) -> dict[str, Any]:
    """Entries only some tensors have: ``part`` (of a stored tensor holding several weights)
    and ``quantization`` (stats above are then of the real values; the stored integers' range
    is here)."""
    extras: dict[str, Any] = {}
    if tensor.part is not None:
        extras["part"] = tensor.part
    if tensor.quantization is not None:
        extras["quantization"] = quantization_to_dict(tensor, with_stats)
    return extras


def quantization_to_dict(tensor: Tensor, with_values: bool = True) -> dict[str, Any]:
    """How a quantized tensor's integers stand for real values; with ``with_values`` the
    scales', zero points' and stored integers' ranges (read from the file)."""
    q = tensor.quantization
    assert q is not None
    data: dict[str, Any] = {
        "stored_dtype": tensor.dtype,
        "granularity": q.granularity,
        "axis": tensor.quantization_axis,
        "block_size": q.block_size,
        "scale": q.scale_name,
        "zero_point": q.zero_point_name,
    }
    if with_values:
        scales = q.scales().astype(float).reshape(-1)
        zeros = q.zero_points()
        stored = tensor.stored_stats()
        data["scales"] = int(scales.size)
        data["scale_range"] = [
            _finite_or_none(float(scales.min())),
            _finite_or_none(float(scales.max())),
        ]
        data["zero_point_range"] = None if zeros is None else [int(zeros.min()), int(zeros.max())]
        offsets = q.offsets()
        if offsets is not None:  # GGML's block minimums
            data["offset_range"] = [
                _finite_or_none(float(offsets.min())),
                _finite_or_none(float(offsets.max())),
            ]
        data["stored_range"] = [_finite_or_none(stored.min), _finite_or_none(stored.max)]
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


# ---------------------------------------------------------------------------------------------
# the text, as json.dump(model_to_dict(...), out, indent=2) writes it

_PADS = ["\n" + "  " * level for level in range(8)]
"""A newline and the indentation of each level the fast paths below write at."""

_LAYERS_PER_WRITE = 512


def write_json(
    out: TextIO,
    model: Model,
    with_stats: bool = True,
    layers: Iterable[Layer] | None = None,
    extras: list[dict[str, Any]] | None = None,
) -> None:
    """Write the JSON form of ``model`` (``layers`` in place of its own when given, each
    layer's entry extended by the matching item of ``extras``), and a newline, to ``out``: the
    text ``json.dump(model_to_dict(model, with_stats), out, indent=2)`` writes."""
    chosen = model.layers if layers is None else list(layers)
    head = _model_dict(model, None)
    writer = _Writer(with_stats)
    pad = _PADS[1]
    for index, (key, value) in enumerate(head.items()):
        out.write(("{" if index == 0 else ",") + pad + encode_basestring_ascii(key) + ": ")
        if key != "layers" or not chosen:
            out.write(_encode([] if key == "layers" else value, 1))
            continue
        batch = ["["]
        for number, layer in enumerate(chosen):
            extra = None if extras is None else extras[number]
            batch.append(("" if number == 0 else ",") + _PADS[2])
            batch.append(writer.layer(layer, extra))
            if len(batch) >= _LAYERS_PER_WRITE:
                out.write("".join(batch))
                batch.clear()
        batch.append(pad + "]")
        out.write("".join(batch))
    out.write(_PADS[0] + "}\n")


class _Writer:
    """The text of layers and tensors. What most entries share (a tensor's entry but its name
    and statistics, a layer's but its name and tensors) is written once per distinct value and
    kept: a file of 200,000 tiny tensors holds a handful of them."""

    CACHED = 10_000
    """Most distinct parts kept, of each kind."""

    def __init__(self, with_stats: bool) -> None:
        self.with_stats = with_stats
        self.tensor_parts: dict[tuple[Any, ...], str] = {}
        self.layer_parts: dict[tuple[Any, ...], str] = {}

    def layer(self, layer: Layer, extra: dict[str, Any] | None) -> str:
        """``layer_to_dict(layer)`` (and ``extra``) as a list item of the model (level 2)."""
        p = _PADS[3]
        tensors = layer.tensors
        if tensors:
            parts = [_PADS[4] + self.tensor(t) for t in tensors]
            tensors_text = "[" + ",".join(parts) + p + "]"
        else:
            tensors_text = "[]"
        text = f'{{{p}"name": {_scalar(layer.name)},' + self._layer_part(layer)
        text += f'{p}"tensors": {tensors_text}'
        if extra:
            text += "".join(f",{p}{_key(key)}: {_encode(value, 3)}" for key, value in extra.items())
        return text + _PADS[2] + "}"

    def _layer_part(self, layer: Layer) -> str:
        """The entries from ``kind`` to ``config``, with the comma after."""
        groups, params, inferred = layer.groups, layer.params, layer.inferred
        key = None
        if not layer.config:
            key = (layer.kind, layer.class_name, groups, type(groups), inferred, type(inferred),
                   layer.note, params, type(params))  # fmt: skip
            found = self.layer_parts.get(key)
            if found is not None:
                return found
        p = _PADS[3]
        text = (
            f'{p}"kind": {_scalar(layer.kind)},{p}"class_name": {_scalar(layer.class_name)},'
            f'{p}"groups": {_scalar(groups)},{p}"inferred": {_scalar(inferred)},'
            f'{p}"note": {_scalar(layer.note)},{p}"params": {_scalar(params)},'
            f'{p}"config": {_encode(_jsonable(layer.config), 3)},'
        )
        if key is not None and len(self.layer_parts) < self.CACHED:
            self.layer_parts[key] = text
        return text

    def tensor(self, tensor: Tensor) -> str:
        """``tensor_to_dict(tensor)`` as an item of its layer's tensors (level 4)."""
        p = _PADS[5]
        text = f'{{{p}"name": {_scalar(tensor.name)},' + self._tensor_part(tensor)
        if self.with_stats and tensor.has_stats:
            stats = tensor.stats()
            q = _PADS[6]
            text += (
                f',{p}"stats": {{{q}"mean": {_stat(stats.mean)},{q}"std": {_stat(stats.std)},'
                f'{q}"min": {_stat(stats.min)},{q}"max": {_stat(stats.max)},'
                f'{q}"zeros_fraction": {_stat(stats.zeros_fraction)},'
                f'{q}"nan": {_stat(stats.nan)},{q}"inf": {_stat(stats.inf)}{p}}}'
            )
        elif self.with_stats:
            text += f',{p}"stats": null'
        if tensor.part is not None or tensor.quantization is not None:
            for key, value in _extras(tensor, self.with_stats).items():
                text += f",{p}{_scalar(key)}: {_encode(value, 5)}"
        return text + _PADS[4] + "}"

    def _tensor_part(self, tensor: Tensor) -> str:
        """The entries from ``role`` to ``shared_with``."""
        groups, trainable, counted = tensor.groups, tensor.trainable, tensor.counted
        key: tuple[Any, ...] | None = (
            tensor.role, tensor.native_shape, tensor.native_layout, groups, type(groups),
            tensor.dtype, trainable, type(trainable), counted, type(counted), tensor.shared_with,
        )  # fmt: skip
        try:
            found = self.tensor_parts.get(key)  # type: ignore[arg-type]
        except TypeError:  # an unhashable value: written each time
            key, found = None, None
        if found is not None:
            return found
        p = _PADS[5]
        canonical = tensor.canonical_shape
        text = (
            f'{p}"role": {_scalar(tensor.role)},{p}"native_shape": {_ints(tensor.native_shape)},'
            f'{p}"native_layout": {_scalar(tensor.native_layout)},'
            f'{p}"canonical_shape": {"null" if canonical is None else _ints(canonical)},'
            f'{p}"canonical_layout": {_scalar(tensor.canonical_layout)},'
            f'{p}"groups": {_scalar(groups)},{p}"dtype": {_scalar(tensor.dtype)},'
            f'{p}"size": {_scalar(tensor.size)},{p}"trainable": {_scalar(trainable)},'
            f'{p}"counted": {_scalar(counted)},{p}"shared_with": {_scalar(tensor.shared_with)}'
        )
        if key is not None and len(self.tensor_parts) < self.CACHED:
            self.tensor_parts[key] = text
        return text


def _stat(value: float | int) -> str:
    """A statistic as :func:`tensor_to_dict` gives it (no NaN or infinity: null)."""
    kind = type(value)
    if kind is float:
        return float.__repr__(value) if value - value == 0.0 else "null"
    if kind is int:  # the NaN and Inf counts
        return int.__repr__(value)
    return _scalar(_finite_or_none(value))


def _ints(values: tuple[int, ...]) -> str:
    """``list(values)`` as a value of a tensor's entry (level 5)."""
    if not values:
        return "[]"
    if set(map(type, values)) <= _INT:
        q = _PADS[6]
        return "[" + q + ("," + q).join(map(int.__repr__, values)) + _PADS[5] + "]"
    return _encode(list(values), 5)


_INT = {int}


def _float(value: float) -> str:
    """A float as ``json`` writes it (``NaN`` and ``Infinity`` too)."""
    if value != value:
        return "NaN"
    if value == math.inf:
        return "Infinity"
    if value == -math.inf:
        return "-Infinity"
    return float.__repr__(value)


_SCALARS: dict[type, Callable[[Any], str]] = {
    str: encode_basestring_ascii,
    int: int.__repr__,
    float: _float,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
}


def _scalar(value: Any) -> str:
    """A value that is not a list or dict, as ``json`` writes it."""
    write = _SCALARS.get(type(value))
    if write is not None:
        return write(value)
    if isinstance(value, str):  # a Kind: json writes a str subclass as its text
        return encode_basestring_ascii(value)
    return _encode(value, 0)


def _encode(value: Any, level: int) -> str:
    """``value`` as ``json.dumps(value, indent=2)`` writes it at the nesting ``level``: plain
    lists, dicts and scalars here, anything else (subclasses included) by ``json`` itself."""
    kind = type(value)
    write = _SCALARS.get(kind)
    if write is not None:
        return write(value)
    pad = "\n" + "  " * (level + 1)
    if kind is list:
        if not value:
            return "[]"
        return "[" + ",".join([pad + _encode(v, level + 1) for v in value]) + pad[:-2] + "]"
    if kind is dict and all(type(key) is str for key in value):
        if not value:
            return "{}"
        items = [f"{pad}{_key(k)}: {_encode(v, level + 1)}" for k, v in value.items()]
        return "{" + ",".join(items) + pad[:-2] + "}"
    return json.dumps(value, indent=2).replace("\n", "\n" + "  " * level)


def _key(key: str) -> str:
    return encode_basestring_ascii(key)
