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
    BatchNormGeometry,
    ConvDemo,
    ConvGeometry,
    DenseDemo,
    DenseGeometry,
    EmbeddingGeometry,
    LayerNormGeometry,
    RecurrentGeometry,
    SeparableDemo,
    SeparableGeometry,
    batch_norm_demo,
    conv_demo,
    dense_demo,
    explain_layer,
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


# ---------------------------------------------------------------------------------------------
# the numbers alone (weightscope.analysis.explain), checked against the frameworks' own


def test_keras_conv_geometry(keras_file):
    model, loaded = keras_file
    found = explain_layer(loaded.layer("conv"))
    assert (found.name, found.kind, found.framework, found.class_name) == (
        "conv", "conv2d", "keras", "Conv2D",
    )  # fmt: skip
    assert found.demo is None and found.inferred is None
    g = found.geometry
    assert isinstance(g, ConvGeometry)
    assert (g.out, g.per_group, g.groups, g.k, g.in_channels) == (32, 3, 1, (5, 5), 3)
    assert g.taps == 25  # one input channel's kernel
    assert g.volume == 75  # one filter
    assert g.weights == 2400 == model.get_layer("conv").kernel.shape.num_elements()
    assert g.extent == (5, 5) and not g.strided and not g.dilated
    assert not (g.depthwise or g.pointwise or g.transposed) and g.bias is not None

    dw = explain_layer(loaded.layer("dw")).geometry
    assert isinstance(dw, ConvGeometry)
    assert dw.depthwise and (dw.groups, dw.multiplier, dw.out, dw.per_group) == (3, 2, 6, 1)
    assert dw.weights == 54 == np.prod(model.get_layer("dw").kernel.shape)

    pw = explain_layer(loaded.layer("pw")).geometry
    assert isinstance(pw, ConvGeometry) and pw.pointwise and (pw.volume, pw.weights) == (3, 24)

    grouped = explain_layer(loaded.layer("grouped")).geometry
    assert isinstance(grouped, ConvGeometry)
    assert (grouped.groups, grouped.per_group, grouped.out_per_group) == (2, 3, 2)
    assert (grouped.volume, grouped.weights, grouped.ungrouped_weights) == (27, 108, 216)


def test_keras_separable_and_dense_geometry(keras_file):
    model, loaded = keras_file
    sep = explain_layer(loaded.layer("sep")).geometry
    assert isinstance(sep, SeparableGeometry)
    layer = model.get_layer("sep")
    assert sep.depthwise_weights == 54 == np.prod(layer.depthwise_kernel.shape)
    assert sep.pointwise_weights == 30 == np.prod(layer.pointwise_kernel.shape)
    assert sep.weights == 84 and sep.ordinary_weights == 5 * 3 * 9
    assert (sep.depthwise.out, sep.pointwise.per_group, sep.pointwise.groups) == (6, 6, 1)
    assert sep.depthwise.bias is None and sep.bias is not None

    dense = explain_layer(loaded.layer("dense")).geometry
    assert isinstance(dense, DenseGeometry)
    assert (dense.out, dense.inputs, dense.weights) == (7, 20, 140)


def test_keras_conv_demo_numbers(keras_file):
    """The demo's kernel is the layer's own filter, its patch the input window it names, its
    per-channel sums add up to the whole, and its value is what Keras computes."""
    model, loaded = keras_file
    found = explain_layer(loaded.layer("conv"), demo=True, output_channel=5)
    demo = found.demo
    assert isinstance(demo, ConvDemo)
    assert (demo.output_channel, demo.position, demo.group, demo.channels) == (5, (1, 1), 0, (0, 3))
    assert demo.window == ((1, 6, 1), (1, 6, 1))
    assert demo.input.shape == (3, 7, 7) and demo.kernel.shape == demo.patch.shape == (3, 5, 5)
    keras_kernel = np.asarray(model.get_layer("conv").kernel)[..., 5]  # (h, w, in)
    np.testing.assert_array_equal(demo.kernel, np.moveaxis(keras_kernel, -1, 0))
    np.testing.assert_array_equal(demo.patch, demo.input[:, 1:6, 1:6])
    assert demo.channel_sums.shape == (3,)
    assert abs(demo.channel_sums.sum() - demo.products_sum) <= 1e-12
    assert demo.channel_sums_from(1) == pytest.approx(demo.channel_sums[1:].sum())
    assert demo.bias == pytest.approx(float(np.asarray(model.get_layer("conv").bias)[5]))
    assert demo.agree and demo.seed == 0
    expected = np.asarray(model.get_layer("conv")(channels_last(demo.input)))[0, 1, 1, 5]
    assert abs(demo.output - expected) <= TOLERANCE


