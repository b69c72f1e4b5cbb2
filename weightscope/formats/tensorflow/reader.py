"""TensorFlow checkpoint bundles (``prefix.index`` + ``prefix.data-SSSSS-of-NNNNN``), as
``tf.train.Checkpoint``, tf-keras ``save_weights`` (TF format) and TF1 ``Saver`` write them,
read without TensorFlow: the index decoded by :mod:`.bundle`, each tensor's data read lazily
from its shard by offset, every declared region checked against the shard's real size.

Variables are grouped into layers by their object-graph path (``model/layer_with_weights-0/
kernel/.ATTRIBUTES/VARIABLE_VALUE``: layer ``model/layer_with_weights-0``, role ``kernel``;
Keras 3's ``_kernel`` is its ``kernel``). A checkpoint records no layer classes, so kinds are
inferred from names and shapes as for a Keras weights-only file
(:func:`weightscope.formats.keras.catalog.infer_class`): the names are the layer's name in the
name each variable was saved under (the object graph's ``full_name``, :mod:`.object_graph`)
and the last component of its path (a TF1 scope, a subclassed model's attribute). Where
neither names a class and the shapes cannot tell (a plain from a transposed conv when its
kernel is square in channels or has no bias; a Keras 3 depthwise conv of multiplier 1 from a
transposed conv of one input channel; the groups of a conv), the layer's note says what is not
recorded. Each tensor's CRC32C is checked when its bytes are read whole (:mod:`.checksum`). The
layouts are the Keras entries of the layout table: the variables of a checkpointed Keras model
are Keras' own, stored in Keras' layouts, so such layers carry Keras' conventions (their
``framework`` is ``keras``; the model's is ``tensorflow``). Optimizer state (``optimizer/...``,
``.OPTIMIZER_SLOT/...``, TF1 slots ``var/Adam``) and the counters ``save_counter`` and
``global_step`` are listed, never counted; strings, resources and
variants (``_CHECKPOINTABLE_OBJECT_GRAPH``) are named in the notes, never read."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from weightscope.errors import CorruptFileError, file_error
from weightscope.formats._common.file_region import FileRegionSource, OpenFile, c_strides
from weightscope.formats._common.protowire import WireError
from weightscope.formats.keras import catalog, recurrent
from weightscope.formats.keras.tensors import depthwise_groups, variable_tensors
from weightscope.formats.protocol import Match, Probe
from weightscope.formats.tensorflow import object_graph
from weightscope.formats.tensorflow.bundle import BundleEntry, BundleError, Header, read_index
from weightscope.formats.tensorflow.checksum import ChecksummedSource
from weightscope.formats.tensorflow.slices import assemble
from weightscope.formats.tensorflow.table import FOOTER_BYTES, has_magic
from weightscope.kinds import Kind
from weightscope.limits import LimitExceeded, Limits, limit_error
from weightscope.model import (
    NON_TRAINABLE_ROLES,
    Layer,
    Model,
    Tensor,
    TensorSource,
)

FRAMEWORK = "tensorflow"
FORMAT = "tf-checkpoint"
LOOKS_LIKE = "TensorFlow checkpoint"

VALUE_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
SLOT_MARK = "/.OPTIMIZER_SLOT/"
SLICES = " (slices)"
SLICES_NOTE = "the slices of a partitioned variable, as stored (together, the whole variable)"
CELL = "/cell"
"""A Keras recurrent layer keeps its variables in its cell: the layer is named without it."""
OPTIMIZER = "optimizer"

OPTIMIZER_NOTE = (
    "optimizer state (slots such as Adam's moments, iterations, learning rate): listed, "
    "not parameters"
)
COUNTERS = {
    "save_counter": "how many times tf.train.Checkpoint saved: not a parameter",
    "global_step": "the training step counter: not a parameter",
}
TF1_OPTIMIZER_SCALARS = frozenset({"beta1_power", "beta2_power"})
"""TF1 ``AdamOptimizer``'s decay accumulators, stored at the root."""
UNSIZED_NOTES = {
    "_CHECKPOINTABLE_OBJECT_GRAPH": "the serialized object graph",
}


def shard_path(index: Path, shard: int, num_shards: int) -> Path:
    prefix = str(index)[: -len(".index")]
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


def match(probe: Probe) -> Match | None:
    """A ``.index`` file (refused by :func:`load` with the reason when it is not a bundle's),
    or any file whose last bytes are the table magic number."""
    if probe.is_zip:
        return None
    if probe.path.name.endswith(".index"):
        return Match(LOOKS_LIKE, "bundle", probe)
    if probe.size < FOOTER_BYTES:
        return None
    with open(probe.path, "rb") as handle:
        handle.seek(probe.size - 8)
        tail = handle.read(8)
    return Match(LOOKS_LIKE, "bundle", probe) if has_magic(tail) else None


