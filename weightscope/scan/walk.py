"""Which files a scan reads: the paths given, folders walked, globs expanded; each file
recognised by its content, not its name."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightscope.formats._common.remote import list_files, url_scheme
from weightscope.formats.registry import recognise, url_index_shards
from weightscope.formats.sharded import INDEX_SUFFIX, is_index, loose_set, part_of_sharded_model
from weightscope.formats.tensorflow.saved_files import part_of_saved_model

MODEL_SUFFIXES = frozenset(
    {".h5", ".hdf5", ".keras", ".pt", ".pth", ".ckpt", ".onnx", ".safetensors", ".gguf"}
)
"""Names that promise a model: such a file is scanned (and its error recorded) even when its
content is not recognised. Other unrecognised files (READMEs, configs, ONNX external data) are
only counted."""


@dataclass
class Walk:
    files: list[str] = field(default_factory=list)
    """Absolute paths to scan, sorted, each once."""
    not_models: list[str] = field(default_factory=list)
    """Files passed over: not recognised, and not named like a model."""
    missing: list[str] = field(default_factory=list)
    """Paths given that exist neither as a file or folder nor as a glob that matches."""


def walk(
    paths: Iterable[str],
    known: frozenset[str] = frozenset(),
    storage_options: Mapping[str, Any] | None = None,
) -> Walk:
    """The files under ``paths``. Files in ``known`` (from an earlier scan) are taken without
    looking at their content again. A URL (``s3://bucket/prefix/``, ``hf://org/repo``) is listed
    through fsspec with ``storage_options``; its files are taken by their names (looking at
    each one's content would cost a request per file)."""
    result = Walk()
    seen: set[str] = set()
    for given in paths:
        if url_scheme(given) is not None:
            _walk_url(given, storage_options, result, seen)
            continue
        if not os.path.lexists(given) and os.path.isfile(given + ".index"):
            given += ".index"  # a TensorFlow checkpoint named by its prefix, as load takes it
        named = os.path.isfile(given)  # a file named on the command line is always scanned
        found = os.path.isdir(given)  # an empty folder is not missing
        for file in _expand(given):
            found = True
            if file in seen:
                continue
            seen.add(file)
            if not named and part_of_saved_model(Path(file)):
                result.not_models.append(file)  # read with its saved_model.pb
            elif not named and part_of_sharded_model(Path(file)):
                result.not_models.append(file)  # a shard, read with its index
            elif named or file in known or _looks_like_model(Path(file)):
                result.files.append(file)
            else:
                result.not_models.append(file)
        if not found:
            result.missing.append(given)
    result.files.sort()
    return result


def _walk_url(
    given: str, storage_options: Mapping[str, Any] | None, result: Walk, seen: set[str]
) -> None:
    """The files ``given`` names (listed through fsspec), each taken by its name: a shard
    index is a model and the shards it names are not (read with it); of a set of shards
    without an index, the first is the model (the set is read from its folder); any other file
    is a model when named like one."""
    found = list_files(given, storage_options)
    if not found:
        result.missing.append(given)
    folders: dict[str, list[str]] = {}
    for url in found:
        folder, _, name = url.rpartition("/")
        folders.setdefault(folder, []).append(name)
    with_others: set[str] = set()
    for folder, names in folders.items():
        for name in names:
            if name.endswith(INDEX_SUFFIX):
                with_others.update(url_index_shards(f"{folder}/{name}", storage_options))
        with_others.update(f"{folder}/{name}" for name in loose_set(names)[1:])
    for url in found:
        if url not in seen:
            seen.add(url)
            named = url == given  # a file named on the command line is always scanned
            if not named and url in with_others:
                result.not_models.append(url)  # a shard, read with its index or its set
            elif named or named_like_model(url) or url.endswith(INDEX_SUFFIX):
                result.files.append(url)
            else:
                result.not_models.append(url)


def _looks_like_model(file: Path) -> bool:
    return (
        recognise(file) is not None
        or (named_like_model(file) and file.is_file())
        or is_index(file)  # a shard index: the model its shards make
    )


def named_like_model(file: str | os.PathLike[str]) -> bool:
    """Whether the file's name promises a model (:data:`MODEL_SUFFIXES`)."""
    return Path(file).suffix.lower() in MODEL_SUFFIXES


def _expand(given: str) -> Iterator[str]:
    """Regular files (links followed) named by ``given``: the file, every file under the
    folder, or every file a glob matches (``**`` crosses folders)."""
    if os.path.lexists(given):
        yield from _files_at(given)
        return
    if glob.has_magic(given):
        for match in sorted(glob.glob(given, recursive=True)):
            yield from _files_at(match)


def _files_at(path: str) -> Iterator[str]:
    if os.path.isdir(path):
        for folder, subfolders, names in os.walk(path):
            subfolders.sort()
            for name in sorted(names):
                yield from _regular(os.path.join(folder, name))
    else:
        yield from _regular(path)


def _regular(path: str) -> Iterator[str]:
    if os.path.isfile(path):  # follows links; FIFOs, sockets and devices are left out
        yield os.path.abspath(path)
