"""The messages of a SavedModel that say what its variables are, decoded from protobuf's wire
format without protobuf: ``saved_model.pb`` (``SavedModel`` -> ``MetaGraphDef`` ->
``SavedObjectGraph``), tf-keras' ``keras_metadata.pb`` (``SavedMetadata``) and the checkpoint's
``TrackableObjectGraph`` (the ``_CHECKPOINTABLE_OBJECT_GRAPH`` string tensor). Field numbers are
those of ``tensorflow/core/protobuf/{saved_model,meta_graph,saved_object_graph,
trackable_object_graph}.proto`` and ``tf_keras/protobuf/saved_metadata.proto``."""

from __future__ import annotations

from dataclasses import dataclass, field

from weightscope.formats._common.protowire import (
    LENGTH_DELIMITED,
    VARINT,
    WireError,
    fields,
    read_varint,
    signed64,
)
from weightscope.formats.tensorflow.bundle import DTYPES, UNSIZED, tensor_shape


class SavedModelError(ValueError):
    """The bytes are not a SavedModel's messages (the reader names the file)."""


@dataclass(frozen=True)
class SavedVariable:
    name: str
    dtype: str
    shape: tuple[int, ...] | None
    """None for an unknown rank; -1 for an unknown dimension."""
    trainable: bool


@dataclass
class SavedNode:
    """One ``SavedObject``: its children by local name, and what it is."""

    children: list[tuple[str, int]] = field(default_factory=list)
    kind: str = ""
    """``user_object``, ``variable``, ``function``, ``bare_concrete_function``, ``constant``,
    ``resource``, ``asset``, ``captured_tensor``, or empty."""
    identifier: str = ""
    """A user object's (``_tf_keras_layer``, ``trackable_list_wrapper``, ``optimizer``...)."""
    metadata: str = ""
    """A user object's Keras metadata (JSON), as TF <= 2.4 wrote it into the graph."""
    variable: SavedVariable | None = None
    functions: list[str] = field(default_factory=list)
    """The concrete functions of a function or bare concrete function node."""


@dataclass
class SavedModelInfo:
    tensorflow_version: str = ""
    tags: list[str] = field(default_factory=list)
    meta_graphs: int = 0
    nodes: list[SavedNode] = field(default_factory=list)
    bound_inputs: dict[str, list[int]] = field(default_factory=dict)
    """Each concrete function's captured inputs (node ids), in the order of its trailing args."""
    graph_def: memoryview | None = None
    """The first meta graph's ``GraphDef``, undecoded (the graph path reads its functions)."""
    collections: dict[str, set[str]] = field(default_factory=dict)
    """A TF1 graph's ``variables`` and ``trainable_variables`` collections: variable names."""


_KINDS = {
    4: "user_object", 5: "asset", 6: "function", 7: "variable", 8: "bare_concrete_function",
    9: "constant", 10: "resource", 12: "captured_tensor",
}  # fmt: skip


def text(value: memoryview) -> str:
    return bytes(value).decode("utf-8", "replace")


def parse_saved_model(data: bytes | memoryview) -> SavedModelInfo:
    """The first meta graph of a ``saved_model.pb``: its version, tags, object graph and graph."""
    info = SavedModelInfo()
    first: memoryview | None = None
    try:
        for number, wire, value in fields(data, 0, len(data)):
            if number == 2 and wire == LENGTH_DELIMITED:
                info.meta_graphs += 1
                if first is None:
                    first = value
        if first is None:
            raise SavedModelError("no meta graph (not a SavedModel)")
        _meta_graph(first, info)
    except WireError as exc:
        raise SavedModelError(f"malformed SavedModel message: {exc}") from exc
    return info


def _meta_graph(message: memoryview, info: SavedModelInfo) -> None:
    for number, wire, value in fields(message, 0, len(message)):
        if wire != LENGTH_DELIMITED:
            continue
        if number == 1:
            for inner, inner_wire, item in fields(value, 0, len(value)):
                if inner == 4 and inner_wire == LENGTH_DELIMITED:
                    info.tags.append(text(item))
                elif inner == 5 and inner_wire == LENGTH_DELIMITED:
                    info.tensorflow_version = text(item)
        elif number == 2:
            info.graph_def = value
        elif number == 4:
            _collection(value, info)
        elif number == 7:
            _object_graph(value, info)


VARIABLE_COLLECTIONS = ("variables", "trainable_variables")


