"""weightscope's own ONNX protobuf reader (``formats/onnx/proto.py``, ``wire.py``) against onnx's:
the schema table it decodes with matches onnx's descriptors field by field, and what it decodes
equals what protobuf parses, on every field the table lists, for valid models, for the wire
format's corner cases and for mutants of a model."""

from __future__ import annotations

import contextlib
import random
import struct
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from fuzz import protobuf as wire_mutants  # noqa: E402
from google.protobuf.descriptor import FieldDescriptor  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from weightscope.dtypes import FLOAT8_FORMATS, float8_to_float32  # noqa: E402
from weightscope.formats.onnx import proto, wire  # noqa: E402
from weightscope.limits import LimitExceeded  # noqa: E402

KINDS = {
    proto.INT32: FieldDescriptor.TYPE_INT32,
    proto.INT64: FieldDescriptor.TYPE_INT64,
    proto.UINT64: FieldDescriptor.TYPE_UINT64,
    proto.ENUM: FieldDescriptor.TYPE_ENUM,
    proto.FLOAT: FieldDescriptor.TYPE_FLOAT,
    proto.DOUBLE: FieldDescriptor.TYPE_DOUBLE,
    proto.STRING: FieldDescriptor.TYPE_STRING,
    proto.BYTES: FieldDescriptor.TYPE_BYTES,
    proto.MESSAGE: FieldDescriptor.TYPE_MESSAGE,
}
ARRAY_DTYPES = {proto.INT32: np.int32, proto.INT64: np.int64, proto.UINT64: np.uint64,
                proto.FLOAT: np.float32, proto.DOUBLE: np.float64}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the table against onnx's descriptors


@pytest.mark.parametrize("message", sorted(proto.SCHEMA))
def test_schema_matches_onnx_descriptors(message):
    descriptor = getattr(onnx, message).DESCRIPTOR
    for field in proto.SCHEMA[message]:
        theirs = descriptor.fields_by_name.get(field.name)
        assert theirs is not None, f"{message}.{field.name} is not in onnx.proto"
        where = f"{message}.{field.name}"
        assert field.number == theirs.number, where
        assert KINDS[field.kind] == theirs.type, where
        assert field.repeated == theirs.is_repeated, where
        if field.kind == proto.MESSAGE:
            assert field.message == theirs.message_type.name, where
        elif field.kind == proto.ENUM:
            assert field.message == theirs.enum_type.name, where
            assert theirs.enum_type.is_closed, where  # an unknown number leaves it unset
            values = {value.name: value.number for value in theirs.enum_type.values}
            assert proto.ENUMS[field.message] == values, where
        else:
            assert field.message is None, where
        if field.array:
            assert field.repeated and field.kind in ARRAY_DTYPES, where
    cls = proto.CLASSES[message]
    assert message == cls.NAME
    for field in proto.SCHEMA[message]:
        assert hasattr(cls, field.name), f"{message} has no default for {field.name}"


def test_data_types_match_onnx():
    theirs = {value.name: value.number for value in TensorProto.DataType.DESCRIPTOR.values}
    # every type this onnx knows, with the same number (a newer table may know more)
    assert {name: proto.DATA_TYPES.get(name) for name in theirs} == theirs
    newest = max(theirs.values())
    assert all(n > newest for name, n in proto.DATA_TYPES.items() if name not in theirs)
    for name, number in proto.DATA_TYPES.items():
        if hasattr(proto.DataType, name):
            assert getattr(proto.DataType, name) == number == getattr(TensorProto, name)
    for name in dir(proto.AttributeType):
        if name.isupper():
            assert getattr(proto.AttributeType, name) == getattr(onnx.AttributeProto, name)
    assert proto.EXTERNAL == TensorProto.EXTERNAL


@pytest.mark.parametrize("name", sorted(FLOAT8_FORMATS))
def test_float8_tables_match_ml_dtypes(name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bits = np.arange(256, dtype=np.uint8)
    want = bits.view(getattr(ml_dtypes, name)).astype(np.float32)
    got = float8_to_float32(bits, name)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    numbers = ~np.isnan(want)
    assert np.array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))  # -0.0 too


# ---------------------------------------------------------------------------------------------
# decoded as protobuf parses


def _same_float(a: float, b: float) -> bool:
    return struct.pack("<f", a) == struct.pack("<f", b) or (a != a and b != b)


