"""PyTorch reader: zip-format ``.pt/.pth/.bin/.ckpt`` (torch >= 1.6), legacy pickle files and
TorchScript archives, read without importing torch and without running code from the file (see
``unpickler``); and live ``torch.nn.Module`` objects (torch is imported only then, by the
caller)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from weightscope.errors import CorruptFileError, UnsafeFileError, file_error
from weightscope.formats._common.file_region import FileRegionSource, OpenFile
from weightscope.formats._common.names import words
from weightscope.formats.protocol import Match, Probe
from weightscope.formats.pytorch import quantized, recurrent
from weightscope.formats.pytorch.files import (
    ClassInfo,
    TorchFile,
    is_legacy_head,
    is_torch_zip,
    read_legacy,
    read_zip,
)
from weightscope.formats.pytorch.layers import (
    BUFFER,
    CONFIG_KEYS,
    PARAMETER,
    UNKNOWN,
    Entry,
    ModuleNode,
    build_layers,
    group_pickled_state_dict,
)
from weightscope.formats.pytorch.machine import Budget
from weightscope.formats.pytorch.records import (
    Opaque,
    PickleFormatError,
    TensorRef,
    UnsafePickleError,
)
from weightscope.formats.pytorch.unpickler import to_plain
from weightscope.limits import LimitExceeded, Limits
from weightscope.model import (
    ArraySource,
    DequantizedSource,
    Model,
    Quantization,
    TensorSource,
)

FRAMEWORK = "pytorch"
CHECKPOINT = "PyTorch checkpoint"
LEGACY_CHECKPOINT = "PyTorch checkpoint (legacy format)"
TORCHSCRIPT = "TorchScript archive"
CONTAINER_KEYS = frozenset(
    {
        "state_dict", "model_state_dict", "model_state", "model", "module", "net", "network",
        "weights", "params", "state", "generator", "ema", "model_ema", "state_dict_ema",
        "ema_state_dict",
    }
)  # fmt: skip
"""Keys under which checkpoints keep a model's weights: an entry of the checkpoint holding one
of these (``{"model": {"state_dict": ...}}``) is looked into, one level."""
NOT_WEIGHTS = ("optim", "scheduler", "scaler")
"""Parts of the keys of optimizer and scheduler state: never the model's weights."""
EMA_WORDS = frozenset({"ema", "swa", "average", "averaged", "shadow"})
"""Words of the keys of averaged copies of the weights: taken last among containers of equal
size."""


def match(probe: Probe) -> Match | None:
    """Legacy pickles, and zips holding a ``data.pkl`` (TorchScript when they hold code)."""
    if is_legacy_head(probe.head):
        return Match(LEGACY_CHECKPOINT, "legacy", probe)
    if probe.archive is not None and is_torch_zip(set(probe.names)):
        scripted = any("/code/" in f"/{name}" for name in probe.names)
        return Match(TORCHSCRIPT if scripted else CHECKPOINT, "zip", probe)
    return None


def load(match: Match, limits: Limits) -> Model:
    path = match.probe.path
    try:
        if match.variant == "legacy":
            torch_file = read_legacy(path, limits)
        else:
            assert match.probe.archive is not None
            torch_file = read_zip(path, match.probe.archive, limits)
    except UnsafePickleError as exc:
        raise file_error(
            UnsafeFileError, path, f"unsafe pickle, refused: {exc}; nothing was run"
        ) from None
    except PickleFormatError as exc:
        raise file_error(CorruptFileError, path, str(exc)) from exc
    return _model_from_pickle(path, torch_file, match.looks_like, limits)


def _model_from_pickle(
    path: Path, torch_file: TorchFile, looked_like: str, limits: Limits
) -> Model:
    remote = getattr(path, "file", None)  # a URL's open file (RemotePath.file)
    file = OpenFile(path, looked_like) if remote is None else remote
    try:
        entry_maker = _EntryMaker(file, torch_file, limits)
        nodes, notes = _nodes(torch_file, entry_maker)
        layers = build_layers(nodes)
    except BaseException:
        file.close()
        raise
    notes = torch_file.notes + notes + entry_maker.notes
    model = Model(path, torch_file.format, FRAMEWORK, None, layers, notes=notes)
    model._resources.callback(file.close)
    return model


