"""An ONNX file's protobuf wire format, decoded by weightscope itself: reading a file imports
neither onnx nor protobuf, and tensor data is never parsed.

``onnx.load`` copies every weight into memory (and ``raw_data`` once more into numpy). Instead,
the file is mapped and its messages are decoded tag by tag into the small classes of ``proto``,
which lists the fields the reader uses with their numbers from ``onnx.proto``; every other field
is stepped over, its framing checked. A tensor's bulk field (``raw_data``, or packed
``float_data`` / ``double_data``) of ``SMALL_BULK_BYTES`` or more, when it is the tensor's only
one, is not read: its place in the file goes into the tensor's ``region`` and its data is read by
offset when asked for. What is decoded (graph, nodes, attributes, names, dims, small constants)
is small. A live ``ModelProto`` is serialised (``serialise``) and decoded from those bytes.

Protobuf's rules are kept: the last value of a singular field wins and a message given twice is
merged with the first; repeated numbers may come packed or one by one; a field of an unknown
number or an unexpected wire type is skipped; a number outside a closed enum leaves its field
unset. Every length is checked against the message holding it, and graphs nested deeper than
``max_graph_depth`` are refused.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from weightscope.formats._common.protowire import (
    FIXED32,
    FIXED64,
    LENGTH_DELIMITED,
    VARINT,
    WireError,
    read_varint,
)
from weightscope.formats.onnx.proto import (
    BYTES,
    CLASSES,
    DOUBLE,
    ENUM,
    ENUMS,
    FLOAT,
    INT32,
    INT64,
    MESSAGE,
    SCHEMA,
    STRING,
    UINT64,
    BulkRegion,
    Field,
    GraphProto,
    Message,
    ModelProto,
)
from weightscope.limits import DEFAULT, LimitExceeded

SMALL_BULK_BYTES = 4096
"""Bulk fields shorter than this are read with the rest (shape constants, scalars)."""

BULK_FIELDS = ("raw_data", "float_data", "double_data")


MODEL = {field.name: field.number for field in SCHEMA["ModelProto"]}

_WIRE_TYPE = {INT32: VARINT, INT64: VARINT, UINT64: VARINT, ENUM: VARINT, FLOAT: FIXED32,
              DOUBLE: FIXED64}  # fmt: skip
"""The wire type of one value of each numeric kind (a repeated one may also come packed)."""
_ENUM_VALUES = {name: frozenset(values.values()) for name, values in ENUMS.items()}
_FIELDS_BY_NAME: dict[type[Message], dict[str, Field]] = {
    cls: {field.name: field for field in SCHEMA[name]} for name, cls in CLASSES.items()
}

# What the decoder does with a field, by its tag (number and wire type): a tag of no entry is
# stepped over (an unknown field, or a known one of an unexpected wire type).
MESSAGE_ONE, MESSAGE_MANY, TEXT_ONE, TEXT_MANY, BYTES_ONE, BYTES_MANY, BULK, NUMBER = range(8)


def _actions(name: str) -> dict[int, tuple[int, Field]]:
    actions: dict[int, tuple[int, Field]] = {}
    for field in SCHEMA[name]:
        delimited = field.number << 3 | LENGTH_DELIMITED
        if field.kind == MESSAGE:
            actions[delimited] = (MESSAGE_MANY if field.repeated else MESSAGE_ONE, field)
        elif field.kind in (STRING, BYTES):
            if name == "TensorProto" and field.name in BULK_FIELDS:
                actions[delimited] = (BULK, field)
            elif field.kind == STRING:
                actions[delimited] = (TEXT_MANY if field.repeated else TEXT_ONE, field)
            else:
                actions[delimited] = (BYTES_MANY if field.repeated else BYTES_ONE, field)
        else:
            action = BULK if name == "TensorProto" and field.name in BULK_FIELDS else NUMBER
            actions[field.number << 3 | _WIRE_TYPE[field.kind]] = (action, field)
            if field.repeated:
                actions[delimited] = (action, field)  # packed
    return actions


_ACTIONS: dict[type[Message], dict[int, tuple[int, Field]]] = {
    cls: _actions(name) for name, cls in CLASSES.items()
}
_NUMPY = {INT32: np.int32, INT64: np.int64, UINT64: np.uint64, FLOAT: np.float32,
          DOUBLE: np.float64}  # fmt: skip


def _int64(value: int) -> int:
    return value - (1 << 64) if value >> 63 else value


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value


def _text(raw: Any) -> Any:
    """A string field: text, or bytes where it is not valid UTF-8 (as protobuf hands it out)."""
    try:
        return str(raw, "utf-8")
    except UnicodeDecodeError:
        return bytes(raw)


def packed_varints(data: Any, at: int, block: int = 1 << 20) -> np.ndarray:
    """The varints filling ``data`` (a packed repeated field whose value starts at byte ``at``
    of the file), as uint64, decoded with numpy ``block`` values at a time (so that what is
    held besides the result stays about its size)."""
    raw = np.frombuffer(data, np.uint8)
    if raw.size == 0:
        return np.zeros(0, np.uint64)
    if raw[-1] & 0x80:
        raise WireError(f"truncated number in the packed field at byte {at}")
    ends = np.flatnonzero(raw < 0x80)
    values = np.empty(ends.size, np.uint64)
    for first in range(0, ends.size, block):
        last = ends[first : first + block]
        starts = np.empty_like(last)
        starts[0] = ends[first - 1] + 1 if first else 0
        starts[1:] = last[:-1] + 1
        lengths = last - starts + 1
        longest = int(lengths.max())
        if longest > 10:
            raise WireError(f"malformed number in the packed field at byte {at}")
        decoded = np.zeros(last.size, np.uint64)
        for k in range(longest):
            has = lengths > k
            septets = (raw[starts[has] + k] & 0x7F).astype(np.uint64)
            decoded[has] |= septets << np.uint64(7 * k)
        values[first : first + last.size] = decoded
    return values


class Decoder:
    """Decodes the ModelProto in ``buf`` (a mapped file, or a live proto's serialisation).

    ``cut_bulk``: leave large bulk fields in ``buf`` (a file, read again by offset) rather than
    decode them; when False they are decoded as views of ``buf``, which must then stay alive
    (a ``memoryview`` of bytes: numpy keeps it so)."""

    def __init__(
        self, buf: Any, *, cut_bulk: bool, max_graph_depth: int = DEFAULT.max_graph_depth
    ) -> None:
        self.buf = buf
        self.cut_bulk = cut_bulk
        self.max_graph_depth = max_graph_depth
        """Most graphs nested in one another (the main graph counts as one): deeper subgraphs
        (``If``/``Loop``/``Scan`` bodies) are refused."""

    def model(self) -> ModelProto:
        model = self._message(ModelProto, [(0, len(self.buf))], 0)
        assert isinstance(model, ModelProto)
        return model

    def _message(self, cls: type[Message], spans: list[tuple[int, int]], depth: int) -> Message:
        """The message of type ``cls`` held in the byte ranges ``spans`` (several when a
        singular message field is given more than once: protobuf merges them, which is decoding
        their concatenation). ``depth``: the graphs enclosing it."""
        if cls is GraphProto:
            if depth >= self.max_graph_depth:
                limit = self.max_graph_depth
                raise LimitExceeded(
                    "max_graph_depth", limit, depth + 1, f"graphs nested more than {limit} deep"
                )
            depth += 1
        buf = self.buf
        actions = _ACTIONS[cls]
        values: dict[str, Any] = {}
        lists: dict[str, list[Any]] = {}
        """Repeated messages and strings, in file order."""
        numbers: dict[str, list[Any]] = {}
        """Repeated numbers: runs (arrays, or lists of values given one by one), in order."""
        merged: dict[str, list[tuple[int, int]]] = {}
        """Singular messages: where each occurrence lies."""
        bulk: list[tuple[Field, int, int, int, int]] = []
        """A tensor's bulk fields: (field, wire type, value, value start, end), decided on at the
        end."""
        for start, end in spans:
            pos = start
            while pos < end:
                tag_start = pos
                tag = buf[pos]
                if tag < 0x80:
                    pos += 1
                else:
                    tag, pos = read_varint(buf, pos, end)
                if tag < 8 or tag >> 32:
                    raise WireError(f"field number {tag >> 3} at byte {tag_start}")
                wire = tag & 7
                value = 0
                if wire == LENGTH_DELIMITED:
                    if pos < end and buf[pos] < 0x80:
                        value_start = pos + 1
                        pos = value_start + buf[pos]
                    else:
                        length, value_start = read_varint(buf, pos, end)
                        pos = value_start + length
                elif wire == VARINT:
                    value_start = pos
                    if pos < end and buf[pos] < 0x80:
                        value = buf[pos]
                        pos += 1
                    else:
                        value, pos = read_varint(buf, pos, end)
                elif wire == FIXED32:
                    value_start = pos
                    pos += 4
                elif wire == FIXED64:
                    value_start = pos
                    pos += 8
                else:
                    raise WireError(
                        f"unsupported wire type {wire} for field {tag >> 3} at byte {tag_start}"
                    )
                if pos > end:
                    raise WireError(
                        f"field {tag >> 3} at byte {tag_start} runs past the end of its message "
                        f"(byte {end}; is the file truncated?)"
                    )
                action = actions.get(tag)
                if action is None:
                    continue  # a field the reader does not use, or of an unexpected type
                what, field = action
                if what == TEXT_MANY:
                    lists.setdefault(field.name, []).append(_text(buf[value_start:pos]))
                elif what == TEXT_ONE:
                    values[field.name] = _text(buf[value_start:pos])
                elif what == MESSAGE_MANY:
                    assert field.message is not None
                    message = self._message(CLASSES[field.message], [(value_start, pos)], depth)
                    lists.setdefault(field.name, []).append(message)
                elif what == MESSAGE_ONE:
                    merged.setdefault(field.name, []).append((value_start, pos))
                elif what == NUMBER:
                    self._number(field, wire, value, value_start, pos, values, numbers)
                elif what == BULK:
                    bulk.append((field, wire, value, value_start, pos))
                elif what == BYTES_ONE:
                    values[field.name] = bytes(buf[value_start:pos])
                else:
                    lists.setdefault(field.name, []).append(bytes(buf[value_start:pos]))
        for field, wire, value, value_start, end in bulk:
            if (
                self.cut_bulk
                and len(bulk) == 1
                and wire == LENGTH_DELIMITED
                and end - value_start >= SMALL_BULK_BYTES
            ):
                values["region"] = BulkRegion(field.name, value_start, end - value_start)
            elif field.name == "raw_data":
                values["raw_data"] = buf[value_start:end]
            else:
                self._number(field, wire, value, value_start, end, values, numbers)
        if merged:
            by_name = _FIELDS_BY_NAME[cls]
            for name, spans_of in merged.items():
                message_type = by_name[name].message
                assert message_type is not None
                values[name] = self._message(CLASSES[message_type], spans_of, depth)
        if lists:
            values.update(lists)
        if numbers:
            by_name = _FIELDS_BY_NAME[cls]
            for name, runs in numbers.items():
                values[name] = _join(by_name[name], runs)
        message = cls.__new__(cls)
        message.__dict__.update(values)
        return message

    def _number(
        self,
        field: Field,
        wire: int,
        value: int,
        start: int,
        end: int,
        values: dict[str, Any],
        numbers: dict[str, list[Any]],
    ) -> None:
        """A numeric field: one value of its own wire type, or a packed run of a repeated one."""
        kind = field.kind
        if wire == LENGTH_DELIMITED:
            numbers.setdefault(field.name, []).append(self._packed(field, start, end))
            return
        if kind == FLOAT:
            item: Any = struct.unpack_from("<f", self.buf, start)[0]
        elif kind == DOUBLE:
            item = struct.unpack_from("<d", self.buf, start)[0]
        elif kind == INT64:
            item = _int64(value)
        elif kind == INT32:
            item = _int32(value)
        elif kind == ENUM:
            item = _int32(value)
            assert field.message is not None
            if item not in _ENUM_VALUES[field.message]:
                return  # a closed enum: an unknown number leaves the field unset
        else:
            item = value
        if not field.repeated:
            values[field.name] = item
            return
        runs = numbers.setdefault(field.name, [])
        if runs and isinstance(runs[-1], list):
            runs[-1].append(item)
        else:
            runs.append([item])

    def _packed(self, field: Field, start: int, end: int) -> Any:
        """A packed run: a numpy array for a tensor's data, a list for the rest."""
        kind = field.kind
        if kind in (FLOAT, DOUBLE):
            size = 4 if kind == FLOAT else 8
            if (end - start) % size:
                raise WireError(
                    f"packed field {field.number} at byte {start} holds {end - start:,} bytes, "
                    f"not a whole number of {size}-byte values"
                )
            array = np.frombuffer(self.buf[start:end], "<f4" if kind == FLOAT else "<f8")
            return array if field.array else array.tolist()
        if end - start <= 64 and not field.array:
            convert = _int64 if kind == INT64 else _int32 if kind == INT32 else None
            small: list[int] = []
            pos = start
            while pos < end:
                value, pos = read_varint(self.buf, pos, end)
                small.append(value if convert is None else convert(value))
            return small
        raw = packed_varints(self.buf[start:end], start)
        if kind == INT64:
            raw = raw.view(np.int64)
        elif kind == INT32:
            raw = raw.astype(np.uint32).view(np.int32)
        return raw if field.array else raw.tolist()


def _join(field: Field, runs: list[Any]) -> Any:
    """A repeated number's runs as one sequence: a numpy array for a tensor's data, a list of
    Python numbers for the rest (dims, ints, floats)."""
    if not field.array:
        return runs[0] if len(runs) == 1 else [value for run in runs for value in run]
    dtype = _NUMPY[field.kind]
    arrays = [np.asarray(run, dtype) for run in runs]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


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


def serialise(message: Any, pieces: int = 0) -> bytes | bytearray:
    """A live protobuf message (an ``onnx.ModelProto``) as bytes: its own ``SerializeToString``,
    or, where protobuf refuses (a message over 2 GB: a model whose external data ``onnx.load``
    pulled in), the same message serialised field by field, each sub-message by protobuf where
    it can and by this function where it cannot, a ``bytes`` field (``raw_data``) written here.
    Field order may differ from protobuf's, which decoding does not mind. ``pieces``: serialise
    this many levels field by field even where protobuf would not refuse (for the tests)."""
    if pieces <= 0:
        try:
            return message.SerializeToString()
        except Exception:  # protobuf's error for an oversized message varies by version
            pass
    fields = []
    shell = type(message)()
    for field, value in message.ListFields():
        repeated = getattr(field, "is_repeated", None)
        if repeated is None:
            repeated = field.label == field.LABEL_REPEATED
        if field.message_type is not None or (field.type == field.TYPE_BYTES and not repeated):
            fields.append((field, value, repeated))
        elif repeated:
            getattr(shell, field.name).extend(value)
        else:
            setattr(shell, field.name, value)
    out = bytearray(shell.SerializeToString())
    for field, value, repeated in fields:
        for item in value if repeated else [value]:
            data = item if field.message_type is None else serialise(item, pieces - 1)
            out += encode_varint(field.number << 3 | LENGTH_DELIMITED)
            out += encode_varint(len(data))
            out += data
    return out


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
