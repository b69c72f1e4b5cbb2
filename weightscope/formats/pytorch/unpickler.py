"""A restricted unpickler for PyTorch files, which never imports torch and never runs code.

The pickle runs on weightscope's own pickle machine (``machine``), which builds plain values and
records only, within a budget proportional to the pickle's size. This module is its policy:
which globals resolve to what, and what a persistent id is. Only an allow-list of globals
resolves to something that acts (tensor and storage rebuilders, ``OrderedDict``, ``set``...),
each reimplemented here to build plain records through the machine. Every other global becomes
an opaque stand-in named after it: calling it, instantiating it or setting its state only
records the arguments. A global from a module that can run code (``os``, ``subprocess``,
``builtins.eval``, ``pydoc.locate``, ``torch.serialization.load``...) makes the whole file
unsafe: reading stops at once with ``UnsafePickleError``, before anything could be called.
"""

from __future__ import annotations

import dataclasses
import re
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from typing import IO, Any

from weightscope.formats.pytorch.machine import RECORD, Budget, Machine
from weightscope.formats.pytorch.records import (
    Allowed,
    CallResult,
    Opaque,
    PickleFormatError,
    QParams,
    QScheme,
    StorageRef,
    StorageType,
    TensorRef,
    UnsafePickleError,
    opaque_class,
)
from weightscope.limits import DEFAULT, LimitExceeded, Limits

__all__ = [
    "ALLOWED",
    "UNSAFE_MODULES",
    "UNSAFE_NAMES",
    "Budget",
    "CallResult",
    "Opaque",
    "PickleFormatError",
    "StorageRef",
    "StorageType",
    "TensorRef",
    "TorchResolver",
    "UnsafePickleError",
    "restricted_load",
    "to_plain",
]

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
    "QInt8Storage": "int8",
    "QUInt8Storage": "uint8",
    "QInt32Storage": "int32",
}
STORAGE_MODULES = ("torch", "torch.cuda")
"""``torch.cuda.FloatStorage`` names a storage saved on a GPU (legacy files); its bytes are read
as those of ``torch.FloatStorage``, as ``torch.load(map_location="cpu")`` does."""

MAX_DIMS = 64
MAX_INDEX = 2**62

# ---------------------------------------------------------------------------------------------
# what the allowed globals do, reimplemented


