"""`weightscope init`: initializer formulas checked against the frameworks' own samples, fresh
models judged ``at_init``, trained ones ``trained``, the best fit, the command line and the
figure."""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pytest
from cli_runner import run_cli

import weightscope
from weightscope import initializers as inits
from weightscope.analysis.init import (
    MIN_WEIGHTS,
    analyze,
    analyze_model,
    ks_critical,
    ks_distance,
)
from weightscope.formats.keras import initializers as keras_inits
from weightscope.reporters.init import plot_init

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

EXAMPLE = weightscope.example_path()
JSON_KEYS = {
    "layer",
    "initializer",
    "declared",
    "fan_in",
    "fan_out",
    "bound",
    "std",
    "fraction_outside",
    "std_ratio",
    "best_fit",
    "ks",
    "verdict",
    "evidence",
    "n",
}


def _keras():
    return pytest.importorskip("keras")


def _torch():
    return pytest.importorskip("torch")


def _by_name(model: weightscope.Model) -> dict[str, dict]:
    return {r.layer: r.to_dict() for r in analyze_model(model)}


# ---------------------------------------------------------------------------------------------
# formulas


def test_normal_cdf_and_truncation_constant():
    x = np.linspace(-7, 7, 2001)
    exact = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    assert np.abs(inits.normal_cdf(x) - exact).max() < 1e-7
    truncated = inits.Initializer("t", inits.TRUNCATED_NORMAL, scale=1.0)
    assert truncated.std == pytest.approx(inits.TRUNCATION_STD, abs=1e-12)
    assert truncated.cdf(np.array([-2.0, 0.0, 2.0])) == pytest.approx([0.0, 0.5, 1.0])


# Keras' own formulas (fact sheet "Initializers"): bound for uniform, std (after truncation)
KERAS_FORMULAS = {
    "GlorotUniform": ("glorot_uniform", lambda fi, fo: math.sqrt(6 / (fi + fo))),
    "GlorotNormal": ("glorot_normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
    "HeUniform": ("he_uniform", lambda fi, fo: math.sqrt(6 / fi)),
    "HeNormal": ("he_normal", lambda fi, fo: math.sqrt(2 / fi)),
    "LecunUniform": ("lecun_uniform", lambda fi, fo: math.sqrt(3 / fi)),
    "LecunNormal": ("lecun_normal", lambda fi, fo: math.sqrt(1 / fi)),
}


@pytest.mark.parametrize("shape", [(3, 3, 40, 96), (300, 120)], ids=["conv-HWIO", "dense-IO"])
@pytest.mark.parametrize("class_name", list(KERAS_FORMULAS))
def test_keras_initializers_match_keras_samples(class_name, shape):
    keras = _keras()
    from keras.src.initializers.random_initializers import compute_fans

    values = np.asarray(getattr(keras.initializers, class_name)(seed=7)(shape)).ravel()
    fan_in, fan_out = inits.keras_fans(shape)
    assert (fan_in, fan_out) == compute_fans(shape)
    init = keras_inits.from_keras({"class_name": class_name, "config": {"seed": 7}}, shape)
    name, formula = KERAS_FORMULAS[class_name]
    assert init.name == name
    expected = formula(fan_in, fan_out)
    biggest = np.abs(values).max()
    if class_name.endswith("Uniform"):
        assert init.distribution == inits.UNIFORM
        assert init.bound == pytest.approx(expected, rel=1e-12)
        assert expected * 0.999 < biggest <= expected * (1 + 1e-6)
    else:  # Keras 3 "normal" initializers are truncated at 2 sigma of sqrt(s)/0.8796
        assert init.distribution == inits.TRUNCATED_NORMAL
        assert init.std == pytest.approx(expected, rel=1e-9)
        cut = 2 * expected / inits.TRUNCATION_STD
        assert init.bound == pytest.approx(cut, rel=1e-9)
        assert cut * 0.99 < biggest <= cut * (1 + 1e-6)
    assert values.std() == pytest.approx(init.std, rel=0.02)
    assert ks_distance(np.sort(values.astype(np.float64)), init) < ks_critical(values.size)


def test_keras_untruncated_normal_is_not_cut():
    keras = _keras()
    shape = (200, 150)
    values = np.asarray(
        keras.initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=3)(shape)
    ).ravel()
    init = keras_inits.from_keras(
        {"class_name": "VarianceScaling", "config": {"scale": 2.0, "mode": "fan_in",
                                                     "distribution": "untruncated_normal"}},
        shape,
    )  # fmt: skip
    assert init.name == "he_normal_untruncated" and init.distribution == inits.NORMAL
    assert np.abs(values).max() > 3 * init.std  # a plain normal reaches past 3 sigma
    assert ks_distance(np.sort(values.astype(np.float64)), init) < ks_critical(values.size)