class _EntryMaker:
    def __init__(self, file: OpenFile, torch_file: TorchFile, limits: Limits) -> None:
        self.file = file
        self.torch_file = torch_file
        self.limits = limits
        self.classes = torch_file.classes
        self.budget: Budget = torch_file.budget
        self.notes: list[str] = []
        """What reading modules left unread, for the model's notes."""

    def source(self, ref: TensorRef) -> FileRegionSource:
        storage = ref.storage
        base = self.torch_file.storage_offsets[storage.key]
        itemsize = storage.storage_type.itemsize
        return FileRegionSource(
            self.file,
            base + storage.view_offset * itemsize,
            storage.numel,
            storage.storage_type.dtype,
            ref.offset,
            ref.shape,
            ref.stride,
            self.torch_file.byteorder,
        )

    def quantization(self, ref: TensorRef, stored: TensorSource) -> Quantization | None:
        """How a quantized tensor's integers stand for real values; None for another."""
        params = ref.quantized
        if params is None:
            return None
        scale: TensorSource
        zero: TensorSource
        if isinstance(params.scale, TensorRef):
            scale = self.source(params.scale)
        else:
            scale = ArraySource(np.array(params.scale, dtype=np.float64))
        if isinstance(params.zero_point, TensorRef):
            zero = self.source(params.zero_point)
        else:
            zero = ArraySource(np.array(params.zero_point))
        return Quantization(stored, scale, zero, axis=params.axis)

    def __call__(self, attr: str, full_name: str, ref: TensorRef, origin: str) -> Entry:
        storage = ref.storage
        source: TensorSource = self.source(ref)
        quantization = None if ref.quantized is None else self.quantization(ref, source)
        if quantization is not None:
            source = DequantizedSource(quantization)
        identity = (storage.key, storage.view_offset + ref.offset, ref.shape, ref.stride)
        requires_grad = ref.requires_grad if origin == PARAMETER else None
        return Entry(
            attr, full_name, ref.shape, storage.storage_type.dtype, source, identity,
            origin, requires_grad, quantization,
        )  # fmt: skip


def _nodes(torch_file: TorchFile, make: _EntryMaker) -> tuple[list[ModuleNode], list[str]]:
    root = torch_file.root
    if _is_module(root):
        what = "a TorchScript module" if torch_file.classes else "a whole pickled nn.Module"
        return _module_nodes(root, "", make, set()), [what]
    weights, notes = _find_weights(root, make.limits)
    walk = _Walk(make.limits)
    walk.collect(weights, "")
    nodes: list[ModuleNode] = []
    visited: set[int] = set()
    for path, module in walk.modules:
        nodes.extend(_module_nodes(module, path, make, visited))
    tensors = walk.tensors
    if tensors and all(n.startswith("module.") for n in tensors):
        tensors = {n[len("module.") :]: t for n, t in tensors.items()}
        notes.append("'module.' prefix (DataParallel) removed from the names")
    for prefix, members in group_pickled_state_dict(list(tensors)).items():
        node = ModuleNode(prefix or "(root)", None)
        for name, attr in members:
            node.entries.append(make(attr, name, tensors[name], UNKNOWN))
        nodes.append(node)
    nodes += _cell_nodes(walk.objects, make, notes)
    limits = make.limits
    if walk.exhausted:
        notes.append(_exhausted_note(limits, "the search for tensors"))
    if walk.too_deep:
        notes.append(
            f"containers nested more than {limits.max_nesting} deep in the checkpoint were not "
            f"searched for tensors (limit max_nesting; raise it with --limit "
            f"max_nesting={2 * max(limits.max_nesting, 1)})"
        )
    return nodes, notes


def _exhausted_note(limits: Limits, search: str) -> str:
    steps = limits.max_checkpoint_steps
    return (
        f"the checkpoint's object graph is too large: {search} stopped after {steps:,} objects "
        f"(limit max_checkpoint_steps; raise it with --limit "
        f"max_checkpoint_steps={2 * max(steps, 1)})"
    )


def _is_module(obj: Any) -> bool:
    if not isinstance(obj, Opaque):
        return False
    state = obj.state
    return obj.qualname.startswith("__torch__.") or (
        isinstance(state, dict) and "_modules" in state and "_parameters" in state
    )


