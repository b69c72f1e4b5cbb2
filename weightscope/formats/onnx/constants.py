"""A value of an ONNX graph known without running the model, and the identity of the stored
data behind it (shared by the graph walk and the sparse-tensor reader)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from weightscope.model import TensorSource

_STORAGE_IDS = itertools.count()
"""Identities of stored tensors, counted here rather than taken from ``id()`` of a message: the
messages a file leaves out (an attribute's absent ``t``) share one empty default."""


def new_storage_id() -> int:
    """A fresh identity for a stored tensor."""
    return next(_STORAGE_IDS)


@dataclass(frozen=True)
class Constant:
    """A value known without running the model."""

    name: str
    """The stored tensor's name (initializer or ``Constant`` node output)."""
    source: TensorSource
    shape: tuple[int, ...]
    dtype: str
    storage: int
    """Identity of the stored data: two constants with equal ``storage`` share it."""
    steps: tuple[str, ...] = ()
    """Static operations applied to the stored tensor, in order (``Transpose(perm=[1, 0])``),
    the first ``MAX_STEPS_SHOWN`` of them."""
    step_count: int = 0

    @property
    def size(self) -> int:
        return math.prod(self.shape)
