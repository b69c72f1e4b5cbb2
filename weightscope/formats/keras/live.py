"""Live Keras models in a notebook: a ``keras.Model`` (or one layer) of Keras 3 or of tf-keras
(Keras 2), read from the objects themselves into exactly the layers the same model saved to a
``.keras`` or ``.h5`` file becomes.

Each layer's class and config are the ones the model serializes (``model.to_json()``, what the
files keep; a layer's own ``get_config()`` where the model does not serialize), and the layers
are built by the same code as a file's (:func:`.layers.build_layer`, the wrappers of
:mod:`.wrappers`, the recurrent parts of :mod:`.recurrent`): nested models give ``outer/inner``
names, a ``TimeDistributed`` the layer it applies, a ``Bidirectional`` its two directions, and a
Keras 3 subclassed model's layers take the names and order its store gives them (by attribute:
``blocks/dense``). What a file cannot say the objects do: whether the model trains a variable
(its ``trainable_weights``, as ``count_params`` splits them), and which variables are one (a
layer object reached twice is read once; a variable two layers hold is counted with the first,
named by the second as ``shared_with``). Values are read with the variable's ``numpy()`` when
asked for.

Keras objects are recognised by the names of their classes, without importing Keras; reading one
imports nothing the object's own module has not imported already."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from weightscope.model import ArraySource, Layer, Model, PartSource, TensorSource

if TYPE_CHECKING:
    from weightscope.formats.keras.layers import LayerConfig, Variable

LAYER_CLASSES = frozenset(
    {
        "keras.src.layers.layer.Layer",  # Keras 3
        "tf_keras.src.engine.base_layer.Layer",  # tf-keras 2.x
        "keras.src.engine.base_layer.Layer",  # Keras 2.13-2.15
        "keras.engine.base_layer.Layer",  # Keras 2.x before 2.13
    }
)
"""The base class of every Keras layer (and model), by module and name."""

MODEL_CLASSES = frozenset(
    {
        "keras.src.models.model.Model",
        "tf_keras.src.engine.training.Model",
        "keras.src.engine.training.Model",
        "keras.engine.training.Model",
    }
)

LOOKS_LIKE = "live Keras model"


def _class_names(obj: Any) -> Iterator[str]:
    for cls in type(obj).__mro__:
        yield f"{cls.__module__}.{cls.__qualname__}"


def is_keras_layer(obj: Any) -> bool:
    """A live Keras layer or model (checked without importing Keras)."""
    return any(name in LAYER_CLASSES for name in _class_names(obj))


def _is_model(obj: Any) -> bool:
    return any(name in MODEL_CLASSES for name in _class_names(obj))


class VariableSource:
    """A live variable (Keras' or TensorFlow's), copied to numpy only when read."""

    def __init__(self, variable: Any) -> None:
        self.variable = variable

    def read(self) -> np.ndarray:
        array = np.asarray(self.variable.numpy())
        if array.dtype.name == "bfloat16":  # ml_dtypes' type: statistics want a float
            array = array.astype(np.float32)
        return array

    def chunks(self, max_elements: int) -> Any:
        return ArraySource(self.read()).chunks(max_elements)

    def stats(self, max_elements: int) -> Any:
        return ArraySource(self.read()).stats(max_elements)


def dtype_name(variable: Any) -> str:
    """``float32``: Keras 3 gives the name, TensorFlow a ``DType``."""
    dtype = variable.dtype
    return str(getattr(dtype, "name", dtype))


class Shape:
    """A live variable's shape, as :class:`.layers.Variable` holds a dataset's."""

    def __init__(self, variable: Any) -> None:
        self.variable = variable
        self.shape = tuple(int(d) for d in variable.shape)


def variable_of(source: TensorSource) -> Any:
    """The live variable behind a tensor's source (a part's included); None for another."""
    if isinstance(source, PartSource):
        source = source.base
    return source.variable if isinstance(source, VariableSource) else None


def mark_shared(layers: list[Layer]) -> None:
    """A variable that two layers hold (tied weights) is counted with the first that lists it;
    the others name that one in ``shared_with``."""
    first: dict[tuple[int, str | None], str] = {}
    for layer in layers:
        for tensor in layer.tensors:
            variable = variable_of(tensor.source)
            if variable is None:
                continue
            key = (id(variable), tensor.part)
            if key in first:
                tensor.counted = False
                tensor.shared_with = first[key]
            else:
                first[key] = tensor.name


def stored_name(variable: Any) -> str:
    """Keras 3's path (``model/dense/kernel``), TensorFlow's name (``dense/kernel:0``)."""
    path = getattr(variable, "path", None)
    return path if isinstance(path, str) else str(variable.name)


def load_keras_layer(obj: Any) -> Model:
    """A live Keras model, or one layer (a model of that layer)."""
    reader = _Reader(obj)
    if _is_model(obj):
        reader.model(obj, reader.root_config, "")
    else:
        reader.layer(obj, reader.root_config, obj.name)
    mark_shared(reader.layers)
    package = sys.modules.get(type(obj).__module__.split(".", 1)[0])
    return Model(
        None,
        "live",
        "keras",
        getattr(package, "__version__", None),
        reader.layers,
        weightless_layers=reader.weightless,
    )


def _json_copy(value: Any) -> Any:
    """``value`` as JSON gives it back (tuples as lists), what a file's config holds."""

    def plain(item: Any) -> Any:
        if hasattr(item, "tolist"):  # numpy scalars and arrays
            return item.tolist()
        return str(item)

    return json.loads(json.dumps(value, default=plain))


