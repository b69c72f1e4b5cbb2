"""Live ``tf.Module`` objects in a notebook (not Keras layers: :mod:`..keras.live` reads those):
every ``tf.Variable`` the module reaches, by attribute path (``encoder/dense/kernel``), grouped
into a layer per path (``encoder/dense``), its role the last attribute.

A module records no layer classes, so kinds are inferred from roles and shapes as for a TF
checkpoint or a Keras weights-only file (:func:`weightscope.formats.keras.layers.build_layer`
without a config, which applies :func:`~weightscope.formats.keras.catalog.infer_class`), with the
Keras layouts (``tf.nn`` takes kernels as Keras keeps them: ``(*k, in, out)``, dense ``(in,
out)``); the variables ``w`` and ``b`` of TensorFlow's own examples (and Sonnet's) are read as a
kernel and a bias. Trainability is each variable's own ``trainable``; a variable reached by two
paths is counted with the first (``shared_with`` on the other), as ``module.variables`` lists it
once. Values are read with the variable's ``numpy()`` when asked for."""

from __future__ import annotations

from typing import Any

from weightscope.formats.keras.live import (
    Shape,
    VariableSource,
    dtype_name,
    is_keras_layer,
    mark_shared,
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

    found = module._flatten(with_path=True, predicate=lambda v: isinstance(v, tf.Variable))
    groups: dict[str, list[tuple[str, Any]]] = {}
    for path, variable in found:
        parts = [str(p) for p in path]
        groups.setdefault("/".join(parts[:-1]) or ROOT, []).append((parts[-1], variable))
    # the module's own variables last: a variable it also holds for a submodule (tied) is then
    # counted with the submodule's layer
    root = groups.pop(ROOT, None)
    layers = [_layer(name, members) for name, members in groups.items()]
    if root is not None:
        layers.append(_layer(ROOT, root))
    mark_shared(layers)
    return Model(None, "live", "tensorflow", tf.__version__, layers)


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
