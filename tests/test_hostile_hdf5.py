"""Hostile files, round two: the JSON nesting check, HDF5 links, libhdf5's own loops and HDF5
chunks.

Each hostile file is built here. ``weightscope inspect FILE`` runs it in a subprocess capped at
1 GiB of address space (``RLIMIT_AS``) and 10 s; it must exit 2 with exactly one line
``weightscope: FILE: <reason>`` (or read the file correctly), and leave the file's folder as it
was.

1. JSON: ``nesting_depth`` counts brackets outside strings in one linear pass; it is checked
   against the regular expression it replaced on random and real JSON texts, with chunk
   boundaries falling everywhere (inside escapes too), and a long unterminated string of escaped
   quotes (a safetensors header, a ``.keras`` ``config.json``, an ``.h5`` ``model_config``
   attribute) is answered within 1 s of CPU time.
2. Links: an external link to a FIFO beside the file, wherever the reader looks, is refused with
   one line, never opened; soft links are not followed.
3. libhdf5's loops: the file's structure is walked in a forked child first, under a deadline per
   step (``max_hdf5_seconds``); the fuzzer's ``keras_h5-2.bin`` is refused in about 3 s, a
   walk that keeps progressing is never stopped, a crash refuses the file, the child runs
   nothing of its parent's and dies with it.
4. Chunks: a chunk over ``max_hdf5_chunk_bytes`` (4 x 3 values in a chunk of a GiB) and a chunk
   whose deflate stream inflates past its size are refused without the GiB ever being
   allocated; chunked datasets within the limits are read.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from fuzz.hdf5 import deflate_stream
from measured_cli import run_measured

import weightscope
from weightscope import LimitError, Limits, WeightscopeError
from weightscope.formats._common import json_text
from weightscope.formats.keras import hdf5_guard, hdf5_guard_server, hdf5_walk
from weightscope.formats.keras.hdf5 import Origin
from weightscope.limits import LimitExceeded

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_H5 = REPO / "weightscope" / "examples" / "digits_cnn.h5"
GiB = 1 << 30
CLI_TIMEOUT_S = 10.0

# ---------------------------------------------------------------------------------------------
# running the command line on a hostile file


def folder_state(folder: Path) -> dict[str, str]:
    """Every entry of ``folder``: the SHA-256 of a regular file, the kind of anything else."""
    state = {}
    for entry in sorted(folder.iterdir()):
        if entry.is_symlink():
            state[entry.name] = f"link to {os.readlink(entry)}"
        elif entry.is_fifo():
            state[entry.name] = "fifo"
        else:
            state[entry.name] = hashlib.sha256(entry.read_bytes()).hexdigest()
    return state


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss: int
    """The most memory the command held at once, in bytes."""


def inspect(path: Path, *args: str) -> Run:
    """``weightscope inspect PATH ARGS`` in a subprocess under 1 GiB of address space and 10 s
    (killed then: a failure), the file's folder unchanged afterwards."""
    before = folder_state(path.parent)
    run = run_measured(["inspect", str(path), *args], CLI_TIMEOUT_S)
    assert folder_state(path.parent) == before, "the input's folder changed"
    return Run(run.returncode, run.stdout.decode(), run.stderr.decode(), run.seconds, run.peak_rss)


