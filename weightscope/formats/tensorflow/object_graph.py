"""The ``_CHECKPOINTABLE_OBJECT_GRAPH`` of an object-based checkpoint, read only for one thing:
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

from weightscope.formats._common.protowire import LENGTH_DELIMITED, WireError, fields, read_varint

KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
LENGTH_CHECKSUM_BYTES = 4


def scalar_string(data: bytes) -> bytes:
    """The bytes of a scalar string tensor as a bundle stores it (``data`` is its whole
    entry); ``WireError`` when the length does not account for every byte."""
    length, pos = read_varint(data, 0, len(data))
    pos += LENGTH_CHECKSUM_BYTES
    if pos + length != len(data):
        raise WireError(f"a string of {length:,} bytes in an entry of {len(data):,}")
    return data[pos:]


def full_names(graph: bytes) -> dict[str, str]:
    """Each variable's checkpoint key -> the name it was saved under; ``WireError`` when the
    graph does not decode."""
    names: dict[str, str] = {}
    for number, wire, node in fields(graph, 0, len(graph)):
        if number != 1 or wire != LENGTH_DELIMITED:
            continue
        for inner, inner_wire, attribute in fields(node, 0, len(node)):
            if inner != 2 or inner_wire != LENGTH_DELIMITED:
                continue
            full_name = key = None
            for field, field_wire, value in fields(attribute, 0, len(attribute)):
                if field_wire != LENGTH_DELIMITED:
                    continue
                if field == 2:
                    full_name = bytes(value).decode("utf-8", "replace")
                elif field == 3:
                    key = bytes(value).decode("utf-8", "replace")
            if full_name and key:
                names[key] = full_name
    return names
