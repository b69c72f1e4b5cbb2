"""Layers from GGUF tensor names and shapes: a GGUF file keeps no layer classes, only names
such as ``blk.0.attn_q.weight`` (layer ``blk.0.attn_q``, tensor ``weight``) and GGML dims.

Kinds are inferred where the name and shape say it, and marked so: a 2-D table named as one
(``token_embd``) is an embedding, a ``(C,)`` scale named a norm (``attn_norm``) a norm, other
2-D weights dense (``ggml_mul_mat``), a 3-D weight a 1-D conv (whisper's ``encoder.conv1``),
a 4-D one a 2-D conv (image models' patch embeddings), unless the name says it stacks experts
(``ffn_up_exps``). What fits none is an ``unknown`` layer, its tensors listed and counted."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from weightscope import layouts
from weightscope.formats._common.names import embedding_name, innermost, layer_norm_name, words
from weightscope.kinds import Kind
from weightscope.model import Layer, Quantization, Tensor, TensorSource

FRAMEWORK = "gguf"
SUFFIXES = frozenset({"weight", "bias"})
UNDECODED = "ggml "
"""The prefix of the element type of a tensor weightscope does not dequantize (``ggml Q1_0``,
``ggml IQ2_XXS`` without the gguf package): no statistics apply
(:func:`weightscope.dtypes.has_real_values`)."""

EMBEDDING_PARTS = frozenset({"token_embd", "position_embd", "token_types", "tok_embd"})
"""llama.cpp's names of embedding tables (``names`` knows the PyTorch ones whisper keeps)."""
EXPERT_WORDS = frozenset({"exps", "experts", "exp"})
"""Words of a name that say a 3-D weight stacks one matrix per expert, not a conv."""
CONV_WORDS = frozenset({"conv", "patch"})


@dataclass
class Entry:
    """One tensor of a GGUF file."""

    name: str
    attr: str
    """``weight``, ``bias``, or the last name component where it is neither (``ssm_a``)."""
    shape: tuple[int, ...]
    """numpy order: GGML's dims reversed."""
    dtype: str
    source: TensorSource
    quantization: Quantization | None = None


def attr_of(name: str) -> str:
    """The :attr:`Entry.attr` of the tensor ``name``: its last component."""
    prefix, _, last = name.rpartition(".")
    return last if prefix else name


def rebuild(parts: Sequence[Layer]) -> Layer:
    """One layer of the pieces of it that the files of a split GGUF hold (a weight in one
    file, its bias in the next), its kind inferred from all its tensors."""
    entries = [
        Entry(t.name, attr_of(t.name), t.native_shape, t.dtype, t.source, t.quantization)
        for layer in parts
        for t in layer.tensors
    ]
    return build_layer(parts[0].name, entries)


def group(entries: Sequence[Entry]) -> dict[str, list[Entry]]:
    """Entries by layer name, in file order: ``blk.0.attn_q.weight`` -> ``blk.0.attn_q``; a
    name without a ``weight`` or ``bias`` suffix is a layer of its own."""
    layers: dict[str, list[Entry]] = {}
    for entry in entries:
        prefix, _, last = entry.name.rpartition(".")
        key = prefix if prefix and last in SUFFIXES else entry.name
        layers.setdefault(key, []).append(entry)
    return layers


def build_layer(name: str, entries: list[Entry]) -> Layer:
    shapes = {e.attr: e.shape for e in entries}
    if len(shapes) == len(entries):
        kind, note = infer_kind(name, shapes)
    else:  # ``weight`` and ``weight.weight``: one layer, two tensors called weight
        kind, note = "unknown", "GGUF: two tensors of one name"
    uses = layouts.uses(FRAMEWORK, kind=kind)
    roles = {u.tensor.split(" ")[0]: u.role for u in uses}
    tensors = []
    for entry in entries:
        role = roles.get(entry.attr, entry.attr)
        layout = _layout(kind, role, entry.shape) if kind != "unknown" else None
        tensors.append(
            Tensor(
                name=entry.name,
                role=role,
                native_shape=entry.shape,
                native_layout=layout,
                dtype=entry.dtype,
                trainable=None,
                source=entry.source,
                quantization=entry.quantization,
            )
        )
    undecoded = [e.dtype.removeprefix(UNDECODED) for e in entries if e.dtype.startswith(UNDECODED)]
    if undecoded:
        note += f"; {', '.join(undecoded)} blocks are not dequantized by weightscope (no values)"
    owner = uses[0].owner if uses else None  # the GGML op that uses the layer's weights
    return Layer(
        name=name, kind=Kind(kind), tensors=tensors, inferred=True, class_name=owner, note=note
    )


def _layout(kind: str, role: str, shape: tuple[int, ...]) -> str | None:
    return layouts.native_layout(FRAMEWORK, role, len(shape), kind=kind)


def infer_kind(name: str, shapes: dict[str, tuple[int, ...]]) -> tuple[str, str]:
    """Kind and a note for a layer known by its name and its tensors' numpy-order shapes."""
    weight, bias = shapes.get("weight"), shapes.get("bias")
    if weight is None or not set(shapes) <= SUFFIXES:
        return "unknown", "GGUF: tensors of no known layer kind"
    part = innermost(name)
    found = set(words(part))
    if len(weight) == 2 and bias is None and (part in EMBEDDING_PARTS or embedding_name([name])):
        return "embedding", f"GGUF: a 2-D table named {part!r}: an embedding"
    if len(weight) == 1:
        if bias not in (None, weight):
            return "unknown", "GGUF: a (C,) weight whose bias does not match it"
        norm = layer_norm_name([name]) or ("norm" in part and part)
        if norm:
            return "layer_norm", f"GGUF: a (C,) scale named {norm!r}: a norm (RMS or layer)"
        return "unknown", "GGUF: a (C,) weight whose name says no norm"
    out = weight[0]
    if bias is not None and not (bias == (out,) or (len(weight) == 3 and bias == (out, 1))):
        return "unknown", f"GGUF: a bias of shape {bias} fits no layer with weight {weight}"
    if len(weight) == 2:
        return "dense", "GGUF: a 2-D weight: a matrix product (ggml_mul_mat)"
    if found & EXPERT_WORDS:
        return "unknown", f"GGUF: a {len(weight)}-D weight named {part!r}: one matrix per expert"
    conv_named = bool(found & CONV_WORDS)
    if len(weight) == 3:
        note = "GGUF: a 3-D weight taken as a conv1d"
        return "conv1d", note + ("" if conv_named else " (its name does not say conv)")
    if len(weight) == 4:
        note = "GGUF: a 4-D weight taken as a conv2d"
        return "conv2d", note + ("" if conv_named else " (its name does not say conv)")
    return "unknown", f"GGUF: a {len(weight)}-D weight"
