"""Keras' legacy HDF5 layout: ``model.save("x.h5")`` (Keras 2.0 to 3) and Keras 2
``save_weights("x.h5")``. Model order comes from ``layer_names``, datasets from ``weight_names``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py

from weightscope.errors import CorruptFileError, file_error, short
from weightscope.formats.keras import catalog, wrappers
from weightscope.formats.keras.hdf5 import (
    Origin,
    hard_path,
    refuse_link,
    string_list_attr,
    text_attr,
)
from weightscope.formats.keras.layers import (
    LayerConfig,
    Variable,
    build_layer,
    root_trainable,
    sublayer_configs,
)
from weightscope.limits import LimitExceeded
from weightscope.model import Layer, Model

LeafPath = tuple[str, ...]
"""A layer's names from the nested model down: ("block", "conv")."""


def is_legacy(root: h5py.Group) -> bool:
    return bool(string_list_attr(root, "layer_names"))


def load_legacy(origin: Origin, h5: h5py.File, root: h5py.Group, model_config: Any) -> Model:
    configs = {c.name: c for c in sublayer_configs(model_config, root_trainable(model_config))}
    layers: list[Layer] = []
    weightless: list[str] = []
    for name in string_list_attr(root, "layer_names") or []:
        group, link = hard_path(root, name)
        if link is not None:
            raise refuse_link(origin.path, f"layer_names lists {short(name)}", link)
        if not isinstance(group, h5py.Group):
            raise file_error(
                CorruptFileError,
                origin.path,
                f"layer_names lists {short(name)} but there is no such group",
            )
        variables = [
            Variable(weight, weight, _dataset(origin.path, group, weight))
            for weight in string_list_attr(group, "weight_names") or []
        ]
        if not variables:
            weightless.append(name)
            continue
        layer_config = configs.get(name)
        if layer_config is None:
            layers.extend(_split_by_owner(origin, name, variables))
        else:
            layers.extend(_build(origin, name, layer_config, variables))
    return Model(
        source=origin.path,
        format="keras-h5" if model_config else "keras-h5-weights",
        framework="keras",
        framework_version=text_attr(root, "keras_version") or text_attr(h5, "keras_version"),
        layers=layers,
        weightless_layers=weightless,
    )


def _dataset(path: Path, group: h5py.Group, name: str) -> h5py.Dataset:
    node, link = hard_path(group, name)
    if link is not None:
        raise refuse_link(path, f"weight_names of {group.name} lists {short(name)}", link)
    if not isinstance(node, h5py.Dataset):
        raise file_error(
            CorruptFileError,
            path,
            f"weight_names of {group.name} lists {short(name)} but there is no such dataset",
        )
    return node


def _build(
    origin: Origin, name: str, layer_config: LayerConfig, variables: list[Variable], depth: int = 0
) -> list[Layer]:
    """The layers of one configured layer's variables: a nested model split among its layers,
    a wrapper unwrapped into the layers it holds (``wrappers``), any other layer as it is."""
    if layer_config.is_model:
        return _split_nested(origin, name, layer_config, variables)
    wrapper = wrappers.wrapper_class(layer_config)
    if wrapper is not None:
        _check_wrapper_depth(origin, depth)
    if wrapper == wrappers.TIME_DISTRIBUTED:
        inner = wrappers.inner_config(layer_config)
        if inner is not None:
            note = wrappers.time_distributed_note(layer_config.name, inner.class_name)
            return wrappers.noted(_build(origin, name, inner, variables, depth + 1), note)
    elif wrapper == wrappers.BIDIRECTIONAL:
        configs = wrappers.direction_configs(layer_config)
        if configs is not None:
            seen = wrappers.scopes(variables)
            names = (
                wrappers.direction_name(wrappers.FORWARD, configs[0].name, seen),
                wrappers.direction_name(wrappers.BACKWARD, configs[1].name, seen),
            )
            halves = wrappers.split_directions(variables, names)
            if halves is not None:
                layers = []
                for direction, config, direction_name, owned in zip(
                    wrappers.DIRECTIONS, configs, names, halves, strict=True
                ):
                    built = _build(origin, f"{name}/{direction_name}", config, owned, depth + 1)
                    note = wrappers.direction_note(direction, layer_config.name)
                    layers.extend(wrappers.noted(built, note))
                return layers
        return wrappers.noted(
            [build_layer(origin, name, layer_config, variables)], wrappers.unsplit_note()
        )
    return [build_layer(origin, name, layer_config, variables)]