def test_keras_separable_demo_numbers(keras_file):
    model, loaded = keras_file
    demo = explain_layer(loaded.layer("sep"), demo=True, output_channel=2).demo
    assert isinstance(demo, SeparableDemo)
    pointwise = np.asarray(model.get_layer("sep").pointwise_kernel)[0, 0, :, 2]
    np.testing.assert_array_equal(demo.pointwise, pointwise)
    assert demo.depthwise.shape == (6,)
    assert abs(float(demo.pointwise @ demo.depthwise) - demo.products_sum) <= 1e-12
    expected = np.asarray(model.get_layer("sep")(channels_last(demo.input)))[0, 1, 1, 2]
    assert abs(demo.output - expected) <= TOLERANCE


@pytest.mark.parametrize("name", ["conv", "grouped", "dw", "pw", "strided", "c1d", "c3d"])
def test_torch_conv_geometry_counts_match_the_module(torch_file, name):
    layers, loaded = torch_file
    module = layers[name]
    g = explain_layer(loaded.layer(name)).geometry
    assert isinstance(g, ConvGeometry)
    assert g.weights == module.weight.numel()
    assert g.volume == module.weight[0].numel()  # (out, in/groups, *k): one filter
    assert g.taps == module.weight[0, 0].numel()
    assert (g.groups, g.stride, g.dilation) == (module.groups, module.stride, module.dilation)
    assert (g.bias is None) == (module.bias is None)


def test_torch_geometry_of_special_convs(torch_file):
    _, loaded = torch_file
    strided = explain_layer(loaded.layer("strided")).geometry
    assert isinstance(strided, ConvGeometry)
    assert strided.strided and strided.dilated and strided.extent == (5, 5)

    up = explain_layer(loaded.layer("up")).geometry
    assert isinstance(up, ConvGeometry)
    assert up.transposed and not up.depthwise
    assert (up.out, up.per_group, up.groups, up.weights) == (6, 2, 2, 108)

    dw = explain_layer(loaded.layer("dw")).geometry
    assert isinstance(dw, ConvGeometry) and dw.depthwise and dw.multiplier == 2


@pytest.mark.parametrize(
    ("name", "position", "window"),
    [("conv", None, ((1, 6, 1), (1, 6, 1))), ("strided", (1, 2), ((2, 7, 2), (4, 9, 2))),
     ("grouped", (2, 1), ((2, 5, 1), (1, 4, 1))), ("up", None, None)],
)  # fmt: skip
def test_torch_conv_demo_numbers(torch_file, name, position, window):
    layers, loaded = torch_file
    module = layers[name]
    demo = explain_layer(loaded.layer(name), demo=True, position=position).demo
    assert isinstance(demo, ConvDemo)
    assert demo.window == window
    first, stop = demo.channels
    if window is not None:
        index = (slice(first, stop), *(slice(*axis) for axis in window))
        np.testing.assert_array_equal(demo.patch, demo.input[index])
        kernel = module.weight[demo.output_channel].detach().numpy()
        np.testing.assert_array_equal(demo.kernel, kernel)
    assert demo.group == demo.output_channel // (module.out_channels // module.groups)
    assert stop - first == demo.kernel.shape[0] == demo.channel_sums.size
    assert abs(demo.channel_sums.sum() - demo.products_sum) <= 1e-12
    with torch.no_grad():
        output = module(torch.from_numpy(demo.input[None])).numpy()
    assert abs(demo.output - output[(0, demo.output_channel, *demo.position)]) <= TOLERANCE


