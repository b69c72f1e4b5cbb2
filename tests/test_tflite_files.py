"""``.tflite`` files read without tensorflow, proven against TensorFlow: Keras models with every
layer kind the reader understands are converted float32, float16, dynamic-range int8 and
full-integer int8; weightscope's kinds, shapes, dtypes, quantization parameters and values
equal what ``tf.lite.Interpreter`` reports, and each conv/dense layer's canonical kernel and
bias recompute the layer's output: Keras' (float32, the converter's folded batch norm included)
and the interpreter's integer arithmetic (full-integer int8). Damaged files are refused in one
line."""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import reference
import tflite_builders
from cli_runner import run_cli
from framework_cache import build_cached

import weightscope
from weightscope.kinds import Kind

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

MODES = ("float32", "float16", "dynamic", "int8")
X2D = (1, 8, 8, 3)
X3D = (1, 6, 6, 6, 2)
X1D = (1, 12, 4)


def _model_2d() -> Any:
    inp = keras.Input(X2D[1:], batch_size=1)
    x = keras.layers.Conv2D(4, 3, name="c1")(inp)
    x = keras.layers.Conv2D(6, 3, padding="same", name="c2")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = keras.layers.Conv2DTranspose(5, 3, strides=2, name="tc")(x)
    x = keras.layers.Flatten(name="flat")(x)
    out = keras.layers.Dense(7, name="fc")(x)
    return keras.Model(inp, out)


def _model_3d() -> Any:
    inp = keras.Input(X3D[1:], batch_size=1)
    x = keras.layers.Conv3D(3, 3, name="c3")(inp)
    x = keras.layers.Flatten(name="flat")(x)
    out = keras.layers.Dense(2, name="fc")(x)
    return keras.Model(inp, out)


def _model_1d_grouped_separable() -> Any:
    """A Conv1D (written as a CONV_2D of height 1), a grouped Conv2D and a SeparableConv2D
    (a DEPTHWISE_CONV_2D then a 1x1 CONV_2D)."""
    inp = keras.Input(X1D[1:], batch_size=1)
    x = keras.layers.Conv1D(6, 3, name="k1")(inp)
    x = keras.layers.Reshape((10, 1, 6), name="rs")(x)
    x = keras.layers.Conv2D(4, (3, 1), groups=2, name="grp")(x)
    x = keras.layers.SeparableConv2D(5, (3, 1), depth_multiplier=2, name="sep")(x)
    x = keras.layers.Flatten(name="flat")(x)
    out = keras.layers.Dense(3, name="fc")(x)
    return keras.Model(inp, out)


def _randomize(model: Any, rng: np.random.Generator) -> None:
    """Random weights, nonzero biases (the converter drops zero ones), positive variances."""
    for layer in model.layers:
        values = []
        for variable in layer.weights:
            value = rng.normal(size=variable.shape) * 0.3
            if "variance" in variable.path:
                value = np.abs(value) + 0.5
            values.append(value.astype(np.float32))
        if values:
            layer.set_weights(values)


def _convert(model: Any, mode: str, shape: tuple[int, ...]) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if mode == "int8":
        rng = np.random.default_rng(1)
        converter.representative_dataset = lambda: (
            [rng.normal(size=shape).astype(np.float32)] for _ in range(32)
        )
    return converter.convert()


def _build(folder: Path) -> None:
    """Each model in every mode, and the Keras layers' inputs and outputs for one input."""
    rng = np.random.default_rng(0)
    models = (
        ("m2d", _model_2d, X2D),
        ("m3d", _model_3d, X3D),
        ("m1g", _model_1d_grouped_separable, X1D),
    )
    for name, build, shape in models:
        model = build()
        _randomize(model, rng)
        x = rng.normal(size=shape).astype(np.float32)
        arrays = {"x": x}
        for layer in model.layers[1:]:
            probe = keras.Model(model.inputs, [layer.input, layer.output])
            arrays[f"{layer.name}/in"], arrays[f"{layer.name}/out"] = probe(x, training=False)
        saved: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
        np.savez(folder / f"{name}.npz", **saved)
        for mode in MODES:
            (folder / f"{name}_{mode}.tflite").write_bytes(_convert(model, mode, shape))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cached(tmp_path_factory.mktemp("tflite"), _build, "v2")


