"""``weightscope compare``: one small model built in Keras, saved as .h5 and .keras, ported to
PyTorch (the port checked against Keras' own output), saved, and exported to ONNX, compares
``identity`` everywhere; deliberately wrong ports name their mistake; heads declared in the
other order still pair by value; batch-norm conventions are a note; the command line's exit
status is 0, 1 or 2."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from cli_runner import run_cli  # noqa: E402

import weightscope  # noqa: E402
from weightscope import cli  # noqa: E402
from weightscope.cli.commands import compare as compare_command  # noqa: E402
from weightscope.comparison import transforms  # noqa: E402
from weightscope.comparison.matching import hungarian  # noqa: E402

nn = torch.nn
pytestmark = pytest.mark.filterwarnings(
    "ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning"
)

LAYERS = ["conv1", "bn", "conv2", "conv3", "dense"]
SIDE, CHANNELS = 6, 4  # the dense layer reads a flattened 6 x 6 x 4 map


# ---------------------------------------------------------------------------------------------
# The models


def keras_model():
    """conv1 -> relu -> bn -> conv2 -> conv3 -> flatten -> dense: conv2 and conv3 share a shape
    (4, 4, 3, 3), so pairing them needs values; every weight and statistic is random (the ONNX
    exporter would merge equal initializers, such as fresh zero biases)."""
    keras.utils.set_random_seed(7)
    layers = keras.layers
    inputs = keras.Input((SIDE, SIDE, 2))
    x = layers.Conv2D(CHANNELS, 3, padding="same", name="conv1")(inputs)
    x = layers.ReLU(name="relu")(x)  # batch norm after a ReLU: ONNX export does not fold it
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Conv2D(CHANNELS, 3, padding="same", name="conv2")(x)
    x = layers.Conv2D(CHANNELS, 3, padding="same", name="conv3")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(5, name="dense")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(7)
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            layer.set_weights([rng.uniform(0.1, 1.0, w.shape).astype("float32") for w in weights])
    return model


class Port(nn.Module):
    """The Keras model in PyTorch. ``nhwc_flatten``: permute to channels-last before flattening
    (the port that keeps the dense kernel as it is); ``drop_conv2``: leave conv2 out."""

    def __init__(self, *, nhwc_flatten: bool = True, drop_conv2: bool = False, **bn: float):
        super().__init__()
        self.nhwc_flatten = nhwc_flatten
        self.conv1 = nn.Conv2d(2, CHANNELS, 3, padding=1)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(CHANNELS, **bn)
        if not drop_conv2:
            self.conv2 = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
        self.conv3 = nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1)
        self.dense = nn.Linear(SIDE * SIDE * CHANNELS, 5)

    def forward(self, x):
        x = self.bn(self.relu(self.conv1(x)))
        if hasattr(self, "conv2"):
            x = self.conv2(x)
        x = self.conv3(x)
        if self.nhwc_flatten:
            x = x.permute(0, 2, 3, 1)
        return self.dense(x.flatten(1))


def hwc_to_chw(w):
    """Dense weight (out, h*w*c) with columns in (h, w, c) order -> (c, h, w) order."""
    out = w.shape[0]
    return w.reshape(out, SIDE, SIDE, CHANNELS).permute(0, 3, 1, 2).reshape(out, -1)


def port(model, edits=None, **options) -> nn.Module:
    """A Port holding the Keras weights (Keras momentum 0.99 is PyTorch's 0.01). ``edits`` maps a
    layer name to a function applied to its PyTorch weight before it is set: the mistakes."""
    options.setdefault("eps", 1e-3)
    options.setdefault("momentum", 0.01)
    net = Port(**options).eval()
    edits = edits or {}
    weights = {layer.name: layer.get_weights() for layer in model.layers if layer.weights}
    with torch.no_grad():
        for name in ("conv1", "conv2", "conv3", "dense"):
            if not hasattr(net, name):
                continue
            kernel, bias = (torch.from_numpy(w) for w in weights[name])
            weight = kernel.T if name == "dense" else kernel.permute(3, 2, 0, 1)
            weight = edits.get(name, lambda w: w)(weight.clone())
            getattr(net, name).weight.copy_(weight)
            getattr(net, name).bias.copy_(bias)
        gamma, beta, mean, variance = (torch.from_numpy(w) for w in weights["bn"])
        net.bn.weight.copy_(gamma)
        net.bn.bias.copy_(beta)
        net.bn.running_mean.copy_(mean)
        net.bn.running_var.copy_(variance)
    return net


def outputs_agree(model, net) -> bool:
    x = np.random.default_rng(0).normal(size=(2, SIDE, SIDE, 2)).astype("float32")
    expected = np.asarray(model(x, training=False))
    with torch.no_grad():
        got = net(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()
    return bool(np.allclose(got, expected, atol=1e-4))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("compare")
    model = keras_model()
    net = port(model)
    assert outputs_agree(model, net)  # a correct port
    paths = {
        "h5": folder / "model.h5",
        "keras": folder / "model.keras",
        "pt": folder / "port.pt",
        "state_dict": folder / "port_state.pt",
        "onnx": folder / "port.onnx",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(paths["h5"])
        model.save(paths["keras"])
        torch.save(net, paths["pt"])
        torch.save(net.state_dict(), paths["state_dict"])
        sample = torch.zeros(1, 2, SIDE, SIDE)
        torch.onnx.export(net, (sample,), paths["onnx"], dynamo=False)
    return {"model": model, "net": net, "folder": folder, **paths}


def by_a(comparison) -> dict:
    return {p.a: p for p in comparison.pairs}


def transforms_by_a(comparison) -> dict[str, str]:
    return {p.a: p.transform for p in comparison.pairs}


def b_names(comparison) -> dict[str, str]:
    return {p.a: p.b for p in comparison.pairs}


# ---------------------------------------------------------------------------------------------
# (1) The same model, in every format: identity everywhere


@pytest.mark.parametrize(
    "a, b",
    [
        ("h5", "keras"),
        ("h5", "pt"),
        ("keras", "pt"),
        ("keras", "state_dict"),
        ("h5", "onnx"),
        ("pt", "onnx"),
        ("onnx", "h5"),
    ],
)
def test_correct_ports_are_identical(files, a, b):
    comparison = weightscope.compare(files[a], files[b])
    assert comparison.verdict == "identical", comparison.to_dict()
    assert comparison.exit_code == 0
    assert len(comparison.pairs) == len(LAYERS)
    assert all(p.transform == "identity" and p.match for p in comparison.pairs)
    assert all(p.max_abs_diff == 0 for p in comparison.pairs)
    assert comparison.unmatched_a == comparison.unmatched_b == []
    if a in ("h5", "keras"):
        assert list(by_a(comparison)) == LAYERS


def test_live_module_against_file(files):
    comparison = weightscope.compare(files["net"], files["h5"])
    assert comparison.verdict == "identical"
    assert comparison.a.startswith("live Port")
    assert b_names(comparison)["conv2"] == "conv2"  # conv2 and conv3 paired by value
    assert by_a(comparison)["conv2"].matched_by == "value"
    assert by_a(comparison)["conv1"].matched_by == "shape"


def test_onnx_leaves_integer_constants_out(files):
    """The exported Reshape/Flatten carries no float weights: nothing unmatched on its side."""
    comparison = weightscope.compare(files["h5"], files["onnx"])
    assert [p.b for p in comparison.pairs] == [
        "/conv1/Conv",
        "/bn/BatchNormalization",
        "/conv2/Conv",
        "/conv3/Conv",
        "/dense/Gemm",
    ]


# ---------------------------------------------------------------------------------------------
# (2) Deliberately wrong ports, each named


WRONG_PORTS = {
    "swap_hw": ("conv1", lambda w: w.transpose(2, 3)),
    "flip_hw": ("conv1", lambda w: w.flip(2, 3)),
    "swap_hw+flip_hw": ("conv3", lambda w: w.transpose(2, 3).flip(2, 3)),
    "swap_io": ("conv2", lambda w: w.transpose(0, 1)),  # the square kernel loaded transposed
    "flatten_hwc_to_chw": ("dense", hwc_to_chw),  # permuted although the model permutes
}


@pytest.mark.parametrize("expected", list(WRONG_PORTS))
def test_wrong_port_names_its_transform(files, tmp_path, expected):
    layer, edit = WRONG_PORTS[expected]
    net = port(files["model"], {layer: edit})
    assert not outputs_agree(files["model"], net)  # really a wrong port
    path = tmp_path / "wrong.pt"
    torch.save(net.state_dict(), path)
    comparison = weightscope.compare(files["h5"], path)
    found = transforms_by_a(comparison)
    assert found == {name: expected if name == layer else "identity" for name in LAYERS}
    assert b_names(comparison) == {"conv1": "conv1", "bn": "bn", "conv2": "conv2",
                                   "conv3": "conv3", "dense": "dense"}  # fmt: skip
    pair = by_a(comparison)[layer]
    assert pair.match and pair.max_abs_diff == 0
    assert comparison.verdict == "transformed"
    assert comparison.exit_code == 1


def test_flatten_direction_is_named_from_a_to_b(files, tmp_path):
    """A Keras kernel (columns h, w, c) against the same weights for an NCHW flatten (c, h, w)
    is flatten_hwc_to_chw; the other way round, flatten_chw_to_hwc. Here the NCHW port is the
    correct one (its outputs equal Keras'), and the note says so."""
    net = port(files["model"], {"dense": hwc_to_chw}, nhwc_flatten=False)
    assert outputs_agree(files["model"], net)
    forward = weightscope.compare(files["keras"], net)
    backward = weightscope.compare(net, files["keras"])
    assert by_a(forward)["dense"].transform == "flatten_hwc_to_chw"
    assert by_a(backward)["dense"].transform == "flatten_chw_to_hwc"
    note = by_a(forward)["dense"].note
    assert "6x6x4 (h x w x c)" in note
    assert "permutes to channels-last before flattening, flatten_hwc_to_chw if not" in note
    assert "flatten_chw_to_hwc if not" in by_a(backward)["dense"].note
    assert forward.exit_code == backward.exit_code == 1


def test_unpermuted_kernel_for_an_nchw_flatten_is_flagged_by_a_note(files):
    """Keras' kernel copied as it is into a model that flattens NCHW: a wrong port (outputs
    differ) whose weights are nevertheless identical. Weights alone cannot show it; the dense
    pair's note says when identical weights are right."""
    net = port(files["model"], nhwc_flatten=False)
    assert not outputs_agree(files["model"], net)
    comparison = weightscope.compare(files["h5"], net)
    dense = by_a(comparison)["dense"]
    assert dense.transform == "identity"
    assert "right only if the PyTorch model permutes to channels-last" in dense.note


def test_conv_transpose_read_as_conv_is_swap_io(tmp_path):
    torch.manual_seed(0)
    transposed = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, bias=False))
    ordinary = nn.Sequential(nn.Conv2d(6, 4, 3, bias=False))
    with torch.no_grad():
        ordinary[0].weight.copy_(transposed[0].weight)  # (in=4, out=6, 3, 3) read as (out, in)
    torch.save(transposed, tmp_path / "transposed.pt")
    torch.save(ordinary, tmp_path / "ordinary.pt")
    comparison = weightscope.compare(tmp_path / "transposed.pt", tmp_path / "ordinary.pt")
    (pair,) = comparison.pairs
    assert pair.kind == "conv_transpose2d/conv2d"
    assert pair.transform == "swap_io" and pair.match
    assert "kinds differ" in pair.note
    assert comparison.exit_code == 1


