"""Mutations of HDF5 files made with h5py on a copy: attributes of the wrong type (the model
config as an int array, layer names as floats), name lists that point nowhere or twice, weight
datasets replaced by strings, scalars, empty or huge (never written, external, virtual)
datasets, datasets in one huge chunk or in chunks whose stream inflates past their size, groups
and links that loop, external links to the worker's stdin, objects removed and renamed."""

from __future__ import annotations

import json
import os
import random
import tempfile
import zlib
from typing import Any

import h5py
import numpy as np

from . import documents

SEGMENT = 1 << 18


def _deflated(data: bytes) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(zlib.Z_FULL_FLUSH)


def deflate_stream(head: bytes, total: int) -> bytes:
    """A zlib stream (HDF5's deflate filter) that inflates to ``head`` then zeros, ``total``
    bytes in all: one deflated block of zeros repeated (flushed blocks stand alone), so that a
    GiB takes a MB and no time to make; the Adler-32 of the zeros is worked out, not summed."""
    head = head[:total]
    zeros = total - len(head)
    full, rest = divmod(zeros, SEGMENT)
    body = (_deflated(head) if head else b"") + _deflated(bytes(SEGMENT)) * full
    body += _deflated(bytes(rest)) if rest else b""
    end = zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    adler = zlib.adler32(head)
    low, high = adler & 0xFFFF, adler >> 16
    high = (high + zeros * low) % 65521
    return b"\x78\xda" + body + end + ((high << 16) | low).to_bytes(4, "big")


KERAS_ATTRS = ("model_config", "layer_names", "weight_names", "keras_version", "backend",
               "training_config", "name")  # fmt: skip
HUGE = 10**12


def _objects(h5: h5py.File) -> tuple[list[str], list[str]]:
    groups, datasets = ["/"], []
    h5.visititems(lambda n, o: (groups if isinstance(o, h5py.Group) else datasets).append(n))
    return groups, datasets


def _wrong_attribute(rng: random.Random, current: Any) -> tuple[Any, str]:
    """A value of the wrong type, shape or content for an attribute holding ``current``."""
    if isinstance(current, (str, bytes)) and rng.random() < 0.4:
        text = current.decode("utf-8", "replace") if isinstance(current, bytes) else current
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            new, note = documents.mutate_json(text.encode(), rng)
            return new.decode("utf-8", "surrogateescape"), f"JSON {note}"
    if isinstance(current, np.ndarray) and current.dtype.kind in "SUO" and current.size:
        names = [bytes(n) if isinstance(n, bytes) else str(n).encode() for n in current]
        choice = rng.choice(["reversed", "dropped", "twice", "nowhere", "path", "weird"])
        if choice == "reversed":
            names = names[::-1]
        elif choice == "dropped":
            del names[rng.randrange(len(names))]
        elif choice == "twice":
            names.insert(rng.randrange(len(names) + 1), rng.choice(names))
        elif choice == "nowhere":
            names[rng.randrange(len(names))] = b"no_such_layer"
        elif choice == "path":
            names[rng.randrange(len(names))] = rng.choice([b"../model_weights", b"/", b"."])
        else:
            weird = [b"", b"\xff\xfe", b"\x1b[2J", b"a" * 60000]
            names[rng.randrange(len(names))] = rng.choice(weird)
        return np.array(names), f"names {choice}"
    value = rng.choice(
        [
            np.arange(3),
            np.array([1.5, 2.5]),
            np.int64(5),
            np.float64("nan"),
            "",
            np.bytes_(b"\xff\xfe\x00"),
            np.array([[b"a", b"b"]]),
            h5py.Empty("f4"),
            np.bool_(True),
            np.array([], dtype="S1"),
            np.array([1 + 2j]),
            "x" * 60_000,
            "5",
            "[]",
            "null",
            '{"class_name": 5}',
            '{"class_name": "Functional", "config": {"layers": [{"class_name": "Conv2D"}]}}',
        ]
    )
    return value, f"-> {type(value).__name__} {str(value)[:30]!r}"


