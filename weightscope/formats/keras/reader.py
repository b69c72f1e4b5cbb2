"""Keras adapter: legacy ``.h5`` (full model or weights only, Keras 2.0 to 3), ``.keras`` zips
and ``.weights.h5`` stores, read with h5py alone. Never imports tensorflow or keras and never
deserializes layer code (a ``Lambda`` is just a name here).

This module recognises the container and opens it; ``legacy_h5`` and ``keras_v3`` read the two
HDF5 layouts, ``layers`` builds layers, ``catalog`` knows layer classes."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from weightscope.errors import (
    CorruptFileError,
    UnsafeFileError,
    UnsupportedFormatError,
    file_error,
)
from weightscope.formats._common.archive import check_ratio, stored_member_offset
from weightscope.formats._common.json_text import load_json
from weightscope.formats.protocol import Match, Probe
from weightscope.limits import Limits
from weightscope.model import Model

if TYPE_CHECKING:
    import h5py

    from weightscope.formats.keras.hdf5 import FileSlice, Origin

# h5py and the HDF5 readers are imported when a Keras file is read, not when another
# framework's file is (h5py costs a few tens of milliseconds).

FRAMEWORK = "keras"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
V3_WEIGHTS_MEMBER = "model.weights.h5"
HDF5_FILE = "Keras HDF5 file"
KERAS_ARCHIVE = "Keras .keras archive"


def match(probe: Probe) -> Match | None:
    """HDF5 files (Keras' legacy and v3 weight stores) and ``.keras`` zips."""
    if probe.head.startswith(HDF5_SIGNATURE):
        return Match(HDF5_FILE, "hdf5", probe)
    if probe.archive is not None and (
        V3_WEIGHTS_MEMBER in probe.names or "config.json" in probe.names
    ):
        return Match(KERAS_ARCHIVE, "keras-zip", probe)
    return None


def load(match: Match, limits: Limits) -> Model:
    from weightscope.formats.keras.hdf5 import ForeignLink

    try:
        return _load(match, limits)
    except ForeignLink as exc:
        raise file_error(UnsafeFileError, match.probe.path, str(exc)) from None


def _load(match: Match, limits: Limits) -> Model:
    import h5py

    from weightscope.formats.keras.hdf5 import Origin
    from weightscope.formats.keras.hdf5_guard import rehearse

    path = match.probe.path
    if match.probe.archive is not None:
        return _load_keras_zip(path, match.probe.archive, limits)
    rehearse(Origin(path, HDF5_FILE, limits), path)
    h5 = h5py.File(path, "r")
    try:
        origin = Origin(path, HDF5_FILE, limits, h5.id.fileno)
        model = _load_hdf5(origin, h5, config=None, fmt="keras-weights-h5", version=None)
    except BaseException:
        h5.close()
        raise
    model._resources.callback(h5.close)
    return model


def match_object(obj: Any) -> bool:
    """A live Keras model or layer, Keras 3 or tf-keras (checked without importing Keras)."""
    from weightscope.formats.keras.live import is_keras_layer

    return is_keras_layer(obj)


def load_object(obj: Any, limits: Limits) -> Model:
    """A live Keras model: layers, configs and trainable flags from the objects themselves."""
    from weightscope.formats.keras.live import load_keras_layer

    return load_keras_layer(obj)


def _load_hdf5(origin: Origin, h5: h5py.File, config: Any, fmt: str, version: str | None) -> Model:
    import h5py

    from weightscope.formats.keras.hdf5 import hard_path, has_link, refuse_link
    from weightscope.formats.keras.keras_v3 import is_store, load_store
    from weightscope.formats.keras.legacy_h5 import is_legacy, load_legacy

    legacy_root: Any = h5
    if has_link(h5, "model_weights"):
        legacy_root, link = hard_path(h5, "model_weights")
        if link is not None:
            raise refuse_link(origin.path, "the model's weights", link)
    if isinstance(legacy_root, h5py.Group) and is_legacy(legacy_root):
        model_config = _json_attr(origin, h5, "model_config")
        return load_legacy(origin, h5, legacy_root, model_config)
    if is_store(h5):
        return load_store(origin, h5, config, fmt, version)
    raise file_error(
        UnsupportedFormatError,
        origin.path,
        "HDF5 file without Keras structure (no model_weights, layer_names or layers group)",
    )


def _load_keras_zip(path: Path, archive: zipfile.ZipFile, limits: Limits) -> Model:
    import h5py

    from weightscope.formats.keras.hdf5 import Origin
    from weightscope.formats.keras.hdf5_guard import rehearse
    from weightscope.formats.keras.keras_v3 import is_store, load_store

    names = set(archive.namelist())
    if V3_WEIGHTS_MEMBER not in names:
        raise file_error(
            UnsupportedFormatError,
            path,
            f"zip archive without {V3_WEIGHTS_MEMBER}: not a .keras file",
        )
    config = _json_member(path, archive, "config.json", limits) if "config.json" in names else None
    metadata = (
        _json_member(path, archive, "metadata.json", limits) if "metadata.json" in names else {}
    )
    handle = _open_member(path, archive, archive.getinfo(V3_WEIGHTS_MEMBER), limits)
    try:
        # The child reads through the same handle: this process, waiting, touches it not, and
        # seeks before every read of its own.
        rehearse(Origin(path, KERAS_ARCHIVE, limits), handle, V3_WEIGHTS_MEMBER)
        h5 = h5py.File(handle, "r")
    except BaseException as exc:
        handle.close()
        if isinstance(exc, OSError):
            raise file_error(
                CorruptFileError, path, f"{V3_WEIGHTS_MEMBER} is not readable HDF5: {exc}"
            ) from exc
        raise
    try:
        version = metadata.get("keras_version") if isinstance(metadata, dict) else None
        if not is_store(h5):
            raise file_error(
                CorruptFileError, path, f"{V3_WEIGHTS_MEMBER} holds no Keras weights store"
            )
        origin = Origin(path, KERAS_ARCHIVE, limits, h5.id.fileno)
        model = load_store(origin, h5, config, "keras-v3", version)
    except BaseException:
        h5.close()
        handle.close()
        raise
    model._resources.callback(handle.close)
    model._resources.callback(h5.close)
    return model


def _open_member(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits
) -> FileSlice | IO[bytes]:
    """A seekable handle on a zip member: the stored bytes in place, or a temporary extraction.

    Keras stores ``model.weights.h5`` uncompressed; it is then read where it lies, without the
    zip's CRC check (HDF5 has no checksum of its own for raw data either). A compressed one is
    extracted, at most the size the zip declares for it (``zipfile`` never yields more), once
    that size is within ``max_extracted_bytes`` and ``max_zip_ratio`` of its compressed size."""
    from weightscope.formats.keras.hdf5 import FileSlice

    if info.compress_type == zipfile.ZIP_STORED:
        return FileSlice(path, stored_member_offset(path, info), info.file_size)
    limits.check(
        "max_extracted_bytes",
        info.file_size,
        f"{info.filename} is compressed and declares {info.file_size:,} bytes to extract",
    )
    check_ratio(info, limits)
    spool = tempfile.TemporaryFile()  # noqa: SIM115 - returned open, closed with the model
    try:
        with archive.open(info) as member:
            shutil.copyfileobj(member, spool, 1 << 20)
    except BaseException as exc:
        spool.close()
        if isinstance(exc, (zipfile.BadZipFile, OSError, EOFError, NotImplementedError)):
            raise file_error(
                CorruptFileError, path, f"cannot extract {info.filename}: {exc}"
            ) from exc
        raise
    spool.seek(0)
    return spool


def _json_member(path: Path, archive: zipfile.ZipFile, name: str, limits: Limits) -> Any:
    info = archive.getinfo(name)
    declared = info.file_size
    limits.check("max_json_bytes", declared, f"{name} declares {declared:,} bytes")
    if info.compress_type != zipfile.ZIP_STORED:
        check_ratio(info, limits)
    try:
        with archive.open(info) as member:
            data = member.read(limits.max_json_bytes + 1)
        return load_json(data, limits, name)
    except (ValueError, zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise file_error(CorruptFileError, path, f"{name} is not readable JSON: {exc}") from exc


def _json_attr(origin: Origin, h5: h5py.File, name: str) -> Any:
    from weightscope.formats.keras.hdf5 import text_attr

    text = text_attr(h5, name)
    if text is None:
        return None
    try:
        return load_json(text, origin.limits, f"attribute {name}")
    except ValueError as exc:
        raise file_error(
            CorruptFileError, origin.path, f"attribute {name} is not valid JSON: {exc}"
        ) from exc
