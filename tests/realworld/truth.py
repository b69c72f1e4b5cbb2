"""What the frameworks themselves read from a corpus file: the truth weightscope is held to.

``truth(entry, path)`` loads the file with its own framework and returns every tensor as that
framework holds it, the canonical form each tensor must take (worked out here from the
framework's documented layout, never from weightscope's table), the framework's parameter count,
and one case per kind of convolution in the file, whose output the framework computes.

- PyTorch: ``torch.load(weights_only=True, map_location="cpu")`` (checkpoints: the entry's
  ``state`` key path), ``torch.jit.load`` for TorchScript, ``safetensors`` for ``.safetensors``.
  PyTorch stores convs ``(out, in/groups, *k)`` and Linear ``(out, in)``: already canonical;
  transposed convs ``(in, out/groups, *k)``.
- Keras ``.h5``: ``tf_keras.models.load_model`` where the file loads without the package's
  custom layers, the package's own architecture plus ``load_weights`` for a weights-only file
  (``rebuild``), else the HDF5 structure Keras' loader reads (``layer_names``, ``weight_names``).
  Keras stores kernels ``(*k, in, out)``, Dense ``(in, out)``, depthwise ``(*k, in, multiplier)``.
- ONNX: ``onnx.numpy_helper`` for initializers and ``Constant`` nodes (subgraphs included);
  a weight computed from constants by static nodes (a ``Transpose`` of a kernel) is computed by
  onnxruntime. ONNX stores convs as PyTorch does; ``Gemm``'s ``B`` is ``(in, out)`` unless
  ``transB``; ``MatMul``'s constant ``B`` is ``(in, out)``.
- GGUF: ``gguf.GGUFReader`` (llama.cpp's own reader) for every tensor's name, GGML dims (``ne``,
  innermost first), type and element count and the metadata; ``gguf.quants.dequantize`` for
  the values of the tensors a test samples (:func:`gguf_truth`: a 270M-parameter file is 1 GB of
  float32, so values are computed per tensor when asked for).
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .fetch import CorpusFile

Run = Callable[[np.ndarray], np.ndarray]


@dataclass
class TruthTensor:
    name: str
    """The framework's name: state-dict key, HDF5 weight name, ONNX constant or node input."""
    value: np.ndarray
    """As the framework holds it (native layout)."""
    canonical: np.ndarray | None = None
    """The canonical form it must take, where the framework's layout says (None: no layout)."""
    kind: str | None = None
    """The weightscope kind of the layer holding it, where the architecture says."""
    required: bool = False
    """True when the framework's layer is one whose layout is documented, so that weightscope
    must give the tensor a canonical form (a conv kernel, not an LSTM's gates)."""


@dataclass
class ConvCase:
    """One convolution the framework runs, to be recomputed from weightscope's kernel."""

    label: str
    """The kind of convolution: ``conv2d``, ``depthwise conv2d``, ``conv_transpose2d``..."""
    kernel: str
    """The name of the kernel tensor (finds weightscope's layer)."""
    layer: str
    """The framework's layer or node name."""
    run: Run
    """Input -> the framework's output (channels-first for PyTorch and ONNX, last for Keras)."""
    input_shape: tuple[int, ...]
    geometry: dict[str, Any]
    """stride, dilation, groups, padding (``valid``/``same``/``causal`` or explicit ``pads``),
    output_padding (transposed), as the framework's layer has them."""
    channels_last: bool = False
    input_dtype: str = "float32"


@dataclass
class Truth:
    tensors: dict[str, TruthTensor]
    params: int
    """The framework's parameter count."""
    stored: int
    """Elements of every tensor the file stores (what weightscope must list, all of it)."""
    stored_names: set[str]
    """The names of every stored tensor."""
    convs: list[ConvCase] = field(default_factory=list)
    prefix: str = ""
    """The container key path the weights sit under (a checkpoint's ``model_state``)."""
    nodes: dict[tuple[str, str], TruthTensor] = field(default_factory=dict)
    """ONNX: (node name, weightscope role) -> the node input's value: the weights of
    weight-bearing nodes, and (role ``input<i>``) every input computed from constants by static
    nodes (an ``Unsqueeze`` of a constant), which weightscope lists under the constant's name."""
    attribute: Callable[[str], np.ndarray | None] | None = None
    """TorchScript: a tensor the module holds as an attribute outside ``state_dict()``."""
    absorbed: set[str] = field(default_factory=set)
    """ONNX: constants read only by static nodes (the axes of that ``Unsqueeze``): part of a
    value listed elsewhere, not listed on their own."""


