"""Mutations of pickle streams, opcode by opcode: integers (storage sizes, tensor shapes,
strides and offsets) and strings rewritten, opcodes of every kind spliced in with arguments
that are plausible or lie, opcodes dropped, repeated and swapped, values replaced by deeply
nested, self-referencing or exponentially shared structures (also containers memoized empty
and filled afterwards), containers whose keys all hash alike, floods of one-byte opcodes, and
BUILD applied to what the rebuild functions return."""

from __future__ import annotations

import io
import pickletools
import random
import struct
from dataclasses import dataclass

from .raw import INTERESTING

OPCODES = list(pickletools.opcodes)

GLOBALS = [
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_qtensor"),
    ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._utils", "_rebuild_wrapper_subclass"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
    ("torch", "BFloat16Storage"),
    ("torch", "DoubleStorage"),
    ("torch", "LongStorage"),
    ("torch", "BoolStorage"),
    ("torch", "ComplexFloatStorage"),
    ("torch", "QInt8Storage"),
    ("torch", "UntypedStorage"),
    ("torch", "Size"),
    ("torch", "float32"),
    ("torch", "device"),
    ("torch.nn.parameter", "Parameter"),
    ("torch.nn.modules.conv", "Conv2d"),
    ("torch.nn.modules.linear", "Linear"),
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "getattr"),
    ("builtins", "dict"),
    ("copyreg", "_reconstructor"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "dtype"),
    ("os", "system"),
    ("__main__", "Model"),
    ("", ""),
]

STRINGS = [
    "", "0", "1", "99", "-1", "cpu", "cuda:0", "meta", "storage", "weight", "bias",
    "running_mean", "num_batches_tracked", "_parameters", "_buffers", "_modules", "training",
    "state_dict", "module.0.weight", "\x1b[2J", "a" * 5000, "\u00e9\u4e2d", "\udcff",
    "../../etc/passwd", "torch._utils", "_rebuild_tensor_v2", "FloatStorage", "little", "big",
]  # fmt: skip

_STRING_ARGS = {
    "stringnl", "stringnl_noescape", "string1", "string4", "bytes1", "bytes4", "bytes8",
    "bytearray8", "unicodestringnl", "unicodestring1", "unicodestring4", "unicodestring8",
}  # fmt: skip
_INT_OPS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"}
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}


@dataclass(frozen=True)
class Op:
    name: str
    arg: object
    start: int
    end: int


def parse(data: bytes) -> list[Op]:
    """The opcodes of the one pickle in ``data`` (which must be valid)."""
    found = list(pickletools.genops(io.BytesIO(data)))
    ops = []
    for i, (opcode, arg, pos) in enumerate(found):
        end = found[i + 1][2] if i + 1 < len(found) else pos + 1
        ops.append(Op(opcode.name, arg, pos, end))
    return ops


