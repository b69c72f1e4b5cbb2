"""Keras adapter: legacy ``.h5`` (full model or weights only, Keras 1-3), ``.keras`` zips and
``.weights.h5`` stores, read with h5py alone. Never imports tensorflow or keras and never
deserializes layer code (a ``Lambda`` is just a name here)."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py

from weightscope.adapters import _keras_catalog as catalog
from weightscope.adapters._hdf5 import (
    HDF5_SIGNATURE,
    FileSlice,
    H5DatasetSource,
    string_list_attr,
    text_attr,
)
from weightscope.errors import CorruptFileError, UnsupportedFormatError, file_error
from weightscope.model import NON_TRAINABLE_ROLES, Layer, Model, Tensor

FRAMEWORK = "keras"
V3_WEIGHTS_MEMBER = "model.weights.h5"


def sniff(path: Path, head: bytes) -> bool:
    """HDF5 files (Keras' legacy and v3 weight stores) and ``.keras`` zips."""
    if head.startswith(HDF5_SIGNATURE):
        return True
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError):
            return False
        return V3_WEIGHTS_MEMBER in names or "config.json" in names
    return False


def load(path: Path) -> Model:
    with open(path, "rb") as handle:
        is_zip = handle.read(4) == b"PK\x03\x04"
    if is_zip:
        return _load_keras_zip(path)
    h5 = h5py.File(path, "r")
    try:
        model = _load_hdf5(path, h5)
    except BaseException:
        h5.close()
        raise
    model._resources.callback(h5.close)
    return model


# ---------------------------------------------------------------------------------------------
# file-level dispatch


def _load_hdf5(path: Path, h5: h5py.File) -> Model:
    legacy_root = h5.get("model_weights", h5)
    if isinstance(legacy_root, h5py.Group) and string_list_attr(legacy_root, "layer_names"):
        return _load_legacy(path, h5, legacy_root)
    if "layers" in h5 or "_layer_checkpoint_dependencies" in h5:
        return _load_v3_store(path, h5, config=None, fmt="keras-weights-h5", version=None)
    raise file_error(
        UnsupportedFormatError,
        path,
        "HDF5 file without Keras structure (no model_weights, layer_names or layers group)",
    )


def _load_keras_zip(path: Path) -> Model:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as exc:
        raise file_error(CorruptFileError, path, f"damaged zip archive: {exc}") from exc
    with archive:
        names = set(archive.namelist())
        if V3_WEIGHTS_MEMBER not in names:
            raise file_error(
                UnsupportedFormatError,
                path,
                f"zip archive without {V3_WEIGHTS_MEMBER}: not a .keras file",
            )
        config = _json_member(path, archive, "config.json") if "config.json" in names else None
        metadata = _json_member(path, archive, "metadata.json") if "metadata.json" in names else {}
        info = archive.getinfo(V3_WEIGHTS_MEMBER)
        handle = _open_member(path, archive, info)
    try:
        h5 = h5py.File(handle, "r")
    except OSError as exc:
        handle.close()
        raise file_error(
            CorruptFileError, path, f"{V3_WEIGHTS_MEMBER} is not readable HDF5: {exc}"
        ) from exc
    try:
        version = metadata.get("keras_version") if isinstance(metadata, dict) else None
        model = _load_v3_store(path, h5, config=config, fmt="keras-v3", version=version)
    except BaseException:
        h5.close()
        handle.close()
        raise
    model._resources.callback(handle.close)
    model._resources.callback(h5.close)
    return model


