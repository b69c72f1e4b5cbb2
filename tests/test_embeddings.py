"""Embedding tables in files that keep no class (state dicts, ``.safetensors``, Keras
weights-only files): recognised by their names, in canonical ``(vocabulary, width)`` layout, an
embedding lookup recomputed from the canonical table, judged against their framework's own
initializer, and their padding row never a dead filter."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")
nn = torch.nn
F = torch.nn.functional

import weightscope  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


# ---------------------------------------------------------------------------------------------
# the name rule


@pytest.mark.parametrize(
    "name",
    [
        "embedding", "embeddings", "transformer.wte", "transformer.wpe",
        "bert.embeddings.word_embeddings", "bert.embeddings.position_embeddings",
        "bert.embeddings.token_type_embeddings", "model.embed_tokens", "tok_embeddings",
        "gpt_neox.embed_in", "decoder.embed_positions", "label_emb", "emb_l.3",
        "y_embedder.embedding_table", "layers/token_embedding", "BartLearnedPositionalEmbedding",
    ],
)  # fmt: skip
def test_names_that_say_embedding(name: str) -> None:
    from weightscope.formats._common.names import embedding_name

    assert embedding_name([name]) is not None


@pytest.mark.parametrize(
    "name",
    [
        "fc", "lm_head", "gpt_neox.embed_out", "embed_proj", "patch_embed.proj",
        "embedding_head", "encoder.layer.0.attention.self.query", "unembed", "dense_1",
    ],
)  # fmt: skip
def test_names_that_do_not(name: str) -> None:
    from weightscope.formats._common.names import embedding_name

    assert embedding_name([name]) is None


# ---------------------------------------------------------------------------------------------
# PyTorch: state dicts, legacy pickles, safetensors, whole modules


class LearnedPositionalEmbedding(nn.Embedding):
    """A subclass of nn.Embedding, as BART's: its class is not one weightscope knows."""


TABLES = {
    "embedding": (100, 16),
    "transformer.wte": (120, 16),
    "transformer.wpe": (32, 16),
    "bert.embeddings.word_embeddings": (90, 16),
    "bert.embeddings.position_embeddings": (40, 16),
    "model.embed_tokens": (80, 16),
    "tok_embeddings": (70, 16),
}
"""Each embedding table of the test model, by module path: (num_embeddings, embedding_dim)."""
LINEARS = {"fc": (16, 8, True), "embed_proj": (16, 16, False), "lm_head": (16, 100, False)}
"""Linear layers, two of them without a bias (2-D weights alone, like a table)."""


def _model() -> nn.Module:
    torch.manual_seed(3)
    root = nn.Module()
    for path, (count, width) in TABLES.items():
        parent = root
        *parents, leaf = path.split(".")
        for part in parents:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, nn.Embedding(count, width, padding_idx=0))
    for name, (fan_in, fan_out, bias) in LINEARS.items():
        root.add_module(name, nn.Linear(fan_in, fan_out, bias=bias))
    return root


def _save_legacy(sd: dict[str, Any], path: Path) -> None:
    torch.save(sd, path, _use_new_zipfile_serialization=False)


def _save_safetensors(sd: dict[str, Any], path: Path) -> None:
    safetensors_torch.save_file({k: v.contiguous() for k, v in sd.items()}, path)


