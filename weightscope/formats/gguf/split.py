"""Split GGUF: one model written as ``NAME-00001-of-0000N.gguf`` ... by llama.cpp's
``gguf-split`` (or the ``gguf`` package's writer with ``split_max_tensors``). Each file is a
GGUF of its own holding some of the tensors; every one carries ``split.no`` (from 0),
``split.count`` and ``split.tensors.count`` (the tensors of all files), the first the model's
whole metadata.

The first file (or the folder) is read as the whole model: the other files found by name, each
read by the GGUF reader and checked against the first's split keys, then merged by
:mod:`weightscope.formats.sharded` (the machinery of every other shard set). A file missing or
saying anything else is one line naming it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from weightscope.errors import CorruptFileError, file_error
from weightscope.formats import sharded
from weightscope.formats.gguf.header import Header, read_header
from weightscope.limits import Limits
from weightscope.model import Model

NO, COUNT, TENSORS = "split.no", "split.count", "split.tensors.count"
MAX_SPLITS = 9999
"""gguf-split names files with five digits; more than this many is no split a tool wrote."""


@dataclass(frozen=True)
class Split:
    """A file's split keys: file ``no`` (from 0) of ``count``, of ``tensors`` in all."""

    no: int
    count: int
    tensors: int | None


def split_of(header: Header, path: Path) -> Split | None:
    """The split keys of ``header``; None where it has none (a file of its own). Keys that are
    not counts, or a number past the count, are refused with one line."""
    meta = header.metadata
    if NO not in meta and COUNT not in meta:
        return None
    values = {key: meta.get(key) for key in (NO, COUNT, TENSORS)}
    for key in (NO, COUNT):
        if key not in meta:
            raise file_error(
                CorruptFileError, path, f"has {NO if key == COUNT else COUNT} but no {key}"
            )
    for key, value in values.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
            raise file_error(CorruptFileError, path, f"{key} is {str(value)[:40]!r}, not a count")
    no, count = int(meta[NO]), int(meta[COUNT])
    if not 0 <= no < count <= MAX_SPLITS:
        raise file_error(CorruptFileError, path, f"{NO} is {no}, {COUNT} {count}: no such split")
    tensors = values[TENSORS]
    return Split(no, count, None if tensors is None else int(tensors))


def paths(first: Path, split: Split) -> list[Path]:
    """The files of the split whose first file is ``first``, in order, by gguf-split's naming
    (``NAME-00001-of-00003.gguf``)."""
    found = sharded.SHARD_NAME.match(first.name)
    if found is None or int(found["number"]) != 1 or int(found["count"]) != split.count:
        raise file_error(
            CorruptFileError,
            first,
            f"is split 1 of {split.count} ({COUNT}), but not named NAME-00001-of-"
            f"{split.count:05d}{first.suffix}: the other files cannot be found",
        )
    width, count = len(found["number"]), found["count"]
    return [
        first.with_name(f"{found['stem']}-{number:0{width}d}-of-{count}{found['suffix']}")
        for number in range(1, split.count + 1)
    ]


ReadOne = Callable[[Path, Header, list[str]], Model]
"""The GGUF reader's model of one file from its header, with these notes."""
Notes = Callable[[Header], list[str]]


def load(
    first: Path, header: Header, split: Split, limits: Limits, read_one: ReadOne, notes: Notes
) -> Model:
    """The whole model of the split whose first file ``first`` has ``header``."""
    files = paths(first, split)
    for path in files[1:]:
        if not path.is_file():
            raise file_error(
                CorruptFileError,
                path,
                f"split file missing: {first.name} is split 1 of {split.count} ({COUNT})",
            )
    headers: dict[Path, Header] = {}

    def load_file(path: Path, limits: Limits) -> Model:
        own = header if path == first else read_header(path, limits)
        _check(path, own, files.index(path), split, first)
        headers[path] = own
        return read_one(path, own, [])

    how = f"{split.count} files of a split GGUF"
    model = sharded.load_shards(first.parent, files, None, limits, load_file, how)
    held = sum(len(h.tensors) for h in headers.values())
    if split.tensors is not None and held != split.tensors:
        model.close()
        raise file_error(
            CorruptFileError,
            first,
            f"{TENSORS} is {split.tensors:,}, but the {split.count} files hold {held:,} tensors",
        )
    whole = replace(header, tensors=[t for path in files for t in headers[path].tensors])
    model.notes[1:1] = notes(whole)  # after "read from ...", as one file's notes
    # the model is its first file's (the folder holds no file of it; scan fingerprints inputs)
    model.source = first
    model.inputs = [path for path in model.inputs if path != first.parent]
    return model


def _check(path: Path, header: Header, number: int, split: Split, first: Path) -> None:
    """``header``, of file ``number`` (from 0) of the split, says what the first file says."""
    own = split_of(header, path)
    if own is None:
        raise file_error(
            CorruptFileError,
            path,
            f"has no {NO} or {COUNT}: not split {number + 1} of {first.name}",
        )
    if own.count != split.count:
        raise file_error(
            CorruptFileError, path, f"{COUNT} is {own.count}, {first.name} says {split.count}"
        )
    if own.no != number:
        raise file_error(CorruptFileError, path, f"{NO} is {own.no}, its name says {number}")
    if own.tensors != split.tensors:
        raise file_error(
            CorruptFileError, path, f"{TENSORS} is {own.tensors}, {first.name} says {split.tensors}"
        )


def paths_from(path: Path, split: Split) -> str:
    """The name of the first file of the split ``path`` is file ``split.no + 1`` of, where its
    name says it; else how to find it."""
    found = sharded.SHARD_NAME.match(path.name)
    if found is None:
        return "the first file (split.no 0)"
    return f"{found['stem']}-{1:0{len(found['number'])}d}-of-{found['count']}{found['suffix']}"
