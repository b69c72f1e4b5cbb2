"""Copies of the bundled example with one thing broken by hand (malformed input only)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

import weightscope

EXAMPLE = weightscope.example_path()
LOGITS_BIAS = "model_weights/logits/digits_cnn/logits/bias"


def edited_example(folder: Path, filename: str, edit: Callable[[h5py.File], None]) -> Path:
    path = folder / filename
    shutil.copy(EXAMPLE, path)
    with h5py.File(path, "r+") as h5:
        edit(h5)
    return path


def with_lying_bias(folder: Path, elements: int = 2**45) -> Path:
    """The logits bias declares ``elements`` float32 values, chunked and never written."""

    def edit(h5: h5py.File) -> None:
        del h5[LOGITS_BIAS]
        h5.create_dataset(LOGITS_BIAS, shape=(elements,), dtype="f4", chunks=(2**20,))

    return edited_example(folder, "lying.h5", edit)


def with_string_bias(folder: Path) -> Path:
    def edit(h5: h5py.File) -> None:
        del h5[LOGITS_BIAS]
        h5[LOGITS_BIAS] = np.array([b"abc"] * 10)

    return edited_example(folder, "strings.h5", edit)