def test_torch_dense_demo_numbers(torch_file):
    layers, loaded = torch_file
    demo = explain_layer(loaded.layer("fc"), demo=True, output_channel=4).demo
    assert isinstance(demo, DenseDemo)
    weights = layers["fc"].weight.detach().numpy()[4]
    np.testing.assert_array_equal(demo.weights, weights)
    np.testing.assert_allclose(demo.products, weights.astype(np.float64) * demo.input, rtol=0)
    assert demo.products_from(8) == pytest.approx(demo.products[8:].sum())
    assert demo.products_sum == pytest.approx(demo.products.sum())
    with torch.no_grad():
        value = layers["fc"](torch.from_numpy(demo.input[None])).numpy()[0, 4]
    assert abs(demo.output - value) <= TOLERANCE


def test_torch_batch_norm_geometry_is_the_module_at_inference(torch_file):
    layers, loaded = torch_file
    module = layers["bn"]
    found = explain_layer(loaded.layer("bn"))
    b = found.geometry
    assert isinstance(b, BatchNormGeometry)
    assert (b.channels, b.epsilon, b.epsilon_given) == (5, module.eps, True)
    assert b.learned == ("gamma", "beta")
    assert b.learned_weights == 10 == sum(p.numel() for p in module.parameters())
    assert b.statistics == 10 == module.running_mean.numel() + module.running_var.numel()
    x = np.random.default_rng(3).normal(size=(1, 5, 2, 2)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    folded = b.scale[None, :, None, None] * x + b.shift[None, :, None, None]
    np.testing.assert_allclose(folded, expected, atol=TOLERANCE)


@pytest.fixture(scope="module")
def torch_other_file(tmp_path_factory):
    torch.manual_seed(0)
    layers = nn.ModuleDict(
        {
            "ln": nn.LayerNorm(8),
            "ln_scale_only": nn.LayerNorm((2, 4), bias=False),
            "emb": nn.Embedding(30, 4),
            "lstm": nn.LSTM(3, 4),
        }
    )
    path = tmp_path_factory.mktemp("torch") / "other.pt"
    torch.save(layers, path)
    with weightscope.load(path) as loaded:
        yield layers, loaded


def test_torch_geometry_of_layers_without_a_demo(torch_other_file):
    layers, loaded = torch_other_file
    ln = explain_layer(loaded.layer("ln"), demo=True)
    assert isinstance(ln.geometry, LayerNormGeometry) and ln.demo is None
    assert (ln.geometry.normalized_shape, ln.geometry.width, ln.geometry.vectors) == ((8,), 8, 2)
    scale_only = explain_layer(loaded.layer("ln_scale_only")).geometry
    assert isinstance(scale_only, LayerNormGeometry)
    assert (scale_only.normalized_shape, scale_only.width) == ((2, 4), 8)
    assert scale_only.scaled and not scale_only.shifted and scale_only.vectors == 1

    emb = explain_layer(loaded.layer("emb"), demo=True)
    assert isinstance(emb.geometry, EmbeddingGeometry) and emb.demo is None
    assert (emb.geometry.vocab, emb.geometry.width) == (30, 4)
    assert emb.geometry.weights == layers["emb"].weight.numel()

    lstm = explain_layer(loaded.layer("lstm"), demo=True)
    assert isinstance(lstm.geometry, RecurrentGeometry) and lstm.demo is None
    assert lstm.geometry.weights == sum(p.numel() for p in layers["lstm"].parameters())
    assert (lstm.geometry.gates, lstm.geometry.units, lstm.geometry.inputs) == ("ifgo", 4, 3)
    assert lstm.geometry.biases == ("bias", "recurrent_bias")


def test_analysis_module_formats_nothing():
    """The arithmetic imports no reporter, command line or format reader, and no drawing or
    terminal library."""
    import ast

    from weightscope.analysis import explain as module

    tree = ast.parse(Path(module.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}  # fmt: skip
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    forbidden = ("weightscope.reporters", "weightscope.cli", "weightscope.formats", "rich",
                 "matplotlib")  # fmt: skip
    assert not [name for name in imported if name.startswith(forbidden)], imported
