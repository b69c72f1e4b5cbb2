"""What a layer's name says it is, for files that keep no class (PyTorch state dicts,
``.safetensors``, Keras weights-only files): the one rule both kind inferences apply.

An embedding table is one 2-D tensor, ``(vocabulary, width)``, without a bias, and a linear
layer without a bias looks the same: only the name tells them apart. The name says *embedding*
when one of its words is an embedding word (``word_embeddings``, ``embed_tokens``,
``tok_embeddings``, ``pos_emb``, ``embedding_table``) or it is one of the names GPT-2 gave its
tables (``wte``, ``wpe``), unless another of its words names a layer that computes
(``embed_proj``, ``embed_out``, ``embedding_head``: linear layers).

>>> embedding_name(["transformer.wte"])
'wte'
>>> embedding_name(["model.embed_tokens", "LlamaModel"])
'embed_tokens'
>>> embedding_name(["gpt_neox.embed_out"]) is None
True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

EMBEDDING_WORDS = frozenset({"embedding", "embeddings", "embed", "embeds", "emb", "embs"})
"""Words of a name that say it is an embedding table."""

EMBEDDING_NAMES = frozenset({"wte", "wpe"})
"""Whole names that do (GPT-2's token and position tables)."""

COMPUTING_WORDS = frozenset(
    {
        "proj", "projection", "linear", "fc", "dense", "head", "out", "output", "conv", "mlp",
        "ffn", "norm", "layernorm", "ln", "attention", "attn", "query", "key", "value", "gate",
        "lstm", "gru", "rnn", "unembed", "decoder",
    }
)  # fmt: skip
"""Words that name a layer computing something (a projection of embeddings, not a table)."""

_SEPARATORS = re.compile(r"[./]")


def words(name: str) -> list[str]:
    """The lower-case words of one name: ``tok_embeddings`` -> ``tok``, ``embeddings``;
    ``BartLearnedPositionalEmbedding`` -> ``bart``, ``learned``, ``positional``, ``embedding``."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name)
    return [word for word in re.split(r"[^a-z]+", spaced.lower()) if word]


def innermost(name: str) -> str:
    """The last component of a dotted or slashed path that is not a number (the index of a
    module list names no module): ``emb_l.0`` -> ``emb_l``, ``model/token_embedding`` ->
    ``token_embedding``."""
    for part in reversed(_SEPARATORS.split(name)):
        if part and not part.isdigit():
            return part
    return ""


def embedding_name(names: Iterable[str]) -> str | None:
    """The first of ``names`` (a layer's path, then any other name it has, such as its class)
    whose innermost component says *embedding table*, or None."""
    for name in names:
        part = innermost(name)
        if _says_embedding(part):
            return part
    return None


@lru_cache(maxsize=4096)
def _says_embedding(part: str) -> bool:
    """Whether one name component says *embedding table* (cached: a state dict repeats the
    same few components, ``layers`` in ``layers.0`` ... ``layers.199999``)."""
    found = set(words(part))
    return part.lower() in EMBEDDING_NAMES or bool(
        found & EMBEDDING_WORDS and not found & COMPUTING_WORDS
    )


def embedding_table(names: Iterable[str], shapes: Sequence[Sequence[int]]) -> str | None:
    """A note when a layer named ``names`` that holds exactly the tensors of ``shapes`` is an
    embedding table (one 2-D tensor, a name that says so), else None."""
    if len(shapes) != 1 or len(shapes[0]) != 2:
        return None
    part = embedding_name(names)
    if part is None:
        return None
    return f"a 2-D table without a bias named {part!r}: an embedding"


LAYER_NORM_WORDS = frozenset({"layernorm", "ln", "lnf"})
"""Words of a name that say it is a layer norm (``LayerNorm``, ``ln_1``, ``ln_f``); ``norm``
alone too, where nothing says which norm (``norm1``, ``final_norm``)."""
OTHER_NORM_WORDS = frozenset({"group", "groupnorm", "batch", "bn", "instance", "rms", "rmsnorm"})
"""Words that name another norm, whose affine vectors look the same."""


def layer_norm_name(names: Iterable[str]) -> str | None:
    """The first of ``names`` whose innermost component says *layer norm* (an affine
    ``(C,)`` scale with or without a ``(C,)`` shift is all a state dict keeps of one), or
    None."""
    for name in names:
        part = innermost(name)
        found = set(words(part))
        if found & OTHER_NORM_WORDS:
            continue
        if found & LAYER_NORM_WORDS or {"layer", "norm"} <= found or "norm" in found:
            return part
    return None