def _serialized(obj: Any) -> Any:
    """The model's config as its files keep it, or None where it does not serialize (a
    subclassed model without ``get_config``)."""
    try:
        return json.loads(obj.to_json()) if hasattr(obj, "to_json") else None
    except Exception:  # a custom layer's get_config raising: configs of the layers alone
        return None


class _Reader:
    def __init__(self, root: Any) -> None:
        from weightscope.formats.keras.layers import LiveReading, layer_config

        trainable = {id(v) for v in root.trainable_weights}
        self.reading = LiveReading(
            source=lambda v: (VariableSource(_live(v)), dtype_name(_live(v))),
            trainable=lambda v: id(_live(v)) in trainable,
        )
        tree = _serialized(root)
        self.root_config = layer_config(tree) if isinstance(tree, dict) else None
        self.layers: list[Layer] = []
        self.weightless: list[str] = []
        self.visited: set[int] = set()

    def config(self, obj: Any, given: LayerConfig | None, trainable: bool) -> LayerConfig:
        """``given`` (from the model's config) when it is this layer's, else the layer's own."""
        from weightscope.formats.keras.layers import LayerConfig

        if given is not None:
            return given
        try:
            config = _json_copy(obj.get_config())
        except Exception:  # a custom layer without get_config: its class still says much
            config = {}
        own = trainable and bool(getattr(obj, "trainable", True))
        return LayerConfig(str(obj.name), type(obj).__name__, config, own)

    def model(self, obj: Any, model_config: LayerConfig | None, prefix: str) -> None:
        """A model's layers, in its order, then the variables of the model itself."""
        trainable = model_config.trainable if model_config else bool(obj.trainable)
        by_name = {c.name: c for c in model_config.children()} if model_config else {}
        children = list(obj.layers)
        named = [(child.name, child) for child in children]
        if children and _is_subclassed_keras_3(obj):
            named = _store_order(obj, children)  # a subclassed model: as its store has them
        for child_name, child in named:
            given = by_name.get(child.name)
            self.layer(child, self.config(child, given, trainable), prefix + child_name)
        held = {id(v) for child in children for v in child.weights}
        own = [v for v in obj.weights if id(v) not in held]
        if own:
            name = prefix.rstrip("/") or obj.name
            self.build(name, self.config(obj, model_config, True), own, own_of_model=True)

    def layer(self, obj: Any, config: LayerConfig | None, name: str) -> None:
        from weightscope.formats.keras import wrappers

        if id(obj) in self.visited:  # a layer used twice: its files keep it once too
            return
        self.visited.add(id(obj))
        config = self.config(obj, config, True)
        wrapper = wrappers.wrapper_class(config)
        if _is_model(obj) or config.is_model:
            self.model(obj, config, f"{name}/")
        elif wrapper == wrappers.TIME_DISTRIBUTED and hasattr(obj, "layer"):
            first = len(self.layers)
            inner = self.config(obj.layer, wrappers.inner_config(config), config.trainable)
            self.layer(obj.layer, inner, name)
            note = wrappers.time_distributed_note(config.name, inner.class_name)
            wrappers.noted(self.layers[first:], note)
        elif wrapper == wrappers.BIDIRECTIONAL and hasattr(obj, "forward_layer"):
            self.bidirectional(obj, config, name)
        elif obj.weights:
            self.build(name, config, list(obj.weights))
        else:
            self.weightless.append(name)

    def bidirectional(self, obj: Any, config: LayerConfig, name: str) -> None:
        from weightscope.formats.keras import wrappers

        configs = wrappers.direction_configs(config)
        subs = (obj.forward_layer, obj.backward_layer)
        for index, (direction, sub) in enumerate(zip(wrappers.DIRECTIONS, subs, strict=True)):
            given = configs[index] if configs else None
            sub_config = self.config(sub, given, config.trainable)
            scoped = wrappers.direction_name(direction, sub_config.name, [str(sub.name)])
            start = len(self.layers)
            self.layer(sub, sub_config, f"{name}/{scoped}")
            wrappers.noted(self.layers[start:], wrappers.direction_note(direction, config.name))

    def build(
        self, name: str, config: LayerConfig, weights: list[Any], own_of_model: bool = False
    ) -> None:
        from weightscope.formats.keras.layers import Variable, build_layer

        variables = [Variable(stored_name(v), stored_name(v), Shape(v)) for v in weights]
        layer = build_layer(
            None,
            name,
            None if own_of_model else config,
            variables,
            hint_names=[config.name],
            live=self.reading,
        )
        if own_of_model:
            layer.note = "variables of the model itself (add_weight on the model)"
        self.layers.append(layer)