def _interpreter(path: Path) -> Any:
    interpreter = tf.lite.Interpreter(str(path), experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    return interpreter


def _details(interpreter: Any) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in interpreter.get_tensor_details()}


def _layer(model: weightscope.Model, name: str) -> weightscope.Layer:
    found = [layer for layer in model.layers if layer.name.split("/")[-1].startswith(name + "_")]
    assert len(found) == 1, [layer.name for layer in model.layers]
    return found[0]


def _role(layer: weightscope.Layer, role: str) -> weightscope.Tensor:
    return next(t for t in layer.tensors if t.role == role)


# ---------------------------------------------------------------------------------------------
# what each layer is


EXPECTED_2D = {
    "c1": (Kind.CONV2D, (4, 3, 3, 3), "OHWI", (4, 3, 3, 3)),
    "c2": (Kind.CONV2D, (6, 3, 3, 4), "OHWI", (6, 4, 3, 3)),
    "dw": (Kind.DEPTHWISE_CONV2D, (1, 3, 3, 12), "IHWO", (12, 1, 3, 3)),
    "tc": (Kind.CONV_TRANSPOSE2D, (5, 3, 3, 12), "OHWI", (5, 12, 3, 3)),
    "fc": (Kind.DENSE, (7, 845), "OI", (7, 845)),
}


@pytest.mark.parametrize("mode", MODES)
def test_kinds_shapes_and_dtypes(files: Path, mode: str) -> None:
    with weightscope.load(files / f"m2d_{mode}.tflite") as model:
        assert model.framework == "tflite" and model.format == "tflite"
        for name, (kind, shape, layout, canonical) in EXPECTED_2D.items():
            layer = _layer(model, name)
            kernel = _role(layer, "kernel")
            assert (layer.kind, kernel.native_shape, kernel.native_layout) == (kind, shape, layout)
            assert kernel.canonical_shape == canonical
            assert kernel.canonical().shape == canonical
            bias = _role(layer, "bias")
            assert bias.native_shape == (shape[0] if kind is not Kind.DEPTHWISE_CONV2D else 12,)
            expected = {"float32": "float32", "float16": "float16", "int8": "int8"}.get(mode)
            if mode == "dynamic":  # the converter quantizes only the dense layer's weights
                expected = "int8" if kind is Kind.DENSE else "float32"
            assert kernel.dtype == expected
            assert bias.dtype == {"int8": "int32", "float16": "float16"}.get(mode, "float32")
            assert (mode == "float16") == ("float16" in (layer.note or ""))
            assert ("folds a following batch normalization" in (layer.note or "")) == (
                kind is not Kind.DENSE
            )
            assert (mode == "int8") == ("input scale * weight scale" in (layer.note or ""))
        assert _layer(model, "dw").groups == 6
        # the transposed conv's output shape and the reshape's shape: listed, not counted
        unknown = [layer for layer in model.layers if layer.kind is Kind.UNKNOWN]
        assert sorted(str(layer.class_name) for layer in unknown) == ["RESHAPE", "TRANSPOSE_CONV"]
        assert all(not t.counted and t.dtype == "int32" for u in unknown for t in u.tensors)
        assert (
            model.params.total
            == sum(t.size for layer in model.layers for t in layer.tensors if t.counted)
            == 4 * 27 + 4 + 6 * 36 + 6 + 108 + 12 + 540 + 5 + 7 * 845 + 7
        )


def test_conv3d(files: Path) -> None:
    for mode in MODES:
        with weightscope.load(files / f"m3d_{mode}.tflite") as model:
            layer = _layer(model, "c3")
            kernel = _role(layer, "kernel")
            assert layer.kind is Kind.CONV3D
            assert (kernel.native_shape, kernel.native_layout) == ((3, 3, 3, 2, 3), "DHWIO")
            assert kernel.canonical_shape == (3, 2, 3, 3, 3)
            # the converter adds a Conv3D's bias with an ADD after the conv
            assert _role(layer, "bias").native_shape == (3,)
            assert "ADD after the conv" in (layer.note or "")


# ---------------------------------------------------------------------------------------------
# the values and quantization parameters TensorFlow's interpreter reports