def match_object(obj: Any) -> bool:
    """A live ``tf.Module`` that is no Keras layer (checked without importing tensorflow)."""
    from weightscope.formats.tensorflow.live import is_tf_module

    return is_tf_module(obj)


def load_object(obj: Any, limits: Limits) -> Model:
    """A live ``tf.Module``: its variables by attribute path, kinds from roles and shapes."""
    from weightscope.formats.tensorflow.live import load_tf_module

    return load_tf_module(obj)


def load(match: Match, limits: Limits) -> Model:
    path = match.probe.path
    if not path.name.endswith(".index"):
        raise file_error(
            CorruptFileError, path, "a checkpoint index must be named PREFIX.index", LOOKS_LIKE
        )
    size = path.stat().st_size
    try:
        limits.check("max_tf_index_bytes", size, f"the index is {size:,} bytes")
    except LimitExceeded as exc:
        raise limit_error(path, exc) from None
    data = path.read_bytes()
    try:
        header, entries = read_index(data)
    except BundleError as exc:
        raise file_error(CorruptFileError, path, str(exc), LOOKS_LIKE) from None
    shards: dict[int, OpenFile] = {}
    try:
        for entry in entries:
            if entry.sized and not entry.sliced and entry.shard not in shards:
                shards[entry.shard] = _open_shard(path, entry.shard, header.num_shards)
        names, notes = _saved_names(path, header, entries, shards, limits)
        layers, more = _layers(path, entries, shards, header.byteorder, names)
        notes += more
    except BaseException:
        for file in shards.values():
            file.close()
        raise
    model = Model(
        path,
        FORMAT,
        FRAMEWORK,
        None,
        layers,
        notes=notes,
        inputs=[path, *(file.path for file in shards.values())],
    )
    for file in shards.values():
        model._resources.callback(file.close)
    return model


def _open_shard(index: Path, shard: int, num_shards: int) -> OpenFile:
    file = shard_path(index, shard, num_shards)
    if not file.is_file():
        raise file_error(
            CorruptFileError, index, f"its data shard {file.name} is missing", LOOKS_LIKE
        )
    return OpenFile(file, LOOKS_LIKE)


def _saved_names(
    index: Path,
    header: Header,
    entries: list[BundleEntry],
    shards: dict[int, OpenFile],
    limits: Limits,
) -> tuple[dict[str, str], list[str]]:
    """The name each variable was saved under, from the object graph (none in a TF1
    checkpoint); a graph that does not decode gives none, with a note."""
    entry = next((e for e in entries if e.name == object_graph.KEY and e.dtype == "string"), None)
    if entry is None or entry.shape != () or entry.sliced:
        return {}, []
    try:
        limits.check(
            "max_tf_index_bytes", entry.size, f"its object graph declares {entry.size:,} bytes"
        )
    except LimitExceeded as exc:
        raise limit_error(index, exc) from None
    if entry.shard not in shards:
        shards[entry.shard] = _open_shard(index, entry.shard, header.num_shards)
    file = shards[entry.shard]
    _check_region(index, entry, file)
    try:
        return object_graph.full_names(
            object_graph.scalar_string(file.read(entry.offset, entry.size))
        ), []
    except WireError as exc:
        return {}, [f"the object graph does not decode ({exc}): layers named by path only"]


def variable_path(name: str) -> str:
    """The object-graph path of a stored tensor (``.../kernel``), or the name itself (TF1)."""
    return name[: -len(VALUE_SUFFIX)] if name.endswith(VALUE_SUFFIX) else name


def is_optimizer_state(path: str, paths: frozenset[str]) -> bool:
    """Optimizer state: under ``optimizer/``, an object-graph ``.OPTIMIZER_SLOT``, TF1 Adam's
    ``beta1_power``, or a TF1 slot (``dense/kernel/Adam``: named under another variable)."""
    return (
        path.startswith(OPTIMIZER + "/")
        or SLOT_MARK in f"/{path}/"
        or path in TF1_OPTIMIZER_SCALARS
        or path.rpartition("/")[0] in paths
    )