def test_dropped_layer_is_unmatched_and_its_twin_pairs_by_value(files, tmp_path):
    net = port(files["model"], drop_conv2=True)
    path = tmp_path / "dropped.pt"
    torch.save(net, path)
    comparison = weightscope.compare(files["keras"], path)
    assert [u.name for u in comparison.unmatched_a] == ["conv2"]
    assert comparison.unmatched_a[0].shape == (4, 4, 3, 3)
    assert comparison.unmatched_b == []
    assert b_names(comparison)["conv3"] == "conv3"
    assert all(p.transform == "identity" for p in comparison.pairs)
    assert comparison.verdict == "different" and comparison.exit_code == 1


def test_perturbed_kernel_differs(files, tmp_path):
    def perturb(w):
        w[1, 2, 0, 1] += 1e-3
        return w

    net = port(files["model"], {"conv3": perturb})
    comparison = weightscope.compare(files["h5"], net)
    conv3 = by_a(comparison)["conv3"]
    assert conv3.b == "conv3"
    assert conv3.transform == "none" and not conv3.match
    assert conv3.max_abs_diff == pytest.approx(1e-3, rel=1e-3)
    assert "kernel differs most at index [1, 2, 0, 1]" in conv3.note
    assert {p.a for p in comparison.pairs if p.match} == {"conv1", "bn", "conv2", "dense"}
    assert comparison.verdict == "different" and comparison.exit_code == 1
    # a looser tolerance accepts it
    loose = weightscope.compare(files["h5"], net, atol=1e-2)
    assert loose.verdict == "identical"


