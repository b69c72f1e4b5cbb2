"""Keras 3's weights store: ``model.weights.h5`` inside a ``.keras`` zip, or a ``.weights.h5``.

Layers keep numbered variables (``<layer>/vars/0``, ``vars/1``, ...) in groups named after their
class (``conv2d``, ``conv2d_1``); a functional or sequential model's layers sit under ``layers/``,
a subclassed model's under its attribute names, and the model's own variables in the root
``vars``. Optimizer state (``optimizer/``) is never a parameter."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import h5py

from weightscope.formats.keras import catalog, wrappers
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
        self,
        key: str,
        group: h5py.Group,
        layer_config: LayerConfig | None,
        prefix: str,
        name: str | None = None,
        class_hint: str | None = None,
    ) -> None:
        """One layer's group (or a nested model's, or a wrapper's). ``name``: the name it takes,
        when not its own (a wrapper's inner layer takes the wrapper's)."""
        vars_name = _vars_name(group)
        if name is None:
            name = prefix + (layer_config.name if layer_config else vars_name or key)
        wrapper = _wrapper(key, group, layer_config)
        if wrapper is not None:
            check_depth(group_depth(group), self.max_nesting)
            self.wrapper(wrapper, group, layer_config, prefix, name)
            return
        nested = hard_child(group, "layers")
        if isinstance(nested, h5py.Group):
            sub_configs = layer_config.children() if layer_config else None
            self.walk_layers(nested, sub_configs, f"{name}/")
        variables = _layer_variables(group, self.max_nesting)
        if variables:
            hints = [key] if vars_name is None else [key, vars_name]
            self.layers.append(
                build_layer(
                    self.origin,
                    name,
                    layer_config,
                    variables,
                    hint_names=hints,
                    class_from_name=class_hint,
                )
            )
        elif not isinstance(nested, h5py.Group):
            self.weightless.append(name)

    def wrapper(
        self,
        wrapper: str,
        group: h5py.Group,
        layer_config: LayerConfig | None,
        prefix: str,
        name: str,
    ) -> None:
        """A TimeDistributed's or Bidirectional's group: the layers it holds, unwrapped
        (``wrappers``); variables of the wrapper's own, which Keras never writes, beside."""
        own_name = layer_config.name if layer_config else _vars_name(group) or name
        first = len(self.layers)
        if wrapper == wrappers.TIME_DISTRIBUTED:
            inner = wrappers.inner_config(layer_config) if layer_config else None
            self.layer("layer", hard_child(group, "layer"), inner, prefix, name=name)
            note = wrappers.time_distributed_note(own_name, inner.class_name if inner else None)
            wrappers.noted(self.layers[first:], note)
        else:
            configs = wrappers.direction_configs(layer_config) if layer_config else None
            for index, direction in enumerate(wrappers.DIRECTIONS):
                key = f"{direction}_layer"
                sub = hard_child(group, key)
                config = configs[index] if configs else None
                stored = _vars_name(sub)  # Keras' own name for it, since Keras 3.6
                hint = None
                if config is not None:
                    seen = [] if stored is None else [stored]
                    scoped = wrappers.direction_name(direction, config.name, seen)
                elif stored is not None:
                    scoped = stored
                    hint = catalog.composite_from_name(stored.removeprefix(f"{direction}_"))
                else:
                    scoped = direction
                start = len(self.layers)
                self.layer(key, sub, config, prefix, name=f"{name}/{scoped}", class_hint=hint)
                wrappers.noted(self.layers[start:], wrappers.direction_note(direction, own_name))
        own = _layer_variables(group, self.max_nesting, wrappers.STORE_KEYS[wrapper])
        if own:
            layer = build_layer(self.origin, name, layer_config, own)
            self.layers.append(wrappers.noted([layer], "variables of the wrapper itself")[0])


def _wrapper(key: str, group: h5py.Group, layer_config: LayerConfig | None) -> str | None:
    """``TimeDistributed`` or ``Bidirectional`` when the group is one the reader can unwrap: its
    config says so (without one, its name for a TimeDistributed; a Bidirectional's two groups
    tell it), and the groups of the layers it holds are there."""
    if layer_config is not None:
        found = wrappers.wrapper_class(layer_config)
    elif any(
        catalog.composite_from_name(n) == wrappers.TIME_DISTRIBUTED
        for n in (key, _vars_name(group))
        if n is not None
    ):
        found = wrappers.TIME_DISTRIBUTED
    else:
        found = wrappers.BIDIRECTIONAL
    if found is None:
        return None
    keys = wrappers.STORE_KEYS[found]
    return found if all(isinstance(hard_child(group, k), h5py.Group) for k in keys) else None


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


def _layer_variables(
    group: h5py.Group, max_nesting: int, held: Sequence[str] = ("layers",)
) -> list[Variable]:
    """A layer's numbered ``vars/i`` (role by position), then anything nested deeper that is not
    a sub-model or, for a wrapper, a layer it holds (``held``), e.g. an RNN's ``cell/vars``,
    named by its path."""
    variables = _numbered_variables(group)
    for key, node in hard_children(group):
        if key in ("vars", *held) or not isinstance(node, h5py.Group):
            continue
        variables.extend(
            Variable(f"{key}/{sub}", f"{key}/{sub}", dataset)
            for sub, dataset in datasets_under(node, max_nesting)
        )
    return variables