def _open_member(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    """A seekable handle on a zip member: the stored bytes in place, or a temporary extraction."""
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as raw:
            raw.seek(info.header_offset)
            header = raw.read(30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            raise file_error(CorruptFileError, path, f"bad local header for {info.filename}")
        name_len = int.from_bytes(header[26:28], "little")
        extra_len = int.from_bytes(header[28:30], "little")
        start = info.header_offset + 30 + name_len + extra_len
        return FileSlice(path, start, info.file_size)
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned open, closed with the model
    try:
        with archive.open(info) as member:
            shutil.copyfileobj(member, spool, 1 << 20)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        spool.close()
        raise file_error(CorruptFileError, path, f"cannot extract {info.filename}: {exc}") from exc
    spool.seek(0)
    return spool


def _json_member(path: Path, archive: zipfile.ZipFile, name: str) -> Any:
    try:
        return json.loads(archive.read(name))
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        raise file_error(CorruptFileError, path, f"{name} is not valid JSON: {exc}") from exc


def _json_attr(path: Path, h5: h5py.File, name: str) -> Any:
    text = text_attr(h5, name)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise file_error(
            CorruptFileError, path, f"attribute {name} is not valid JSON: {exc}"
        ) from exc


# ---------------------------------------------------------------------------------------------
# model configs


@dataclass(frozen=True)
class _LayerConfig:
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

    def children(self) -> list[_LayerConfig]:
        return _sublayer_configs(self.config, self.trainable)


def _sublayer_configs(model_config: Any, trainable: bool = True) -> list[_LayerConfig]:
    """Layer configs of a model config's ``layers`` (Keras 2.0 Sequential kept a bare list)."""
    if (
        isinstance(model_config, dict)
        and "class_name" in model_config
        and "layers" not in model_config
    ):
        model_config = model_config.get("config", {})
    entries = model_config if isinstance(model_config, list) else model_config.get("layers", [])
    result = []
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict):
            continue
        raw_config = entry.get("config")
        config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
        name = entry.get("name") or config.get("name")
        if not isinstance(name, str):
            continue
        class_name = str(entry.get("class_name", "?"))
        layer_trainable = trainable and config.get("trainable", True) is not False
        result.append(_LayerConfig(name, class_name, config, layer_trainable))
    return result


def _root_trainable(model_config: Any) -> bool:
    if isinstance(model_config, dict) and isinstance(model_config.get("config"), dict):
        return model_config["config"].get("trainable", True) is not False
    return True


# ---------------------------------------------------------------------------------------------
# building layers


@dataclass(frozen=True)
class _Variable:
    stored_name: str
    role: str | None
    dataset: h5py.Dataset


def _build_layer(
    path: Path,
    name: str,
    layer_config: _LayerConfig | None,
    variables: list[_Variable],
    hint_names: Iterable[str] = (),
) -> Layer:
    if layer_config is not None:
        class_name: str | None = catalog.canonical_class(layer_config.class_name)
        inferred, note = False, None
    else:
        shapes = {
            catalog.normalise_role("", v.role): v.dataset.shape
            for v in variables
            if v.role is not None
        }
        guess = catalog.infer_class([*hint_names, name], shapes)
        class_name, inferred, note = guess.class_name, True, guess.note
    layer_type = catalog.layer_type(class_name)
    config = dict(layer_config.config) if layer_config else {}
    kind = layer_type.kind if layer_type else "unknown"
    if layer_type is None and layer_config is not None:
        note = f"Keras class {layer_config.class_name} has no canonical form in weightscope"

    if layer_type is not None and any(v.role is None for v in variables):
        positional = catalog.positional_roles(
            class_name or "", config if layer_config else None, len(variables)
        )
        if len(positional) == len(variables):
            ambiguity = catalog.ambiguous_roles(
                class_name or "", config if layer_config else None, len(variables)
            )
            if ambiguity:
                note = f"{note}; {ambiguity}" if note else ambiguity
            variables = [
                _Variable(v.stored_name, role, v.dataset)
                for v, role in zip(variables, positional, strict=True)
            ]
        else:
            kind, layer_type = "unknown", None
            note = f"{len(variables)} variables where {class_name} keeps {len(positional)}"

    groups = int(config.get("groups", 1) or 1)
    roles: list[str] = _unique_roles([v.role or f"var{i}" for i, v in enumerate(variables)])
    tensors = []
    for role, variable in zip(roles, variables, strict=True):
        if layer_type is not None:
            role = catalog.normalise_role(kind, role)
        shape = tuple(int(s) for s in variable.dataset.shape)
        layout = _layout_for(layer_type, role, shape)
        tensor_groups = 1
        if layout is not None and layout.endswith("IM"):
            tensor_groups = groups = shape[-2]  # depthwise: one group per input channel
        source = H5DatasetSource(variable.dataset, path)
        tensors.append(
            Tensor(
                name=variable.stored_name,
                role=role,
                native_shape=shape,
                native_layout=layout,
                dtype=source.dtype_name,
                trainable=_trainable(role, layer_config, layer_type),
                source=source,
                groups=tensor_groups,
            )
        )
    return Layer(
        name=name,
        kind=kind,
        tensors=tensors,
        config=config,
        groups=groups,
        inferred=inferred,
        class_name=layer_config.class_name if layer_config else class_name,
        note=note,
    )


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


def _layout_for(
    layer_type: catalog.KerasLayerType | None, role: str, shape: tuple[int, ...]
) -> str | None:
    if layer_type is None:
        return None
    if role in catalog.VECTOR_ROLES:
        return "C" if len(shape) == 1 else None
    layout = layer_type.kernel_layouts.get(role)
    return layout if layout is not None and len(layout) == len(shape) else None


def _trainable(
    role: str, layer_config: _LayerConfig | None, layer_type: catalog.KerasLayerType | None
) -> bool | None:
    if role in NON_TRAINABLE_ROLES:
        return False
    if layer_config is None or layer_type is None:
        return None  # a weights-only file cannot say whether a layer was frozen
    return layer_config.trainable


# ---------------------------------------------------------------------------------------------
# legacy HDF5: model.save("x.h5") and save_weights("x.h5")


def _load_legacy(path: Path, h5: h5py.File, root: h5py.Group) -> Model:
    model_config = _json_attr(path, h5, "model_config")
    configs = (
        {c.name: c for c in _sublayer_configs(model_config, _root_trainable(model_config))}
        if model_config
        else {}
    )
    layers: list[Layer] = []
    weightless: list[str] = []
    for name in string_list_attr(root, "layer_names") or []:
        group = root.get(name)
        if not isinstance(group, h5py.Group):
            raise file_error(
                CorruptFileError, path, f"layer_names lists {name!r} but there is no such group"
            )
        variables = [
            _Variable(weight, None, _dataset(path, group, weight))
            for weight in string_list_attr(group, "weight_names") or []
        ]
        if not variables:
            weightless.append(name)
            continue
        variables = [_Variable(v.stored_name, v.stored_name, v.dataset) for v in variables]
        layer_config = configs.get(name)
        if layer_config is not None and layer_config.is_model:
            layers.extend(_split_nested(path, name, layer_config, variables))
        elif layer_config is None:
            layers.extend(_split_by_owner(path, name, variables))
        else:
            layers.append(_build_layer(path, name, layer_config, variables))
    version = text_attr(root, "keras_version") or text_attr(h5, "keras_version")
    return Model(
        source=path,
        format="keras-h5" if model_config else "keras-h5-weights",
        framework=FRAMEWORK,
        framework_version=version,
        layers=layers,
        weightless_layers=weightless,
    )


def _dataset(path: Path, group: h5py.Group, name: str) -> h5py.Dataset:
    node = group.get(name)
    if not isinstance(node, h5py.Dataset):
        raise file_error(
            CorruptFileError,
            path,
            f"weight_names of {group.name} lists {name!r} but there is no such dataset",
        )
    return node


def _split_by_owner(path: Path, name: str, variables: list[_Variable]) -> list[Layer]:
    """Without a config, a group whose weights name several owners (``conv2d/kernel:0``,
    ``batch_normalization/gamma:0``) is a nested model: one layer per owner, in stored order."""
    owners: dict[str, list[_Variable]] = {}
    for variable in variables:
        parts = variable.stored_name.split("/")
        owners.setdefault(parts[-2] if len(parts) > 1 else name, []).append(variable)
    if len(owners) == 1:
        owner = next(iter(owners))
        return [_build_layer(path, name, None, variables, hint_names=[owner])]
    return [
        _build_layer(path, f"{name}/{owner}", None, owned, hint_names=[owner])
        for owner, owned in owners.items()
    ]


def _leaves(config: _LayerConfig, prefix: str) -> list[tuple[str, _LayerConfig]]:
    result = []
    for child in config.children():
        if child.is_model:
            result.extend(_leaves(child, f"{prefix}{child.name}/"))
        else:
            result.append((f"{prefix}{child.name}", child))
    return result


def _split_nested(
    path: Path, name: str, model_config: _LayerConfig, variables: list[_Variable]
) -> list[Layer]:
    """Split a nested model's flat weight list among its own layers, by the layer name in each
    weight's name (``conv2d/kernel:0`` in Keras 2, ``inner/conv2d/kernel`` in Keras 3)."""
    leaves = _leaves(model_config, f"{name}/")
    by_leaf_name: dict[str, list[tuple[str, _LayerConfig]]] = {}
    for leaf_path, leaf in leaves:
        by_leaf_name.setdefault(leaf.name, []).append((leaf_path, leaf))
    assigned: dict[str, list[_Variable]] = {}
    orphans: dict[str, list[_Variable]] = {}
    for variable in variables:
        owner = _owner_name(variable.stored_name, by_leaf_name)
        if owner is None:
            prefix = variable.stored_name.rsplit("/", 1)[0] if "/" in variable.stored_name else "?"
            orphans.setdefault(f"{name}/{prefix}", []).append(variable)
        else:
            assigned.setdefault(owner, []).append(variable)
    layers = [
        _build_layer(path, leaf_path, leaf, assigned[leaf_path])
        for leaf_path, leaf in leaves
        if leaf_path in assigned
    ]
    for orphan_name, orphan_vars in orphans.items():
        layer = _build_layer(path, orphan_name, None, orphan_vars)
        layer.note = f"weights of nested model {name!r} that match none of its layers; " + (
            layer.note or ""
        )
        layers.append(layer)
    return layers


def _owner_name(stored_name: str, by_leaf_name: Mapping[str, list[tuple[str, Any]]]) -> str | None:
    parts = stored_name.split("/")[:-1]
    for part in reversed(parts):
        candidate = part
        while True:
            if candidate in by_leaf_name:
                leaf_path = by_leaf_name[candidate][0][0]
                return leaf_path
            # Keras 2.0-era files suffix scopes of re-built layers: conv2d_1_1 for layer conv2d_1
            stripped = re.sub(r"_\d+$", "", candidate)
            if stripped == candidate:
                break
            candidate = stripped
    return None


# ---------------------------------------------------------------------------------------------
# Keras 3 weights store: model.weights.h5 inside .keras, or .weights.h5


def _load_v3_store(path: Path, h5: h5py.File, config: Any, fmt: str, version: str | None) -> Model:
    layers_group = h5.get("layers")
    if not isinstance(layers_group, h5py.Group):
        raise file_error(
            UnsupportedFormatError,
            path,
            "Keras weights store without a 'layers' group (pre-3.0 store?)",
        )
    layers: list[Layer] = []
    weightless: list[str] = []
    children = _sublayer_configs(config, _root_trainable(config)) if config else None
    _walk_store(path, layers_group, children, "", layers, weightless)
    return Model(
        source=path,
        format=fmt,
        framework=FRAMEWORK,
        framework_version=version,
        layers=layers,
        weightless_layers=weightless,
    )


def _walk_store(
    path: Path,
    layers_group: h5py.Group,
    configs: list[_LayerConfig] | None,
    prefix: str,
    layers: list[Layer],
    weightless: list[str],
) -> None:
    for key, group, layer_config in _match_store_groups(layers_group, configs):
        stored_name = (
            text_attr(group["vars"], "name") if isinstance(group.get("vars"), h5py.Group) else None
        )
        name = prefix + (layer_config.name if layer_config else stored_name or key)
        nested = group.get("layers")
        if isinstance(nested, h5py.Group):
            sub_configs = layer_config.children() if layer_config else None
            _walk_store(path, nested, sub_configs, f"{name}/", layers, weightless)
        variables = _store_variables(group)
        if variables:
            layers.append(_build_layer(path, name, layer_config, variables, hint_names=[key]))
        elif not isinstance(nested, h5py.Group):
            weightless.append(name)


def _match_store_groups(
    layers_group: h5py.Group, configs: list[_LayerConfig] | None
) -> list[tuple[str, h5py.Group, _LayerConfig | None]]:
    """Pair each stored layer group with its config, in model order.

    The store names groups by class (``conv2d``, ``conv2d_1``, ...) in list order; since Keras 3.6
    ``vars`` also carries the layer's own name, which is used first."""
    groups = {k: g for k, g in layers_group.items() if isinstance(g, h5py.Group)}
    if not configs:
        return [
            (k, groups[k], None) for k in sorted(groups, key=lambda k: _storage_order(k, groups[k]))
        ]
    by_name = {}
    for key, group in groups.items():
        vars_group = group.get("vars")
        if isinstance(vars_group, h5py.Group):
            stored = text_attr(vars_group, "name")
            if stored:
                by_name[stored] = key
    expected: dict[str, int] = {}
    ordered: list[tuple[str, h5py.Group, _LayerConfig | None]] = []
    used: set[str] = set()
    for layer_config in configs:
        base = catalog.snake_case(layer_config.class_name)
        seen = expected.get(base, 0)
        expected[base] = seen + 1
        key = by_name.get(layer_config.name)
        if key is None:
            key = base if seen == 0 else f"{base}_{seen}"
        if key in groups and key not in used:
            used.add(key)
            ordered.append((key, groups[key], layer_config))
    for key in sorted(set(groups) - used, key=_natural_key):
        ordered.append((key, groups[key], None))
    return ordered


def _storage_order(key: str, group: h5py.Group) -> tuple[int, str, int]:
    """Without a config the model order is not recorded. Keras writes variables in model order,
    so the file address of a layer's first dataset recovers it (group headers are not reliable:
    HDF5 reuses freed space for them). Falls back to natural name order."""
    addresses: list[int] = []

    def visit(_: str, obj: Any) -> None:
        if isinstance(obj, h5py.Dataset):
            addresses.append(_address(obj))

    group.visititems(visit)
    return (min(addresses) if addresses else _address(group), *_natural_key(key))


def _address(obj: h5py.HLObject) -> int:
    try:
        return int(h5py.h5o.get_info(obj.id).addr)
    except (AttributeError, OSError, ValueError):
        return 0


def _natural_key(name: str) -> tuple[str, int]:
    match = re.fullmatch(r"(.*?)(?:_(\d+))?", name)
    assert match is not None
    return match.group(1), int(match.group(2) or 0)


def _store_variables(group: h5py.Group) -> list[_Variable]:
    """Numbered ``vars/i`` of a layer (role by position), then anything nested deeper that is not
    a sub-model (e.g. an RNN ``cell/vars``), named by its path."""
    variables: list[_Variable] = []
    vars_group = group.get("vars")
    if isinstance(vars_group, h5py.Group):
        for key in sorted(
            vars_group, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k)
        ):
            node = vars_group[key]
            if isinstance(node, h5py.Dataset):
                variables.append(_Variable(f"vars/{key}", None, node))
    for key, node in group.items():
        if key in ("vars", "layers") or not isinstance(node, h5py.Group):
            continue
        found: list[_Variable] = []

        def visit(sub: str, obj: Any, prefix: str = key, out: list[_Variable] = found) -> None:
            if isinstance(obj, h5py.Dataset):
                out.append(_Variable(f"{prefix}/{sub}", f"{prefix}/{sub}", obj))

        node.visititems(visit)
        variables.extend(found)
    return variables
