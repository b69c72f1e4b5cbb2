"""One model from many files: a shard index (``model.safetensors.index.json``,
``pytorch_model.bin.index.json``), or a folder holding a model (its index, its one model file,
or shards named ``name-0000N-of-0000M.ext``), with what an HF-style ``config.json`` beside it
says about the architecture.

Each shard is read on its own by the reader of its format (the registry's per-file path, passed
in as ``load_file``), checked against the index, and the shards' layers are merged by name into
one :class:`~weightscope.model.Model` (a layer whose tensors lie in two shards is rebuilt from
all of them)."""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path, PurePosixPath
from typing import Any

from weightscope.errors import (
    CorruptFileError,
    UnsupportedFormatError,
    WeightscopeError,
    file_error,
    short,
)
from weightscope.formats._common.file_region import declared_bytes
from weightscope.formats._common.json_text import load_json
from weightscope.formats.gguf import layers as gguf_layers
from weightscope.formats.pytorch.layers import Entry, ModuleNode, build_layers
from weightscope.limits import DEFAULT, LimitExceeded, Limits, limit_error
from weightscope.model import Layer, Model

LoadFile = Callable[[Path, Limits], Model]
"""The registry's reader of one model file."""
Recognise = Callable[[Path], "str | None"]
"""The registry's sniffing of one file: the framework that reads it, or None."""

INDEX_SUFFIX = ".index.json"
INDEX_NAMES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
"""The indexes an HF folder may hold, in the order one is preferred to another."""
CONFIG = "config.json"
WEIGHTS_NAMES = (
    "model.safetensors",
    "diffusion_pytorch_model.safetensors",
    "pytorch_model.bin",
    "diffusion_pytorch_model.bin",
    "tf_model.h5",
    "model.onnx",
)
"""The names HF gives a model's weights in one file, in the order ``from_pretrained`` prefers
them: a folder holding one of them beside other model files is read from it."""
CONFIG_FACTS = (
    "architectures",
    "model_type",
    "torch_dtype",
    "dtype",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
)
"""What a ``config.json`` says that the model's notes show, in this order."""
NAMED_BY_FIRST = frozenset({".gguf"})
"""Shard sets whose first file names the others (a split GGUF's ``split.count``): its reader
reads the whole set from the first file, and a folder holding one is read from it."""
SHARDED = "-sharded"
"""The end of the format name of a model merged from shards."""
SHARD_NAME = re.compile(r"^(?P<stem>.+)-(?P<number>\d+)-of-(?P<count>\d+)(?P<suffix>\.[^.]+)$")
"""``model-00001-of-00003.safetensors``: HF's name for a shard without (or beside) an index."""
_LISTED = 12


def is_index(path: Path) -> bool:
    """Whether ``path`` is named like a shard index (``*.index.json``)."""
    return path.name.endswith(INDEX_SUFFIX) and path.is_file()


def load(path: Path, limits: Limits, load_file: LoadFile, recognise: Recognise) -> Model:
    """The model of a folder, or of the shard index ``path``."""
    if path.is_dir():
        return _load_folder(path, limits, load_file, recognise)
    return _load_index(path, limits, load_file)


def _load_folder(folder: Path, limits: Limits, load_file: LoadFile, recognise: Recognise) -> Model:
    try:
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise file_error(
            UnsupportedFormatError, folder, f"cannot list the folder: {exc.strerror or exc}"
        ) from exc
    choice = choose(
        folder,
        names,
        lambda name: recognise(folder / name) is not None,
        folder.joinpath,
        lambda models: _latest_checkpoint(folder, models),
    )
    if choice.index is not None:
        model = _load_index(folder / choice.index, limits, load_file)
    elif len(choice.read) > 1 and Path(choice.read[0]).suffix in NAMED_BY_FIRST:
        model = _load_named_by_first(folder / choice.read[0], len(choice.read), limits, load_file)
    elif len(choice.read) > 1:
        paths = [folder / name for name in choice.read]
        model = load_shards(folder, paths, None, limits, load_file, choice.how)
    else:
        model = load_file(folder / choice.read[0], limits)
    model.notes.extend(choice.notes)
    if choice.index is None and len(choice.read) == 1:
        model.notes.extend(_config_notes(folder / CONFIG, limits))
        _add_input(model, folder / CONFIG)
    return model


