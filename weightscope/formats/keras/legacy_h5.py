"""Keras' legacy HDF5 layout: ``model.save("x.h5")`` (Keras 2.0 to 3) and Keras 2
``save_weights("x.h5")``. Model order comes from ``layer_names``, datasets from ``weight_names``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import h5py

from weightscope.errors import CorruptFileError, file_error, short
from weightscope.formats.keras import catalog
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
        if layer_config is not None and layer_config.is_model:
            layers.extend(_split_nested(origin, name, layer_config, variables))
        elif layer_config is None:
            layers.extend(_split_by_owner(origin, name, variables))
        else:
            layers.append(build_layer(origin, name, layer_config, variables))
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


def _split_by_owner(origin: Origin, name: str, variables: list[Variable]) -> list[Layer]:
    """Without a config, a group whose weights name several owners (``conv2d/kernel:0``,
    ``batch_normalization/gamma:0``) is a nested model: one layer per owner, in stored order."""
    composite = catalog.composite_from_name(name)
    if composite is not None:
        return [build_layer(origin, name, None, variables, class_from_name=composite)]
    owners: dict[str, list[Variable]] = {}
    for variable in variables:
        parts = variable.stored_name.split("/")
        owners.setdefault(parts[-2] if len(parts) > 1 else name, []).append(variable)
    if len(owners) == 1:
        owner = next(iter(owners))
        return [build_layer(origin, name, None, variables, hint_names=[owner])]
    return [
        build_layer(origin, f"{name}/{owner}", None, owned, hint_names=[owner])
        for owner, owned in owners.items()
    ]


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
        build_layer(origin, "/".join((name, *leaf_path)), leaf, assigned[leaf_path])
        for leaf_path, leaf in leaves
        if leaf_path in assigned
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


def _same_layer(scoped: str, layer_name: str) -> bool:
    """``scoped`` is ``layer_name`` with zero or more ``_<n>`` suffixes (checked in one pass: a
    hostile name of many suffixes would make stripping them one by one quadratic)."""
    return (
        scoped.startswith(layer_name) and _SUFFIXES.fullmatch(scoped, len(layer_name)) is not None
    )


_SUFFIXES = re.compile(r"(?:_\d+)*")
