"""Mutations of ONNX protobuf at the wire level, guided by onnx's own message descriptors: the
file is parsed into a tree of fields, one field is changed, and the tree is written back with
every enclosing length recomputed, so the damage sits deep in a well-framed file. Changes: the
wire type of a tag, a length past the end or huge, a field of the wrong type (dims as a string),
values out of range (data_type, dims, data_location), fields dropped or repeated, external data
offsets, lengths and locations that lie, and graphs nested far too deep."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .raw import INTERESTING

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5


@dataclass
class Field:
    number: int
    wire: int
    value: Any
    """int (varint and fixed), bytes (LEN), or list[Field] (LEN holding a known message)."""
    descriptor: Any = None
    owner: str = ""
    """Name of the message type the field belongs to."""
    declared: int | None = None
    """A length to write instead of the true one (LEN only)."""
    key: bytes | None = None
    """Key bytes to write instead of the true ones (a changed wire type)."""


def varint(value: int) -> bytes:
    value %= 1 << 64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("bad varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def parse(data: bytes, message: Any) -> list[Field]:
    """Fields of ``data``, a serialized ``message`` (a protobuf Descriptor); sub-messages parsed
    too. Raises ValueError on anything malformed."""
    fields = []
    at = 0
    while at < len(data):
        key, at = read_varint(data, at)
        number, wire = key >> 3, key & 7
        descriptor = message.fields_by_number.get(number) if message else None
        if wire == VARINT:
            value, at = read_varint(data, at)
        elif wire == FIXED64:
            value, at = int.from_bytes(data[at : at + 8], "little"), at + 8
        elif wire == FIXED32:
            value, at = int.from_bytes(data[at : at + 4], "little"), at + 4
        elif wire == LEN:
            length, at = read_varint(data, at)
            value, at = data[at : at + length], at + length
            if descriptor is not None and descriptor.message_type is not None:
                value = parse(value, descriptor.message_type)
        else:
            raise ValueError(f"wire type {wire}")
        if at > len(data):
            raise ValueError("cut short")
        fields.append(Field(number, wire, value, descriptor, message.name if message else ""))
    return fields


def serialize(fields: list[Field]) -> bytes:
    out = bytearray()
    for field in fields:
        out += field.key if field.key is not None else varint(field.number << 3 | field.wire)
        value = field.value
        if isinstance(value, list):
            value = serialize(value)
        if isinstance(value, bytes):
            out += varint(len(value) if field.declared is None else field.declared) + value
        elif field.wire == FIXED64:
            out += (value % 2**64).to_bytes(8, "little")
        elif field.wire == FIXED32:
            out += (value % 2**32).to_bytes(4, "little")
        else:
            out += varint(value)
    return bytes(out)


def walk(fields: list[Field]) -> list[tuple[list[Field], int]]:
    """Every field of the tree, as (the list holding it, its index)."""
    found = []
    for index, field in enumerate(fields):
        found.append((fields, index))
        if isinstance(field.value, list):
            found += walk(field.value)
    return found


def name_of(field: Field) -> str:
    return f"{field.owner}.{field.descriptor.name if field.descriptor else field.number}"


TENSOR_FIELDS = {
    "TensorProto.dims", "TensorProto.data_type", "TensorProto.raw_data",
    "TensorProto.float_data", "TensorProto.external_data", "TensorProto.data_location",
    "TensorProto.name", "StringStringEntryProto.value", "StringStringEntryProto.key",
    "TensorShapeProto.Dimension.dim_value", "Dimension.dim_value", "AttributeProto.type",
    "AttributeProto.i", "AttributeProto.ints", "NodeProto.input", "NodeProto.op_type",
    "ModelProto.ir_version", "OperatorSetIdProto.version",
}  # fmt: skip

EXTERNAL_LIES = {
    "offset": ["-1", "1" + "0" * 13, "abc", "", "0x10", "1e3", "18446744073709551616", "99999",
               " 4", "4.0", "-0"],
    "length": ["-1", "0", "1" + "0" * 13, "abc", "", "18446744073709551616", "99999", "3",
               "9223372036854775807"],
    "location": ["../weights.bin", "/etc/hostname", "weights.bin/", "missing.bin", "",
                 "weights.bin\x00x", ".", "model.onnx", "WEIGHTS.BIN", "./weights.bin",
                 "sub/../weights.bin", "/dev/zero"],
    "checksum": ["0"],
}  # fmt: skip

DATA_TYPES = [0, 8, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 99, 9999, 2**31,
              2**64 - 1]  # fmt: skip


def deep_graph_node(depth: int) -> bytes:
    """A NodeProto ``If`` whose then_branch holds an ``If`` whose then_branch ... ``depth``
    graphs deep (serialized inside out)."""
    node = varint(4 << 3 | 2) + varint(2) + b"If"  # op_type
    for _ in range(depth):
        graph = varint(1 << 3 | 2) + varint(len(node)) + node  # GraphProto.node
        attribute = (
            varint(1 << 3 | 2) + varint(11) + b"then_branch"  # name
            + varint(20 << 3 | 0) + varint(5)  # type GRAPH
            + varint(6 << 3 | 2) + varint(len(graph)) + graph  # g
        )  # fmt: skip
        node = varint(4 << 3 | 2) + varint(2) + b"If" + varint(5 << 3 | 2)
        node += varint(len(attribute)) + attribute
    return node


def mutate(data: bytes, message: Any, rng: random.Random) -> tuple[bytes, str]:
    """One change to the serialized ``message`` ``data`` (an onnx ModelProto)."""
    tree = parse(data, message)
    places = walk(tree)
    focus = [p for p in places if name_of(p[0][p[1]]) in TENSOR_FIELDS]
    holder, index = rng.choice(focus) if focus and rng.random() < 0.6 else rng.choice(places)
    field = holder[index]
    name = name_of(field)
    choice = rng.random()
    if name == "StringStringEntryProto.value" and choice < 0.8:
        key_field = next((f for f in holder if f.number == 1), None)
        key = key_field.value.decode("utf-8", "replace") if key_field else "offset"
        lie = rng.choice(EXTERNAL_LIES.get(key, EXTERNAL_LIES["offset"]))
        field.value = lie.encode()
        note = f"external {key} -> {lie!r}"
    elif name == "TensorProto.data_type" and choice < 0.7:
        field.value = rng.choice(DATA_TYPES)
        note = f"data_type -> {field.value}"
    elif name == "TensorProto.dims" and choice < 0.7:
        if rng.random() < 0.3:
            field.wire, field.value = LEN, rng.choice([b"3", b"abc", b"\xff" * 3])
            note = f"dims -> string {field.value!r}"
        else:
            field.value = rng.choice([0, 10**12, 2**63, 2**64 - 1, 2**64 - 3, 2**31, 2**32 + 3])
            note = f"dims -> {field.value}"
    elif name == "TensorProto.data_location" and choice < 0.7:
        field.value = rng.choice([0, 1, 2, 99, 2**64 - 1])
        note = f"data_location -> {field.value}"
    elif choice < 0.15:
        wire = rng.choice([w for w in range(8) if w != field.wire])
        field.key = varint(field.number << 3 | wire)
        note = f"wire type of {name} {field.wire} -> {wire}"
    elif choice < 0.3 and field.wire == LEN:
        size = len(serialize([field])) if isinstance(field.value, list) else len(field.value)
        lie = rng.choice([size + 1, size + 1000, 2**31, 2**32 + size, 2**63, 2**64 - 1, 0])
        field.declared = lie
        note = f"length of {name} {size} -> {lie}"
    elif choice < 0.4:
        if field.wire == LEN:
            field.wire, field.value = VARINT, rng.choice([0, 5, 2**64 - 1])
        else:
            field.wire, field.value = LEN, rng.choice([b"", b"abc", b"\x08\x01", b"\xff" * 9])
        note = f"{name} given the wrong type"
    elif choice < 0.6:
        if isinstance(field.value, int):
            field.value = rng.choice(INTERESTING)
        elif isinstance(field.value, bytes):
            field.value = rng.choice(
                [b"", field.value[: len(field.value) // 2], field.value * 2, b"\x1b[2J",
                 b"\xff\xfe", rng.randbytes(len(field.value)), b"x" * 70_000]
            )  # fmt: skip
        else:
            holder[index] = Field(field.number, LEN, b"", field.descriptor, field.owner)
        note = f"value of {name} changed"
    elif choice < 0.7:
        del holder[index]
        note = f"{name} removed"
    elif choice < 0.8:
        holder.insert(index, Field(field.number, field.wire, field.value, field.descriptor,
                                   field.owner))  # fmt: skip
        note = f"{name} repeated"
    elif choice < 0.9:
        graph = next(f for f in tree if f.number == 7)  # ModelProto.graph
        depth = rng.choice([31, 32, 33, 100, 2000])
        assert isinstance(graph.value, list)
        graph.value.insert(0, Field(1, LEN, deep_graph_node(depth), None, "GraphProto"))
        note = f"graph nested {depth} deep"
    else:
        number = rng.choice([99, 536870911, field.number])
        wire = rng.choice([VARINT, LEN])
        value = 7 if wire == VARINT else b"junk"
        holder.insert(index, Field(number, wire, value, None, field.owner))
        note = f"unknown field {number} in {field.owner}"
    return serialize(tree), "protobuf: " + note