def truth(entry: CorpusFile, path: Path) -> Truth:
    if entry.framework == "pytorch":
        return _torch_truth(entry, path)
    if entry.framework == "keras":
        return _keras_truth(entry, path)
    if entry.framework == "onnx":
        return _onnx_truth(path)
    raise ValueError(f"no truth for {entry.framework} here (GGUF's: gguf_truth)")


@dataclass
class GgufTensor:
    name: str
    ne: tuple[int, ...]
    """GGML's dims, innermost first (numpy's shape reversed)."""
    type_name: str
    """The GGML type (``Q4_K``, ``F32``)."""
    n_elements: int


@dataclass
class GgufTruth:
    tensors: dict[str, GgufTensor]
    """In file order."""
    metadata: dict[str, Any]
    """The scalar and string metadata values (arrays left out)."""
    values: Callable[[str], np.ndarray]
    """A tensor's values as ``gguf.quants.dequantize`` gives them, in numpy order."""
    head: Callable[[str, int], np.ndarray]
    """The first values of a tensor (whole rows, dequantized), flattened: for the largest."""


def gguf_truth(path: Path) -> GgufTruth:
    import gguf

    reader = gguf.GGUFReader(str(path))
    by_name = {t.name: t for t in reader.tensors}
    tensors = {
        t.name: GgufTensor(
            t.name, tuple(int(d) for d in t.shape), t.tensor_type.name, int(t.n_elements)
        )
        for t in reader.tensors
    }
    metadata: dict[str, Any] = {}
    for key, found in reader.fields.items():
        if (
            not key.startswith("GGUF.")
            and found.types
            and found.types[0] != gguf.GGUFValueType.ARRAY
        ):
            metadata[key] = found.contents()

    def values(name: str) -> np.ndarray:
        tensor = by_name[name]
        out = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
        return np.asarray(out).reshape(tensors[name].ne[::-1])

    def head(name: str, count: int) -> np.ndarray:
        tensor = by_name[name]
        rows = -(-count // tensors[name].ne[0])
        data = np.asarray(tensor.data)
        part = gguf.quants.dequantize(data.reshape(-1, data.shape[-1])[:rows], tensor.tensor_type)
        return np.asarray(part).reshape(-1)[:count]

    return GgufTruth(tensors, metadata, values, head)


def _match(patterns: dict[str, str], name: str) -> str | None:
    for pattern, value in patterns.items():
        if fnmatch.fnmatchcase(name, pattern):
            return value
    return None


def regroup_transposed(weight: np.ndarray, groups: int) -> np.ndarray:
    """PyTorch / ONNX transposed-conv ``(in, out/g, *k)`` -> canonical ``(out, in/g, *k)``."""
    cin, out_per_group, *k = weight.shape
    split = weight.reshape(groups, cin // groups, out_per_group, *k)
    return split.swapaxes(1, 2).reshape(groups * out_per_group, cin // groups, *k)


# ------------------------------------------------------------------------------------------
# PyTorch


TORCH_GATES = {"lstm": (0, 1, 2, 3), "gru": (1, 0, 2), "simple_rnn": (0,)}
"""PyTorch's documented gate blocks (LSTM ``W_ii|W_if|W_ig|W_io``, GRU ``W_ir|W_iz|W_in``),
as indices of the canonical order (LSTM i, f, g, o; GRU z, r, n)."""


def torch_recurrent_canonical(kind: str, key: str, value: np.ndarray) -> np.ndarray | None:
    """An ``nn.LSTM``/``GRU``/``RNN`` tensor (``weight_ih_l0``, ``bias_hh_l1_reverse``...)
    split into its gates, ``(gates, hidden, *rest)``, in canonical gate order; a projection
    ``weight_hr_l{k}`` as stored."""
    if ".weight_hr_l" in key:
        return value
    order = TORCH_GATES[kind]
    return value.reshape(len(order), -1, *value.shape[1:])[list(order)]


def _flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _torch_truth(entry: CorpusFile, path: Path) -> Truth:
    import torch
    import torch.nn.functional as F

    prefix = ""
    attribute = None
    if entry.format == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
        state = module.state_dict()

        def attribute(name: str) -> np.ndarray | None:
            """A tensor the module holds as a plain attribute (not in ``state_dict()``)."""
            owner = module._c
            *path_, last = name.split(".")
            for part in path_:
                if not owner.hasattr(part):
                    return None
                owner = owner.getattr(part)
            value = owner.getattr(last) if owner.hasattr(last) else None
            return value.detach().numpy() if isinstance(value, torch.Tensor) else None

    elif entry.format == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, weights_only=True, map_location="cpu")
        prefix = entry.extra.get("state", "")
        for key in prefix.split(".") if prefix else ():
            state = state[key]
    items = [(k, v) for k, v in _flatten(state) if isinstance(v, torch.Tensor)]
    kinds: dict[str, str] = entry.extra.get("kinds", {})
    depthwise = bool(entry.extra.get("depthwise", False))

    tensors: dict[str, TruthTensor] = {}
    seen: set[tuple[int, int, tuple[int, ...]]] = set()
    params = stored = 0
    for key, tensor in items:
        value = tensor.detach().cpu().numpy()
        kind = _match(kinds, key)
        canonical = value
        if kind is not None and kind.startswith("conv_transpose"):
            canonical = regroup_transposed(value, 1)
        elif kind in TORCH_GATES:
            canonical = torch_recurrent_canonical(kind, key, value)
        tensors[key] = TruthTensor(key, value, canonical, kind, kind is not None)
        stored += value.size
        identity = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), value.shape)
        if tensor.is_floating_point() and identity not in seen:
            params += value.size
        seen.add(identity)

    convs: list[ConvCase] = []
    labels: set[str] = set()
    functions = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
    for key, tensor in items:
        if not key.endswith("weight") or tensor.dim() not in (3, 4, 5):
            continue
        kind = _match(kinds, key)
        if kind is not None and not kind.startswith(("conv", "depthwise")):
            continue
        dims = tensor.dim() - 2
        is_depthwise = depthwise and tensor.shape[1] == 1 and tensor.shape[0] > 1
        label = f"{'depthwise ' if is_depthwise else ''}conv{dims}d"
        if label in labels:
            continue
        labels.add(label)
        groups = tensor.shape[0] if is_depthwise else 1
        bias_key = key[: -len("weight")] + "bias"
        bias = dict(items).get(bias_key)
        weight64 = tensor.detach().double()
        bias64 = None if bias is None else bias.detach().double()

        def run(x: np.ndarray, w=weight64, b=bias64, g=groups, f=functions[dims]) -> np.ndarray:
            return f(torch.as_tensor(x, dtype=torch.float64), w, b, groups=g).numpy()

        spatial = tuple(k + 3 for k in tensor.shape[2:])
        convs.append(
            ConvCase(
                label,
                key,
                key.rsplit(".", 1)[0],
                run,
                (1, tensor.shape[1] * groups, *spatial),
                {"stride": 1, "dilation": 1, "groups": groups, "padding": "valid"},
                input_dtype="float64",
            )
        )
    return Truth(tensors, params, stored, {k for k, _ in items}, convs, prefix, attribute=attribute)