def _layers(
    index: Path,
    entries: list[BundleEntry],
    shards: dict[int, OpenFile],
    byteorder: str,
    names: dict[str, str],
) -> tuple[list[Layer], list[str]]:
    notes: list[str] = []
    groups: dict[str, list[tuple[str, BundleEntry]]] = {}
    state: list[Tensor] = []
    counters: dict[str, Tensor] = {}
    paths = frozenset(variable_path(entry.name) for entry in entries)
    slices: dict[str, list[BundleEntry]] = {}
    whole = _assembled(index, entries, shards, byteorder, notes)
    for entry in entries:
        if not entry.sized:
            what = UNSIZED_NOTES.get(entry.name, "not a number array")
            notes.append(f"not counted: {entry.name} ({entry.dtype}: {what})")
            continue
        if entry.slice_of in whole:
            continue  # read with its variable
        if entry.sliced and entry.name not in whole:
            notes.append(
                f"{entry.name}: a partitioned variable of shape {entry.shape}, stored as "
                f"slices (layer {entry.name + SLICES!r})"
            )
            continue
        source = whole.get(entry.name) or _source(index, entry, shards[entry.shard], byteorder)
        if entry.slice_of is not None:
            slices.setdefault(entry.slice_of, []).append(entry)
            continue
        path = variable_path(entry.name)
        if path in COUNTERS:
            counters[path] = _tensor(entry, path, None, False, source, counted=False)
            continue
        if is_optimizer_state(path, paths):
            role = path.removeprefix(OPTIMIZER + "/")
            state.append(_tensor(entry, role, None, False, source, counted=False))
            continue
        parent, _, role = path.rpartition("/")
        groups.setdefault(parent or "(root)", []).append((role, entry))
    layers = [_layer(index, name, members, shards, byteorder, names, whole) for name, members in
              sorted(groups.items(), key=lambda item: _natural_key(item[0]))]  # fmt: skip
    for name, parts in slices.items():
        tensors = []
        for i, part in enumerate(parts):
            source = _source(index, part, shards[part.shard], byteorder)
            tensor = _tensor(part, f"slice{i}", None, None, source)
            tensor.name = f"{name} (slice {i})"  # the stored key is binary
            tensors.append(tensor)
        layers.append(Layer(name + SLICES, Kind.UNKNOWN, tensors, note=SLICES_NOTE))
    if state:
        layers.append(Layer(OPTIMIZER, Kind.UNKNOWN, state, note=OPTIMIZER_NOTE))
    for name, tensor in counters.items():
        layers.append(Layer(name, Kind.UNKNOWN, [tensor], note=COUNTERS[name]))
    return layers, notes


def _layer(
    index: Path,
    name: str,
    members: list[tuple[str, BundleEntry]],
    shards: dict[int, OpenFile],
    byteorder: str,
    names: dict[str, str],
    whole: Mapping[str, TensorSource] | None = None,
) -> Layer:
    """The layer of the variables ``members`` (``whole``: variables stored as slices, read
    whole)."""
    members = [(_keras_role(role), entry) for role, entry in members]
    roles = {role: entry.shape for role, entry in members}
    hints = _name_hints(name, members, names)
    guess = catalog.infer_class(hints, roles, [entry.shape for _, entry in members])
    class_name, notes = _settle(guess.class_name, guess.note, roles)
    layer_type = catalog.layer_type(class_name)
    config: dict[str, Any] = {}
    if layer_type is not None and recurrent.is_recurrent(class_name):
        problem = recurrent.shape_problem(class_name or "", roles)
        if problem is not None:
            layer_type = None
            notes.append(f"{problem}: no canonical form")
        else:
            config = recurrent.inferred_config(class_name or "", roles)
            notes += recurrent.notes(class_name or "", None, roles)
    kind = layer_type.kind if layer_type is not None else "unknown"
    tensors: list[Tensor] = []
    for role, entry in members:
        if layer_type is not None:
            role = catalog.normalise_role(kind, role)
        trainable = False if role in NON_TRAINABLE_ROLES else None
        base = (whole or {}).get(entry.name) or _source(
            index, entry, shards[entry.shard], byteorder
        )
        tensors += variable_tensors(
            entry.name, role, entry.shape, entry.dtype, base, trainable, layer_type, class_name
        )
    if kind.startswith("conv") and not kind.startswith("conv_transpose"):
        notes.append(
            "groups are not recorded in a checkpoint: 1 assumed (the kernel's input axis "
            "holds in/groups channels whatever they are)"
        )
    return Layer(
        name.removesuffix(CELL),
        Kind(kind),
        tensors,
        config=config,
        groups=depthwise_groups(tensors, 1),
        inferred=True,
        class_name=class_name,
        note="; ".join(notes),
        framework="keras" if layer_type is not None else None,
    )


KERAS3_PRIVATE = frozenset({"_kernel", "_embeddings"})
"""Keras 3 keeps these behind properties (for quantization and LoRA): the same variables."""


def _keras_role(role: str) -> str:
    return role[1:] if role in KERAS3_PRIVATE else role