def differences(mine: Any, theirs: Any, message: str, where: str = "model") -> list[str]:
    """Every field of the table on which ``mine`` (decoded by weightscope) and ``theirs``
    (parsed by protobuf) differ."""
    found: list[str] = []
    for field in proto.SCHEMA[message]:
        got, want = getattr(mine, field.name), getattr(theirs, field.name)
        at = f"{where}.{field.name}"
        if field.kind == proto.MESSAGE:
            assert field.message is not None
            if not field.repeated:
                present = theirs.HasField(field.name)
                if message == "ModelProto":  # the graph's presence is asked for
                    if (got is not None) != present:
                        found.append(f"{at}: present {got is not None}, not {present}")
                    if got is None:
                        continue
                found += differences(got, want, field.message, at)
            elif len(got) != len(want):
                found.append(f"{at}: {len(got)} messages, not {len(want)}")
            else:
                for i, (a, b) in enumerate(zip(got, want, strict=True)):
                    found += differences(a, b, field.message, f"{at}[{i}]")
        elif field.name == "raw_data":
            if (got is not None) != theirs.HasField("raw_data"):
                found.append(f"{at}: present {got is not None}")
            elif got is not None and bytes(got) != want:
                found.append(f"{at}: bytes differ")
        elif field.array:
            dtype = ARRAY_DTYPES[field.kind]
            a, b = np.asarray(got, dtype), np.asarray(list(want), dtype)
            if a.shape != b.shape or a.tobytes() != b.tobytes():
                found.append(f"{at}: {a[:8]}... not {b[:8]}...")
        elif field.kind == proto.FLOAT:
            pairs = zip(got, want, strict=False) if field.repeated else [(got, want)]
            if (field.repeated and len(got) != len(want)) or not all(
                _same_float(a, b) for a, b in pairs
            ):
                found.append(f"{at}: {got!r} not {want!r}")
        elif (list(got) if field.repeated else got) != (list(want) if field.repeated else want):
            found.append(f"{at}: {got!r} not {want!r}")
    return found


def decode(data: bytes, **options: Any) -> proto.ModelProto:
    options.setdefault("cut_bulk", False)
    return wire.Decoder(memoryview(data), **options).model()


def check_same(data: bytes) -> None:
    theirs = onnx.ModelProto()
    theirs.ParseFromString(data)
    assert differences(decode(data), theirs, "ModelProto") == []


def typed(name: str, kind: int, values: np.ndarray) -> onnx.TensorProto:
    return helper.make_tensor(name, kind, values.shape, values.reshape(-1).tolist(), raw=False)