def assert_refused(path: Path, *words: str, args: tuple[str, ...] = ()) -> Run:
    """``inspect`` exits 2 with one line ``weightscope: PATH: ...`` holding ``words``."""
    process = inspect(path, *args)
    lines = process.stderr.splitlines()
    assert process.returncode == 2 and process.stdout == "", (process.returncode, process.stderr)
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith(f"weightscope: {path}: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    return process


class Hang(BaseException):
    """Raised by :func:`deadline`'s signal (a BaseException: no ``except Exception`` hides it)."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Interrupt this thread after ``seconds``: a regression fails instead of hanging the run."""

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def refused_in_process(path: Path) -> tuple[str, float]:
    """``weightscope.load(path)`` must raise a WeightscopeError: its line and the CPU seconds
    this process spent (a deadline of 30 s turns a regression into a failure)."""
    start = time.process_time()
    with deadline(30), pytest.raises(WeightscopeError) as refused:
        weightscope.load(path)
    return str(refused.value), time.process_time() - start


# ---------------------------------------------------------------------------------------------
# 1. the JSON nesting check: linear, and the same depth as before on valid JSON

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def reference_depth(text: bytes) -> int:
    """The depth as it was counted before: strings cut out by a regular expression (quadratic on
    an unterminated string of escaped quotes, exact on valid JSON), then brackets counted."""
    deepest = level = 0
    for byte in _STRING.sub(b"", text).translate(None, _NOT_BRACKETS):
        level += 1 if byte in b"[{" else -1
        deepest = max(deepest, level)
    return deepest


_PIECES = ['"', "\\", "[", "]", "{", "}", "a", "é", "\n", '\\"', "\\\\", '\\\\"', '"]', "[\\"]


def _random_string(rng: random.Random) -> str:
    return "".join(rng.choice(_PIECES) for _ in range(rng.randrange(8)))


def _random_value(rng: random.Random, depth: int = 0) -> object:
    draw = rng.random()
    if depth > 7 or draw < 0.3:
        return rng.choice([1, -2.5, None, True, _random_string(rng), _random_string(rng)])
    if draw < 0.65:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_random_string(rng): _random_value(rng, depth + 1) for _ in range(rng.randrange(4))}


