"""The part of ONNX's protobuf schema the reader uses, as a table, and the small message classes
``wire.Decoder`` fills from it.

Field numbers, types and enum values are those of ``onnx/onnx.proto`` (proto2). They are written
here, not taken from onnx's generated classes, so that reading a file imports neither onnx nor
protobuf; ``tests/test_onnx_wire.py`` checks every entry against onnx's own descriptors.

The classes answer as onnx's do for the fields listed (``node.input``, ``attr.t``,
``tensor.dims``...), with protobuf's defaults for a field the file leaves out: ``0``, ``""``, an
empty sequence, an empty message. Differences: ``TensorProto.raw_data`` is ``None`` when absent
(protobuf's ``HasField``), ``ModelProto.graph`` likewise; a tensor's numeric fields
(``float_data``, ``int32_data``...) are numpy arrays; a tensor whose bulk data was left in the
file says where in ``region``. As with protobuf, a string field that is not valid UTF-8 is
handed out as bytes (typed ``str`` here, as in protobuf's own stubs).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

# What a field holds (protobuf's scalar types, as they are decoded).
INT32, INT64, UINT64, ENUM, FLOAT, DOUBLE, STRING, BYTES, MESSAGE = (
    "int32",
    "int64",
    "uint64",
    "enum",
    "float",
    "double",
    "string",
    "bytes",
    "message",
)


class Field(NamedTuple):
    """One field of a message, as ``onnx.proto`` declares it."""

    name: str
    number: int
    kind: str
    repeated: bool = False
    message: str | None = None
    """The message type of a ``MESSAGE`` field, the enum type of an ``ENUM`` one."""
    array: bool = False
    """A repeated number held as a numpy array (a tensor's data), not a list."""


def _repeated(name: str, number: int, kind: str, message: str | None = None) -> Field:
    return Field(name, number, kind, repeated=True, message=message)


def _data(name: str, number: int, kind: str) -> Field:
    return Field(name, number, kind, repeated=True, array=True)


# fmt: off
SCHEMA: dict[str, tuple[Field, ...]] = {
    "ModelProto": (
        Field("ir_version", 1, INT64),
        Field("producer_name", 2, STRING),
        Field("producer_version", 3, STRING),
        Field("domain", 4, STRING),
        Field("model_version", 5, INT64),
        Field("doc_string", 6, STRING),
        Field("graph", 7, MESSAGE, message="GraphProto"),
        _repeated("opset_import", 8, MESSAGE, "OperatorSetIdProto"),
    ),
    "OperatorSetIdProto": (
        Field("domain", 1, STRING),
        Field("version", 2, INT64),
    ),
    "GraphProto": (
        _repeated("node", 1, MESSAGE, "NodeProto"),
        Field("name", 2, STRING),
        _repeated("initializer", 5, MESSAGE, "TensorProto"),
        _repeated("input", 11, MESSAGE, "ValueInfoProto"),
        _repeated("output", 12, MESSAGE, "ValueInfoProto"),
        _repeated("sparse_initializer", 15, MESSAGE, "SparseTensorProto"),
    ),
    "ValueInfoProto": (
        Field("name", 1, STRING),
    ),
    "NodeProto": (
        _repeated("input", 1, STRING),
        _repeated("output", 2, STRING),
        Field("name", 3, STRING),
        Field("op_type", 4, STRING),
        _repeated("attribute", 5, MESSAGE, "AttributeProto"),
        Field("domain", 7, STRING),
    ),
    "AttributeProto": (
        Field("name", 1, STRING),
        Field("f", 2, FLOAT),
        Field("i", 3, INT64),
        Field("s", 4, BYTES),
        Field("t", 5, MESSAGE, message="TensorProto"),
        Field("g", 6, MESSAGE, message="GraphProto"),
        _repeated("floats", 7, FLOAT),
        _repeated("ints", 8, INT64),
        _repeated("strings", 9, BYTES),
        _repeated("tensors", 10, MESSAGE, "TensorProto"),
        _repeated("graphs", 11, MESSAGE, "GraphProto"),
        Field("type", 20, ENUM, message="AttributeType"),
        Field("sparse_tensor", 22, MESSAGE, message="SparseTensorProto"),
        _repeated("sparse_tensors", 23, MESSAGE, "SparseTensorProto"),
    ),
    "TensorProto": (
        _repeated("dims", 1, INT64),
        Field("data_type", 2, INT32),
        _data("float_data", 4, FLOAT),
        _data("int32_data", 5, INT32),
        _repeated("string_data", 6, BYTES),
        _data("int64_data", 7, INT64),
        Field("name", 8, STRING),
        Field("raw_data", 9, BYTES),
        _data("double_data", 10, DOUBLE),
        _data("uint64_data", 11, UINT64),
        _repeated("external_data", 13, MESSAGE, "StringStringEntryProto"),
        Field("data_location", 14, ENUM, message="DataLocation"),
    ),
    "StringStringEntryProto": (
        Field("key", 1, STRING),
        Field("value", 2, STRING),
    ),
    "SparseTensorProto": (
        Field("values", 1, MESSAGE, message="TensorProto"),
        Field("indices", 2, MESSAGE, message="TensorProto"),
        _repeated("dims", 3, INT64),
    ),
}

# TensorProto.DataType: the element type of a tensor (``data_type`` is an int32, so a file may
# hold numbers this table lacks).
DATA_TYPES: dict[str, int] = {
    "UNDEFINED": 0, "FLOAT": 1, "UINT8": 2, "INT8": 3, "UINT16": 4, "INT16": 5, "INT32": 6,
    "INT64": 7, "STRING": 8, "BOOL": 9, "FLOAT16": 10, "DOUBLE": 11, "UINT32": 12, "UINT64": 13,
    "COMPLEX64": 14, "COMPLEX128": 15, "BFLOAT16": 16, "FLOAT8E4M3FN": 17, "FLOAT8E4M3FNUZ": 18,
    "FLOAT8E5M2": 19, "FLOAT8E5M2FNUZ": 20, "UINT4": 21, "INT4": 22, "FLOAT4E2M1": 23,
    "FLOAT8E8M0": 24, "UINT2": 25, "INT2": 26, "FLOAT6E2M3": 27, "FLOAT6E3M2": 28,
}

# Closed enums (proto2): a number outside them leaves the field unset, as protobuf does.
ENUMS: dict[str, dict[str, int]] = {
    "AttributeType": {
        "UNDEFINED": 0, "FLOAT": 1, "INT": 2, "STRING": 3, "TENSOR": 4, "GRAPH": 5, "FLOATS": 6,
        "INTS": 7, "STRINGS": 8, "TENSORS": 9, "GRAPHS": 10, "SPARSE_TENSOR": 11,
        "SPARSE_TENSORS": 12, "TYPE_PROTO": 13, "TYPE_PROTOS": 14,
    },
    "DataLocation": {"DEFAULT": 0, "EXTERNAL": 1},
}
# fmt: on

DATA_TYPE_NAMES: dict[int, str] = {number: name for name, number in DATA_TYPES.items()}


class DataType:
    """``TensorProto.DataType`` numbers by name, as ``onnx.TensorProto.FLOAT`` and the rest."""

    UNDEFINED = DATA_TYPES["UNDEFINED"]
    FLOAT = DATA_TYPES["FLOAT"]
    UINT8 = DATA_TYPES["UINT8"]
    INT8 = DATA_TYPES["INT8"]
    UINT16 = DATA_TYPES["UINT16"]
    INT16 = DATA_TYPES["INT16"]
    INT32 = DATA_TYPES["INT32"]
    INT64 = DATA_TYPES["INT64"]
    STRING = DATA_TYPES["STRING"]
    BOOL = DATA_TYPES["BOOL"]
    FLOAT16 = DATA_TYPES["FLOAT16"]
    DOUBLE = DATA_TYPES["DOUBLE"]
    UINT32 = DATA_TYPES["UINT32"]
    UINT64 = DATA_TYPES["UINT64"]
    COMPLEX64 = DATA_TYPES["COMPLEX64"]
    COMPLEX128 = DATA_TYPES["COMPLEX128"]
    BFLOAT16 = DATA_TYPES["BFLOAT16"]
    FLOAT8E4M3FN = DATA_TYPES["FLOAT8E4M3FN"]
    FLOAT8E4M3FNUZ = DATA_TYPES["FLOAT8E4M3FNUZ"]
    FLOAT8E5M2 = DATA_TYPES["FLOAT8E5M2"]
    FLOAT8E5M2FNUZ = DATA_TYPES["FLOAT8E5M2FNUZ"]
    UINT4 = DATA_TYPES["UINT4"]
    INT4 = DATA_TYPES["INT4"]


class AttributeType:
    """``AttributeProto.AttributeType`` numbers by name."""

    UNDEFINED = ENUMS["AttributeType"]["UNDEFINED"]
    FLOAT = ENUMS["AttributeType"]["FLOAT"]
    INT = ENUMS["AttributeType"]["INT"]
    STRING = ENUMS["AttributeType"]["STRING"]
    TENSOR = ENUMS["AttributeType"]["TENSOR"]
    GRAPH = ENUMS["AttributeType"]["GRAPH"]
    FLOATS = ENUMS["AttributeType"]["FLOATS"]
    INTS = ENUMS["AttributeType"]["INTS"]
    STRINGS = ENUMS["AttributeType"]["STRINGS"]
    SPARSE_TENSOR = ENUMS["AttributeType"]["SPARSE_TENSOR"]


EXTERNAL = ENUMS["DataLocation"]["EXTERNAL"]
"""``TensorProto.DataLocation.EXTERNAL``: the tensor's data is in a file beside the model."""


class BulkRegion(NamedTuple):
    """Where a tensor's bulk field (``raw_data``, packed ``float_data`` or ``double_data``),
    left in the model file rather than read, lies in it."""

    field: str
    offset: int
    length: int


class Message:
    """A decoded message: the fields the file sets are instance attributes, the rest fall back to
    the class's defaults (immutable: empty tuples, shared empty messages)."""

    NAME: ClassVar[str]

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class ValueInfoProto(Message):
    NAME = "ValueInfoProto"
    name: str = ""


class OperatorSetIdProto(Message):
    NAME = "OperatorSetIdProto"
    domain: str = ""
    version: int = 0


class StringStringEntryProto(Message):
    NAME = "StringStringEntryProto"
    key: str = ""
    value: str = ""


class TensorProto(Message):
    NAME = "TensorProto"
    dims: Sequence[int] = ()
    data_type: int = 0
    float_data: Any = ()
    int32_data: Any = ()
    string_data: Sequence[bytes] = ()
    int64_data: Any = ()
    name: str = ""
    raw_data: Any = None
    """bytes (or a memoryview of a live proto's serialisation); None when the file has none."""
    double_data: Any = ()
    uint64_data: Any = ()
    external_data: Sequence[StringStringEntryProto] = ()
    data_location: int = 0
    region: BulkRegion | None = None
    """Where the bulk data lies in the model file when it was left there (not a protobuf
    field)."""


class SparseTensorProto(Message):
    NAME = "SparseTensorProto"
    values: TensorProto = TensorProto()
    indices: TensorProto = TensorProto()
    dims: Sequence[int] = ()


class GraphProto(Message):
    NAME = "GraphProto"
    node: Sequence[NodeProto] = ()
    name: str = ""
    initializer: Sequence[TensorProto] = ()
    input: Sequence[ValueInfoProto] = ()
    output: Sequence[ValueInfoProto] = ()
    sparse_initializer: Sequence[SparseTensorProto] = ()


class AttributeProto(Message):
    NAME = "AttributeProto"
    name: str = ""
    f: float = 0.0
    i: int = 0
    s: bytes = b""
    t: TensorProto = TensorProto()
    g: GraphProto = GraphProto()
    floats: Sequence[float] = ()
    ints: Sequence[int] = ()
    strings: Sequence[bytes] = ()
    tensors: Sequence[TensorProto] = ()
    graphs: Sequence[GraphProto] = ()
    type: int = 0
    sparse_tensor: SparseTensorProto = SparseTensorProto()
    sparse_tensors: Sequence[SparseTensorProto] = ()


class NodeProto(Message):
    NAME = "NodeProto"
    input: Sequence[str] = ()
    output: Sequence[str] = ()
    name: str = ""
    op_type: str = ""
    attribute: Sequence[AttributeProto] = ()
    domain: str = ""


class ModelProto(Message):
    NAME = "ModelProto"
    ir_version: int = 0
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    graph: GraphProto | None = None
    """None when the file has no graph (protobuf's ``HasField``)."""
    opset_import: Sequence[OperatorSetIdProto] = ()


CLASSES: dict[str, type[Message]] = {
    cls.NAME: cls
    for cls in (
        ModelProto,
        OperatorSetIdProto,
        GraphProto,
        ValueInfoProto,
        NodeProto,
        AttributeProto,
        TensorProto,
        StringStringEntryProto,
        SparseTensorProto,
    )
}