def _key_name(key: Any) -> str:
    """A dict key as part of a tensor name (keys that are not str/int are not spelled out:
    a hostile pickle can make their repr exponentially long; nor are huge integers)."""
    if isinstance(key, int) and key.bit_length() > 128:
        return f"<integer of {key.bit_length()} bits>"
    return str(key)[:120] if isinstance(key, (str, int)) else f"<{type(key).__name__}>"


@dataclass(frozen=True)
class _Holder:
    """An entry of a checkpoint that holds tensors, and how many."""

    keys: tuple[str, ...]
    """Its key, after the key of the entry it sits in when one level down; empty for the
    tensors at the checkpoint's top level, taken together."""
    value: Any
    tensors: int
    elements: int
    nbytes: int
    order: int

    @property
    def name(self) -> str:
        return self.keys[-1] if self.keys else ""

    @property
    def averaged(self) -> bool:
        return bool(set(words(self.name)) & EMA_WORDS)

    def label(self, entry: str = "") -> str:
        """``'ema'``, ``'ema' inside 'model'`` one level down (each after ``entry``), or
        ``top-level tensors 'step', 'loss'``."""
        if not self.keys:
            names = [repr(_key_name(key)) for key in list(self.value)[:3]]
            return (
                "top-level tensors " + ", ".join(names) + (", ..." if len(self.value) > 3 else "")
            )
        inside = "".join(f" inside {key!r}" for key in reversed(self.keys[:-1]))
        return f"{entry}{self.name!r}{inside}"

    def describe(self) -> str:
        what = "an EMA copy: " if self.averaged else ""
        return (
            f"{self.label()} ({what}{_plural(self.tensors, 'tensor')}, "
            f"{_plural(self.elements, 'value')})"
        )


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" + ("" if count == 1 else "s")


class _Tally:
    """Measures entries of a checkpoint: their distinct tensors, modules' parameters and
    buffers included, within one budget of objects visited for all of them."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.steps_left = limits.max_checkpoint_steps
        self.exhausted = False

    def holder(self, keys: tuple[str, ...], value: Any, order: int) -> _Holder:
        walk = _Walk(self.limits, max_steps=self.steps_left, into_modules=True)
        walk.collect(value, "")
        self.steps_left = max(0, self.steps_left - walk.steps)
        self.exhausted = self.exhausted or walk.exhausted
        distinct = {_identity(ref): ref for ref in walk.tensors.values()}
        elements = sum(math.prod(ref.shape) for ref in distinct.values())
        nbytes = sum(
            math.prod(ref.shape) * ref.storage.storage_type.itemsize for ref in distinct.values()
        )
        return _Holder(keys, value, len(distinct), elements, nbytes, order)

    def holders(self, parent: tuple[str, ...], table: Mapping[Any, Any]) -> list[_Holder]:
        """The entries of ``table`` that hold tensors (optimizer state apart; at the top level,
        the tensors that are entries themselves together as one), largest first; of equal
        ones, the weights before an averaged copy, then in file order."""
        found = []
        if not parent:
            own = {k: v for k, v in table.items() if isinstance(v, TensorRef)}
            if own:
                found.append(self.holder((), own, -1))
        for order, (key, value) in enumerate(table.items()):
            name = _key_name(key)
            if not _is_optimizer(name) and not (isinstance(value, TensorRef) and not parent):
                holder = self.holder((*parent, name), value, order)
                if holder.tensors:
                    found.append(holder)
        return sorted(found, key=lambda h: (-h.nbytes, h.averaged, h.order))


def _find_weights(root: Any, limits: Limits) -> tuple[Any, list[str]]:
    """The part of a checkpoint that holds the model's weights, and notes on where it was and
    what else the checkpoint holds. Of the checkpoint's entries holding tensors, the one
    holding the most tensor data is the model; when that is a wrapper of containers
    (``{"model": {"state_dict": ..., "ema": ...}}``), the largest inside it. The others, and
    optimizer state, are listed in the notes and never counted."""
    if not isinstance(root, Mapping) or _is_state_dict(root):
        return root, []
    tally = _Tally(limits)
    holders = tally.holders((), root)
    if not holders:
        return _everything(root)
    chosen, others = holders[0], holders[1:]
    if not chosen.keys and not others:
        return root, []  # a state dict with a few other values beside its tensors
    if _is_wrapper(chosen.value):
        inner = tally.holders(chosen.keys, chosen.value)
        if inner and (inner[0].name in CONTAINER_KEYS or inner[0].averaged):
            chosen, others = inner[0], inner[1:] + others
    note = f"weights from the checkpoint's {chosen.label('entry ')}"
    if others:
        note += f", the largest of {len(others) + 1} entries holding tensors"
    notes = [note]
    if others:
        notes.append(
            "also holding tensors, not counted: "
            + ", ".join(h.describe() for h in others[:8])
            + (", ..." if len(others) > 8 else "")
        )
    optimizer = [
        tally.holder((name,), value, order)
        for order, (key, value) in enumerate(root.items())
        if _is_optimizer(name := _key_name(key))
    ]
    if optimizer:
        notes.append(
            "optimizer and scheduler state, not counted: "
            + ", ".join(h.describe() if h.tensors else repr(h.name) for h in optimizer[:8])
            + (", ..." if len(optimizer) > 8 else "")
        )
    listed = {h.keys[0] for h in (chosen, *others, *optimizer) if h.keys}
    listed |= {_key_name(k) for k, v in root.items() if isinstance(v, TensorRef)}
    rest = [name for name in map(_key_name, root) if name not in listed]
    if rest:
        notes.append(
            "also in the file, not parameters: "
            + ", ".join(rest[:8])
            + (", ..." if len(rest) > 8 else "")
        )
    if tally.exhausted:
        notes.append(_exhausted_note(limits, "the search for the checkpoint's weights"))
    return chosen.value, notes


def _is_state_dict(table: Mapping[Any, Any]) -> bool:
    """Tensors only, and what a quantized model's state dict keeps beside them."""
    return all(
        isinstance(v, TensorRef) or quantized.is_state_dict_extra(k, v) for k, v in table.items()
    )