def _name_hints(
    path: str, members: list[tuple[str, BundleEntry]], names: dict[str, str]
) -> list[str]:
    """Names that may say the layer's class: its layer name in the names its variables were
    saved under, then the last component of its path."""
    hints = []
    for _, entry in members:
        saved = names.get(entry.name, "")
        layer = saved.removesuffix(CELL).rpartition("/")[0]
        if layer and layer not in hints:
            hints.append(layer)
    hints.append(path.removesuffix(CELL).rsplit("/", 1)[-1])
    return hints


NOT_RECORDED = "not recorded in a checkpoint"


def _settle(
    class_name: str | None, note: str, roles: dict[str, tuple[int, ...]]
) -> tuple[str | None, list[str]]:
    """The class a layer is taken as and its notes, where its shapes alone decided: what they
    cannot tell apart is said, and a Keras 3 depthwise kernel (``kernel``, its bias of
    ``in * multiplier``) is recognised."""
    kernel, bias = roles.get("kernel"), roles.get("bias")
    if "from the name" in note or kernel is None or not set(roles) <= {"kernel", "bias"}:
        return class_name, [note]
    rank = len(kernel)
    depthwise = bias is not None and kernel[-1] > 1 and bias[0] == kernel[-2] * kernel[-1]
    if class_name is None and rank in (3, 4) and depthwise:
        return f"DepthwiseConv{rank - 2}D", [
            f"no model config: a Keras 3 depthwise kernel (bias of {kernel[-2]} channels "
            f"x multiplier {kernel[-1]})"
        ]
    if class_name in ("Conv1D", "Conv2D", "Conv3D") and "cannot be ruled out" in note:
        return class_name, [
            f"no model config: a {rank}-D kernel read as {class_name}; conv or transposed "
            f"conv: {NOT_RECORDED} (no layer name says which, and its shapes fit both)"
        ]
    if class_name in ("Conv1DTranspose", "Conv2DTranspose") and kernel[-1] == 1:
        return class_name, [
            f"{note}; or a Keras 3 depthwise conv of multiplier 1 (its kernel of the same "
            f"shape): {NOT_RECORDED}"
        ]
    return class_name, [note]


def _tensor(
    entry: BundleEntry,
    role: str,
    layout: str | None,
    trainable: bool | None,
    source: TensorSource,
    counted: bool = True,
) -> Tensor:
    return Tensor(
        name=entry.name,
        role=role,
        native_shape=entry.shape,
        native_layout=layout,
        dtype=entry.dtype,
        trainable=trainable,
        source=source,
        counted=counted,
    )


def _assembled(
    index: Path,
    entries: list[BundleEntry],
    shards: dict[int, OpenFile],
    byteorder: str,
    notes: list[str],
) -> dict[str, TensorSource]:
    """The variables stored as slices that their slices put together exactly, by name; a
    note for each that they do not (it is listed as its slices)."""
    parts: dict[str, list[BundleEntry]] = {}
    for entry in entries:
        if entry.slice_of is not None and entry.sized:
            parts.setdefault(entry.slice_of, []).append(entry)
    whole: dict[str, TensorSource] = {}
    for entry in entries:
        if not (entry.sliced and entry.sized and entry.name in parts):
            continue
        found = parts[entry.name]
        sources = [_source(index, part, shards[part.shard], byteorder) for part in found]
        assembled = assemble(entry, found, sources)
        if isinstance(assembled, str):
            notes.append(f"{entry.name}: its slices do not make the variable ({assembled})")
        else:
            whole[entry.name] = assembled
    if whole:
        notes.append(
            f"{len(whole)} variable{'s' if len(whole) > 1 else ''} stored as slices (a "
            "partitioned variable, or one cut across shards), each read as one tensor"
        )
    return whole


def _check_region(index: Path, entry: BundleEntry, file: OpenFile) -> None:
    end = entry.offset + entry.size
    if end > file.size:
        raise file_error(
            CorruptFileError,
            index,
            f"tensor {entry.name!r}: bytes {entry.offset:,}..{end:,} lie past the end of "
            f"{file.path.name} ({file.size:,} bytes)",
            LOOKS_LIKE,
        )


def _source(index: Path, entry: BundleEntry, file: OpenFile, byteorder: str) -> FileRegionSource:
    """The tensor's bytes in its shard, checked against the index's CRC32C when read."""
    _check_region(index, entry, file)
    if entry.crc32c is not None:
        return ChecksummedSource(
            file, entry.offset, entry.dtype, entry.shape, byteorder, entry.crc32c, entry.name
        )
    numel = math.prod(entry.shape)
    return FileRegionSource(
        file, entry.offset, numel, entry.dtype, 0, entry.shape, c_strides(entry.shape), byteorder
    )


def _natural_key(name: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name)]


# The SavedModel reader (:mod:`.savedmodel`) reads its ``variables/`` bundle with these.
open_shard = _open_shard
entry_source = _source
variables_layer = _layer
bundle_layers = _layers
