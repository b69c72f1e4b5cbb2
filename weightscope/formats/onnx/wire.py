"""An ONNX file's protobuf wire format, walked in place so that tensor data is never parsed.

``onnx.load`` copies every weight into memory (and ``raw_data`` once more into numpy). Instead,
the file is mapped and its messages are walked tag by tag; each tensor's bulk field (``raw_data``,
or packed ``float_data`` / ``double_data``) is cut out and its position recorded. What remains,
the *skeleton* (graph, nodes, attributes, tensor names and dims), is small and is parsed with
onnx's own protobuf classes. A cut tensor is marked in the skeleton by an ``external_data`` entry
under a key made for this read alone, so no file can forge one.

Field numbers come from onnx's message descriptors, not from constants written here.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import onnx

from weightscope.limits import DEFAULT, LimitExceeded

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5

SMALL_BULK_BYTES = 4096
"""Bulk fields shorter than this stay in the skeleton (shape constants, scalars)."""

BULK_FIELDS = ("raw_data", "float_data", "double_data")


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message (the reader names the file)."""


def _numbers(message: Any) -> dict[str, int]:
    return {field.name: field.number for field in message.DESCRIPTOR.fields}


MODEL = _numbers(onnx.ModelProto)
GRAPH = _numbers(onnx.GraphProto)
NODE = _numbers(onnx.NodeProto)
ATTRIBUTE = _numbers(onnx.AttributeProto)
TENSOR = _numbers(onnx.TensorProto)
SPARSE = _numbers(onnx.SparseTensorProto)
ENTRY = _numbers(onnx.StringStringEntryProto)


@dataclass(frozen=True)
class Field:
    number: int
    wire_type: int
    start: int
    """Offset of the field's tag."""
    value_start: int
    """Offset of the value (after the length prefix of a length-delimited field)."""
    end: int


@dataclass(frozen=True)
class BulkRegion:
    """Where a cut-out bulk field lies in the file."""

    field: str
    offset: int
    length: int