def _collection(entry: memoryview, info: SavedModelInfo) -> None:
    """One ``collection_def`` map entry: the names of the ``VariableDef``s of the two variable
    collections (``bytes_list`` of serialized ``VariableDef``, ``variable_name`` = 1)."""
    key, value = "", None
    for number, wire, item in fields(entry, 0, len(entry)):
        if number == 1 and wire == LENGTH_DELIMITED:
            key = text(item)
        elif number == 2 and wire == LENGTH_DELIMITED:
            value = item
    if key not in VARIABLE_COLLECTIONS or value is None:
        return
    names = info.collections.setdefault(key, set())
    for number, wire, bytes_list in fields(value, 0, len(value)):
        if number != 2 or wire != LENGTH_DELIMITED:
            continue
        for inner, inner_wire, definition in fields(bytes_list, 0, len(bytes_list)):
            if inner != 1 or inner_wire != LENGTH_DELIMITED:
                continue
            for var_field, var_wire, name in fields(definition, 0, len(definition)):
                if var_field == 1 and var_wire == LENGTH_DELIMITED:
                    names.add(text(name).removesuffix(":0"))


def _object_graph(message: memoryview, info: SavedModelInfo) -> None:
    for number, wire, value in fields(message, 0, len(message)):
        if number == 1 and wire == LENGTH_DELIMITED:
            info.nodes.append(_saved_object(value))
        elif number == 2 and wire == LENGTH_DELIMITED:
            name, bound = "", []
            for inner, inner_wire, item in fields(value, 0, len(value)):
                if inner == 1 and inner_wire == LENGTH_DELIMITED:
                    name = text(item)
                elif inner == 2 and inner_wire == LENGTH_DELIMITED:
                    for fn_field, fn_wire, fn_value in fields(item, 0, len(item)):
                        if fn_field == 2:
                            bound += _int32s(fn_wire, fn_value)
            info.bound_inputs[name] = bound


def _int32s(wire: int, value: int | memoryview) -> list[int]:
    """A repeated int32 field's values, packed or not."""
    if wire == VARINT and isinstance(value, int):
        return [signed64(value)]
    if wire != LENGTH_DELIMITED or isinstance(value, int):
        return []
    found, pos = [], 0
    while pos < len(value):
        number, pos = read_varint(value, pos, len(value))
        found.append(signed64(number))
    return found


def _reference(message: memoryview) -> tuple[str, int]:
    node_id, local_name = -1, ""
    for number, wire, value in fields(message, 0, len(message)):
        if number == 1 and wire == VARINT:
            node_id = signed64(value)
        elif number == 2 and wire == LENGTH_DELIMITED:
            local_name = text(value)
    return local_name, node_id


def _saved_object(message: memoryview) -> SavedNode:
    node = SavedNode()
    for number, wire, value in fields(message, 0, len(message)):
        if wire != LENGTH_DELIMITED:
            continue
        if number == 1:
            node.children.append(_reference(value))
        elif number in _KINDS:
            node.kind = _KINDS[number]
            if number == 4:
                for inner, inner_wire, item in fields(value, 0, len(value)):
                    if inner == 1 and inner_wire == LENGTH_DELIMITED:
                        node.identifier = text(item)
                    elif inner == 3 and inner_wire == LENGTH_DELIMITED:
                        node.metadata = text(item)
            elif number == 7:
                node.variable = _variable(value)
            elif number in (6, 8):
                for inner, inner_wire, item in fields(value, 0, len(value)):
                    if inner == 1 and inner_wire == LENGTH_DELIMITED:
                        node.functions.append(text(item))
    return node


def _variable(message: memoryview) -> SavedVariable:
    dtype_number, trainable, name = 0, False, ""
    shape: tuple[int, ...] | None = ()
    for number, wire, value in fields(message, 0, len(message)):
        if number == 1 and wire == VARINT:
            dtype_number = value
        elif number == 2 and wire == LENGTH_DELIMITED:
            shape = tensor_shape(value)
        elif number == 3 and wire == VARINT:
            trainable = bool(value)
        elif number == 6 and wire == LENGTH_DELIMITED:
            name = text(value)
    dtype = DTYPES.get(dtype_number) or UNSIZED.get(dtype_number) or f"dtype {dtype_number}"
    return SavedVariable(name, dtype, shape, trainable)


@dataclass(frozen=True)
class KerasNode:
    """One node of ``keras_metadata.pb``: the object-graph node it describes and its Keras
    metadata (JSON text)."""

    node_id: int
    node_path: str
    identifier: str
    metadata: str


def parse_keras_metadata(data: bytes | memoryview) -> list[KerasNode]:
    """The nodes of tf-keras' ``SavedMetadata`` message."""
    found = []
    try:
        for number, wire, value in fields(data, 0, len(data)):
            if number != 1 or wire != LENGTH_DELIMITED:
                continue
            node_id, path, identifier, metadata = 0, "", "", ""  # proto3 omits a 0 id
            for inner, inner_wire, item in fields(value, 0, len(value)):
                if inner == 2 and inner_wire == VARINT:
                    node_id = signed64(item)
                elif inner_wire == LENGTH_DELIMITED and inner in (3, 4, 5):
                    if inner == 3:
                        path = text(item)
                    elif inner == 4:
                        identifier = text(item)
                    else:
                        metadata = text(item)
            found.append(KerasNode(node_id, path, identifier, metadata))
    except WireError as exc:
        raise SavedModelError(f"malformed keras_metadata.pb: {exc}") from exc
    return found
