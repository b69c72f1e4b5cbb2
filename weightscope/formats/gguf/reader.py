"""GGUF reader (llama.cpp's format; whisper.cpp and stable-diffusion.cpp write it too): the
header parsed by :mod:`.header`, tensors grouped into layers by :mod:`.layers`, their data read
lazily: float and integer types in place, block-quantized types (Q4_0 ... Q8_0, the K-quants,
IQ4_NL, IQ4_XS, MXFP4, NVFP4, TQ1_0, TQ2_0) dequantized by :mod:`.blocks` when read, the grid
types (IQ1_S ... IQ3_S) by the ``gguf`` package where it is installed (:mod:`.grid`), other types
listed and counted with a note.

Shapes are numpy's order, GGML's dims reversed; the model's notes show the architecture, name,
file type and the metadata a user asks about first (never the tokenizer's vocabulary)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from weightscope.errors import UnsupportedFormatError, file_error, printable
from weightscope.formats._common.file_region import (
    FileRegionSource,
    OpenFile,
    RegionFile,
    c_strides,
)
from weightscope.formats.gguf import grid, split
from weightscope.formats.gguf.blocks import GGMLType
from weightscope.formats.gguf.header import MAGIC, ArrayValue, Header, TensorInfo, read_header
from weightscope.formats.gguf.layers import (
    FRAMEWORK,
    UNDECODED,
    Entry,
    attr_of,
    build_layer,
    group,
)
from weightscope.formats.gguf.sources import BlockSource, UndecodedSource, block_quantization
from weightscope.formats.protocol import Match, Probe
from weightscope.limits import Limits
from weightscope.model import Model, TensorSource

GGUF = "GGUF file"

FILE_TYPES = {
    0: "ALL_F32", 1: "MOSTLY_F16", 2: "MOSTLY_Q4_0", 3: "MOSTLY_Q4_1", 7: "MOSTLY_Q8_0",
    8: "MOSTLY_Q5_0", 9: "MOSTLY_Q5_1", 10: "MOSTLY_Q2_K", 11: "MOSTLY_Q3_K_S",
    12: "MOSTLY_Q3_K_M", 13: "MOSTLY_Q3_K_L", 14: "MOSTLY_Q4_K_S", 15: "MOSTLY_Q4_K_M",
    16: "MOSTLY_Q5_K_S", 17: "MOSTLY_Q5_K_M", 18: "MOSTLY_Q6_K", 19: "MOSTLY_IQ2_XXS",
    20: "MOSTLY_IQ2_XS", 21: "MOSTLY_Q2_K_S", 22: "MOSTLY_IQ3_XS", 23: "MOSTLY_IQ3_XXS",
    24: "MOSTLY_IQ1_S", 25: "MOSTLY_IQ4_NL", 26: "MOSTLY_IQ3_S", 27: "MOSTLY_IQ3_M",
    28: "MOSTLY_IQ2_S", 29: "MOSTLY_IQ2_M", 30: "MOSTLY_IQ4_XS", 31: "MOSTLY_IQ1_M",
    32: "MOSTLY_BF16", 36: "MOSTLY_TQ1_0", 37: "MOSTLY_TQ2_0", 38: "MOSTLY_MXFP4_MOE",
    39: "MOSTLY_NVFP4", 40: "MOSTLY_Q1_0", 1024: "GUESSED",
}  # fmt: skip
"""``general.file_type``: llama.cpp's ``llama_ftype``, the quantization the file was made with."""

SHOWN_SUFFIXES = (
    ".context_length", ".embedding_length", ".block_count", ".feed_forward_length",
    ".attention.head_count", ".attention.head_count_kv", ".expert_count", ".vocab_size",
    ".rope.freq_base", ".attention.layer_norm_rms_epsilon", ".attention.layer_norm_epsilon",
)  # fmt: skip
"""Architecture keys (``llama.context_length``) shown in the notes."""
SHOWN_GENERAL = (
    "general.basename", "general.size_label", "general.finetune", "general.license",
    "general.quantized_by", "general.quantization_version",
)  # fmt: skip
SHOWN_TOKENIZER = ("tokenizer.ggml.model", "tokenizer.ggml.pre")
COUNTED_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges")
"""Arrays whose length alone is shown."""


def match(probe: Probe) -> Match | None:
    if probe.head.startswith(MAGIC):
        return Match(GGUF, "gguf", probe)
    return None


def match_object(obj: Any) -> bool:
    return False


def load_object(obj: Any, limits: Limits) -> Model:
    raise TypeError("GGUF has no live objects")


def load(match: Match, limits: Limits) -> Model:
    path = match.probe.path
    remote = match.probe.file  # a file read by URL
    header = read_header(path, limits, remote)
    found = split.split_of(header, path)
    if found is None or found.count == 1:
        return read_file(path, header, notes(header), remote)
    if remote is not None:
        raise file_error(
            UnsupportedFormatError,
            path,
            f"is split {found.no + 1} of {found.count} of a split GGUF, which is not read by "
            "URL; download its files first",
        )
    if found.no == 0:
        return split.load(path, header, found, limits, read_file, notes)
    first = split.paths_from(path, found)
    alone = (
        f"split {found.no + 1} of {found.count}: this file alone (its tensors, none of the "
        f"metadata); {first} reads the whole model"
    )
    return read_file(path, header, [alone, *notes(header)])


