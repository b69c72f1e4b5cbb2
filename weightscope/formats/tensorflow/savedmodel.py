"""TensorFlow SavedModel directories (``saved_model.pb`` + ``variables/``), read without
TensorFlow.

The weights are the checkpoint bundle ``variables/variables.index`` + ``.data-*``, read lazily
by offset as :mod:`.reader` reads any bundle. What they are comes from ``saved_model.pb``
(:mod:`.saved_proto`): its object graph numbers its nodes as the checkpoint's own object graph
(``_CHECKPOINTABLE_OBJECT_GRAPH``) does, which gives each variable node its exact checkpoint
key, and records each variable's name, dtype, shape and trainable flag.

- A Keras model (tf-keras ``model.save(dir, save_format="tf")``, TF 2.x Keras): each layer's
  class, config and trainable flag from its Keras metadata (:mod:`.keras_objects`), so its
  layers have the kinds, layouts and configs the same layers have in a Keras file.
- Otherwise (Keras 3 ``model.export``, ``tf.saved_model.save`` of a ``tf.Module``): variables
  grouped into layers by their names (``conv2d/kernel``), kinds from the graph's ops where they
  use a variable (:mod:`.graph_ops`), else from names and shapes as for a checkpoint.
- Variables of no object (a TF1 SavedModel, optimizer slots) are read as the checkpoint
  reader reads a bundle: optimizer state, counters and Keras metrics listed, not counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from weightscope.errors import CorruptFileError, file_error
from weightscope.formats._common.file_region import FileRegionSource, OpenFile
from weightscope.formats._common.protowire import WireError
from weightscope.formats.keras import catalog, recurrent
from weightscope.formats.keras.initializers import declared
from weightscope.formats.keras.tensors import depthwise_groups, variable_tensors
from weightscope.formats.protocol import Match, Probe
from weightscope.formats.tensorflow import graph_ops, keras_objects, object_graph
from weightscope.formats.tensorflow import reader as checkpoint
from weightscope.formats.tensorflow.bundle import BundleEntry, BundleError, read_index
from weightscope.formats.tensorflow.saved_files import FILE_NAME, KERAS_METADATA
from weightscope.formats.tensorflow.saved_proto import (
    KerasNode,
    SavedModelError,
    SavedModelInfo,
    SavedVariable,
    parse_keras_metadata,
    parse_saved_model,
)
from weightscope.kinds import Kind
from weightscope.limits import Limits
from weightscope.model import (
    NON_TRAINABLE_ROLES,
    Layer,
    Model,
    Tensor,
)

FRAMEWORK = "tensorflow"
FORMAT = "savedmodel"
LOOKS_LIKE = "TensorFlow SavedModel"
OBJECT_GRAPH_KEY = object_graph.KEY
GRAPH_NOTE = (
    "the graph's ops were not all followed (more steps than its size allows for): kinds of "
    "variables not reached come from their names and shapes"
)
SEED_STATE = "seed_generator_state"
SEED_NOTE = "Keras 3's random seed generators' state (dropout seeds): listed, not parameters"
METRICS_KEY = "keras_api/metrics/"
"""Where tf-keras keeps its compiled metrics' state (reached only through ``keras_api``)."""

METRICS_NOTE = "Keras metric state (loss and metric accumulators): listed, not parameters"
COPIES_NOTE = (
    "variables no function of the model uses, each of the name, shape and dtype of one that "
    "is used (Keras 3's export keeps every variable a second time under _all_variables/): "
    "listed, not counted"
)


def match(probe: Probe) -> Match | None:
    """A file named ``saved_model.pb`` (a protobuf message has no magic number)."""
    if probe.is_zip or probe.path.name != FILE_NAME:
        return None
    return Match(LOOKS_LIKE, "savedmodel", probe)


def match_object(obj: Any) -> bool:
    return False


def load_object(obj: Any, limits: Limits) -> Model:
    raise TypeError("SavedModels are read from their directory")


@dataclass(frozen=True)
class Stored:
    """One variable the SavedModel's object graph holds, with its tensor in the bundle."""

    node_id: int
    variable: SavedVariable
    entry: BundleEntry
    source: FileRegionSource
    name: str