@pytest.mark.parametrize("name", ["m2d", "m3d", "m1g"])
@pytest.mark.parametrize("mode", MODES)
def test_values_and_quantization_equal_the_interpreter(files: Path, name: str, mode: str) -> None:
    path = files / f"{name}_{mode}.tflite"
    details = _details(_interpreter(path))
    interpreter = _interpreter(path)
    quantized = 0
    with weightscope.load(path) as model:
        for layer in model.layers:
            for tensor in layer.tensors:
                detail = details[tensor.name]
                stored = interpreter.get_tensor(detail["index"])
                assert tensor.native_shape == tuple(detail["shape"])
                assert tensor.dtype == np.dtype(detail["dtype"]).name
                np.testing.assert_array_equal(tensor.stored(), stored)
                q = detail["quantization_parameters"]
                if tensor.quantization is None:
                    assert not len(q["scales"]) or tensor.dtype.startswith("float")
                    np.testing.assert_array_equal(tensor.numpy(), stored)
                    continue
                quantized += 1
                np.testing.assert_array_equal(tensor.quantization.scales(), q["scales"])
                np.testing.assert_array_equal(tensor.quantization.zero_points(), q["zero_points"])
                axis = tensor.quantization.axis
                assert axis == (q["quantized_dimension"] if len(q["scales"]) > 1 else None)
                real = (stored.astype(np.float64) - _spread(q["zero_points"], axis, stored)) * (
                    _spread(q["scales"], axis, stored)
                )
                np.testing.assert_allclose(tensor.numpy(), real, rtol=1e-6, atol=0)
                assert tensor.stored_stats().min == stored.min()
    # dynamic range: only weights of 1024 elements or more (the 3-D model's are smaller)
    assert (quantized > 0) == (mode == "int8" or (mode == "dynamic" and name == "m2d"))


def _spread(values: np.ndarray, axis: int | None, like: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float64)
    if axis is None:
        return values.reshape(-1)[0] * np.ones(1)
    shape = [1] * like.ndim
    shape[axis] = -1
    return values.reshape(shape)


def test_per_channel_dimensions_are_the_table_s_output_axis(files: Path) -> None:
    """Full-integer int8: conv kernels quantized per output channel (dimension 0), the
    depthwise kernel along its last axis, which the canonical form puts first."""
    with weightscope.load(files / "m2d_int8.tflite") as model:
        for name, axis in (("c1", 0), ("c2", 0), ("dw", 3), ("tc", 0), ("fc", 0)):
            kernel = _role(_layer(model, name), "kernel")
            assert kernel.quantization is not None
            assert kernel.quantization.axis == axis
            assert kernel.quantization_axis == 0


# ---------------------------------------------------------------------------------------------
# the canonical tensors recompute each layer


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.moveaxis(x, -1, 1)


def _recompute(layer: weightscope.Layer, x: np.ndarray) -> np.ndarray:
    """The layer's output for channels-last ``x``, from its canonical kernel and bias only."""
    kernel = _role(layer, "kernel").canonical().astype(np.float64)
    bias = _role(layer, "bias").numpy().astype(np.float64)
    x = x.astype(np.float64)
    if layer.kind is Kind.DENSE:
        return reference.dense(x, kernel, bias)
    padding = "same" if layer.kind is Kind.DEPTHWISE_CONV2D or "c2" in layer.name else "valid"
    if layer.kind is Kind.CONV_TRANSPOSE2D:
        out = reference.conv_transpose(_nchw(x), kernel, bias, stride=2)
    else:
        out = reference.conv(_nchw(x), kernel, bias, groups=layer.groups, padding=padding)
    return np.moveaxis(out, 1, -1)


