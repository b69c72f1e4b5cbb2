"""TensorFlow checkpoint bundles (``prefix.index`` + ``prefix.data-SSSSS-of-NNNNN``), as
``tf.train.Checkpoint``, tf-keras ``save_weights`` (TF format) and TF1 ``Saver`` write them,
read without TensorFlow: the index decoded by :mod:`.bundle`, each tensor's data read lazily
from its shard by offset, every declared region checked against the shard's real size.

Variables are grouped into layers by their object-graph path (``model/layer_with_weights-0/
kernel/.ATTRIBUTES/VARIABLE_VALUE``: layer ``model/layer_with_weights-0``, role ``kernel``).
A checkpoint records no layer classes, so kinds are inferred from names and shapes exactly as
for a Keras weights-only file (:func:`weightscope.formats.keras.catalog.infer_class`), and the
layouts are the Keras entries of the layout table: the variables of a checkpointed Keras model
are Keras' own, stored in Keras' layouts, so such layers carry Keras' conventions (their
``framework`` is ``keras``; the model's is ``tensorflow``). Optimizer state (``optimizer/...``,
``.OPTIMIZER_SLOT/...``, TF1 slots ``var/Adam``) and the counters ``save_counter`` and
``global_step`` are listed, never counted; strings, resources and
variants (``_CHECKPOINTABLE_OBJECT_GRAPH``) are named in the notes, never read."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from weightscope.errors import CorruptFileError, file_error
from weightscope.formats._common.file_region import FileRegionSource, OpenFile, c_strides
from weightscope.formats.keras import catalog, recurrent
from weightscope.formats.protocol import Match, Probe
from weightscope.formats.tensorflow.bundle import BundleEntry, BundleError, read_index
from weightscope.formats.tensorflow.table import FOOTER_BYTES, has_magic
from weightscope.kinds import Kind
from weightscope.layouts import rank
from weightscope.limits import Limits
from weightscope.model import (
    NON_TRAINABLE_ROLES,
    Layer,
    Model,
    PartSource,
    Tensor,
    part_shape,
    part_text,
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
    return False


def load_object(obj: Any, limits: Limits) -> Model:
    raise TypeError("TensorFlow checkpoints have no live objects here")


def load(match: Match, limits: Limits) -> Model:
    path = match.probe.path
    if not path.name.endswith(".index"):
        raise file_error(
            CorruptFileError, path, "a checkpoint index must be named PREFIX.index", LOOKS_LIKE
        )
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
        layers, notes = _layers(path, entries, shards, header.byteorder)
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
    index: Path, entries: list[BundleEntry], shards: dict[int, OpenFile], byteorder: str
) -> tuple[list[Layer], list[str]]:
    notes: list[str] = []
    groups: dict[str, list[tuple[str, BundleEntry]]] = {}
    state: list[Tensor] = []
    counters: dict[str, Tensor] = {}
    paths = frozenset(variable_path(entry.name) for entry in entries)
    slices: dict[str, list[BundleEntry]] = {}
    for entry in entries:
        if not entry.sized:
            what = UNSIZED_NOTES.get(entry.name, "not a number array")
            notes.append(f"not counted: {entry.name} ({entry.dtype}: {what})")
            continue
        if entry.sliced:
            notes.append(
                f"{entry.name}: a partitioned variable of shape {entry.shape}, stored as "
                f"slices (layer {entry.name + SLICES!r})"
            )
            continue
        source = _source(index, entry, shards[entry.shard], byteorder)
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
    layers = [_layer(index, name, members, shards, byteorder) for name, members in
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
) -> Layer:
    roles = {role: entry.shape for role, entry in members}
    hint = name.removesuffix(CELL).rsplit("/", 1)[-1]
    guess = catalog.infer_class([hint], roles, [entry.shape for _, entry in members])
    class_name = guess.class_name
    layer_type = catalog.layer_type(class_name)
    notes = [guess.note]
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
    tensors = []
    for role, entry in members:
        if layer_type is not None:
            role = catalog.normalise_role(kind, role)
        trainable = False if role in NON_TRAINABLE_ROLES else None
        base = _source(index, entry, shards[entry.shard], byteorder)
        parts: list[tuple[str, recurrent.Index | None]] = [(role, None)]
        if layer_type is not None and role == "bias" and recurrent.is_recurrent(class_name):
            parts = recurrent.bias_parts(class_name or "", entry.shape)
        for part_role, part in parts:
            shape = entry.shape if part is None else part_shape(entry.shape, part)
            layout = layer_type.layouts.get(part_role) if layer_type is not None else None
            if layout is not None and rank(layout) != len(shape):
                layout = None
            tensors.append(
                Tensor(
                    name=entry.name,
                    role=part_role,
                    native_shape=shape,
                    native_layout=layout,
                    dtype=entry.dtype,
                    trainable=trainable,
                    source=base if part is None else PartSource(base, part),
                    part=None if part is None else part_text(part),
                )
            )
    if kind.startswith(("conv", "separable")):
        notes.append("groups are not recorded in a checkpoint: 1 assumed")
    return Layer(
        name.removesuffix(CELL),
        Kind(kind),
        tensors,
        config=config,
        inferred=True,
        class_name=class_name,
        note="; ".join(notes),
        framework="keras" if layer_type is not None else None,
    )


def _tensor(
    entry: BundleEntry,
    role: str,
    layout: str | None,
    trainable: bool | None,
    source: FileRegionSource,
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


def _source(index: Path, entry: BundleEntry, file: OpenFile, byteorder: str) -> FileRegionSource:
    end = entry.offset + entry.size
    if end > file.size:
        raise file_error(
            CorruptFileError,
            index,
            f"tensor {entry.name!r}: bytes {entry.offset:,}..{end:,} lie past the end of "
            f"{file.path.name} ({file.size:,} bytes)",
            LOOKS_LIKE,
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