def _load_named_by_first(first: Path, count: int, limits: Limits, load_file: LoadFile) -> Model:
    """A set whose first file's reader finds the others (a split GGUF), read from that file."""
    model = load_file(first, limits)
    if not model.format.endswith(SHARDED):
        model.close()
        raise file_error(
            CorruptFileError,
            first,
            f"is named as the first of {count} files, but says it is a file of its own (no "
            "split keys)",
        )
    return model


@dataclass
class Choice:
    """What reading a folder reads, chosen from the names of its files (:func:`choose`)."""

    read: list[str]
    """The index, the one model file, or the shards in order."""
    index: str | None = None
    """The index, when one is read."""
    how: str = ""
    """How the shards of a set without an index are read (the model's first note)."""
    notes: list[str] = dataclass_field(default_factory=list)
    """What the folder also holds, not read."""


def choose(
    folder: Path,
    names: Sequence[str],
    is_model: Callable[[str], bool],
    at: Callable[[str], Path],
    latest: Callable[[list[str]], str | None] | None = None,
    recheck: Callable[[str], bool] | None = None,
) -> Choice:
    """What a folder holding the files ``names`` is read as, locally and by URL alike: its shard
    index (``model.safetensors.index.json`` first); else its one model file (``is_model``);
    else the weights HF names (``model.safetensors`` first, :data:`WEIGHTS_NAMES`) or the
    checkpoint ``latest`` names; else a complete set of shards without an index. ``at`` gives a
    file's path, for the lines that name one (a shard missing from the set). When that leaves
    several model files and no one model, those ``recheck`` confirms are chosen from instead
    (by URL: files named like models, then looked at)."""
    indexes = sorted(
        (n for n in names if n.endswith(INDEX_SUFFIX)),
        key=lambda n: (*INDEX_NAMES, n).index(n),
    )
    if indexes:
        others = [f"the folder also holds {', '.join(indexes[1:])} (not read)"]
        return Choice([indexes[0]], indexes[0], notes=others if indexes[1:] else [])
    models = [n for n in names if is_model(n)]
    if not models:
        found = f"none of its files is one ({_listed(names)})" if names else "it is empty"
        raise file_error(
            UnsupportedFormatError, folder, f"is a directory, not a model file, and {found}"
        )
    preferred = next((n for name in WEIGHTS_NAMES for n in models if n == name), None)
    preferred = preferred or (latest(models) if latest is not None else None)
    if len(models) == 1 or preferred is not None:
        choice = Choice([preferred or models[0]])
    elif (shards := _shard_set(models, at)) is not None:
        choice = Choice(shards, how=f"{len(shards)} shards, no index")
    elif recheck is not None and (confirmed := [n for n in models if recheck(n)]) != models:
        return choose(folder, names, confirmed.__contains__, at, latest)
    else:
        raise file_error(
            UnsupportedFormatError,
            folder,
            f"holds {len(models)} model files, not one model: {_listed(models)} (name one)",
        )
    unread = [n for n in models if n not in choice.read]
    if unread:  # training_args.bin, optimizer.pt beside the weights
        choice.notes.append(f"the folder also holds {_listed(unread)} (not read)")
    return choice


TF_CHECKPOINT_STATE = "checkpoint"
"""The text file ``tf.train.CheckpointManager`` and TF1 ``Saver`` keep beside checkpoints,
naming the latest: ``model_checkpoint_path: "ckpt-3"``."""
_LATEST = re.compile(rb'^model_checkpoint_path: "([^"\n]*)"', re.MULTILINE)


