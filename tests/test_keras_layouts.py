"""Keras kernels, read back by weightscope, reproduce the framework's own layer outputs.

For every layer case, in Keras 3 and in Keras 2 (tf_keras), a one-layer model gets random
weights, computes its output on a random input, and is saved in each file format the framework
writes. weightscope must then report the stored tensors exactly, with the right kind, roles and
trainable flags, and its canonical tensors must reproduce the output through ``reference``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("torch")

import reference as ref  # noqa: E402  (needs torch)
from framework_cache import build_cached  # noqa: E402

import weightscope  # noqa: E402

ATOL = RTOL = 1e-5
BATCH = 2

# ---------------------------------------------------------------------------------------------
# layer cases

Reference = Callable[[np.ndarray, dict[str, np.ndarray], int], np.ndarray]
"""(input channels-first, canonical tensors by role, groups) -> output channels-first."""


def _conv(**geometry: Any) -> Reference:
    def compute(x: np.ndarray, t: dict[str, np.ndarray], groups: int) -> np.ndarray:
        return ref.conv(x, t["kernel"], t.get("bias"), groups=groups, **geometry)

    return compute


def _conv_transpose(**geometry: Any) -> Reference:
    def compute(x: np.ndarray, t: dict[str, np.ndarray], groups: int) -> np.ndarray:
        return ref.conv_transpose(x, t["kernel"], t.get("bias"), groups=groups, **geometry)

    return compute


def _separable(**geometry: Any) -> Reference:
    def compute(x: np.ndarray, t: dict[str, np.ndarray], groups: int) -> np.ndarray:
        return ref.separable_conv(
            x, t["depthwise_kernel"], t["pointwise_kernel"], t.get("bias"), **geometry
        )

    return compute


def _dense(x: np.ndarray, t: dict[str, np.ndarray], groups: int) -> np.ndarray:
    return ref.dense(x, t["kernel"], t.get("bias"))


def _batch_norm(epsilon: float) -> Reference:
    def compute(x: np.ndarray, t: dict[str, np.ndarray], groups: int) -> np.ndarray:
        return ref.batch_norm(
            x,
            t["moving_mean"],
            t["moving_variance"],
            t.get("gamma"),
            t.get("beta"),
            epsilon=epsilon,
        )

    return compute


@dataclass(frozen=True)
class Case:
    id: str
    class_name: str
    kwargs: dict[str, Any]
    input_shape: tuple[int, ...]
    """Channels-last, without the batch axis."""
    kind: str
    groups: int | None
    """The layer's groups (depthwise: input channels); None where not asserted."""
    reference: Reference = field(repr=False)


