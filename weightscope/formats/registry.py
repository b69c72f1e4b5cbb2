"""Open a model file once, let each reader match it by its bytes, and load it with the reader
that matched; live objects go to the reader that claims them."""

from __future__ import annotations

import importlib
import os
import stat
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from weightscope.errors import (
    CorruptFileError,
    RemoteError,
    UnsupportedFormatError,
    WeightscopeError,
    file_error,
    with_format,
)
from weightscope.formats import sharded
from weightscope.formats._common.file_region import declared_bytes
from weightscope.formats._common.remote import (
    NOT_FOUND,
    RemoteFile,
    RemotePath,
    beside,
    folder_files,
    looks_like_folder,
    url_scheme,
)
from weightscope.formats.protocol import Match, Probe, Reader
from weightscope.formats.tensorflow import saved_files
from weightscope.gc_pause import paused_gc
from weightscope.limits import DEFAULT, LimitExceeded, Limits, limit_error
from weightscope.model import Model


class _Deferred:
    """A reader module imported the first time it is asked anything: a ``.pt`` file is then
    read without importing (and paying the start-up of) the SavedModel, TFLite or GGUF readers,
    which :func:`_match` never reaches."""

    def __init__(self, module: str) -> None:
        self._name = module
        self._module: ModuleType | None = None

    def __getattr__(self, attribute: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attribute)


def _reader(module: str) -> Reader:
    return cast(Reader, _Deferred(f"weightscope.formats.{module}"))


_KERAS = _reader("keras.reader")
_PYTORCH = _reader("pytorch.reader")
_SAFETENSORS = _reader("safetensors")
_ONNX = _reader("onnx.reader")
_GGUF = _reader("gguf.reader")

READERS: tuple[Reader, ...] = (
    _KERAS,
    _PYTORCH,
    _GGUF,
    _SAFETENSORS,
    _reader("numpy"),
    _reader("tensorflow.savedmodel"),
    _ONNX,
    _reader("tensorflow.reader"),
    _reader("tflite.reader"),
)
"""Tried in this order; the first whose ``match`` claims a file reads it."""

SNIFF_BYTES = 64

SUPPORTED = (
    "Keras .h5/.keras/.weights.h5, PyTorch .pt/.pth/.bin/.ckpt zip or legacy pickle, "
    "TorchScript, .safetensors, ONNX .onnx, TFLite .tflite, NumPy .npz/.npy, GGUF .gguf, a "
    "TensorFlow checkpoint .index, or a SavedModel directory"
)
"""What the unknown-format line lists."""

# What a damaged file makes h5py, zipfile, json and numpy raise while an adapter reads it.
_READ_ERRORS = (
    OSError,
    KeyError,
    ValueError,
    TypeError,
    IndexError,
    EOFError,
    RuntimeError,  # with NotImplementedError (RecursionError is caught apart)
    zipfile.BadZipFile,
    zlib.error,
)


