"""Mutations of text documents: JSON (Keras configs, the safetensors header) with values of the
wrong type, sizes that lie and deep nesting; safetensors headers that lie about shapes, offsets,
dtypes and their own length; TorchScript source text."""

from __future__ import annotations

import json
import random
import re
import struct
from typing import Any

from . import raw

NUMBER_KEYS = {
    "filters", "units", "kernel_size", "strides", "dilation_rate", "groups", "depth_multiplier",
    "axis", "batch_input_shape", "batch_shape", "shape", "input_shape", "input_dim",
    "output_dim", "epsilon", "momentum", "rate", "target_shape", "data_offsets",
}  # fmt: skip

DEEP = "[" * 100_000 + "]" * 100_000
ESCAPED_QUOTES = '"' + '\\"' * 30_000
"""An unterminated string of 30,000 escaped quotes (60 KB, small enough for an HDF5 attribute):
a regular expression that cuts strings out backtracks on it for minutes."""


def interesting_value(rng: random.Random, original: Any = None) -> Any:
    choices: list[Any] = [
        None, True, False, 0, -1, 1, 3, 10**12, 2**64, -(10**12), 1.5, float("nan"),
        float("inf"), 1e400, "", "x", "3", "\x1b[2J", "a" * 10_000, [], [0], [-1, -1],
        [10**6, 10**6], [10**12], {}, {"class_name": "Lambda", "config": {}},
        {"class_name": "Functional", "config": {"layers": 5}}, [[[[]]]],
    ]  # fmt: skip
    if isinstance(original, list) and original:
        choices += [original * 2, original[:-1]]
        if isinstance(original[-1], (int, float)):
            choices.append([*original[:-1], -original[-1]])
    if isinstance(original, dict) and original:
        choices += [list(original), {k: None for k in original}]
    return rng.choice(choices)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        node = node[key]
    return node


def mutate_json_value(obj: Any, rng: random.Random) -> tuple[Any, str]:
    """``obj`` (parsed JSON) with one value replaced, removed or duplicated."""
    paths = _paths(obj)
    numeric = [p for p in paths if p and p[-1] in NUMBER_KEYS]
    path = rng.choice(numeric) if numeric and rng.random() < 0.35 else rng.choice(paths)
    if not path:
        value = interesting_value(rng, obj)
        return value, f"json: whole document -> {str(value)[:40]}"
    parent, key = _get(obj, path[:-1]), path[-1]
    original = parent[key]
    action = rng.random()
    if action < 0.15:
        del parent[key]
        return obj, f"json: {'/'.join(map(str, path))[:120]} removed"
    if action < 0.22 and isinstance(parent, list):
        parent.insert(key, original)
        return obj, f"json: {'/'.join(map(str, path))[:120]} repeated"
    if action < 0.3 and isinstance(original, (int, float)) and not isinstance(original, bool):
        value = rng.choice([0, -1, original * 10**9, -original, str(original)])
    else:
        value = interesting_value(rng, original)
    parent[key] = value
    return obj, f"json: {'/'.join(map(str, path))[:120]} -> {str(value)[:40]}"


