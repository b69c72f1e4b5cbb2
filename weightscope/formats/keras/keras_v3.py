"""Keras 3's weights store: ``model.weights.h5`` inside a ``.keras`` zip, or a ``.weights.h5``.

Layers keep numbered variables (``<layer>/vars/0``, ``vars/1``, ...) in groups named after their
class (``conv2d``, ``conv2d_1``); a functional or sequential model's layers sit under ``layers/``,
a subclassed model's under its attribute names, and the model's own variables in the root
``vars``. Optimizer state (``optimizer/``) is never a parameter."""

from __future__ import annotations

import re
from typing import Any

import h5py

from weightscope.formats.keras import catalog
from weightscope.formats.keras.hdf5 import (
    Origin,
    address,
    check_depth,
    datasets_under,
    group_depth,
    hard_child,
    hard_children,
    has_link,
    text_attr,
)
from weightscope.formats.keras.layers import (
    LayerConfig,
    Variable,
    build_layer,
    root_trainable,
    sublayer_configs,
)
from weightscope.model import Layer, Model

NOT_PARAMETERS = frozenset({"optimizer"})
"""Root groups that hold training state, not weights."""

LAYER_CONTAINERS = frozenset({"layers", "_layer_checkpoint_dependencies"})
"""A model's list of layers (the second name in stores written by Keras 2.13-2.15)."""


def is_store(h5: h5py.File) -> bool:
    return any(has_link(h5, key) for key in ("layers", "vars", "_layer_checkpoint_dependencies"))


def load_store(origin: Origin, h5: h5py.File, config: Any, fmt: str, version: str | None) -> Model:
    layers: list[Layer] = []
    weightless: list[str] = []
    configs = sublayer_configs(config, root_trainable(config)) if config else None
    walker = _Walker(origin, layers, weightless)
    for key, node in _ordered(h5, NOT_PARAMETERS | {"vars"}, origin.limits.max_nesting):
        if key in LAYER_CONTAINERS:
            walker.walk_layers(node, configs, "")
        else:
            walker.walk_attribute(key, node, "")
    model_vars = _numbered_variables(h5)
    if model_vars:
        model_name = _vars_name(h5) or "model"
        layer = build_layer(origin, model_name, None, model_vars)
        layer.note = "variables of the model itself (add_weight on the model)"
        layers.append(layer)
    return Model(
        source=origin.path,
        format=fmt,
        framework="keras",
        framework_version=version,
        layers=layers,
        weightless_layers=weightless,
    )


class _Walker:
    """Walks a store's groups, refusing those nested past ``max_nesting`` (each level is a step
    of recursion here)."""

    def __init__(self, origin: Origin, layers: list[Layer], weightless: list[str]) -> None:
        self.origin = origin
        self.layers = layers
        self.weightless = weightless
        self.max_nesting = origin.limits.max_nesting

    def walk_layers(
        self, layers_group: h5py.Group, configs: list[LayerConfig] | None, prefix: str
    ) -> None:
        """A model's ``layers/`` group: each child is one layer (or nested model)."""
        check_depth(group_depth(layers_group), self.max_nesting)
        for key, group, layer_config in _match_store_groups(
            layers_group, configs, self.max_nesting
        ):
            self.layer(key, group, layer_config, prefix)

    def walk_attribute(self, key: str, node: h5py.Group, prefix: str) -> None:
        """A subclassed model's attribute: a layer (it has ``vars``) or a list of layers."""
        check_depth(group_depth(node), self.max_nesting)
        if isinstance(hard_child(node, "vars"), h5py.Group):
            self.layer(key, node, None, prefix)
            return
        for child_key, child in _ordered(node, frozenset(), self.max_nesting):
            self.walk_attribute(child_key, child, f"{prefix}{key}/")

    def layer(
        self, key: str, group: h5py.Group, layer_config: LayerConfig | None, prefix: str
    ) -> None:
        name = prefix + (layer_config.name if layer_config else _vars_name(group) or key)
        nested = hard_child(group, "layers")
        if isinstance(nested, h5py.Group):
            sub_configs = layer_config.children() if layer_config else None
            self.walk_layers(nested, sub_configs, f"{name}/")
        variables = _layer_variables(group, self.max_nesting)
        if variables:
            self.layers.append(
                build_layer(self.origin, name, layer_config, variables, hint_names=[key])
            )
        elif not isinstance(nested, h5py.Group):
            self.weightless.append(name)