def load(
    source: str | os.PathLike[str] | Any,
    *,
    limits: Limits | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> Model:
    """Read a model file, or a live model object (a ``torch.nn.Module``, an
    ``onnx.ModelProto``, a ``keras.Model`` of Keras 3 or tf-keras, a ``tf.Module``), into the
    framework-free model. A file is opened read-only; tensor data is read when first used. Close
    the model (or use it as a context manager) to release the file.

    ``limits`` bounds what reading a file may cost (see :class:`weightscope.limits.Limits`; the
    defaults when None). Tensors read later keep the limits they were loaded with.

    ``source`` may be a URL (``https://``, ``s3://bucket/key``, ``hf://org/repo/file``), read by
    ranges through fsspec with ``storage_options`` (``endpoint_url``, ``anon``...; needs
    ``weightscope[remote]``); see :mod:`weightscope.formats._common.remote`.

    Raises ``WeightscopeError`` with one line naming the file and the problem (``LimitError``
    when the file is over a limit, naming the limit).
    """
    limits = DEFAULT if limits is None else limits
    if not isinstance(limits, Limits):
        raise TypeError(f"limits must be a weightscope.Limits, not {type(limits).__name__}")
    if not isinstance(source, (str, os.PathLike)):
        return _load_live(source, limits)
    if url_scheme(source) is not None:
        url = str(source)
        names = folder_files(url, storage_options) if looks_like_folder(url) else None
        if names is not None:  # a folder (hf://org/repo, s3://bucket/prefix/): as locally
            return _load_url_folder(url, names, limits, storage_options)
        if url.endswith(sharded.INDEX_SUFFIX):
            return _load_url_index(url, limits, storage_options)
        return _load_url(url, limits, storage_options)
    file = Path(source)
    if not file.exists() and Path(f"{file}.index").is_file():
        file = Path(f"{file}.index")  # a TensorFlow checkpoint named by its prefix
    if not file.exists():
        raise file_error(UnsupportedFormatError, file, "no such file")
    if saved_files.is_saved_model_dir(file):
        file = file / saved_files.FILE_NAME  # a SavedModel is read from its saved_model.pb
    if file.is_dir() or sharded.is_index(file):  # one model from many files
        return sharded.load(file, limits, _load_file, recognise)
    return _load_file(file, limits)


def _load_file(file: Path, limits: Limits) -> Model:
    """Read the model file ``file`` with the reader that recognises it."""
    kind = _special_kind(file)
    if kind is not None:  # opening a FIFO would wait for a writer; a device never ends
        raise file_error(UnsupportedFormatError, file, f"is {kind}, not a model file")
    try:
        with open(file, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise file_error(
            UnsupportedFormatError, file, f"cannot read: {exc.strerror or exc}"
        ) from exc
    if not head:
        raise file_error(UnsupportedFormatError, file, "empty file")
    with paused_gc(), Probe.open(file, head) as probe:  # a zip's directory: objects per member
        found = _match(probe)
        if found is None:
            raise file_error(UnsupportedFormatError, file, _unrecognised(probe))
        return _load_with(*found, limits)


URL_READERS: tuple[Reader, ...] = (_SAFETENSORS, _ONNX, _PYTORCH, _GGUF)
"""The readers that read a file by URL (by ranges, through ``Probe.file``); any other format
found at a URL is refused with one line."""


def _load_url(url: str, limits: Limits, storage_options: Mapping[str, Any] | None) -> Model:
    file = RemoteFile(url, storage_options, limits=limits)
    probe: Probe | None = None
    try:
        if file.size == 0:
            raise file_error(UnsupportedFormatError, url, "empty file")
        probe = _url_probe(file)
        found = _match(probe)
        if found is None:
            raise file_error(UnsupportedFormatError, url, f"unknown format (not {SUPPORTED})")
        if found[0] not in URL_READERS:
            problem = (
                f"a {found[1].looks_like} is not read by URL (only .safetensors, ONNX, GGUF and "
                "PyTorch zip checkpoints are)"
            )
            raise file_error(UnsupportedFormatError, url, f"{problem}; download the file first")
        model = _load_with(*found, limits)
    except BaseException:
        file.close()
        raise
    finally:
        if probe is not None:
            probe.close()  # the zip's directory; the file stays open with the model
    return model


def _load_url_folder(
    url: str, names: list[str], limits: Limits, storage_options: Mapping[str, Any] | None
) -> Model:
    """The model of the folder ``url`` holding the files ``names``, chosen as for a local
    folder (:func:`sharded.choose`): its index, its one model file, the weights HF names, or a
    complete set of shards without an index. Its files are told by their names; only when they
    leave several model files is each looked at (its first bytes)."""
    base = url.rstrip("/")

    def at(name: str) -> RemotePath:
        return RemotePath(f"{base}/{name}")

    def recognised(name: str) -> bool:
        return _url_framework(f"{base}/{name}", storage_options) is not None

    named_like = [n for n in names if Path(n).suffix.lower() in sharded.URL_MODEL_SUFFIXES]
    choice = sharded.choose(
        RemotePath(base), names, set(named_like).__contains__, at, recheck=recognised
    )
    if choice.index is not None:
        return _load_url_index(f"{base}/{choice.index}", limits, storage_options, choice.notes)
    read_config = _url_config(base, storage_options, limits)
    if len(choice.read) > 1:
        shards: list[Path] = [at(name) for name in choice.read]

        def load_shard(path: Path, limits: Limits) -> Model:
            return _load_url(str(path), limits, storage_options)

        model = sharded.load_url_shards(
            RemotePath(base), shards, limits, load_shard, choice.how, read_config
        )
        model.notes.extend(choice.notes)
        return model
    model = _load_url(f"{base}/{choice.read[0]}", limits, storage_options)
    model.notes.extend(choice.notes)
    model.notes.extend(sharded.config_notes(read_config, limits))
    return model


def url_index_shards(url: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    """The URLs of the shards the index at ``url`` names (beside it); empty when the index
    cannot be read (a scan then reads its shards alone, and the index says what is wrong)."""
    try:
        file = RemoteFile(url, storage_options, "shard index")
        try:
            DEFAULT.check("max_json_bytes", file.size, f"the index is {file.size:,} bytes")
            raw = file.read(0, file.size)
        finally:
            file.close()
        weight_map = sharded.parse_index(file.path, raw, DEFAULT)["weight_map"]
    except (WeightscopeError, LimitExceeded):
        return []
    found = (beside(file.remote_path, name) for name in set(weight_map.values()))
    return sorted(str(path) for path in found if path is not None)


def url_loose_shards_folder(url: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """The folder of ``url`` (ending in ``/``) when ``url`` is the first of a set of shards
    without an index that the folder is read as: a scan reads the set as one model, in the row
    of its first shard, as locally (:func:`sharded.loose_shards_folder`)."""
    folder, _, name = url.rpartition("/")
    if not sharded.SHARD_NAME.match(name):
        return None
    names = folder_files(folder + "/", storage_options) or []
    shards = sharded.loose_set(names)
    return folder + "/" if shards and shards[0] == name else None


def _url_framework(url: str, storage_options: Mapping[str, Any] | None) -> str | None:
    """The framework whose reader recognises the file at ``url`` by its first bytes; None
    when none does or it cannot be read."""
    try:
        file = RemoteFile(url, storage_options)
    except WeightscopeError:
        return None
    probe: Probe | None = None
    try:
        probe = _url_probe(file)
        found = _match(probe)
    except WeightscopeError:
        return None
    finally:
        if probe is not None:
            probe.close()
        file.close()
    return None if found is None else found[0].FRAMEWORK


def _url_config(
    folder: str, storage_options: Mapping[str, Any] | None, limits: Limits
) -> sharded.ReadConfig:
    """Fetches the ``config.json`` in the folder ``folder`` (None: the server has none)."""

    def read_config() -> bytes | None:
        try:
            where = f"{folder}/{sharded.CONFIG}"
            config = RemoteFile(where, storage_options, sharded.CONFIG, limits)
        except RemoteError as exc:
            if str(exc).endswith(NOT_FOUND):
                return None
            raise
        try:
            limits.check("max_json_bytes", config.size, f"it is {config.size:,} bytes")
            return config.read(0, config.size)
        finally:
            config.close()

    return read_config


def _load_url_index(
    url: str,
    limits: Limits,
    storage_options: Mapping[str, Any] | None,
    notes: list[str] | None = None,
) -> Model:
    """A shard index by URL: its JSON fetched within ``max_json_bytes``, then each shard beside
    it read by ranges as one file by URL is, and the shards merged as local ones are; ``notes``
    (what its folder also holds) added after the merge's."""
    file = RemoteFile(url, storage_options, "shard index", limits)
    try:
        limits.check("max_json_bytes", file.size, f"the index is {file.size:,} bytes")
        raw = file.read(0, file.size)
    except LimitExceeded as exc:
        raise limit_error(file.path, exc) from None
    finally:
        file.close()

    def load_shard(path: Path, limits: Limits) -> Model:
        try:
            return _load_url(str(path), limits, storage_options)
        except RemoteError as exc:
            if not str(exc).endswith(NOT_FOUND):
                raise
            problem = f"shard missing: {file.remote_path.name} places tensors in it"
            raise file_error(CorruptFileError, path, problem) from None

    read_config = _url_config(url.rsplit("/", 1)[0], storage_options, limits)
    model = sharded.load_url_index(file.path, raw, limits, load_shard, beside, read_config)
    model.notes.extend(notes or [])
    return model


def _url_probe(file: RemoteFile) -> Probe:
    """The probe of a file read by URL; a zip's directory read through ranged requests."""
    head = file.read(0, min(SNIFF_BYTES, file.size))
    probe = Probe(file.path, head, file.size, file=file)
    if probe.is_zip:
        try:
            probe.archive = zipfile.ZipFile(file.stream())
            probe.names = frozenset(probe.archive.namelist())
        except WeightscopeError:
            raise
        except Exception as exc:  # as Probe.open: BadZipFile, OSError, ValueError...
            probe.archive_error = str(exc)[:200]
    return probe


def _match(probe: Probe) -> tuple[Reader, Match] | None:
    for reader in READERS:
        match = reader.match(probe)
        if match is not None:
            return reader, match
    return None


def recognise(file: Path) -> str | None:
    """The framework whose adapter recognises ``file`` by its first bytes (``keras``,
    ``pytorch``, ``onnx``), or None: not a regular file, unreadable, empty, another format, or
    a file of a SavedModel's ``variables/`` (read with the SavedModel). Reads a few bytes;
    never raises for a bad file."""
    if _special_kind(file) is not None or not file.is_file():
        return None
    if saved_files.part_of_saved_model(file):
        return None  # a SavedModel's variables/ bundle: its saved_model.pb is the model
    try:
        with open(file, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
        if not head:
            return None
        with Probe.open(file, head) as probe:
            found = _match(probe)
    except Exception:  # unreadable: not recognised, load would say why
        return None
    return None if found is None else found[0].FRAMEWORK


def _special_kind(file: Path) -> str | None:
    """What ``file`` (followed if a link) is when it is not a regular file."""
    try:
        mode = file.stat().st_mode
    except OSError:
        return None  # opening it says why
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _load_live(obj: Any, limits: Limits) -> Model:
    for reader in READERS:
        if reader.match_object(obj):
            return reader.load_object(obj, limits)
    raise UnsupportedFormatError(
        f"cannot read a {type(obj).__module__}.{type(obj).__qualname__}: give a file path, a "
        "torch.nn.Module, an onnx.ModelProto, a keras.Model or a tf.Module"
    )


def _unrecognised(probe: Probe) -> str:
    if probe.is_zip:
        if probe.archive_error is not None:
            return f"damaged or truncated zip archive: {probe.archive_error}"
        return (
            "zip archive, but not a .keras file (no model.weights.h5 or config.json), a "
            "PyTorch checkpoint (no data.pkl) nor a NumPy .npz (members other than .npy files)"
        )
    return f"unknown format (not {SUPPORTED})"


def check_read_budget(model: Model, limits: Limits) -> None:
    """Refuse a model whose tensors together read more than ``max_read_ratio`` times the bytes
    of the files they lie in (many tensors declared over one region): statistics and export
    would read it again for each. A tied tensor (``shared_with``) is read with its first name."""
    declared: dict[int, list] = {}
    for _, tensor in model.tensors():
        if tensor.shared_with is not None:
            continue
        for file, nbytes in declared_bytes(tensor.source):
            entry = declared.setdefault(id(file), [file, 0])
            entry[1] += nbytes
    for file, total in declared.values():
        allowed = limits.max_read_ratio * max(file.size, 1)
        if total > allowed:
            raise LimitExceeded(
                "max_read_ratio",
                limits.max_read_ratio,
                -(-total // max(file.size, 1)),
                f"its tensors declare {total:,} bytes of {file.path.name}, which holds "
                f"{file.size:,} (regions declared over and over)",
            )


def _load_with(reader: Reader, match: Match, limits: Limits) -> Model:
    """Run the reader; whatever goes wrong becomes one line naming the file, the format it
    looked like and the problem."""
    looked_like = match.looks_like
    file = match.probe.path
    try:
        with paused_gc():
            model = reader.load(match, limits)
            try:
                check_read_budget(model, limits)
            except BaseException:
                model.close()
                raise
        return model
    except WeightscopeError as exc:
        raise with_format(exc, looked_like) from exc.__cause__
    except LimitExceeded as exc:
        raise limit_error(file, exc) from None
    except RecursionError as exc:
        problem = "structures nested too deeply to walk (Python's recursion limit reached)"
        raise file_error(CorruptFileError, file, problem, looked_like) from exc
    except MemoryError as exc:
        problem = "ran out of memory reading it (a size in the file may be lying)"
        raise file_error(CorruptFileError, file, problem, looked_like) from exc
    except _READ_ERRORS as exc:
        raise file_error(CorruptFileError, file, str(exc), looked_like) from exc