def load(match: Match, limits: Limits) -> Model:
    path = match.probe.path
    limits.check(
        "max_saved_model_bytes", match.probe.size, f"{FILE_NAME} holds {match.probe.size:,} bytes"
    )
    try:
        info = parse_saved_model(path.read_bytes())
    except SavedModelError as exc:
        raise file_error(CorruptFileError, path, str(exc), LOOKS_LIKE) from None
    inputs = [path]
    metadata_nodes: list[KerasNode] = []
    metadata_file = path.parent / KERAS_METADATA
    if metadata_file.is_file():
        size = metadata_file.stat().st_size
        limits.check("max_saved_model_bytes", size, f"{KERAS_METADATA} holds {size:,} bytes")
        try:
            metadata_nodes = parse_keras_metadata(metadata_file.read_bytes())
        except SavedModelError as exc:
            raise file_error(CorruptFileError, path, str(exc), LOOKS_LIKE) from None
        inputs.append(metadata_file)
    index = path.parent / "variables" / "variables.index"
    notes = _version_notes(info)
    if not index.is_file():
        if info.collections.get("variables") or any(n.kind == "variable" for n in info.nodes):
            raise file_error(
                CorruptFileError,
                path,
                "its variables/variables.index (the SavedModel's weights) is missing",
                LOOKS_LIKE,
            )
        notes.append("no variables/ directory: the SavedModel holds no variables")
        return Model(path, FORMAT, FRAMEWORK, info.tensorflow_version or None, [], notes=notes,
                     inputs=inputs)  # fmt: skip
    try:
        header, entries = read_index(index.read_bytes())
    except BundleError as exc:
        problem = f"variables/variables.index: {exc}"
        raise file_error(CorruptFileError, path, problem, LOOKS_LIKE) from None
    shards: dict[int, OpenFile] = {}
    try:
        for entry in entries:
            wanted = (entry.sized and not entry.sliced) or entry.name == OBJECT_GRAPH_KEY
            if wanted and entry.shard not in shards:
                shards[entry.shard] = checkpoint.open_shard(index, entry.shard, header.num_shards)
        layers, more = _layers(path, index, info, metadata_nodes, entries, shards,
                               header.byteorder, limits)  # fmt: skip
    except BaseException:
        for file in shards.values():
            file.close()
        raise
    model = Model(
        path,
        FORMAT,
        FRAMEWORK,
        info.tensorflow_version or None,
        layers,
        notes=notes + more,
        inputs=[*inputs, index, *(file.path for file in shards.values())],
    )
    for file in shards.values():
        model._resources.callback(file.close)
    return model


def _version_notes(info: SavedModelInfo) -> list[str]:
    notes = []
    if info.meta_graphs > 1:
        notes.append(f"{info.meta_graphs} meta graphs: the first read (tags {info.tags})")
    return notes


def _root_lists(info: SavedModelInfo) -> set[int] | None:
    """The variables the root lists as trainable, when it lists them beside its non-trainable
    ones (a Keras model; Keras 3's export): a frozen layer's variables are there among the
    non-trainable, though each variable records itself trainable (its flag when built)."""
    if not info.nodes:
        return None
    lists = {name: child for name, child in info.nodes[0].children
             if name in ("trainable_variables", "non_trainable_variables")}  # fmt: skip
    if len(lists) != 2 or not all(0 <= child < len(info.nodes) for child in lists.values()):
        return None
    return {node for _, node in info.nodes[lists["trainable_variables"]].children}


def _object_keys(
    path: Path, entries: list[BundleEntry], shards: dict[int, OpenFile]
) -> dict[int, str]:
    """Node id -> checkpoint key, from the bundle's serialized object graph (none in a TF1
    SavedModel)."""
    entry = next((e for e in entries if e.name == OBJECT_GRAPH_KEY), None)
    if entry is None:
        return {}
    file = shards[entry.shard]
    if entry.offset + entry.size > file.size:
        problem = f"the object graph's bytes lie past the end of {file.path.name}"
        raise file_error(CorruptFileError, path, problem, LOOKS_LIKE)
    try:
        return object_graph.variable_keys(
            object_graph.scalar_string(file.read(entry.offset, entry.size))
        )
    except WireError as exc:
        problem = f"malformed checkpoint object graph: {exc}"
        raise file_error(CorruptFileError, path, problem, LOOKS_LIKE) from None


