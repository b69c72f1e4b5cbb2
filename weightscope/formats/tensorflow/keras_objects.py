"""The Keras layers of a SavedModel's object graph: which layer owns each variable, with the
class, config and trainable flag Keras recorded for it (in the object graph itself up to
TF 2.4, in ``keras_metadata.pb`` since).

The object graph is walked breadth-first from the root, as TensorFlow names checkpoint keys,
along the edges that are attributes (``layer_with_weights-0``, ``kernel``, ``cell``), not the
views Keras adds beside them (``variables``, ``trainable_variables``, ``keras_api``...): each
object is reached once, so a variable two layers share belongs to the first. A variable's layer
is the outermost Keras layer on its path that is not a model (a nested model's layers are
layers of their own), or, under a wrapper (``TimeDistributed``, ``Bidirectional``), the layer
the wrapper holds."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from weightscope.formats._common.json_text import load_json
from weightscope.formats.keras import catalog
from weightscope.formats.tensorflow.saved_proto import KerasNode, SavedNode
from weightscope.limits import Limits

TIME_DISTRIBUTED, BIDIRECTIONAL = "TimeDistributed", "Bidirectional"
WRAPPERS = frozenset({TIME_DISTRIBUTED, BIDIRECTIONAL})
"""As in :mod:`weightscope.formats.keras.wrappers` (not imported at load: it imports h5py)."""
MODELS = frozenset({"_tf_keras_network", "_tf_keras_model", "_tf_keras_sequential"})
METRIC = "_tf_keras_metric"
VIEWS = frozenset(
    {
        "variables", "trainable_variables", "non_trainable_variables", "weights",
        "trainable_weights", "non_trainable_weights", "keras_api", "_all_variables",
        "regularization_losses", "signatures", "_default_save_signature",
    }
)  # fmt: skip
"""Children that list objects reached elsewhere (Keras' views of its variables and layers)."""


@dataclass(frozen=True)
class KerasObject:
    node_id: int
    identifier: str
    class_name: str
    name: str
    config: dict[str, Any]
    trainable: bool

    @property
    def is_model(self) -> bool:
        return self.identifier in MODELS or self.class_name in catalog.MODEL_CLASSES


@dataclass(frozen=True)
class Owner:
    """Where a variable lies: its layer (None when no Keras layer holds it), the path of Keras
    objects to it, and its own path below the layer (``kernel``, ``cell/kernel``)."""

    layer: KerasObject | None
    chain: tuple[KerasObject, ...]
    below: tuple[str, ...]
    wrapper: KerasObject | None = None
    """The wrapper holding ``layer``, and the attribute it holds it by (``forward_layer``)."""
    held_as: str = ""
    order: tuple[int, ...] = ()
    """The layer's place in the graph, depth first (the order of the model's layers, a nested
    model's in its place)."""

    @property
    def trainable(self) -> bool:
        """False when the layer or any model or wrapper holding it is frozen."""
        return all(item.trainable for item in self.chain)

    @property
    def is_metric(self) -> bool:
        return any(item.identifier == METRIC for item in self.chain)


def keras_objects(
    nodes: Sequence[SavedNode], metadata_file: Sequence[KerasNode], limits: Limits
) -> dict[int, KerasObject]:
    """Node id -> the Keras object it is, from the metadata file or the graph's own metadata."""
    texts: dict[int, tuple[str, str]] = {}
    for node_id, node in enumerate(nodes):
        if node.kind == "user_object" and node.metadata:
            texts[node_id] = (node.identifier, node.metadata)
    for item in metadata_file:
        if 0 <= item.node_id < len(nodes) and item.metadata:
            texts[item.node_id] = (item.identifier, item.metadata)
    found = {}
    for node_id, (identifier, metadata) in texts.items():
        meta = load_json(metadata, limits, f"the Keras metadata of object {node_id}")
        if not isinstance(meta, dict) or not isinstance(meta.get("class_name"), str):
            continue
        raw = meta.get("config")
        config: dict[str, Any] = raw if isinstance(raw, dict) else {}
        name = meta.get("name") or config.get("name") or f"object-{node_id}"
        found[node_id] = KerasObject(
            node_id,
            identifier,
            meta["class_name"],
            str(name),
            config,
            meta.get("trainable", True) is not False and config.get("trainable", True) is not False,
        )
    return found


def owners(nodes: Sequence[SavedNode], objects: dict[int, KerasObject]) -> dict[int, Owner]:
    """Variable node id -> its owner, for every variable reached from the root."""
    parent: dict[int, tuple[int, str]] = {0: (-1, "")}
    order: dict[int, tuple[int, ...]] = {0: ()}
    queue = deque([0])
    found: dict[int, Owner] = {}
    while queue:
        node_id = queue.popleft()
        node = nodes[node_id]
        if node.kind == "variable":
            found[node_id] = _owner(node_id, parent, objects, order)
            continue
        for position, (local_name, child) in enumerate(node.children):
            if local_name in VIEWS or child in parent or not 0 <= child < len(nodes):
                continue
            parent[child] = (node_id, local_name)
            order[child] = (*order[node_id], position)
            queue.append(child)
    return found


def _owner(
    node_id: int,
    parent: dict[int, tuple[int, str]],
    objects: dict[int, KerasObject],
    order: dict[int, tuple[int, ...]],
) -> Owner:
    path: list[tuple[int, str]] = []  # (node, the name its parent holds it by), root first
    current = node_id
    while current != -1:
        up, local_name = parent[current]
        path.append((current, local_name))
        current = up
    path.reverse()
    chain = tuple(objects[node] for node, _ in path if node in objects)
    layers = [
        (at, objects[node])
        for at, (node, _) in enumerate(path)
        if node in objects and not objects[node].is_model
    ]
    if not layers:
        return Owner(None, chain, tuple(local_name for _, local_name in path[1:]))
    at, layer = layers[0]
    wrapper: KerasObject | None = None
    held_as = ""
    if catalog.canonical_class(layer.class_name) in WRAPPERS and len(layers) > 1:
        wrapper, (at, layer) = layer, layers[1]
        held_as = path[at][1]
    below = tuple(local_name for _, local_name in path[at + 1 :])
    return Owner(layer, chain, below, wrapper, held_as, order[path[at][0]])


def layer_name(owner: Owner) -> str:
    """The layer's name as the Keras readers give it: nested models' names before it, a
    Bidirectional's before its direction's, a TimeDistributed's instead of its layer's."""
    assert owner.layer is not None
    models = [item.name for item in owner.chain if item.is_model and item.node_id != 0]
    if owner.wrapper is None:
        return "/".join([*models, owner.layer.name])
    if catalog.canonical_class(owner.wrapper.class_name) == TIME_DISTRIBUTED:
        return "/".join([*models, owner.wrapper.name])
    return "/".join([*models, owner.wrapper.name, owner.layer.name])


def wrapper_note(owner: Owner) -> str | None:
    if owner.wrapper is None or owner.layer is None:
        return None
    from weightscope.formats.keras import wrappers  # imports h5py: only for a wrapped layer

    if catalog.canonical_class(owner.wrapper.class_name) == TIME_DISTRIBUTED:
        return wrappers.time_distributed_note(owner.wrapper.name, owner.layer.class_name)
    direction = wrappers.BACKWARD if owner.held_as.startswith("backward") else wrappers.FORWARD
    return wrappers.direction_note(direction, owner.wrapper.name)