KERAS_3_LAYER = "keras.src.layers.layer.Layer"


KERAS_3_GRAPHS = frozenset(
    {"keras.src.models.functional.Functional", "keras.src.models.sequential.Sequential"}
)
"""Keras 3 models whose store lists their layers in order, under ``layers/``."""


def _is_subclassed_keras_3(obj: Any) -> bool:
    names = set(_class_names(obj))
    return KERAS_3_LAYER in names and not names & KERAS_3_GRAPHS


def _store_order(model: Any, children: list[Any]) -> list[tuple[str, Any]]:
    """A Keras 3 subclassed model's layers named and ordered as its weights store keeps them
    (``keras.src.saving.saving_lib``): its attributes sorted by name, private ones last, those a
    bare ``Layer`` has skipped; a layer held in a list, tuple or dict attribute named under it
    (``blocks/dense``). Layers no attribute reaches follow in the model's order."""
    base = next(
        c for c in type(model).__mro__ if f"{c.__module__}.{c.__qualname__}" == KERAS_3_LAYER
    )
    try:
        skip = set(dir(base()))
    except Exception:  # a Keras whose bare Layer cannot be made: no attribute is skipped
        skip = set()
    wanted = {id(child) for child in children}
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(value: Any, prefix: str, depth: int) -> None:
        if is_keras_layer(value):
            if id(value) in wanted and id(value) not in seen:
                seen.add(id(value))
                found.append((prefix + str(value.name), value))
        elif isinstance(value, (list, tuple, dict)) and depth < 8:
            for item in value.values() if isinstance(value, dict) else value:
                visit(item, prefix, depth + 1)

    attributes = sorted(vars(model), key=lambda name: f"~{name}" if name.startswith("_") else name)
    for attribute in attributes:
        if attribute.startswith("__") or attribute in skip:
            continue
        value = vars(model)[attribute]
        visit(value, "" if is_keras_layer(value) else f"{attribute}/", 0)
    found += [(str(child.name), child) for child in children if id(child) not in seen]
    return found


def _live(variable: Variable) -> Any:
    """The live variable a :class:`.layers.Variable` of this module was made from."""
    stored = variable.dataset
    assert isinstance(stored, Shape)
    return stored.variable