# ---------------------------------------------------------------------------------------------
# (3) Heads declared in the other order


def test_heads_in_another_order_pair_by_value(tmp_path):
    keras.utils.set_random_seed(3)
    layers = keras.layers
    inputs = keras.Input((4,))
    trunk = layers.Dense(6, name="trunk")(inputs)
    model = keras.Model(
        inputs, [layers.Dense(3, name="head_a")(trunk), layers.Dense(3, name="head_b")(trunk)]
    )
    model.save(tmp_path / "heads.keras")

    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Linear(4, 6)
            self.head_b = nn.Linear(6, 3)  # declared (and stored) before head_a
            self.head_a = nn.Linear(6, 3)

        def forward(self, x):
            x = self.trunk(x)
            return self.head_a(x), self.head_b(x)

    net = Heads()
    with torch.no_grad():
        for name in ("trunk", "head_a", "head_b"):
            kernel, bias = model.get_layer(name).get_weights()
            getattr(net, name).weight.copy_(torch.from_numpy(kernel.T))
            getattr(net, name).bias.copy_(torch.from_numpy(bias))
    torch.save(net.state_dict(), tmp_path / "heads.pt")
    comparison = weightscope.compare(tmp_path / "heads.keras", tmp_path / "heads.pt")
    assert b_names(comparison) == {"trunk": "trunk", "head_a": "head_a", "head_b": "head_b"}
    assert by_a(comparison)["head_a"].matched_by == "value"
    assert comparison.verdict == "identical" and comparison.exit_code == 0


