"""Adapters turn one framework's files into the shared model. Each module offers the same two
functions: ``sniff(path, head) -> bool`` (recognise the file by its bytes) and
``load(path) -> Model``. Adding a framework means adding one module to ``ADAPTERS``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from weightscope.adapters import keras, onnx, pytorch
from weightscope.model import Model


class Adapter(Protocol):
    FRAMEWORK: str

    def sniff(self, path: Path, head: bytes) -> bool: ...

    def load(self, path: Path) -> Model: ...


ADAPTERS: tuple[Adapter, ...] = (keras, pytorch, onnx)