def _everything(root: Mapping[Any, Any]) -> tuple[Any, list[str]]:
    """No entry holds tensors: every module and tensor of the checkpoint is listed."""
    names = {k: _key_name(k) for k in root}
    kept = {k: v for k, v in root.items() if not _is_optimizer(names[k])}
    dropped = [names[k] for k in root if k not in kept]
    notes = ["no state dict entry found: every tensor and module in the checkpoint is listed"]
    if dropped:
        notes.append(f"optimizer and scheduler state not counted: {', '.join(dropped[:8])}")
    return kept, notes


def _is_optimizer(name: str) -> bool:
    return any(word in name.lower() for word in NOT_WEIGHTS)


def _is_wrapper(value: Any) -> bool:
    """A mapping of containers (not itself a state dict or a module)."""
    return isinstance(value, Mapping) and not _is_tensor_dict(value)


def _identity(ref: TensorRef) -> tuple[Any, ...]:
    """Equal for two references to one tensor (tied weights, a tensor listed twice)."""
    storage = ref.storage
    return (storage.key, storage.view_offset + ref.offset, ref.shape, ref.stride)


def _is_tensor_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and any(isinstance(v, TensorRef) for v in value.values())


class _Walk:
    """Tensors and whole modules anywhere in a checkpoint, each object visited once (a pickle
    can share sub-objects so that the paths through them multiply), within a step budget
    (``max_checkpoint_steps``) and a depth (``max_nesting``)."""

    def __init__(
        self, limits: Limits, max_steps: int | None = None, into_modules: bool = False
    ) -> None:
        self.max_steps = limits.max_checkpoint_steps if max_steps is None else max_steps
        self.max_depth = limits.max_nesting
        self.into_modules = into_modules
        """Whether a module's parameters and buffers are collected as tensors (to measure it)."""
        self.tensors: dict[str, TensorRef] = {}
        self.modules: list[tuple[str, Opaque]] = []
        self.objects: list[tuple[str, Opaque]] = []
        """Packed-parameter objects (``torch.ScriptObject``) of quantized modules."""
        self.seen: set[int] = set()
        self.steps = 0
        self.exhausted = False
        self.too_deep = False

    def collect(self, obj: Any, prefix: str, depth: int = 0) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            self.exhausted = True
            return
        if id(obj) in self.seen:
            return
        if isinstance(obj, TensorRef):
            self.tensors.setdefault(prefix or "tensor", obj)
        elif _is_module(obj) and self.into_modules:
            self.collect(obj.state, prefix, depth)
        elif _is_module(obj):
            self.seen.add(id(obj))
            self.modules.append((prefix, obj))
        elif isinstance(obj, Opaque) and obj.qualname == quantized.SCRIPT_OBJECT:
            self.seen.add(id(obj))
            self.objects.append((prefix, obj))
        elif isinstance(obj, (Mapping, list, tuple)):
            if depth >= self.max_depth:
                self.too_deep = True
                return
            self.seen.add(id(obj))
            items = obj.items() if isinstance(obj, Mapping) else enumerate(obj)
            for key, value in items:
                self.collect(value, _join(prefix, _key_name(key)), depth + 1)


