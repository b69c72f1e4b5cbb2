"""Shared-model layers from Keras variables and layer configs, whatever the file format."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from weightscope.formats.keras import catalog, recurrent
from weightscope.formats.keras.hdf5 import H5DatasetSource, Origin
from weightscope.formats.keras.initializers import declared
from weightscope.formats.keras.tensors import depthwise_groups, variable_tensors
from weightscope.kinds import Kind
from weightscope.model import (
    NON_TRAINABLE_ROLES,
    Layer,
    Tensor,
    TensorSource,
)


@dataclass(frozen=True)
class LayerConfig:
    """One layer's entry in a Keras model config."""

    name: str
    class_name: str
    config: dict[str, Any]
    trainable: bool
    """False when this layer or any model containing it is frozen."""

    @property
    def is_model(self) -> bool:
        return self.class_name in catalog.MODEL_CLASSES or isinstance(
            self.config.get("layers"), list
        )

    def children(self) -> list[LayerConfig]:
        return sublayer_configs(self.config, self.trainable)


def sublayer_configs(model_config: Any, trainable: bool = True) -> list[LayerConfig]:
    """Layer configs of a model config's ``layers`` (Keras 2.0 Sequential kept a bare list).
    Entries that are not shaped like layer configs are ignored; their weights then show up as
    layers without a config."""
    if isinstance(model_config, dict) and "layers" not in model_config:
        model_config = model_config.get("config")
    if isinstance(model_config, dict):
        model_config = model_config.get("layers")
    if not isinstance(model_config, list):
        return []
    entries = (layer_config(entry, trainable) for entry in model_config)
    return [entry for entry in entries if entry is not None]


def layer_config(entry: Any, trainable: bool = True) -> LayerConfig | None:
    """One ``{"class_name": ..., "config": {...}}`` entry (of a model's ``layers``, or the
    ``layer`` a wrapper holds); None when it is not shaped like a layer config."""
    if not isinstance(entry, dict):
        return None
    raw_config = entry.get("config")
    config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
    name = entry.get("name") or config.get("name")
    if not isinstance(name, str):
        return None
    layer_trainable = trainable and config.get("trainable", True) is not False
    return LayerConfig(name, str(entry.get("class_name", "?")), config, layer_trainable)


def root_trainable(model_config: Any) -> bool:
    if isinstance(model_config, dict) and isinstance(model_config.get("config"), dict):
        return model_config["config"].get("trainable", True) is not False
    return True


class Stored(Protocol):
    """What a layer is built from: an ``h5py.Dataset`` of a file, or a live model's variable."""

    @property
    def shape(self) -> tuple[int, ...]: ...


@dataclass(frozen=True)
class Variable:
    stored_name: str
    role: str | None
    """The stored name when the file names variables; None when it keeps them by position."""
    dataset: Stored


@dataclass(frozen=True)
class LiveReading:
    """How a live model's variables are read (:mod:`.live`): ``source`` gives a variable's data
    source and element type, ``trainable`` whether the model trains it (what the model itself
    says, not its config)."""

    source: Callable[[Variable], tuple[TensorSource, str]]
    trainable: Callable[[Variable], bool]


def build_layer(
    origin: Origin | None,
    name: str,
    layer_config: LayerConfig | None,
    variables: list[Variable],
    hint_names: Iterable[str] = (),
    class_from_name: str | None = None,
    live: LiveReading | None = None,
) -> Layer:
    """A layer from its variables: kind and layouts from the config's class, or inferred from
    names and shapes when the file has no config (and then marked ``inferred``).
    ``class_from_name`` is a class already recognised from the layer's name. ``origin`` is the
    file the datasets lie in; a live model's variables are read through ``live`` instead."""
    notes: list[str] = []
    if layer_config is not None:
        class_name: str | None = catalog.canonical_class(layer_config.class_name)
    elif class_from_name is not None and not _recurrent_variables(variables):
        class_name = class_from_name
        notes.append(f"no model config: a {class_name}, from its name {name!r}")
    else:
        cell = catalog.cell_roles([v.role or "" for v in variables])
        if all(v.role is None for v in variables):  # a store's vars/0, ...: by position
            cell = catalog.positional_recurrent_roles([*hint_names, name], None, len(variables))
        if cell is not None:  # a Keras 3 store's cell/vars/0, ...: a recurrent layer's, by position
            variables = [
                Variable(v.stored_name, role, v.dataset)
                for v, role in zip(variables, cell, strict=True)
            ]
        shapes = {
            catalog.short_role(v.role): v.dataset.shape for v in variables if v.role is not None
        }
        all_shapes = [tuple(v.dataset.shape) for v in variables]
        guess = catalog.infer_class([*hint_names, name], shapes, all_shapes)
        class_name = guess.class_name or class_from_name
        notes.append(guess.note)
        if class_name == "Embedding" and len(variables) == 1 and variables[0].role is not None:
            # a table found by its name keeps its own variable name (``weight``): its role
            variables = [Variable(variables[0].stored_name, "embeddings", variables[0].dataset)]
    layer_type = catalog.layer_type(class_name)
    config = dict(layer_config.config) if layer_config else {}
    if layer_type is None and class_name is not None:
        notes.append(f"Keras class {class_name} has no canonical form in weightscope")
        if class_name in recurrent.CUDNN:
            notes.append(recurrent.CUDNN_PACKING)

    if recurrent.is_recurrent(class_name) and all(v.role is None for v in variables):
        # a CuDNN layer's own vars/0, ... (other recurrent layers keep their cell's)
        by_count = catalog.recurrent_roles_by_count(
            layer_config.config if layer_config else None, len(variables)
        )
        if by_count is not None:
            variables = [
                Variable(v.stored_name, role, v.dataset)
                for v, role in zip(variables, by_count, strict=True)
            ]
    if layer_type is not None and any(v.role is None for v in variables):
        named, note = _assign_positional_roles(class_name or "", layer_config, variables)
        if named is None:
            layer_type = None
        else:
            variables = named
        if note:
            notes.append(note)

    kind = layer_type.kind if layer_type is not None else "unknown"
    roles = _unique_roles([v.role or f"var{i}" for i, v in enumerate(variables)])
    by_position = catalog.recurrent_roles(class_name, config if layer_config else None, roles)
    if by_position is not None:  # a Keras 3 store's cell/vars/0, ...: named as in other files
        roles = by_position
    if layer_type is not None:
        roles = [catalog.normalise_role(kind, role) for role in roles]
        if len(set(roles)) != len(roles):
            notes.append("two variables share a role: no canonical form")
            layer_type, kind = None, "unknown"

    if recurrent.is_recurrent(class_name):
        layer_type, found = _recurrent_checks(
            class_name or "", layer_type, layer_config, roles, variables, config
        )
        kind = layer_type.kind if layer_type is not None else "unknown"
        notes += found

    groups = int(config.get("groups", 1) or 1)
    if layer_config is None and kind.startswith(("conv", "separable")):
        notes.append("groups are not recorded without a model config: 1 assumed")
    if layer_type is None and layer_config is not None and live is None:
        notes.append("trainability taken from the layer's config")

    def declare(part_role: str, shape: tuple[int, ...]) -> Any:
        return declared(config, kind, part_role, shape)

    tensors: list[Tensor] = []
    for role, variable in zip(roles, variables, strict=True):
        stored_shape = tuple(int(s) for s in variable.dataset.shape)
        base: TensorSource
        if live is None:
            assert origin is not None
            h5_source = H5DatasetSource(variable.dataset, origin)
            base, dtype = h5_source, h5_source.dtype_name
            trainable = _trainable(role, layer_config, layer_type)
        else:
            (base, dtype), trainable = live.source(variable), live.trainable(variable)
        tensors += variable_tensors(
            variable.stored_name,
            role,
            stored_shape,
            dtype,
            base,
            trainable,
            layer_type,
            class_name,
            declare if layer_config else None,
        )
    groups = depthwise_groups(tensors, groups)
    return Layer(
        name=name,
        kind=Kind(kind),
        tensors=tensors,
        config=config,
        groups=groups,
        inferred=layer_config is None,
        class_name=layer_config.class_name if layer_config else class_name,
        note="; ".join(notes) or None,
    )