CASES = [
    Case(
        "conv1d_groups2_dilation2",
        "Conv1D",
        {"filters": 6, "kernel_size": 3, "groups": 2, "dilation_rate": 2},
        (12, 4),
        "conv1d",
        2,
        _conv(dilation=2),
    ),
    Case(
        "conv2d_groups2_stride2_same",
        "Conv2D",
        {"filters": 6, "kernel_size": (3, 2), "strides": 2, "padding": "same", "groups": 2},
        (8, 7, 4),
        "conv2d",
        2,
        _conv(stride=2, padding="same"),
    ),
    Case(
        "conv2d_dilation2",
        "Conv2D",
        {"filters": 5, "kernel_size": (3, 2), "dilation_rate": 2},
        (9, 8, 3),
        "conv2d",
        1,
        _conv(dilation=2),
    ),
    Case(
        "conv2d_no_bias",
        "Conv2D",
        {"filters": 3, "kernel_size": 3, "use_bias": False},
        (5, 6, 2),
        "conv2d",
        1,
        _conv(),
    ),
    Case(
        "conv3d_groups2",
        "Conv3D",
        {"filters": 4, "kernel_size": (2, 3, 2), "strides": (1, 2, 1), "groups": 2},
        (4, 7, 5, 4),
        "conv3d",
        2,
        _conv(stride=(1, 2, 1)),
    ),
    Case(
        "conv1d_transpose_stride2",
        "Conv1DTranspose",
        {"filters": 3, "kernel_size": 3, "strides": 2},
        (6, 4),
        "conv_transpose1d",
        1,
        _conv_transpose(stride=2),
    ),
    Case(
        "conv2d_transpose_stride2",
        "Conv2DTranspose",
        {"filters": 5, "kernel_size": (3, 2), "strides": 2},
        (4, 5, 3),
        "conv_transpose2d",
        1,
        _conv_transpose(stride=2),
    ),
    Case(
        "conv2d_transpose_stride2_same",
        "Conv2DTranspose",
        {"filters": 4, "kernel_size": (4, 3), "strides": 2, "padding": "same"},
        (3, 4, 2),
        "conv_transpose2d",
        1,
        _conv_transpose(stride=2, padding="same"),
    ),
    Case(
        "conv3d_transpose",
        "Conv3DTranspose",
        {"filters": 2, "kernel_size": (2, 3, 2), "strides": (1, 2, 1)},
        (3, 4, 3, 3),
        "conv_transpose3d",
        1,
        _conv_transpose(stride=(1, 2, 1)),
    ),
    Case(
        "depthwise_conv2d_m3_stride2_same",
        "DepthwiseConv2D",
        {"kernel_size": (3, 2), "depth_multiplier": 3, "strides": 2, "padding": "same"},
        (7, 8, 4),
        "depthwise_conv2d",
        4,
        _conv(stride=2, padding="same"),
    ),
    Case(
        "depthwise_conv1d_m2",
        "DepthwiseConv1D",
        {"kernel_size": 3, "depth_multiplier": 2},
        (9, 3),
        "depthwise_conv1d",
        3,
        _conv(),
    ),
    Case(
        "separable_conv2d_m2",
        "SeparableConv2D",
        {"filters": 5, "kernel_size": (3, 2), "depth_multiplier": 2, "padding": "same"},
        (6, 7, 3),
        "separable_conv2d",
        None,
        _separable(padding="same"),
    ),
    Case(
        "separable_conv1d_m2_stride2",
        "SeparableConv1D",
        {"filters": 4, "kernel_size": 3, "depth_multiplier": 2, "strides": 2},
        (9, 3),
        "separable_conv1d",
        None,
        _separable(stride=2),
    ),
    Case("dense", "Dense", {"units": 5}, (7,), "dense", 1, _dense),
    Case("dense_no_bias", "Dense", {"units": 4, "use_bias": False}, (6,), "dense", 1, _dense),
    Case(
        "batch_norm_eps",
        "BatchNormalization",
        {"epsilon": 0.01},
        (5, 6),
        "batch_norm",
        1,
        _batch_norm(0.01),
    ),
    Case(
        "batch_norm_no_center",
        "BatchNormalization",
        {"epsilon": 0.003, "center": False},
        (4, 3, 5),
        "batch_norm",
        1,
        _batch_norm(0.003),
    ),
]
CASES_BY_ID = {case.id: case for case in CASES}

# ---------------------------------------------------------------------------------------------
# file formats


@dataclass(frozen=True)
class Format:
    id: str
    filename: str
    save: Callable[[Any, Path], None]
    weights_only: bool
    weightscope_format: str
    positional: bool = False
    """Variables are stored by position only (``vars/0``...), not by name."""


FORMATS: dict[str, list[Format]] = {
    "keras3": [
        Format("legacy_h5", "model.h5", lambda m, p: m.save(p), False, "keras-h5"),
        Format("keras_zip", "model.keras", lambda m, p: m.save(p), False, "keras-v3"),
        Format(
            "weights_h5",
            "model.weights.h5",
            lambda m, p: m.save_weights(p),
            True,
            "keras-weights-h5",
            positional=True,
        ),
    ],
    "tf_keras": [
        Format("h5", "model.h5", lambda m, p: m.save(p, save_format="h5"), False, "keras-h5"),
        Format(
            "weights_h5",
            "weights.h5",
            lambda m, p: m.save_weights(p, save_format="h5"),
            True,
            "keras-h5-weights",
        ),
    ],
}


def _framework(name: str) -> ModuleType:
    if name == "keras3":
        return keras
    return pytest.importorskip("tf_keras")


def _ambiguous_roles(case: Case, fmt: Format) -> bool:
    """A BatchNormalization with exactly one of gamma and beta, stored by position without a
    config: the file cannot say which of the two its first vector is."""
    return (
        fmt.positional
        and fmt.weights_only
        and case.kind == "batch_norm"
        and case.kwargs.get("center", True) != case.kwargs.get("scale", True)
    )