def _rebuild_tensor_v2(
    machine: Machine,
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise PickleFormatError(f"tensor rebuilt from {type(storage).__name__}, not a storage")
    offset = _index(storage_offset, "a tensor's storage offset")
    shape, strides = _dims(size), _dims(stride)
    if len(shape) != len(strides):
        raise PickleFormatError("a tensor's shape and strides differ in length")
    machine.charge(RECORD)
    flag = requires_grad if type(requires_grad) is bool else _flag(requires_grad)
    return TensorRef(storage, offset, shape, strides, flag)


def _rebuild_tensor(
    machine: Machine, storage: Any, storage_offset: Any, size: Any, stride: Any
) -> TensorRef:
    return _rebuild_tensor_v2(machine, storage, storage_offset, size, stride)


def _rebuild_parameter(
    machine: Machine, data: Any, requires_grad: Any, backward_hooks: Any = None, *state: Any
) -> Any:
    if not isinstance(data, TensorRef):
        return data
    machine.charge(RECORD)
    return dataclasses.replace(data, requires_grad=_flag(requires_grad))


QSCHEMES = {
    f"torch.{name}": QScheme(name)
    for name in (
        "per_tensor_affine", "per_channel_affine", "per_channel_affine_float_qparams",
        "per_tensor_symmetric", "per_channel_symmetric",
    )
}  # fmt: skip
"""The quantization schemes a quantized tensor's pickle names (``torch.per_tensor_affine``):
resolved to data."""
QUANTIZED_DTYPES = frozenset({"int8", "uint8", "int32"})
"""Element types of the storages of quantized tensors (``QInt8Storage``, ``QUInt8Storage``,
``QInt32Storage``); torch's packed 4- and 2-bit storages are not read."""


def _rebuild_qtensor(
    machine: Machine,
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    quantizer_params: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
) -> TensorRef:
    """A quantized tensor: integers on a storage, and its scheme, scale(s) and zero point(s)
    (per tensor: ``(scheme, scale, zero_point)``; per channel: ``(scheme, scales tensor,
    zero_points tensor, axis)``)."""
    tensor = _rebuild_tensor_v2(machine, storage, storage_offset, size, stride, requires_grad)
    dtype = tensor.storage.storage_type.dtype
    if dtype not in QUANTIZED_DTYPES:
        raise PickleFormatError(f"a quantized tensor on a storage of {dtype}")
    params = quantizer_params
    if type(params) is not tuple or not params or type(params[0]) is not QScheme:
        raise PickleFormatError("a quantized tensor without a quantization scheme")
    scheme = params[0].name
    if scheme.startswith("per_tensor"):
        if len(params) != 3 or type(params[1]) not in (int, float) or type(params[2]) is not int:
            raise PickleFormatError(f"{scheme} parameters are not (scheme, scale, zero point)")
        quantized = QParams(scheme, float(params[1]), params[2])
    else:
        if len(params) != 4 or not all(type(p) is TensorRef for p in params[1:3]):
            raise PickleFormatError(f"{scheme} parameters are not (scheme, scales, zeros, axis)")
        axis = params[3]
        if type(axis) is not int or not 0 <= axis < len(tensor.shape):
            raise PickleFormatError(f"{scheme} axis {str(axis)[:20]} is not an axis of the tensor")
        channels = (tensor.shape[axis],)
        if params[1].shape != channels or params[2].shape != channels:
            raise PickleFormatError(
                f"{scheme}: scales and zero points are not one per channel of axis {axis}"
            )
        quantized = QParams(scheme, params[1], params[2], axis)
    machine.charge(RECORD)
    return dataclasses.replace(tensor, quantized=quantized)


TENSOR_REBUILDERS = (_rebuild_tensor_v2, _rebuild_tensor, _rebuild_parameter, _rebuild_qtensor)


def _rebuild_from_type_v2(
    machine: Machine, func: Any, new_type: Any, args: Any, state: Any = None
) -> Any:
    """A tensor subclass (``Parameter`` in newer files): rebuild the plain tensor."""
    if type(func) is Allowed and func.function in TENSOR_REBUILDERS:
        return machine.call(func, args)
    return machine.stand_in(func, (new_type, args, state))


def _index(value: Any, what: str) -> int:
    if type(value) is int and 0 <= value < MAX_INDEX:
        return value
    if type(value) is not bool or not 0 <= value < MAX_INDEX:
        raise PickleFormatError(f"{what} is not an integer in range")
    return int(value)


def _dims(values: Any) -> tuple[int, ...]:
    if type(values) not in (tuple, list) or len(values) > MAX_DIMS:
        raise PickleFormatError(
            f"a tensor's shape or stride is not a tuple of at most {MAX_DIMS} integers"
        )
    if set(map(type, values)) <= _INT and (
        not values or 0 <= min(values) <= max(values) < MAX_INDEX
    ):
        return tuple(values)  # the common case, checked in builtins (a tensor has two of these)
    return tuple(_index(v, "a tensor's shape or stride") for v in values)


_INT = {int}


def _flag(value: Any) -> bool:
    if type(value) not in (bool, int):
        raise PickleFormatError(f"a tensor's requires_grad is a {type(value).__name__}")
    return bool(value)


def _same(machine: Machine, value: Any, *_: Any) -> Any:
    return value


def _torch_size(machine: Machine, items: Any = ()) -> tuple[Any, ...]:
    if type(items) not in (tuple, list):
        raise PickleFormatError(f"torch.Size of a {type(items).__name__}")
    return machine.new_tuple(items)


def _ordered_dict(machine: Machine, items: Any = ()) -> dict[Any, Any]:
    return machine.dict_from_pairs(items, ordered=True)


def _set(machine: Machine, items: Any = ()) -> Any:
    return machine.new_set(items)


def _frozenset(machine: Machine, items: Any = ()) -> Any:
    return machine.new_set(items, frozen=True)


def _slice(machine: Machine, *args: Any) -> slice:
    if not 1 <= len(args) <= 3 or not all(a is None or type(a) is int for a in args):
        raise PickleFormatError("a slice of something else than integers")
    machine.charge(RECORD)
    return slice(*args)


_LATIN1 = ("latin1", "latin-1", "iso-8859-1", "iso8859-1", "l1")


def _latin1(text: Any, encoding: Any) -> bytes:
    """``text.encode(encoding)`` for the one encoding pickle uses to carry bytes in protocol
    2 (``_codecs.encode(text, "latin1")``)."""
    if type(text) is not str or type(encoding) is not str or encoding.lower() not in _LATIN1:
        raise PickleFormatError("bytes encoded otherwise than as a latin-1 string")
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        raise PickleFormatError("bytes encoded otherwise than as a latin-1 string") from None


def _encode(machine: Machine, text: Any, encoding: Any = "utf-8", *_: Any) -> bytes:
    data = _latin1(text, encoding)
    machine.charge(56 + len(data))
    return data


def _bytes_of(machine: Machine, args: tuple[Any, ...]) -> bytes:
    if not args:
        return b""
    if len(args) == 2:
        data = _latin1(*args)
    elif len(args) == 1 and type(args[0]) in (bytes, bytearray):
        data = bytes(args[0])
    elif len(args) == 1 and type(args[0]) is list and all(type(b) is int for b in args[0]):
        try:
            data = bytes(args[0])
        except ValueError:
            raise PickleFormatError("bytes from integers out of range") from None
    else:
        raise PickleFormatError("bytes built from something else than bytes")
    machine.charge(56 + len(data))
    return data


def _bytes(machine: Machine, *args: Any) -> bytes:
    return _bytes_of(machine, args)


def _bytearray(machine: Machine, *args: Any) -> bytearray:
    return bytearray(_bytes_of(machine, args))


def _complex(machine: Machine, real: Any = 0.0, imag: Any = 0.0) -> complex:
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise PickleFormatError("a complex number of something else than numbers")
    try:
        value = complex(real, imag)
    except OverflowError:
        raise PickleFormatError("a complex number out of range") from None
    machine.charge(48)
    return value


def _allowed(table: dict[str, Any]) -> dict[str, Allowed]:
    return {name: Allowed(name, function) for name, function in table.items()}


ALLOWED: dict[str, Allowed] = _allowed(
    {
        "collections.OrderedDict": _ordered_dict,
        "builtins.set": _set,
        "builtins.frozenset": _frozenset,
        "builtins.slice": _slice,
        "builtins.bytes": _bytes,
        "builtins.bytearray": _bytearray,
        "builtins.complex": _complex,
        "_codecs.encode": _encode,
        "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
        "torch._utils._rebuild_tensor": _rebuild_tensor,
        "torch._utils._rebuild_parameter": _rebuild_parameter,
        "torch._utils._rebuild_qtensor": _rebuild_qtensor,
        "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
        "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
        "torch.Size": _torch_size,
        "torch.jit._pickle.build_intlist": _same,
        "torch.jit._pickle.build_doublelist": _same,
        "torch.jit._pickle.build_boollist": _same,
        "torch.jit._pickle.build_tensorlist": _same,
        "torch.jit._pickle.restore_type_tag": _same,
    }
)
"""Globals a pickle may call, by qualified name, each reimplemented (never the real one)."""

UNSAFE_MODULES = frozenset(
    {
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys", "shutil", "socket",
        "importlib", "runpy", "pty", "ctypes", "code", "codeop", "marshal", "pickle", "_pickle",
        "dill", "cloudpickle", "joblib", "webbrowser", "multiprocessing", "signal", "types",
        "functools", "operator", "io", "_io", "codecs", "_codecs", "tempfile", "asyncio",
        "threading", "_thread", "platform", "pdb", "bdb", "timeit", "trace", "cProfile",
        "profile", "http", "urllib", "ftplib", "smtplib", "telnetlib", "glob", "zipimport",
        "pkgutil", "pydoc", "sysconfig", "inspect", "gc", "weakref", "copyreg", "builtins",
        "__builtin__", "commands", "popen2", "requests", "_posixsubprocess", "_winapi",
        "msvcrt", "mmap", "fcntl", "resource", "atexit", "zipfile", "tarfile", "shelve", "dbm",
        "sqlite3", "logging", "xmlrpc", "socketserver", "site", "distutils", "setuptools",
        "pip", "ensurepip", "venv", "imp", "readline", "yaml", "numpy.testing", "numpy.f2py",
        "numpy.distutils", "numpy.lib.npyio", "numpy.lib._npyio_impl", "numpy.lib.format",
        "numpy.lib._datasource", "numpy.ctypeslib", "pandas.io", "torch.hub",
        "torch.utils.cpp_extension", "torch.package", "torch.serialization", "torch.fx",
        "torch.ops", "torch._ops", "torch.jit._serialization", "torch._dynamo",
    }
)  # fmt: skip
"""Modules (and packages, with everything under them) whose globals could act on the machine
when called: run programs, touch files, load code or other pickles. ``builtins`` and
``_codecs`` are here too: their harmless members are in ``ALLOWED`` and resolve before this
list is consulted. Nothing is ever called either way; a file naming one of these is reported
instead of read."""

UNSAFE_NAMES = frozenset(
    {
        "torch._utils._import_dotted_name", "torch.storage._load_from_bytes", "torch.load",
        "torch.save", "torch.from_file", "torch.jit.load", "torch.jit.save", "numpy.load",
        "numpy.loads", "numpy.save", "numpy.savez", "numpy.savez_compressed", "numpy.savetxt",
        "numpy.loadtxt", "numpy.genfromtxt", "numpy.fromfile", "numpy.fromregex",
        "numpy.memmap", "numpy.DataSource", "pandas.read_pickle",
    }
)  # fmt: skip
"""Single globals that load files or pickles (and so run code) in modules otherwise harmless."""

BENIGN = frozenset({"torch.serialization._get_layout"})
"""Globals of an unsafe module that real checkpoints name and that do nothing but answer
(sparse tensors name their layout so): stand-ins, like any unknown global."""

_STORAGE_NAME = re.compile(r"torch(?:\.cuda)?\.(\w+)")


def qualified_name(module: str, name: str) -> str:
    """``module.name`` as Python 3 would resolve it (Python 2 names mapped as CPython's
    unpickler maps them: ``__builtin__.set`` is ``builtins.set``)."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def is_unsafe(qualname: str) -> bool:
    if qualname in BENIGN:
        return False
    if qualname in UNSAFE_NAMES:
        return True
    parts = qualname.split(".")
    return any(".".join(parts[:n]) in UNSAFE_MODULES for n in range(1, len(parts) + 1))


class TorchResolver:
    """Globals and persistent ids of a PyTorch pickle, for the machine: ``find_class`` never
    imports; ``persistent_load`` turns storage ids into ``StorageRef``."""

    def __init__(self, storages: dict[str, StorageRef] | None = None) -> None:
        self.storages: dict[str, StorageRef] = {} if storages is None else storages
        self.classes: dict[str, type[Opaque]] = {}
        self.storage_types: dict[str, StorageType] = {}

    def find_class(self, machine: Machine, module: str, name: str) -> Any:
        qualname = qualified_name(module, name)
        allowed = ALLOWED.get(qualname)
        if allowed is not None:
            return allowed
        if qualname in QSCHEMES:
            return QSCHEMES[qualname]
        storage = _STORAGE_NAME.fullmatch(qualname)
        if storage is not None and storage.group(1) in STORAGE_TYPES:
            kind = storage.group(1)
            found = self.storage_types.get(kind)
            if found is None:
                machine.charge(RECORD)
                found = self.storage_types[kind] = StorageType(kind, STORAGE_TYPES[kind])
            return found
        if is_unsafe(qualname):
            shown = f"{module}.{name}"[:200]
            raise UnsafePickleError(f"the pickle refers to {shown}, which could run code")
        known = len(self.classes)
        cls = opaque_class(qualname, self.classes)
        if len(self.classes) > known:
            machine.charge(1536 + len(cls.qualname))
        return cls

    def persistent_load(self, machine: Machine, pid: Any) -> Any:
        if type(pid) is tuple and len(pid) >= 2 and pid[0] == "module":
            return pid[1]  # legacy whole-module files name each class with its source
        if not (type(pid) is tuple and len(pid) >= 5 and pid[0] == "storage"):
            raise PickleFormatError("unknown kind of persistent id")
        storage_type, key, location, numel = pid[1:5]
        if not isinstance(storage_type, StorageType):
            raise PickleFormatError(f"storage of unsupported type {type(storage_type).__name__}")
        if type(key) is int and -(2**63) <= key < 2**64:
            key = str(key)
        if type(key) is not str or type(location) is not str:
            raise PickleFormatError("a storage whose key or location is not a string")
        if type(numel) is not int or not 0 <= numel < MAX_INDEX:
            raise PickleFormatError(f"storage {key[:40]} has a size out of range")
        view = pid[5] if len(pid) > 5 else None
        root = self.storages.get(key)
        if root is None:
            machine.charge(RECORD + 56 + len(key))
            root = StorageRef(key, storage_type, location, numel)
            self.storages[key] = root
        if view is None:
            return root
        # legacy view: (view key, offset into the root, view size)
        if type(view) is not tuple or len(view) != 3:
            raise PickleFormatError("malformed storage view")
        _view_key, view_offset, view_size = view
        if not (
            type(view_offset) is int
            and type(view_size) is int
            and view_offset >= 0
            and view_size >= 0
            and view_offset + view_size <= root.numel
        ):
            raise PickleFormatError(f"a view of storage {key[:40]} lies outside it")
        machine.charge(RECORD)
        return StorageRef(key, storage_type, location, view_size, view_offset)


def restricted_load(
    source: bytes | IO[bytes],
    storages: dict[str, StorageRef] | None = None,
    limits: Limits = DEFAULT,
    budget: Budget | None = None,
) -> Any:
    """Unpickle one object from ``source`` (a pickle's bytes, or a file positioned at one,
    left positioned after it) with the restrictions above, charging ``budget`` (a new one if
    None: pass one budget for all the pickles of a file)."""
    try:
        return Machine(TorchResolver(storages), source, limits, budget).run()
    except (UnsafePickleError, PickleFormatError, LimitExceeded):
        raise
    except Exception as exc:
        # should not happen; and under a memory cap, MemoryError can come from anywhere
        message = str(exc)[:200] or type(exc).__name__
        raise PickleFormatError(f"unreadable pickle: {message}") from exc


# ---------------------------------------------------------------------------------------------
# plain values of what was unpickled

PLAIN_ITEM = 64
MAX_TEXT = 200


def to_plain(value: Any, budget: Budget, depth: int = 0, within: set[int] | None = None) -> Any:
    """A value from a pickle (a module's config attribute) as plain JSON-able data: ``None``,
    booleans, numbers and strings as they are (strings cut to 200 characters); lists and tuples
    as lists of their first 64 items, 8 deep; anything else, and a list met again inside
    itself, as a short text. Each value produced is charged to ``budget``: shared lists would
    otherwise make the result grow exponentially with the pickle."""
    budget.charge(PLAIN_ITEM)
    kind = type(value)
    if value is None or kind in (bool, float):
        return value
    if kind is int:
        return value if value.bit_length() <= 64 else f"<integer of {value.bit_length()} bits>"
    if kind is str:
        return value if len(value) <= MAX_TEXT else value[:MAX_TEXT] + "..."
    if kind in (list, tuple):
        within = set() if within is None else within
        if id(value) in within:
            return "<the list itself>"
        if depth >= 8:
            return f"<{kind.__name__} of {len(value)} items>"
        within.add(id(value))
        plain = [to_plain(item, budget, depth + 1, within) for item in value[:64]]
        within.discard(id(value))
        return plain
    if isinstance(value, Opaque):
        return repr(value)[:80]
    if kind in (dict, set, frozenset) or isinstance(value, dict):
        return f"<{kind.__name__} of {len(value)} items>"
    return f"<{kind.__name__}>"
