"""Health flags (``weightscope.analysis.health``, ``inspect --health``): NaN/Inf, dead,
duplicated and outsized filters and kernels still at their initializer.

Every model is built by its framework, its problems injected through the framework itself
(``torch.no_grad`` edits, Keras ``set_weights``), saved in the framework's own file formats and
read back with :func:`weightscope.load`. Layers with problems are first made to look trained
(weights scaled by 2.5 and shifted), so that the only flags they raise are the injected ones.
Which filter a problem sits in is read from the canonical kernel (``kernel[o]``), computed here
independently of the health checks; problems are placed so that counting along the native
leading axis would give other counts.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from cli_runner import run_cli

import weightscope
from weightscope.analysis.health import (
    DEAD_RELATIVE,
    FLAGS,
    MIN_FILTERS,
    LayerHealth,
    layer_health,
    model_health,
)

torch = pytest.importorskip("torch")
keras = pytest.importorskip("keras")

SCALE, SHIFT = 2.5, 0.01
"""How a layer is made to look trained: far from its initializer, all filters alike."""

NAN, INF = float("nan"), float("inf")


@dataclass(frozen=True)
class Checked:
    """One layer read back: its health and its canonical kernel (None without one)."""

    health: LayerHealth
    native: np.ndarray | None
    canonical: np.ndarray | None

    def norms(self) -> np.ndarray:
        assert self.canonical is not None
        rows = self.canonical.reshape(self.canonical.shape[0], -1).astype(np.float64)
        return np.sqrt(np.square(rows).sum(axis=1))

    def zero_filters(self) -> list[int]:
        return np.flatnonzero(self.norms() == 0).tolist()


@dataclass(frozen=True)
class Expected:
    flags: list[str]
    dead: int | None = 0
    duplicates: int | None = 0
    large: int | None = 0
    nonfinite: int = 0


def _short(name: str) -> str:
    """``/conv/Conv`` (an ONNX node) -> ``conv``; other names as they are."""
    return name.strip("/").split("/")[0]


def _check_file(path: Path) -> dict[str, Checked]:
    with weightscope.load(path) as model:
        checked = {}
        for layer, health in zip(model.layers, model_health(model), strict=True):
            kernel = next((t for t in layer.tensors if t.role == "kernel"), None)
            checked[_short(layer.name)] = Checked(
                health=health,
                native=None if kernel is None else kernel.numpy(),
                canonical=None if kernel is None else kernel.canonical(),
            )
    return checked


def _assert_expected(health: LayerHealth, expected: Expected) -> None:
    assert health.flags == expected.flags, health
    assert health.dead_filters == expected.dead, health
    assert health.duplicate_filters == expected.duplicates, health
    assert health.large_filters == expected.large, health
    assert health.nonfinite == expected.nonfinite, health


def _no_native_filter_is_zero(checked: Checked) -> bool:
    """True when no slice along the native leading axis is all zero: a check made on the
    native axis would find no dead filter where the canonical one finds some."""
    assert checked.native is not None
    rows = checked.native.reshape(checked.native.shape[0], -1)
    return bool((rows != 0).any(axis=1).all())


# ---------------------------------------------------------------------------------------------
# PyTorch: one state dict, one layer per problem


def _look_trained(*modules: Any) -> None:
    with torch.no_grad():
        for module in modules:
            module.weight.mul_(SCALE).add_(SHIFT)


def _torch_state_dict_modules() -> Any:
    nn = torch.nn
    torch.manual_seed(0)
    m = nn.ModuleDict(
        {
            "clean": nn.Conv2d(16, 32, 3),
            "fresh": nn.Conv2d(16, 32, 3),  # 4,608 weights, left at kaiming_uniform
            "dead": nn.Conv2d(16, 32, 3),
            "dup": nn.Conv2d(16, 32, 3),
            "large": nn.Conv2d(16, 32, 3),
            "nonfinite": nn.Conv2d(16, 32, 3),
            "bias_nan": nn.Conv2d(16, 32, 3),
            "zero_dups": nn.Conv2d(16, 32, 3),
            "signed_zero": nn.Conv2d(16, 32, 3),
            "few": nn.Conv2d(8, 3, 3),
            # stored (in, out/groups, kh, kw) = (16, 6, 3, 3); canonical (24, 4, 3, 3)
            "up": nn.ConvTranspose2d(16, 24, 3, groups=4),
            "fc": nn.Linear(64, 48),
        }
    )
    _look_trained(*(module for name, module in m.items() if name != "fresh"))
    with torch.no_grad():
        m["dead"].weight[3].zero_()
        m["dead"].weight[6].mul_(1e-6)  # near zero: dead
        m["dead"].weight[8].mul_(1e-2)  # small, but over DEAD_RELATIVE of the median: alive
        m["dup"].weight[5] = m["dup"].weight[1]
        m["dup"].weight[9] = m["dup"].weight[1]
        m["large"].weight[2].mul_(50.0)
        m["nonfinite"].weight[7, 0, 0, 0] = NAN
        m["nonfinite"].weight[12, 3, 1, 1] = INF
        m["bias_nan"].bias[4] = NAN
        m["zero_dups"].weight[0].zero_()
        m["zero_dups"].weight[4].zero_().neg_()  # -0.0 everywhere
        m["zero_dups"].weight[8].zero_()
        m["signed_zero"].weight[1, 0, 0, 0] = 0.0
        m["signed_zero"].weight[5] = m["signed_zero"].weight[1]
        m["signed_zero"].weight[5, 0, 0, 0] = -0.0
        m["few"].weight[0].zero_()
        m["few"].weight[1].mul_(50.0)  # would be large, but 3 filters give no median to judge
        # canonical filter o of a grouped transposed conv is weight[g*in_g:(g+1)*in_g, j] with
        # g, j = divmod(o, out/groups): canonical 13 is group 2, column 1; 22 is group 3, col. 4
        m["up"].weight[8:12, 1].zero_()
        m["up"].weight[12:16, 4] = m["up"].weight[0:4, 2]  # canonical 22 = canonical 2
        m["fc"].weight[7].zero_()
    return m


TORCH_EXPECTED = {
    "clean": Expected([]),
    "fresh": Expected(["at_init"]),
    "dead": Expected(["dead_filters"], dead=2),
    "dup": Expected(["duplicate_filters"], duplicates=2),
    "large": Expected(["large_norm"], large=1),
    "nonfinite": Expected(["nan_inf"], nonfinite=2),
    "bias_nan": Expected(["nan_inf"], nonfinite=1),
    "zero_dups": Expected(["dead_filters"], dead=3),
    "signed_zero": Expected(["duplicate_filters"], duplicates=1),
    "few": Expected(["dead_filters"], dead=1, large=None),
    "up": Expected(["dead_filters", "duplicate_filters"], dead=1, duplicates=1),
    "fc": Expected(["dead_filters"], dead=1),
}


@pytest.fixture(scope="module")
def torch_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("health_torch") / "problems.pt"
    torch.save(_torch_state_dict_modules().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def torch_checked(torch_file: Path) -> dict[str, Checked]:
    return _check_file(torch_file)


def test_torch_state_dict_has_one_health_per_layer(torch_checked: dict[str, Checked]) -> None:
    assert list(torch_checked) == list(TORCH_EXPECTED)
    for name, checked in torch_checked.items():
        assert checked.health.layer == name
        assert set(checked.health.flags) <= set(FLAGS)


@pytest.mark.parametrize("name", list(TORCH_EXPECTED))
def test_torch_state_dict_counts_and_flags(torch_checked: dict[str, Checked], name: str) -> None:
    _assert_expected(torch_checked[name].health, TORCH_EXPECTED[name])


def test_clean_trained_layer_has_no_flags(torch_checked: dict[str, Checked]) -> None:
    health = torch_checked["clean"].health
    assert health.flags == [] and health.init_verdict == "trained"
    assert health.filters == 32 and health.note is None
    assert health.max_norm_ratio is not None and 1.0 <= health.max_norm_ratio < 1.5


def test_untouched_fresh_layer_is_at_init_and_nothing_else(
    torch_checked: dict[str, Checked],
) -> None:
    checked = torch_checked["fresh"]
    assert checked.canonical is not None and checked.canonical.size == 4608
    assert checked.health.init_verdict == "at_init"
    assert checked.health.flags == ["at_init"]


def test_zero_and_near_zero_filters_are_dead(torch_checked: dict[str, Checked]) -> None:
    checked = torch_checked["dead"]
    norms = checked.norms()
    median = float(np.median(norms[norms > 0]))
    assert checked.zero_filters() == [3]
    below = np.flatnonzero(norms < DEAD_RELATIVE * median).tolist()
    assert below == [3, 6]  # filter 8 (1e-2 of the others) stays over the threshold
    assert norms[8] > DEAD_RELATIVE * median
    assert checked.health.dead_filters == 2 and checked.health.init_verdict == "trained"


def test_copied_filters_are_duplicates_of_the_first(torch_checked: dict[str, Checked]) -> None:
    checked = torch_checked["dup"]
    assert checked.canonical is not None
    kernel = checked.canonical
    assert np.array_equal(kernel[5], kernel[1]) and np.array_equal(kernel[9], kernel[1])
    assert checked.health.duplicate_filters == 2  # filter 1 itself is the original
    assert checked.health.dead_filters == 0


def test_scaled_filter_is_large_and_sets_the_norm_ratio(torch_checked: dict[str, Checked]) -> None:
    checked = torch_checked["large"]
    norms = checked.norms()
    assert int(np.argmax(norms)) == 2
    assert checked.health.large_filters == 1
    assert checked.health.max_norm_ratio == pytest.approx(norms[2] / np.median(norms), rel=1e-9)
    assert checked.health.max_norm_ratio > 40


def test_nonfinite_filters_are_counted_but_not_dead_duplicate_or_large(
    torch_checked: dict[str, Checked],
) -> None:
    checked = torch_checked["nonfinite"]
    assert checked.canonical is not None
    assert np.isnan(checked.canonical[7]).sum() == 1 and np.isinf(checked.canonical[12]).sum() == 1
    assert checked.health.nonfinite == 2 and checked.health.flags == ["nan_inf"]
    assert checked.health.max_norm_ratio is not None and checked.health.max_norm_ratio < 1.5


def test_nan_in_bias_alone_raises_nan_inf(torch_checked: dict[str, Checked]) -> None:
    checked = torch_checked["bias_nan"]
    assert checked.canonical is not None and np.isfinite(checked.canonical).all()
    assert checked.health.nonfinite == 1
    assert checked.health.flags == ["nan_inf"]


def test_all_zero_copies_are_dead_not_duplicates(torch_checked: dict[str, Checked]) -> None:
    checked = torch_checked["zero_dups"]
    assert checked.canonical is not None
    assert checked.zero_filters() == [0, 4, 8]
    assert np.signbit(checked.canonical[4]).all() and not np.signbit(checked.canonical[0]).any()
    assert checked.health.dead_filters == 3
    assert checked.health.duplicate_filters == 0


def test_negative_zero_equals_zero_for_duplicates(torch_checked: dict[str, Checked]) -> None:
    checked = torch_checked["signed_zero"]
    assert checked.canonical is not None
    first, copy = checked.canonical[1].ravel(), checked.canonical[5].ravel()
    assert first[0] == 0 and not np.signbit(first[0]) and np.signbit(copy[0])  # 0.0 vs -0.0
    assert first.tobytes() != copy.tobytes() and np.array_equal(first, copy)
    assert checked.health.duplicate_filters == 1


def test_fewer_than_four_filters_skip_the_norm_comparison(
    torch_checked: dict[str, Checked],
) -> None:
    checked = torch_checked["few"]
    health = checked.health
    assert health.filters == 3 < MIN_FILTERS
    assert checked.norms()[1] > 10 * np.median(checked.norms())  # large, were it judged
    assert health.large_filters is None and health.max_norm_ratio is None
    assert health.note == f"3 filters: too few to compare norms (at least {MIN_FILTERS})"
    assert health.dead_filters == 1 and "large_norm" not in health.flags


def test_grouped_transposed_conv_filters_follow_the_canonical_out_axis(
    torch_checked: dict[str, Checked],
) -> None:
    checked = torch_checked["up"]
    assert checked.native is not None and checked.canonical is not None
    assert checked.native.shape == (16, 6, 3, 3) and checked.canonical.shape == (24, 4, 3, 3)
    assert checked.zero_filters() == [13]
    assert np.array_equal(checked.canonical[22], checked.canonical[2])
    assert _no_native_filter_is_zero(checked)
    assert checked.health.filters == 24
    assert (checked.health.dead_filters, checked.health.duplicate_filters) == (1, 1)


def test_dense_filters_are_output_rows(torch_checked: dict[str, Checked]) -> None:
    checked = torch_checked["fc"]
    assert checked.canonical is not None and checked.canonical.shape == (48, 64)
    assert checked.zero_filters() == [7]
    assert checked.health.filters == 48 and checked.health.dead_filters == 1


FLOAT64_SCALES = {"unit": 1.0, "huge": 1e160, "tiny": 1e-170}
"""Float64 weights whose squares overflow (over 1e154) or vanish (under 1e-162)."""


@pytest.fixture(scope="module")
def float64_checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checked]:
    modules = {}
    for name, scale in FLOAT64_SCALES.items():
        torch.manual_seed(2)  # the same weights at every scale
        conv = torch.nn.Conv2d(16, 32, 3).double()
        _look_trained(conv)
        with torch.no_grad():
            conv.weight[3].zero_()
            conv.weight[5] = conv.weight[1]
            conv.weight[2].mul_(50.0)
            conv.weight.mul_(scale)
        modules[name] = conv
    path = tmp_path_factory.mktemp("health_float64") / "scaled.pt"
    torch.save(torch.nn.ModuleDict(modules).state_dict(), path)
    return _check_file(path)


@pytest.mark.parametrize("name", ["huge", "tiny"])
def test_float64_checks_do_not_depend_on_the_scale_of_the_weights(
    float64_checked: dict[str, Checked], name: str
) -> None:
    unit, scaled = float64_checked["unit"], float64_checked[name]
    assert scaled.native is not None and scaled.native.dtype == np.float64
    assert np.abs(scaled.native).max() == pytest.approx(
        np.abs(unit.native).max() * FLOAT64_SCALES[name], rel=1e-12
    )
    expected = Expected(["dead_filters", "duplicate_filters", "large_norm"], 1, 1, 1)
    _assert_expected(unit.health, expected)
    _assert_expected(scaled.health, expected)
    assert scaled.health.note is None
    assert unit.health.max_norm_ratio is not None and unit.health.max_norm_ratio > 40
    assert scaled.health.max_norm_ratio == pytest.approx(unit.health.max_norm_ratio, rel=1e-9)


def test_kernel_over_max_elements_skips_filter_checks(torch_file: Path) -> None:
    with weightscope.load(torch_file) as model:
        layer = model.layer("large")
        size = layer.tensor("kernel").size
        skipped = layer_health(layer, max_elements=size - 1)
        made = layer_health(layer, max_elements=size)
    assert size == 4608
    assert skipped.filters is None and skipped.dead_filters is None
    assert skipped.duplicate_filters is None and skipped.large_filters is None
    assert skipped.max_norm_ratio is None
    assert skipped.note is not None and "4,608" in skipped.note and "4,607" in skipped.note
    assert skipped.init_verdict == "trained" and skipped.nonfinite == 0
    assert skipped.flags == []  # the outsized filter was not looked at
    assert made.large_filters == 1 and made.flags == ["large_norm"] and made.note is None


def test_nan_inf_is_counted_over_max_elements_too(torch_file: Path) -> None:
    with weightscope.load(torch_file) as model:
        health = layer_health(model.layer("nonfinite"), max_elements=100)
    assert health.filters is None and health.nonfinite == 2
    assert health.flags == ["nan_inf"]


# ---------------------------------------------------------------------------------------------
# ONNX exported by PyTorch


ONNX_EXPECTED = {
    "conv": Expected(["dead_filters", "duplicate_filters", "large_norm"], 1, 1, 1),
    "up": Expected(["dead_filters"], dead=1),
    "fresh": Expected(["at_init"]),
}


@pytest.fixture(scope="module")
def onnx_checked(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Checked]:
    pytest.importorskip("onnx")
    nn = torch.nn
    torch.manual_seed(1)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(16, 32, 3)
            self.up = nn.ConvTranspose2d(32, 24, 3, groups=4)  # stored (32, 6, 3, 3)
            self.fresh = nn.Linear(24, 256)  # 6,144 weights at kaiming_uniform

        def forward(self, x: Any) -> Any:
            return self.fresh(self.up(torch.relu(self.conv(x))).mean((2, 3)))

    net = Net().eval()
    _look_trained(net.conv, net.up)
    with torch.no_grad():
        net.conv.weight[3].zero_()
        net.conv.weight[5] = net.conv.weight[1]
        net.conv.weight[2].mul_(50.0)
        net.up.weight[16:24, 1].zero_()  # canonical 13: group 2, column 1
    path = tmp_path_factory.mktemp("health_onnx") / "problems.onnx"
    with warnings.catch_warnings():  # the TorchScript-based exporter is deprecated; still used
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(1, 16, 8, 8),), path, dynamo=False, opset_version=17)
    return _check_file(path)


@pytest.mark.parametrize("name", list(ONNX_EXPECTED))
def test_onnx_export_counts_and_flags(onnx_checked: dict[str, Checked], name: str) -> None:
    _assert_expected(onnx_checked[name].health, ONNX_EXPECTED[name])


def test_onnx_filters_are_canonical(onnx_checked: dict[str, Checked]) -> None:
    conv, up = onnx_checked["conv"], onnx_checked["up"]
    assert conv.zero_filters() == [3] and int(np.argmax(conv.norms())) == 2
    assert up.canonical is not None and up.canonical.shape == (24, 8, 3, 3)
    assert up.zero_filters() == [13] and _no_native_filter_is_zero(up)
    assert up.health.filters == 24


# ---------------------------------------------------------------------------------------------
# Keras: .keras and .h5


def _edit_keras(layer: Any, index: int, edit: Callable[[np.ndarray], None]) -> None:
    """Change weight ``index`` of a Keras layer in place, through the layer itself."""
    weights = layer.get_weights()
    edit(weights[index])
    layer.set_weights(weights)


def _keras_look_trained(kernel: np.ndarray) -> None:
    kernel *= SCALE
    kernel += SHIFT


def _keras_conv(kernel: np.ndarray) -> None:  # HWIO: filter o is kernel[..., o]
    _keras_look_trained(kernel)
    kernel[..., 3] = 0.0
    kernel[..., 5] = kernel[..., 1]
    kernel[..., 2] *= 50.0


def _keras_depthwise(kernel: np.ndarray) -> None:  # (kh, kw, in, mult): o = c * mult + m
    _keras_look_trained(kernel)
    kernel[:, :, 5, 2] = 0.0  # canonical 17
    kernel[:, :, 9, 1] = kernel[:, :, 1, 0]  # canonical 28 = canonical 3


def _keras_transposed(kernel: np.ndarray) -> None:  # (kh, kw, out, in): filter o is [:, :, o]
    _keras_look_trained(kernel)
    kernel[:, :, 7, :] = 0.0


def _keras_dense(kernel: np.ndarray) -> None:  # (in, out): filter o is column o
    _keras_look_trained(kernel)
    kernel[:, 7] = 0.0
    kernel[:, 11] *= 50.0


def _keras_batch_norm(model: Any) -> None:
    bn = model.get_layer("bn")
    _edit_keras(bn, 0, lambda gamma: gamma.__setitem__(2, NAN))
    _edit_keras(bn, 3, lambda variance: variance.__setitem__(4, INF))


KERAS_EXPECTED = {
    "conv": Expected(["dead_filters", "duplicate_filters", "large_norm"], 1, 1, 1),
    "bn": Expected(["nan_inf"], None, None, None, nonfinite=2),
    "dw": Expected(["dead_filters", "duplicate_filters"], dead=1, duplicates=1),
    "up": Expected(["dead_filters"], dead=1),
    "fresh": Expected(["at_init"]),
    "zeros": Expected(["dead_filters", "at_init"], dead=16, large=None),
    "fc": Expected(["dead_filters", "large_norm"], dead=1, large=1),
}


def _keras_problems(k: ModuleType) -> Any:
    layers = k.layers
    model = k.Sequential(
        [
            k.Input((10, 10, 16)),
            layers.Conv2D(32, 3, name="conv"),  # (3, 3, 16, 32)
            layers.BatchNormalization(name="bn"),
            layers.DepthwiseConv2D(3, depth_multiplier=3, name="dw"),  # (3, 3, 32, 3)
            layers.Conv2DTranspose(24, 3, name="up"),  # (3, 3, 24, 96)
            layers.Conv2D(48, 2, name="fresh"),  # (2, 2, 24, 48): 4,608 at glorot_uniform
            layers.Conv2D(16, 1, kernel_initializer="zeros", name="zeros"),  # (1, 1, 48, 16)
            layers.GlobalAveragePooling2D(name="pool"),
            layers.Dense(20, name="fc"),  # (16, 20)
        ]
    )
    _edit_keras(model.get_layer("conv"), 0, _keras_conv)
    _keras_batch_norm(model)
    _edit_keras(model.get_layer("dw"), 0, _keras_depthwise)
    _edit_keras(model.get_layer("up"), 0, _keras_transposed)
    _edit_keras(model.get_layer("fc"), 0, _keras_dense)
    return model


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    keras.utils.set_random_seed(5)
    folder = tmp_path_factory.mktemp("health_keras")
    model = _keras_problems(keras)
    embedding = keras.Sequential(
        [keras.Input((4,), dtype="int32"), keras.layers.Embedding(50, 8, name="emb")]
    )
    _edit_keras(embedding.get_layer("emb"), 0, lambda table: table.__setitem__((3, 1), NAN))
    paths = {}
    for suffix in ("keras", "h5"):
        paths[suffix] = folder / f"problems.{suffix}"
        model.save(paths[suffix])
        paths[f"embedding.{suffix}"] = folder / f"embedding.{suffix}"
        embedding.save(paths[f"embedding.{suffix}"])
    return paths


@pytest.fixture(scope="module", params=["keras", "h5"])
def keras_checked(
    request: pytest.FixtureRequest, keras_files: dict[str, Path]
) -> dict[str, Checked]:
    return _check_file(keras_files[request.param])


@pytest.mark.parametrize("name", list(KERAS_EXPECTED))
def test_keras_counts_and_flags(keras_checked: dict[str, Checked], name: str) -> None:
    _assert_expected(keras_checked[name].health, KERAS_EXPECTED[name])


def test_keras_hwio_conv_filters_are_the_last_axis(keras_checked: dict[str, Checked]) -> None:
    conv = keras_checked["conv"]
    assert conv.native is not None and conv.canonical is not None
    assert conv.native.shape == (3, 3, 16, 32) and conv.health.filters == 32
    assert conv.zero_filters() == [3] and _no_native_filter_is_zero(conv)
    assert np.array_equal(conv.canonical[5], conv.canonical[1])
    assert int(np.argmax(conv.norms())) == 2
    assert conv.health.init_verdict == "trained"


def test_keras_depthwise_filter_is_channel_times_multiplier_plus_m(
    keras_checked: dict[str, Checked],
) -> None:
    dw = keras_checked["dw"]
    assert dw.native is not None and dw.canonical is not None
    assert dw.native.shape == (3, 3, 32, 3) and dw.canonical.shape == (96, 1, 3, 3)
    assert dw.zero_filters() == [5 * 3 + 2] and _no_native_filter_is_zero(dw)
    assert np.array_equal(dw.canonical[9 * 3 + 1], dw.canonical[1 * 3 + 0])
    assert dw.health.filters == 96


def test_keras_transposed_and_dense_filters_are_their_out_axis(
    keras_checked: dict[str, Checked],
) -> None:
    up, fc = keras_checked["up"], keras_checked["fc"]
    assert up.canonical is not None and up.canonical.shape == (24, 96, 3, 3)
    assert up.zero_filters() == [7] and _no_native_filter_is_zero(up)
    assert fc.native is not None and fc.native.shape == (16, 20)
    assert fc.zero_filters() == [7] and _no_native_filter_is_zero(fc)
    assert int(np.argmax(fc.norms())) == 11
    assert (up.health.filters, fc.health.filters) == (24, 20)


def test_keras_fresh_conv_is_at_init(keras_checked: dict[str, Checked]) -> None:
    fresh = keras_checked["fresh"]
    assert fresh.canonical is not None and fresh.canonical.size == 4608
    assert fresh.health.flags == ["at_init"]


def test_keras_zero_initialized_conv_is_all_dead_and_at_init(
    keras_checked: dict[str, Checked],
) -> None:
    zeros = keras_checked["zeros"]
    assert zeros.canonical is not None and zeros.canonical.shape == (16, 48, 1, 1)
    assert zeros.zero_filters() == list(range(16))
    health = zeros.health
    assert health.filters == 16 and health.dead_filters == 16 and health.duplicate_filters == 0
    assert health.large_filters is None and health.max_norm_ratio is None
    assert health.note == "no finite non-zero filter: norms not compared"  # not "too few"
    assert health.init_verdict == "at_init"


def test_keras_batch_norm_counts_nan_without_filter_checks(
    keras_checked: dict[str, Checked],
) -> None:
    bn = keras_checked["bn"].health
    assert bn.kind == "batch_norm" and bn.nonfinite == 2  # NaN gamma, Inf moving variance
    assert bn.filters is None and bn.max_norm_ratio is None and bn.init_verdict is None
    assert bn.note == "no floating-point kernel (batch_norm): filter checks do not apply"


@pytest.mark.parametrize("suffix", ["keras", "h5"])
def test_keras_embedding_counts_nan_without_filter_checks(
    keras_files: dict[str, Path], suffix: str
) -> None:
    (emb,) = _check_file(keras_files[f"embedding.{suffix}"]).values()
    health = emb.health
    assert health.kind == "embedding" and health.nonfinite == 1
    assert health.flags == ["nan_inf"]
    assert health.filters is None and health.dead_filters is None
    assert health.init_verdict == "trained"  # its table is judged too: a NaN is drawn by none
    assert health.note == (
        "an embedding table has rows (tokens), not filters: filter checks do not apply"
    )


# ---------------------------------------------------------------------------------------------
# command line


def _no_constant(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


def _inspect_json(*args: str | Path) -> dict[str, Any]:
    result = run_cli("inspect", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout, parse_constant=_no_constant)  # no NaN, no Infinity


def test_cli_json_health_is_the_api_health(
    torch_file: Path, torch_checked: dict[str, Checked]
) -> None:
    data = _inspect_json(torch_file, "--health")
    by_name = {entry["name"]: entry["health"] for entry in data["layers"]}
    assert list(by_name) == list(TORCH_EXPECTED)
    for name, health in by_name.items():
        assert health == torch_checked[name].health.to_dict(), name
    assert by_name["dup"]["duplicate_filters"] == 2 and by_name["dup"]["flags"] == [
        "duplicate_filters"
    ]
    assert by_name["few"]["large_filters"] is None


def test_cli_json_health_of_one_layer(torch_file: Path) -> None:
    data = _inspect_json(torch_file, "--health", "--layer", "up")
    (entry,) = data["layers"]
    assert entry["name"] == "up"
    assert entry["health"]["flags"] == ["dead_filters", "duplicate_filters"]
    assert (entry["health"]["filters"], entry["health"]["dead_filters"]) == (24, 1)


def test_cli_json_without_health_has_no_health_key(torch_file: Path) -> None:
    data = _inspect_json(torch_file)
    assert data["layers"] and all("health" not in entry for entry in data["layers"])


def test_cli_table_shows_health_column_and_flags(torch_file: Path) -> None:
    result = run_cli("inspect", torch_file, "--health")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Health" in out
    for text in (
        "nan_inf 2",
        "nan_inf 1",
        "dead_filters 2",
        "dead_filters 3",
        "duplicate_filters 2",
        "large_norm 1",
        "at_init",
        "ok",
    ):
        assert text in out, text


def test_cli_table_without_health_has_no_health_column(torch_file: Path) -> None:
    result = run_cli("inspect", torch_file)
    assert result.returncode == 0, result.stderr
    assert "Health" not in result.stdout
    assert not any(flag in result.stdout for flag in FLAGS)


def test_cli_layer_detail_prints_health_line(torch_file: Path) -> None:
    result = run_cli("inspect", torch_file, "--layer", "up", "--health")
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("Health:")]
    assert line.startswith("Health: dead_filters 1, duplicate_filters 1")
    assert "(24 filters; dead 1, duplicated 1, norm over 10x median 0)" in line
    assert "init verdict: trained" in line
    assert "Health:" not in run_cli("inspect", torch_file, "--layer", "up").stdout


def test_cli_health_line_of_a_small_layer_has_no_large_count_and_the_note(
    torch_file: Path,
) -> None:
    result = run_cli("inspect", torch_file, "--layer", "few", "--health")
    assert result.returncode == 0, result.stderr
    (line,) = [x for x in result.stdout.splitlines() if x.startswith("Health:")]
    assert "(3 filters; dead 1, duplicated 0, norm over 10x median -)" in line
    assert "too few to compare norms" in line