@pytest.mark.parametrize("mode", ["float32", "float16"])
def test_canonical_kernels_recompute_keras(files: Path, mode: str) -> None:
    """Each layer's Keras output from its Keras input; ``c2``'s is the batch norm's after it,
    which the converter folded into the conv. Float16 weights: to their rounding."""
    tolerance = 1e-5 if mode == "float32" else 2e-2
    for name, layers in (("m2d", ("c1", "c2", "dw", "tc", "fc")), ("m3d", ("c3", "fc"))):
        arrays = np.load(files / f"{name}.npz")
        with weightscope.load(files / f"{name}_{mode}.tflite") as model:
            for layer_name in layers:
                layer = _layer(model, layer_name)
                out = "bn" if layer_name == "c2" else layer_name
                expected = arrays[f"{out}/out"]
                got = _recompute(layer, arrays[f"{layer_name}/in"])
                scale = max(float(np.abs(expected).max()), 1.0)
                np.testing.assert_allclose(got, expected, atol=tolerance * scale, rtol=0)


def _conv_nhwc(layer: weightscope.Layer, x: np.ndarray) -> np.ndarray:
    kernel = _role(layer, "kernel").canonical().astype(np.float64)
    bias = _role(layer, "bias").numpy().astype(np.float64)
    out = reference.conv(_nchw(x.astype(np.float64)), kernel, bias, groups=layer.groups)
    return np.moveaxis(out, 1, -1)


@pytest.mark.parametrize("mode", ["float32", "float16"])
def test_conv1d_grouped_and_separable_recompute_keras(files: Path, mode: str) -> None:
    """The Conv1D as a height-1 CONV_2D (its input given a height axis, as the converter's
    ExpandDims does), the grouped conv with its groups from the input's channels, and the
    separable conv as its depthwise then pointwise CONV_2D, each from canonical tensors."""
    tolerance = 1e-5 if mode == "float32" else 2e-2
    arrays = np.load(files / "m1g.npz")
    with weightscope.load(files / f"m1g_{mode}.tflite") as model:
        convs = [layer for layer in model.layers if layer.kind is Kind.CONV2D]
        conv1d, grouped, pointwise = (
            next(layer for layer in convs if f"/{name}" in layer.name + "/")
            for name in ("k1_1/", "grp_1/", "sep_1/")
        )
        depthwise = next(layer for layer in model.layers if layer.kind is Kind.DEPTHWISE_CONV2D)
        assert (conv1d.groups, grouped.groups, depthwise.groups) == (1, 2, 4)
        assert _role(grouped, "kernel").canonical_shape == (4, 3, 3, 1)
        assert _role(depthwise, "kernel").canonical_shape == (8, 1, 3, 1)
        cases = [
            (conv1d, arrays["k1/in"][:, None], arrays["k1/out"][:, None]),
            (grouped, arrays["grp/in"], arrays["grp/out"]),
        ]
        separable = _conv_nhwc(pointwise, _conv_nhwc(depthwise, arrays["sep/in"]))
        cases.append((None, separable, arrays["sep/out"]))
        for layer, x, expected in cases:
            got = x if layer is None else _conv_nhwc(layer, x)
            scale = max(float(np.abs(expected).max()), 1.0)
            np.testing.assert_allclose(got, expected, atol=tolerance * scale, rtol=0)


def test_dynamic_range_dense_recomputes_the_interpreter(files: Path) -> None:
    """Dynamic-range int8: the dense layer's dequantized kernel gives the interpreter's output
    (which quantizes its input on the fly: to that rounding)."""
    arrays = np.load(files / "m2d.npz")
    interpreter = _interpreter(files / "m2d_dynamic.tflite")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], arrays["x"])
    interpreter.invoke()
    with weightscope.load(files / "m2d_dynamic.tflite") as model:
        layer = _layer(model, "fc")
        op = _op_of(interpreter, _role(layer, "kernel").name)
        x = interpreter.get_tensor(op["inputs"][0])
        expected = interpreter.get_tensor(op["outputs"][0])
        got = _recompute(layer, x)
        np.testing.assert_allclose(got, expected, atol=2e-2 * np.abs(expected).max(), rtol=0)


def _op_of(interpreter: Any, kernel: str) -> dict[str, Any]:
    index = _details(interpreter)[kernel]["index"]
    ops = [o for o in interpreter._get_ops_details() if index in list(o["inputs"])]
    assert ops, kernel
    return ops[0]