def _keras_role(variable_name: str, kind: str) -> str:
    """``conv2d/kernel:0`` (Keras 2) or ``kernel`` (Keras 3) -> ``kernel``; Keras 2 calls a
    DepthwiseConv kernel ``depthwise_kernel``, which weightscope reports as ``kernel``."""
    role = variable_name.rsplit("/", 1)[-1].split(":", 1)[0]
    if kind.startswith("depthwise") and role == "depthwise_kernel":
        return "kernel"
    return role


# ---------------------------------------------------------------------------------------------
# one model per (framework, case), saved once in every format


@dataclass
class Built:
    case: Case
    x: np.ndarray
    """Input, channels-last."""
    y: np.ndarray
    """The framework's own output, channels-last."""
    weights: list[tuple[str, np.ndarray, bool]]
    """(role, value, trainable) of each Keras variable, in the layer's order."""
    files: dict[str, Path]


def _build(framework: str, case: Case, directory: Path) -> Built:
    """The case's model in every format in ``directory``, with its input and output and the
    weights set; built by the framework once, then taken from the tests' cache."""
    if getattr(_framework(framework).layers, case.class_name, None) is None:
        module = _framework(framework)
        pytest.skip(f"{framework} {module.__version__} has no layers.{case.class_name}")

    def save(folder: Path) -> None:
        _save(framework, case, folder)

    build_cached(directory, save, framework, case.id)
    saved = json.loads((directory / "built.json").read_text())
    with np.load(directory / "built.npz", allow_pickle=False) as arrays:
        x, y = arrays["x"], arrays["y"]
        values = [arrays[f"w{i}"] for i in range(len(saved["roles"]))]
    weights = list(zip(saved["roles"], values, saved["trainable"], strict=True))
    files = {fmt.id: directory / fmt.filename for fmt in FORMATS[framework]}
    return Built(case, x, y, weights, files)


def _save(framework: str, case: Case, directory: Path) -> None:
    """Build the model with the framework, set random weights, compute its output, save it in
    every format, and the input, output and weights beside (``built.npz``, ``built.json``)."""
    module = _framework(framework)
    layer = getattr(module.layers, case.class_name)(**case.kwargs)
    inputs = module.Input(shape=case.input_shape)
    model = module.Model(inputs, layer(inputs))

    rng = np.random.default_rng(zlib.crc32(f"{framework}/{case.id}".encode()))
    roles = [_keras_role(v.name, case.kind) for v in layer.weights]
    values = []
    for role, current in zip(roles, layer.get_weights(), strict=True):
        value = rng.standard_normal(current.shape).astype(np.float32)
        if role == "moving_variance":
            value = np.abs(value) + np.float32(0.5)
        values.append(value)
    layer.set_weights(values)
    stored = layer.get_weights()
    for value, got in zip(values, stored, strict=True):
        np.testing.assert_array_equal(got, value)  # the weights really were set

    x = rng.standard_normal((BATCH, *case.input_shape)).astype(np.float32)
    y = np.asarray(model(x, training=False))
    for fmt in FORMATS[framework]:
        fmt.save(model, directory / fmt.filename)
    arrays = {f"w{i}": np.asarray(value) for i, value in enumerate(stored)}
    np.savez(directory / "built.npz", x=x, y=y, **arrays)
    trainable = [bool(variable.trainable) for variable in layer.weights]
    (directory / "built.json").write_text(json.dumps({"roles": roles, "trainable": trainable}))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, str], Built]:
    """``built(framework, case_id)``: the model of one case, built and saved on first use."""
    cache: dict[tuple[str, str], Built] = {}
    root = tmp_path_factory.mktemp("keras_layouts")

    def get(framework: str, case_id: str) -> Built:
        key = (framework, case_id)
        if key not in cache:
            cache[key] = _build(framework, CASES_BY_ID[case_id], root / framework / case_id)
        return cache[key]

    return get


PARAMS = [
    pytest.param(framework, case.id, fmt, id=f"{framework}-{case.id}-{fmt.id}")
    for framework in FORMATS
    for case in CASES
    for fmt in FORMATS[framework]
]


# The ambiguous gamma/beta case has no reproducible output: its roles are checked above instead.
OUTPUT_PARAMS = [
    pytest.param(framework, case.id, fmt, id=f"{framework}-{case.id}-{fmt.id}")
    for framework in FORMATS
    for case in CASES
    for fmt in FORMATS[framework]
    if not _ambiguous_roles(case, fmt)
]