def _vars_name(group: h5py.Group) -> str | None:
    """Since Keras 3.6 a ``vars`` group carries its owner's name."""
    vars_group = hard_child(group, "vars")
    return text_attr(vars_group, "name") if isinstance(vars_group, h5py.Group) else None


def _match_store_groups(
    layers_group: h5py.Group, configs: list[LayerConfig] | None, max_nesting: int
) -> list[tuple[str, h5py.Group, LayerConfig | None]]:
    """Pair each stored layer group with its config, in model order.

    The store names groups by class (``conv2d``, ``conv2d_1``, ...) in list order; since Keras 3.6
    ``vars`` also carries the layer's own name, which is used first."""
    groups = dict(_ordered(layers_group, frozenset(), max_nesting))
    if not configs:
        return [(key, group, None) for key, group in groups.items()]
    by_name = {}
    for key, group in groups.items():
        stored = _vars_name(group)
        if stored:
            by_name[stored] = key
    seen_per_class: dict[str, int] = {}
    ordered: list[tuple[str, h5py.Group, LayerConfig | None]] = []
    used: set[str] = set()
    for layer_config in configs:
        base = catalog.snake_case(layer_config.class_name)
        seen = seen_per_class.get(base, 0)
        seen_per_class[base] = seen + 1
        key = by_name.get(layer_config.name) or (base if seen == 0 else f"{base}_{seen}")
        if key in groups and key not in used:
            used.add(key)
            ordered.append((key, groups[key], layer_config))
    ordered.extend((key, group, None) for key, group in groups.items() if key not in used)
    return ordered


def _ordered(
    container: h5py.Group, skip: frozenset[str], max_nesting: int
) -> list[tuple[str, h5py.Group]]:
    """Child groups in the order Keras wrote them: by the file address of their first dataset
    (Keras writes variables in model order; group headers are not reliable, HDF5 reuses freed
    space for them), then by natural name order."""
    children = [
        (key, node) for key, node in hard_children(container, skip) if isinstance(node, h5py.Group)
    ]
    return sorted(children, key=lambda item: _storage_order(item[0], item[1], max_nesting))


def _storage_order(key: str, group: h5py.Group, max_nesting: int) -> tuple[int, str, int]:
    addresses = [address(dataset) for _, dataset in datasets_under(group, max_nesting)]
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", key)
    assert match is not None
    digits = match.group(2) or "0"
    natural = (match.group(1), int(digits) if len(digits) < 20 else 1 << 64)
    return (min(addresses) if addresses else address(group), *natural)


def _numbered_variables(group: h5py.Group) -> list[Variable]:
    vars_group = hard_child(group, "vars")
    if not isinstance(vars_group, h5py.Group):
        return []
    datasets = {k: v for k, v in hard_children(vars_group) if isinstance(v, h5py.Dataset)}
    keys = sorted(
        datasets, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() and len(k) < 20 else 0, k)
    )
    return [Variable(f"vars/{key}", None, datasets[key]) for key in keys]


def _layer_variables(group: h5py.Group, max_nesting: int) -> list[Variable]:
    """A layer's numbered ``vars/i`` (role by position), then anything nested deeper that is not
    a sub-model (e.g. an RNN's ``cell/vars``), named by its path."""
    variables = _numbered_variables(group)
    for key, node in hard_children(group):
        if key in ("vars", "layers") or not isinstance(node, h5py.Group):
            continue
        variables.extend(
            Variable(f"{key}/{sub}", f"{key}/{sub}", dataset)
            for sub, dataset in datasets_under(node, max_nesting)
        )
    return variables