def split_stream(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each pickle of a stream of pickles; stops at the first that is not one."""
    spans = []
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        start = stream.tell()
        try:
            for _ in pickletools.genops(stream):
                pass
        except Exception:
            break
        spans.append((start, stream.tell()))
    return spans


def encode_int(value: int, rng: random.Random) -> bytes:
    """A pickle opcode pushing ``value``, in one of the encodings that can hold it."""
    choice = rng.random()
    if choice < 0.1:
        return b"I" + str(value).encode() + b"\n"
    if choice < 0.15:
        return b"L" + str(value).encode() + b"L\n"
    if 0 <= value < 256 and choice < 0.6:
        return b"K" + bytes([value])
    if 0 <= value < 65536 and choice < 0.6:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31 and choice < 0.8:
        return b"J" + struct.pack("<i", value)
    raw = pickle_long(value)
    if len(raw) < 256 and choice < 0.95:
        return b"\x8a" + bytes([len(raw)]) + raw
    return b"\x8b" + struct.pack("<i", len(raw)) + raw


def pickle_long(value: int) -> bytes:
    if value == 0:
        return b""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return raw


def interesting_int(original: int | None, rng: random.Random) -> int:
    choice = rng.random()
    if original is not None and choice < 0.3:
        return rng.choice([original + 1, original - 1, -original, original * 1000, original << 32])
    if choice < 0.4:
        return rng.choice([10**12, 10**18, 10**100, 2**1000])
    return rng.choice(INTERESTING)


def encode_string(op_name: str, text: str, rng: random.Random) -> bytes:
    """A string in the same opcode family as ``op_name`` (a length that lies, now and then)."""
    data = text.encode("utf-8", "surrogatepass")
    lie = rng.random() < 0.1
    length = len(data) + rng.choice([1, 1000, 2**31 - 1]) if lie else len(data)
    if op_name in ("SHORT_BINUNICODE", "SHORT_BINBYTES", "SHORT_BINSTRING") and length < 256:
        return (
            {"SHORT_BINUNICODE": b"\x8c", "SHORT_BINBYTES": b"C", "SHORT_BINSTRING": b"U"}[op_name]
            + bytes([length])
            + data
        )
    if op_name in ("BINBYTES", "BINBYTES8"):
        return b"B" + struct.pack("<I", length % 2**32) + data
    if op_name == "UNICODE":
        return b"V" + text.encode("raw-unicode-escape", "replace") + b"\n"
    if op_name == "STRING":
        return b"S" + repr(text).encode("ascii", "backslashreplace") + b"\n"
    if op_name == "BINUNICODE8":
        return b"\x8d" + struct.pack("<Q", length) + data
    return b"X" + struct.pack("<I", length % 2**32) + data


def argument(name: str | None, rng: random.Random) -> bytes:
    """Bytes for an argument of kind ``name`` (pickletools' ArgumentDescriptor names)."""
    if name is None:
        return b""
    small = rng.choice([0, 1, 2, 3, 255])
    text = rng.choice(STRINGS).encode("utf-8", "surrogatepass")
    lie = rng.random() < 0.15
    if name == "uint1":
        return bytes([small])
    if name == "uint2":
        return struct.pack("<H", rng.choice([0, 1, 0xFFFF]))
    if name == "int4":
        return struct.pack("<i", rng.choice([0, 1, -1, 2**31 - 1, -(2**31)]))
    if name == "uint4":
        return struct.pack("<I", rng.choice([0, 1, 2**31, 2**32 - 1]))
    if name == "uint8":
        return struct.pack("<Q", rng.choice([0, 1, 2**63, 2**64 - 1]))
    if name in ("stringnl",):
        return repr(text.decode("utf-8", "replace")).encode("ascii", "backslashreplace") + b"\n"
    if name == "stringnl_noescape":
        return text.replace(b"\n", b"") + b"\n"
    if name == "stringnl_noescape_pair":
        module, attr = rng.choice(GLOBALS)
        return module.encode() + b"\n" + attr.encode() + b"\n"
    if name == "unicodestringnl":
        return text.replace(b"\n", b"") + b"\n"
    if name == "decimalnl_short":
        return rng.choice([b"0", b"1", b"00", b"01", b"-7", b"99999999999999999999", b"x"]) + b"\n"
    if name == "decimalnl_long":
        return rng.choice([b"0L", b"-1L", b"1" * 400 + b"L", b"L"]) + b"\n"
    if name == "floatnl":
        return rng.choice([b"1.5", b"nan", b"inf", b"-0.0", b"1e400", b"x"]) + b"\n"
    if name == "float8":
        return struct.pack(">d", rng.choice([0.0, -1.0, 1e308, float("nan"), float("inf")]))
    if name in ("long1", "long4"):
        raw = pickle_long(interesting_int(None, rng))
        width = "<B" if name == "long1" else "<i"
        count = len(raw) + (rng.choice([1, 100]) if lie else 0)
        return struct.pack(width, min(count, 255) if name == "long1" else count) + raw
    widths = {
        "string1": "<B", "bytes1": "<B", "unicodestring1": "<B", "string4": "<i",
        "bytes4": "<I", "unicodestring4": "<I", "bytes8": "<Q", "bytearray8": "<Q",
        "unicodestring8": "<Q",
    }  # fmt: skip
    if name in widths:
        width = widths[name]
        text = text[:255] if width == "<B" else text
        count = len(text)
        if lie:
            count += rng.choice([1, 100, 2**20])
        if width == "<B":
            count = min(count, 255)
        elif width == "<i":
            count = min(count, 2**31 - 1)
        return struct.pack(width, count) + text
    raise ValueError(f"no encoder for pickle argument {name}")


def opcode_bytes(opcode: pickletools.OpcodeInfo, rng: random.Random) -> bytes:
    arg = opcode.arg.name if opcode.arg is not None else None
    return opcode.code.encode("latin-1") + argument(arg, rng)


def _pushes_value(op: Op) -> bool:
    """Opcodes that push one plain value and touch nothing else: safe to replace."""
    return op.name in _INT_OPS | {
        "NONE", "NEWTRUE", "NEWFALSE", "BINFLOAT", "FLOAT", "SHORT_BINUNICODE", "BINUNICODE",
        "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING", "SHORT_BINBYTES",
        "BINBYTES", "BINBYTES8", "EMPTY_TUPLE", "EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET",
    }  # fmt: skip


def _memo_count(ops: list[Op], upto: int) -> int:
    """How many memo slots are filled before op number ``upto`` (torch fills them in order)."""
    seen: set[int] = set()
    count = 0
    for op in ops[:upto]:
        if op.name == "MEMOIZE":
            seen.add(len(seen))
        elif op.name in _MEMO_PUTS and isinstance(op.arg, int):
            seen.add(op.arg)
        count = len(seen)
    return count


def _put(index: int) -> bytes:
    return b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)


def _get(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)


def nested(rng: random.Random) -> tuple[bytes, str]:
    depth = rng.choice([100, 999, 1000, 1001, 1500, 5000, 100_000])
    kind = rng.choice(["tuple", "list", "dict"])
    if kind == "tuple":
        return b")" + b"\x85" * depth, f"tuple nested {depth} deep"
    if kind == "list":
        return b"]" * depth + b"a" * (depth - 1), f"list nested {depth} deep"
    # {k: {k: ...}}: push all dicts, then SETITEM from the inside out
    return b"}" + (b"X\x01\x00\x00\x00k}") * (depth - 1) + b"s" * (depth - 1), (
        f"dict nested {depth} deep"
    )


def recursive(memo: int, rng: random.Random) -> tuple[bytes, str]:
    kind = rng.choice(["list", "dict", "shared", "shared", "tuple"])
    if kind == "list":  # l = []; l.append(l)
        return b"]" + _put(memo) + _get(memo) + b"a", "list containing itself"
    if kind == "dict":  # d = {}; d["self"] = d
        return b"}" + _put(memo) + b"X\x04\x00\x00\x00self" + _get(memo) + b"s", (
            "dict containing itself"
        )
    if kind == "tuple":  # ([l],) where l holds the tuple's list
        return b"]" + _put(memo) + _get(memo) + b"\x85a", "list holding a tuple of itself"
    levels = rng.choice([20, 40, 64])
    body = b")" + _put(memo)
    for level in range(levels):
        index = memo + level
        body += b"0" + _get(index) + _get(index) + b"\x86" + _put(index + 1)
    return body, f"pairs of pairs shared {levels} levels deep"


def _long(value: int) -> bytes:
    raw = pickle_long(value)
    return b"\x8a" + bytes([len(raw)]) + raw


COLLIDING = 2**61 - 1
"""``hash(n * COLLIDING) == 0`` for every integer n: keys chosen to collide."""


def filled_after_memo(memo: int, rng: random.Random) -> tuple[bytes, str]:
    """Containers stored in the memo empty, then filled with references to themselves or to
    one another (APPENDS / SETITEMS after BINPUT): a cycle, or copies**levels paths."""
    kind = rng.choice(["list itself", "dict itself", "shared lists", "shared dicts"])
    copies = rng.choice([2, 16, 64, 255])
    if kind == "list itself":
        body = b"]" + _put(memo) + b"(" + _get(memo) * copies + b"e"
        return body, f"list filled with {copies} references to itself after it was memoized"
    if kind == "dict itself":
        items = b"".join(encode_int(n, rng) + _get(memo) for n in range(copies))
        body = b"}" + _put(memo) + b"(" + items + b"u"
        return body, f"dict filled with {copies} references to itself after it was memoized"
    levels = rng.choice([4, 8, 20])
    empty = b"]" if kind == "shared lists" else b"}"
    body = b"".join(empty + _put(memo + level) + b"0" for level in range(levels + 1))
    for level in range(levels):
        if empty == b"]":
            fill = b"(" + _get(memo + level + 1) * copies + b"e"
        else:
            fill = (
                b"("
                + b"".join(encode_int(n, rng) + _get(memo + level + 1) for n in range(copies))
                + b"u"
            )
        body += _get(memo + level) + fill + b"0"
    return body + _get(memo), f"{kind}: {levels} levels of {copies} filled after memoized"


def flooded(rng: random.Random) -> tuple[bytes, str]:
    """A dict, set or dict of tuple keys whose keys all hash alike."""
    count = rng.choice([65, 1000, 20_000])
    kind = rng.choice(["dict", "set", "tuple keys", "DICT", "frozenset"])
    keys = [_long(n * COLLIDING) for n in range(1, count + 1)]
    if kind == "dict":
        body = b"}(" + b"".join(k + b"N" for k in keys) + b"u"
    elif kind == "set":
        body = b"\x8f(" + b"".join(keys) + b"\x90"
    elif kind == "frozenset":
        body = b"(" + b"".join(keys) + b"\x91"
    elif kind == "tuple keys":
        body = b"}(" + b"".join(k + b"\x85N" for k in keys) + b"u"
    else:
        body = b"(" + b"".join(k + b"N" for k in keys) + b"d"
    return body, f"{kind} of {count} keys that hash alike"


FLOOD_OPCODES = [b"\x8f", b"}", b"]", b")", b"N", b"\x88", b"(", b"2", b"\x94", b"0"]


def opcode_flood(rng: random.Random) -> tuple[bytes, str]:
    """One one-byte opcode a great many times (then whatever the pickle held goes on)."""
    opcode = rng.choice(FLOOD_OPCODES)
    count = rng.choice([10_000, 200_000, 1_000_000])
    if opcode in (b"2", b"\x94", b"0"):  # they need something on the stack
        return b"N" + opcode * count, f"NONE then {opcode!r} x {count}"
    return opcode * count, f"{opcode!r} x {count}"


def build_on_records(data: bytes, ops: list[Op], rng: random.Random) -> tuple[bytes, str]:
    """BUILD right after what a rebuild function or a persistent id returned: a state that
    rewrites a tensor's shape with floats, strings or 300,000 dimensions."""
    targets = [op for op in ops if op.name in ("REDUCE", "BINPERSID", "NEWOBJ")]
    if not targets:
        return data[: len(data) // 2], "pickle: cut in half"
    op = rng.choice(targets)
    value = rng.choice(
        [b"(G?\xf8\x00\x00\x00\x00\x00\x00t", b"(X\x01\x00\x00\x002t",
         b"(" + b"K\x01" * 300_000 + b"t", b"N"]
    )  # fmt: skip
    state = b"}X\x05\x00\x00\x00shape" + value + b"s"
    return splice(data, op.end, op.end, state + b"b"), f"pickle: BUILD after {op.name}@{op.start}"


def splice(data: bytes, start: int, end: int, new: bytes) -> bytes:
    return data[:start] + new + data[end:]


def mutate(data: bytes, rng: random.Random, sweep: int | None = None) -> tuple[bytes, str]:
    """One structural mutation of the single pickle ``data``. ``sweep`` picks the opcode to
    splice in (every opcode of the protocol in turn); otherwise the mutation is drawn."""
    ops = parse(data)
    if sweep is not None:
        opcode = OPCODES[sweep % len(OPCODES)]
        op = ops[rng.randrange(1, len(ops))] if len(ops) > 1 else ops[0]
        new = opcode_bytes(opcode, rng)
        return splice(
            data, op.start, op.start, new
        ), f"pickle: {opcode.name} spliced before {op.name}@{op.start}"
    choice = rng.random()
    ints = [op for op in ops if op.name in _INT_OPS]
    strings = [op for op in ops if op.name in {
        "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
        "BINSTRING", "STRING"}]  # fmt: skip
    globals_ = [op for op in ops if op.name == "GLOBAL"]
    values = [i for i, op in enumerate(ops) if _pushes_value(op)]
    if choice < 0.3 and ints:
        op = rng.choice(ints)
        value = interesting_int(op.arg if isinstance(op.arg, int) else None, rng)
        new = encode_int(value, rng)
        return splice(data, op.start, op.end, new), f"pickle: int {op.arg} -> {value} at {op.start}"
    if choice < 0.4 and strings:
        op = rng.choice(strings)
        text = rng.choice(STRINGS + [str(s.arg) for s in strings])
        new = encode_string(op.name, text, rng)
        return splice(data, op.start, op.end, new), f"pickle: string {op.arg!r:.40} -> {text!r:.40}"
    if choice < 0.45 and globals_:
        op = rng.choice(globals_)
        module, name = rng.choice(GLOBALS)
        new = b"c" + module.encode() + b"\n" + name.encode() + b"\n"
        return splice(data, op.start, op.end, new), f"pickle: global {op.arg} -> {module} {name}"
    if choice < 0.6:
        opcode = rng.choice(OPCODES)
        op = rng.choice(ops)
        new = opcode_bytes(opcode, rng)
        return splice(
            data, op.start, op.start, new
        ), f"pickle: {opcode.name} spliced before {op.name}@{op.start}"
    if choice < 0.7:
        op = rng.choice(ops)
        action = rng.choice(["drop", "repeat", "swap", "replace"])
        if action == "drop":
            return data[: op.start] + data[op.end :], f"pickle: {op.name}@{op.start} dropped"
        if action == "repeat":
            chunk = data[op.start : op.end]
            return data[: op.end] + chunk + data[op.end :], f"pickle: {op.name}@{op.start} twice"
        if action == "swap":
            index = ops.index(op)
            if index + 1 < len(ops):
                other = ops[index + 1]
                swapped = data[other.start : other.end] + data[op.start : op.end]
                return splice(
                    data, op.start, other.end, swapped
                ), f"pickle: {op.name} <-> {other.name}"
        opcode = rng.choice(OPCODES)
        new = opcode_bytes(opcode, rng)
        return splice(data, op.start, op.end, new), f"pickle: {op.name}@{op.start} -> {opcode.name}"
    if choice < 0.8 and values:
        index = rng.choice(values)
        op = ops[index]
        new, what = nested(rng)
        return splice(data, op.start, op.end, new), f"pickle: {op.name}@{op.start} -> {what}"
    if choice < 0.86 and values:
        index = rng.choice(values)
        op = ops[index]
        if rng.random() < 0.5:
            new, what = filled_after_memo(_memo_count(ops, index), rng)
        else:
            new, what = flooded(rng)
        return splice(data, op.start, op.end, new), f"pickle: {op.name}@{op.start} -> {what}"
    if choice < 0.9:
        op = rng.choice(ops)
        new, what = opcode_flood(rng)
        return splice(data, op.start, op.start, new), f"pickle: {what} before {op.name}@{op.start}"
    if choice < 0.93:
        return build_on_records(data, ops, rng)
    if values:
        index = rng.choice(values)
        op = ops[index]
        new, what = recursive(_memo_count(ops, index), rng)
        return splice(data, op.start, op.end, new), f"pickle: {op.name}@{op.start} -> {what}"
    return data[: len(data) // 2], "pickle: cut in half"