# ------------------------------------------------------------------------------------------
# Keras

KERAS_KINDS = {
    "Dense": "dense",
    "Conv1D": "conv1d",
    "Conv2D": "conv2d",
    "Conv3D": "conv3d",
    "Conv1DTranspose": "conv_transpose1d",
    "Conv2DTranspose": "conv_transpose2d",
    "Conv3DTranspose": "conv_transpose3d",
    "DepthwiseConv2D": "depthwise_conv2d",
    "SeparableConv1D": "separable_conv1d",
    "SeparableConv2D": "separable_conv2d",
    "BatchNormalization": "batch_norm",
    "LayerNormalization": "layer_norm",
    "Embedding": "embedding",
}
KERAS_CONVS = {c for c, k in KERAS_KINDS.items() if "conv" in k}
WRAPPERS = ("TimeDistributed", "Bidirectional")


def _keras_canonical(class_name: str, role: str, value: np.ndarray) -> np.ndarray | None:
    """Keras' documented storage order -> canonical, by the layer class and the variable."""
    n = value.ndim
    spatial = list(range(n - 2))
    depthwise = class_name.startswith("Depthwise") or role == "depthwise_kernel"
    if role in ("kernel", "depthwise_kernel", "pointwise_kernel"):
        if class_name == "Dense":
            return value.T
        if depthwise:  # (*k, in, M) -> (in * M, 1, *k)
            moved = value.transpose([n - 2, n - 1, *spatial])
            return moved.reshape(value.shape[-2] * value.shape[-1], 1, *value.shape[:-2])
        if class_name.endswith("Transpose"):  # (*k, out, in) -> (out, in, *k)
            return value.transpose([n - 2, n - 1, *spatial])
        if class_name in KERAS_CONVS:  # (*k, in, out) -> (out, in, *k)
            return value.transpose([n - 1, n - 2, *spatial])
        return None
    if class_name in KERAS_KINDS and value.ndim <= 2:
        return value  # bias, gamma, beta, moving statistics, embedding tables
    return None


