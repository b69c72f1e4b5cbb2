"""PyTorch checkpoints: the model's weights found under whichever entry holds the most tensor
data (any key, one level deeper too), named in the notes, with EMA copies and optimizer state
listed apart and never counted, and ``module.`` prefixes of DataParallel removed."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import weightscope  # noqa: E402


def _model(seed: int = 1, width: int = 16) -> nn.Module:
    torch.manual_seed(seed)
    module = nn.Sequential()
    module.add_module("embedding", nn.Embedding(50, width, padding_idx=0))
    module.add_module("fc", nn.Linear(width, 4))
    return module


def _trained() -> tuple[nn.Module, nn.Module, dict[str, Any]]:
    """A model after one real Adam step, its EMA copy from before the step (so that their values
    differ), and the optimizer's state dict (two moments per parameter and step counters)."""
    module = _model()
    ema = copy.deepcopy(module)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.1)
    module(torch.tensor([[1, 2, 3]])).sum().backward()
    optimizer.step()
    return module, ema, optimizer.state_dict()


def _numel(state: dict[str, Any]) -> int:
    return sum(t.numel() for t in state.values())


def _optimizer_tensors(state: dict[str, Any]) -> tuple[int, int]:
    """Tensors and values in an optimizer's state dict."""
    tensors = [t for entry in state["state"].values() for t in entry.values()]
    return len(tensors), sum(t.numel() for t in tensors)


def _assert_reads_as(model: weightscope.Model, state: dict[str, Any], prefix: str = "") -> None:
    """Every tensor of ``state`` (and nothing else) in ``model``, under its own name, values
    equal; the totals are those of ``state``, once."""
    names = {tensor.name: tensor for _, tensor in model.tensors()}
    assert sorted(names) == sorted(prefix + name for name in state)
    for name, value in state.items():
        np.testing.assert_array_equal(names[prefix + name].numpy(), value.numpy(), err_msg=name)
    assert model.params.total == _numel(state)


def _assert_layers(model: weightscope.Model, module: nn.Module, prefix: str = "") -> None:
    """Kinds and canonical shapes, and the module's output recomputed from canonical tensors."""
    kinds = {layer.name: str(layer.kind) for layer in model.layers}
    assert kinds == {f"{prefix}embedding": "embedding", f"{prefix}fc": "dense"}
    table = model.layer(f"{prefix}embedding").tensor("embeddings").canonical()
    fc = model.layer(f"{prefix}fc")
    assert table.shape == tuple(module.embedding.weight.shape)
    idx = torch.tensor([[0, 4, 9], [3, 3, 1]])
    hidden = F.embedding(idx, torch.tensor(table))
    output = F.linear(
        hidden,
        torch.tensor(fc.tensor("kernel").canonical()),
        torch.tensor(fc.tensor("bias").canonical()),
    )
    with torch.no_grad():
        torch.testing.assert_close(output, module(idx), rtol=0, atol=1e-6)


CONTAINERS = [
    "model_state", "net", "network", "ema", "state", "params", "module", "weights",
    "generator", "model", "state_dict", "model_state_dict",
]  # fmt: skip


@pytest.mark.parametrize("key", CONTAINERS)
def test_weights_under_any_single_key(tmp_path: Path, key: str) -> None:
    module = _model()
    state = module.state_dict()
    path = tmp_path / f"{key}.pt"
    torch.save({"epoch": 3, key: state, "best_loss": 0.25}, path)
    with weightscope.load(path) as model:
        _assert_reads_as(model, state)
        _assert_layers(model, module)
        assert model.notes[0] == f"weights from the checkpoint's entry {key!r}"
        assert "also in the file, not parameters: epoch, best_loss" in model.notes


@pytest.mark.parametrize("ema_first", [False, True], ids=["model_first", "ema_first"])
def test_ema_copy_and_optimizer_state_are_listed_apart(tmp_path: Path, ema_first: bool) -> None:
    module, ema, optimizer = _trained()
    state, ema_state = module.state_dict(), ema.state_dict()
    entries = {"model": state, "ema": ema_state}
    if ema_first:
        entries = {"ema": ema_state, "model": state}
    path = tmp_path / "checkpoint.pt"
    torch.save({**entries, "optimizer": optimizer, "epoch": 1}, path)
    with weightscope.load(path) as model:
        _assert_reads_as(model, state)  # the model's values, not the EMA copy's, counted once
        _assert_layers(model, module)
        tensors, values = _optimizer_tensors(optimizer)
        assert tensors == 9 and values == 2 * _numel(state) + 3  # Adam: two moments, a step
        assert model.notes == [
            "weights from the checkpoint's entry 'model', the largest of 2 entries holding tensors",
            f"also holding tensors, not counted: 'ema' (an EMA copy: 3 tensors, "
            f"{_numel(ema_state):,} values)",
            f"optimizer and scheduler state, not counted: 'optimizer' ({tensors} tensors, "
            f"{values:,} values)",
            "also in the file, not parameters: epoch",
        ]