def test_full_integer_layers_recompute_the_integer_arithmetic(files: Path) -> None:
    """Full-integer int8: each layer's int8 output from its int8 input, the stored integer
    kernel and int32 bias, and the scales weightscope read: ``round(acc * s_in * s_w / s_out) +
    zp_out`` within one step of the interpreter's fixed-point rounding."""
    arrays = np.load(files / "m2d.npz")
    interpreter = _interpreter(files / "m2d_int8.tflite")
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], arrays["x"])
    interpreter.invoke()
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    with weightscope.load(files / "m2d_int8.tflite") as model:
        for name in ("c1", "c2", "dw", "tc", "fc"):
            layer = _layer(model, name)
            kernel, bias = _role(layer, "kernel"), _role(layer, "bias")
            assert kernel.quantization is not None and bias.quantization is not None
            op = _op_of(interpreter, kernel.name)
            data, out = details[op["inputs"][2 if name == "tc" else 0]], details[op["outputs"][0]]
            x_scale, x_zero = data["quantization"]
            y_scale, y_zero = out["quantization"]
            x = interpreter.get_tensor(data["index"]).astype(np.float64) - x_zero
            w_scale = kernel.quantization.scales().astype(np.float64)
            # the bias is quantized with the input's scale times the kernel's
            np.testing.assert_allclose(bias.quantization.scales(), x_scale * w_scale, rtol=1e-6)
            integer = _IntegerLayer(layer, kernel.stored_canonical(), bias.stored())
            accumulated = integer.run(x)
            expected = interpreter.get_tensor(out["index"]).astype(np.int64)
            got = np.clip(np.round(accumulated * (x_scale * w_scale / y_scale)) + y_zero, -128, 127)
            assert np.abs(got - expected).max() <= 1, name
            assert np.mean(got == expected) > 0.9, name


class _IntegerLayer:
    def __init__(self, layer: weightscope.Layer, kernel: np.ndarray, bias: np.ndarray) -> None:
        self.layer, self.kernel, self.bias = layer, kernel.astype(np.float64), bias

    def run(self, x: np.ndarray) -> np.ndarray:
        fake = _Fake(self.layer, self.kernel, self.bias.astype(np.float64))
        return _recompute(fake, x)  # type: ignore[arg-type]


class _Fake:
    """A layer whose kernel and bias are the stored integers (exact in float64)."""

    def __init__(self, layer: weightscope.Layer, kernel: np.ndarray, bias: np.ndarray) -> None:
        self.kind, self.name, self.groups = layer.kind, layer.name, layer.groups
        self.tensors = [_Array("kernel", kernel, canonical=True), _Array("bias", bias)]


class _Array:
    def __init__(self, role: str, array: np.ndarray, canonical: bool = False) -> None:
        self.role, self.array = role, array

    def canonical(self) -> np.ndarray:
        return self.array

    def numpy(self) -> np.ndarray:
        return self.array


def test_sparse_weights_are_listed_as_stored(tmp_path: Path) -> None:
    """A dense layer converted with EXPERIMENTAL_SPARSITY keeps its kernel compressed behind a
    DENSIFY operator: listed as an unknown layer whose tensor is the stored values (here the
    kernel's nonzeros, (out, in) row by row) beside the bias, all counted, with a note."""
    rng = np.random.default_rng(4)
    inp = keras.Input((64,), batch_size=1)
    model = keras.Model(inp, keras.layers.Dense(32, name="fc")(inp))
    kernel = rng.normal(size=(64, 32)).astype(np.float32)
    kernel[rng.random(kernel.shape) < 0.9] = 0
    bias = rng.normal(size=32).astype(np.float32)
    model.get_layer("fc").set_weights([kernel, bias])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    path = tmp_path / "sparse.tflite"
    path.write_bytes(converter.convert())
    with weightscope.load(path) as read:
        (layer,) = read.layers
        assert layer.kind is Kind.UNKNOWN
        assert layer.class_name == "FULLY_CONNECTED (sparse weights)"
        assert "sparse" in (layer.note or "")
        values, stored_bias = (t.numpy() for t in layer.tensors)
        np.testing.assert_array_equal(values, kernel.T[kernel.T != 0])
        np.testing.assert_array_equal(stored_bias, bias)
        assert read.params.total == np.count_nonzero(kernel) + 32
        assert not read.weightless_layers


# ---------------------------------------------------------------------------------------------
# the commands