def _layers(
    path: Path,
    index: Path,
    info: SavedModelInfo,
    metadata_nodes: list[KerasNode],
    entries: list[BundleEntry],
    shards: dict[int, OpenFile],
    byteorder: str,
    limits: Limits,
) -> tuple[list[Layer], list[str]]:
    keys = _object_keys(path, entries, shards)
    by_key = {entry.name: entry for entry in entries}
    stored: dict[int, Stored] = {}
    trainable = _root_lists(info)
    for node_id, node in enumerate(info.nodes):
        key = keys.get(node_id)
        entry = by_key.get(key) if key else None
        if node.variable is None or entry is None or not entry.sized or entry.sliced:
            continue
        source = checkpoint.entry_source(index, entry, shards[entry.shard], byteorder)
        name = node.variable.name.removesuffix(":0") or checkpoint.variable_path(entry.name)
        variable = node.variable
        if trainable is not None and variable.trainable and node_id not in trainable:
            variable = replace(variable, trainable=False)
        stored[node_id] = Stored(node_id, variable, entry, source, name)
    bound = {node for inputs in info.bound_inputs.values() for node in inputs}
    same: dict[str, list[Stored]] = {}
    for item in stored.values():
        same.setdefault(item.name, []).append(item)
    for alike in same.values():
        called = [item for item in alike if item.node_id in bound]
        for item in alike:
            if len(alike) > 1 and not (len(called) == 1 and item is called[0]):
                # variables of one name (tf.Variable's default "Variable", or Keras 3's second
                # copies): the checkpoint key tells them apart; one a function uses keeps it
                stored[item.node_id] = Stored(item.node_id, item.variable, item.entry,
                    item.source, checkpoint.variable_path(item.entry.name))  # fmt: skip
    objects = keras_objects.keras_objects(info.nodes, metadata_nodes, limits)
    owners = keras_objects.owners(info.nodes, objects, limits) if info.nodes else {}
    layers: list[Layer] = []
    by_layer: dict[int, list[tuple[keras_objects.Owner, Stored]]] = {}
    metrics: list[Tensor] = []
    free: list[Stored] = []
    used: set[str] = set()
    for node_id, item in stored.items():
        owner = owners.get(node_id)
        if (owner is not None and owner.is_metric) or item.entry.name.startswith(METRICS_KEY):
            metrics.append(_plain(item, item.name, counted=False))
        elif owner is not None and owner.layer is not None:
            by_layer.setdefault(owner.layer.node_id, []).append((owner, item))
        elif _left_to_bundle(item):
            continue
        else:
            free.append(item)
        used.add(item.entry.name)
    for members in sorted(by_layer.values(), key=lambda members: members[0][0].order):
        layers.append(_keras_layer(members))
    found_notes: list[str] = []
    free_layers, copies = _free_layers(index, info, free, shards, byteorder, found_notes)
    layers += free_layers
    if copies:
        layers.append(Layer("(copies)", Kind.UNKNOWN, copies, note=COPIES_NOTE))
    if metrics:
        layers.append(Layer("metrics", Kind.UNKNOWN, _distinct(metrics), note=METRICS_NOTE))
    rest = [entry for entry in entries if entry.name not in used and entry.name != OBJECT_GRAPH_KEY]
    more_layers, notes = checkpoint.bundle_layers(index, rest, shards, byteorder, {})
    _tf1_trainable(info, more_layers)
    return layers + more_layers, found_notes + notes


def _tf1_trainable(info: SavedModelInfo, layers: list[Layer]) -> None:
    """A TF1 graph's variables are trainable as its ``trainable_variables`` collection says."""
    every = info.collections.get("variables", set())
    trainable = info.collections.get("trainable_variables")
    if trainable is None:
        return
    for layer in layers:
        for tensor in layer.tensors:
            if tensor.trainable is None and tensor.name in every | trainable:
                tensor.trainable = tensor.name in trainable


def _left_to_bundle(item: Stored) -> bool:
    """Optimizer state and counters: read as the checkpoint reader reads them (listed, not
    counted)."""
    path = checkpoint.variable_path(item.entry.name)
    return path in checkpoint.COUNTERS or checkpoint.is_optimizer_state(path, frozenset())