def _module_nodes(
    module: Opaque,
    name: str,
    make: _EntryMaker,
    visited: set[int],
    depth: int = 0,
) -> list[ModuleNode]:
    """A pickled ``nn.Module`` (state with ``_parameters``, ``_buffers``, ``_modules``) or a
    TorchScript module (attributes; parameters and buffers named by the archive's code). A
    module shared under two names is listed under the first."""
    limit = make.limits.max_nesting
    if depth > limit:
        raise LimitExceeded(
            "max_nesting", limit, depth, f"modules nested more than {limit} deep in the pickle"
        )
    if id(module) in visited:
        return []
    visited.add(id(module))
    state = module.state if isinstance(module.state, dict) else {}
    node = ModuleNode(name or "(root)", module.qualname.removeprefix("__torch__."))
    children: list[tuple[str, Opaque]] = []
    conv = quantized.conv_state(module.state)
    if conv is not None and quantized.is_quantized_class(module.qualname):
        config, weight, bias = conv
        node.entries.append(make("weight", _join(name, "weight"), weight, PARAMETER))
        if bias is not None:
            node.entries.append(make("bias", _join(name, "bias"), bias, PARAMETER))
        node.attrs = {k: to_plain(v, make.budget) for k, v in config.items()}
    elif "_parameters" in state:
        tables = ((PARAMETER, state.get("_parameters")), (BUFFER, state.get("_buffers")))
        for origin, table in tables:
            for attr, value in _str_items(table):
                if isinstance(value, TensorRef):
                    node.entries.append(make(attr, _join(name, attr), value, origin))
        submodules = _str_items(state.get("_modules"))
        children = [(k, v) for k, v in submodules if isinstance(v, Opaque)]
        node.attrs = {k: to_plain(v, make.budget) for k, v in _str_items(state) if k in CONFIG_KEYS}
    else:
        info = make.classes.get(module.qualname, ClassInfo())
        for attr, value in _str_items(state):
            if isinstance(value, TensorRef):
                origin = UNKNOWN
                if attr in info.parameters:
                    origin = PARAMETER
                elif attr in info.buffers:
                    origin = BUFFER
                node.entries.append(make(attr, _join(name, attr), value, origin))
            elif isinstance(value, Opaque) and value.qualname.startswith("__torch__."):
                children.append((attr, value))
        node.attrs = dict(info.constants)
        if quantized.is_quantized_class(module.qualname):  # its scale, zero point: attributes
            plain = ((k, v) for k, v in _str_items(state) if type(v) in (int, float, bool))
            node.attrs.update({k: v for k, v in plain if k in CONFIG_KEYS})
    if quantized.is_quantized_class(module.qualname):
        packed = _packed_children(node, state, make)
        children = [(k, v) for k, v in children if k not in packed]
    nodes = [node]
    for child_name, child in children:
        nodes.extend(_module_nodes(child, _join(name, child_name), make, visited, depth + 1))
    return nodes


