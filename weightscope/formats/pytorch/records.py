"""What unpickling a PyTorch file builds besides plain values: storage and tensor records, the
allowed functions a pickle may call, and opaque stand-ins for everything else.

Records are frozen: nothing in a pickle can change one after it was built and checked (``BUILD``
is only ever applied to an opaque stand-in)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from weightscope.dtypes import itemsize as dtype_itemsize


class UnsafePickleError(Exception):
    """The pickle names a global that could run code."""


class PickleFormatError(Exception):
    """The pickle is not shaped like a PyTorch file (e.g. a persistent id of unknown form)."""


@dataclass(frozen=True, slots=True)
class StorageType:
    """``torch.FloatStorage`` and friends: what the element type of a storage is."""

    name: str
    dtype: str
    """numpy dtype name, or ``bfloat16``."""

    @property
    def itemsize(self) -> int:
        return dtype_itemsize(self.dtype)


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A storage named by a persistent id; its bytes are located by the container reader."""

    key: str
    storage_type: StorageType
    location: str
    numel: int
    view_offset: int = 0
    """Legacy files: elements into the root storage ``key`` where this view starts."""


@dataclass(frozen=True, slots=True)
class QScheme:
    """``torch.per_tensor_affine`` and the other quantization schemes a pickle names: data,
    never called."""

    name: str


@dataclass(frozen=True, slots=True)
class QParams:
    """How a quantized tensor's integers stand for real values (``_rebuild_qtensor``'s
    ``quantizer_params``): ``real = (stored - zero_point) * scale``, one scale for the tensor,
    or one per index of ``axis`` (``scale`` and ``zero_point`` then 1-D tensors)."""

    scheme: str
    scale: float | TensorRef
    zero_point: int | float | TensorRef
    axis: int | None = None


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor as the pickle describes it: a window onto a storage."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    requires_grad: bool = False
    quantized: QParams | None = None
    """For a quantized tensor (its storage holds integers), how they stand for real values."""


class Allowed:
    """A global the pickle may call, reimplemented: ``function(machine, *args)`` builds its
    result through the machine (so that what it builds is checked and counted like the rest).
    It has no state a pickle could set."""

    __slots__ = ("function", "name")

    def __init__(self, name: str, function: Callable[..., Any]) -> None:
        self.name = name
        self.function = function

    def __repr__(self) -> str:
        return f"<allowed {self.name}>"


class Opaque:
    """Stand-in for an object of a class weightscope does not import. ``args`` (and ``kwargs``)
    are what it was constructed or called with, ``state`` what BUILD gave it, ``items`` /
    ``entries`` what the pickle appended or set on it (None when nothing was)."""

    __slots__ = ("args", "entries", "items", "kwargs", "state")
    qualname = "?"

    args: tuple[Any, ...]
    kwargs: dict[Any, Any] | None
    state: Any
    items: list[Any] | None
    entries: dict[Any, Any] | None

    def __init__(self, args: tuple[Any, ...] = (), kwargs: dict[Any, Any] | None = None) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state = None
        self.items = None
        self.entries = None

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


class CallResult(Opaque):
    """What calling an opaque object (or a function weightscope does not reimplement) gave;
    ``func`` is what was called (its name does not grow with chained calls)."""

    __slots__ = ("func",)
    qualname = "(result of a call)"

    def __init__(self, func: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> None:
        super().__init__(args, kwargs)
        self.func = func


MAX_NAME = 200
MAX_CLASSES = 10_000
"""Distinct class names one pickle may have stand-ins for; past it they share one."""


class TooManyClasses(Opaque):
    __slots__ = ()
    qualname = "(one of too many classes)"


def opaque_class(qualname: str, cache: dict[str, type[Opaque]]) -> type[Opaque]:
    """The stand-in class named ``qualname``, one per name and pickle."""
    qualname = qualname[:MAX_NAME]
    cls = cache.get(qualname)
    if cls is None:
        if len(cache) >= MAX_CLASSES:
            return TooManyClasses
        cls = type("Opaque", (Opaque,), {"qualname": qualname, "__slots__": ()})
        cache[qualname] = cls
    return cls
