"""Valid, tiny files of every format weightscope reads, saved by the real frameworks: the seeds
the fuzzer mutates. Each model is a conv, a batch norm and a dense layer, so one read takes
milliseconds."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass(frozen=True)
class Seed:
    """One seed format: the file name it is saved as (the suffix matters to sniffing), the
    mutator family that knows its structure, and the names of its extra files (ONNX external
    data), which lie next to the main file and are mutated too."""

    name: str
    filename: str
    family: str
    build: Callable[[Path], None]
    extra_files: tuple[str, ...] = ()


def _keras_model(keras):  # type: ignore[no-untyped-def]
    keras.backend.clear_session()  # the same automatic names whatever was built before
    keras.utils.set_random_seed(7)
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((6, 6, 2)),
            layers.Conv2D(3, 3, name="conv"),
            layers.BatchNormalization(name="bn"),
            layers.Flatten(name="flatten"),
            layers.Dense(2, name="dense"),
        ],
        name="tiny",
    )


def _keras3(save: Callable[[object, Path], None]) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import keras

        save(_keras_model(keras), path)
        if path.suffix == ".keras":
            _fixed_keras_date(path)

    return build


def _fixed_keras_date(path: Path) -> None:
    """Rewrite the archive with a fixed save date (metadata.json, entry times) and the object
    ids of config.json numbered in order, so that the seed, and every mutant of it, is the
    same file in every session."""
    import json
    import re
    import zipfile

    from .zips import read, write

    entries = read(path.read_bytes())
    for entry in entries:
        if entry.name == "metadata.json":
            metadata = json.loads(entry.data)
            metadata["date_saved"] = "2024-01-01@00:00:00"
            entry.data = json.dumps(metadata).encode()
        if entry.name == "config.json":
            ids: dict[bytes, bytes] = {}
            for found in re.findall(rb'"shared_object_id": (\d+)', entry.data):
                ids.setdefault(found, b"%d" % (len(ids) + 1))
            entry.data = re.sub(
                rb'"shared_object_id": (\d+)',
                lambda m, ids=ids: b'"shared_object_id": ' + ids[m[1]],
                entry.data,
            )
        entry.compress = zipfile.ZIP_STORED
    path.write_bytes(write(entries))


def _tf_keras(weights_only: bool) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        import numpy as np
        import tf_keras

        model = _keras_model(tf_keras)
        if weights_only:
            model.save_weights(path)
            return
        model.compile("adam", "mse")  # optimizer weights are saved too
        model.train_on_batch(np.ones((2, 6, 6, 2)), np.ones((2, 2)))
        model.save(path)

    return build


def _torch_module():  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(7)
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(48, 2))


def _torch_zip(path: Path) -> None:
    import torch

    torch.save(_torch_module().state_dict(), path)


def _torch_quantized(path: Path) -> None:
    """A state dict of quantized modules: a conv with per-channel int8 weights, a dynamic
    Linear (packed params) and a dynamic LSTM (packed recurrent cells)."""
    import torch

    torch.manual_seed(7)
    nn, nnq = torch.nn, torch.ao.nn.quantized
    conv = nnq.Conv2d(2, 3, 3)
    scales = torch.tensor([0.01, 0.02, 0.03], dtype=torch.float64)
    weight = torch.quantize_per_channel(
        torch.randn(3, 2, 3, 3) / 10, scales, torch.zeros(3, dtype=torch.long), 0, torch.qint8
    )
    conv.set_weight_bias(weight, torch.randn(3))
    net = nn.Module()
    net.add_module("conv", conv)
    net.add_module("fc", nn.Linear(4, 2))
    net.add_module("rnn", nn.LSTM(2, 3))
    net = torch.ao.quantization.quantize_dynamic(net, {nn.Linear, nn.LSTM}, dtype=torch.qint8)
    torch.save(net.state_dict(), path)


def _torch_legacy(path: Path) -> None:
    import torch

    torch.save(_torch_module().state_dict(), path, _use_new_zipfile_serialization=False)
    _fixed_storage_keys(path)


def _fixed_storage_keys(path: Path) -> None:
    """Legacy storage keys are memory addresses, and the storages follow in the order of their
    keys: rename each key after its first use in the state dict (same width, so the pickles
    keep their lengths) and put the storages in that order, so that the seed is the same file
    in every session."""
    import pickle
    import pickletools
    import struct

    from .pickles import split_stream

    data = path.read_bytes()
    spans = split_stream(data)
    root_start, root_end = spans[3]
    keys: list[str] = pickle.loads(data[spans[4][0] : spans[4][1]])
    item_size, used = {}, []  # key -> bytes per element; keys in order of first use
    last: object = None  # the value the last opcode pushed, where it is a global's name
    memo: dict[object, object] = {}
    storage_type = None
    for opcode, arg, _ in pickletools.genops(data[root_start:root_end]):
        if opcode.name == "GLOBAL":
            last = storage_type = arg
        elif opcode.name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[arg] = last
        elif opcode.name in ("BINGET", "LONG_BINGET", "GET"):
            last = memo.get(arg)
            storage_type = last if isinstance(last, str) else storage_type
        elif isinstance(arg, str) and arg in keys and arg not in item_size:
            wide = storage_type and any(w in storage_type for w in ("Long", "Double"))
            item_size[arg] = 8 if wide else 4
            used.append(arg)
    assert sorted(used) == sorted(keys), "a storage of a type this seed does not expect"
    blocks, at = {}, spans[4][1]
    for key in keys:  # the storages, in the order of the key list
        end = at + 8 + struct.unpack_from("<Q", data, at)[0] * item_size[key]
        blocks[key], at = data[at:end], end
    renamed = {key: str(n + 1).rjust(len(key), "1") for n, key in enumerate(used)}
    head = data[: spans[4][0]]
    for key, new in renamed.items():
        head = head.replace(key.encode(), new.encode())
    order = sorted(used, key=lambda k: renamed[k])  # torch writes its keys sorted
    listing = pickle.dumps([renamed[k] for k in order], protocol=2)
    path.write_bytes(head + listing + b"".join(blocks[k] for k in order) + data[at:])


def _torchscript(path: Path) -> None:
    import torch

    torch.jit.save(torch.jit.script(_torch_module()), path)


def _torch_whole_module(path: Path) -> None:
    import torch

    torch.save(_torch_module(), path)


def _safetensors(path: Path) -> None:
    from safetensors.torch import save_file

    save_file(_torch_module().state_dict(), path)


def _onnx_model():  # type: ignore[no-untyped-def]
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)

    def init(name: str, *shape: int) -> object:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["X", "conv.weight", "conv.bias"], ["c"], name="conv"),
        helper.make_node(
            "BatchNormalization",
            ["c", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"],
            ["b"],
            name="bn",
        ),
        helper.make_node("Flatten", ["b"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["Y"], name="fc", transB=1),
    ]
    inits = [
        init("conv.weight", 3, 2, 3, 3),
        init("conv.bias", 3),
        init("bn.weight", 3),
        init("bn.bias", 3),
        init("bn.running_mean", 3),
        numpy_helper.from_array(
            np.abs(rng.standard_normal(3)).astype(np.float32) + 0.5, "bn.running_var"
        ),
        init("fc.weight", 2, 48),
        init("fc.bias", 2),
    ]
    # quantized and recurrent weights: ConvInteger scaled by the Mul after it, a bidirectional
    # LSTM (parts of W, R, B), MatMulNBits (4-bit blocks whose sizes attributes declare)
    nodes += [
        helper.make_node("DynamicQuantizeLinear", ["X"], ["xq", "xs", "xz"], name="dq"),
        helper.make_node("ConvInteger", ["xq", "qconv.w", "xz", "qconv.wz"], ["qi"], name="qconv"),
        helper.make_node("Cast", ["qi"], ["qf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Mul", ["xs", "qconv.ws"], ["qs"], name="scales"),
        helper.make_node("Mul", ["qf", "qs"], ["Q"], name="scale"),
        helper.make_node("Reshape", ["X", "seq.shape"], ["seq"], name="seq"),
        helper.make_node(
            "LSTM", ["seq", "lstm.W", "lstm.R", "lstm.B"], ["L"], name="lstm", hidden_size=2,
            direction="bidirectional",
        ),
        helper.make_node(
            "MatMulNBits", ["seq", "nbits.B", "nbits.scales"], ["N"], name="nbits",
            domain="com.microsoft", K=12, N=2, bits=4, block_size=16,
        ),
    ]  # fmt: skip
    inits += [
        numpy_helper.from_array(rng.integers(0, 255, (3, 2, 3, 3)).astype(np.uint8), "qconv.w"),
        numpy_helper.from_array(np.array(128, np.uint8), "qconv.wz"),
        numpy_helper.from_array(np.array(0.02, np.float32), "qconv.ws"),
        numpy_helper.from_array(np.array([6, 1, 12], np.int64), "seq.shape"),
        init("lstm.W", 2, 8, 12),
        init("lstm.R", 2, 8, 2),
        init("lstm.B", 2, 16),
        numpy_helper.from_array(rng.integers(0, 255, (2, 1, 8)).astype(np.uint8), "nbits.B"),
        init("nbits.scales", 2),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2, 6, 6])],
        [
            helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 2]),
            helper.make_tensor_value_info("Q", TensorProto.FLOAT, [1, 3, 4, 4]),
            helper.make_tensor_value_info("L", TensorProto.FLOAT, [6, 2, 1, 2]),
            helper.make_tensor_value_info("N", TensorProto.FLOAT, [6, 1, 2]),
        ],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        producer_name="weightscope-fuzz",
        producer_version="1",
    )
    model.ir_version = 8
    return model


def _onnx_inline(path: Path) -> None:
    import onnx

    model = _onnx_model()
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)


def _onnx_external(path: Path) -> None:
    import onnx

    onnx.save_model(
        _onnx_model(),
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )


def _tf_checkpoint(path: Path) -> None:
    """The Keras 3 model as ``tf.train.Checkpoint.write`` saves it (``path`` is its index)."""
    import keras
    import tensorflow as tf

    model = _keras_model(keras)
    tf.train.Checkpoint(model=model).write(str(path)[: -len(".index")])


def _tflite(path: Path) -> None:
    """The tf-keras model converted to TFLite, float32 weights."""
    import tensorflow as tf
    import tf_keras

    converter = tf.lite.TFLiteConverter.from_keras_model(_keras_model(tf_keras))
    path.write_bytes(converter.convert())


def _npz_export(path: Path) -> None:
    """weightscope's own export of the bundled example: canonical arrays, with the comments
    that say each layer's kind and each array's layout."""
    import weightscope
    from weightscope.reporters.npz import export_npz

    with weightscope.load(weightscope.example_path()) as model:
        export_npz(model, path)


def _npz_arrays() -> dict[str, object]:
    import numpy as np

    rng = np.random.default_rng(11)
    return {
        "conv/kernel": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
        "conv/bias": rng.standard_normal(4).astype(">f4"),
        "fc/kernel": np.asfortranarray(rng.standard_normal((3, 8)).astype(np.float16)),
        "step": np.arange(3, dtype=np.int64),
    }


def _npz_compressed(path: Path) -> None:
    import numpy as np

    np.savez_compressed(path, **_npz_arrays())  # type: ignore[arg-type]


def _npy(path: Path) -> None:
    import numpy as np

    np.save(path, np.random.default_rng(12).standard_normal((5, 4, 3)).astype(np.float32))


def _gguf(path: Path) -> None:
    """A tiny llama-like GGUF as llama.cpp's Python writer saves it: metadata with a token
    list, an embedding, norms, block-quantized matrices (Q8_0, Q4_0, Q4_1, Q5_0, MXFP4, and
    random Q4_K, Q6_K, IQ4_XS and IQ2_XS blocks with small scales, which the package cannot
    quantize), a float16 whisper-like conv1d with a (1, out) bias."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(19)
    kinds = gguf.GGMLQuantizationType
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("fuzz seed")
    writer.add_custom_alignment(64)
    writer.add_file_type(int(gguf.LlamaFileType.MOSTLY_Q4_K_M))
    writer.add_context_length(64)
    writer.add_block_count(1)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(["<s>", "</s>", "a", "b"])

    def quantized(name: str, kind: object, rows: int, cols: int) -> None:
        values = rng.standard_normal((rows, cols)).astype(np.float32)
        writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)

    def k_blocks(name: str, kind: object, type_size: int, halves: tuple[int, ...]) -> None:
        raw = rng.integers(0, 256, (2, type_size), dtype=np.uint8)
        for at in halves:
            raw[:, at : at + 2] = np.full(2, 0.01, "<f2").view(np.uint8).reshape(2, 2)
        writer.add_tensor(name, raw, raw_dtype=kind)

    quantized("token_embd.weight", kinds.Q8_0, 8, 32)
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(32, np.float32))
    quantized("blk.0.attn_q.weight", kinds.Q4_0, 4, 32)
    quantized("blk.0.attn_k.weight", kinds.Q4_1, 4, 32)
    quantized("blk.0.ffn_up.weight", kinds.Q5_0, 4, 64)
    k_blocks("blk.0.ffn_down.weight", kinds.Q4_K, 144, (0, 2))
    k_blocks("output.weight", kinds.Q6_K, 210, (208,))
    # a table type, an FP4 type and a grid type (dequantized through the gguf package)
    k_blocks("blk.0.ffn_gate.weight", kinds.IQ4_XS, 136, (0,))
    quantized("blk.0.attn_v.weight", kinds.MXFP4, 4, 32)
    k_blocks("blk.0.attn_output.weight", kinds.IQ2_XS, 74, (0,))
    writer.add_tensor("encoder.conv1.weight", rng.standard_normal((4, 2, 3)).astype(np.float16))
    writer.add_tensor("encoder.conv1.bias", rng.standard_normal((4, 1)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


SEEDS: dict[str, Seed] = {
    seed.name: seed
    for seed in [
        Seed("keras_h5", "model.h5", "hdf5", _keras3(lambda m, p: m.save(p))),
        Seed("keras_v3", "model.keras", "keras_zip", _keras3(lambda m, p: m.save(p))),
        Seed(
            "keras_weights_h5",
            "model.weights.h5",
            "hdf5",
            _keras3(lambda m, p: m.save_weights(p)),
        ),
        Seed("tf_keras_h5", "model.h5", "hdf5", _tf_keras(weights_only=False)),
        Seed("tf_keras_weights_h5", "weights.h5", "hdf5", _tf_keras(weights_only=True)),
        Seed("torch_zip", "model.pt", "torch_zip", _torch_zip),
        Seed("torch_legacy", "model.pt", "torch_legacy", _torch_legacy),
        Seed("torchscript", "model.pt", "torch_zip", _torchscript),
        Seed("torch_module", "model.pt", "torch_zip", _torch_whole_module),
        Seed("torch_quantized", "model.pt", "torch_zip", _torch_quantized),
        Seed("safetensors", "model.safetensors", "safetensors", _safetensors),
        Seed("onnx", "model.onnx", "onnx", _onnx_inline),
        Seed("onnx_external", "model.onnx", "onnx", _onnx_external, ("weights.bin",)),
        Seed("npz_export", "weights.npz", "npz", _npz_export),
        Seed("npz_compressed", "arrays.npz", "npz", _npz_compressed),
        Seed("npy", "array.npy", "npy", _npy),
        Seed(
            "tf_checkpoint",
            "ckpt.index",
            "tf_checkpoint",
            _tf_checkpoint,
            ("ckpt.data-00000-of-00001",),
        ),
        Seed("tflite", "model.tflite", "tflite", _tflite),
        Seed("gguf", "model.gguf", "gguf", _gguf),
    ]
}


def build_seed(seed: Seed, folder: Path) -> dict[str, bytes]:
    """Save ``seed`` under ``folder/<name>/``; its files' bytes by name, the main file first.
    The frameworks' files are built once and kept in the tests' cache (``framework_cache``)."""
    from tests.framework_cache import build_cached

    def save(where: Path) -> None:
        _save_seed(seed, where)

    where = build_cached(folder / seed.name, save, seed.name)
    return {name: (where / name).read_bytes() for name in (seed.filename, *seed.extra_files)}


def _save_seed(seed: Seed, where: Path) -> None:
    import logging
    import warnings

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # Keras 3 on saving a legacy .h5
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit deprecation
            seed.build(where / seed.filename)
    finally:
        absl.setLevel(level)


class SeedCache(Mapping[str, dict[str, bytes]]):
    """The seeds' files by format, each built when first asked for."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.built: dict[str, dict[str, bytes]] = {}

    def __getitem__(self, name: str) -> dict[str, bytes]:
        if name not in self.built:
            self.built[name] = build_seed(SEEDS[name], self.folder)
        return self.built[name]

    def __iter__(self) -> Iterator[str]:
        return iter(SEEDS)

    def __len__(self) -> int:
        return len(SEEDS)