def _check_wrapper_depth(origin: Origin, depth: int) -> None:
    limit = origin.limits.max_nesting
    if depth >= limit:
        raise LimitExceeded(
            "max_nesting", limit, depth + 1, f"model config nests wrappers more than {limit} deep"
        )


def _split_by_owner(origin: Origin, name: str, variables: list[Variable]) -> list[Layer]:
    """Without a config, a group whose weights name several owners (``conv2d/kernel:0``,
    ``batch_normalization/gamma:0``) is a nested model: one layer per owner, in stored order.
    A group named like a wrapper (``time_distributed_1``, ``bidirectional``) is unwrapped."""
    composite = catalog.composite_from_name(name)
    if composite == wrappers.BIDIRECTIONAL:
        return _inferred_bidirectional(origin, name, variables)
    if composite == wrappers.TIME_DISTRIBUTED:
        note = wrappers.time_distributed_note(name, None)
        return wrappers.noted(_split_owners(origin, name, variables), note)
    if composite is not None:
        return [build_layer(origin, name, None, variables, class_from_name=composite)]
    return _split_owners(origin, name, variables)


def _split_owners(origin: Origin, name: str, variables: list[Variable]) -> list[Layer]:
    owners: dict[str, list[Variable]] = {}
    for variable in variables:
        owners.setdefault(_owner_name(variable.stored_name, name), []).append(variable)
    if len(owners) == 1:
        owner = next(iter(owners))
        return [build_layer(origin, name, None, variables, hint_names=[owner])]
    leaves = {owner: owner.rsplit("/", 1)[-1] for owner in owners}
    directions = {leaf.split("_", 1)[0] for leaf in leaves.values()}
    layers = []
    for owner, owned in owners.items():
        leaf = leaves[owner]
        layer = build_layer(origin, f"{name}/{owner}", None, owned, hint_names=[leaf])
        direction = leaf.split("_", 1)[0]
        if catalog.composite_from_name(leaf) == wrappers.TIME_DISTRIBUTED:
            wrappers.noted([layer], wrappers.time_distributed_note(leaf, None))
        elif direction in wrappers.DIRECTIONS and directions >= set(wrappers.DIRECTIONS):
            wrapper = owner.rsplit("/", 1)[0] if "/" in owner else None
            wrappers.noted([layer], wrappers.direction_note(direction, wrapper))
        layers.append(layer)
    return layers


def _owner_name(stored_name: str, group: str) -> str:
    """The layer a stored name belongs to: its last scope, or the one before a recurrent cell's
    (``lstm/lstm_cell/kernel:0`` -> ``lstm``); a Bidirectional's direction with the
    Bidirectional (``bidirectional/forward_lstm/lstm_cell/kernel:0`` ->
    ``bidirectional/forward_lstm``) unless that is the group itself."""
    *scope, _ = stored_name.split("/")
    if not scope:
        return group
    if len(scope) > 1 and (scope[-1] == "cell" or scope[-1].endswith("_cell")):
        scope.pop()
    owner = scope[-1]
    direction = owner.split("_", 1)[0]
    if direction in wrappers.DIRECTIONS and len(scope) > 1 and scope[-2] != group:
        return f"{scope[-2]}/{owner}"
    return owner


def _inferred_bidirectional(origin: Origin, name: str, variables: list[Variable]) -> list[Layer]:
    """A Bidirectional without a config: its direction scopes (or halves) split its variables,
    each direction's layer recognised from its variables."""
    halves = wrappers.split_directions(variables, None)
    if halves is None:
        layer = build_layer(origin, name, None, variables, class_from_name=wrappers.BIDIRECTIONAL)
        return wrappers.noted([layer], wrappers.unsplit_note())
    layers = []
    for direction, owned in zip(wrappers.DIRECTIONS, halves, strict=True):
        layer = build_layer(origin, name, None, owned)
        scoped = wrappers.direction_name(direction, None, wrappers.scopes(owned))
        if scoped == direction and layer.class_name:
            scoped = f"{direction}_{catalog.snake_case(layer.class_name)}"
        layer.name = f"{name}/{scoped}"
        layers.extend(wrappers.noted([layer], wrappers.direction_note(direction, name)))
    return layers


def _leaves(
    config: LayerConfig, max_nesting: int, prefix: LeafPath = ()
) -> list[tuple[LeafPath, LayerConfig]]:
    """The layers of a nested model's config, with their paths through the models inside it."""
    if len(prefix) >= max_nesting:
        raise LimitExceeded(
            "max_nesting",
            max_nesting,
            len(prefix) + 1,
            f"model config nests models more than {max_nesting} deep",
        )
    result: list[tuple[LeafPath, LayerConfig]] = []
    for child in config.children():
        path = (*prefix, child.name)
        result.extend(_leaves(child, max_nesting, path) if child.is_model else [(path, child)])
    return result


