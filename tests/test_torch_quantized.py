"""PyTorch quantized weights (``torch.ao.quantization``), read by weightscope without torch:
quantized tensors rebuilt by ``_rebuild_qtensor`` (per tensor and per channel), quantized
``Conv``/``Linear`` modules and dynamic ``Linear``/``LSTM``/``GRU`` ones, from state dicts, whole
pickled modules, TorchScript archives and live modules. The stored integers, scales and zero
points are torch's own; the dequantized canonical kernels are ``w.dequantize()``; and they
recompute the modules' outputs with the quantized arithmetic (static: within one output
quantization step; dynamic: within the error of quantizing the activations)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import reference as ref  # noqa: E402  (needs torch)
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import weightscope  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")

ENGINE = next(
    (e for e in ("fbgemm", "x86", "qnnpack") if e in torch.backends.quantized.supported_engines),
    None,
)
if ENGINE is None:
    pytest.skip("this torch has no quantized CPU engine", allow_module_level=True)
torch.backends.quantized.engine = ENGINE


def _tensor(model: weightscope.Model, name: str) -> weightscope.model.Tensor:
    return next(t for _, t in model.tensors() if t.name == name)


def _assert_same_quantized(tensor: Any, q: Any) -> None:
    """weightscope's tensor holds torch's quantized tensor ``q``: integers, scales, zero
    points, and its real values."""
    quantization = tensor.quantization
    assert quantization is not None
    np.testing.assert_array_equal(tensor.stored(), q.int_repr().numpy())
    assert tensor.dtype == str(q.int_repr().numpy().dtype)
    if q.qscheme() in (torch.per_channel_affine, torch.per_channel_affine_float_qparams):
        assert quantization.axis == q.q_per_channel_axis()
        np.testing.assert_array_equal(quantization.scales(), q.q_per_channel_scales().numpy())
        np.testing.assert_array_equal(
            quantization.zero_points(), q.q_per_channel_zero_points().numpy()
        )
    else:
        assert quantization.axis is None
        assert float(quantization.scales()) == q.q_scale()
        assert int(quantization.zero_points()) == q.q_zero_point()
    # torch dequantizes in float32, weightscope in float64 rounded once: one float32 ulp apart
    np.testing.assert_allclose(tensor.numpy(), q.dequantize().numpy(), rtol=2.4e-7, atol=0)


# ---------------------------------------------------------------------------------------------
# quantized tensors


def _qtensors() -> dict[str, Any]:
    torch.manual_seed(0)
    w = torch.randn(4, 3, 2)
    scales = torch.rand(4, dtype=torch.float64) / 10 + 0.01
    zeros = torch.randint(-3, 3, (4,))
    return {
        "per_tensor_qint8": torch.quantize_per_tensor(w, 0.02, 3, torch.qint8),
        "per_tensor_quint8": torch.quantize_per_tensor(w, 0.03, 128, torch.quint8),
        "per_tensor_qint32": torch.quantize_per_tensor(w, 0.001, 0, torch.qint32),
        "per_channel_axis0": torch.quantize_per_channel(w, scales, zeros, 0, torch.qint8),
        "per_channel_axis1": torch.quantize_per_channel(
            w, scales[:3], torch.zeros(3, dtype=torch.long), 1, torch.quint8
        ),
        "transposed": torch.quantize_per_tensor(w.transpose(0, 1), 0.02, 0, torch.qint8),
        # quantized embeddings' scheme: float zero points
        "float_qparams": torch.quantize_per_channel(
            w, scales.float(), torch.randn(4), 0, torch.quint8
        ),
    }


def test_quantized_tensors_read_without_torch(tmp_path: Path) -> None:
    tensors = _qtensors()
    torch.save(tensors, tmp_path / "q.pt")
    with weightscope.load(tmp_path / "q.pt") as model:
        for name, q in tensors.items():
            tensor = _tensor(model, name)
            assert tensor.native_shape == tuple(q.shape)
            _assert_same_quantized(tensor, q)
            assert tensor.counted
        assert model.params.total == sum(q.numel() for q in tensors.values())


# ---------------------------------------------------------------------------------------------
# statically quantized conv + linear (per-channel weights)


class Static(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.quant = torch.ao.quantization.QuantStub()
        self.conv = nn.Conv2d(2, 4, 3)
        self.conv1 = nn.Conv1d(4, 3, 2)
        self.fc = nn.Linear(9, 5)
        self.dequant = torch.ao.quantization.DeQuantStub()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.quant(x))  # (N, 4, 2, 2)
        y = self.conv1(y.flatten(2))  # (N, 3, 3)
        y = self.fc(y.flatten(1))
        return self.dequant(y)


def _static() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(1)
    model = Static().eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig(ENGINE)
    prepared = torch.ao.quantization.prepare(model)
    x = torch.randn(16, 2, 4, 4)
    prepared(x)
    return torch.ao.quantization.convert(prepared), x[:3]


def _saved(module: nn.Module, form: str, tmp_path: Path) -> Any:
    path = tmp_path / f"{form}.pt"
    if form == "live":
        return module
    if form == "state_dict":
        torch.save(module.state_dict(), path)
    elif form == "full":
        torch.save(module, path)
    elif form == "script":
        torch.jit.script(module).save(str(path))
    return path


def _requantize(y: torch.Tensor, scale: float, zero: int) -> np.ndarray:
    """Real values to quint8 as a quantized op writes its output."""
    return np.clip(np.round(y.numpy() / scale) + zero, 0, 255)


def _output(layer: Any) -> tuple[float, int]:
    """The scale and zero point of a layer's output: tensors in a state dict, numbers in the
    config of a pickled module."""
    roles = {t.role: t for t in layer.tensors}
    if "output_scale" in roles:
        scale, zero = roles["output_scale"].numpy(), roles["output_zero_point"].numpy()
        return float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0])
    return float(layer.config["scale"]), int(layer.config["zero_point"])


@pytest.mark.parametrize("form", ["state_dict", "full", "script", "live"])
def test_static_quantized_conv_and_linear(form: str, tmp_path: Path) -> None:
    module, x = _static()
    with weightscope.load(_saved(module, form, tmp_path)) as model:
        conv, conv1, fc = (model.layer(n) for n in ("conv", "conv1", "fc"))
        assert (conv.kind, conv1.kind, fc.kind) == ("conv2d", "conv1d", "dense")
        if form != "state_dict":
            assert (conv.class_name, fc.class_name) == ("quantized.Conv2d", "quantized.Linear")
        weights = {
            "conv": module.conv.weight(),
            "conv1": module.conv1.weight(),
            "fc": module.fc.weight(),
        }
        for layer in (conv, conv1, fc):
            kernel = layer.kernel
            assert kernel is not None and kernel.counted and kernel.trainable is False
            _assert_same_quantized(kernel, weights[layer.name])
            np.testing.assert_allclose(
                kernel.canonical(), weights[layer.name].dequantize().numpy(), rtol=2.4e-7, atol=0
            )
            assert kernel.quantization_axis == 0  # per output channel
        assert fc.kernel.name == "fc._packed_params._packed_params.0"  # type: ignore[union-attr]
        expected = sum(w.numel() for w in weights.values()) + sum(
            m.bias().numel() for m in (module.conv, module.conv1, module.fc)
        )
        assert model.params.total == expected

        # the quantized arithmetic, step by step, from weightscope's numbers
        quant = model.layer("quant")
        scale_in, zero_in = _output(quant)
        with torch.no_grad():
            xq = module.quant(x)
            y_conv = module.conv(xq)
            y_conv1 = module.conv1(y_conv.flatten(2))
            y_fc = module.fc(y_conv1.flatten(1))
        assert scale_in == xq.q_scale() and zero_in == xq.q_zero_point()
        x_real = (np.clip(np.round(x.numpy() / scale_in) + zero_in, 0, 255) - zero_in) * scale_in

        def bias(layer: Any) -> torch.Tensor:
            return torch.from_numpy(layer.tensor("bias").numpy()).double()

        def kernel(layer: Any) -> torch.Tensor:
            return torch.from_numpy(layer.kernel.canonical()).double()

        steps = [
            (conv, torch.from_numpy(x_real), y_conv, lambda a, k, b: F.conv2d(a, k, b)),
            (conv1, y_conv.dequantize().flatten(2), y_conv1, lambda a, k, b: F.conv1d(a, k, b)),
            (fc, y_conv1.dequantize().flatten(1), y_fc, lambda a, k, b: F.linear(a, k, b)),
        ]
        for layer, inputs, out, op in steps:
            real = op(inputs.double(), kernel(layer), bias(layer))
            mine = _requantize(real, *_output(layer))
            assert np.abs(mine - out.int_repr().numpy()).max() <= 1, layer.name


# ---------------------------------------------------------------------------------------------
# dynamically quantized Linear, LSTM and GRU


class Dynamic(nn.Module):
    def __init__(self, kind: type[nn.Module], bidirectional: bool, layers: int) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 4)
        self.rnn = kind(4, 5, num_layers=layers, bidirectional=bidirectional, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(self.fc(x))[0]


def _dynamic(kind: type[nn.Module], bidirectional: bool, layers: int) -> nn.Module:
    torch.manual_seed(2)
    model = Dynamic(kind, bidirectional, layers).eval()
    return torch.ao.quantization.quantize_dynamic(model, {nn.Linear, kind}, dtype=torch.qint8)


@pytest.mark.parametrize("form", ["state_dict", "full", "script", "live"])
@pytest.mark.parametrize(("bidirectional", "layers"), [(False, 1), (True, 2)])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_dynamic_quantized_linear_and_recurrent(
    kind: str, form: str, bidirectional: bool, layers: int, tmp_path: Path
) -> None:
    module = _dynamic({"lstm": nn.LSTM, "gru": nn.GRU}[kind], bidirectional, layers)
    x = torch.randn(2, 7, 6)
    with torch.no_grad():
        hidden = module.fc(x)
        out = module(x).numpy()
    weights = module.rnn._weight_bias()
    with weightscope.load(_saved(module, form, tmp_path)) as model:
        fc = model.layer("fc")
        assert fc.kind == "dense"
        w = module.fc.weight()
        _assert_same_quantized(fc.kernel, w)
        b = torch.from_numpy(fc.tensor("bias").numpy())
        # dynamic quantization quantizes the input per tensor to 8 bits (7 with reduce_range)
        mine = F.linear(x, torch.from_numpy(fc.kernel.canonical()), b)  # type: ignore[union-attr]
        step = float(x.max() - x.min()) / 127
        bound = 0.5 * step * w.dequantize().abs().sum(1) + 1e-5
        assert (mine - hidden).abs().le(bound).all()

        directions = 2 if bidirectional else 1
        single = layers == 1 and directions == 1
        names = [
            "rnn" if single else f"rnn.l{k}" + ("_reverse" if d else "")
            for k in range(layers)
            for d in range(directions)
        ]
        assert [layer.name for layer in model.layers[1:]] == names
        for name in names:
            layer = model.layer(name)
            assert layer.kind == kind
            for tensor in layer.tensors:
                attr = tensor.name.rsplit(".", 1)[-1]
                k, d = divmod(int(tensor.name.split(".")[2]), directions)
                key = f"{attr}_l{k}" + ("_reverse" if d else "")
                if tensor.quantization is not None:
                    _assert_same_quantized(tensor, weights["weight"][key])
                else:
                    np.testing.assert_array_equal(
                        tensor.numpy(), weights["bias"][key].detach().numpy()
                    )
        expected = sum(t.numel() for table in weights.values() for t in table.values())
        assert model.params.total == expected + w.numel() + b.numel()

        # the sequence through the stack, from the dequantized weights; the module quantizes
        # its activations at each step, hence the tolerance
        inputs = hidden.numpy().astype(np.float64)
        for k in range(layers):
            outputs = []
            for d in range(directions):
                layer = model.layer(names[k * directions + d])
                seq = ref.canonical_recurrent_layer(kind, inputs, layer, go_backwards=bool(d))
                outputs.append(np.flip(seq, axis=1) if d else seq)
            inputs = np.concatenate(outputs, axis=-1)
        np.testing.assert_allclose(inputs, out, atol=0.03)


# ---------------------------------------------------------------------------------------------
# hostile quantized tensors: refused in one line, nothing run


def _pickle_edit(tmp_path: Path, tensor: Any, old: bytes, new: bytes) -> Path:
    from torch_builders import read_member, rewrite_zip

    saved = tmp_path / "good.pt"
    torch.save({"w": tensor}, saved)
    data = read_member(saved, "data.pkl")
    assert data.count(old) == 1, data
    return rewrite_zip(saved, tmp_path / "bad.pt", {"data.pkl": data.replace(old, new)})


@pytest.mark.parametrize(
    ("per_channel", "old", "new", "words"),
    [
        # a declared size of (40, 3) or (4, 30) on a storage of 12 integers
        (False, b"K\x04K\x03\x86", b"K(K\x03\x86", ("(40, 3)", "storage")),
        (True, b"K\x04K\x03\x86", b"K\x04K\x1e\x86", ("(4, 30)", "storage")),
        # per-channel scales along an axis the tensor does not have
        (True, b"K\x00t", b"K\x02t", ("per_channel_affine axis 2",)),
        # per-channel scales that are not one per channel of the axis
        (True, b"K\x00t", b"K\x01t", ("one per channel of axis 1",)),
        # the scheme replaced by a global that could run code
        (False, b"ctorch\nper_tensor_affine\n", b"cos\nsystem\n", ("unsafe", "os.system")),
        # a scale that is not a number
        (False, b"G?\xb9\x99\x99\x99\x99\x99\x9a", b"X\x01\x00\x00\x00a", ("per_tensor_affine",)),
    ],
)
def test_hostile_quantized_tensor_is_refused_in_one_line(
    per_channel: bool, old: bytes, new: bytes, words: tuple[str, ...], tmp_path: Path
) -> None:
    from cli_runner import run_cli
    from torch_builders import assert_one_error_line

    w = torch.randn(4, 3)
    if per_channel:
        q = torch.quantize_per_channel(
            w, torch.full((4,), 0.1, dtype=torch.float64), torch.zeros(4, dtype=torch.long), 0,
            torch.qint8,
        )  # fmt: skip
    else:
        q = torch.quantize_per_tensor(w, 0.1, 0, torch.qint8)
    path = _pickle_edit(tmp_path, q, old, new)
    assert_one_error_line(run_cli("inspect", path), path, *words)


@pytest.mark.parametrize("form", ["state_dict", "full", "live"])
def test_dynamic_float16_lstm(form: str, tmp_path: Path) -> None:
    """``quantize_dynamic(dtype=torch.float16)``: float weights, each packed with its bias."""
    torch.manual_seed(3)
    float_model = Dynamic(nn.LSTM, True, 1).eval()
    module = torch.ao.quantization.quantize_dynamic(
        float_model, {nn.Linear, nn.LSTM}, dtype=torch.float16
    )
    x = torch.randn(2, 5, 6)
    with torch.no_grad():
        hidden, out = module.fc(x).numpy(), module(x).numpy()
    with weightscope.load(_saved(module, form, tmp_path)) as model:
        assert [layer.name for layer in model.layers] == ["fc", "rnn.l0", "rnn.l0_reverse"]
        for layer in model.layers[1:]:
            assert layer.kind == "lstm"
            assert {t.role for t in layer.tensors} == {
                "kernel", "recurrent_kernel", "bias", "recurrent_bias",
            }  # fmt: skip
        expected = sum(p.numel() for p in float_model.parameters())
        assert model.params.total == expected
        outputs = []
        for d, name in enumerate(("rnn.l0", "rnn.l0_reverse")):
            seq = ref.canonical_recurrent_layer(
                "lstm", hidden.astype(np.float64), model.layer(name), go_backwards=bool(d)
            )
            outputs.append(np.flip(seq, axis=1) if d else seq)
        np.testing.assert_allclose(np.concatenate(outputs, axis=-1), out, atol=2e-3)
