"""Live ``tf.Module`` objects in a notebook (not Keras layers: :mod:`..keras.live` reads those):
every ``tf.Variable`` the module reaches, by attribute path (``encoder/dense/kernel``), grouped
into a layer per path (``encoder/dense``), its role the last attribute.

A module records no layer classes, so kinds are inferred from roles and shapes as for a TF
checkpoint or a Keras weights-only file (:func:`weightscope.formats.keras.layers.build_layer`
without a config, which applies :func:`~weightscope.formats.keras.catalog.infer_class`), with
the Keras layouts (``tf.nn`` takes kernels as Keras keeps them: ``(*k, in, out)``, dense ``(in,
out)``); the variables ``w`` and ``b`` of TensorFlow's own examples (and Sonnet's) are read as a
kernel and a bias. Trainability is each variable's own ``trainable``. A variable reached by two
paths is counted once, as ``module.variables`` lists it once: at its first path through no
private attribute, a submodule's before the module's own (``self.tied = self.dense.w``), the
other public paths naming it in ``shared_with``; paths through private attributes to a variable
a public one holds are not listed (tf-keras layers keep their weights in private lists too), and
the model's notes say how many. Values are read with the variable's ``numpy()`` when asked for."""

from __future__ import annotations

from typing import Any

from weightscope.formats.keras.live import (
    Shape,
    VariableSource,
    dtype_name,
    is_keras_layer,
    variable_of,
)
from weightscope.model import Layer, Model

MODULE_CLASS = "tensorflow.python.module.module.Module"
ROOT = "(root)"

ALIASES = {"w": "kernel", "b": "bias"}
"""Names TensorFlow's examples and Sonnet give a layer's kernel and bias."""


def is_tf_module(obj: Any) -> bool:
    """A live ``tf.Module`` that is not a Keras layer (tf-keras layers are modules too)."""
    return not is_keras_layer(obj) and any(
        f"{cls.__module__}.{cls.__qualname__}" == MODULE_CLASS for cls in type(obj).__mro__
    )


def load_tf_module(module: Any) -> Model:
    import tensorflow as tf  # the caller handed us a tf.Module: tensorflow is imported already

    found = [
        (tuple(str(p) for p in path), variable)
        for path, variable in module._flatten(
            with_path=True, predicate=lambda v: isinstance(v, tf.Variable)
        )
    ]
    homes = _homes(found)
    groups: dict[str, list[tuple[str, Any]]] = {}
    hidden = []
    for path, variable in found:
        if path != homes[id(variable)] and any(p.startswith("_") for p in path):
            hidden.append("/".join(path))  # Keras' own lists of a layer's weights, say
            continue
        groups.setdefault("/".join(path[:-1]) or ROOT, []).append((path[-1], variable))
    root = groups.pop(ROOT, None)  # the module's own variables last
    layers = [_layer(name, members) for name, members in groups.items()]
    if root is not None:
        layers.append(_layer(ROOT, root))
    for layer in layers:
        for tensor in layer.tensors:
            home = "/".join(homes[id(variable_of(tensor.source))])
            if tensor.name != home:
                tensor.counted, tensor.shared_with = False, home
    notes = []
    if hidden:
        notes.append(
            f"{len(hidden)} variables reached again through private attributes ("
            f"{', '.join(hidden[:3])}{', ...' if len(hidden) > 3 else ''}) listed once, where "
            "a public attribute holds them"
        )
    return Model(None, "live", "tensorflow", tf.__version__, layers, notes=notes)


def _homes(found: list[tuple[tuple[str, ...], Any]]) -> dict[int, tuple[str, ...]]:
    """The path each variable is counted at: the first that passes through no private
    attribute, preferring a submodule's to the module's own (``self.tied = self.dense.w``)."""
    homes: dict[int, tuple[tuple[bool, bool, int], tuple[str, ...]]] = {}
    for index, (path, variable) in enumerate(found):
        key = (any(p.startswith("_") for p in path), len(path) == 1, index)
        if id(variable) not in homes or key < homes[id(variable)][0]:
            homes[id(variable)] = (key, path)
    return {ident: path for ident, (_, path) in homes.items()}


def _layer(name: str, members: list[tuple[str, Any]]) -> Layer:
    from weightscope.formats.keras.layers import LiveReading, Variable, build_layer

    roles = [role for role, _ in members]
    aliased = set(roles) <= set(ALIASES) and len(set(roles)) == len(roles)
    variables = [
        Variable(
            f"{name}/{role}" if name != ROOT else role,
            ALIASES[role] if aliased else role,
            Shape(variable),
        )
        for role, variable in members
    ]
    reading = LiveReading(
        source=lambda v: (VariableSource(_live(v)), dtype_name(_live(v))),
        trainable=lambda v: bool(_live(v).trainable),
    )
    hint = name.rsplit("/", 1)[-1]
    layer = build_layer(None, name, None, variables, hint_names=[hint], live=reading)
    said = (layer.note or "").replace("without a model config", "in a tf.Module")
    notes = [said.replace("no model config", "a tf.Module records no layer class")]
    if aliased:
        notes.insert(0, f"{', '.join(roles)} read as {', '.join(ALIASES[r] for r in roles)}")
    layer.note = "; ".join(n for n in notes if n) or None
    if not layer.kind.is_unknown:
        layer.framework = "keras"  # Keras' layouts, Keras' conventions (as a checkpoint's)
    return layer


def _live(variable: Any) -> Any:
    stored = variable.dataset
    assert isinstance(stored, Shape)
    return stored.variable