def _torch_layers():
    nn = _torch().nn
    return {
        "Conv2d-groups4": nn.Conv2d(64, 128, 3, groups=4),
        "Conv1d": nn.Conv1d(32, 64, 5),
        "ConvTranspose2d-groups2": nn.ConvTranspose2d(64, 32, 4, groups=2),
        "Linear": nn.Linear(512, 256),
    }


@pytest.mark.parametrize("which", ["Conv2d-groups4", "Conv1d", "ConvTranspose2d-groups2", "Linear"])
def test_pytorch_default_matches_torch_samples(which):
    torch = _torch()
    torch.manual_seed(0)
    weight = _torch_layers()[which].weight
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(weight)
    values = weight.detach().numpy().ravel()
    assert inits.torch_fans(weight.shape) == (fan_in, fan_out)
    if which == "ConvTranspose2d-groups2":  # stored (in, out/groups, kh, kw): out/groups * k
        assert fan_in == 16 * 4 * 4
    if which == "Conv2d-groups4":  # groups shrink fan_in only
        assert (fan_in, fan_out) == (16 * 9, 128 * 9)
    init = inits.pytorch_default(fan_in)
    assert init.bound == pytest.approx(1 / math.sqrt(fan_in), rel=1e-12)
    assert init.bound * 0.999 < np.abs(values).max() <= init.bound * (1 + 1e-6)
    assert values.std() == pytest.approx(init.bound / math.sqrt(3), rel=0.02)
    assert ks_distance(np.sort(values.astype(np.float64)), init) < ks_critical(values.size)


# ---------------------------------------------------------------------------------------------
# untrained models are at_init


def _keras_untrained(K):
    layers = K.layers
    return K.Sequential(
        [
            K.Input((12, 12, 16)),
            layers.Conv2D(32, 3, name="conv"),
            layers.DepthwiseConv2D(3, depth_multiplier=4, name="dw"),
            layers.Conv2DTranspose(24, 3, name="up"),
            layers.Flatten(name="flatten"),
            layers.Dense(48, name="fc"),
        ]
    )


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    keras = _keras()
    keras.utils.set_random_seed(1)
    folder = tmp_path_factory.mktemp("keras")
    model = _keras_untrained(keras)
    paths = [folder / "fresh.keras", folder / "fresh.h5"]
    for path in paths:
        model.save(path)
    return paths


def test_untrained_keras_model_is_at_init(keras_files):
    for path in keras_files:
        with weightscope.load(path) as model:
            reports = _by_name(model)
        assert set(reports) == {"conv", "dw", "up", "fc"}, path
        for name, report in reports.items():
            assert report["verdict"] == "at_init", (path.name, name, report["evidence"])
            assert report["initializer"] == "glorot_uniform" and report["declared"]
            assert report["fraction_outside"] == 0
        # Keras' fans on the stored shape: depthwise (3,3,32,4) -> in*9, transposed (3,3,24,128)
        assert (reports["dw"]["fan_in"], reports["dw"]["fan_out"]) == (32 * 9, 4 * 9)
        assert (reports["up"]["fan_in"], reports["up"]["fan_out"]) == (24 * 9, 128 * 9)


def test_untrained_tf_keras_h5_is_at_init(tmp_path):
    tf_keras = pytest.importorskip("tf_keras")
    tf_keras.utils.set_random_seed(2)
    path = tmp_path / "fresh_tf_keras.h5"
    _keras_untrained(tf_keras).save(path)
    with weightscope.load(path) as model:
        reports = _by_name(model)
    assert set(reports) == {"conv", "dw", "up", "fc"}
    for name, report in reports.items():
        assert report["verdict"] == "at_init", (name, report["evidence"])