def read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    start = pos
    while True:
        if pos >= end:
            raise WireError(f"truncated number at byte {start}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise WireError(f"malformed number at byte {start}")


def fields(buf: Any, start: int, end: int) -> Iterator[Field]:
    """The fields of the message occupying ``buf[start:end]``, in file order."""
    pos = start
    while pos < end:
        tag_start = pos
        tag, pos = read_varint(buf, pos, end)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise WireError(f"field number 0 at byte {tag_start}")
        value_start = pos
        if wire_type == VARINT:
            _, pos = read_varint(buf, pos, end)
        elif wire_type == FIXED64:
            pos += 8
        elif wire_type == FIXED32:
            pos += 4
        elif wire_type == LENGTH_DELIMITED:
            length, value_start = read_varint(buf, pos, end)
            pos = value_start + length
        else:
            raise WireError(
                f"unsupported wire type {wire_type} for field {number} at byte {tag_start}"
            )
        if pos > end:
            raise WireError(
                f"field {number} at byte {tag_start} runs past the end of its message "
                f"(byte {end}; is the file truncated?)"
            )
        yield Field(number, wire_type, tag_start, value_start, pos)


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return encode_varint(number << 3 | LENGTH_DELIMITED) + encode_varint(len(payload)) + payload


class Skeleton:
    """Builds the skeleton of the model in ``buf`` and remembers the regions it cut out."""

    def __init__(self, buf: Any, max_graph_depth: int = DEFAULT.max_graph_depth) -> None:
        self.buf = buf
        self.max_graph_depth = max_graph_depth
        """Most graphs nested in one another (the main graph counts as one): deeper subgraphs
        (``If``/``Loop``/``Scan`` bodies) are refused."""
        self.key = f"weightscope-inline-{secrets.token_hex(8)}"
        """The ``external_data`` key marking a cut tensor; unguessable, so never in a file."""
        self.regions: list[BulkRegion] = []

    def model(self) -> bytes:
        rewritten = self._rewrite(0, len(self.buf), {MODEL["graph"]: self._graph}, 0)
        return bytes(self.buf[0 : len(self.buf)]) if rewritten is None else rewritten

    def region(self, tensor: onnx.TensorProto) -> BulkRegion | None:
        """The cut-out region of a skeleton tensor, or None if its data is in the skeleton."""
        for entry in tensor.external_data:
            if entry.key == self.key:
                return self.regions[int(entry.value)]
        return None

    # Each rewriter returns the new bytes of the message, or None when it is unchanged (so that
    # most nodes are copied as one slice).
    def _rewrite(self, start: int, end: int, children: dict[int, Any], depth: int) -> bytes | None:
        out = bytearray()
        changed = False
        for field in fields(self.buf, start, end):
            rewrite = children.get(field.number)
            new = None
            if rewrite is not None and field.wire_type == LENGTH_DELIMITED:
                new = rewrite(field.value_start, field.end, depth)
            if new is None:
                out += self.buf[field.start : field.end]
            else:
                changed = True
                out += _length_delimited(field.number, new)
        return bytes(out) if changed else None

    def _graph(self, start: int, end: int, depth: int) -> bytes | None:
        if depth >= self.max_graph_depth:
            limit = self.max_graph_depth
            raise LimitExceeded(
                "max_graph_depth", limit, depth + 1, f"graphs nested more than {limit} deep"
            )
        children = {
            GRAPH["node"]: self._node,
            GRAPH["initializer"]: self._tensor,
            GRAPH["sparse_initializer"]: self._sparse,
        }
        return self._rewrite(start, end, children, depth + 1)

    def _node(self, start: int, end: int, depth: int) -> bytes | None:
        return self._rewrite(start, end, {NODE["attribute"]: self._attribute}, depth)

    def _attribute(self, start: int, end: int, depth: int) -> bytes | None:
        children = {
            ATTRIBUTE["t"]: self._tensor,
            ATTRIBUTE["tensors"]: self._tensor,
            ATTRIBUTE["g"]: self._graph,
            ATTRIBUTE["graphs"]: self._graph,
            ATTRIBUTE["sparse_tensor"]: self._sparse,
            ATTRIBUTE["sparse_tensors"]: self._sparse,
        }
        return self._rewrite(start, end, children, depth)

    def _sparse(self, start: int, end: int, depth: int) -> bytes | None:
        children = {SPARSE["values"]: self._tensor, SPARSE["indices"]: self._tensor}
        return self._rewrite(start, end, children, depth)

    def _tensor(self, start: int, end: int, depth: int) -> bytes | None:
        bulk: list[Field] = []
        for field in fields(self.buf, start, end):
            if field.wire_type == LENGTH_DELIMITED and field.number in _BULK_NUMBERS:
                bulk.append(field)
        # Cut only a single large bulk field: several (repeated packed runs, or raw_data given
        # twice) are left for protobuf to merge by its own rules.
        if len(bulk) != 1 or bulk[0].end - bulk[0].value_start < SMALL_BULK_BYTES:
            return None
        cut = bulk[0]
        out = bytearray()
        for field in fields(self.buf, start, end):
            if field.start != cut.start:
                out += self.buf[field.start : field.end]
        index = len(self.regions)
        self.regions.append(
            BulkRegion(_BULK_NUMBERS[cut.number], cut.value_start, cut.end - cut.value_start)
        )
        entry = _length_delimited(ENTRY["key"], self.key.encode()) + _length_delimited(
            ENTRY["value"], str(index).encode()
        )
        out += _length_delimited(TENSOR["external_data"], entry)
        return bytes(out)


_BULK_NUMBERS = {TENSOR[name]: name for name in BULK_FIELDS}


def looks_like_model(head: bytes) -> bool:
    """Whether ``head`` starts like a serialized ModelProto: its first fields are ModelProto
    fields of the right wire type, ``ir_version`` first (every exporter writes it first)."""
    if not head or head[0] != MODEL["ir_version"] << 3 | VARINT:
        return False
    wire_types = {
        MODEL["ir_version"]: VARINT,
        MODEL["producer_name"]: LENGTH_DELIMITED,
        MODEL["producer_version"]: LENGTH_DELIMITED,
        MODEL["domain"]: LENGTH_DELIMITED,
        MODEL["model_version"]: VARINT,
        MODEL["doc_string"]: LENGTH_DELIMITED,
        MODEL["graph"]: LENGTH_DELIMITED,
        MODEL["opset_import"]: LENGTH_DELIMITED,
    }
    seen = 0
    pos = 0
    try:
        while pos < len(head) and seen < 3:
            tag, after = read_varint(head, pos, len(head))
            number, wire_type = tag >> 3, tag & 7
            if wire_types.get(number) != wire_type:
                return False
            if number == MODEL["ir_version"] and seen == 0:
                version, _ = read_varint(head, after, len(head))
                if not 1 <= version <= 100:
                    return False
            seen += 1
            if wire_type != VARINT or number == MODEL["graph"]:
                return True  # a string or the graph: enough evidence, and it may be long
            _, pos = read_varint(head, after, len(head))
    except WireError:
        return seen > 0
    return seen > 0
