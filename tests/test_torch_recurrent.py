"""PyTorch ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` (stacked, bidirectional, with a projection),
read back by weightscope from every form PyTorch users meet (the live module, a state dict, a
whole pickled module, TorchScript scripted and traced): one weightscope layer per (stack layer,
direction), whose canonical tensors recompute the module's own output, layer after layer and
direction by direction, through ``reference.canonical_recurrent_layer``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import reference as ref  # noqa: E402  (needs torch)
from torch import nn  # noqa: E402

import weightscope  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::torch.jit.TracerWarning"
)

ATOL = RTOL = 1e-5
KINDS = {nn.LSTM: "lstm", nn.GRU: "gru", nn.RNN: "simple_rnn"}
CASES: dict[str, Callable[[], nn.Module]] = {
    "lstm_2_layers_bidirectional": lambda: nn.LSTM(3, 5, num_layers=2, bidirectional=True),
    "lstm_projection": lambda: nn.LSTM(3, 5, num_layers=2, bidirectional=True, proj_size=2),
    "lstm_one_layer": lambda: nn.LSTM(3, 4, batch_first=True),
    "gru_2_layers_bidirectional": lambda: nn.GRU(3, 4, num_layers=2, bidirectional=True),
    "gru_without_bias": lambda: nn.GRU(3, 4, bias=False, batch_first=True),
    "rnn_2_layers": lambda: nn.RNN(3, 4, num_layers=2, bidirectional=True),
}


class Holder(nn.Module):
    """The recurrent module as ``rnn`` inside a model, returning its whole output sequence."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0]


def _module(case: str) -> tuple[Holder, np.ndarray, np.ndarray]:
    """The model in float64, an input (N, T, in) and its output (N, T, width)."""
    torch.manual_seed(sum(map(ord, case)))
    model = Holder(CASES[case]()).double().eval()
    for parameter in model.parameters():
        nn.init.uniform_(parameter, -0.6, 0.6)
    x = np.random.default_rng(0).standard_normal((2, 6, 3))
    batch_first = model.rnn.batch_first
    given = torch.from_numpy(x if batch_first else x.transpose(1, 0, 2).copy())
    with torch.no_grad():
        out = model(given).numpy()
    return model, x, out if batch_first else out.transpose(1, 0, 2)


def _saved(model: Holder, form: str, tmp_path: Path, x: np.ndarray) -> Any:
    path = tmp_path / f"{form}.pt"
    if form == "live":
        return model
    if form == "state_dict":
        torch.save(model.state_dict(), path)
    elif form == "full":
        torch.save(model, path)
    elif form == "script":
        torch.jit.script(model).save(str(path))
    elif form == "trace":
        example = torch.from_numpy(x if model.rnn.batch_first else x.transpose(1, 0, 2).copy())
        torch.jit.trace(model, example).save(str(path))
    return path


def recompute(model: weightscope.Model, module: nn.Module, x: np.ndarray) -> np.ndarray:
    """The stack's output from weightscope's layers: each layer's directions on the previous
    layer's concatenated outputs, the backward one reading the sequence from its end."""
    kind = KINDS[type(module)]
    directions = 2 if module.bidirectional else 1
    single = module.num_layers == 1 and directions == 1
    for index in range(module.num_layers):
        outputs = []
        for reverse in (False, True)[:directions]:
            name = "rnn" if single else f"rnn.l{index}" + ("_reverse" if reverse else "")
            layer = model.layer(name)
            assert layer.kind == kind
            out = ref.canonical_recurrent_layer(kind, x, layer, go_backwards=reverse)
            outputs.append(np.flip(out, axis=1) if reverse else out)
        x = np.concatenate(outputs, axis=-1)
    return x