DECLARED = {  # layer: (initializer as declared, name weightscope gives it)
    "c_he_normal": ("he_normal", "he_normal"),
    "c_lecun_uniform": ("LecunUniform", "lecun_uniform"),
    "dw_he_uniform": ("he_uniform", "he_uniform"),
    "up_glorot_normal": ("GlorotNormal", "glorot_normal"),
    "fc_lecun_normal": ("lecun_normal", "lecun_normal"),
}


@pytest.fixture(scope="module")
def keras_declared(tmp_path_factory):
    keras = _keras()
    keras.utils.set_random_seed(3)
    layers, init = keras.layers, keras.initializers
    model = keras.Sequential(
        [
            keras.Input((10, 10, 32)),
            layers.Conv2D(96, 3, kernel_initializer="he_normal", name="c_he_normal"),
            layers.Conv2D(64, 1, kernel_initializer=init.LecunUniform(), name="c_lecun_uniform"),
            layers.DepthwiseConv2D(3, 8, depthwise_initializer="he_uniform", name="dw_he_uniform"),
            layers.Conv2DTranspose(
                48, 3, kernel_initializer=init.GlorotNormal(), name="up_glorot_normal"
            ),
            layers.Conv2D(32, 3, kernel_initializer=init.RandomNormal(0.0, 0.02), name="c_rn"),
            layers.Conv2D(32, 1, kernel_initializer=init.TruncatedNormal(0.0, 0.1), name="c_tn"),
            layers.Conv2D(32, 1, kernel_initializer=init.RandomUniform(-0.1, 0.3), name="c_ru"),
            layers.Conv2D(16, 1, kernel_initializer=init.Orthogonal(gain=2.0), name="c_orth"),
            layers.Conv2D(16, 1, kernel_initializer="zeros", name="c_zeros"),
            layers.Flatten(),
            layers.Dense(64, kernel_initializer="lecun_normal", name="fc_lecun_normal"),
        ]
    )
    folder = tmp_path_factory.mktemp("declared")
    model.save(folder / "declared.keras")
    model.save_weights(folder / "declared.weights.h5")  # no config: initializers unknown
    return folder / "declared.keras"


def test_declared_keras_initializers_are_read_and_best_fit(keras_declared):
    with weightscope.load(keras_declared) as model:
        reports = _by_name(model)
    for name, report in reports.items():
        assert report["verdict"] == "at_init", (name, report["evidence"])
        assert report["declared"] is True
    for layer, (_, expected) in DECLARED.items():
        assert reports[layer]["initializer"] == expected
        assert reports[layer]["best_fit"] == expected, (layer, reports[layer]["ks"])
    # the depthwise he_uniform bound is Keras' sqrt(6 / (in * k * k)) on the stored (3,3,in,M)
    assert reports["dw_he_uniform"]["fan_in"] == 64 * 9
    assert reports["dw_he_uniform"]["bound"] == pytest.approx(math.sqrt(6 / (64 * 9)))
    # the transposed kernel (3,3,48,in): Keras' fan_in is filters * k * k
    assert reports["up_glorot_normal"]["fan_in"] == 48 * 9
    assert reports["c_rn"]["initializer"] == "random_normal(0, 0.02)"
    assert reports["c_rn"]["std"] == pytest.approx(0.02) and reports["c_rn"]["bound"] is None
    assert reports["c_tn"]["std"] == pytest.approx(0.1 * inits.TRUNCATION_STD)
    assert reports["c_tn"]["bound"] == pytest.approx(0.2)
    assert reports["c_ru"]["bound"] == pytest.approx(0.2)  # half-width around 0.1
    assert reports["c_orth"]["initializer"] == "orthogonal(gain=2)"
    assert reports["c_zeros"]["initializer"] == "zeros"
    assert reports["c_zeros"]["evidence"].startswith("all ")