def _distinct(tensors: list[Tensor]) -> list[Tensor]:
    """Tensors of one layer with distinct roles (a role two share gets its tensor's name)."""
    seen: dict[str, int] = {}
    for tensor in tensors:
        seen[tensor.role] = seen.get(tensor.role, 0) + 1
    for tensor in tensors:
        if seen[tensor.role] > 1:
            tensor.role = tensor.name
    return tensors


def _plain(item: Stored, role: str, counted: bool = True) -> Tensor:
    return Tensor(
        name=item.name,
        role=role,
        native_shape=item.entry.shape,
        native_layout=None,
        dtype=item.entry.dtype,
        trainable=item.variable.trainable,
        source=item.source,
        counted=counted,
    )


def _keras_layer(members: list[tuple[keras_objects.Owner, Stored]]) -> Layer:
    """A layer of a Keras model from its variables and its Keras metadata: kind, layouts,
    groups and declared initializers as the Keras readers give the same layer."""
    owner = members[0][0]
    assert owner.layer is not None
    notes = [note for note in (keras_objects.wrapper_note(owner),) if note]
    roles = _roles([o.below for o, _ in members])
    items = [
        (role, item, held.trainable) for role, (held, item) in zip(roles, members, strict=True)
    ]
    return _build(keras_objects.layer_name(owner), owner.layer.class_name, dict(owner.layer.config),
                  items, notes, inferred=False)  # fmt: skip


def _build(
    name: str,
    stated_class: str,
    config: dict[str, Any],
    items: list[tuple[str, Stored, bool]],
    notes: list[str],
    inferred: bool,
    groups: int | None = None,
) -> Layer:
    """A layer of a Keras class from its variables (role, variable, whether what holds it is
    trainable): kind and layouts from the layout table, recurrent biases split, groups from the
    config (or ``groups``), depthwise groups from the kernel."""
    class_name = catalog.canonical_class(stated_class)
    layer_type = catalog.layer_type(class_name)
    kind = layer_type.kind if layer_type is not None else "unknown"
    roles = [role for role, _, _ in items]
    if layer_type is not None:
        roles = [catalog.normalise_role(kind, role) for role in roles]
        if len(set(roles)) != len(roles):
            notes.append("two variables share a role: no canonical form")
            layer_type, kind = None, "unknown"
    shapes = {role: item.entry.shape for role, (_, item, _) in zip(roles, items, strict=True)}
    if layer_type is not None and recurrent.is_recurrent(class_name):
        problem = recurrent.shape_problem(class_name or "", shapes)
        if problem is not None:
            notes.append(f"{problem}: no canonical form")
            layer_type, kind = None, "unknown"
        else:
            notes += recurrent.notes(class_name or "", config, shapes)
    if layer_type is None:
        notes.append(f"Keras class {stated_class} has no canonical form in weightscope")
    groups = groups or int(config.get("groups", 1) or 1)

    def declare(part_role: str, shape: tuple[int, ...]) -> Any:
        return declared(config, kind, part_role, shape)

    tensors: list[Tensor] = []
    for role, (_, item, held) in zip(roles, items, strict=True):
        trainable = role not in NON_TRAINABLE_ROLES and item.variable.trainable and held
        tensors += variable_tensors(
            item.name,
            role,
            item.entry.shape,
            item.entry.dtype,
            item.source,
            trainable,
            layer_type,
            class_name,
            None if inferred else declare,
        )
    groups = depthwise_groups(tensors, groups)
    return Layer(
        name,
        Kind(kind),
        tensors,
        config=config,
        groups=groups,
        inferred=inferred,
        class_name=stated_class,
        note="; ".join(notes) or None,
        framework="keras" if layer_type is not None else None,
    )


def _roles(paths: list[tuple[str, ...]]) -> list[str]:
    """The shortest distinct tails of the variables' paths below their layer (``kernel`` for
    ``cell/kernel``)."""
    depth = 1
    while True:
        roles = ["/".join(p[-depth:]) or "var" for p in paths]
        if len(set(roles)) == len(roles) or depth >= max(len(p) for p in paths):
            return roles
        depth += 1