def test_the_entry_holding_the_most_tensor_data_is_the_model(tmp_path: Path) -> None:
    small, big = _model(width=4), _model(width=32)
    path = tmp_path / "two.pt"
    torch.save({"teacher_head": small.state_dict(), "student": big.state_dict()}, path)
    with weightscope.load(path) as model:
        _assert_reads_as(model, big.state_dict())
        _assert_layers(model, big)
        assert model.notes[0].startswith("weights from the checkpoint's entry 'student'")
        assert model.notes[1].startswith("also holding tensors, not counted: 'teacher_head'")


def test_lightning_checkpoint(tmp_path: Path) -> None:
    """What ``Trainer.save_checkpoint`` writes, built without Lightning: the LightningModule's
    ``state_dict`` (its attribute ``model`` as a prefix), optimizer states, schedulers, and
    callbacks whose state holds a tensor of its own."""
    module, _, optimizer = _trained()
    state = {f"model.{name}": value for name, value in module.state_dict().items()}
    checkpoint = {
        "epoch": 4,
        "global_step": 200,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"completed": 4}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val_loss'}": {
                "best_model_score": torch.tensor(0.125),
                "best_model_path": "epoch=3.ckpt",
            }
        },
        "optimizer_states": [optimizer],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": {"lr": 0.1},
    }
    path = tmp_path / "last.ckpt"
    torch.save(checkpoint, path)
    with weightscope.load(path) as model:
        _assert_reads_as(model, state)
        _assert_layers(model, module, prefix="model.")
        tensors, values = _optimizer_tensors(optimizer)
        assert model.notes[0].startswith("weights from the checkpoint's entry 'state_dict'")
        assert "also holding tensors, not counted: 'callbacks' (1 tensor, 1 value)" in model.notes
        assert (
            f"optimizer and scheduler state, not counted: 'optimizer_states' ({tensors} "
            f"tensors, {values:,} values), 'lr_schedulers'" in model.notes
        )


def test_containers_one_level_down(tmp_path: Path) -> None:
    module, ema, optimizer = _trained()
    state = module.state_dict()
    path = tmp_path / "nested.pt"
    torch.save(
        {"model": {"ema": ema.state_dict(), "state_dict": state}, "optimizer": optimizer}, path
    )
    with weightscope.load(path) as model:
        _assert_reads_as(model, state)
        _assert_layers(model, module)
        assert model.notes[0].startswith(
            "weights from the checkpoint's entry 'state_dict' inside 'model'"
        )
        assert model.notes[1].startswith("also holding tensors, not counted: 'ema' inside 'model'")


def test_nested_parameters_are_not_taken_apart(tmp_path: Path) -> None:
    """An entry whose dicts are layers, not containers, is the model as a whole."""
    module = _model()
    params = {
        "embedding": {"weight": module.embedding.weight},
        "fc": {"weight": module.fc.weight, "bias": module.fc.bias},
    }
    torch.save({"params": params, "step": 10}, tmp_path / "tree.pt")
    with weightscope.load(tmp_path / "tree.pt") as model:
        _assert_reads_as(model, module.state_dict())
        _assert_layers(model, module)
        assert model.notes[0] == "weights from the checkpoint's entry 'params'"


def test_scalar_tensors_beside_the_state_dict(tmp_path: Path) -> None:
    module = _model()
    path = tmp_path / "scalars.pt"
    torch.save({"state_dict": module.state_dict(), "step": torch.tensor(7), "epoch": 2}, path)
    with weightscope.load(path) as model:
        _assert_reads_as(model, module.state_dict())
        assert model.notes == [
            "weights from the checkpoint's entry 'state_dict', the largest of 2 entries "
            "holding tensors",
            "also holding tensors, not counted: top-level tensors 'step' (1 tensor, 1 value)",
            "also in the file, not parameters: epoch",
        ]


def test_dataparallel_prefix_inside_a_container(tmp_path: Path) -> None:
    module = _model()
    path = tmp_path / "dp.pth"
    torch.save({"net": nn.DataParallel(module).state_dict(), "epoch": 1}, path)
    with weightscope.load(path) as model:
        _assert_reads_as(model, module.state_dict())
        _assert_layers(model, module)
        assert "'module.' prefix (DataParallel) removed from the names" in model.notes


def test_whole_modules_with_an_ema_copy_are_counted_once(tmp_path: Path) -> None:
    """As YOLO-style checkpoints keep them: the pickled model and its EMA copy, the same size."""
    module, ema, _ = _trained()
    path = tmp_path / "whole.pt"
    torch.save({"ema": ema, "model": module, "updates": 1}, path)
    with weightscope.load(path) as model:
        assert model.params.total == sum(p.numel() for p in module.parameters())
        _assert_layers(model, module)
        table = model.layer("embedding").tensor("embeddings").numpy()
        np.testing.assert_array_equal(table, module.embedding.weight.detach().numpy())
        assert model.notes[0].startswith("weights from the checkpoint's entry 'model'")
        assert "'ema' (an EMA copy: 3 tensors" in model.notes[1]
