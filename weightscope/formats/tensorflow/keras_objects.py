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
from weightscope.limits import LimitExceeded, Limits

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
    """Where a variable lies: its layer (None when no Keras layer holds it), the names of the
    models holding that layer, and the variable's own path below the layer (``kernel``,
    ``cell/kernel``: its last components)."""

    layer: KerasObject | None
    models: tuple[str, ...]
    below: tuple[str, ...]
    trainable: bool
    """False when the layer or any model or wrapper holding it is frozen."""
    is_metric: bool
    wrapper: KerasObject | None = None
    """The wrapper holding ``layer``, and the attribute it holds it by (``forward_layer``)."""
    held_as: str = ""
    order: int = 0
    """The layer's place in the graph, depth first (the order of the model's layers, a nested
    model's in its place)."""


MAX_BELOW = 8
"""Path components kept below a layer (roles need the last one or two; a hostile graph may
nest objects without end)."""


@dataclass(frozen=True)
class _Path:
    """What the walk carries down from the root to each object: the models and (at most two)
    layers it passed, with the names below each layer."""

    models: tuple[str, ...] = ()
    layers: tuple[tuple[KerasObject, str, int], ...] = ()
    """(layer, the name its parent holds it by, its depth-first place)."""
    below: tuple[tuple[str, ...], ...] = ()
    trainable: bool = True
    is_metric: bool = False

    def down(self, item: KerasObject | None, local_name: str, order: int, limit: int) -> _Path:
        below = tuple((*names, local_name)[-MAX_BELOW:] for names in self.below)
        models, layers = self.models, self.layers
        if item is not None and item.is_model and item.node_id != 0:
            models = (*models, item.name)
            if len(models) > limit:
                raise LimitExceeded(
                    "max_nesting", limit, len(models), f"models nested more than {limit} deep"
                )
        elif item is not None and not item.is_model and len(layers) < 2:
            layers = (*layers, (item, local_name, order))
            below = (*below, ())
        return _Path(
            models,
            layers,
            below,
            self.trainable and (item is None or item.trainable),
            self.is_metric or (item is not None and item.identifier == METRIC),
        )

    def owner(self) -> Owner:
        if not self.layers:
            return Owner(None, self.models, (), self.trainable, self.is_metric)
        layer, _, order = self.layers[0]
        at = 0
        wrapper, held_as = None, ""
        if catalog.canonical_class(layer.class_name) in WRAPPERS and len(self.layers) > 1:
            wrapper = layer
            layer, held_as, order = self.layers[1]
            at = 1
        return Owner(layer, self.models, self.below[at], self.trainable, self.is_metric,
                     wrapper, held_as, order)  # fmt: skip


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


def owners(
    nodes: Sequence[SavedNode], objects: dict[int, KerasObject], limits: Limits
) -> dict[int, Owner]:
    """Variable node id -> its owner, for every variable reached from the root: the graph
    walked breadth first (each object reached once, by its shortest path), then that tree
    depth first, carrying what each path passed."""
    tree: dict[int, list[tuple[str, int]]] = {0: []}
    queue = deque([0])
    while queue:
        node_id = queue.popleft()
        if nodes[node_id].kind == "variable":
            continue
        for local_name, child in nodes[node_id].children:
            if local_name in VIEWS or child in tree or not 0 <= child < len(nodes):
                continue
            tree[child] = []
            tree[node_id].append((local_name, child))
            queue.append(child)
    preorder: dict[int, int] = {}
    pending = [0]
    while pending:  # the tree's depth-first order: a model's layers, a nested model's in place
        node_id = pending.pop()
        preorder[node_id] = len(preorder)
        pending.extend(child for _, child in reversed(tree[node_id]))
    found: dict[int, Owner] = {}
    stack = [(0, _Path().down(objects.get(0), "", 0, limits.max_nesting))]
    while stack:
        node_id, path = stack.pop()
        if nodes[node_id].kind == "variable":
            found[node_id] = path.owner()
            continue
        for local_name, child in tree[node_id]:
            item = objects.get(child)
            stack.append((child, path.down(item, local_name, preorder[child], limits.max_nesting)))
    return found


def layer_name(owner: Owner) -> str:
    """The layer's name as the Keras readers give it: nested models' names before it, a
    Bidirectional's before its direction's, a TimeDistributed's instead of its layer's."""
    assert owner.layer is not None
    models = list(owner.models)
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
