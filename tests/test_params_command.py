"""``weightscope params``: stored counts against the configs' formulas, on real layers built in
Keras, PyTorch and ONNX and saved in real files; a hand-edited file whose config disagrees with
its weights is flagged with the reason."""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
h5py = pytest.importorskip("h5py")

from cli_runner import run_cli  # noqa: E402
from test_params import doc_example  # noqa: E402

import weightscope  # noqa: E402
from weightscope.analysis.params import verify  # noqa: E402

nn = torch.nn
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def params_json(path: Path) -> dict:
    result = run_cli("params", path, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # one object, nothing else on stdout


@pytest.mark.parametrize("suffix", ["h5", "keras"])
def test_keras_documentation_example(suffix, tmp_path):
    model = doc_example(keras)
    path = tmp_path / f"doc.{suffix}"
    model.save(path)
    data = params_json(path)
    layers = data["layers"]
    assert [x["stored"] for x in layers] == [2400, 4896, 1989, 819]
    assert [x["formula"] for x in layers] == [2400, 4896, 1989, 819]
    assert [x["status"] for x in layers] == ["ok"] * 4
    assert layers[0]["expression"] == "32 x 5x5 x 3"  # use_bias=False: no bias term
    assert "use_bias=False" in layers[0]["config_values"]
    assert any("Keras configs do not record input channels" in d for d in layers[0]["derived"])
    assert data["params"] == {"total": 10_104, "trainable": 10_104, "non_trainable": 0}
    assert data["formula_total"] == 10_104 == model.count_params()
    assert data["flagged"] == []
    assert data["pytorch_convention"] == {"parameters": 10_104, "buffers": 0}


def torch_model() -> nn.Module:
    """Grouped, depthwise (with and without bias), transposed grouped, batch norm, 1-D and 3-D
    convs and a linear layer, with every parameter and statistic drawn at random (an exporter
    would merge equal initializers, such as fresh zero means and zero biases)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(4, 8, 3, groups=2),
        nn.ReLU(),
        nn.BatchNorm2d(8),  # after a ReLU, so that an ONNX export does not fold it
        nn.Conv2d(8, 16, 3, groups=8),
        nn.ConvTranspose2d(16, 6, 3, stride=2, groups=2),
        nn.Conv2d(6, 6, 3, groups=6, bias=False),
        nn.Flatten(),
        nn.Linear(6 * 15 * 15, 5),
    )
    with torch.no_grad():
        for tensor in [*model.parameters(), model[2].running_mean, model[2].running_var]:
            tensor.uniform_(0.1, 1.0)
    return model.eval()


def torch_counts(model: nn.Module) -> tuple[int, int]:
    """PyTorch's parameters(), and its floating-point buffers (not num_batches_tracked)."""
    parameters = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return parameters, buffers


def assert_all_agree(report, expected_statuses=("ok",)) -> None:
    for layer in report.layers:
        assert layer.issues == [], (layer.name, layer.issues)
        assert layer.formula == layer.stored, (layer.name, layer.expression)
        assert layer.status in expected_statuses, (layer.name, layer.status)


def test_torch_whole_module_agrees_and_shows_the_parameters_convention(tmp_path):
    model = torch_model()
    parameters, buffers = torch_counts(model)
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    data = params_json(path)
    kinds = [x["kind"] for x in data["layers"]]
    assert kinds == [
        "conv2d", "batch_norm", "depthwise_conv2d", "conv_transpose2d", "depthwise_conv2d",
        "dense",
    ]  # fmt: skip
    assert [x["status"] for x in data["layers"]] == ["ok"] * 6
    assert [x["formula"] for x in data["layers"]] == [x["stored"] for x in data["layers"]]
    by_name = {x["name"]: x for x in data["layers"]}
    assert by_name["0"]["expression"] == "8 x 3x3 x 4/2 + 8"
    assert by_name["4"]["expression"] == "16 x 6/2 x 3x3 + 6"  # (in, out/groups, *k)
    assert by_name["5"]["expression"] == "6 x 3x3 x 6/6"  # bias=False
    assert data["pytorch_convention"] == {"parameters": parameters, "buffers": buffers}
    assert buffers == 2 * 8  # running_mean and running_var of BatchNorm2d(8)
    assert data["params"]["total"] == parameters + buffers
    assert data["params"]["non_trainable"] == buffers

    text = run_cli("params", path)
    assert text.returncode == 0, text.stderr
    assert f"PyTorch parameters(): {parameters:,} (buffers: {buffers:,}" in text.stdout


def test_torchscript_and_onnx_agree(tmp_path):
    model = torch_model()
    parameters, buffers = torch_counts(model)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(model), scripted)
    with weightscope.load(scripted) as loaded:
        report = verify(loaded)
        assert_all_agree(report)
        assert (report.pytorch_parameters, report.buffers) == (parameters, buffers)

    exported = tmp_path / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation notices
        torch.onnx.export(model, (torch.zeros(1, 4, 12, 12),), exported, dynamo=False)
    with weightscope.load(exported) as loaded:
        report = verify(loaded)
        # ONNX Gemm and BatchNormalization record no sizes: their check is shapes only
        assert_all_agree(report, ("ok", "shapes only"))
        kinds = {x.kind: x.status for x in report.layers}
        assert kinds["conv_transpose2d"] == kinds["depthwise_conv2d"] == "ok"
        assert kinds["batch_norm"] == "shapes only"
        assert report.counts.total == parameters + buffers
        assert report.pytorch_parameters == parameters


def test_inconsistent_keras_file_is_flagged_with_the_reason(tmp_path):
    model = keras.Sequential(
        [
            keras.Input((12, 12, 3)),
            keras.layers.Conv2D(16, 5, name="c16"),
            keras.layers.Conv2D(4, 3, name="c4"),
            keras.layers.BatchNormalization(name="bn"),
        ]
    )
    good = tmp_path / "good.h5"
    model.save(good)
    bad = tmp_path / "bad.h5"
    shutil.copy(good, bad)
    with h5py.File(bad, "r+") as f:  # malformed input, made by hand
        config = json.loads(f.attrs["model_config"])
        layers = {x["config"]["name"]: x["config"] for x in config["config"]["layers"]}
        layers["c16"]["filters"] = 32
        layers["c4"]["use_bias"] = False
        layers["bn"]["center"] = False
        f.attrs["model_config"] = json.dumps(config)

    assert params_json(good)["flagged"] == []
    data = params_json(bad)
    assert data["flagged"] == ["c16", "c4", "bn"]
    by_name = {x["name"]: x for x in data["layers"]}
    c16 = by_name["c16"]
    assert c16["status"] == "flagged"
    assert "config says 32 filters but the kernel holds 16" in c16["issues"]
    assert (c16["stored"], c16["formula"]) == (16 * 75 + 16, 32 * 75 + 32)
    assert by_name["c4"]["issues"] == ["bias stored but use_bias=False"]
    assert by_name["bn"]["issues"] == ["beta stored but center=False"]
    assert data["params"]["total"] == model.count_params()  # the stored weights still count

    text = run_cli("params", bad)
    assert text.returncode == 0, text.stderr  # findings, not errors
    assert "3 layer(s) disagree with their configuration" in text.stdout
    assert "c16: config says 32 filters but the kernel holds 16" in text.stdout
    assert "c4: bias stored but use_bias=False" in text.stdout