def json_texts() -> list[bytes]:
    """Random JSON texts whose strings are full of quotes, backslashes and brackets, written
    compact and indented, ASCII and UTF-8; and real ones (a Keras model config, a safetensors
    header)."""
    rng = random.Random(20261207)
    texts = []
    for _ in range(600):
        value = _random_value(rng)
        indent = rng.choice([None, 1, 2])
        texts.append(json.dumps(value, ensure_ascii=rng.random() < 0.5, indent=indent).encode())
    with h5py.File(EXAMPLE_H5, "r") as h5:
        config = h5.attrs["model_config"]
    texts.append(config.encode() if isinstance(config, str) else bytes(config))
    header = {
        'a"b\\': {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
        "__metadata__": {"format": "pt", "note": '[{"\\"}]'},
    }
    texts.append(json.dumps(header).encode())
    texts += [b"", b"[]", b'"\\\\"', b'["\\\\\\"]"]', b'{"\\\\\\\\": [[["]"]]]}', b"[" * 300]
    return texts


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 64, 1 << 20])
def test_nesting_depth_matches_the_reference(chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same depth as the regular expression, chunk boundaries falling anywhere (between a
    backslash and the quote it escapes, inside runs of backslashes)."""
    monkeypatch.setattr(json_text, "_CHUNK", chunk)
    for text in json_texts():
        assert json_text.nesting_depth(text) == reference_depth(text), text[:200]


def escaped_quotes(size: int, opening: bytes = b"") -> bytes:
    """``opening`` then an unterminated string of escaped quotes, ``"\\"\\"\\"...``, ``size``
    bytes in all."""
    return opening + b'"' + b'\\"' * ((size - len(opening) - 1) // 2)


@pytest.mark.parametrize("opening", [b"", b"[", b"\\"])
def test_nesting_depth_is_linear_on_escaped_quotes(opening: bytes) -> None:
    """2 MB of ``\\"`` (hours for the regular expression) in well under a second; the depth
    counts the brackets before the string only."""
    text = escaped_quotes(2_000_000, opening)
    start = time.process_time()
    with deadline(30):
        depth = json_text.nesting_depth(text)
    assert time.process_time() - start < 1.0
    assert depth == (1 if opening == b"[" else 0)


def safetensors_with_header(folder: Path, header: bytes) -> Path:
    path = folder / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def keras_with_config(folder: Path, config: bytes) -> Path:
    """A ``.keras`` zip whose ``config.json`` is ``config`` (deflated) beside a valid store."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5["layers/dense/vars/0"] = np.ones((4, 3), np.float32)
    path = folder / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", config, compress_type=zipfile.ZIP_DEFLATED)
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        archive.writestr("model.weights.h5", buffer.getvalue())
    return path


def legacy_h5(path: Path, model_config: str | None = None, libver: str = "earliest") -> Path:
    """A Keras legacy ``.h5``: one Dense layer in ``model_weights``, with ``model_config``."""
    with h5py.File(path, "w", libver=libver) as h5:
        if model_config is not None:
            h5.attrs["model_config"] = model_config
        h5.attrs["keras_version"] = "3.0.0"
        weights = h5.create_group("model_weights")
        weights.attrs["layer_names"] = np.array([b"dense"])
        group = weights.create_group("dense")
        group.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        group["dense/kernel:0"] = np.arange(12, dtype=np.float32).reshape(4, 3)
        group["dense/bias:0"] = np.zeros(3, np.float32)
    return path


def h5_with_config(folder: Path, config: bytes) -> Path:
    """A legacy ``.h5`` whose ``model_config`` attribute is ``config`` (over 64 KB: stored
    densely, as HDF5 1.8+ allows)."""
    return legacy_h5(folder / "model.h5", config.decode(), libver="latest")


ESCAPED_QUOTE_FILES = {
    "safetensors": (lambda f: safetensors_with_header(f, escaped_quotes(200_000, b"{"))),
    "keras_config": (lambda f: keras_with_config(f, escaped_quotes(2_000_000, b'{"a": '))),
    "h5_model_config": (lambda f: h5_with_config(f, escaped_quotes(200_000, b'{"a": '))),
}


@pytest.mark.parametrize("kind", list(ESCAPED_QUOTE_FILES))
def test_escaped_quote_json_is_refused_quickly(kind: str, tmp_path: Path) -> None:
    """An unterminated string of escaped quotes is not JSON: one line, within 1 s of CPU through
    the API (it took minutes to hours) and within 10 s on the command line."""
    path = ESCAPED_QUOTE_FILES[kind](tmp_path)
    if kind == "keras_config":
        assert path.stat().st_size < 20_000  # 2 MB of config.json, deflated
    line, cpu = refused_in_process(path)
    assert cpu < 1.0, cpu
    assert line.startswith(f"{path}: ") and "JSON" in line, line
    assert_refused(path, "JSON")


# ---------------------------------------------------------------------------------------------
# 2. links: never followed. An external link to a FIFO beside the file blocked for ever inside
# libhdf5 (group.get and `in` follow links); a soft link is not followed either.


def store(path: Path) -> Path:
    """A Keras 3 weights store: one Dense layer."""
    with h5py.File(path, "w") as h5:
        h5["layers/dense/vars/0"] = np.arange(12, dtype=np.float32).reshape(4, 3)
        h5["layers/dense/vars/1"] = np.zeros(3, np.float32)
    return path


def _relink(path: Path, name: str, link: object) -> None:
    with h5py.File(path, "r+") as h5:
        del h5[name]
        h5[name] = link


def keras_zip_of(folder: Path, weights: Path) -> Path:
    config = {"class_name": "Sequential", "config": {"name": "s", "layers": []}}
    path = folder / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        archive.write(weights, "model.weights.h5")
    weights.unlink()
    return path


def _fifo(folder: Path) -> Path:
    fifo = folder / "fifo.h5"
    os.mkfifo(fifo)
    return fifo


def _legacy_linked(name: str, absolute: bool = False) -> object:
    def build(folder: Path) -> Path:
        fifo = _fifo(folder)
        path = legacy_h5(folder / "model.h5")
        _relink(path, name, h5py.ExternalLink(str(fifo) if absolute else fifo.name, "/"))
        return path

    return build


def _store_linked(name: str, keras_zip: bool = False) -> object:
    def build(folder: Path) -> Path:
        fifo = _fifo(folder)
        path = store(folder / "model.weights.h5")
        _relink(path, name, h5py.ExternalLink(str(fifo), "/x"))
        return keras_zip_of(folder, path) if keras_zip else path

    return build


EXTERNAL_LINKS = {
    "legacy_model_weights": _legacy_linked("model_weights", absolute=True),
    "legacy_layer_group": _legacy_linked("model_weights/dense", absolute=True),
    "legacy_weight": _legacy_linked("model_weights/dense/dense/kernel:0"),
    "store_layers": _store_linked("layers"),
    "store_layer": _store_linked("layers/dense"),
    "store_variable": _store_linked("layers/dense/vars/1"),
    "keras_zip_variable": _store_linked("layers/dense/vars/1", keras_zip=True),
}


@pytest.mark.parametrize("kind", list(EXTERNAL_LINKS))
def test_external_link_to_a_fifo_is_refused(kind: str, tmp_path: Path) -> None:
    """Wherever the reader looks (a group, a layer listed in layer_names, a weight listed in
    weight_names, a store's layers or variables), an external link is refused with one line,
    never opened: the FIFO beside the file would block HDF5 for ever."""
    path = EXTERNAL_LINKS[kind](tmp_path)  # type: ignore[operator]
    run = assert_refused(path, "is an external link to", "fifo.h5", "refused")
    assert "weightscope follows no links and reads only the file it is given" in run.stderr


def test_soft_links_are_not_followed(tmp_path: Path) -> None:
    """A layer that layer_names sends to a soft link is refused; a soft link among a store's
    variables is passed over (the variable it names is read through its hard link)."""
    legacy = legacy_h5(tmp_path / "legacy.h5")
    with h5py.File(legacy, "r+") as h5:
        h5.move("model_weights/dense", "model_weights/real")
        h5["model_weights/dense"] = h5py.SoftLink("/model_weights/real")
    assert_refused(legacy, "'/model_weights/dense' is a soft link to '/model_weights/real'")

    path = store(tmp_path / "model.weights.h5")
    with h5py.File(path, "r+") as h5:
        h5["layers/dense/vars/2"] = h5py.SoftLink("/layers/dense/vars/0")
    with weightscope.load(path) as model:
        assert [t.name for _, t in model.tensors()] == ["vars/0", "vars/1"]


# ---------------------------------------------------------------------------------------------
# 3. libhdf5's own loops: the structure is walked in a child first, under a deadline per step

FOUND_LOOP = REPO / "tests" / "fuzz" / "found" / "keras_h5-2.bin"
"""A Keras 3 legacy ``.h5`` whose attribute heap libhdf5 reads for ever (pure h5py too)."""


def test_libhdf5_loop_is_refused_within_the_deadline(tmp_path: Path) -> None:
    path = tmp_path / "model.h5"
    path.write_bytes(FOUND_LOOP.read_bytes())
    assert_refused(
        path,
        "the HDF5 library spent over 3 s in one step of reading the file's structure",
        "over the limit max_hdf5_seconds=3 (raise it with --limit max_hdf5_seconds=6)",
    )
    start = time.monotonic()
    with deadline(30), pytest.raises(LimitError, match="max_hdf5_seconds=1 "):
        weightscope.load(path, limits=Limits(max_hdf5_seconds=1))
    assert time.monotonic() - start < 5


def _origin(tmp_path: Path, seconds: int = 1) -> tuple[Origin, Path]:
    path = legacy_h5(tmp_path / "model.h5")
    return Origin(path, "Keras HDF5 file", Limits(max_hdf5_seconds=seconds)), path


class _ForkedHelper:
    """A helper forked from this process with its children's walk replaced by ``walk``: the
    helper's protocol tested with walks that stall or crash on purpose."""

    def __init__(self, fd: int, walk: object) -> None:
        self.returncode: int | None = None
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the helper
            try:
                hdf5_walk.Walk.walk = walk  # type: ignore[method-assign]
                hdf5_guard_server.serve(fd)
            finally:
                os._exit(1)

    def poll(self) -> int | None:
        if self.returncode is None and os.waitpid(self.pid, os.WNOHANG)[0]:
            self.returncode = 0
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            os.waitpid(self.pid, 0)
            self.returncode = 0
        return self.returncode


ROUTES = ["forked", "helper"]
"""A process forks the rehearsing child itself, or (holding a framework) has its helper fork
it."""


def _rehearse_with(
    walk: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str = "forked"
) -> None:
    """``rehearse`` on a small file, the child's walk replaced by ``walk(self, h5)``."""
    origin, path = _origin(tmp_path)
    if route == "forked":
        monkeypatch.setattr(hdf5_guard, "SERVE_ABOVE_BYTES", 2**62)
        monkeypatch.setattr(hdf5_walk.Walk, "walk", walk)
        with deadline(30):
            hdf5_guard.rehearse(origin, path)
        return
    server = hdf5_guard_server.Helper(lambda fd: _ForkedHelper(fd, walk))
    monkeypatch.setattr(hdf5_guard, "SERVE_ABOVE_BYTES", 0)
    monkeypatch.setattr(hdf5_guard_server, "helper", lambda: server)
    try:
        with deadline(30):
            hdf5_guard.rehearse(origin, path)
    finally:
        server.stop()


@pytest.mark.parametrize("route", ROUTES)
def test_the_deadline_is_per_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """A walk that keeps finishing steps is never stopped, however long it takes in all: a large
    file on a slow disk is not refused for its size."""

    def slow_but_steady(self: hdf5_walk.Walk, h5: h5py.File) -> None:
        for _ in range(25):
            time.sleep(0.1)
            self.progress()

    start = time.monotonic()
    _rehearse_with(slow_but_steady, tmp_path, monkeypatch, route)
    assert time.monotonic() - start >= 2.5


@pytest.mark.parametrize("route", ROUTES)
def test_a_stalled_step_is_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    def stalls(self: hdf5_walk.Walk, h5: h5py.File) -> None:
        time.sleep(60)

    start = time.monotonic()
    with pytest.raises(LimitExceeded) as exceeded:
        _rehearse_with(stalls, tmp_path, monkeypatch, route)
    assert exceeded.value.name == "max_hdf5_seconds" and exceeded.value.limit == 1
    assert time.monotonic() - start < 5


@pytest.mark.parametrize("route", ROUTES)
def test_a_crash_refuses_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """The library crashing on the file would crash this process too: the file is damaged."""

    def crashes(self: hdf5_walk.Walk, h5: h5py.File) -> None:
        os.kill(os.getpid(), signal.SIGSEGV)

    with pytest.raises(WeightscopeError, match=r"crashed reading the file's structure .*SIGSEGV"):
        _rehearse_with(crashes, tmp_path, monkeypatch, route)


def _counted_walks(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The sources this process's rehearsals walk from now on (each walk forked here)."""
    walks: list[object] = []
    forked = hdf5_guard._forked

    def counted(source: object, *args: object) -> object:
        walks.append(source)
        return forked(source, *args)

    monkeypatch.setattr(hdf5_guard, "SERVE_ABOVE_BYTES", 2**62)
    monkeypatch.setattr(hdf5_guard, "_forked", counted)
    return walks


def test_an_unchanged_file_is_walked_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that reads a file again (``export`` after ``inspect``, ``compare`` of a file
    with itself) walks it once; a write to it, or another depth limit, walks it again."""
    origin, path = _origin(tmp_path)
    walks = _counted_walks(monkeypatch)
    hdf5_guard.rehearse(origin, path)
    hdf5_guard.rehearse(origin, path)
    assert len(walks) == 1
    with h5py.File(path, "a") as h5:
        h5.attrs["touched"] = 1
    hdf5_guard.rehearse(origin, path)
    assert len(walks) == 2
    deeper = Origin(path, origin.looked_like, Limits(max_nesting=origin.limits.max_nesting + 1))
    hdf5_guard.rehearse(deeper, path)
    assert len(walks) == 3


def test_the_child_runs_nothing_of_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No atexit handler, no signal handler of the parent's runs in the child."""
    mark = tmp_path / "ran"

    def leave_mark(*_: object) -> None:
        mark.write_text("ran")

    def signals_itself(self: hdf5_walk.Walk, h5: h5py.File) -> None:
        os.kill(os.getpid(), signal.SIGUSR1)  # the default action: the child ends

    atexit.register(leave_mark)
    previous = signal.signal(signal.SIGUSR1, leave_mark)
    try:
        with pytest.raises(WeightscopeError, match="killed by SIGUSR1"):
            _rehearse_with(signals_itself, tmp_path, monkeypatch)
        monkeypatch.undo()
        origin, path = _origin(tmp_path / "..", seconds=3)
        hdf5_guard.rehearse(origin, path)
    finally:
        atexit.unregister(leave_mark)
        signal.signal(signal.SIGUSR1, previous)
    assert not mark.exists()


def test_the_walk_reads_every_attribute_the_readers_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child reads the attributes named in ATTRIBUTES_READ: every attribute the readers
    look up, on every kind of Keras file, must be one of them."""
    looked_up: set[str] = set()
    real_getitem = h5py.AttributeManager.__getitem__
    real_contains = h5py.AttributeManager.__contains__

    def getitem(self: h5py.AttributeManager, name: str) -> object:
        looked_up.add(name)
        return real_getitem(self, name)

    def contains(self: h5py.AttributeManager, name: object) -> bool:
        looked_up.add(str(name))
        return real_contains(self, name)

    monkeypatch.setattr(h5py.AttributeManager, "__getitem__", getitem)
    monkeypatch.setattr(h5py.AttributeManager, "__contains__", contains)
    chunked = legacy_h5(tmp_path / "chunked.h5")
    with h5py.File(chunked, "r+") as h5:
        names = h5["model_weights"].attrs.pop("layer_names")
        h5["model_weights"].attrs["layer_names0"] = names
    config = json.dumps({"class_name": "Sequential", "config": {"layers": []}})
    files = [
        EXAMPLE_H5,
        legacy_h5(tmp_path / "legacy.h5", config),
        chunked,
        store(tmp_path / "model.weights.h5"),
        keras_with_config(tmp_path, config.encode()),
    ]
    for path in files:
        with weightscope.load(path) as model:
            for _, tensor in model.tensors():
                tensor.stats()
    assert looked_up and all(hdf5_walk._READ.fullmatch(name.encode()) for name in looked_up), (
        looked_up
    )


# ---------------------------------------------------------------------------------------------
# 4. chunks: HDF5 inflates a whole chunk to read any value of it

KERNEL = np.arange(1, 13, dtype=np.float32).reshape(4, 3)
PEAK_RSS = 400 << 20
"""Far above what ``inspect`` holds for a small file, far below the GiB a chunk inflates to."""


def legacy_h5_with_chunk(path: Path, chunks: tuple[int, int], inflated: int) -> Path:
    """A legacy ``.h5`` whose 4 x 3 kernel is stored in one deflated chunk of shape ``chunks``
    (the dataset may grow, so HDF5 lets the chunk be larger than it) that inflates to
    ``inflated`` bytes: the kernel's rows, then zeros."""
    legacy_h5(path)
    row = chunks[1] * 4
    head = b"".join(values.tobytes().ljust(row, b"\0") for values in KERNEL)
    with h5py.File(path, "r+") as h5:
        group = h5["model_weights/dense/dense"]
        del group["kernel:0"]
        kernel = group.create_dataset(
            "kernel:0", (4, 3), "f4", maxshape=(None, None), chunks=chunks, compression="gzip"
        )
        kernel.id.write_direct_chunk((0, 0), deflate_stream(head, inflated))
    return path


def test_a_chunk_larger_than_its_dataset_is_refused(tmp_path: Path) -> None:
    """4 x 3 values in one chunk of 2**14 x 2**14 (a GiB when inflated, 1 MB in the file): HDF5
    would allocate and inflate the GiB to read 12 values."""
    path = legacy_h5_with_chunk(tmp_path / "model.h5", (1 << 14, 1 << 14), 1 << 30)
    assert path.stat().st_size < 2 << 20
    run = assert_refused(
        path,
        "dataset /model_weights/dense/dense/kernel:0 of shape (4, 3) is stored in chunks of "
        "shape (16384, 16384) (1,073,741,824 bytes each, larger than the dataset)",
        "over the limit max_hdf5_chunk_bytes=64M (raise it with --limit max_hdf5_chunk_bytes=1G)",
    )
    assert run.peak_rss < PEAK_RSS, run.peak_rss


def test_a_chunk_that_inflates_past_its_size_is_refused(tmp_path: Path) -> None:
    """A chunk of 64 x 64 (16 KiB, within the limit) whose deflate stream holds a GiB: HDF5's
    deflate filter keeps inflating past the chunk's size."""
    path = legacy_h5_with_chunk(tmp_path / "model.h5", (64, 64), 1 << 30)
    assert path.stat().st_size < 2 << 20
    assert_refused(
        path,
        "chunk (0, 0) of dataset /model_weights/dense/dense/kernel:0 inflates past its "
        "16,384 bytes",
    )


def test_chunked_datasets_within_the_limits_are_read(tmp_path: Path) -> None:
    """Deflated chunks that inflate to their size (checked, with shuffle and fletcher32 to undo
    first), chunks larger than a dataset that may grow, and a chunk that inflates within the
    limit are read as they are."""
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((512, 300)).astype(np.float32)  # compresses badly: checked
    path = legacy_h5(tmp_path / "model.h5")
    with h5py.File(path, "r+") as h5:
        group = h5["model_weights/dense/dense"]
        del group["kernel:0"], group["bias:0"]
        group.create_dataset(
            "kernel:0", data=kernel, chunks=(256, 256), compression="gzip", shuffle=True,
            fletcher32=True,
        )  # fmt: skip
        group.create_dataset("bias:0", data=np.ones(300, "f4"), maxshape=(None,), chunks=(4096,))
    with weightscope.load(path) as model:
        tensors = {t.name: t for _, t in model.tensors()}
        assert np.array_equal(tensors["dense/kernel:0"].numpy(), kernel)
        assert np.array_equal(tensors["dense/bias:0"].numpy(), np.ones(300, "f4"))
        assert tensors["dense/kernel:0"].stats().max == kernel.max()
    small = legacy_h5_with_chunk(tmp_path / "small.h5", (64, 64), 1 << 20)  # 1 MiB: bounded
    with weightscope.load(small) as model:
        kernel_tensor = next(t for _, t in model.tensors() if t.name.endswith("kernel:0"))
        assert np.array_equal(kernel_tensor.numpy(), KERNEL)
    run = inspect(small)
    assert run.returncode == 0, run.stderr


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie: dead
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    """A scan kills a worker at its timeout: a child looping inside libhdf5 must not outlive
    it."""
    origin_file = legacy_h5(tmp_path / "model.h5")
    pid_file = tmp_path / "child.pid"
    script = f"""
import os, time, h5py
from pathlib import Path
from weightscope.formats.keras import hdf5_guard, hdf5_guard_server, hdf5_walk
from weightscope.formats.keras.hdf5 import Origin
from weightscope.limits import Limits

def loops(self, h5):
    Path({str(pid_file)!r}).write_text(str(os.getpid()))
    while True:
        pass

hdf5_guard.SERVE_ABOVE_BYTES = 2**62
hdf5_walk.Walk.walk = loops
origin = Origin(Path({str(origin_file)!r}), "Keras HDF5 file", Limits(max_hdf5_seconds=600))
hdf5_guard.rehearse(origin, origin.path)
"""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline_at = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline_at and parent.poll() is None
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert not _gone(child)
    finally:
        parent.kill()
        parent.wait()
    deadline_at = time.monotonic() + 10
    while not _gone(child):
        assert time.monotonic() < deadline_at, "the child outlived its parent"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# 3b. the helper: a process holding a framework has its rehearsals forked by a small helper


@pytest.fixture
def own_helper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every rehearsal goes through a helper of this test's own, stopped after it."""
    monkeypatch.setattr(hdf5_guard, "SERVE_ABOVE_BYTES", 0)
    monkeypatch.setattr(hdf5_guard_server, "_helper", None)
    monkeypatch.setattr(hdf5_guard_server, "_failed_in", None)
    yield
    if hdf5_guard_server._helper is not None:
        hdf5_guard_server._helper.stop()


def _every_kind_of_source(folder: Path, weights: Path) -> list[Path]:
    """The HDF5 file ``weights`` as a path, as a stored ``.keras`` member read in place, as a
    deflated one spooled to a temporary file."""
    folder.mkdir()
    stored = keras_zip_of(folder, shutil.copy(weights, folder / "model.weights.h5"))
    deflated = folder / "deflated.keras"
    with zipfile.ZipFile(stored) as source, zipfile.ZipFile(deflated, "w") as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info), zipfile.ZIP_DEFLATED)
    return [weights, stored, deflated]