def _latest_checkpoint(folder: Path, models: list[str]) -> str | None:
    """The index of the checkpoint the folder's ``checkpoint`` file names as the latest, when
    it is among ``models`` (its name only is taken: the file may hold an absolute path)."""
    state = folder / TF_CHECKPOINT_STATE
    try:
        with open(state, "rb") as handle:
            found = _LATEST.search(handle.read(1 << 16))
    except OSError:
        return None
    if found is None:
        return None
    name = PurePosixPath(found.group(1).decode("utf-8", "replace")).name + ".index"
    return name if name in models else None


def _shard_set(models: list[str], at: Callable[[str], Path]) -> list[str] | None:
    """The model files that are shards of one set (``name-0000N-of-0000M.ext``), in order;
    None when none are, or those that are make more than one set. A shard missing from the set
    is an error naming it (its path by ``at``)."""
    parts = [match for match in map(SHARD_NAME.match, models) if match]
    sets = {(m["stem"], m["count"], m["suffix"]) for m in parts}
    if len(sets) != 1:
        return None
    stem, count, suffix = sets.pop()
    numbers = {int(m["number"]) for m in parts}
    total = int(count)
    if min(numbers) < 1 or max(numbers) > total:
        return None  # numbers past the count: not one set as HF writes it
    if len(numbers) < total:
        # the first number missing (a count in a name bounds nothing: look past the files only)
        number = next(n for n in range(1, len(numbers) + 2) if n not in numbers)
        name = f"{stem}-{number:0{len(count)}d}-of-{count}{suffix}"
        raise file_error(CorruptFileError, at(name), "shard missing from the folder")
    return [m.string for m in sorted(parts, key=lambda m: int(m["number"]))]


def _load_index(index: Path, limits: Limits, load_file: LoadFile) -> Model:
    data = read_index_data(index, limits)
    return _load_indexed(index, data, limits, load_file, _shard_path, check_exists=True)


Locate = Callable[[Path, str], Path]
"""Where a shard the index names lies: a local path beside it, or a URL beside it."""
Index = tuple[Path, dict[str, str], Locate]
"""A shard index as the checks take it: its path, its ``weight_map``, how a shard is found."""


def _load_indexed(
    index: Path,
    data: dict[str, Any],
    limits: Limits,
    load_file: LoadFile,
    locate: Locate,
    check_exists: bool,
) -> Model:
    """The model of the shards the index ``data`` names, each found by ``locate`` and read by
    ``load_file`` (a local reader, or one by URL)."""
    weight_map: dict[str, str] = data["weight_map"]
    folder = index.parent
    # in name order, as HF numbers them (its index lists tensors in name order)
    shards = {name: locate(index, name) for name in sorted(set(weight_map.values()))}
    if check_exists:  # by URL, opening the shard says it is missing (one request fewer)
        for path in shards.values():
            if not os.path.lexists(path):
                raise file_error(
                    CorruptFileError, path, f"shard missing: {index.name} places tensors in it"
                )
    how = f"{len(shards)} shards named by {index.name}"
    model = load_shards(
        folder, list(shards.values()), (index, weight_map, locate), limits, load_file, how
    )
    note = _total_size_note(index, data.get("metadata"), model)
    if note is not None:
        model.notes.append(note)
    return model