# ---------------------------------------------------------------------------------------------
# (4) Batch norm: eps and momentum conventions are a note, not a difference


def test_batch_norm_conventions_are_a_note(files):
    same = by_a(weightscope.compare(files["h5"], files["net"]))["bn"]
    assert same.match and same.transform == "identity"
    assert "batch norm eps 0.001 (A) vs 0.001 (B)" in same.note
    assert "momentum 0.99 (A) vs 0.01 (B, PyTorch convention: 0.99 as Keras counts it)" in (
        same.note
    )
    assert "differ" not in same.note

    defaults = port(files["model"], eps=1e-5, momentum=0.1)  # PyTorch's defaults
    comparison = weightscope.compare(files["h5"], defaults)
    bn = by_a(comparison)["bn"]
    assert bn.match and bn.transform == "identity"
    assert "0.001 (A) vs 1e-05 (B): differ" in bn.note
    assert "matters for training only" in bn.note
    assert comparison.verdict == "identical" and comparison.exit_code == 0


def test_batch_norm_without_config_uses_the_framework_defaults(files):
    comparison = weightscope.compare(files["keras"], files["state_dict"])
    note = by_a(comparison)["bn"].note
    assert "eps 0.001 (A) vs not recorded in B (PyTorch default 1e-05);" in note
    assert "differ" not in note  # an assumed default is not compared
    assert comparison.exit_code == 0  # still identical: eps is not a weight