def test_weights_only_keras_file_judges_by_the_default_and_names_the_fit(keras_declared):
    with weightscope.load(keras_declared.with_name("declared.weights.h5")) as model:
        reports = _by_name(model)
    for layer, (_, expected) in DECLARED.items():
        report = reports[layer]
        assert report["initializer"] == "glorot_uniform" and not report["declared"]
        assert report["best_fit"] == expected
        # the default decides (the best fit never does), but the evidence names the fit
        assert report["verdict"] == "trained", (layer, report["evidence"])
        assert "differs from default glorot_uniform" in report["evidence"]
        assert f"{expected} would fit" in report["evidence"]


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory):
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 64, 3, groups=4)
            self.up = nn.ConvTranspose2d(64, 32, 4, stride=2, groups=2)
            self.fc = nn.Linear(32 * 14 * 14, 32)

        def forward(self, x):
            return self.fc(self.up(self.conv(x)).flatten(1))

    net = Net().eval()
    folder = tmp_path_factory.mktemp("torch")
    torch.save(net.state_dict(), folder / "fresh.pt")
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated; still used
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.randn(1, 16, 8, 8),), folder / "fresh.onnx", dynamo=False)
    fans = {
        name: torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
        for name, module in (("conv", net.conv), ("up", net.up), ("fc", net.fc))
    }
    return folder / "fresh.pt", folder / "fresh.onnx", fans


def test_untrained_torch_state_dict_and_onnx_are_at_init(torch_files):
    state_dict, onnx_file, fans = torch_files
    for path in (state_dict, onnx_file):
        with weightscope.load(path) as model:
            reports = analyze_model(model)
        assert len(reports) == 3, path
        for report in reports:
            short = report.layer.strip("/").split("/")[0]  # ONNX names the node /conv/Conv
            data = report.to_dict()
            assert data["verdict"] == "at_init", (path.name, report.layer, report.evidence)
            assert data["initializer"] == "kaiming_uniform(a=sqrt(5))" and not data["declared"]
            assert (data["fan_in"], data["fan_out"]) == fans[short], (path.name, short)
            assert data["bound"] == pytest.approx(1 / math.sqrt(fans[short][0]))
            assert data["best_fit"] == "kaiming_uniform(a=sqrt(5))"


def test_onnx_without_a_known_producer_has_no_default(torch_files):
    onnx = pytest.importorskip("onnx")
    _, onnx_file, _ = torch_files
    proto = onnx.load(onnx_file)
    proto.producer_name, proto.producer_version = "some-converter", "1.0"
    with weightscope.load(proto) as model:
        layer = next(x for x in model.layers if x.kind == "dense")
        assert layer.producer == "some-converter 1.0"
        report = analyze(layer)  # not written by PyTorch: no known default
    assert report is not None
    data = report.to_dict()
    assert data["initializer"] is None and data["bound"] is None
    assert data["best_fit"] == "kaiming_uniform(a=sqrt(5))"
    assert data["verdict"] == "unknown"  # the best fit never decides
    assert data["evidence"].startswith("no known default initializer; kaiming_uniform")
    assert "fits" in data["evidence"]


# ---------------------------------------------------------------------------------------------
# trained models are trained


def test_bundled_example_is_trained():
    with weightscope.load(EXAMPLE) as model:
        reports = {r.layer: r for r in analyze_model(model)}
    assert set(reports) == {"conv1", "dwconv2", "pwconv2", "logits"}  # bn1: no kernel
    assert reports["conv1"].n == 72 >= MIN_WEIGHTS
    for report in reports.values():
        assert report.verdict == "trained", (report.layer, report.evidence)
        assert report.std_ratio is not None and report.std_ratio > 1.3
    logits = reports["logits"]
    assert logits.ks is not None and logits.ks_critical is not None
    assert logits.ks > 5 * logits.ks_critical


def test_trained_torch_model_is_trained(tmp_path):
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                        nn.Linear(64, 4))  # fmt: skip
    x = torch.randn(256, 16)
    y = (x @ torch.randn(16, 4)).argmax(1)  # a synthetic 4-class task
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: threads only contend
    try:
        for _ in range(200):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(x), y)
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    assert loss.item() < 0.05
    torch.save(net.state_dict(), tmp_path / "trained.pt")
    with weightscope.load(tmp_path / "trained.pt") as model:
        reports = analyze_model(model)
    assert len(reports) == 3
    for report in reports:
        assert report.verdict == "trained", (report.layer, report.evidence)