def _split_nested(
    origin: Origin, name: str, model_config: LayerConfig, variables: list[Variable]
) -> list[Layer]:
    """Split a nested model's flat weight list among its own layers. Keras 2 names weights by
    the owning layer only (``conv2d/kernel:0``), Keras 3 by the whole path
    (``outer/inner/conv2d/kernel``): each weight goes to the layer whose path matches the most
    trailing components of its name; ties go to the first such layer still missing that role."""
    leaves = _leaves(model_config, origin.limits.max_nesting)
    assigned: dict[LeafPath, list[Variable]] = {}
    orphans: dict[str, list[Variable]] = {}
    for variable in variables:
        owner = _owner(variable.stored_name, leaves, assigned)
        if owner is None:
            prefix = variable.stored_name.rsplit("/", 1)[0] if "/" in variable.stored_name else "?"
            orphans.setdefault(f"{name}/{prefix}", []).append(variable)
        else:
            assigned.setdefault(owner, []).append(variable)
    layers = [
        layer
        for leaf_path, leaf in leaves
        if leaf_path in assigned
        for layer in _build(origin, "/".join((name, *leaf_path)), leaf, assigned[leaf_path])
    ]
    for orphan_name, orphan_vars in orphans.items():
        layer = build_layer(origin, orphan_name, None, orphan_vars)
        layer.note = f"weights of nested model {name!r} that match none of its layers; " + (
            layer.note or ""
        )
        layers.append(layer)
    return layers


def _owner(
    stored_name: str,
    leaves: list[tuple[LeafPath, LayerConfig]],
    assigned: dict[LeafPath, list[Variable]],
) -> LeafPath | None:
    *scope, role = stored_name.split("/")
    scored = [(_matching_tail(scope, leaf_path), leaf_path) for leaf_path, _ in leaves]
    best = max((score for score, _ in scored), default=0)
    if best == 0:
        # a layer's own sub-layers add scopes after its name (a wrapper's, Keras 3:
        # ``time_distributed/conv2d/kernel``; a recurrent cell: ``lstm/lstm_cell/kernel``)
        scored = [(_matching_inside(scope, leaf_path), leaf_path) for leaf_path, _ in leaves]
        best = max((score for score, _ in scored), default=0)
    if best == 0:
        return None
    candidates = [leaf_path for score, leaf_path in scored if score == best]
    for leaf_path in candidates:
        if not any(v.stored_name.split("/")[-1] == role for v in assigned.get(leaf_path, [])):
            return leaf_path
    return candidates[0]


def _matching_tail(scope: list[str], leaf_path: tuple[str, ...]) -> int:
    """How many trailing components of ``scope`` match the end of ``leaf_path``. The last one may
    carry the ``_1`` suffix Keras 2.0-era files gave the scopes of re-built layers."""
    if not scope or not _same_layer(scope[-1], leaf_path[-1]):
        return 0
    count = 1
    while (
        count < len(scope) and count < len(leaf_path) and scope[-1 - count] == leaf_path[-1 - count]
    ):
        count += 1
    return count


_INNER_SCOPES = 4
"""How many scopes a layer's own sub-layers may add after its name (a TimeDistributed of a
Bidirectional of an LSTM: ``bidirectional/forward_lstm/lstm_cell``)."""


def _matching_inside(scope: list[str], leaf_path: tuple[str, ...]) -> int:
    """``_matching_tail`` of ``scope`` cut after the last component naming the leaf's layer,
    at most ``_INNER_SCOPES`` from its end."""
    for end in range(len(scope) - 1, max(0, len(scope) - 1 - _INNER_SCOPES), -1):
        if _same_layer(scope[end - 1], leaf_path[-1]):
            return _matching_tail(scope[:end], leaf_path)
    return 0


def _same_layer(scoped: str, layer_name: str) -> bool:
    """``scoped`` is ``layer_name`` with zero or more ``_<n>`` suffixes (checked in one pass: a
    hostile name of many suffixes would make stripping them one by one quadratic)."""
    return (
        scoped.startswith(layer_name) and _SUFFIXES.fullmatch(scoped, len(layer_name)) is not None
    )


_SUFFIXES = re.compile(r"(?:_\d+)*")