def test_onnx_batch_norm_reads_the_exported_attributes(files):
    bn = by_a(weightscope.compare(files["h5"], files["onnx"]))["bn"]
    assert "eps 0.001 (A) vs 0.001 (B); momentum 0.99 (A) vs 0.99 (B)" in bn.note
    assert "differ" not in bn.note


# ---------------------------------------------------------------------------------------------
# (5) The command line


def test_cli_identical_json(files):
    result = run_cli("compare", files["h5"], files["onnx"], "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # one object, nothing else on stdout
    assert set(data) >= {"pairs", "unmatched_a", "unmatched_b", "verdict", "tolerance"}
    assert data["verdict"] == "identical"
    assert data["tolerance"]["atol"] == 1e-6 and data["tolerance"]["rtol"] == 1e-5
    assert len(data["pairs"]) == len(LAYERS)
    for pair in data["pairs"]:
        assert set(pair) >= {"a", "b", "kind", "transform", "max_abs_diff", "max_rel_diff",
                             "match", "note"}  # fmt: skip
        assert pair["transform"] == "identity" and pair["match"] is True
    assert data["unmatched_a"] == data["unmatched_b"] == []


def test_cli_transform_and_unmatched_exit_1(files, tmp_path):
    net = port(files["model"], {"conv1": WRONG_PORTS["swap_hw"][1]}, drop_conv2=True)
    path = tmp_path / "wrong.pt"
    torch.save(net, path)
    result = run_cli("compare", files["keras"], path)
    assert result.returncode == 1, result.stderr
    assert "swap_hw" in result.stdout
    assert "only in A" in result.stdout
    assert "verdict: different" in result.stdout
    data = json.loads(run_cli("compare", files["keras"], path, "--json").stdout)
    assert data["unmatched_a"] == [{"name": "conv2", "kind": "conv2d", "shape": [4, 4, 3, 3]}]
    assert {p["a"]: p["transform"] for p in data["pairs"]}["conv1"] == "swap_hw"


def test_cli_compares_the_first_file_with_each_of_the_others(files, tmp_path):
    """``compare A B C``: A against B, then A against C; the exit status is the worst."""
    net = port(files["model"], {"conv1": WRONG_PORTS["swap_hw"][1]})
    wrong = tmp_path / "wrong.pt"
    torch.save(net, wrong)
    result = run_cli("compare", files["h5"], files["onnx"], wrong)
    assert result.returncode == 1, result.stderr
    heads = [line for line in result.stdout.splitlines() if line.startswith(("A: ", "B: "))]
    assert [Path(h.split()[1]).name for h in heads] == [
        Path(files["h5"]).name,
        Path(files["onnx"]).name,
        Path(files["h5"]).name,
        wrong.name,
    ]
    assert result.stdout.count("verdict: ") == 2 and "swap_hw" in result.stdout
    data = json.loads(run_cli("compare", files["h5"], files["onnx"], wrong, "--json").stdout)
    assert [d["verdict"] for d in data] == ["identical", "transformed"]
    assert [Path(d["b"]).name for d in data] == [Path(files["onnx"]).name, wrong.name]
    same = run_cli("compare", files["h5"], files["onnx"], files["onnx"])
    assert same.returncode == 0, same.stderr


def test_left_out_summary_names_three_per_reason():
    from weightscope.comparison.engine import left_out_summary

    left = [(f"c{i}", "no floating-point weights") for i in range(5)]
    left.append(("s", "single-element constants only"))
    assert left_out_summary(left) == (
        "6 layers left out, holding no weights to compare: no floating-point weights "
        "(5: c0, c1, c2, +2 more); single-element constants only (1: s)"
    )


def test_cli_unreadable_file_exit_2(files, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model at all\n" * 8)
    result = run_cli("compare", files["h5"], bad)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightscope: ") and "bad.pt" in lines[0]
    missing = run_cli("compare", tmp_path / "missing.h5", files["h5"])
    assert missing.returncode == 2 and "no such file" in missing.stderr


def test_cli_in_process_tolerance_and_help(files, capsys, tmp_path):
    def perturb(w):
        w[0, 0, 0, 0] += 1e-3
        return w

    path = tmp_path / "perturbed.pt"
    torch.save(port(files["model"], {"conv1": perturb}), path)
    assert cli.main(["compare", str(files["h5"]), str(path)]) == 1
    assert "conv1" in capsys.readouterr().out
    assert cli.main(["compare", str(files["h5"]), str(path), "--atol", "0.01", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "identical" and data["tolerance"]["atol"] == 0.01
    with pytest.raises(SystemExit) as stop:
        cli.main(["compare", "a", "b", "--atol", "-1"])
    assert stop.value.code == 2
    with pytest.raises(SystemExit) as stop:
        cli.main(["compare", "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and "flatten_hwc_to_chw" in text and "exit status" in text


def test_cli_example_keras_against_its_pytorch_port():
    result = run_cli("compare", "--example", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["a"].endswith("digits_cnn.h5") and data["b"].endswith("digits_cnn.pt")
    assert data["verdict"] == "identical"
    both = run_cli("compare", "--example", "model.h5")
    assert both.returncode == 2 and "not both" in both.stderr
    one = run_cli("compare", "model.h5")
    assert one.returncode == 2 and "needs two model files" in one.stderr


FORBIDDEN = ("torch", "tensorflow", "keras", "tf_keras", "jax", "onnxruntime")
NO_FRAMEWORK_CHECK = f"""
import sys
from weightscope.cli.app import main
assert main(["compare", sys.argv[1], sys.argv[2], "--json"]) == 0
print("FRAMEWORKS:", sorted(m for m in sys.modules if m.split(".")[0] in {set(FORBIDDEN)!r}))
"""


def test_compare_imports_no_framework(files):
    result = subprocess.run(
        [sys.executable, "-c", NO_FRAMEWORK_CHECK, str(files["keras"]), str(files["onnx"])],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "FRAMEWORKS: []" in result.stdout, result.stdout


def test_defaults_agree():
    assert compare_command.DEFAULT_ATOL == transforms.DEFAULT_ATOL == 1e-6
    assert compare_command.DEFAULT_RTOL == transforms.DEFAULT_RTOL == 1e-5
    assert "compare" in weightscope.__all__


# ---------------------------------------------------------------------------------------------
# The assignment solver


def test_hungarian_against_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, m = (int(x) for x in rng.integers(1, 6, size=2))
        cost = rng.normal(size=(n, m))
        pairs = hungarian(cost)
        assert len(pairs) == min(n, m)
        assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
        got = sum(cost[i, j] for i, j in pairs)
        if n <= m:
            best = min(
                sum(cost[i, p[i]] for i in range(n)) for p in itertools.permutations(range(m), n)
            )
        else:
            best = min(
                sum(cost[p[j], j] for j in range(m)) for p in itertools.permutations(range(n), m)
            )
        assert got == pytest.approx(best)