def _total_size_note(index: Path, metadata: Any, model: Model) -> str | None:
    """A note when the index's ``metadata.total_size`` is not the bytes the shards' tensors
    hold (safetensors shards: the sum of their tensors' data). Never an error: nothing is read
    by it, and writers fill it loosely (``huggingface_hub`` counts each tensor's whole storage,
    a view's included, and skips bitsandbytes' string entries; transformers' quantized saves
    differ). PyTorch shards are not checked: their storages may hold several tensors."""
    if not isinstance(metadata, dict) or "total_size" not in metadata:
        return None
    declared = metadata["total_size"]
    if not model.format.startswith("safetensors"):
        return None
    if isinstance(declared, float) and declared.is_integer():
        declared = int(declared)  # some writers store it as 1234.0
    if isinstance(declared, bool) or not isinstance(declared, int) or declared < 0:
        shown = json.dumps(declared)
        shown = shown if len(shown) <= 40 else shown[:40] + "..."
        return f"{index.name}: metadata.total_size {shown} is not a byte count"
    held, seen = 0, set()
    for _, tensor in model.tensors():
        if tensor.name not in seen and tensor.shared_with is None:  # a packed tensor: once
            seen.add(tensor.name)
            held += sum(nbytes for _, nbytes in declared_bytes(tensor.source))
    if declared == held:
        return None
    return (
        f"{index.name}: metadata.total_size is {declared:,} bytes, the shards' tensors hold "
        f"{held:,} (the index's figure is not used)"
    )


def load_url_index(
    index: Path,
    raw_index: bytes,
    limits: Limits,
    load_file: LoadFile,
    beside: BesideURL,
    read_config: ReadConfig | None = None,
) -> Model:
    """The model of a shard index read by URL (``raw_index``, its bytes, fetched within
    ``max_json_bytes``): each shard read by ``load_file`` at the URL ``beside`` gives for its
    name; a name leaving the index's folder is refused as a local one is."""

    def locate(index: Path, name: str) -> Path:
        found = beside(index, name)
        if found is None:
            raise file_error(
                CorruptFileError, index, f"shard {short(name)} lies outside the index's folder"
            )
        return found

    data = parse_index(index, raw_index, limits)
    model = _load_indexed(index, data, limits, load_file, locate, check_exists=False)
    if read_config is not None:  # after the merge's notes, before total_size's (as locally)
        notes = config_notes(read_config, limits)
        at = next((i for i, n in enumerate(model.notes) if "metadata.total_size" in n), None)
        model.notes[len(model.notes) if at is None else at : at] = notes
    return model


def load_url_shards(
    folder: Path,
    shards: list[Path],
    limits: Limits,
    load_file: LoadFile,
    how: str,
    read_config: ReadConfig,
) -> Model:
    """The model of a set of shards without an index read by URL (each by ``load_file``),
    checked and merged as local ones are, with the notes of the ``config.json`` beside them."""
    model = load_shards(folder, shards, None, limits, load_file, how)
    model.notes.extend(config_notes(read_config, limits))
    return model