def _assign_positional_roles(
    class_name: str, layer_config: LayerConfig | None, variables: list[Variable]
) -> tuple[list[Variable] | None, str | None]:
    """Roles for variables a Keras 3 store keeps by position, and a note on what was guessed.
    None instead of variables when their count does not fit the class."""
    config = layer_config.config if layer_config else None
    positional = catalog.positional_roles(class_name, config, len(variables))
    if len(positional) != len(variables):
        return None, f"{len(variables)} variables where {class_name} keeps {len(positional)}"
    named = [
        Variable(v.stored_name, role, v.dataset)
        for v, role in zip(variables, positional, strict=True)
    ]
    return named, catalog.ambiguous_roles(class_name, config, len(variables))


def _unique_roles(stored: list[str]) -> list[str]:
    """Shortest distinct suffixes of stored variable names (``lstm/lstm_cell/kernel:0`` ->
    ``kernel``), longer only where two variables of the layer would share one."""
    parts = [name.split(":", 1)[0].split("/") for name in stored]
    depth = 1
    # a numbered store path (cell/vars/0) is only meaningful whole
    while any(len(p) > depth and (p[-depth].isdigit() or p[-depth] == "vars") for p in parts):
        depth += 1
    while True:
        roles = ["/".join(p[-depth:]) for p in parts]
        if len(set(roles)) == len(roles) or depth >= max(len(p) for p in parts):
            return roles
        depth += 1


def _recurrent_variables(variables: list[Variable]) -> bool:
    """Whether the variables are a recurrent cell's (their shapes then tell the class)."""
    roles = [v.role or "" for v in variables]
    named = {catalog.short_role(role) for role in roles}
    return "recurrent_kernel" in named or catalog.cell_roles(roles) is not None


def _recurrent_checks(
    class_name: str,
    layer_type: catalog.KerasLayerType | None,
    layer_config: LayerConfig | None,
    roles: list[str],
    variables: list[Variable],
    config: dict[str, Any],
) -> tuple[catalog.KerasLayerType | None, list[str]]:
    """A recurrent layer's shapes checked against its class (a layer they do not fit has no
    canonical form), and what its config says beyond its tensors; a layer without a config
    gets the units (and a GRU's reset mode) its shapes tell recorded in ``config``."""
    shapes = {role: tuple(v.dataset.shape) for role, v in zip(roles, variables, strict=True)}
    if layer_type is None:
        return None, []
    problem = recurrent.shape_problem(class_name, shapes)
    if problem is not None:
        return None, [f"{problem}: no canonical form"]
    if layer_config is None:
        config.update(recurrent.inferred_config(class_name, shapes))
    return layer_type, recurrent.notes(class_name, config if layer_config else None, shapes)


def _trainable(
    role: str, layer_config: LayerConfig | None, layer_type: catalog.KerasLayerType | None
) -> bool | None:
    if role in NON_TRAINABLE_ROLES:
        return False
    if layer_config is None:
        return None  # a weights-only file cannot say whether a layer was frozen
    if layer_type is None and catalog.canonical_class(layer_config.class_name) in (
        catalog.NON_TRAINABLE_STATE_CLASSES
    ):
        return False
    return layer_config.trainable
