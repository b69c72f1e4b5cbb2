"""One mutant of a seed, deterministic from (fuzz seed, format, index): the mutator family of
the seed's format picks a structural mutation most of the time and a raw one otherwise."""

from __future__ import annotations

import random
import struct

from . import bundles, documents, gguf, hdf5, pickles, protobuf, raw, zips
from .seeds import Seed

Files = dict[str, bytes]

SWEEP_EVERY = 4
"""Pickle formats: every 4th mutant splices the next opcode of the pickle protocol, so that
300 mutants put every one of its 68 opcodes into each pickle format."""


def rng_for(fuzz_seed: int, fmt: str, index: int) -> random.Random:
    return random.Random(f"{fuzz_seed}/{fmt}/{index}")


def make(seed: Seed, files: Files, fuzz_seed: int, index: int) -> tuple[Files, str]:
    """Mutant number ``index`` of ``files`` (the seed's files by name) and what was done."""
    rng = rng_for(fuzz_seed, seed.name, index)
    files = dict(files)
    main = seed.filename
    sweep = index // SWEEP_EVERY if index % SWEEP_EVERY == 0 else None
    family = seed.family
    if family == "hdf5":
        if rng.random() < 0.55:
            files[main], note = hdf5.mutate(files[main], rng, main)
        else:
            files[main], note = raw.mutate(files[main], rng)
    elif family == "keras_zip":
        choice = rng.random()
        if choice < 0.65:
            files[main], note = zips.mutate_entries(files[main], rng, keras_entry)
        elif choice < 0.8:
            files[main], note = zips.mutate_structure(files[main], rng)
        else:
            files[main], note = raw.mutate(files[main], rng)
    elif family == "torch_zip":
        files[main], note = torch_zip(files[main], rng, sweep)
    elif family == "torch_legacy":
        files[main], note = torch_legacy(files[main], rng, sweep)
    elif family == "safetensors":
        if rng.random() < 0.65:
            files[main], note = documents.mutate_safetensors(files[main], rng)
        else:
            files[main], note = raw.mutate(files[main], rng)
    elif family == "onnx":
        files, note = onnx_files(seed, files, rng)
    elif family == "npz":
        files[main], note = npz(files[main], rng)
    elif family == "npy":
        if rng.random() < 0.7:
            files[main], note = npy_array(files[main], rng)
        else:
            files[main], note = raw.mutate(files[main], rng)
    elif family == "tf_checkpoint":
        files, note = bundles.mutate(files, main, seed.extra_files[0], rng)
    elif family == "tflite":
        files[main], note = raw.mutate(files[main], rng)
    elif family == "gguf":
        files[main], note = gguf.mutate(files[main], rng)
    else:
        raise ValueError(f"no mutators for {family}")
    return files, note