def test_too_few_weights_is_unknown(tmp_path):
    torch = _torch()
    torch.save(torch.nn.Linear(6, 5).state_dict(), tmp_path / "tiny.pt")
    with weightscope.load(tmp_path / "tiny.pt") as model:
        (report,) = analyze_model(model)
    assert report.n == 30 and report.verdict == "unknown"


# ---------------------------------------------------------------------------------------------
# command line and figure


def test_cli_table():
    result = run_cli("init", "--example")
    assert result.returncode == 0, result.stderr
    for word in ("conv1", "dwconv2", "pwconv2", "logits", "glorot_uniform", "trained"):
        assert word in result.stdout
    logits = next(line for line in result.stdout.splitlines() if line.startswith("logits "))
    assert " ±1.50e-1 │" in logits  # the glorot_uniform bound sqrt(6 / 266), in the table
    assert "bn1" not in result.stdout.split("outside:")[0]


def test_cli_json_keys_and_layer():
    result = run_cli("init", "--example", "--json", "--layer", "logits")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)  # nothing else on stdout
    assert list(data) == ["layers"] and len(data["layers"]) == 1
    (logits,) = data["layers"]
    assert set(logits) == JSON_KEYS
    assert set(logits["ks"]) == {"initializer", "best_fit", "critical"}
    assert logits["layer"] == "logits" and logits["verdict"] == "trained"
    assert (logits["fan_in"], logits["fan_out"], logits["n"]) == (256, 10, 2560)
    assert logits["bound"] == pytest.approx(math.sqrt(6 / 266)) and logits["std"] is None


def test_cli_writes_png(tmp_path):
    one, grid = tmp_path / "logits.png", tmp_path / "all.png"
    result = run_cli("init", "--example", "--layer", "logits", "-o", one, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layers"][0]["layer"] == "logits"
    assert one.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cli("init", "--example", "-o", grid).returncode == 0
    assert grid.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("layer", ["nope", "bn1"])
def test_cli_bad_layer_exits_2_with_one_line(layer):
    result = run_cli("init", "--example", "--layer", layer)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightscope: ") and layer in lines[0]


def _bars(ax) -> tuple[np.ndarray, np.ndarray]:
    """Heights and edges of the histogram drawn on ``ax`` (one filled StepPatch)."""
    (patch,) = ax.patches
    values, edges, _ = patch.get_data()
    return np.asarray(values), np.asarray(edges)


def test_figure_shows_histogram_density_and_bound_lines():
    from matplotlib.figure import Figure

    with weightscope.load(EXAMPLE) as model:
        layer = model.layer("logits")
        report = analyze(layer)
        figure = layer.plot_init()  # Layer.plot_init delegates to reporters.init.plot_init
        given = Figure()
        assert plot_init(layer, ax=given.subplots(), bins=20) is given  # draws on the given axes
        assert len(_bars(given.axes[0])[0]) == 20
    assert report is not None and report.bound is not None
    assert isinstance(figure, Figure)
    (ax,) = figure.axes
    bars, edges = _bars(ax)
    heights = list(bars * np.diff(edges))
    assert len(heights) > 10 and sum(heights) == pytest.approx(1.0)  # a density histogram
    vertical = {
        round(float(line.get_xdata()[0]), 9)
        for line in ax.get_lines()
        if len(set(map(float, line.get_xdata()))) == 1
    }
    assert vertical == {round(-report.bound, 9), round(report.bound, 9)}
    labels = [line.get_label() for line in ax.get_lines()]
    assert "glorot_uniform density" in labels
    title = ax.get_title()
    for word in ("logits", "glorot_uniform", "trained", "std ratio 2.38", "outside 45.7%"):
        assert word in title


# ---------------------------------------------------------------------------------------------
# the figure, rendered and measured


def _rendered(figure):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure).draw()
    return figure.canvas.get_renderer()


def _smoothed_top(heights: np.ndarray, width: int = 5) -> float:
    """The height of the histogram's tallest region: the largest mean of ``width`` neighbouring
    bars (one tall bar of a noisy histogram is not its height)."""
    return float(np.convolve(heights, np.ones(width) / width, mode="valid").max())