SCHEMA = Path(__file__).resolve().parent.parent / "docs" / "schemas" / "inspect.schema.json"


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_commands_read_tflite_files(files: Path, mode: str, tmp_path: Path) -> None:
    """inspect --json follows its schema; the other commands run on a float and a quantized
    conversion (what they say of TFLite layers is not checked here beyond their exit status)."""
    jsonschema = pytest.importorskip("jsonschema")
    import json

    path = files / f"m2d_{mode}.tflite"
    result = run_cli("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    jsonschema.validate(data, json.loads(SCHEMA.read_text(encoding="utf-8")))
    assert (data["format"], data["framework"]) == ("tflite", "tflite")
    with weightscope.load(path) as model:
        layer = _layer(model, "dw").name
    for command in (
        ["inspect", path, "--health"],
        ["inspect", path, "--layer", layer],
        ["export", path, "-o", tmp_path / "out.npz"],
        ["params", path],
        ["init", path],
        ["plot", path, "--layer", layer, "-o", tmp_path / "kernel.png"],
        ["explain", path, layer],
    ):
        result = run_cli(*command)
        assert result.returncode == 0, (command, result.stderr)
    # the float conversion against this one: every layer paired, the int8 one's within a step
    result = run_cli("compare", files / "m2d_float32.tflite", path)
    assert result.returncode == (0 if mode == "float32" else 1), result.stderr
    assert ("5 identical" if mode == "float32" else "5 quantized") in result.stdout
    exported = np.load(tmp_path / "out.npz")
    assert exported[f"{layer}/kernel"].shape == (12, 1, 3, 3)


# ---------------------------------------------------------------------------------------------
# damaged files


def _refused(path: Path) -> str:
    result = run_cli("inspect", path)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"weightscope: {path}"), result.stderr
    return lines[0]


