"""Model files the frameworks build for the tests, built once and kept on disk between sessions.

``build_cached(destination, builder, *key)`` fills the folder ``destination`` with what
``builder(folder)`` writes there (any files, in any layout; ``builder`` uses the real frameworks).
The first time, the builder runs into a folder of the cache; afterwards the cached files are
copied, as long as nothing they were made from has changed. The cache entry is named by a hash of:

- the builder's source: its module's whole source file, and every helper module of the tests
  (``tests/**/*.py`` that are not ``test_*.py``), so that an edit anywhere a builder may reach
  builds anew;
- the builder's qualified name and ``key`` (the case, and digests of the arrays it is given);
- the versions of Python and of every package that writes or computes model files (numpy,
  h5py, torch, TensorFlow, Keras, tf-keras, onnx, onnxruntime, onnxscript, safetensors, protobuf).

A hit is thus a file a framework wrote earlier from the same builder source and versions. Each
entry holds a manifest of its files' SHA-256; an entry whose files no longer match (or that a
crash left half-written) is built again. Entries are built under a lock (``pytest-xdist``
workers building the same one wait for each other) and renamed into place when complete.

The cache folder is ``$WEIGHTSCOPE_TEST_CACHE``, else ``$XDG_CACHE_HOME/weightscope-tests``, else
``~/.cache/weightscope-tests``; ``WEIGHTSCOPE_TEST_CACHE=off`` builds every time. It lies outside
the repository; deleting it is always safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import inspect
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

ENV = "WEIGHTSCOPE_TEST_CACHE"
FORMAT = 1
"""Bump to drop every entry written by an older layout of the cache."""

TESTS = Path(__file__).resolve().parent
VERSIONED = (
    "numpy", "h5py", "torch", "tensorflow", "tensorflow-cpu", "keras", "tf-keras", "onnx",
    "onnxruntime", "onnxscript", "safetensors", "protobuf", "ml-dtypes",
)  # fmt: skip
MANIFEST = "manifest.json"
FILES = "files"


def cache_root() -> Path | None:
    """The cache folder, or None when caching is off."""
    setting = os.environ.get(ENV, "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    if setting:
        return Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "weightscope-tests"


def build_cached(destination: Path, builder: Callable[[Path], object], *key: object) -> Path:
    """Fill ``destination`` (created if missing; what is there stays) with the files
    ``builder(folder)`` writes, from the cache when the same builder and frameworks made them
    before. Returns ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    root = cache_root()
    if root is None:
        builder(destination)
        return destination
    entry = _entry(root, builder, key)
    shutil.copytree(entry / FILES, destination, symlinks=True, dirs_exist_ok=True)
    return destination


def digest(*values: object) -> str:
    """A stable digest of arrays, tensors (anything with ``numpy()``), and plain values, for
    the ``key`` of :func:`build_cached`."""
    hasher = hashlib.sha256()
    for value in values:
        _feed(hasher, value)
    return hasher.hexdigest()


# ---------------------------------------------------------------------------------------------


_VERIFIED: dict[Path, Path] = {}
"""Entries checked against their manifest in this session (checked once per session)."""


def _entry(root: Path, builder: Callable[[Path], object], key: tuple[object, ...]) -> Path:
    name = getattr(builder, "__qualname__", type(builder).__qualname__)
    if key and isinstance(key[0], str):
        name = f"{name}-{key[0]}"
    label = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[-60:]
    entry = root / f"{label}-{_key(builder, key)[:24]}"
    if entry in _VERIFIED:
        return _VERIFIED[entry]
    (root / ".locks").mkdir(parents=True, exist_ok=True)
    with _locked(root / ".locks" / entry.name):
        if not _intact(entry):
            shutil.rmtree(entry, ignore_errors=True)
            scratch = Path(tempfile.mkdtemp(prefix=f".{entry.name}-", dir=root))
            try:
                (scratch / FILES).mkdir()
                builder(scratch / FILES)
                manifest = {"builder": name, "key": repr(key), "files": _hashes(scratch / FILES)}
                (scratch / MANIFEST).write_text(json.dumps(manifest, indent=1))
                os.rename(scratch, entry)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    _VERIFIED[entry] = entry
    return entry


def _key(builder: Callable[[Path], object], key: tuple[object, ...]) -> str:
    hasher = hashlib.sha256()
    _feed(hasher, ["format", FORMAT, "python", list(sys.version_info[:3]), platform.machine()])
    _feed(hasher, ["versions", _versions()])
    module = sys.modules.get(getattr(builder, "__module__", "") or "")
    source = inspect.getsourcefile(module) if module is not None else None
    if source is None:  # a builder must come from a file, else its source cannot be keyed
        raise ValueError(f"{builder!r}: no source file to key the cache on")
    _feed(hasher, ["builder", Path(source).read_bytes(), builder.__qualname__])
    for helper in _helper_sources():
        _feed(hasher, ["helper", helper.relative_to(TESTS).as_posix(), helper.read_bytes()])
    _feed(hasher, ["key", list(key)])
    return hasher.hexdigest()


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in VERSIONED:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _helper_sources() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if not p.name.startswith("test_"))


def _feed(hasher: Any, value: object) -> None:
    """Hash ``value`` by content, with its type, so that different values never collide."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().numpy()
    if isinstance(value, np.ndarray):
        hasher.update(f"ndarray {value.dtype.str} {value.shape}|".encode())
        hasher.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, bytes):
        hasher.update(b"bytes %d|" % len(value) + value)
    elif isinstance(value, (str, Path)):
        data = str(value).encode()
        hasher.update(b"str %d|" % len(data) + data)
    elif value is None or isinstance(value, (bool, int, float, np.generic)):
        hasher.update(f"{type(value).__name__} {value!r}|".encode())
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{type(value).__name__} {len(value)}|".encode())
        for item in value:
            _feed(hasher, item)
    elif isinstance(value, dict):
        hasher.update(f"dict {len(value)}|".encode())
        for name in sorted(value, key=repr):
            _feed(hasher, name)
            _feed(hasher, value[name])
    else:  # anything else would be keyed by its address or not at all: refuse it
        raise TypeError(f"cannot key the cache on a {type(value).__name__}: {value!r}")


def _hashes(folder: Path) -> dict[str, str]:
    hashes = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_symlink():
            hashes[name] = "link:" + os.readlink(path)
        elif path.is_file():
            hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif not path.is_dir():
            raise ValueError(f"{path}: only files, folders and links can be cached")
    return hashes


def _intact(entry: Path) -> bool:
    try:
        manifest = json.loads((entry / MANIFEST).read_text())
        return bool(manifest["files"] == _hashes(entry / FILES))
    except (OSError, ValueError, KeyError):
        return False


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