URL_MODEL_SUFFIXES = frozenset(
    {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx", ".h5", ".hdf5", ".keras"}
    | {".gguf", ".tflite", ".npz", ".npy", ".index", ".pb"}
)
"""By URL, the files of a folder that are taken for model files by their names (looking at
each one would cost requests); only when the names leave several and no one model is each
looked at."""


BesideURL = Callable[[Any, str], "Path | None"]
""":func:`weightscope.formats._common.remote.beside`: the URL of a name in a URL's folder."""


def read_index(index: Path, limits: Limits) -> dict[str, str]:
    """The ``weight_map`` of a shard index (tensor name -> shard file name), read within
    ``max_json_bytes``."""
    weight_map: dict[str, str] = read_index_data(index, limits)["weight_map"]
    return weight_map


def read_index_data(index: Path, limits: Limits) -> dict[str, Any]:
    """A shard index read within ``max_json_bytes`` and checked (:func:`parse_index`)."""
    try:
        size = index.stat().st_size
        limits.check("max_json_bytes", size, f"the index is {size:,} bytes")
        with open(index, "rb") as handle:
            raw = handle.read(size + 1)
    except LimitExceeded as exc:
        raise limit_error(index, exc) from None
    except OSError as exc:
        raise file_error(
            UnsupportedFormatError, index, f"cannot read: {exc.strerror or exc}"
        ) from exc
    return parse_index(index, raw, limits)


def parse_index(index: Path, raw: bytes, limits: Limits) -> dict[str, Any]:
    """The shard index ``index`` whose bytes are ``raw``: a JSON object whose ``weight_map``
    maps each tensor name to a shard file name."""
    try:
        data = load_json(raw, limits, "the index")
    except LimitExceeded as exc:
        raise limit_error(index, exc) from None
    except ValueError as exc:
        raise file_error(CorruptFileError, index, f"not a shard index: not JSON: {exc}") from exc
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise file_error(CorruptFileError, index, "not a shard index: no weight_map of tensors")
    for tensor, shard in weight_map.items():
        if not isinstance(shard, str):
            raise file_error(
                CorruptFileError, index, f"tensor {short(tensor)}: shard is not a file name"
            )
    assert isinstance(data, dict)
    return data


def _shard_path(index: Path, name: str) -> Path:
    """The file ``name`` (from the index) in the index's folder. Names reaching out of the
    folder are refused as written, not as resolved: an HF cache's shards are links to blobs
    elsewhere, and are read where they point."""
    parts = PurePosixPath(name).parts
    if (
        not name
        or "\\" in name
        or "\0" in name
        or PurePosixPath(name).is_absolute()
        or ".." in parts
        or os.path.isabs(name)
    ):
        raise file_error(
            CorruptFileError, index, f"shard {short(name)} lies outside the index's folder"
        )
    return index.parent.joinpath(*parts)


def load_shards(
    folder: Path,
    shards: list[Path],
    index: Index | None,
    limits: Limits,
    load_file: LoadFile,
    how: str,
) -> Model:
    """The model of ``shards`` (in order), each read by ``load_file``, checked against the
    ``index`` (if any) and against one another, merged by layer name; ``how`` heads its notes."""
    with ExitStack() as stack:
        models = []
        for path in shards:
            model = load_file(path, limits)
            stack.callback(model.close)
            models.append(model)
        _check(shards, models, index)
        merged = _merge(index[0] if index else folder, models, how)
        merged.notes.extend(_config_notes(folder / CONFIG, limits))
        _add_input(merged, folder / CONFIG)
        merged._resources.push(stack.pop_all())
        return merged
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: the with may swallow)


def stored_names(model: Model) -> list[str]:
    """The names of the stored tensors of ``model``, each once (a stored tensor holding
    several weights gives several tensors of one name)."""
    return list(dict.fromkeys(tensor.name for _, tensor in model.tensors()))


def _check(shards: list[Path], models: list[Model], index: Index | None) -> None:
    """Every tensor in one shard, the one the index places it in; every tensor the index names
    in its shard; all shards of one format."""
    formats = {model.format for model in models}
    if len(formats) > 1:
        first = models[0].format
        odd = next(i for i, m in enumerate(models) if m.format != first)
        raise file_error(
            CorruptFileError,
            shards[odd],
            f"shard is {models[odd].format}, not {first} as {shards[0].name}",
        )
    holder: dict[str, Path] = {}
    for path, model in zip(shards, models, strict=True):
        for name in stored_names(model):
            if name in holder:
                raise file_error(
                    CorruptFileError,
                    path,
                    f"tensor {short(name)} is also in the shard {holder[name].name}",
                )
            holder[name] = path
            if index is None:
                continue
            placed = index[1].get(name)
            if placed is None:
                raise file_error(
                    CorruptFileError,
                    path,
                    f"holds tensor {short(name)}, which {index[0].name} does not name",
                )
            if str(index[2](index[0], placed)) != str(path):
                raise file_error(
                    CorruptFileError,
                    path,
                    f"holds tensor {short(name)}, which {index[0].name} places in {short(placed)}",
                )
    if index is not None:
        for name, placed in index[1].items():
            if name not in holder:
                raise file_error(
                    CorruptFileError,
                    index[2](index[0], placed),
                    f"holds no tensor {short(name)}, which {index[0].name} places there",
                )