def _packed_children(node: ModuleNode, state: dict[Any, Any], make: _EntryMaker) -> set[str]:
    """A pickled quantized module's weights kept in packed objects, as the node's entries
    under their state-dict names: a Linear's ``_packed_params`` (``fc._packed_params.
    _packed_params.0``), a dynamic LSTM's or GRU's ``_all_weight_values``; the submodules
    read so."""
    name = "" if node.name == "(root)" else node.name
    linear = quantized.module_packed_linear(state)
    if linear is not None:
        prefix = _join(name, quantized.PACKED_PREFIX)
        for index, (attr, ref) in enumerate(zip(("weight", "bias"), linear, strict=True)):
            if ref is not None:
                node.entries.append(make(attr, f"{prefix}.{index}", ref, PARAMETER))
        return {"_packed_params"}
    values = quantized.submodules(state).get("_all_weight_values")
    if not isinstance(values, Opaque) or not isinstance(values.state, dict):
        return set()
    cells = []
    for key, holder in _str_items(quantized.submodules(values.state)):
        if not isinstance(holder, Opaque):
            continue  # a TorchScript module's own attributes, beside its submodules
        param = holder.state.get("param") if isinstance(holder.state, dict) else None
        cell = quantized.cell_tensors(param)
        if cell is None:
            make.notes.append(f"{node.name}: packed recurrent cells of no known form, not read")
            return {"_all_weight_values"}
        cells.append((_join(name, f"_all_weight_values.{key}.param"), cell))
    bidirectional = node.attrs.get("bidirectional")
    _add_cells(node, cells, bidirectional if type(bidirectional) is bool else None, make)
    return {"_all_weight_values"}


def _add_cells(
    node: ModuleNode,
    cells: list[tuple[str, dict[str, TensorRef]]],
    bidirectional: bool | None,
    make: _EntryMaker,
) -> None:
    """A dynamic quantized recurrent module's cells as entries named as the float module's
    (``weight_ih_l0_reverse``), each under its cell's path (``rnn._all_weight_values.1.param.
    weight_ih``)."""
    positions, note = quantized.cell_positions([c for _, c in cells], bidirectional)
    origin = UNKNOWN if bidirectional is None else PARAMETER
    for (path, cell), (layer, reverse) in zip(cells, positions, strict=True):
        for base, ref in cell.items():
            attr = quantized.cell_attr(base, layer, reverse)
            node.entries.append(make(attr, f"{path}.{base}", ref, origin))
    if note:
        node.notes.append(note)


def _cell_nodes(
    objects: list[tuple[str, Opaque]], make: _EntryMaker, notes: list[str]
) -> list[ModuleNode]:
    """The dynamic quantized LSTMs and GRUs of a state dict, from their cells' packed objects
    (``rnn._all_weight_values.0.param``); other packed objects are named in ``notes``."""
    modules: dict[str, list[tuple[int, str, dict[str, TensorRef]]]] = {}
    unread = []
    for path, obj in objects:
        where = quantized.cell_name(path)
        cell = quantized.cell_tensors(obj)
        if where is None or cell is None:
            unread.append(path)
        else:
            modules.setdefault(where[0], []).append((where[1], path, cell))
    nodes = []
    for prefix, found in modules.items():
        node = ModuleNode(prefix or "(root)", None)
        _add_cells(node, [(path, cell) for _, path, cell in sorted(found)], None, make)
        nodes.append(node)
    if unread:
        notes.append(
            "packed objects (torch.ScriptObject) of no known form, not read: "
            + ", ".join(unread[:8])
            + (", ..." if len(unread) > 8 else "")
        )
    return nodes


def _str_items(table: Any) -> list[tuple[str, Any]]:
    """Items of a dict with string keys (anything else in a hostile pickle is skipped)."""
    if not isinstance(table, Mapping):
        return []
    return [(k, v) for k, v in table.items() if isinstance(k, str)]


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


# ---------------------------------------------------------------------------------------------
# live modules


class TorchTensorSource:
    """A live tensor, copied to numpy only when read."""

    def __init__(self, tensor: Any) -> None:
        self._tensor = tensor

    def read(self) -> np.ndarray:
        tensor = self._tensor.detach().cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            tensor = tensor.float()
        return np.asarray(tensor.numpy())

    def chunks(self, max_elements: int) -> Any:
        return ArraySource(self.read()).chunks(max_elements)

    def stats(self, max_elements: int) -> Any:
        return ArraySource(self.read()).stats(max_elements)