def _free_layers(
    index: Path,
    info: SavedModelInfo,
    free: list[Stored],
    shards: dict[int, OpenFile],
    byteorder: str,
    notes: list[str],
) -> tuple[list[Layer], list[Tensor]]:
    """Layers of the variables no Keras layer holds, grouped by their names (``dense/kernel``:
    layer ``dense``), their kinds from the graph's ops where one uses them; and the second
    copies of variables the functions use."""
    bound = {node for inputs in info.bound_inputs.values() for node in inputs}
    used_names = {
        (s.variable.name, s.entry.shape, s.entry.dtype) for s in free if s.node_id in bound
    }
    copies: list[Tensor] = []
    groups: dict[str, list[Stored]] = {}
    seeds: list[Tensor] = []
    for item in free:
        if (
            bound
            and item.node_id not in bound
            and (item.variable.name, item.entry.shape, item.entry.dtype) in used_names
        ):
            copies.append(_plain(item, item.variable.name or item.name, counted=False))
            continue
        if _short(item.variable.name) == SEED_STATE:
            owner = item.variable.name.removesuffix(":0").rpartition("/")[0]
            seeds.append(_plain(item, owner or SEED_STATE, counted=False))
            continue
        parent, _, _ = item.variable.name.removesuffix(":0").rpartition("/")
        groups.setdefault(parent or ROOT, []).append(item)
    uses, complete = graph_ops.variable_uses(info) if groups else ({}, True)
    if not complete:
        notes.append(GRAPH_NOTE)
    layers = []
    for name, members in groups.items():
        layers += _free_group(index, name, members, shards, byteorder, uses)
    if seeds:
        layers.append(Layer("seed_generators", Kind.UNKNOWN, _distinct(seeds), note=SEED_NOTE))
    return layers, _distinct(copies)


def _free_group(
    index: Path,
    name: str,
    members: list[Stored],
    shards: dict[int, OpenFile],
    byteorder: str,
    uses: dict[int, list[graph_ops.Use]],
) -> list[Layer]:
    """The layers of a group of variables named alike: those the graph's ops recognise, the
    others (or all, where no op tells) recognised from names and shapes as in a checkpoint."""
    by_node = {item.node_id: item for item in members}
    candidates = [
        graph_ops.Member(item.node_id, _short(item.variable.name), item.entry.shape)
        for item in members
    ]
    if any(m.role == "recurrent_kernel" for m in candidates):
        # a recurrent cell (its kernels are MatMuls too): its shapes tell its class, and the
        # layer is named without the cell (``lstm/lstm_cell`` -> ``lstm``)
        owner, _, cell = name.rpartition("/")
        return [_by_names(index, owner if owner and cell.endswith("cell") else name, members,
                          shards, byteorder)]  # fmt: skip
    found = graph_ops.recognise(candidates, uses)
    layers = []
    placed: set[int] = set()
    for recognised in found:
        items = [(role, by_node[m.node_id], True)
                 for role, m in zip(recognised.roles, recognised.members, strict=True)]  # fmt: skip
        whole = len(found) == 1 and len(recognised.members) == len(members)
        # a group of several layers' variables (a tf.Module's own): each named by its kernel
        layer_name = name if whole and name != ROOT else by_node[recognised.members[0].node_id].name
        layers.append(_build(layer_name, recognised.class_name, {}, items, [recognised.note],
                             inferred=True, groups=recognised.groups))  # fmt: skip
        placed.update(m.node_id for m in recognised.members)
    rest = [item for item in members if item.node_id not in placed]
    if rest:
        layers.append(_by_names(index, name, rest, shards, byteorder))
    return layers


ROOT = "(root)"


def _short(name: str) -> str:
    return name.removesuffix(":0").rsplit("/", 1)[-1]


def _by_names(
    index: Path, name: str, members: list[Stored], shards: dict[int, OpenFile], byteorder: str
) -> Layer:
    """Variables the ops do not tell, recognised from names and shapes as the checkpoint
    reader recognises them (roles the last part of each variable's name)."""
    pairs = [(_short(s.name), s.entry) for s in members]
    saved_names = {s.entry.name: s.variable.name for s in members}
    layer = checkpoint.variables_layer(index, name, pairs, shards, byteorder, saved_names)
    by_key = {s.entry.name: s for s in members}
    for tensor in layer.tensors:
        item = by_key[tensor.name]
        tensor.name = item.name
        if tensor.trainable is None:
            tensor.trainable = item.variable.trainable
    _distinct(layer.tensors)  # tf.Variable's default name, "Variable", may be given twice
    return layer