def _merge(source: Path, models: list[Model], how: str) -> Model:
    """One model of the shards' layers, merged by name, in the order the shards hold them."""
    first = models[0]
    pieces: dict[str, list[Layer]] = {}
    for model in models:
        for layer in model.layers:
            pieces.setdefault(layer.name, []).append(layer)
    layers: list[Layer] = []
    split = 0
    for parts in pieces.values():
        if len(parts) == 1:
            layers.extend(parts)
        else:
            split += 1
            layers.extend(_join(parts, first.framework))
    notes = [f"read from {how}"]
    if split:
        notes.append(f"{split} layer{'s' if split > 1 else ''} split across shards, merged")
    notes.extend(dict.fromkeys(note for model in models for note in model.notes))
    inputs = [source] + [path for model in models for path in model.inputs]
    weightless = list(dict.fromkeys(n for model in models for n in model.weightless_layers))
    return Model(
        source,
        f"{first.format}{SHARDED}",
        first.framework,
        first.framework_version,
        layers,
        weightless_layers=weightless,
        notes=notes,
        producer=first.producer,
        opset=first.opset,
        inputs=list(dict.fromkeys(inputs)),
    )


def _join(parts: list[Layer], framework: str) -> list[Layer]:
    """One layer of the pieces a layer's shards hold: for a state dict (PyTorch, safetensors)
    or a split GGUF, its kind found again from all its tensors; for others, the tensors put
    together."""
    if framework == gguf_layers.FRAMEWORK:  # kinds from names and all the shapes, again
        return [gguf_layers.rebuild(parts)]
    tensors = [tensor for layer in parts for tensor in layer.tensors]
    whole = all(
        t.part is None and t.quantization is None and t.shared_with is None for t in tensors
    )
    if framework == "pytorch" and whole and all(layer.class_name is None for layer in parts):
        node = ModuleNode(parts[0].name, None)
        for number, layer in enumerate(parts):
            for tensor in layer.tensors:
                identity = (number, tensor.shared_with or tensor.name)
                attr = tensor.name.rsplit(".", 1)[-1]
                node.entries.append(
                    Entry(
                        attr,
                        tensor.name,
                        tensor.native_shape,
                        tensor.dtype,
                        tensor.source,
                        identity,
                    )
                )
        return build_layers([node])
    joined = parts[0]
    joined.tensors = tensors
    return [joined]


def _config_notes(config: Path, limits: Limits) -> list[str]:
    """What an HF-style ``config.json`` says of the architecture, as notes; a config that cannot
    be read is said so in a note (the weights are the model, not the config)."""
    if not config.is_file():
        return []

    def read() -> bytes:
        size = config.stat().st_size
        limits.check("max_json_bytes", size, f"{CONFIG} is {size:,} bytes")
        with open(config, "rb") as handle:
            return handle.read(size + 1)

    return config_notes(read, limits)


ReadConfig = Callable[[], "bytes | None"]
"""Fetches the bytes of a ``config.json`` within ``max_json_bytes`` (None: there is none)."""


def config_notes(read: ReadConfig, limits: Limits) -> list[str]:
    """The notes of the ``config.json`` whose bytes ``read`` gives (locally or by URL)."""
    try:
        raw = read()
        if raw is None:
            return []
        data = load_json(raw, limits, CONFIG)
    except LimitExceeded as exc:
        return [f"{CONFIG} not read: {exc.what}, over the limit {exc.name}"]
    except (OSError, ValueError, WeightscopeError) as exc:
        return [f"{CONFIG} not read: {' '.join(str(exc).split())[:120]}"]
    if not isinstance(data, dict):
        return [f"{CONFIG} not read: not a JSON object"]
    facts = [f"{key} {_fact(data[key])}" for key in CONFIG_FACTS if key in data]
    return [f"{CONFIG}: {'; '.join(facts)}"] if facts else []