def mutate_json(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    try:
        obj = json.loads(data)
    except ValueError:
        return raw.mutate(data, rng)
    choice = rng.random()
    if choice < 0.1:
        return raw.mutate(data, rng)
    if choice < 0.15:  # deep nesting spliced in where a value was
        text = data.decode("utf-8", "replace")
        spots = [m.start() for m in re.finditer(r":\s*", text)]
        if spots:
            at = rng.choice(spots) + 1
            new = text[:at] + DEEP + "," + text[at:]
            return new.encode(), f"json: 100000 nested lists at {at}"
    if choice < 0.19:  # a string of escaped quotes that never ends, where a value was
        text = data.decode("utf-8", "replace")
        spots = [m.end() for m in re.finditer(r":\s*", text)]
        if spots:
            at = rng.choice(spots)
            rest = text[at:] if rng.random() < 0.3 else ""
            return (text[:at] + ESCAPED_QUOTES + rest).encode(), f"json: escaped quotes at {at}"
    obj, note = mutate_json_value(obj, rng)
    return json.dumps(obj).encode(), note


def mutate_text(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """TorchScript code: lines dropped or repeated, numbers changed, garbage and deep nesting
    inserted, invalid UTF-8."""
    lines = data.split(b"\n")
    index = rng.randrange(len(lines))
    choice = rng.random()
    if choice < 0.2:
        del lines[index]
        return b"\n".join(lines), f"text: line {index} dropped"
    if choice < 0.3:
        lines.insert(index, lines[index])
        return b"\n".join(lines), f"text: line {index} repeated"
    if choice < 0.55:
        numbers = list(re.finditer(rb"\d+", data))
        if numbers:
            match = rng.choice(numbers)
            value = rng.choice([b"0", b"-1", b"99999999999999999999", b"1e400", b"1" * 5000])
            new = data[: match.start()] + value + data[match.end() :]
            return new, f"text: number {match.group().decode()} -> {value[:20].decode()}"
    if choice < 0.75:
        junk = rng.choice(
            [
                b"(" * 1000 + b")" * 1000,
                b"[" * 100_000,
                b"\xff\xfe",
                b"  def forward(self):\n    return 1\n",
                b"  weight : Tensor\n  weight : Tensor\n",
                b'  __parameters__ = ["weight", "weight", ]\n',
                b'  __annotations__["x"] = __torch__.Missing\n',
                b"\x00",
            ]
        )
        at = sum(len(line) + 1 for line in lines[:index])
        return data[:at] + junk + data[at:], f"text: {junk[:20]!r} inserted at line {index}"
    return raw.mutate(data, rng)


# ---------------------------------------------------------------------------------------------
# safetensors

SAFE_DTYPES = ["F64", "F16", "BF16", "I64", "I8", "U8", "BOOL", "F8_E4M3", "C64", "I4", "U64",
               "bogus", 5, None, ["F32"]]  # fmt: skip


def split_safetensors(data: bytes) -> tuple[int, dict[str, Any], bytes]:
    length = struct.unpack("<Q", data[:8])[0]
    return length, json.loads(data[8 : 8 + length]), data[8 + length :]


def join_safetensors(header: Any, body: bytes, length: int | None = None) -> bytes:
    raw_header = json.dumps(header).encode()
    size = len(raw_header) if length is None else length
    return struct.pack("<Q", size % 2**64) + raw_header + body


def mutate_safetensors(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    _length, header, body = split_safetensors(data)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    spec = header[name]
    begin, end = spec["data_offsets"]
    dims = spec["shape"] or [1]
    choice = rng.random()
    if choice < 0.2:
        shape = rng.choice(
            [[10**12], [10**6, 10**6], [-1, 3], [], [0], ["3"], [2**63], [2**64], [1.5],
             [1e400], "48", None, [1] * 64, [*dims[:-1], dims[-1] + 1], [dims[0] * 2, *dims[1:]],
             [-4, -(2**62)], [True]]
        )  # fmt: skip
        spec["shape"] = shape
        note = f"shape of {name} -> {str(shape)[:40]}"
    elif choice < 0.45:
        offsets = rng.choice(
            [[-1, end], [begin, 2**64], [end, begin], [0, len(body) + 1],
             [len(body) + 100, len(body) + 200], [0, 2**63], [str(begin), str(end)], [begin],
             [begin, end, end], None, [begin - 4, end - 4], [0, 0], [1e400, end],
             [begin + 1, end + 1], [begin, end + 4], [2**63, 2**63 + (end - begin)]]
        )  # fmt: skip
        spec["data_offsets"] = offsets
        note = f"data_offsets of {name} -> {offsets}"
    elif choice < 0.55:
        spec["dtype"] = rng.choice(SAFE_DTYPES)
        note = f"dtype of {name} -> {spec['dtype']}"
    elif choice < 0.6:
        del spec[rng.choice(list(spec))]
        note = f"a key of {name} removed"
    elif choice < 0.7:
        header["__metadata__"] = rng.choice(
            [{"format": 5}, [1], "x", {"a": {"b": 1}}, None, {"k" * 1000: "v" * 100_000}]
        )
        note = f"__metadata__ -> {str(header['__metadata__'])[:40]}"
    elif choice < 0.8:
        length_lie = rng.choice(
            [
                len(json.dumps(header)) + 1,
                len(json.dumps(header)) - 1,
                0,
                1,
                2**63,
                2**64 - 1,
                len(data),
                len(data) - 7,
                100 * 1024 * 1024,
            ]
        )
        new = join_safetensors(header, body, length_lie)
        return new, f"safetensors: header length -> {length_lie}"
    elif choice < 0.85:
        raw_header = json.dumps(header).encode()
        dup = json.dumps({name: spec})[1:-1].encode()
        raw_header = raw_header[:-1] + b", " + dup + b"}"
        return struct.pack("<Q", len(raw_header)) + raw_header + body, f"safetensors: {name} twice"
    elif choice < 0.87:
        raw_header = json.dumps(header).encode()
        at = rng.randrange(1, len(raw_header))
        raw_header = raw_header[:at] + ESCAPED_QUOTES.encode()
        return (
            struct.pack("<Q", len(raw_header)) + raw_header + body,
            f"safetensors: header cut at {at} into escaped quotes",
        )
    elif choice < 0.9:
        cut = rng.randrange(len(body) + 1)
        return join_safetensors(header, body[:cut]), f"safetensors: body cut to {cut}"
    else:
        obj, note = mutate_json_value(header, rng)
        return join_safetensors(obj, body), f"safetensors: header {note}"
    return join_safetensors(header, body), f"safetensors: {note}"
