"""``explain``: plain-language accounts from a layer's own numbers, and ``--demo`` values that
equal what the framework's own layer computes on the same input, for real Keras and PyTorch
layers saved in real files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from cli_runner import run_cli  # noqa: E402

import weightscope  # noqa: E402
from weightscope.analysis.explain import (  # noqa: E402
    batch_norm_demo,
    conv_demo,
    dense_demo,
    separable_demo,
)
from weightscope.reporters.explain import explain  # noqa: E402

nn = torch.nn
TOLERANCE = 1e-5


def printed_output(text: str, *index: int) -> float:
    """The demo's final value: the number after the last '=' of the line ``output[...] = ``."""
    prefix = f"output[{', '.join(map(str, index))}] = "
    lines = [line for line in text.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, text
    return float(lines[0].rsplit("= ", 1)[1])


# ---------------------------------------------------------------------------------------------
# Keras


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    rgb = keras.Input((16, 16, 3))
    six = keras.Input((16, 16, 6))
    vec = keras.Input((20,))
    outputs = [
        keras.layers.Conv2D(32, 5, name="conv")(rgb),
        keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(rgb),
        keras.layers.Conv2D(8, 1, name="pw")(rgb),
        keras.layers.SeparableConv2D(5, 3, depth_multiplier=2, name="sep")(rgb),
        keras.layers.Conv2D(4, 3, groups=2, name="grouped")(six),
        keras.layers.Dense(7, name="dense")(vec),
    ]
    model = keras.Model([rgb, six, vec], outputs)
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in model.weights])
    path = tmp_path_factory.mktemp("keras") / "layers.keras"
    model.save(path)
    with weightscope.load(path) as loaded:
        yield model, loaded


def test_keras_accounts(keras_file):
    _, loaded = keras_file
    conv = explain(loaded.layer("conv"))
    assert "Each filter is a 5x5x3 volume, that is 3 separate 5x5 kernels" in conv
    assert "one per input channel (75 weights)" in conv
    assert "32 x 75 = 2,400 weights (+32 biases)" in conv
    assert "the output depth is the number of filters, 32" in conv
    assert "(5, 5, 3, 32) HWIO, canonical (32, 3, 5, 5) OIHW" in conv

    dw = explain(loaded.layer("dw"))
    assert "each of the 3 input channels is convolved with 2 kernels of its own (3x3 each)" in dw
    assert "no mixing across channels" in dw
    assert "3 x 2 x 3x3 = 54 weights (+6 biases)" in dw
    assert "the output depth is 3 x 2 = 6" in dw

    grouped = explain(loaded.layer("grouped"))
    assert "2 groups of 6/2 = 3 input channels each" in grouped
    assert "group o // 2 (2 filters per group)" in grouped
    assert "4 x 27 = 108 weights (+4 biases), 2 times fewer" in grouped

    pw = explain(loaded.layer("pw"))
    assert "per-pixel dense layer mixing channels" in pw
    assert "8 x 3 = 24 weights (+8 biases)" in pw

    dense = explain(loaded.layer("dense"))
    assert "a matrix W of 7 x 20" in dense
    assert "(stored as (20, 7) IO)" in dense
    assert "7 x 20 = 140 weights (+7 biases)" in dense

    sep = explain(loaded.layer("sep"))
    assert "3 x 2 x 3x3 = 54 weights" in sep
    assert "5 x 6 = 30 weights (+5 biases)" in sep


def channels_last(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, 0, -1)[None]


@pytest.mark.parametrize("name", ["conv", "dw", "pw", "grouped"])
def test_keras_conv_demo_equals_the_keras_layer(keras_file, name):
    model, loaded = keras_file
    layer = loaded.layer(name)
    text = explain(layer, demo=True)
    demo = conv_demo(layer)
    expected = np.asarray(model.get_layer(name)(channels_last(demo.input)))
    value = expected[(0, *demo.position, demo.output_channel)]
    printed = printed_output(text, demo.output_channel, *demo.position)
    assert abs(printed - value) <= TOLERANCE
    assert abs(demo.output - value) <= TOLERANCE
    assert "Check: |sum - dot| = " in text and "they agree." in text
    assert f"bias[{demo.output_channel}] = " in text


def test_keras_dense_and_separable_demos(keras_file):
    model, loaded = keras_file
    dense = loaded.layer("dense")
    text = explain(dense, demo=True, output_channel=3)
    demo = dense_demo(dense, 3)
    value = np.asarray(model.get_layer("dense")(demo.input[None]))[0, 3]
    assert abs(printed_output(text, 3) - value) <= TOLERANCE

    sep = loaded.layer("sep")
    text = explain(sep, demo=True, position=(2, 4))
    demo = separable_demo(sep, position=(2, 4))
    value = np.asarray(model.get_layer("sep")(channels_last(demo.input)))[0, 2, 4, 0]
    assert abs(printed_output(text, 0, 2, 4) - value) <= TOLERANCE


# ---------------------------------------------------------------------------------------------
# PyTorch