def _fact(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(_fact(item) for item in value[:8]) + (", ..." if len(value) > 8 else "")
    if isinstance(value, dict):
        return "(structure)"
    return str(value)[:80]


def _add_input(model: Model, path: Path) -> None:
    if path.is_file() and path not in model.inputs:
        model.inputs.append(path)


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown + (f", ... ({len(names) - _LISTED} more)" if len(names) > _LISTED else "")


@functools.lru_cache(maxsize=256)
def _indexes_in(folder: str, mtime_ns: int) -> tuple[Path, ...]:
    return tuple(p for p in Path(folder).glob(f"*{INDEX_SUFFIX}") if p.is_file())


@functools.lru_cache(maxsize=256)
def _index_shards(index: str, mtime_ns: int, size: int) -> frozenset[str]:
    try:
        weight_map = read_index(Path(index), DEFAULT)
    except Exception:  # a bad index: its shards are scanned alone, the index says what is wrong
        return frozenset()
    return frozenset(weight_map.values())


LOOSE_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth"})
"""The suffixes of shards a scan puts together without an index."""


@functools.lru_cache(maxsize=256)
def _loose_set(folder: str, mtime_ns: int) -> tuple[str, ...]:
    try:
        names = [n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n))]
    except OSError:
        return ()
    return loose_set(names)


def loose_set(names: Sequence[str]) -> tuple[str, ...]:
    """The names, in order, of the shards (``name-0000N-of-0000M.ext``, no index) that reading
    a folder holding the files ``names`` reads; empty when reading it would read anything else
    (an index, a weights file HF prefers, a TF ``checkpoint`` state, more than one set, a shard
    missing)."""
    if any(
        n.endswith(INDEX_SUFFIX) or n in WEIGHTS_NAMES or n == TF_CHECKPOINT_STATE for n in names
    ):
        return ()
    parts = [m for m in map(SHARD_NAME.match, names) if m and m["suffix"] in LOOSE_SUFFIXES]
    if len({(m["stem"], m["count"], m["suffix"]) for m in parts}) != 1:
        return ()
    parts.sort(key=lambda m: int(m["number"]))
    if [int(m["number"]) for m in parts] != list(range(1, int(parts[0]["count"]) + 1)):
        return ()
    return tuple(m.string for m in parts) if len(parts) > 1 else ()


def _loose_shards(file: Path) -> tuple[str, ...]:
    if not SHARD_NAME.match(file.name):
        return ()
    try:
        return _loose_set(str(file.parent), file.parent.stat().st_mtime_ns)
    except OSError:
        return ()


def loose_shards_folder(file: Path) -> Path | None:
    """The folder of ``file`` when ``file`` is the first of a set of shards without an index
    that the folder is read as (:func:`load`): a scan reads the set as one model, in the row of
    its first shard."""
    shards = _loose_shards(file)
    return file.parent if shards and shards[0] == file.name else None


def part_of_sharded_model(file: Path) -> bool:
    """A shard that an index in its folder names (the index is the model a scan reads), a
    shard after the first of a set without an index (read with the first), or a later file of
    a split GGUF beside its first."""
    shards = _loose_shards(file)
    if shards and file.name in shards[1:]:
        return True
    named = SHARD_NAME.match(file.name)
    if named and named["suffix"] in NAMED_BY_FIRST and int(named["number"]) > 1:
        first = f"{named['stem']}-{1:0{len(named['number'])}d}-of-{named['count']}"
        if file.with_name(first + named["suffix"]).is_file():
            return True  # a later file of a split GGUF: its first reads it
    try:
        folder = file.parent
        for index in _indexes_in(str(folder), folder.stat().st_mtime_ns):
            stat = index.stat()
            if file.name in _index_shards(str(index), stat.st_mtime_ns, stat.st_size):
                return True
    except OSError:
        return False
    return False
