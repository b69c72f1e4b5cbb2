"""The ``_CHECKPOINTABLE_OBJECT_GRAPH`` of an object-based checkpoint: for a SavedModel, the
bundle key of each object's variable (its node ids are the SavedModel's); for a checkpoint,
the name each variable had when it was saved (``SerializedTensor.full_name``, e.g.
``conv2d_transpose_1/kernel``), which carries its layer's name where the checkpoint key
carries only a position (``model/layer_with_weights-3/kernel``). Keras' default layer names
say the layer's class (``conv2d_transpose``, ``depthwise_conv2d``), which its shapes cannot
always tell. The graph is a serialized ``TrackableObjectGraph``
(``tensorflow/core/protobuf/trackable_object_graph.proto``): nodes = 1, each with
attributes = 2 (``name`` = 1, ``full_name`` = 2, ``checkpoint_key`` = 3). It is stored as a
scalar string tensor: the string's length (a varint), a 4-byte checksum of that length, then
its bytes."""

from __future__ import annotations

from dataclasses import dataclass

from weightscope.formats._common.protowire import LENGTH_DELIMITED, WireError, fields, read_varint

KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
VARIABLE_VALUE = "VARIABLE_VALUE"
LENGTH_CHECKSUM_BYTES = 4


def scalar_string(data: bytes | memoryview) -> memoryview:
    """The bytes of a scalar string tensor as a bundle stores it (``data`` is its whole
    entry); ``WireError`` when the length does not account for every byte."""
    length, pos = read_varint(data, 0, len(data))
    pos += LENGTH_CHECKSUM_BYTES
    if pos + length != len(data):
        raise WireError(f"a string of {length:,} bytes in an entry of {len(data):,}")
    return memoryview(data)[pos:]


@dataclass(frozen=True)
class Attribute:
    """One ``SerializedTensor`` of a node: which value it is (``VARIABLE_VALUE``), the name
    the variable was saved under, and the key of its tensor in the bundle."""

    node: int
    name: str
    full_name: str
    checkpoint_key: str


def attributes(graph: bytes | memoryview) -> list[Attribute]:
    """Every node's attributes, nodes numbered in order (a SavedModel's object graph numbers
    its nodes as this one); ``WireError`` when the graph does not decode."""
    found: list[Attribute] = []
    node_id = 0
    for number, wire, node in fields(graph, 0, len(graph)):
        if number != 1 or wire != LENGTH_DELIMITED:
            continue
        for inner, inner_wire, attribute in fields(node, 0, len(node)):
            if inner != 2 or inner_wire != LENGTH_DELIMITED:
                continue
            texts = {1: "", 2: "", 3: ""}
            for field, field_wire, value in fields(attribute, 0, len(attribute)):
                if field in texts and field_wire == LENGTH_DELIMITED:
                    texts[field] = bytes(value).decode("utf-8", "replace")
            found.append(Attribute(node_id, texts[1], texts[2], texts[3]))
        node_id += 1
    return found


def full_names(graph: bytes | memoryview) -> dict[str, str]:
    """Each variable's checkpoint key -> the name it was saved under."""
    return {
        a.checkpoint_key: a.full_name for a in attributes(graph) if a.full_name and a.checkpoint_key
    }


def variable_keys(graph: bytes | memoryview) -> dict[int, str]:
    """Node id -> the checkpoint key of its ``VARIABLE_VALUE``."""
    return {
        a.node: a.checkpoint_key
        for a in attributes(graph)
        if a.name == VARIABLE_VALUE and a.checkpoint_key
    }