FORMS: dict[str, tuple[str, Callable[[dict[str, Any], Path], None]]] = {
    "zip": ("sd.pt", torch.save),
    "legacy": ("sd_legacy.pt", _save_legacy),
    "safetensors": ("sd.safetensors", _save_safetensors),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_state_dict_tables_are_embeddings(tmp_path: Path, form: str) -> None:
    module = _model()
    state = module.state_dict()
    filename, save = FORMS[form]
    save(state, tmp_path / filename)
    with weightscope.load(tmp_path / filename) as model:
        kinds = {layer.name: str(layer.kind) for layer in model.layers}
        assert kinds == {
            **dict.fromkeys(TABLES, "embedding"),
            **dict.fromkeys(LINEARS, "dense"),
        }
        assert model.params.total == sum(t.numel() for t in state.values())
        idx = torch.tensor([[0, 5, 1], [7, 0, 3]])
        for path, shape in TABLES.items():
            layer = model.layer(path)
            assert layer.inferred and layer.note is not None and "embedding" in layer.note
            (table,) = layer.tensors
            assert table.role == "embeddings" and table.canonical_shape == shape
            canonical = table.canonical()
            weight = state[f"{path}.weight"]
            np.testing.assert_array_equal(canonical, weight.numpy())
            # the framework's own lookup, from weightscope's canonical table
            expected = F.embedding(idx, weight, padding_idx=0).numpy()
            np.testing.assert_array_equal(canonical[idx.numpy()], expected)
        x = torch.randn(4, 16)
        fc = model.layer("fc")
        kernel = torch.tensor(fc.tensor("kernel").canonical())
        recomputed = F.linear(x, kernel, torch.tensor(fc.tensor("bias").canonical()))
        torch.testing.assert_close(recomputed, module.fc(x).detach(), rtol=0, atol=1e-6)


def test_a_subclass_of_embedding_in_a_whole_pickled_module(tmp_path: Path) -> None:
    torch.manual_seed(5)
    module = nn.Sequential(LearnedPositionalEmbedding(64, 12), nn.Linear(12, 3))
    torch.save(module, tmp_path / "whole.pt")
    with weightscope.load(tmp_path / "whole.pt") as model:
        assert [str(layer.kind) for layer in model.layers] == ["embedding", "dense"]
        assert model.layers[0].tensors[0].canonical_shape == (64, 12)
        assert model.params.total == sum(p.numel() for p in module.parameters())


def test_a_fresh_torch_embedding_is_at_its_init_and_its_padding_row_is_not_dead(
    tmp_path: Path,
) -> None:
    """nn.Embedding draws N(0, 1) and zeroes the padding row: judged against Linear's default
    (uniform ±1/sqrt(width)) it would be 'trained', and its zero row a dead filter."""
    torch.manual_seed(7)
    table = nn.Embedding(400, 32, padding_idx=0)
    trained = nn.Embedding(400, 32, padding_idx=0)
    with torch.no_grad():
        trained.weight.mul_(0.02)
    torch.save(
        {"tok_embeddings.weight": table.weight, "trained.embedding.weight": trained.weight},
        tmp_path / "tables.pt",
    )
    with weightscope.load(tmp_path / "tables.pt") as model:
        health = {h.layer: h for h in weightscope.check_health(model)}
        for checked in health.values():
            assert "dead_filters" not in checked.flags and checked.dead_filters is None
        assert health["tok_embeddings"].flags == ["at_init"]
        assert health["trained.embedding"].flags == []
        fresh, scaled = weightscope.check_init(model)
        assert fresh.layer == "tok_embeddings" and fresh.verdict == "at_init", fresh.evidence
        assert fresh.initializer is not None and fresh.initializer.name == "normal(0, 1)"
        assert "32 exact zeros (a padding row) left out" in fresh.evidence
        assert scaled.verdict == "trained", scaled.evidence


# ---------------------------------------------------------------------------------------------
# Keras: a weights-only .weights.h5, a custom layer's table, a Keras 2 weights-only .h5


@pytest.fixture(scope="module")
def keras_tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    keras = pytest.importorskip("keras")
    folder = tmp_path_factory.mktemp("keras_tables")
    keras.utils.set_random_seed(11)

    class TokenEmbedding(keras.layers.Layer):
        """A custom layer holding one table: a weights store names it by its class."""

        def build(self, input_shape: Any) -> None:
            self.table = self.add_weight(shape=(60, 6), initializer="uniform")

        def call(self, x: Any) -> Any:
            return keras.ops.take(self.table, x, axis=0)

    idx = np.array([[0, 3, 17, 255], [1, 1, 299, 8]], dtype="int32")
    embedding = keras.layers.Embedding(300, 24, name="words")
    model = keras.Sequential([keras.Input((4,), dtype="int32"), embedding, keras.layers.Dense(5)])
    model.save_weights(folder / "model.weights.h5")
    custom = keras.Sequential([keras.Input((4,), dtype="int32"), TokenEmbedding()])
    custom.save_weights(folder / "custom.weights.h5")
    return {
        "folder": folder,
        "idx": idx,
        "table": embedding.get_weights()[0],
        "lookup": np.asarray(embedding(idx)),
        "custom_table": custom.layers[0].get_weights()[0],
        "custom_lookup": np.asarray(custom(idx % 60)),
        "params": model.count_params(),
    }


def test_keras_embedding_in_a_weights_file(keras_tables: dict[str, Any]) -> None:
    with weightscope.load(keras_tables["folder"] / "model.weights.h5") as model:
        assert model.format == "keras-weights-h5"
        layer = model.layers[0]
        assert layer.kind == "embedding" and layer.inferred
        (table,) = layer.tensors
        assert table.canonical_shape == (300, 24)
        canonical = table.canonical()
        np.testing.assert_array_equal(canonical, keras_tables["table"])
        np.testing.assert_allclose(
            canonical[keras_tables["idx"]], keras_tables["lookup"], rtol=0, atol=1e-6
        )
        assert model.params.total == keras_tables["params"]
        (report, _) = weightscope.check_init(model)
        assert report.layer == layer.name and report.verdict == "at_init", report.evidence
        assert report.initializer is not None
        assert report.initializer.name == "random_uniform(-0.05, 0.05)"


def test_a_custom_keras_layer_holding_a_table_is_an_embedding(keras_tables: dict[str, Any]) -> None:
    """The store keeps the variable by position under ``token_embedding``: only the name says."""
    with weightscope.load(keras_tables["folder"] / "custom.weights.h5") as model:
        (layer,) = model.layers
        assert layer.name == "token_embedding" and layer.kind == "embedding"
        (table,) = layer.tensors
        assert table.role == "embeddings" and table.canonical_shape == (60, 6)
        canonical = table.canonical()
        np.testing.assert_array_equal(canonical, keras_tables["custom_table"])
        np.testing.assert_allclose(
            canonical[keras_tables["idx"] % 60], keras_tables["custom_lookup"], atol=1e-6
        )
        (report,) = weightscope.check_init(model)
        assert report.verdict == "at_init", report.evidence


def test_keras2_weights_only_h5_with_a_table_named_weight(tmp_path: Path) -> None:
    """A Keras 2 ``save_weights`` file as Hugging Face's TF models write it: the table of
    ``word_embeddings`` is a variable called ``weight``; the name rule makes it an embedding,
    as it would in a PyTorch state dict."""
    rng = np.random.default_rng(2)
    table = rng.uniform(-0.05, 0.05, (500, 8)).astype(np.float32)
    path = tmp_path / "tf_model.h5"
    with h5py.File(path, "w") as h5:
        h5.attrs["layer_names"] = np.array([b"word_embeddings", b"dense"])
        h5.attrs["backend"] = b"tensorflow"
        h5.attrs["keras_version"] = b"2.4.0"
        group = h5.create_group("word_embeddings")
        group.attrs["weight_names"] = np.array([b"word_embeddings/weight:0"])
        group.create_dataset("word_embeddings/weight:0", data=table)
        group = h5.create_group("dense")
        group.attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        group.create_dataset("dense/kernel:0", data=rng.normal(size=(8, 2)).astype(np.float32))
        group.create_dataset("dense/bias:0", data=np.zeros(2, np.float32))
    with weightscope.load(path) as model:
        assert model.format == "keras-h5-weights"
        assert [str(layer.kind) for layer in model.layers] == ["embedding", "dense"]
        (weights,) = model.layers[0].tensors
        assert weights.name == "word_embeddings/weight:0" and weights.role == "embeddings"
        np.testing.assert_array_equal(weights.canonical(), table)
        (report, _) = weightscope.check_init(model)
        assert report.verdict == "at_init", report.evidence


# ---------------------------------------------------------------------------------------------
# layer norms: a (C,) scale, with or without a (C,) shift, named as a norm


class _Norms(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 8)
        self.LayerNorm = torch.nn.LayerNorm(8)  # BERT's name
        self.ln_f = torch.nn.LayerNorm(8, bias=False)  # GPT-2's, without a shift
        self.norm1 = torch.nn.LayerNorm(8)
        self.gn = torch.nn.GroupNorm(2, 8)  # the same vectors: not taken for a layer norm
        self.scale = torch.nn.Parameter(torch.ones(8))  # a vector named as nothing


def test_layer_norms_are_recognised_by_name(tmp_path: Path) -> None:
    module = _Norms()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.normal_()
    path = tmp_path / "norms.pt"
    torch.save(module.state_dict(), path)
    x = torch.randn(5, 8)
    with weightscope.load(path) as model:
        kinds = {layer.name: str(layer.kind) for layer in model.layers}
        assert kinds == {
            "fc": "dense", "LayerNorm": "layer_norm", "ln_f": "layer_norm",
            "norm1": "layer_norm", "gn": "unknown", "(root)": "unknown",
        }  # fmt: skip
        for name in ("LayerNorm", "ln_f", "norm1"):
            layer = model.layer(name)
            norm = getattr(module, name)
            gamma = torch.tensor(layer.tensor("gamma").canonical())
            beta = layer.tensor("beta").canonical() if norm.bias is not None else None
            recomputed = F.layer_norm(
                x, (8,), gamma, None if beta is None else torch.tensor(beta), norm.eps
            )
            torch.testing.assert_close(recomputed, norm(x).detach(), rtol=1e-5, atol=1e-6)
        assert model.params.total == sum(p.numel() for p in module.parameters())
