"""Which files make up a SavedModel directory: what the registry and ``scan`` ask before any
reader is imported."""

from __future__ import annotations

from pathlib import Path

FILE_NAME = "saved_model.pb"
KERAS_METADATA = "keras_metadata.pb"
SIDE_FILES = frozenset({KERAS_METADATA, "fingerprint.pb"})


def is_saved_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / FILE_NAME).is_file()


def part_of_saved_model(file: Path) -> bool:
    """A file of a SavedModel directory other than its ``saved_model.pb`` (its ``variables/``
    bundle, assets, Keras metadata): read with, or beside, its ``saved_model.pb``."""
    if file.name in SIDE_FILES and (file.parent / FILE_NAME).is_file():
        return True
    return any(
        parent.name in ("variables", "assets") and (parent.parent / FILE_NAME).is_file()
        for parent in file.parents
    )