def keras_entry(name: str, data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if name.endswith(".json"):
        return documents.mutate_json(data, rng)
    if name.endswith(".h5") and rng.random() < 0.6:
        return hdf5.mutate(data, rng, name)
    return raw.mutate(data, rng)


def torch_entry(name: str, data: bytes, rng: random.Random) -> tuple[bytes, str]:
    base = name.rsplit("/", 1)[-1]
    if name.endswith(".pkl") and rng.random() < 0.8:
        try:
            return pickles.mutate(data, rng)
        except Exception:  # not a pickle after all (a .debug_pkl of another version)
            return raw.mutate(data, rng)
    if name.endswith(".py"):
        return documents.mutate_text(data, rng)
    if base in ("byteorder", "version", ".format_version", ".storage_alignment"):
        lies = [b"", b"big", b"middle", b"-1", b"99", b"3\n", b"0", b"\xff", b"1" * 400]
        value = rng.choice(lies)
        return value, f"{value[:20]!r}"
    if "/data/" in name and rng.random() < 0.5:
        size = rng.choice([0, len(data) - 1, len(data) + 1, len(data) // 2, len(data) * 2])
        return (data * 3)[:size], f"storage bytes {len(data)} -> {size}"
    return raw.mutate(data, rng)


def torch_zip(data: bytes, rng: random.Random, sweep: int | None) -> tuple[bytes, str]:
    """Torch zips and TorchScript archives: the pickle of the root object most of the time."""
    entries = zips.read(data)
    pickle_entry = next((e for e in entries if e.name.endswith("/data.pkl")), None)
    choice = rng.random()
    if pickle_entry is not None and (sweep is not None or choice < 0.4):
        pickle_entry.data, note = pickles.mutate(pickle_entry.data, rng, sweep)
        return zips.write(entries), f"zip: entry {pickle_entry.name}: {note}"
    if choice < 0.8:
        return zips.mutate_entries(data, rng, torch_entry)
    if choice < 0.9:
        return zips.mutate_structure(data, rng)
    return raw.mutate(data, rng)


def torch_legacy(data: bytes, rng: random.Random, sweep: int | None) -> tuple[bytes, str]:
    """Legacy files: five pickles (magic, protocol, sys_info, root object, storage keys), then
    each storage as an int64 element count and its bytes."""
    spans = pickles.split_stream(data)
    choice = rng.random()
    if len(spans) == 5 and (sweep is not None or choice < 0.6):
        which = 3 if sweep is not None or rng.random() < 0.6 else rng.randrange(5)
        start, end = spans[which]
        new, note = pickles.mutate(data[start:end], rng, sweep)
        return data[:start] + new + data[end:], f"legacy pickle {which}: {note}"
    if len(spans) == 5 and choice < 0.8:
        storages = spans[-1][1]
        if rng.random() < 0.6:
            at = storages  # the first storage's element count
        else:
            at = storages + 4 * rng.randrange(max((len(data) - storages - 8) // 4, 1))
        value = rng.choice([*raw.INTERESTING, 10**12, 53, 55, 0])
        new = struct.pack("<Q", value % 2**64)
        return data[:at] + new + data[at + 8 :], f"legacy storage count at {at} -> {value}"
    return raw.mutate(data, rng)


NPY_LIES = [
    b"'shape': (1000000, 1000000)", b"'shape': (-1,)", b"'shape': ()", b"'shape': (0,)",
    b"'shape': (" + b"1, " * 100 + b")", b"'descr': '|O'", b"'descr': '<U4'", b"'descr': '>f8'",
    b"'descr': [('a', '<f4')]", b"'descr': 'V16'", b"'fortran_order': True", b"'descr': '<f2'",
    b"'shape': __import__('os').getpid()", b"'descr': '<c8'", b"'descr': '|b1'",
]  # fmt: skip


def npy_array(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A ``.npy``: a lie in its header dict, its header length, its version, or its data size."""
    if not data.startswith(b"\x93NUMPY") or len(data) < 12:
        return raw.mutate(data, rng)
    prefix = 10 if data[6] == 1 else 12
    length = int.from_bytes(data[8:prefix], "little")
    header, body = data[prefix : prefix + length], data[prefix + length :]
    choice = rng.random()
    if choice < 0.5:
        lie = rng.choice(NPY_LIES)
        key = lie.split(b":")[0]
        start = header.find(key)
        end = header.find(b", '", start + 1) if start >= 0 else -1
        if start < 0 or end < 0:
            end = header.find(b"}", start + 1)
        if start >= 0 and end > start:
            header = header[:start] + lie + header[end:]
        new = data[:8] + len(header).to_bytes(prefix - 8, "little") + header + body
        return new, f"npy header {lie[:40]!r}"
    if choice < 0.7:
        value = rng.choice([*raw.INTERESTING, length + 1, length - 1, 0, 65535])
        field = value % (1 << (8 * (prefix - 8)))
        new = data[:8] + field.to_bytes(prefix - 8, "little") + data[prefix:]
        return new, f"npy length {value}"
    if choice < 0.8:
        version = rng.choice([0, 2, 3, 4, 255])
        return data[:6] + bytes([version]) + data[7:], f"npy version {version}"
    size = rng.choice([0, len(body) - 1, len(body) + 1, len(body) // 2, len(body) * 2])
    return data[: prefix + length] + (body * 3)[:size], f"npy data {len(body)} -> {size} bytes"


def npz_entry(name: str, data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if name.endswith(".npy") and rng.random() < 0.7:
        return npy_array(data, rng)
    return raw.mutate(data, rng)


def npz(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """An ``.npz``: an export's comments (layer kinds, layouts), a member's ``.npy``, the zip."""
    choice = rng.random()
    if choice < 0.2:
        return zips.mutate_comments(data, rng, documents.mutate_json)
    if choice < 0.7:
        return zips.mutate_entries(data, rng, npz_entry)
    if choice < 0.85:
        return zips.mutate_structure(data, rng)
    return raw.mutate(data, rng)


def onnx_files(seed: Seed, files: Files, rng: random.Random) -> tuple[Files, str]:
    from onnx import ModelProto

    main = seed.filename
    choice = rng.random()
    if seed.extra_files and choice < 0.3:
        name = rng.choice(seed.extra_files)
        if rng.random() < 0.15:
            del files[name]
            return files, f"data file {name} removed"
        action = rng.random()
        if action < 0.4:
            cut = rng.randrange(len(files[name]) + 1)
            files[name], note = files[name][:cut], f"cut to {cut}"
        elif action < 0.5:
            files[name], note = files[name] + rng.randbytes(rng.choice([1, 100])), "extended"
        else:
            files[name], note = raw.mutate(files[name], rng)
        return files, f"data file {name}: {note}"
    if rng.random() < 0.75:
        files[main], note = protobuf.mutate(files[main], ModelProto.DESCRIPTOR, rng)
    else:
        files[main], note = raw.mutate(files[main], rng)
    return files, note