def tensor_zoo(rng: np.random.Generator) -> list[onnx.TensorProto]:
    """Every typed field, raw_data, both sides of the cut-out threshold, negative int32s (ten
    byte varints), NaN and infinities, strings, external data entries."""
    tensors = []
    for tag, n in (("big", 3000), ("small", 6)):
        f32 = rng.standard_normal(n).astype(np.float32)
        f32[:2] = [np.nan, -np.inf]
        tensors += [
            numpy_helper.from_array(f32, f"raw_{tag}"),
            typed(f"float_{tag}", TensorProto.FLOAT, f32),
            typed(f"double_{tag}", TensorProto.DOUBLE, f32.astype(np.float64) * 1e200),
            typed(f"int8_{tag}", TensorProto.INT8, rng.integers(-128, 128, n)),
            typed(f"int32_{tag}", TensorProto.INT32, rng.integers(-(2**31), 2**31, n)),
            typed(f"int64_{tag}", TensorProto.INT64, rng.integers(-(2**63), 2**63, n)),
            typed(f"uint64_{tag}", TensorProto.UINT64, rng.integers(0, 2**64, n, np.uint64)),
            typed(f"float16_{tag}", TensorProto.FLOAT16, f32.astype(np.float16)),
            typed(f"complex64_{tag}", TensorProto.COMPLEX64, f32[: n // 2] + 1j * f32[n // 2 :]),
        ]
    strings = helper.make_tensor("strings", TensorProto.STRING, [3], [b"a", b"", b"\xff"])
    external = TensorProto(name="ext", data_type=TensorProto.FLOAT, dims=[2, 3])
    external.data_location = TensorProto.EXTERNAL
    for key, value in (("location", "w.bin"), ("offset", "64"), ("length", "24")):
        entry = external.external_data.add()
        entry.key, entry.value = key, value
    empty = TensorProto(name="empty", data_type=TensorProto.FLOAT, dims=[0], raw_data=b"")
    return [*tensors, strings, external, empty]


def every_attribute(rng: np.random.Generator) -> list[onnx.AttributeProto]:
    small = numpy_helper.from_array(rng.standard_normal((2, 2)).astype(np.float32), "t")
    values = numpy_helper.from_array(np.ones(2, np.float32), "sv")
    indices = numpy_helper.from_array(np.array([1, 5], np.int64), "si")
    sparse = helper.make_sparse_tensor(values, indices, [3, 4])
    body = helper.make_graph(
        [helper.make_node("Identity", ["a"], ["b"], name="inner")], "body", [], []
    )
    return [
        helper.make_attribute("f", -1.5e-7),
        helper.make_attribute("i", -(2**62)),
        helper.make_attribute("s", b"bytes \xff"),
        helper.make_attribute("t", small),
        helper.make_attribute("g", body),
        helper.make_attribute("floats", [0.5, -0.0, float("inf")]),
        helper.make_attribute("ints", [-1, 0, 2**40]),
        helper.make_attribute("strings", [b"x", b"", b"\x00"]),
        helper.make_attribute("tensors", [small, values]),
        helper.make_attribute("graphs", [body, body]),
        helper.make_attribute("sparse_tensor", sparse),
        helper.make_attribute("sparse_tensors", [sparse]),
    ]


def control_flow_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Initializers of every kind, a sparse initializer, and If / Loop / Scan bodies nesting
    graphs in graphs, with a node carrying every attribute type."""

    def weight(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    inner = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W_inner"], ["y"], name="inner_mm")],
        "inner",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight("W_inner", 40, 40)],
    )
    then_branch = helper.make_graph(
        [
            helper.make_node(
                "If", ["c"], ["y"], name="nested_if", then_branch=inner, else_branch=inner
            )
        ],
        "then",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    loop_body = helper.make_graph(
        [helper.make_node("Conv", ["x", "W_loop"], ["y"], name="loop_conv")],
        "loop",
        [helper.make_tensor_value_info("i", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight("W_loop", 8, 4, 3, 3)],
    )
    sparse = helper.make_sparse_tensor(
        weight("S", 3),
        numpy_helper.from_array(np.array([0, 7, 11], np.int64), "S_indices"),
        [4, 4],
    )
    odd = helper.make_node("Custom", ["X"], ["Z"], name="every", domain="example.com")
    odd.attribute.extend(every_attribute(rng))
    nodes = [
        helper.make_node("If", ["C"], ["A"], name="if", then_branch=then_branch, else_branch=inner),
        helper.make_node("Loop", ["N", "", "X"], ["L"], name="loop", body=loop_body),
        helper.make_node("Scan", ["X"], ["S_out"], name="scan", body=inner, num_scan_inputs=1),
        helper.make_node(
            "Constant", [], ["K"], name="k", value=numpy_helper.from_array(np.eye(3, dtype="f4"))
        ),
        odd,
    ]
    graph = helper.make_graph(
        nodes,
        "main",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        tensor_zoo(rng),
        sparse_initializer=[sparse],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        producer_name="weightscope-tests",
        producer_version="1.0",
        doc_string="a model",
    )
    model.ir_version = 8
    model.model_version = -3
    return model


def test_a_model_decodes_as_protobuf_parses_it(rng):
    check_same(control_flow_model(rng).SerializeToString())


def test_the_bundled_example_decodes_as_protobuf_parses_it():
    import weightscope

    check_same(weightscope.example_path().with_suffix(".onnx").read_bytes())


def _field(number: int, wire_type: int, payload: bytes | int) -> bytes:
    tag = _varint(number << 3 | wire_type)
    if wire_type == wire.LENGTH_DELIMITED:
        assert isinstance(payload, bytes)
        return tag + _varint(len(payload)) + payload
    if wire_type == wire.VARINT:
        assert isinstance(payload, int)
        return tag + _varint(payload)
    assert isinstance(payload, bytes)
    return tag + payload


def _varint(value: int) -> bytes:
    value %= 1 << 64
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


LEN, VARINT, F32, F64 = wire.LENGTH_DELIMITED, wire.VARINT, wire.FIXED32, wire.FIXED64


def _tensor(*fields: bytes) -> bytes:
    return _field(5, LEN, b"".join(fields))  # GraphProto.initializer


def _model(*graph_fields: bytes, head: bytes = b"") -> bytes:
    return _field(1, VARINT, 8) + head + _field(7, LEN, b"".join(graph_fields))


QUIRKS: dict[str, bytes] = {
    # a singular message given twice is merged: dims of both, the last name
    "merged_graph": _field(1, VARINT, 8)
    + _field(7, LEN, _tensor(_field(8, LEN, b"a"), _field(1, VARINT, 2)))
    + _field(7, LEN, _tensor(_field(8, LEN, b"b")) + _field(2, LEN, b"g")),
    "merged_attribute_tensor": _model(
        _field(
            1,
            LEN,
            _field(
                5,
                LEN,
                _field(5, LEN, _field(1, VARINT, 2))
                + _field(5, LEN, _field(1, VARINT, 3) + _field(8, LEN, b"t")),
            ),
        )
    ),
    "last_scalar_wins": _model(_tensor(_field(2, VARINT, 1), _field(2, VARINT, 7))),
    "raw_data_twice": _model(_tensor(_field(9, LEN, b"\x01" * 5000), _field(9, LEN, b"\x02"))),
    "unpacked_and_packed_floats": _model(
        _tensor(
            _field(4, F32, struct.pack("<f", 1.5)),
            _field(4, LEN, struct.pack("<2f", 2, 3)),
            _field(4, F32, struct.pack("<f", -0.0)),
        )
    ),
    "unpacked_ints_and_dims": _model(
        _tensor(
            _field(1, VARINT, 3),
            _field(1, LEN, _varint(4) + _varint(5)),
            _field(7, VARINT, -5),
            _field(5, VARINT, -1),
            _field(5, VARINT, 2**40 + 7),
        )
    ),
    "long_packed_varints": _model(
        _tensor(
            _field(7, LEN, b"".join(_varint(v) for v in [-1, 0, 1, 2**63, 300] * 20)),
            _field(5, LEN, b"".join(_varint(v) for v in [-(2**31), 2**31 - 1, -1] * 20)),
            _field(11, LEN, b"".join(_varint(v) for v in [2**64 - 1, 5] * 20)),
        )
    ),
    "unpacked_doubles": _model(_tensor(_field(10, F64, struct.pack("<d", 1e300)))),
    "unknown_fields": _model(
        _field(99, VARINT, 5),
        _field(536870911, LEN, b"junk"),
        _tensor(_field(3, F64, b"\0" * 8), _field(1000, F32, b"\0" * 4), _field(8, LEN, b"w")),
        head=_field(42, LEN, b"x"),
    ),
    "wrong_wire_types": _model(
        _tensor(
            _field(8, VARINT, 5),
            _field(2, LEN, b"abc"),
            _field(9, VARINT, 1),
            _field(4, VARINT, 3),
            _field(1, F64, b"\0" * 8),
        ),
        _field(1, VARINT, 4),  # GraphProto.node as a number
    ),
    "enum_out_of_range": _model(
        _tensor(_field(14, VARINT, 1), _field(14, VARINT, 99)),
        _field(1, LEN, _field(5, LEN, _field(20, VARINT, 2) + _field(20, VARINT, 77))),
    ),
    "enum_negative": _model(_tensor(_field(14, VARINT, -1))),
    "invalid_utf8": _model(
        _field(
            1, LEN, _field(4, LEN, b"\xff\xfe") + _field(1, LEN, b"ok") + _field(1, LEN, b"\x80")
        ),
        _tensor(_field(8, LEN, b"caf\xc3")),
        head=_field(2, LEN, b"\xed\xa0\x80"),  # a UTF-16 surrogate: not UTF-8
    ),
    "int32_wraps": _model(_tensor(_field(2, VARINT, 2**32 + 1)), _tensor(_field(2, VARINT, 2**31))),
    "varint_beyond_64_bits": _model(_tensor(_field(1, LEN, b"\xff" * 9 + b"\x7f"))),
    "empty_graph_and_messages": _model(head=_field(8, LEN, b"")),
    "no_graph": _field(1, VARINT, 8) + _field(2, LEN, b"x"),
}


@pytest.mark.parametrize("case", sorted(QUIRKS))
def test_wire_format_corner_cases_decode_as_protobuf_parses_them(case):
    check_same(QUIRKS[case])


def test_long_packed_varints_decode_block_by_block():
    numbers = [0, 1, 127, 128, 300, 2**35, 2**63, 2**64 - 1, 5] * 7
    data = b"".join(_varint(v) for v in numbers)
    for block in (1, 2, 3, 7, 1 << 20):
        got = wire.packed_varints(data, 0, block=block)
        assert got.dtype == np.uint64 and got.tolist() == numbers, block
    with pytest.raises(wire.WireError, match="malformed"):
        wire.packed_varints(data + b"\xff" * 10 + b"\x01", 0, block=4)


@pytest.mark.parametrize("pieces", [1, 2, 3, 5])
def test_a_live_proto_serialised_in_pieces_decodes_as_a_whole_one(pieces, rng):
    """How a live ModelProto over protobuf's 2 GB is serialised: field by field, ``pieces``
    levels deep (raw_data written by weightscope from 3 on), decoded as protobuf parses it."""
    model = control_flow_model(rng)
    data = wire.serialise(model, pieces=pieces)
    assert isinstance(data, bytearray) and len(data) == model.ByteSize()
    assert differences(decode(bytes(data)), model, "ModelProto") == []


def test_a_large_bulk_field_is_left_in_the_file():
    raw = np.arange(2000, dtype=np.float32).tobytes()
    data = _model(_tensor(_field(8, LEN, b"w"), _field(9, LEN, raw), _field(1, VARINT, 2000)))
    model = decode(data, cut_bulk=True)
    assert model.graph is not None
    (tensor,) = model.graph.initializer
    assert tensor.raw_data is None and tensor.region is not None
    region = tensor.region
    assert (region.field, region.length) == ("raw_data", len(raw))
    assert data[region.offset : region.offset + region.length] == raw
    assert (tensor.name, list(tensor.dims)) == ("w", [2000])


MALFORMED: dict[str, tuple[bytes, str]] = {
    "truncated_varint": (_field(1, VARINT, 8)[:1] + b"\x80", "truncated number"),
    "eleven_byte_varint": (b"\x08" + b"\xff" * 10 + b"\x01", "malformed number"),
    "field_zero": (b"\x00", "field number 0"),
    "wire_type_7": (_model(_field(1, LEN, b"\x0f")), "wire type 7"),
    "length_past_end": (_field(1, VARINT, 8) + _varint(7 << 3 | 2) + _varint(100) + b"x", "past"),
    "nested_length_past_end": (
        _model(_field(1, LEN, _varint(4 << 3 | 2) + _varint(9) + b"Conv")),
        "past the end",
    ),
    "fixed32_cut": (_model(_tensor(_varint(4 << 3 | 5) + b"\0\0")), "past the end"),
    "packed_floats_ragged": (_model(_tensor(_field(4, LEN, b"abc"))), "whole number"),
    "packed_varint_cut": (_model(_tensor(_field(1, LEN, b"\xff\xff\xff"))), "truncated"),
    "long_packed_varint_cut": (_model(_tensor(_field(7, LEN, b"\x01" * 30 + b"\xff"))), "trunc"),
    "long_packed_varint_too_long": (
        _model(_tensor(_field(7, LEN, b"\x01" * 30 + b"\xff" * 10 + b"\x01"))),
        "malformed",
    ),
    "tag_over_32_bits": (_varint(1 << 35 | 2) + b"\x00", "field number"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_wire_format_is_refused_as_protobuf_refuses_it(case):
    data, words = MALFORMED[case]
    with pytest.raises(DecodeError):
        onnx.ModelProto().ParseFromString(data)
    with pytest.raises(wire.WireError, match=words):
        decode(data)
    with pytest.raises(wire.WireError, match=words):
        decode(data, cut_bulk=True)


def test_groups_are_refused():
    """Groups (wire types 3 and 4, deprecated before ONNX existed) are refused where protobuf
    would step over them: no exporter writes one."""
    data = _model(_tensor(b"\x7b\x08\x01\x7c"))
    onnx.ModelProto().ParseFromString(data)
    with pytest.raises(wire.WireError, match="wire type 3"):
        decode(data)


def test_graphs_nested_deeper_than_the_limit_are_refused():
    data = _model(_field(1, LEN, wire_mutants.deep_graph_node(5)))  # 6 graphs, the main one too
    assert decode(data, max_graph_depth=6).graph is not None
    with pytest.raises(LimitExceeded, match="nested more than 5 deep"):
        decode(data, max_graph_depth=5)


def test_mutants_decode_as_protobuf_parses_them(rng):
    """Mutants of a model (the fuzzing suite's protobuf mutations): wherever protobuf parses
    one, weightscope decodes the same values; where protobuf refuses one, weightscope refuses it
    too or reads it whole (the damage lies in a field it steps over: a type, a doc string)."""
    seed = control_flow_model(rng).SerializeToString()
    chance = random.Random(16)
    parsed = refused = 0
    for _ in range(400):
        data, note = wire_mutants.mutate(seed, onnx.ModelProto.DESCRIPTOR, chance)
        theirs = onnx.ModelProto()
        try:
            theirs.ParseFromString(data)
        except DecodeError:
            refused += 1
            with contextlib.suppress(wire.WireError, LimitExceeded):
                decode(data, max_graph_depth=64)
            continue
        parsed += 1
        try:
            mine = decode(data, max_graph_depth=64)
        except LimitExceeded:
            assert "nested" in note
            continue
        assert differences(mine, theirs, "ModelProto") == [], note
    assert parsed > 100 and refused > 20, (parsed, refused)