def test_the_helper_rehearses_every_kind_of_source(tmp_path: Path, own_helper: None) -> None:
    """Each is read, and each made of the looping file refused: the helper's child walked the
    very bytes the reader reads."""
    for path in _every_kind_of_source(tmp_path / "good", store(tmp_path / "model.weights.h5")):
        with deadline(60), weightscope.load(path) as model:
            kernel = next(t for _, t in model.tensors() if t.role == "kernel")
            assert np.array_equal(kernel.numpy(), np.arange(12, dtype=np.float32).reshape(4, 3))
    server = hdf5_guard_server._helper
    assert server is not None and server.process.poll() is None  # one helper for them all
    looping = tmp_path / "looping.h5"
    looping.write_bytes(FOUND_LOOP.read_bytes())
    for path in _every_kind_of_source(tmp_path / "looping", looping):
        with deadline(60), pytest.raises(LimitError, match="max_hdf5_seconds=1 "):
            weightscope.load(path, limits=Limits(max_hdf5_seconds=1))


def test_the_helper_refuses_the_libhdf5_loop_and_is_replaced(
    tmp_path: Path, own_helper: None
) -> None:
    """A step over the deadline: the helper and its child are killed, the file refused, and
    the next file rehearsed by a new helper."""
    looping = tmp_path / "model.h5"
    looping.write_bytes(FOUND_LOOP.read_bytes())
    good = legacy_h5(tmp_path / "good.h5")
    weightscope.load(good).close()
    first = hdf5_guard_server._helper
    assert first is not None
    start = time.monotonic()
    with deadline(30), pytest.raises(LimitError, match="max_hdf5_seconds=1 "):
        weightscope.load(looping, limits=Limits(max_hdf5_seconds=1))
    assert time.monotonic() - start < 5
    assert first.process.poll() is not None and hdf5_guard_server._helper is None
    with deadline(60):  # another file: one walked already is not walked again
        weightscope.load(legacy_h5(tmp_path / "next.h5")).close()
    assert hdf5_guard_server._helper not in (None, first)