def _live_quantized(module: Any, name: str) -> list[Entry]:
    """The weights of a live quantized module (kept in packed objects, not parameters): a
    Linear's or conv's ``_weight_bias()``, a dynamic LSTM's or GRU's per cell; named as in
    its state dict."""
    weight_bias = getattr(module, "_weight_bias", None)
    if weight_bias is None or type(module).__name__ == "LinearPackedParams":
        return []
    found = weight_bias()
    if isinstance(found, dict):  # dynamic LSTM/GRU: {"weight": {...}, "bias": {...}}
        directions = 2 if module.bidirectional else 1
        entries = []
        for table in found.values():
            for attr, tensor in table.items():
                where = recurrent.part(attr)
                if where is None or tensor is None:
                    continue
                cell = where.layer * directions + where.reverse
                base = where.base
                full = _join(name, f"_all_weight_values.{cell}.param.{base}")
                entries.append(_live_entry(attr, full, tensor))
        return entries
    weight, bias = found
    packed = type(module).__name__ == "Linear"
    names = (
        [_join(name, f"{quantized.PACKED_PREFIX}.{i}") for i in (0, 1)]
        if packed
        else [_join(name, "weight"), _join(name, "bias")]
    )
    entries = [_live_entry("weight", names[0], weight)]
    if bias is not None:
        entries.append(_live_entry("bias", names[1], bias))
    return entries


def _live_entry(attr: str, full_name: str, tensor: Any) -> Entry:
    """A live tensor, quantized ones as their integers, scale(s) and zero point(s)."""
    quantization = None
    source: TensorSource = TorchTensorSource(tensor)
    dtype = str(tensor.dtype).removeprefix("torch.")
    if tensor.is_quantized:
        per_channel = tensor.qscheme() in (_torch().per_channel_affine,)
        if per_channel:
            scale = ArraySource(tensor.q_per_channel_scales().numpy())
            zero = ArraySource(tensor.q_per_channel_zero_points().numpy())
            axis = int(tensor.q_per_channel_axis())
        else:
            scale = ArraySource(np.array(tensor.q_scale(), dtype=np.float64))
            zero = ArraySource(np.array(tensor.q_zero_point()))
            axis = None
        stored = ArraySource(tensor.int_repr().numpy())
        quantization = Quantization(stored, scale, zero, axis=axis)
        source = DequantizedSource(quantization)
        dtype = str(stored.read().dtype)
    # the tensor itself as identity (hashed by id): kept alive, its id is not reused
    return Entry(
        attr, full_name, tuple(tensor.shape), dtype, source, tensor, PARAMETER,
        bool(tensor.requires_grad), quantization,
    )  # fmt: skip


def _torch() -> Any:
    import torch  # only for a live module: the caller imported torch already

    return torch


def match_object(obj: Any) -> bool:
    """A live ``torch.nn.Module`` (checked without importing torch)."""
    return any(
        f"{cls.__module__}.{cls.__qualname__}" == "torch.nn.modules.module.Module"
        for cls in type(obj).__mro__
    )


def load_object(module: Any, limits: Limits) -> Model:
    """A live ``torch.nn.Module``: classes, groups, strides... from the modules themselves."""
    nodes = []
    for name, sub in module.named_modules():
        node = ModuleNode(name or "(root)", f"{type(sub).__module__}.{type(sub).__qualname__}")
        for origin, table in ((PARAMETER, sub._parameters), (BUFFER, sub._buffers)):
            for attr, tensor in table.items():
                if tensor is None:
                    continue
                dtype = str(tensor.dtype).removeprefix("torch.")
                node.entries.append(
                    Entry(
                        attr,
                        _join(name, attr),
                        tuple(tensor.shape),
                        dtype,
                        TorchTensorSource(tensor),
                        id(tensor),
                        origin,
                        bool(tensor.requires_grad) if origin == PARAMETER else None,
                    )
                )
        node.attrs = {k: v for k, v in vars(sub).items() if not k.startswith("_")}
        if quantized.is_quantized_class(node.class_name):
            node.entries += _live_quantized(sub, name)
        nodes.append(node)
    import torch  # the caller handed us a torch object: torch is already imported

    return Model(None, "live", FRAMEWORK, torch.__version__, build_layers(nodes))