def torch_layers() -> nn.ModuleDict:
    torch.manual_seed(0)
    layers = nn.ModuleDict(
        {
            "conv": nn.Conv2d(3, 32, 5),
            "grouped": nn.Conv2d(6, 4, 3, groups=2),
            "dw": nn.Conv2d(3, 6, 3, groups=3),
            "pw": nn.Conv2d(3, 8, 1),
            "strided": nn.Conv2d(4, 6, 3, stride=2, dilation=2),
            "up": nn.ConvTranspose2d(4, 6, 3, stride=2, groups=2),
            "c1d": nn.Conv1d(3, 5, 4),
            "c3d": nn.Conv3d(2, 3, 2, bias=False),
            "fc": nn.Linear(20, 7),
            "bn": nn.BatchNorm2d(5),
        }
    )
    with torch.no_grad():
        bn = layers["bn"]
        for tensor in (bn.weight, bn.bias, bn.running_mean):
            tensor.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    return layers.eval()


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory):
    layers = torch_layers()
    path = tmp_path_factory.mktemp("torch") / "layers.pt"
    torch.save(layers, path)  # a whole pickled module: classes, groups, strides recorded
    with weightscope.load(path) as loaded:
        yield layers, loaded


def test_torch_accounts(torch_file):
    _, loaded = torch_file
    conv = explain(loaded.layer("conv"))
    assert "Each filter is a 5x5x3 volume, that is 3 separate 5x5 kernels" in conv
    assert "32 x 75 = 2,400 weights (+32 biases)" in conv

    dw = explain(loaded.layer("dw"))
    assert "each of the 3 input channels is convolved with 2 kernels of its own (3x3 each)" in dw
    assert "3 x 2 x 3x3 = 54 weights (+6 biases)" in dw

    grouped = explain(loaded.layer("grouped"))
    assert "2 groups of 6/2 = 3 input channels each" in grouped
    assert "4 x 27 = 108 weights (+4 biases)" in grouped

    assert "8 x 3 = 24 weights (+8 biases)" in explain(loaded.layer("pw"))
    assert "7 x 20 = 140 weights (+7 biases)" in explain(loaded.layer("fc"))

    up = explain(loaded.layer("up"))
    assert "scatters each input pixel" in up
    assert "(6, 2, 3, 3) = (out, in/groups, height, width)" in up
    assert "(stored as (4, 3, 3, 3) IOHW)" in up
    assert "6 x 2 x 3x3 = 108 weights (+6 biases)" in up

    assert "Each filter is a 4x3 volume" in explain(loaded.layer("c1d"))
    c3d = explain(loaded.layer("c3d"))
    assert "Each filter is a 2x2x2x2 volume" in c3d
    assert "3 x 16 = 48 weights (no bias)" in c3d

    bn = explain(loaded.layer("bn"))
    assert "Batch normalization of 5 channels" in bn
    assert "eps = 1e-05" in bn
    assert "non-trainable, 2 x 5 = 10" in bn


@pytest.mark.parametrize(
    ("name", "position"),
    [("conv", None), ("grouped", (2, 1)), ("dw", None), ("pw", None), ("strided", (1, 2)),
     ("up", None), ("up", (4, 2)), ("c1d", (3,)), ("c3d", None)],
)  # fmt: skip
def test_torch_conv_demo_equals_the_module(torch_file, name, position):
    layers, loaded = torch_file
    layer = loaded.layer(name)
    text = explain(layer, demo=True, position=position)
    demo = conv_demo(layer, position=position)
    with torch.no_grad():
        output = layers[name](torch.from_numpy(demo.input[None])).numpy()
    value = output[(0, demo.output_channel, *demo.position)]
    assert abs(printed_output(text, demo.output_channel, *demo.position) - value) <= TOLERANCE
    assert demo.agree and "they agree." in text


def test_torch_dense_and_batch_norm_demos(torch_file):
    layers, loaded = torch_file
    fc = loaded.layer("fc")
    text = explain(fc, demo=True)
    demo = dense_demo(fc)
    with torch.no_grad():
        value = layers["fc"](torch.from_numpy(demo.input[None])).numpy()[0, 0]
    assert abs(printed_output(text, 0) - value) <= TOLERANCE

    bn = loaded.layer("bn")
    text = explain(bn, demo=True, output_channel=2)
    bn_demo = batch_norm_demo(bn, 2)
    x = np.zeros((1, 5, 3, 1), dtype=np.float32)
    x[0, 2, :, 0] = bn_demo.input
    with torch.no_grad():
        expected = layers["bn"](torch.from_numpy(x)).numpy()[0, 2, :, 0]
    np.testing.assert_allclose(bn_demo.formula, expected, atol=TOLERANCE)
    np.testing.assert_allclose(bn_demo.folded, expected, atol=TOLERANCE)
    assert "they agree." in text


# ---------------------------------------------------------------------------------------------
# the command


def test_explain_command(tmp_path: Path):
    result = run_cli("explain", "--example", "pwconv2", "--demo")
    assert result.returncode == 0, result.stderr
    assert "per-pixel dense layer mixing channels" in result.stdout
    assert "16 x 16 = 256 weights (+16 biases)" in result.stdout
    assert "they agree." in result.stdout

    result = run_cli("explain", "dwconv2", "--example")  # --example after the layer
    assert result.returncode == 0, result.stderr
    assert (
        "each of the 8 input channels is convolved with 2 kernels of its own (3x3 each)"
        in result.stdout
    )

    result = run_cli("explain", weightscope.example_path(), "nope")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no layer named 'nope'; layers: conv1, bn1, dwconv2, pwconv2, logits" in lines[0]