def test_each_kind_of_source_read_again_is_walked_as_it_must_be(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file and a stored ``.keras`` member read in place are walked once however often they
    are read unchanged; a deflated member, inflated anew each time, is walked each time."""
    walks = _counted_walks(monkeypatch)
    weights, stored, deflated = _every_kind_of_source(tmp_path / "x", store(tmp_path / "w.h5"))
    for path, expected in ((weights, 1), (stored, 1), (deflated, 2)):
        walks.clear()
        for _ in range(2):
            weightscope.load(path).close()
        assert len(walks) == expected, path.name


def _descendants(pid: int) -> set[int]:
    """The living processes below ``pid``."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if fields[0] != "Z":
                    parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_the_helper_and_its_child_die_with_the_parent(tmp_path: Path) -> None:
    """A parent killed while the helper's child loops inside libhdf5 leaves no process
    behind."""
    looping = tmp_path / "model.h5"
    looping.write_bytes(FOUND_LOOP.read_bytes())
    script = f"""
from weightscope.formats.keras import hdf5_guard
from weightscope import Limits, load
hdf5_guard.SERVE_ABOVE_BYTES = 0
load({str(looping)!r}, limits=Limits(max_hdf5_seconds=600))
"""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    parent = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline_at = time.monotonic() + 60
        while len(below := _descendants(parent.pid)) < 2:  # the helper and its child
            assert time.monotonic() < deadline_at and parent.poll() is None
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait()
    deadline_at = time.monotonic() + 10
    while any(not _gone(pid) for pid in below):
        assert time.monotonic() < deadline_at, "the helper or its child outlived the parent"
        time.sleep(0.05)


def test_a_long_link_target_keeps_its_file_name() -> None:
    """Error lines cut long names in the middle: the target file's name, at the end of its
    path, stays whatever the length of the folder (pytest's numbered temporary folders grow)."""
    from weightscope.errors import short

    target = "/tmp/" + "d" * 120 + "/fifo.h5"
    shown = short(target)
    assert len(shown) == 80 + 2 and shown.endswith("/fifo.h5'") and shown.startswith("'/tmp/d")
    assert "..." in shown
    assert short("fifo.h5") == "'fifo.h5'"