def read_file(
    path: Path, header: Header, notes: list[str], remote: RegionFile | None = None
) -> Model:
    """The model of the one GGUF file ``path`` whose header is ``header`` (read by URL through
    ``remote`` when given)."""
    file = remote if remote is not None else OpenFile(path, GGUF)
    try:
        entries = [_entry(file, header, info) for info in header.tensors]
        layers = [build_layer(name, members) for name, members in group(entries).items()]
    except BaseException:
        file.close()
        raise
    model = Model(path, "gguf", FRAMEWORK, None, layers, notes=notes)
    model._resources.callback(file.close)
    return model


def _entry(file: RegionFile, header: Header, info: TensorInfo) -> Entry:
    start = header.data_start + info.offset
    ggml_type = info.ggml_type
    shape = info.shape
    attr = attr_of(info.name)
    quantization = None
    source: TensorSource
    why = undecoded_reason(ggml_type, header.big_endian)
    if ggml_type.dtype is not None:
        dtype = ggml_type.dtype
        order = "big" if header.big_endian else "little"
        source = FileRegionSource(file, start, info.numel, dtype, 0, shape, c_strides(shape), order)
    elif why is None:
        dtype = ggml_type.name
        blocks = BlockSource(file, start, ggml_type, shape, info.name, header.big_endian)
        if blocks.numel and ggml_type.decode is not None:  # an empty tensor: no scales to show
            quantization = block_quantization(blocks)
        source = blocks
    else:
        dtype = undecoded_dtype(ggml_type)
        source = UndecodedSource(file, info.name, ggml_type, info.nbytes, why)
    return Entry(info.name, attr, shape, dtype, source, quantization)


def undecoded_reason(ggml_type: GGMLType, big_endian: bool) -> str | None:
    """None where the values of ``ggml_type`` are read; else what the refusal adds (what would
    decode them, if anything)."""
    if not ggml_type.quantized:
        return None
    if big_endian and ggml_type.byteswap is None:
        return f" in a big-endian file (GGML's tools write no big-endian {ggml_type.name} blocks)"
    if ggml_type.decode is not None:
        return None
    if ggml_type.grid:
        return None if grid.available() else f"; the gguf package decodes them: {grid.EXTRA}"
    return ""


def undecoded_dtype(ggml_type: GGMLType) -> str:
    """``ggml Q1_0``: the element type of a tensor weightscope does not dequantize (no
    statistics apply, see :func:`weightscope.dtypes.has_real_values`)."""
    return f"{UNDECODED}{ggml_type.name}"


def notes(header: Header) -> list[str]:
    meta = header.metadata
    arch = meta.get("general.architecture")
    file_type = meta.get("general.file_type")
    first = [f"GGUF v{header.version}"]
    if arch is not None:
        first.append(f"architecture {_text(arch)}")
    if "general.name" in meta:
        first.append(f"name {_text(meta['general.name'])}")
    if isinstance(file_type, int) and not isinstance(file_type, bool):
        first.append(f"file type {FILE_TYPES.get(file_type, 'unknown')} ({file_type})")
    first.append(
        f"{len(header.tensors):,} tensors, {len(meta):,} metadata keys, alignment "
        f"{header.alignment}"
    )
    lines = [", ".join(first)]
    types = Counter(t.ggml_type.name for t in header.tensors)
    if types:
        lines.append("tensor types: " + ", ".join(f"{n} {c}" for n, c in types.most_common()))
    shown = [
        f"{key}={_text(meta[key])}"
        for key in meta
        if key in SHOWN_GENERAL
        or key in SHOWN_TOKENIZER
        or (isinstance(arch, str) and key.startswith(arch + ".") and key.endswith(SHOWN_SUFFIXES))
    ]
    shown += [
        f"{key}: {meta[key].length:,} entries"
        for key in COUNTED_ARRAYS
        if isinstance(meta.get(key), ArrayValue)
    ]
    if shown:
        lines.append("metadata: " + ", ".join(shown))
    reasons = {
        t.ggml_type.name: undecoded_reason(t.ggml_type, header.big_endian) for t in header.tensors
    }
    undecoded = Counter(
        t.ggml_type.name for t in header.tensors if reasons[t.ggml_type.name] is not None
    )
    if undecoded:
        listed = ", ".join(f"{count} {name}" for name, count in undecoded.items())
        why = "".join(dict.fromkeys(str(reasons[name]) for name in undecoded))
        lines.append(
            f"not dequantized by weightscope: {listed} tensors (listed and counted; no values, "
            f"statistics or export){why}"
        )
    return lines


def _text(value: object) -> str:
    return printable(str(value))[:120]