def test_the_fitted_curve_stands_on_the_histograms_scale_and_the_legend_beside_it():
    """logits of the example: no initializer fits it (glorot_uniform, the closest he_normal at
    KS 0.24), so the dotted curve is the normal of its own mean and std, whose peak meets the
    histogram's; the legend stands beside the axes, clear of the bars."""
    with weightscope.load(EXAMPLE) as model:
        figure = model.layer("logits").plot_init()
    renderer = _rendered(figure)
    (ax,) = figure.axes
    heights = _bars(ax)[0]
    (fit,) = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert "normal" in fit.get_label() and "closest he_normal" in fit.get_label()
    ratio = float(np.max(fit.get_ydata())) / _smoothed_top(heights)
    assert 0.8 <= ratio <= 1.25, ratio
    legend = ax.get_legend().get_window_extent(renderer)
    assert not legend.overlaps(ax.get_window_extent(renderer))
    (bars,) = ax.patches  # the histogram, one filled outline
    assert not legend.overlaps(bars.get_window_extent(renderer))
    assert legend.x1 <= figure.bbox.x1 + 1 and legend.y0 >= -1  # not cut by the figure's edge
    top = ax.get_ylim()[1]
    assert heights.max() <= top <= 2.2 * heights.max()


def test_a_best_fit_that_fits_is_drawn_and_a_far_taller_curve_is_cut(tmp_path):
    """A fresh Keras-style he_normal kernel: its best fit fits and stands on the data's scale; a
    far narrower initializer is cut at the top of the frame and its peak given in the legend."""
    torch = _torch()
    generator = torch.Generator().manual_seed(0)
    wide = torch.empty(256, 512).uniform_(-1, 1, generator=generator) * 0.44  # 10x the default
    fresh = torch.randn(64, 512, generator=generator) * math.sqrt(2 / 512)  # he normal
    torch.save({"wide.weight": wide, "fresh.weight": fresh}, tmp_path / "m.pt")
    with weightscope.load(tmp_path / "m.pt") as model:
        spread = model.layer("wide").plot_init()
        normal = model.layer("fresh").plot_init()
        fresh_report = analyze(model.layer("fresh"))
    _rendered(spread)
    (ax,) = spread.axes
    heights = _bars(ax)[0]
    top = ax.get_ylim()[1]
    assert top <= 2.2 * heights.max()
    (init,) = [line for line in ax.get_lines() if "density" in line.get_label()]
    assert float(np.max(init.get_ydata())) > 4 * top  # 10x the data's height: cut ...
    assert "(peak 11.3, cut)" in init.get_label()  # ... and said so: sqrt(512) / 2
    assert fresh_report is not None and fresh_report.best_fit_fits
    assert (
        fresh_report.best_fit is not None and fresh_report.best_fit.name == "he_normal_untruncated"
    )
    _rendered(normal)
    (ax,) = normal.axes
    heights = _bars(ax)[0]
    (fit,) = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert fit.get_label().startswith("best fit: he_normal_untruncated")
    ratio = float(np.max(fit.get_ydata())) / _smoothed_top(heights)
    assert 0.8 <= ratio <= 1.25, ratio


@pytest.mark.parametrize("spread", [1.0, 3.0])
def test_blockwise_ks_distance_equals_the_direct_maximum(spread):
    """ks_distance evaluates the CDF at block ends and only in blocks that can hold the
    maximum; it must give the maximum over every weight, for fresh and for trained weights."""
    rng = np.random.default_rng(0)
    fan = 256
    for values in (
        rng.uniform(-1, 1, 200_000) * math.sqrt(6 / (2 * fan)) * spread,
        rng.standard_normal(300_001) * math.sqrt(2 / fan) * spread,
        rng.laplace(0.01, 0.05, 100_000) * spread,
    ):
        x = np.sort(values)
        n = x.size
        for candidate in [*inits.standard_family(fan, fan), inits.pytorch_default(fan)]:
            gaps = np.arange(1, n + 1) / n - candidate.cdf(x)
            direct = float(max(gaps.max(), 1.0 / n - gaps.min()))
            assert ks_distance(x, candidate) == pytest.approx(direct, abs=1e-12), candidate.name