def _only_layer(model: weightscope.Model) -> weightscope.Layer:
    assert len(model.layers) == 1, [layer.name for layer in model.layers]
    return model.layers[0]


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.parametrize(("framework", "case_id", "fmt"), PARAMS)
def test_layer_structure(built: Callable[[str, str], Built], framework, case_id, fmt) -> None:
    item = built(framework, case_id)
    case = item.case
    with weightscope.load(item.files[fmt.id]) as model:
        assert model.framework == "keras"
        assert model.format == fmt.weightscope_format
        layer = _only_layer(model)
        assert layer.kind == case.kind
        assert layer.inferred is fmt.weights_only
        roles = [t.role for t in layer.tensors]
        expected_roles = [role for role, _, _ in item.weights]
        if _ambiguous_roles(case, fmt):
            # guessing is allowed, but the layer must say that gamma and beta are not told apart
            assert roles[1:] == expected_roles[1:]
            assert roles[0] in ("gamma", "beta")
            assert layer.note is not None
            assert "gamma" in layer.note and "beta" in layer.note, layer.note
        else:
            assert roles == expected_roles
        if not fmt.weights_only:
            assert layer.class_name == case.class_name
        if case.groups is not None and (not fmt.weights_only or case.kind.startswith("depth")):
            # a weights-only file does not record a grouped conv's input channels
            assert layer.groups == case.groups
        if case.kind.startswith("separable"):
            depthwise = layer.tensor("depthwise_kernel")
            assert depthwise.groups == case.input_shape[-1]
            assert layer.tensor("pointwise_kernel").groups == 1


@pytest.mark.parametrize(("framework", "case_id", "fmt"), PARAMS)
def test_native_tensors_equal_framework_variables(
    built: Callable[[str, str], Built], framework, case_id, fmt
) -> None:
    item = built(framework, case_id)
    by_position = _ambiguous_roles(item.case, fmt)  # roles checked in test_layer_structure
    with weightscope.load(item.files[fmt.id]) as model:
        layer = _only_layer(model)
        assert len(layer.tensors) == len(item.weights)
        for index, (role, value, trainable) in enumerate(item.weights):
            tensor = layer.tensors[index] if by_position else layer.tensor(role)
            assert tensor.native_shape == value.shape
            assert tensor.dtype == "float32"
            native = tensor.numpy()
            assert native.dtype == value.dtype
            np.testing.assert_array_equal(native, value, err_msg=role)
            if fmt.weights_only and trainable:
                assert tensor.trainable is None, role  # the file cannot say
            else:
                assert tensor.trainable is trainable, role
        counts = model.params
        assert counts.total == sum(value.size for _, value, _ in item.weights)
        non_trainable = sum(value.size for _, value, trainable in item.weights if not trainable)
        assert counts.non_trainable == non_trainable


@pytest.mark.parametrize(("framework", "case_id", "fmt"), OUTPUT_PARAMS)
def test_canonical_tensors_reproduce_framework_output(
    built: Callable[[str, str], Built], framework, case_id, fmt
) -> None:
    item = built(framework, case_id)
    case = item.case
    with weightscope.load(item.files[fmt.id]) as model:
        layer = _only_layer(model)
        canonical = {}
        for tensor in layer.tensors:
            assert tensor.native_layout is not None, tensor.role
            array = tensor.canonical()
            assert array.shape == tensor.canonical_shape, tensor.role
            canonical[tensor.role] = array.astype(np.float64)
        groups = case.groups if fmt.weights_only and case.groups is not None else layer.groups
    expected = ref.channels_last(case.reference(ref.channels_first(item.x), canonical, groups))
    assert expected.shape == item.y.shape
    np.testing.assert_allclose(expected, item.y, atol=ATOL, rtol=RTOL)


def test_every_layer_kind_is_covered() -> None:
    """The cases above exercise every conv, dense and batch-norm kind weightscope knows."""
    covered = {case.kind for case in CASES}
    # Keras has no 3-D depthwise convolution; ONNX's is proven in test_onnx_layouts.py;
    # recurrent kinds are proven in test_keras_recurrent.py
    weight_kinds = set(weightscope.LAYER_KINDS) - {
        "layer_norm",
        "embedding",
        "unknown",
        "depthwise_conv3d",
        *(kind.value for kind in weightscope.Kind if kind.is_recurrent),
    }
    assert weight_kinds <= covered, weight_kinds - covered
