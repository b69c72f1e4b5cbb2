"""A restricted unpickler for PyTorch files, which never imports torch and never runs code.

Only an allow-list of globals resolves to something that acts (tensor and storage rebuilders,
``OrderedDict``, ``set``...), each reimplemented here to return plain records. Every other global
becomes an opaque stand-in named after it: calling it, instantiating it or setting its state only
records the arguments. A global from a module that can run code (``os``, ``subprocess``,
``builtins.eval``, ...) makes the whole file unsafe: reading stops at once with
``UnsafePickleError``, before anything could be called.
"""

from __future__ import annotations

import collections
import pickle
import pickletools
from dataclasses import dataclass
from typing import IO, Any

from weightscope.dtypes import itemsize as dtype_itemsize
from weightscope.limits import DEFAULT, LimitExceeded, Limits


class UnsafePickleError(Exception):
    """The pickle names a global that could run code."""


class PickleFormatError(Exception):
    """The pickle is not shaped like a PyTorch file (e.g. a persistent id of unknown form)."""


@dataclass(frozen=True)
class StorageType:
    """``torch.FloatStorage`` and friends: what the element type of a storage is."""

    name: str
    dtype: str
    """numpy dtype name, or ``bfloat16``."""

    @property
    def itemsize(self) -> int:
        return dtype_itemsize(self.dtype)


STORAGE_TYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
}


@dataclass(frozen=True)
class StorageRef:
    """A storage named by a persistent id; its bytes are located by the container reader."""

    key: str
    storage_type: StorageType
    location: str
    numel: int
    view_offset: int = 0
    """Legacy files: elements into the root storage ``key`` where this view starts."""


@dataclass
class TensorRef:
    """A tensor as the pickle describes it: a window onto a storage."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    requires_grad: bool = False


class Opaque:
    """Stand-in for an object of a class weightscope does not import. ``args`` are what it was
    constructed or called with, ``state`` what BUILD gave it, ``items`` / ``entries`` what the
    pickle appended or set on it."""

    qualname = "?"
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    state: Any
    items: list[Any]
    entries: dict[Any, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        # NEWOBJ calls __new__ alone, REDUCE calls the class: both end up here
        instance = super().__new__(cls)
        instance.args, instance.kwargs = args, kwargs
        instance.state, instance.items, instance.entries = None, [], {}
        return instance

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.entries[key] = value

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> Opaque:
        return CallResult(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


class CallResult(Opaque):
    """What calling an opaque object gave (its name does not grow with chained calls)."""

    qualname = "(result of a call)"


MAX_NAME = 200
MAX_CLASSES = 10_000
"""Distinct class names one pickle may have stand-ins for; past it they share one."""


class TooManyClasses(Opaque):
    qualname = "(one of too many classes)"


def _opaque_class(qualname: str, cache: dict[str, type[Opaque]]) -> type[Opaque]:
    qualname = qualname[:MAX_NAME]
    cls = cache.get(qualname)
    if cls is None:
        if len(cache) >= MAX_CLASSES:
            return TooManyClasses
        cls = type("Opaque", (Opaque,), {"qualname": qualname})
        cache[qualname] = cls
    return cls


# ---------------------------------------------------------------------------------------------
# what the allowed globals do, reimplemented


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: int,
    size: Any,
    stride: Any,
    requires_grad: bool = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise PickleFormatError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
    return TensorRef(storage, int(storage_offset), _ints(size), _ints(stride), bool(requires_grad))


def _rebuild_tensor(storage: Any, storage_offset: int, size: Any, stride: Any) -> TensorRef:
    return _rebuild_tensor_v2(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: bool, backward_hooks: Any, *state: Any) -> Any:
    if isinstance(data, TensorRef):
        data.requires_grad = bool(requires_grad)
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """A tensor subclass (``Parameter`` in newer files): rebuild the plain tensor."""
    if isinstance(func, _Rebuilder) and func.function in (
        _rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter
    ):  # fmt: skip
        return func(*args)
    return CallResult(func, new_type, args, state)


def _ints(values: Any) -> tuple[int, ...]:
    if not isinstance(values, (tuple, list)) or len(values) > 64:
        raise PickleFormatError("a tensor's shape or stride is not a short tuple of integers")
    if not all(isinstance(v, int) and 0 <= v < 2**62 for v in values):
        raise PickleFormatError("a tensor's shape or stride holds a value out of range")
    return tuple(values)


def _same(value: Any, *_: Any) -> Any:
    return value


class _Rebuilder:
    """An allowed function as the pickle sees it: callable, but BUILD cannot alter it (a bare
    function's ``__defaults__`` could otherwise be set by one file for the next)."""

    __slots__ = ("function",)

    def __init__(self, function: Any) -> None:
        self.function = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.function(*args, **kwargs)

    def __setstate__(self, state: Any) -> None:
        raise PickleFormatError("the pickle tries to alter a tensor rebuilding function")


ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): _Rebuilder(_rebuild_tensor_v2),
    ("torch._utils", "_rebuild_tensor"): _Rebuilder(_rebuild_tensor),
    ("torch._utils", "_rebuild_parameter"): _Rebuilder(_rebuild_parameter),
    ("torch._utils", "_rebuild_parameter_with_state"): _Rebuilder(_rebuild_parameter),
    ("torch._tensor", "_rebuild_from_type_v2"): _Rebuilder(_rebuild_from_type_v2),
    ("torch", "Size"): tuple,
    ("torch.jit._pickle", "build_intlist"): _Rebuilder(_same),
    ("torch.jit._pickle", "build_doublelist"): _Rebuilder(_same),
    ("torch.jit._pickle", "build_boollist"): _Rebuilder(_same),
    ("torch.jit._pickle", "build_tensorlist"): _Rebuilder(_same),
    ("torch.jit._pickle", "restore_type_tag"): _Rebuilder(_same),
}