def _replacement(h5: h5py.File, name: str, rng: random.Random, filename: str) -> str:
    """Replace the dataset ``name`` by something else; say what."""
    old = h5[name]
    shape, dtype = old.shape, old.dtype
    data = old[()] if old.size < 10**6 else None
    del h5[name]
    kind = rng.choice(
        [
            "strings", "scalar", "empty", "zero-size", "lying", "lying-2d", "bigger", "complex",
            "bool", "int8", "float16", "float64", "compound", "vlen", "references", "nonfinite",
            "rank", "transposed", "external-missing", "external-zero", "virtual", "group",
            "soft-self", "soft-other", "external-link", "external-link-self", "fill",
            "external-link-stdin", "huge-chunk", "inflating-chunk",
        ]
    )  # fmt: skip
    size = int(np.prod(shape)) if shape else 1
    create = {"track_times": False}
    if kind == "strings":
        h5[name] = np.array([b"abc"] * max(size, 1))
    elif kind == "scalar":
        h5.create_dataset(name, data=np.float32(1.5), **create)
    elif kind == "empty":
        h5.create_dataset(name, data=h5py.Empty("f4"))
    elif kind == "zero-size":
        h5.create_dataset(name, shape=(0, *shape[1:]), dtype=dtype, **create)
    elif kind == "lying":
        h5.create_dataset(name, shape=(HUGE,), dtype="f4", chunks=(2**16,), **create)
    elif kind == "lying-2d":
        h5.create_dataset(name, shape=(10**6, 10**6), dtype="f4", chunks=(64, 64), **create)
    elif kind == "bigger":
        h5.create_dataset(name, data=np.ones(tuple(s + 1 for s in shape) or (2,), "f4"), **create)
    elif kind in ("complex", "bool", "int8", "float16", "float64"):
        target = {"complex": "c8", "bool": "?", "int8": "i1", "float16": "f2", "float64": "f8"}
        values = np.ones(shape, target[kind]) if data is None else np.asarray(data)
        h5.create_dataset(name, data=values.astype(target[kind]), **create)
    elif kind == "compound":
        h5.create_dataset(name, shape=shape, dtype=np.dtype([("a", "f4"), ("b", "i2")]), **create)
    elif kind == "vlen":
        h5.create_dataset(name, shape=shape, dtype=h5py.vlen_dtype("f4"), **create)
    elif kind == "references":
        h5.create_dataset(name, data=np.array([h5.ref] * max(size, 1), dtype=h5py.ref_dtype))
    elif kind == "nonfinite":
        values = np.full(shape, np.nan, "f4")
        values.flat[::2] = np.inf
        h5.create_dataset(name, data=values, **create)
    elif kind == "rank":
        h5.create_dataset(name, data=np.ones((1,) * 9 + (size,), "f4"), **create)
    elif kind == "transposed":
        h5.create_dataset(name, data=np.ones(shape[::-1] or (1,), "f4"), **create)
    elif kind == "external-missing":
        h5.create_dataset(name, shape=shape, dtype="f4",
                          external=[("missing.bin", 0, 4 * size)])  # fmt: skip
    elif kind == "external-zero":
        h5.create_dataset(name, shape=(2**28,), dtype="f4",
                          external=[("/dev/zero", 0, 2**30)])  # fmt: skip
    elif kind == "virtual":
        layout = h5py.VirtualLayout(shape=(HUGE,), dtype="f4")
        layout[0:10] = h5py.VirtualSource("missing.h5", "data", shape=(10,))
        h5.create_virtual_dataset(name, layout, fillvalue=1.0)
    elif kind == "group":
        h5.create_group(name)
    elif kind == "soft-self":
        h5[name] = h5py.SoftLink("/" + name.lstrip("/"))
    elif kind == "soft-other":
        _, datasets = _objects(h5)
        target = rng.choice(datasets) if datasets else "/"
        h5[name] = h5py.SoftLink("/" + target)
    elif kind == "external-link":
        h5[name] = h5py.ExternalLink("missing.h5", "/data")
    elif kind == "external-link-self":
        h5[name] = h5py.ExternalLink(filename, "/" + name.lstrip("/"))
    elif kind == "external-link-stdin":  # the worker's requests: opening it would wait or eat them
        h5[name] = h5py.ExternalLink("/dev/stdin", "/data")
    elif kind in ("huge-chunk", "inflating-chunk"):
        # huge: the dataset in one deflated chunk of at least 256 MiB (1 MB in the file);
        # inflating: a chunk of its own size whose stream inflates to 256 MiB all the same
        dims = [max(int(d), 1) for d in shape] or [1]
        chunks = list(dims)
        while kind == "huge-chunk" and int(np.prod(chunks)) * 4 < 1 << 28:
            chunks[0] *= 2
        new = h5.create_dataset(name, shape=dims, maxshape=(None,) * len(dims),
                                chunks=tuple(chunks), dtype="f4", compression="gzip")  # fmt: skip
        stream = deflate_stream(b"", max(int(np.prod(chunks)) * 4, 1 << 28))
        new.id.write_direct_chunk((0,) * len(dims), stream)
    else:  # a 1 GB dataset of fill values, never written
        h5.create_dataset(name, shape=(2**28,), dtype="f4", fillvalue=0.5, **create)
    return f"dataset {name} -> {kind}"