def _decode(values: Any) -> list[str]:
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _unwrap(class_name: str, config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    while class_name in WRAPPERS:
        inner = config["layer"]
        class_name, config = inner["class_name"], inner["config"]
    return class_name, config


def _config_layers(config: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for layer in config.get("config", {}).get("layers", []):
        if layer["class_name"] in ("Model", "Functional", "Sequential"):
            yield from _config_layers(layer)
        else:
            yield layer


def _deepcut(tf_keras: Any) -> Any:
    """deepcut 0.7.0.0's ``deepcut.model.get_convo_nn2``, as the package writes it (not
    compiled: no optimizer is needed to load weights)."""
    layers = tf_keras.layers

    def conv_unit(inp: Any, n_gram: int, no_word: int, window: int) -> Any:
        out = layers.Conv1D(no_word, window, strides=1, padding="valid", activation="relu")(inp)
        out = layers.TimeDistributed(layers.Dense(5, input_shape=(n_gram, no_word)))(out)
        return layers.ZeroPadding1D(padding=(0, window - 1))(out)

    no_word, n_gram, no_char = 200, 21, 178
    input1, input2 = layers.Input(shape=(n_gram,)), layers.Input(shape=(n_gram,))
    a = layers.Embedding(no_char, 32, input_length=n_gram)(input1)
    a = layers.SpatialDropout1D(0.15)(a)
    a = layers.BatchNormalization()(a)
    units = [conv_unit(a, n_gram, no_word, window=i) for i in range(1, 9)]
    units += [conv_unit(a, n_gram, no_word - 50, window=i) for i in range(9, 12)]
    units.append(conv_unit(a, n_gram, no_word - 100, window=12))
    a_sum = layers.Maximum()(units)
    b = layers.Embedding(12, 12, input_length=n_gram)(input2)
    b = layers.SpatialDropout1D(0.15)(b)
    x = layers.Concatenate(axis=-1)([a, a_sum, b])
    x = layers.BatchNormalization()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(100, activation="relu")(x)
    out = layers.Dense(1, activation="sigmoid")(x)
    return tf_keras.Model(inputs=[input1, input2], outputs=out)


REBUILD = {"deepcut": _deepcut}


def _keras_truth(entry: CorpusFile, path: Path) -> Truth:
    import h5py
    import tf_keras

    with h5py.File(path, "r") as h5:
        root = h5.get("model_weights", h5)
        stored_weights: dict[str, list[tuple[str, np.ndarray]]] = {}
        for layer in _decode(root.attrs["layer_names"]):
            group = root[layer]
            names = _decode(group.attrs.get("weight_names", []))
            if names:
                stored_weights[layer] = [(n, group[n][()]) for n in names]
        raw_config = h5.attrs.get("model_config")
    classes: dict[str, tuple[str, dict[str, Any]]] = {}
    if raw_config is not None:
        text = raw_config.decode() if isinstance(raw_config, bytes) else raw_config
        for layer in _config_layers(json.loads(text)):
            classes[layer["config"]["name"]] = (layer["class_name"], layer["config"])

    # what the framework loads: per HDF5 layer, its variables in the stored order
    loaded: dict[str, list[np.ndarray]] | None = None
    params: int | None = None
    model = None
    if entry.extra.get("rebuild"):
        model = REBUILD[entry.extra["rebuild"]](tf_keras)
        model.load_weights(str(path))
        with_weights = [layer for layer in model.layers if layer.weights]
        if len(with_weights) != len(stored_weights):
            raise AssertionError("the rebuilt architecture does not match the file's layers")
        for (name, _), layer in zip(stored_weights.items(), with_weights, strict=True):
            if type(layer).__name__ in WRAPPERS:
                inner = {"class_name": type(layer.layer).__name__, "config": {}}
                classes[name] = (type(layer).__name__, {"layer": inner})
            else:
                classes[name] = (type(layer).__name__, layer.get_config())
        loaded = {
            name: [v.numpy() for v in layer.weights]
            for name, layer in zip(stored_weights, with_weights, strict=True)
        }
    else:
        try:
            model = tf_keras.models.load_model(str(path), compile=False)
        except (ValueError, TypeError):
            model = None  # a custom layer of the package: the HDF5 structure is the truth
        if model is not None:
            by_name = {layer.name: layer for layer in _all_layers(model)}
            loaded = {name: [v.numpy() for v in by_name[name].weights] for name in stored_weights}
    if model is not None:
        params = int(model.count_params())

    tensors: dict[str, TruthTensor] = {}
    stored = 0
    for layer, weights in stored_weights.items():
        class_name, _ = _unwrap(*classes.get(layer, ("", {})))
        values = loaded[layer] if loaded is not None else [v for _, v in weights]
        if len(values) != len(weights):
            raise AssertionError(f"{layer}: the framework loads {len(values)} of its weights")
        for (name, raw), value in zip(weights, values, strict=True):
            role = name.rsplit("/", 1)[-1].split(":")[0]
            stored += raw.size
            kind = KERAS_KINDS.get(class_name)
            canonical = _keras_canonical(class_name, role, value)
            tensors[name] = TruthTensor(name, value, canonical, kind, kind is not None)

    convs = _keras_convs(tf_keras, stored_weights, classes, tensors)
    total = params if params is not None else stored
    names = set(tensors)
    return Truth(tensors, total, stored, names, convs)


def _all_layers(model: Any) -> Iterator[Any]:
    for layer in model.layers:
        if hasattr(layer, "layers") and not hasattr(layer, "layer"):
            yield from _all_layers(layer)
        else:
            yield layer


def _keras_convs(
    tf_keras: Any,
    stored: dict[str, list[tuple[str, np.ndarray]]],
    classes: dict[str, tuple[str, dict[str, Any]]],
    tensors: dict[str, TruthTensor],
) -> list[ConvCase]:
    convs: list[ConvCase] = []
    labels: set[str] = set()
    for layer, weights in stored.items():
        class_name, config = _unwrap(*classes.get(layer, ("", {})))
        if class_name not in KERAS_CONVS or not config:
            continue
        kernel_name = weights[0][0]
        kernel = tensors[kernel_name].value
        dims = kernel.ndim - 2
        if class_name.startswith("Depthwise"):
            label = f"depthwise conv{dims}d"
        elif class_name.startswith("Separable"):
            label = f"separable conv{dims}d"
        elif class_name.endswith("Transpose"):
            label = f"conv_transpose{dims}d"
        else:
            label = f"conv{dims}d"
        if label in labels:
            continue
        labels.add(label)
        config = dict(config, activation="linear", name=f"corpus_{layer}")
        config.pop("batch_input_shape", None)
        fresh = tf_keras.layers.deserialize({"class_name": class_name, "config": config})
        strides = _per_dim(config.get("strides", 1), dims)
        dilation = _per_dim(config.get("dilation_rate", 1), dims)
        geometry_ = zip(kernel.shape[:dims], dilation, strides, strict=True)
        spatial = tuple((k - 1) * d + 1 + 2 * s for k, d, s in geometry_)
        channels = kernel.shape[-1] if class_name.endswith("Transpose") else kernel.shape[-2]
        shape = (1, *spatial, channels)
        fresh(np.zeros(shape, np.float32))
        fresh.set_weights([tensors[name].value for name, _ in weights])

        def run(x: np.ndarray, f: Any = fresh) -> np.ndarray:
            return np.asarray(f(x.astype(np.float32)), dtype=np.float64)

        geometry = {
            "stride": strides,
            "dilation": dilation,
            "groups": 1,
            "padding": config.get("padding", "valid"),
        }
        convs.append(ConvCase(label, kernel_name, layer, run, shape, geometry, channels_last=True))
    return convs


def _per_dim(value: Any, dims: int) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * dims
    return tuple(int(v) for v in value)


# ------------------------------------------------------------------------------------------
# ONNX

# op -> {weightscope role: input index}
ONNX_WEIGHT_INPUTS: dict[str, dict[str, int]] = {
    "Conv": {"kernel": 1, "bias": 2},
    "ConvTranspose": {"kernel": 1, "bias": 2},
    "ConvInteger": {"kernel": 1},
    "QLinearConv": {"kernel": 3, "bias": 8},
    "Gemm": {"kernel": 1, "bias": 2},
    "MatMul": {"kernel": 1},
    "MatMulInteger": {"kernel": 1},
    "BatchNormalization": {"gamma": 1, "beta": 2, "moving_mean": 3, "moving_variance": 4},
    "LayerNormalization": {"gamma": 1, "beta": 2},
    "Gather": {"embeddings": 0},
}
ONNX_CONVS = ("Conv", "ConvTranspose", "ConvInteger", "QLinearConv")
QUANTIZED_WEIGHTS = {
    "ConvInteger": (1,),
    "MatMulInteger": (1,),
    "QLinearConv": (3,),
    "QLinearMatMul": (3,),
    "DequantizeLinear": (0,),
    "DynamicQuantizeLSTM": (1, 2),
}


def _graphs(graph: Any) -> Iterator[Any]:
    import onnx

    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attr.g)
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    yield from _graphs(sub)


def _constant_value(node: Any) -> np.ndarray:
    from onnx import helper, numpy_helper

    attr = node.attribute[0]
    if attr.name in ("value", "sparse_value"):
        if attr.name == "sparse_value":
            return numpy_helper.to_array(attr.sparse_tensor.values)
        return numpy_helper.to_array(attr.t)
    value = helper.get_attribute_value(attr)
    return np.asarray(value)


class OnnxFile:
    """An ONNX model's constants, nodes and the static computations between them."""

    def __init__(self, path: Path) -> None:
        import onnx
        from onnx import numpy_helper

        self.model = onnx.load(str(path))
        self.constants: dict[str, np.ndarray] = {}
        self.protos: dict[str, Any] = {}
        self.producers: dict[str, Any] = {}
        self.nodes: list[Any] = []
        for graph in _graphs(self.model.graph):
            for init in graph.initializer:
                self.constants[init.name] = numpy_helper.to_array(init)
                self.protos[init.name] = init
            for node in graph.node:
                self.nodes.append(node)
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                    self.constants[node.output[0]] = _constant_value(node)
                for out in node.output:
                    self.producers[out] = node
        self.opsets = list(self.model.opset_import)

    def chain(self, name: str) -> list[Any] | None:
        """The nodes that compute ``name`` from constants alone (empty for a constant), in
        order; None when it depends on a graph input."""
        if name in self.constants:
            return []
        node = self.producers.get(name)
        if node is None or node.op_type in ("If", "Loop", "Scan"):
            return None
        nodes: list[Any] = []
        for source in node.input:
            if not source:
                continue
            before = self.chain(source)
            if before is None:
                return None
            nodes += [n for n in before if n not in nodes]
        return [*nodes, node]

    def roots(self, name: str) -> list[str]:
        """The constants ``name`` is computed from."""
        steps = self.chain(name) or []
        inputs = {i for n in steps for i in n.input} | {name}
        return [i for i in inputs if i in self.constants]

    def evaluate(self, name: str) -> np.ndarray | None:
        """The value of ``name`` as onnxruntime computes it from the file's constants."""
        steps = self.chain(name)
        if steps is None:
            return None
        if not steps:
            return self.constants[name]
        return run_model(self, steps, [], [name], {})[0]


def run_model(
    onnx_file: OnnxFile,
    nodes: list[Any],
    inputs: list[Any],
    outputs: list[str],
    feeds: dict[str, np.ndarray],
) -> list[np.ndarray]:
    """Run ``nodes`` (with every constant they read as an initializer) in onnxruntime."""
    import onnxruntime
    from onnx import helper, numpy_helper

    used = {i for n in nodes for i in n.input if i in onnx_file.constants}
    produced = {o for n in nodes for o in n.output}
    initializers = [
        onnx_file.protos[name]
        if name in onnx_file.protos
        else numpy_helper.from_array(onnx_file.constants[name], name)
        for name in sorted(used - produced)
    ]
    graph = helper.make_graph(
        [n for n in nodes if not (n.op_type == "Constant" and n.output[0] in used)],
        "corpus_case",
        inputs,
        [helper.make_empty_tensor_value_info(name) for name in outputs],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=onnx_file.opsets)
    model.ir_version = onnx_file.model.ir_version
    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return [np.asarray(v) for v in session.run(outputs, feeds)]


def _onnx_canonical(node: Any, index: int, value: np.ndarray) -> np.ndarray | None:
    from onnx import helper

    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        return value if index in (1, 3) or value.ndim == 1 else None
    if op == "ConvTranspose":
        return regroup_transposed(value, int(attrs.get("group", 1))) if index == 1 else value
    if op == "Gemm":
        if index == 1:
            return value if attrs.get("transB", 0) else value.T
        return value.reshape(-1)
    if op in ("MatMul", "MatMulInteger"):
        return value.T if value.ndim == 2 else None
    if op in ("BatchNormalization", "LayerNormalization"):
        return value
    if op == "Gather" and attrs.get("axis", 0) == 0:
        return value
    return None


def _onnx_truth(path: Path) -> Truth:
    from onnx import helper

    file = OnnxFile(path)
    tensors = {
        name: TruthTensor(name, value) for name, value in file.constants.items()
    }  # raw constants, by name
    nodes: dict[tuple[str, str], TruthTensor] = {}
    consumers: dict[str, list[Any]] = {}
    for node in file.nodes:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in file.nodes:
        roles = ONNX_WEIGHT_INPUTS.get(node.op_type)
        if roles is None or node.domain not in ("", "ai.onnx"):
            continue
        for role, index in roles.items():
            if len(node.input) <= index or not node.input[index]:
                continue
            value = file.evaluate(node.input[index])
            if value is None:
                continue
            if node.op_type == "Gather" and not (
                np.issubdtype(value.dtype, np.floating) and value.ndim == 2
            ):
                continue  # gathers shapes or indices, not rows of an embedding table
            canonical = _onnx_canonical(node, index, value)
            nodes[(node.name, role)] = TruthTensor(
                node.input[index], value, canonical, required=canonical is not None
            )
        # a bias added after a Conv or a MatMul (exporters that keep it apart)
        if node.op_type in ("Conv", "ConvTranspose", "MatMul") and (node.name, "bias") not in nodes:
            for add in consumers.get(node.output[0], []):
                if add.op_type != "Add":
                    continue
                other = [i for i in add.input if i != node.output[0]]
                value = file.evaluate(other[0]) if other else None
                kernel = nodes.get((node.name, "kernel"))
                if value is None or kernel is None or kernel.canonical is None:
                    continue
                if value.size == kernel.canonical.shape[0]:  # one value per output channel
                    nodes[(node.name, "bias")] = TruthTensor(
                        other[0], value, value.reshape(-1), required=True
                    )

    static_outputs: set[str] = set()
    for node in file.nodes:
        for index, name in enumerate(node.input):
            steps = file.chain(name) if name else None
            if steps:  # computed from constants by static nodes
                static_outputs.update(o for step in steps for o in step.output)
                key = (node.name, f"input{index}")
                if key not in nodes and node.op_type not in ONNX_WEIGHT_INPUTS:
                    value = file.evaluate(name)
                    if value is not None:
                        nodes[key] = TruthTensor(name, value)
    absorbed = {
        name
        for name in file.constants
        if consumers.get(name)
        and all(all(o in static_outputs for o in c.output) for c in consumers[name])
    }

    params = 0
    for value in file.constants.values():
        if np.issubdtype(value.dtype, np.floating) or np.issubdtype(
            value.dtype, np.complexfloating
        ):
            params += value.size
    for node in file.nodes:
        for index in QUANTIZED_WEIGHTS.get(node.op_type, ()):
            name = node.input[index] if len(node.input) > index else ""
            value = file.constants.get(name)
            if value is not None and not np.issubdtype(value.dtype, np.floating):
                params += value.size
    stored = sum(v.size for v in file.constants.values())
    convs = _onnx_convs(file, helper)
    return Truth(
        tensors, params, stored, set(file.constants), convs, nodes=nodes, absorbed=absorbed
    )


def _onnx_convs(file: OnnxFile, helper: Any) -> list[ConvCase]:
    import onnx

    convs: list[ConvCase] = []
    labels: set[str] = set()
    for node in file.nodes:
        if node.op_type not in ONNX_CONVS or node.domain not in ("", "ai.onnx"):
            continue
        w_index = 3 if node.op_type == "QLinearConv" else 1
        weight = file.evaluate(node.input[w_index])
        if weight is None:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        group = int(attrs.get("group", 1))
        dims = weight.ndim - 2
        transposed = node.op_type == "ConvTranspose"
        cin = weight.shape[0] if transposed else weight.shape[1] * group
        if transposed:
            label = f"conv_transpose{dims}d"
        elif group > 1 and weight.shape[1] == 1:
            label = f"depthwise conv{dims}d"
        elif group > 1:
            label = f"grouped conv{dims}d"
        else:
            label = f"conv{dims}d"
        if node.op_type != "Conv" and not transposed:
            label = f"{node.op_type} {label}"
        if label in labels:
            continue
        labels.add(label)
        strides = tuple(attrs.get("strides", [1] * dims))
        dilation = tuple(attrs.get("dilations", [1] * dims))
        pads = tuple(attrs.get("pads", [0] * 2 * dims))
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        axes = zip(weight.shape[2:], dilation, strides, strict=True)
        spatial = tuple((k - 1) * d + 1 + 2 * s for k, d, s in axes)
        shape = (1, cin, *spatial)
        x_dtype = weight.dtype if np.issubdtype(weight.dtype, np.floating) else np.dtype(np.float32)
        if node.op_type in ("ConvInteger", "QLinearConv"):
            x_dtype = (
                file.constants.get(node.input[2], np.zeros((), np.uint8)).dtype
                if (node.op_type == "ConvInteger" and len(node.input) > 2)
                else np.dtype(np.uint8)
            )
        steps: list[Any] = []
        for name in node.input[1:]:
            if name:
                for step in file.chain(name) or []:
                    if step not in steps:
                        steps.append(step)
        elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(x_dtype))
        x_info = helper.make_tensor_value_info(node.input[0], elem, list(shape))
        infos, fixed = [x_info], {}
        x_zero_point = 0
        if node.op_type in ("ConvInteger", "QLinearConv") and len(node.input) > 2 and node.input[2]:
            # the input's zero point, computed at run time (DynamicQuantizeLinear): fed as an
            # input of the node alone, a value inside the input type's range
            if file.chain(node.input[2]) is None:
                x_zero_point = (
                    int(np.iinfo(x_dtype).max // 2 + 1) if np.dtype(x_dtype).kind == "u" else 0
                )
                infos.append(helper.make_tensor_value_info(node.input[2], elem, []))
                fixed[node.input[2]] = np.array(x_zero_point, x_dtype)
            else:
                x_zero_point = int(np.asarray(file.evaluate(node.input[2])).reshape(-1)[0])

        def run(
            x: np.ndarray,
            n: Any = node,
            s: list[Any] = steps,
            info: list[Any] = infos,
            dt: Any = x_dtype,
            feeds: dict[str, np.ndarray] = fixed,
        ) -> np.ndarray:
            (out,) = run_model(
                file, [*s, n], info, [n.output[0]], {n.input[0]: x.astype(dt), **feeds}
            )
            return out.astype(np.float64)

        geometry = {
            "stride": strides,
            "dilation": dilation,
            "groups": group,
            "pads": pads,
            "auto_pad": auto_pad,
            "output_padding": tuple(attrs.get("output_padding", [0] * dims)),
            # ConvInteger's inputs 2 and 3 are zero points: it has no bias
            "has_bias": node.op_type != "ConvInteger"
            and len(node.input) > (8 if node.op_type == "QLinearConv" else 2)
            and bool(node.input[8 if node.op_type == "QLinearConv" else 2]),
            "x_zero_point": x_zero_point,
        }
        convs.append(
            ConvCase(
                label,
                node.input[w_index],
                node.name,
                run,
                shape,
                geometry,
                input_dtype=np.dtype(x_dtype).name,
            )
        )
    return convs
