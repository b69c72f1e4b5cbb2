"""Adapters turn one framework's files into the shared model. Each module offers the same three
functions: ``sniff(path, head) -> bool`` (recognise the file by its bytes), ``describe(path,
head) -> str`` (the format it looks like, for error lines: ``ONNX model``) and ``load(path,
limits) -> Model`` (read it within the resource limits of :class:`weightscope.limits.Limits`).
Adding a framework means adding one module to ``ADAPTERS``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from weightscope.adapters import keras, onnx, pytorch
from weightscope.limits import Limits
from weightscope.model import Model


class Adapter(Protocol):
    FRAMEWORK: str

    def sniff(self, path: Path, head: bytes) -> bool: ...

    def describe(self, path: Path, head: bytes) -> str: ...

    def load(self, path: Path, limits: Limits) -> Model: ...


ADAPTERS: tuple[Adapter, ...] = (keras, pytorch, onnx)