FORMS = ("live", "state_dict", "full", "script", "trace")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("case", list(CASES))
def test_recurrent_module_recomputed_from_canonical_tensors(
    case: str, form: str, tmp_path: Path
) -> None:
    module, x, expected = _module(case)
    rnn = module.rnn
    with weightscope.load(_saved(module, form, tmp_path, x)) as model:
        got = recompute(model, rnn, x)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=RTOL)
        # every tensor under its own state-dict name, bit for bit, and counted once
        state = {f"rnn.{k}": v.numpy() for k, v in rnn.state_dict().items()}
        tensors = {t.name: t for layer in model.layers for t in layer.tensors}
        assert set(tensors) == set(state)
        for name, tensor in tensors.items():
            np.testing.assert_array_equal(tensor.numpy(), state[name])
        assert model.params.total == sum(p.numel() for p in rnn.parameters())
        directions = 2 if rnn.bidirectional else 1
        assert len(model.layers) == rnn.num_layers * directions
        layer = model.layers[0]
        assert layer.inferred is (form == "state_dict")
        if form in ("live", "full", "script"):
            assert layer.config["hidden_size"] == rnn.hidden_size
            assert layer.config["num_layers"] == rnn.num_layers
            assert layer.config["bidirectional"] == rnn.bidirectional
            assert layer.config["batch_first"] == rnn.batch_first


def test_layers_roles_and_layouts_of_a_bidirectional_lstm_with_projection(tmp_path: Path) -> None:
    module, x, _ = _module("lstm_projection")
    with weightscope.load(_saved(module, "state_dict", tmp_path, x)) as model:
        assert [layer.name for layer in model.layers] == [
            "rnn.l0", "rnn.l0_reverse", "rnn.l1", "rnn.l1_reverse",
        ]  # fmt: skip
        layer = model.layer("rnn.l1_reverse")
        assert layer.config == {"stack_layer": 1, "go_backwards": True}
        assert "projection (weight_hr_l0) makes an LSTM" in (layer.note or "")
        found = {t.name: (t.role, t.native_layout, t.canonical_shape) for t in layer.tensors}
        assert found == {
            "rnn.weight_ih_l1_reverse": ("kernel", "{ifgo}I", (4, 5, 4)),
            "rnn.weight_hh_l1_reverse": ("recurrent_kernel", "{ifgo}I", (4, 5, 2)),
            "rnn.bias_ih_l1_reverse": ("bias", "{ifgo}", (4, 5)),
            "rnn.bias_hh_l1_reverse": ("recurrent_bias", "{ifgo}", (4, 5)),
            "rnn.weight_hr_l1_reverse": ("projection", "OI", (2, 5)),
        }


@pytest.mark.parametrize(
    ("case", "kind", "layouts"),
    [
        ("gru_2_layers_bidirectional", "gru", ("{rzn}I", "{rzn}")),
        ("rnn_2_layers", "simple_rnn", ("{h}I", "{h}")),
        ("lstm_one_layer", "lstm", ("{ifgo}I", "{ifgo}")),
    ],
)
def test_state_dict_kind_from_the_gate_count(
    case: str, kind: str, layouts: tuple[str, str], tmp_path: Path
) -> None:
    module, x, _ = _module(case)
    with weightscope.load(_saved(module, "state_dict", tmp_path, x)) as model:
        for layer in model.layers:
            assert layer.kind == kind and layer.inferred
            assert {t.native_layout for t in layer.tensors} == set(layouts)
        if case == "lstm_one_layer":
            assert [layer.name for layer in model.layers] == ["rnn"]


def test_rnn_relu_is_noted(tmp_path: Path) -> None:
    module = Holder(nn.RNN(3, 4, nonlinearity="relu"))
    for source in (module, _saved(module, "full", tmp_path, np.zeros((1, 2, 3)))):
        with weightscope.load(source) as model:
            layer = model.layer("rnn")
            assert layer.config["nonlinearity"] == "relu"
            assert "nonlinearity relu" in (layer.note or "")


def test_bare_recurrent_module_names_its_layers_by_stack_position(tmp_path: Path) -> None:
    rnn = nn.GRU(3, 4, num_layers=2)
    torch.save(rnn.state_dict(), tmp_path / "bare.pt")
    for source in (rnn, tmp_path / "bare.pt"):
        with weightscope.load(source) as model:
            assert [layer.name for layer in model.layers] == ["l0", "l1"]


def test_state_dict_whose_gates_do_not_divide_is_not_a_recurrent_layer(tmp_path: Path) -> None:
    state = {"rnn.weight_ih_l0": torch.zeros(10, 3), "rnn.weight_hh_l0": torch.zeros(10, 4)}
    torch.save(state, tmp_path / "odd.pt")
    with weightscope.load(tmp_path / "odd.pt") as model:
        (layer,) = model.layers
        assert layer.kind == "unknown"
        assert "fits no LSTM, GRU or RNN" in (layer.note or "")
        assert model.params.total == 70