def test_truncated_file_is_refused(files: Path, tmp_path: Path) -> None:
    data = (files / "m2d_float32.tflite").read_bytes()
    for cut in (6, 40, len(data) // 3, len(data) - 200):
        path = tmp_path / f"cut{cut}.tflite"
        path.write_bytes(data[:cut])
        _refused(path)


def test_bad_identifier_is_refused(files: Path, tmp_path: Path) -> None:
    data = bytearray((files / "m2d_float32.tflite").read_bytes())
    data[4:8] = b"XXXX"
    path = tmp_path / "bad.tflite"
    path.write_bytes(bytes(data))
    assert "TFL3" in _refused(path)


def _buffer_tables(path: Path) -> list[int]:
    """Positions of the Buffer tables, walked with the schema (Model field 4)."""
    data = path.read_bytes()

    def field(table: int, index: int) -> int:
        vtable = table - struct.unpack_from("<i", data, table)[0]
        size = struct.unpack_from("<H", data, vtable)[0]
        slot = 4 + 2 * index
        offset = struct.unpack_from("<H", data, vtable + slot)[0] if slot < size else 0
        return table + offset if offset else 0

    root = struct.unpack_from("<I", data, 0)[0]
    at = field(root, 4)
    vector = at + struct.unpack_from("<I", data, at)[0]
    count = struct.unpack_from("<I", data, vector)[0]
    return [vector + 4 + 4 * i + struct.unpack_from("<I", data, vector + 4 + 4 * i)[0]
            for i in range(count)]  # fmt: skip


def _largest_data_vector(path: Path) -> int:
    """The position of the length of the largest buffer's data vector."""
    data = path.read_bytes()
    best, where = -1, 0
    for table in _buffer_tables(path):
        vtable = table - struct.unpack_from("<i", data, table)[0]
        if struct.unpack_from("<H", data, vtable)[0] <= 4:
            continue
        offset = struct.unpack_from("<H", data, vtable + 4)[0]
        if not offset:
            continue
        at = table + offset
        vector = at + struct.unpack_from("<I", data, at)[0]
        length = struct.unpack_from("<I", data, vector)[0]
        if length > best:
            best, where = length, vector
    return where


def test_vector_length_beyond_the_file_is_refused(files: Path, tmp_path: Path) -> None:
    source = files / "m2d_float32.tflite"
    data = bytearray(source.read_bytes())
    struct.pack_into("<I", data, _largest_data_vector(source), 0xFFFFFF00)
    path = tmp_path / "long.tflite"
    path.write_bytes(bytes(data))
    assert "more than the file can hold" in _refused(path)


def test_buffer_offset_beyond_the_file_is_refused(tmp_path: Path) -> None:
    """A buffer in the offset/size form (files over 2 GB) pointing past the end."""
    path = tmp_path / "offset.tflite"
    weights = np.ones((3, 4), np.float32)
    bias = np.zeros(3, np.float32)
    path.write_bytes(
        tflite_builders.dense(weights, bias, offset_form=True, offsets={"w": (10**9, 48)})
    )
    assert "outside the file" in _refused(path)


def test_offset_buffers_are_read(tmp_path: Path) -> None:
    """The offset/size form of files over 2 GB: a dense layer's weights after the flatbuffer,
    located by absolute offset, read as the interpreter reads them; so are inline ones."""
    weights = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    bias = np.array([0.5, -1.0, 2.0], np.float32)
    for offset_form in (True, False):
        path = tmp_path / f"offset{offset_form}.tflite"
        path.write_bytes(tflite_builders.dense(weights, bias, offset_form=offset_form))
        with weightscope.load(path) as model:
            (layer,) = model.layers
            assert layer.kind is Kind.DENSE
            np.testing.assert_array_equal(_role(layer, "kernel").numpy(), weights)
            np.testing.assert_array_equal(_role(layer, "bias").numpy(), bias)
        interpreter = _interpreter(path)
        np.testing.assert_array_equal(
            interpreter.get_tensor(_details(interpreter)["w"]["index"]), weights
        )
        x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(reference.dense(x, weights, bias), y, rtol=1e-6)


def test_a_kernel_of_a_type_numpy_cannot_read_is_listed_as_stored(tmp_path: Path) -> None:
    """A FULLY_CONNECTED whose weights are typed STRING (found by fuzzing: the reader gave the
    bytes an (out, in) layout): no dense layer, the constant listed as its bytes."""
    path = tmp_path / "typed.tflite"
    weights = np.ones((3, 4), np.float32)
    path.write_bytes(tflite_builders.dense(weights, np.zeros(3, np.float32), types={"w": 5}))
    with weightscope.load(path) as model:
        (layer,) = model.layers
        assert layer.kind is Kind.UNKNOWN and layer.class_name == "FULLY_CONNECTED"
        stored = {t.name: t for t in layer.tensors}
        assert stored["w"].native_shape == (48,) and stored["w"].native_layout is None
        assert stored["b"].native_shape == (3,)
        assert "w is string: listed as its bytes" in (layer.note or "")
    assert run_cli("inspect", path).returncode == 0


def test_many_operators_load_in_linear_time(tmp_path: Path) -> None:
    """20,000 CONV_3D operators without bias sharing one kernel and one output name: each
    looks for an ADD after it and gets a unique name, neither by a scan of every operator
    (quadratic: minutes); the shared kernel counted once."""
    import time

    tensors: list[tuple[str, tuple[int, ...], np.ndarray | None]] = [
        ("x", (1, 4, 4, 4, 2), None),
        ("f", (2, 2, 2, 2, 3), np.ones((2, 2, 2, 2, 3), np.float32)),
    ]
    operators = []
    for _ in range(20_000):
        tensors.append(("y", (1, 3, 3, 3, 3), None))
        operators.append((132, [0, 1], [len(tensors) - 1]))
    path = tmp_path / "many.tflite"
    path.write_bytes(tflite_builders.build(tensors, operators))
    start = time.perf_counter()
    with weightscope.load(path) as model:
        assert len(model.layers) == 20_000 and model.params.total == 48
        assert model.layers[-1].name == "y#20000"
    assert time.perf_counter() - start < 20


def test_tflite_reader_imports_no_tensorflow_module() -> None:
    """The reader's own modules name no framework (checked in a fresh interpreter by
    tests/test_no_framework_import.py)."""
    source = Path(weightscope.__file__).parent / "formats" / "tflite"
    for module in source.glob("*.py"):
        text = module.read_text()
        assert "import tensorflow" not in text and "import flatbuffers" not in text, module
    assert os.path.isdir(source)