UNSAFE_MODULES = frozenset(
    {
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "shutil", "socket",
        "importlib", "runpy", "pty", "ctypes", "code", "codeop", "marshal", "pickle", "_pickle",
        "dill", "cloudpickle", "webbrowser", "multiprocessing", "signal", "types", "functools",
        "operator", "io", "_io", "codecs", "tempfile", "asyncio", "threading", "_thread",
        "platform", "pdb", "bdb", "timeit", "trace", "cProfile", "profile", "http", "urllib",
        "ftplib", "smtplib", "telnetlib", "glob", "zipimport", "pkgutil", "sysconfig", "inspect",
        "gc", "weakref", "copyreg", "builtins", "__builtin__", "commands", "popen2", "requests",
        "_posixsubprocess", "_winapi", "msvcrt", "mmap", "fcntl", "resource", "atexit",
        "zipfile", "tarfile", "shelve", "dbm", "sqlite3", "logging", "xmlrpc", "socketserver",
        "site", "distutils", "setuptools", "pip", "ensurepip", "venv", "imp", "readline",
        "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.lib.npyio",
        "torch.hub", "torch.utils.cpp_extension", "torch.package",
    }
)  # fmt: skip
"""Modules (and packages, with everything under them) whose globals could act on the machine
when called: run programs, touch files, load code. ``builtins`` is here too: its harmless
containers are in ``ALLOWED`` and resolve before this list is consulted. Nothing is ever called
either way; a file naming one of these is reported instead of read."""


class RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` never imports; ``persistent_load`` turns storage ids into ``StorageRef``."""

    def __init__(self, file: IO[bytes], storages: dict[str, StorageRef] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages: dict[str, StorageRef] = {} if storages is None else storages
        self.classes: dict[str, type[Opaque]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = "builtins" if module == "__builtin__" else module
        allowed = ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        if module == "torch" and name in STORAGE_TYPES:
            return StorageType(name, STORAGE_TYPES[name])
        parts = module.split(".")
        if any(".".join(parts[:n]) in UNSAFE_MODULES for n in range(1, len(parts) + 1)):
            raise UnsafePickleError(f"the pickle refers to {module}.{name}, which could run code")
        return _opaque_class(f"{module}.{name}", self.classes)

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, tuple) and len(pid) >= 2 and pid[0] == "module":
            return pid[
                1
            ]  # legacy whole-module files name each class with its source: keep the name
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise PickleFormatError("unknown kind of persistent id")
        storage_type, key, location, numel = pid[1], str(pid[2]), str(pid[3]), pid[4]
        if not isinstance(storage_type, StorageType):
            raise PickleFormatError(f"storage of unsupported type {type(storage_type).__name__}")
        if not isinstance(numel, int) or not 0 <= numel < 2**62:
            raise PickleFormatError(f"storage {key[:40]} has a size out of range")
        view = pid[5] if len(pid) > 5 else None
        root = self.storages.get(key)
        if root is None:
            root = StorageRef(key, storage_type, location, numel)
            self.storages[key] = root
        if view is not None:  # legacy view: (view key, offset into the root, view size)
            try:
                _view_key, view_offset, view_size = view
            except (TypeError, ValueError):
                raise PickleFormatError("malformed storage view") from None
            if not (
                isinstance(view_offset, int)
                and isinstance(view_size, int)
                and view_offset >= 0
                and view_size >= 0
                and view_offset + view_size <= root.numel
            ):
                raise PickleFormatError(f"a view of storage {key[:40]} lies outside it")
            return StorageRef(key, storage_type, location, view_size, view_offset)
        return root


_MEMO_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_MEMO_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})


def scan_pickle(file: IO[bytes], limits: Limits = DEFAULT) -> None:
    """Walk one pickle's opcodes without building anything, and refuse the things CPython's C
    unpickler would turn into a huge allocation or a crash: a memo index far past the entries
    stored so far (the memo is zero-filled up to it), objects nested deeper than
    ``max_pickle_depth`` (hashing or freeing them recurses in C), objects sharing parts past
    ``max_pickle_tree`` and pickles over ``max_pickle_bytes``. The stack is simulated with
    depths only, from ``pickletools``' description of each opcode. ``file`` must not yield
    more than the file holds (a length in the pickle is then checked against what is left)."""
    max_depth, max_tree = limits.max_pickle_depth, limits.max_pickle_tree
    start = file.tell()
    end = start + limits.max_pickle_bytes
    stack: list[tuple[int, int]] = []  # (depth, tree size) of each stack item
    marks: list[int] = []
    memo: dict[int, tuple[int, int]] = {}
    opcodes = pickletools.genops(file)
    for opcode, arg, position in opcodes:
        if position is not None and position > end:
            size = _size_of_rest(file, opcodes) - start
            raise LimitExceeded(
                "max_pickle_bytes",
                limits.max_pickle_bytes,
                size,
                f"the pickle holds {size:,} bytes",
            )
        name = opcode.name
        if name == "MARK":
            marks.append(len(stack))
            continue
        if name in _MEMO_PUTS or name == "MEMOIZE":  # stores the top of the stack, pops nothing
            index = len(memo) if name == "MEMOIZE" else _memo_index(arg)
            if index > len(memo) or not stack:
                raise PickleFormatError(f"memo index {index} out of sequence in the pickle")
            memo[index] = stack[-1]
            continue
        before = opcode.stack_before
        popped: list[tuple[int, int]] = []
        if pickletools.markobject in before:
            if not marks:
                raise PickleFormatError("the pickle pops to a mark it never set")
            start_item = max(marks.pop() - before.index(pickletools.markobject), 0)
            popped, stack[start_item:] = stack[start_item:], []
        elif before:
            start_item = max(len(stack) - len(before), 0)
            popped, stack[start_item:] = stack[start_item:], []
        if name in _MEMO_GETS:
            index = _memo_index(arg)
            if index not in memo:
                raise PickleFormatError(f"memo index {index} read in the pickle but never stored")
            item = memo[index]
        elif name == "DUP" and popped:
            item = popped[-1]  # pushed back twice below
        elif popped:
            item = (1 + max(d for d, _ in popped), 1 + sum(n for _, n in popped))
        else:
            item = (0, 1)
        if item[0] > max_depth:
            raise LimitExceeded(
                "max_pickle_depth",
                max_depth,
                item[0],
                f"objects nested more than {max_depth} deep in the pickle",
            )
        if item[1] > max_tree:
            raise LimitExceeded(
                "max_pickle_tree",
                max_tree,
                item[1],
                "an object of the pickle shares parts so often that it cannot be walked "
                f"(over {max_tree:,} nodes with each use counted)",
            )
        stack.extend([item] * len(opcode.stack_after))


def _size_of_rest(file: IO[bytes], opcodes: Any) -> int:
    """Where the pickle ends: its remaining opcodes walked without building anything (so that a
    pickle over ``max_pickle_bytes`` is refused with its real size), or where it breaks off."""
    try:
        for _ in opcodes:
            pass
    except ValueError:
        pass
    return file.tell()


def _memo_index(arg: Any) -> int:
    if not isinstance(arg, int):
        raise PickleFormatError("a memo index in the pickle is not a number")
    return arg


def restricted_load(
    file: IO[bytes], storages: dict[str, StorageRef] | None = None, limits: Limits = DEFAULT
) -> Any:
    """Unpickle one object from ``file`` with the restrictions above, after ``scan_pickle``."""
    try:
        start = file.tell()
        scan_pickle(file, limits)
        file.seek(start)
        return RestrictedUnpickler(file, storages).load()
    except (UnsafePickleError, PickleFormatError, LimitExceeded):
        raise
    except Exception as exc:
        # a damaged or hostile pickle makes the unpickler (or what BUILD/APPEND touch) raise
        # anything from UnpicklingError to AttributeError, OverflowError or MemoryError
        message = str(exc)[:200] or type(exc).__name__
        raise PickleFormatError(f"unreadable pickle: {message}") from exc
