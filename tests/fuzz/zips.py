"""Mutations of zip archives (torch zips, TorchScript archives, ``.keras`` files): entries
removed, renamed, duplicated, their data replaced, shuffled or swapped, compression switched on,
an inner entry mutated by its own format's mutator, and the local headers, central directory
and end record given lies."""

from __future__ import annotations

import io
import random
import struct
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

from .raw import INTERESTING, pack_int


@dataclass
class Entry:
    name: str
    data: bytes
    compress: int


def read(data: bytes) -> list[Entry]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [Entry(i.filename, archive.read(i), i.compress_type) for i in archive.infolist()]


def write(entries: list[Entry]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate names are wanted here
        with zipfile.ZipFile(buffer, "w") as archive:
            for entry in entries:
                info = zipfile.ZipInfo(entry.name, date_time=(2024, 1, 1, 0, 0, 0))
                info.compress_type = entry.compress
                archive.writestr(info, entry.data)
    return buffer.getvalue()


InnerMutator = Callable[[str, bytes, random.Random], tuple[bytes, str]]
Comment = Callable[[bytes, random.Random], tuple[bytes, str]]


def mutate_entries(data: bytes, rng: random.Random, inner: InnerMutator) -> tuple[bytes, str]:
    """One change to the entries of the archive ``data``, rewritten as a valid zip.
    ``inner(name, data, rng)`` mutates the content of one entry by its own format."""
    entries = read(data)
    index = rng.randrange(len(entries))
    entry = entries[index]
    choice = rng.random()
    if choice < 0.45:
        new, what = inner(entry.name, entry.data, rng)
        entries[index] = Entry(entry.name, new, entry.compress)
        note = f"entry {entry.name}: {what}"
    elif choice < 0.55:
        del entries[index]
        note = f"entry {entry.name} removed"
    elif choice < 0.65:
        new_name = rename(entry.name, [e.name for e in entries], rng)
        entries[index] = Entry(new_name, entry.data, entry.compress)
        note = f"entry {entry.name} renamed {new_name!r}"
    elif choice < 0.72:
        copy = Entry(entry.name, rng.choice([entry.data, b"", rng.randbytes(16)]), entry.compress)
        entries.insert(rng.randrange(len(entries) + 1), copy)
        note = f"entry {entry.name} twice"
    elif choice < 0.85:
        how = rng.choice(["random", "empty", "shuffled", "other", "half", "longer"])
        other = rng.choice(entries).data
        shuffled = bytearray(entry.data)
        rng.shuffle(shuffled)
        new = {
            "random": rng.randbytes(len(entry.data)),
            "empty": b"",
            "shuffled": bytes(shuffled),
            "other": other,
            "half": entry.data[: len(entry.data) // 2],
            "longer": entry.data + entry.data,
        }[how]
        entries[index] = Entry(entry.name, new, entry.compress)
        note = f"entry {entry.name} data {how}"
    elif choice < 0.92 and len(entries) > 1:
        other_index = rng.randrange(len(entries))
        other = entries[other_index]
        entries[index] = Entry(entry.name, other.data, entry.compress)
        entries[other_index] = Entry(other.name, entry.data, other.compress)
        note = f"data of {entry.name} and {other.name} swapped"
    else:
        compress = zipfile.ZIP_DEFLATED if entry.compress == zipfile.ZIP_STORED else 0
        entries[index] = Entry(entry.name, entry.data, compress)
        note = f"entry {entry.name} compression {compress}"
    return write(entries), "zip: " + note


def rename(name: str, names: list[str], rng: random.Random) -> str:
    folder, _, base = name.rpartition("/")
    return rng.choice(
        [
            rng.choice(names),  # the name of another entry: now twice
            f"{folder}/x{base}" if folder else f"x{base}",
            f"other/{base}",
            base,
            name.upper(),
            f"../{name}",
            f"/{name}",
            f"{name}/",
            name + "\x00",
            f"{folder}/{base}/{base}",
            f"{folder}/data/99999999999999999999",
            f"{folder}/data/-1",
        ]
    )


def mutate_comments(data: bytes, rng: random.Random, inner: Comment) -> tuple[bytes, str]:
    """One member's comment, or the archive's, changed by ``inner`` (entries and the other
    comments kept as they are)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(buffer, "w") as target:
        infos = source.infolist()
        index = rng.randrange(len(infos) + 1)
        note = "zip: no comment"
        target.comment = source.comment
        if index == len(infos) and source.comment:
            comment, what = inner(source.comment, rng)
            target.comment = comment[:65535]  # what the zip format holds
            note = f"zip: archive comment: {what}"
        for at, info in enumerate(infos):
            content = source.read(info)
            if at == index and info.comment:
                comment, what = inner(info.comment, rng)
                info.comment = comment[:65535]
                note = f"zip: comment of {info.filename}: {what}"
            target.writestr(info, content)
    return buffer.getvalue(), note


def mutate_structure(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A lie in a local header, the central directory or the end record (CRCs left as they
    are, so most lies are seen), or bytes of the central directory flipped."""
    out = bytearray(data)
    end = data.rfind(b"PK\x05\x06")
    if end < 0:
        return data, "zip: no end record"
    cd_offset = struct.unpack_from("<I", data, end + 16)[0]
    headers = []
    at = cd_offset
    while 0 <= at < end and data[at : at + 4] == b"PK\x01\x02":
        headers.append(at)
        name_len, extra_len, comment_len = struct.unpack_from("<HHH", data, at + 28)
        at += 46 + name_len + extra_len + comment_len
    locals_ = [struct.unpack_from("<I", data, h + 42)[0] for h in headers]
    fields = [
        ("end: entries on disk", end + 8, 2),
        ("end: entries", end + 10, 2),
        ("end: directory size", end + 12, 4),
        ("end: directory offset", end + 16, 4),
        ("end: comment length", end + 20, 2),
    ]
    for h in headers:
        fields += [
            ("directory: method", h + 10, 2),
            ("directory: crc", h + 16, 4),
            ("directory: compressed size", h + 20, 4),
            ("directory: size", h + 24, 4),
            ("directory: name length", h + 28, 2),
            ("directory: extra length", h + 30, 2),
            ("directory: local header offset", h + 42, 4),
        ]
    for h in locals_:
        if data[h : h + 4] == b"PK\x03\x04":
            fields += [
                ("local: method", h + 8, 2),
                ("local: compressed size", h + 18, 4),
                ("local: size", h + 22, 4),
                ("local: name length", h + 26, 2),
                ("local: extra length", h + 28, 2),
            ]
    if rng.random() < 0.2:
        span = max(end - cd_offset, 1)
        places = [cd_offset + rng.randrange(span) for _ in range(rng.choice([1, 2, 8]))]
        for place in places:
            if 0 <= place < len(out):
                out[place] ^= 1 << rng.randrange(8)
        return bytes(out), f"zip: central directory bits flipped at {places}"
    name, place, width = rng.choice(fields)
    value = rng.choice([*INTERESTING, 0, 8, 12, 14, 99])
    out[place : place + width] = pack_int(value, width, random.Random(0))
    return bytes(out), f"zip: {name} at {place} -> {value}"