def _group_change(h5: h5py.File, name: str, rng: random.Random) -> str:
    kind = rng.choice(
        ["removed", "dataset", "loop", "soft-loop", "renamed", "parent-link", "external-stdin"]
    )
    if name == "/":
        kind = "loop"
    group = h5[name]
    if kind == "removed":
        del h5[name]
    elif kind == "dataset":
        del h5[name]
        h5[name] = np.arange(4, dtype="f4")
    elif kind == "loop":
        group["loop"] = group  # a hard link to itself: walking it never ends
    elif kind == "soft-loop":
        group["loop"] = h5py.SoftLink("/" + name.lstrip("/"))
    elif kind == "parent-link":
        group["up"] = h5["/"]
    elif kind == "external-stdin":  # the whole group in "another file": the worker's requests
        del h5[name]
        h5[name] = h5py.ExternalLink("/dev/stdin", "/")
    else:
        parent, _, base = name.rpartition("/")
        h5.move(name, f"{parent}/x{base}" if parent else f"x{base}")
    return f"group {name} {kind}"


def mutate(data: bytes, rng: random.Random, filename: str) -> tuple[bytes, str]:
    """One structural change to the HDF5 file ``data`` (to be saved as ``filename``), made with
    h5py on a copy. A change HDF5 cannot make (an attribute too large for its object header)
    is replaced by the next one drawn."""
    handle, path = tempfile.mkstemp(prefix="weightscope-fuzz-", suffix=".h5")
    os.close(handle)
    try:
        return _mutate_copy(path, data, rng, filename)
    finally:
        os.unlink(path)


def _mutate_copy(path: str, data: bytes, rng: random.Random, filename: str) -> tuple[bytes, str]:
    for _ in range(8):
        with open(path, "wb") as handle:
            handle.write(data)
        try:
            with h5py.File(path, "r+") as h5:
                note = _change(h5, rng, filename)
        except (OSError, ValueError, TypeError, RuntimeError, KeyError):
            # RuntimeError: writing a chunk; KeyError: h5py opening an object an earlier
            # mutation damaged ("chunk size can't be encoded")
            continue
        with open(path, "rb") as handle:
            return handle.read(), "hdf5: " + note
    return data[: len(data) // 2], "hdf5: cut in half"


def _change(h5: h5py.File, rng: random.Random, filename: str) -> str:
    groups, datasets = _objects(h5)
    choice = rng.random()
    attributes = [(g, a) for g in groups + datasets for a in h5[g].attrs]
    if choice < 0.4 and attributes:
        keras = [(g, a) for g, a in attributes if a in KERAS_ATTRS]
        owner, attr = rng.choice(keras if keras and rng.random() < 0.7 else attributes)
        if rng.random() < 0.1:
            del h5[owner].attrs[attr]
            return f"attribute {owner}:{attr} removed"
        value, what = _wrong_attribute(rng, h5[owner].attrs[attr])
        del h5[owner].attrs[attr]
        h5[owner].attrs[attr] = value
        return f"attribute {owner}:{attr} {what}"
    if choice < 0.8 and datasets:
        return _replacement(h5, rng.choice(datasets), rng, filename)
    return _group_change(h5, rng.choice(groups), rng)
