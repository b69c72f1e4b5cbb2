"""Resource limits (``weightscope.limits``): each one refuses a small real file once lowered,
through the Python API and the command line, with a line naming the limit and the value to raise
it to; raising it to that value lets the file through. Plus the consistency checks that are not
limits (lying headers), clean lines for deeply nested input, and the unknown-format line."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import h5py
import numpy as np
import onnx
import pytest
from cli_runner import run_cli, run_cli_subprocess
from damaged import EXAMPLE, LOGITS_BIAS, edited_example
from onnx import TensorProto, helper, numpy_helper

import weightscope
from weightscope import LimitError, Limits, UnsafeFileError, WeightscopeError
from weightscope.cli.app import main as cli_main
from weightscope.limits import format_value, parse_assignment, parse_value

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

KiB = 1 << 10
MiB = 1 << 20

# ---------------------------------------------------------------------------------------------
# small real files


def keras_archive(
    folder: Path,
    *,
    layer_extra: object = None,
    compress_weights: bool = False,
    name: str = "model.keras",
) -> Path:
    """A ``.keras`` zip as Keras 3 lays it out: a Sequential config with one Dense layer and its
    weights store (``layers/dense/vars/0..1``), the store deflated if asked."""
    layer_config: dict[str, object] = {"name": "dense", "units": 3, "use_bias": True}
    if layer_extra is not None:
        layer_config["extra"] = layer_extra
    config = {
        "class_name": "Sequential",
        "config": {"name": "seq", "layers": [{"class_name": "Dense", "config": layer_config}]},
    }
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        rng = np.random.default_rng(0)
        h5["layers/dense/vars/0"] = rng.standard_normal((4, 3)).astype(np.float32)
        h5["layers/dense/vars/1"] = np.zeros(3, np.float32)
    path = folder / name
    weights_compression = zipfile.ZIP_DEFLATED if compress_weights else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
        archive.writestr("model.weights.h5", buffer.getvalue(), compress_type=weights_compression)
    return path


def nested_list(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def partly_written_bias(folder: Path) -> Path:
    """The example with its logits bias chunked, 4096 values declared, the first 256 written:
    the file stores 1 KB for 16 KB declared (an expansion of 16)."""

    def edit(h5: h5py.File) -> None:
        del h5[LOGITS_BIAS]
        dataset = h5.create_dataset(LOGITS_BIAS, shape=(4096,), dtype="f4", chunks=(256,))
        dataset[:256] = np.ones(256, np.float32)

    return edited_example(folder, "partial.h5", edit)


def unwritten_bias(folder: Path) -> Path:
    """The example with its logits bias declaring 4096 values and storing none."""

    def edit(h5: h5py.File) -> None:
        del h5[LOGITS_BIAS]
        h5.create_dataset(LOGITS_BIAS, shape=(4096,), dtype="f4", chunks=(256,))

    return edited_example(folder, "unwritten.h5", edit)


def safetensors_file(folder: Path) -> Path:
    data = np.arange(6, dtype="<f4").tobytes()
    header = {"fc.weight": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, len(data)]}}
    raw = json.dumps(header).encode()
    path = folder / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def gguf_file(folder: Path) -> Path:
    """A GGUF file of two float32 tensors, a name and an array of 96 numbers (a header of 608
    bytes), written field by field as the format specifies."""

    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value)) + value.encode()

    kv = text("general.name") + struct.pack("<I", 8) + text("x" * 40)
    kv += text("arr") + struct.pack("<IIQ", 9, 4, 96) + b"\0" * 4 * 96
    header = b"GGUF" + struct.pack("<IQQ", 3, 2, 2) + kv
    for index, name in enumerate(("a.weight", "b.weight")):
        header += text(name) + struct.pack("<IQIQ", 1, 8, 0, 32 * index)
    header += b"\0" * (-len(header) % 32)
    path = folder / "model.gguf"
    path.write_bytes(header + np.arange(16, dtype="<f4").tobytes())
    return path


def tf_checkpoint(folder: Path) -> Path:
    """A TensorFlow checkpoint bundle of one tensor, written by the tests' own table writer."""
    from tf_bundles import HEADER, _entry, write_index

    data = np.arange(6, dtype="<f4").tobytes()
    index = folder / "ckpt.index"
    write_index(index, [HEADER, (b"fc/kernel", _entry((2, 3), 0, len(data), data))])
    (folder / "ckpt.data-00000-of-00001").write_bytes(data)
    return index


def npz_archive(folder: Path) -> Path:
    """An ``np.savez`` of two arrays, each member with its ~128-byte .npy header."""
    path = folder / "weights.npz"
    np.savez(path, **{"fc/kernel": np.ones((2, 3), np.float32), "fc/bias": np.zeros(2, np.float32)})
    return path


def torch_state(folder: Path, legacy: bool = False, **extra: object) -> Path:
    state: dict[str, object] = {"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}
    state.update(extra)
    path = folder / ("legacy.pt" if legacy else "model.pt")
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    return path


def torch_legacy(folder: Path) -> Path:
    return torch_state(folder, legacy=True)


def torch_deep_pickle(folder: Path) -> Path:
    return torch_state(folder, deep=nested_list(40))


def torch_many_floats(folder: Path) -> Path:
    """A list of 200,000 floats beside the tensors: about 4.6 bytes of objects per byte."""
    return torch_state(folder, floats=[i / 7 for i in range(200_000)])


def torch_shared_pickle(folder: Path) -> Path:
    """A tuple whose parts are shared at each of 12 levels: 12,287 nodes counted at each use."""
    shared: tuple[object, ...] = (0,)
    for _ in range(12):
        shared = (shared, shared)
    return torch_state(folder, shared=shared)


def torchscript(folder: Path) -> Path:
    path = folder / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(3, 2)), path)
    return path


def torch_nested_modules(folder: Path) -> Path:
    """A whole pickled module, Sequentials nested 8 deep around a Linear."""
    module: torch.nn.Module = torch.nn.Linear(3, 2)
    for _ in range(8):
        module = torch.nn.Sequential(module)
    path = folder / "nested.pt"
    torch.save(module, path)
    return path


def torch_nested_containers(folder: Path) -> Path:
    """A checkpoint keeping its one tensor three dicts deep."""
    path = folder / "containers.pt"
    torch.save({"a": {"b": {"c": {"w": torch.ones(2, 3)}}}}, path)
    return path


def torch_many_tensors(folder: Path) -> Path:
    path = folder / "many.pt"
    torch.save({f"layer{i}.weight": torch.ones(2, 2) for i in range(12)}, path)
    return path


def torch_views_of_one_storage(folder: Path) -> Path:
    """200 windows onto one storage of 8,192 floats, each 4,096 long: 3.2 MB declared over a
    file of a few tens of KB."""
    path = folder / "views.pt"
    storage = torch.arange(8192, dtype=torch.float32)
    torch.save({f"view{i}.weight": storage[i : i + 4096] for i in range(200)}, path)
    return path


def keras_nested_groups(folder: Path) -> Path:
    """A subclassed model's weights store: one Dense inside a list inside an attribute,
    ``blocks/0/inner/dense/vars/0`` (groups 5 deep)."""
    path = folder / "nested.weights.h5"
    with h5py.File(path, "w") as h5:
        h5["blocks/0/inner/dense/vars/0"] = np.ones((4, 3), np.float32)
        h5["blocks/0/inner/dense/vars/1"] = np.zeros(3, np.float32)
        h5.create_group("vars")
    return path


def tf_saved_model(folder: Path) -> Path:
    """A tf.Module of one variable saved by tf.saved_model.save (a saved_model.pb of ~10 KB)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    module = tf.Module()
    module.w = tf.Variable(tf.ones((4, 3)))
    module.f = tf.function(lambda x: tf.matmul(x, module.w), [tf.TensorSpec((None, 4))])
    tf.saved_model.save(module, str(folder / "module"))
    return folder / "module" / "saved_model.pb"


def onnx_model(
    nodes: list[onnx.NodeProto],
    initializers: list[onnx.TensorProto] = (),  # type: ignore[assignment]
    sparse: list[onnx.SparseTensorProto] = (),  # type: ignore[assignment]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=list(initializers),
        sparse_initializer=list(sparse),
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 8
    return proto


def onnx_nested_ifs(folder: Path) -> Path:
    """A Conv inside ``If`` bodies nested 4 deep: 5 graphs in all."""
    kernel = numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "W")
    body = helper.make_graph(
        [helper.make_node("Conv", ["X", "W"], ["Y"], name="conv")],
        "leaf",
        [],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
    )
    for level in range(4):
        node = helper.make_node(
            "If", ["C"], ["Y"], name=f"if{level}", then_branch=body, else_branch=body
        )
        body = helper.make_graph(
            [node], f"g{level}", [], [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]
        )
    proto = onnx_model(list(body.node), [kernel])
    path = folder / "nested.onnx"
    onnx.save(proto, path)
    return path


def onnx_identity_chain(folder: Path) -> Path:
    """A Conv whose weight is ten ``Identity`` nodes away from its initializer."""
    kernel = numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "W")
    nodes = [
        helper.make_node("Identity", ["W" if i == 0 else f"W{i}"], [f"W{i + 1}"], name=f"id{i}")
        for i in range(10)
    ]
    nodes.append(helper.make_node("Conv", ["X", "W10"], ["Y"], name="conv"))
    path = folder / "chain.onnx"
    onnx.save(onnx_model(nodes, [kernel]), path)
    return path


def onnx_sparse(folder: Path) -> Path:
    """A sparse initializer of dense shape (64, 64) holding 4 values."""
    values = numpy_helper.from_array(np.ones(4, np.float32), "S")
    indices = numpy_helper.from_array(np.array([0, 65, 130, 4095], np.int64), "S_indices")
    sparse = helper.make_sparse_tensor(values, indices, [64, 64])
    node = helper.make_node("Relu", ["X"], ["Y"], name="relu")
    path = folder / "sparse.onnx"
    onnx.save(onnx_model([node], sparse=[sparse]), path)
    return path


# ---------------------------------------------------------------------------------------------
# one case per limit


@dataclass(frozen=True)
class Case:
    limit: str
    build: Callable[[Path], Path]
    low: int
    """A value of the limit the file is over."""
    words: tuple[str, ...] = ()
    """What the refusal line (or note) also says."""
    note: bool = False
    """The limit stops a search with a note instead of refusing the file."""
    fixed: dict[str, int] = field(default_factory=dict)
    """Other limits set alike in both runs."""
    command: str = "inspect"
    """The command the limit applies to (``export`` bounds what it writes)."""


CASES = [
    Case("max_json_bytes", keras_archive, 64, ("config.json declares",)),
    Case(
        "max_json_depth",
        lambda f: keras_archive(f, layer_extra=nested_list(40)),
        30,
        ("config.json nests arrays and objects 45 deep",),
    ),
    Case(
        "max_extracted_bytes",
        lambda f: keras_archive(f, compress_weights=True),
        1024,
        ("model.weights.h5 is compressed and declares",),
    ),
    Case(
        "max_zip_ratio",
        lambda f: keras_archive(f, compress_weights=True),
        2,
        ("model.weights.h5 declares", "compressed (a ratio of"),
    ),
    Case(
        "hdf5_checked_above",
        unwritten_bias,
        1024,
        ("declares shape (4096,) (16,384 bytes) but the file stores 0 bytes",),
    ),
    Case(
        "max_hdf5_expansion",
        partly_written_bias,
        4,
        ("(16,384 bytes) but the file stores 1,024 bytes",),
        fixed={"hdf5_checked_above": 1024},
    ),
    Case(
        "max_hdf5_chunk_bytes",
        partly_written_bias,
        512,
        ("of shape (4096,) is stored in chunks of shape (256,) (1,024 bytes each)",),
    ),
    Case(
        "max_hdf5_seconds",
        keras_archive,
        0,
        ("the HDF5 library spent over 0 s in one step of reading model.weights.h5's structure",),
    ),
    Case("max_safetensors_header_bytes", safetensors_file, 32, ("the header declares",)),
    Case("max_tf_index_bytes", tf_checkpoint, 64, ("the index is",)),
    Case("max_gguf_header_bytes", gguf_file, 400, ("the header runs past",)),
    Case("max_gguf_entries", gguf_file, 3, ("the header declares 2 tensors and 2 metadata keys",)),
    Case("max_gguf_array_elements", gguf_file, 50, ("metadata arrays hold 96 elements",)),
    Case("max_npy_header_bytes", npz_archive, 64, ("member 'fc/kernel.npy' declares a header",)),
    Case("max_pickle_bytes", torch_state, 64, ("data.pkl' declares",)),
    Case("max_pickle_bytes", torch_legacy, 128, ("the pickle holds",)),
    Case(
        "max_pickle_expansion",
        torch_many_floats,
        2,
        ("unpickling builds more than", "bytes of objects (estimated) from"),
    ),
    Case("max_pickle_depth", torch_deep_pickle, 30, ("nested more than 30 deep in the pickle",)),
    Case("max_pickle_tree", torch_shared_pickle, 8000, ("shares parts so often",)),
    Case("max_code_bytes", torchscript, 100, ("TorchScript code declares",)),
    Case("max_nesting", torch_nested_modules, 4, ("modules nested more than 4 deep",)),
    Case("max_nesting", keras_nested_groups, 3, ("HDF5 groups nested more than 3 deep",)),
    Case(
        "max_nesting",
        torch_nested_containers,
        2,
        ("containers nested more than 2 deep in the checkpoint were not searched",),
        note=True,
    ),
    Case(
        "max_checkpoint_steps",
        torch_many_tensors,
        10,
        ("the search for tensors stopped after 10 objects",),
        note=True,
    ),
    Case("max_graph_depth", onnx_nested_ifs, 3, ("graphs nested more than 3 deep",)),
    Case(
        "max_static_chain",
        onnx_identity_chain,
        5,
        ("a chain of more than 5 static nodes was not followed",),
        note=True,
    ),
    Case(
        "max_dense_elements",
        onnx_sparse,
        1000,
        ("sparse tensor 'S' of shape [64, 64] is too large to densify (4,096 elements)",),
    ),
    Case("max_saved_model_bytes", tf_saved_model, 1024, ("saved_model.pb holds",)),
    Case(
        "max_read_ratio", torch_views_of_one_storage, 16, ("its tensors declare 3,276,800 bytes",)
    ),
    Case(
        "max_export_ratio",
        onnx_sparse,
        2,
        ("exporting would write 16,384 bytes from",),
        command="export",
    ),
]
CASE_IDS = [f"{case.limit}-{case.build.__name__}" for case in CASES]


def read_all(path: Path, limits: Limits) -> weightscope.Model:
    """Load and compute the statistics of every tensor (limits on data apply when it is read)."""
    with weightscope.load(path, limits=limits) as model:
        for _, tensor in model.tensors():
            tensor.stats()
        return model


def suggested(line: str, limit: str) -> str:
    match = re.search(rf"--limit {limit}=(\w+)\)", line)
    assert match is not None, line
    return match.group(1)


BY_URL = {
    "max_remote_whole_bytes": "test_a_file_fetched_whole_is_over_max_remote_whole_bytes",
    "remote_range_bytes": "test_requests_are_at_most_remote_range_bytes",
    "remote_ranges_in_flight": "test_ranges_in_flight_is_a_limit",
    "remote_head_bytes": "test_the_first_bytes_are_kept_up_to_remote_head_bytes",
    "remote_zip_header_bytes": "test_zip_reads_follow_their_limits",
    "remote_stream_bytes": "test_zip_reads_follow_their_limits",
}
"""The limits of reading by URL, each tested in tests/test_remote_bounds.py against a server on
loopback (the test named), through the API and ``--limit``."""


def test_every_limit_has_a_case():
    assert {case.limit for case in CASES} | set(BY_URL) == set(Limits.names())
    tests = (Path(__file__).parent / "test_remote_bounds.py").read_text()
    for test in BY_URL.values():
        assert f"def {test}(" in tests, test


@pytest.mark.parametrize(
    "case",
    [c for c in CASES if c.command == "inspect"],
    ids=lambda c: f"{c.limit}-{c.build.__name__}",
)
def test_limit_through_the_api(case, tmp_path):
    path = case.build(tmp_path)
    low = Limits(**{**case.fixed, case.limit: case.low})
    shown = format_value(case.limit, case.low)
    if case.note:
        model = read_all(path, low)
        note = next(n for n in model.notes if f"--limit {case.limit}=" in n)
        for word in case.words:
            assert word in note, (word, note)
        raised = parse_value(re.search(rf"--limit {case.limit}=(\w+)", note).group(1))  # type: ignore[union-attr]
        assert raised > case.low
        enough = read_all(path, low.replace(**{case.limit: raised}))
        assert not any(f"--limit {case.limit}=" in n for n in enough.notes)
        assert len(list(enough.tensors())) > len(list(model.tensors())) or case.limit == (
            "max_static_chain"
        )
        if case.limit == "max_static_chain":
            conv = next(layer for layer in enough.layers if layer.name == "conv")
            assert conv.tensor("kernel").numpy().shape == (3, 2, 3, 3)
        return
    with pytest.raises(LimitError) as refused:
        read_all(path, low)
    line = str(refused.value)
    assert "\n" not in line and line.startswith(f"{path}: "), line
    assert f", over the limit {case.limit}={shown} (raise it with --limit {case.limit}=" in line
    for word in case.words:
        assert word in line, (word, line)
    assert refused.value.limit == case.limit and refused.value.value == case.low
    raised = parse_value(suggested(line, case.limit))
    assert raised > case.low and raised >= refused.value.needed
    model = read_all(path, low.replace(**{case.limit: raised}))
    assert list(model.tensors())


@pytest.mark.parametrize("case", [c for c in CASES if not c.note], ids=lambda c: c.limit)
def test_limit_through_the_command_line(case, tmp_path, capsys):
    path = case.build(tmp_path)
    fixed = [arg for name, value in case.fixed.items() for arg in ("--limit", f"{name}={value}")]
    if case.command == "export":
        fixed += ["-o", str(tmp_path / "out.npz")]
    status = cli_main([case.command, str(path), *fixed, "--limit", f"{case.limit}={case.low}"])
    captured = capsys.readouterr()
    assert status == 2 and captured.out == "", captured
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    line = lines[0]
    assert line.startswith(f"weightscope: {path}: "), line
    assert f"over the limit {case.limit}={format_value(case.limit, case.low)}" in line
    raise_to = suggested(line, case.limit)
    status = cli_main([case.command, str(path), *fixed, "--limit", f"{case.limit}={raise_to}"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    if case.command == "inspect":
        assert captured.err == ""


def test_the_limit_line_reads_as_documented(tmp_path):
    """``config.json declares 80,000,000 bytes, over the limit max_json_bytes=64M (raise it with
    --limit max_json_bytes=128M)``, here with a zip entry that declares 80,000,000 bytes."""
    path = tmp_path / "big.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b" " * 80_000_000)
        archive.writestr("model.weights.h5", b"")
    with pytest.raises(LimitError) as refused:
        weightscope.load(path)
    assert str(refused.value) == (
        f"{path}: config.json declares 80,000,000 bytes, over the limit max_json_bytes=64M "
        "(raise it with --limit max_json_bytes=128M)"
    )


def test_the_command_that_compares_takes_limits_too(tmp_path, capsys):
    path = safetensors_file(tmp_path)
    low = "max_safetensors_header_bytes=8"
    assert cli_main(["compare", str(path), str(path), "--limit", low]) == 2
    assert f"over the limit {low}" in capsys.readouterr().err
    assert cli_main(["compare", str(path), str(path)]) == 0
    with pytest.raises(LimitError, match=low):
        weightscope.compare(path, path, limits=Limits(max_safetensors_header_bytes=8))
    assert weightscope.compare(path, path, limits=Limits()).exit_code == 0


@pytest.mark.parametrize("command", ["export", "plot", "init", "params", "explain", "report"])
def test_every_command_reading_a_file_takes_limit(command, tmp_path, capsys):
    path = keras_archive(tmp_path)
    args = {
        "export": ["-o", str(tmp_path / "w.npz")],
        "plot": ["--layer", "dense", "-o", str(tmp_path / "k.png")],
        "init": [],
        "params": [],
        "explain": ["dense"],
        "report": ["-o", str(tmp_path / "r.html")],
    }[command]
    status = cli_main([command, str(path), *args, "--limit", "max_json_bytes=16"])
    err = capsys.readouterr().err
    assert status == 2 and "over the limit max_json_bytes=16" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]


# ---------------------------------------------------------------------------------------------
# the Limits object and the --limit option


def test_defaults():
    assert {item.name: item.default for item in fields(Limits)} == {
        "max_json_bytes": 64 * MiB,
        "max_json_depth": 128,
        "max_extracted_bytes": 4 << 30,
        "max_zip_ratio": 1024,
        "hdf5_checked_above": 64 * MiB,
        "max_hdf5_expansion": 1024,
        "max_hdf5_chunk_bytes": 64 * MiB,
        "max_hdf5_seconds": 3,
        "max_safetensors_header_bytes": 100 * MiB,
        "max_npy_header_bytes": 16 * KiB,
        "max_pickle_bytes": 1 << 30,
        "max_pickle_expansion": 64,
        "max_pickle_depth": 1000,
        "max_pickle_tree": 1 << 26,
        "max_code_bytes": 64 * MiB,
        "max_nesting": 256,
        "max_checkpoint_steps": 1_000_000,
        "max_graph_depth": 32,
        "max_static_chain": 256,
        "max_dense_elements": 1 << 30,
        "max_saved_model_bytes": 1 << 30,
        "max_read_ratio": 16,
        "max_export_ratio": 16,
        "max_remote_whole_bytes": 64 * MiB,
        "remote_range_bytes": 16 * MiB,
        "remote_ranges_in_flight": 2,
        "remote_head_bytes": 4 * KiB,
        "remote_zip_header_bytes": 1 * KiB,
        "remote_stream_bytes": 64 * KiB,
        "max_tf_index_bytes": 256 * MiB,
        "max_gguf_header_bytes": 256 * MiB,
        "max_gguf_entries": 1 << 20,
        "max_gguf_array_elements": 1 << 22,
    }


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_nesting must be an integer >= 0"):
        Limits(max_nesting=-1)
    with pytest.raises(ValueError, match="must be an integer"):
        Limits(max_nesting=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Limits().replace(no_such_limit=3)
    with pytest.raises(TypeError, match=r"weightscope\.Limits"):
        weightscope.load(EXAMPLE, limits={"max_nesting": 3})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "value"),
    [("1000", 1000), ("1_000_000", 1_000_000), ("64M", 64 * MiB), ("2G", 2 << 30),
     ("16k", 16 << 10), ("1T", 1 << 40), ("64MB", 64 * MiB), ("64MiB", 64 * MiB), (" 3 ", 3)],
)  # fmt: skip
def test_values_take_binary_suffixes(text, value):
    assert parse_value(text) == value


@pytest.mark.parametrize("text", ["", "M", "-1", "1.5G", "64X", "1__", "ten"])
def test_bad_values_are_refused(text):
    with pytest.raises(ValueError):
        parse_value(text)


def test_values_are_shown_as_they_are_written():
    assert format_value("max_json_bytes", 64 * MiB) == "64M"
    assert format_value("max_json_bytes", 4 << 30) == "4G"
    assert format_value("max_json_bytes", 1000) == "1000"
    assert format_value("max_pickle_tree", 1 << 26) == "67108864"  # counts stay numbers
    assert parse_assignment("max-json-bytes=2G") == ("max_json_bytes", 2 << 30)


def test_unknown_limit_name_is_an_argparse_error_listing_the_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["inspect", str(EXAMPLE), "--limit", "max_jsn_bytes=1G"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --limit: unknown limit 'max_jsn_bytes'" in err
    for name in Limits.names():
        assert name in err


@pytest.mark.parametrize("arg", ["max_json_bytes", "max_json_bytes=lots", "max_json_bytes=-1"])
def test_malformed_limit_option_is_an_argparse_error(arg, capsys):
    with pytest.raises(SystemExit):
        cli_main(["inspect", str(EXAMPLE), "--limit", arg])
    assert "argument --limit" in capsys.readouterr().err


def test_limit_is_in_the_help():
    """Each command's help points at ``weightscope limits``, which names every limit."""
    result = run_cli("inspect", "--help")
    assert result.returncode == 0
    assert "--limit NAME=VALUE" in result.stdout and "weightscope limits" in result.stdout
    listed = run_cli("limits")
    assert all(f"\n{name} = " in listed.stdout for name in Limits.names())


def test_the_real_command_line_names_the_limit(tmp_path):
    path = keras_archive(tmp_path)
    result = run_cli_subprocess("inspect", path, "--limit", "max_json_bytes=64")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"weightscope: {path}: config.json declares {path_member_size(path, 'config.json'):,} "
        "bytes, over the limit max_json_bytes=64 (raise it with --limit max_json_bytes=256)"
    ]


def path_member_size(path: Path, name: str) -> int:
    with zipfile.ZipFile(path) as archive:
        return archive.getinfo(name).file_size


# ---------------------------------------------------------------------------------------------
# clean lines: nesting past what the parsers take, unknown formats, the format a file looked like


def test_deeply_nested_config_json_is_one_clean_line(tmp_path, capsys):
    path = tmp_path / "deep.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "[" * 100_000 + "]" * 100_000)
        archive.writestr("model.weights.h5", b"")
    assert cli_main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"weightscope: {path}: config.json nests arrays and objects 100,000 deep, over the limit "
        "max_json_depth=128 (raise it with --limit max_json_depth=131072)\n"
    )


def test_nesting_past_what_python_parses_is_one_clean_line(tmp_path, capsys):
    """With the limit raised past what Python's own JSON parser can take, the line says so."""
    path = tmp_path / "deep.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", '{"a": ' * 100_000 + "1" + "}" * 100_000)
        archive.writestr("model.weights.h5", b"")
    assert cli_main(["inspect", str(path), "--limit", "max_json_depth=1M"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "config.json is not readable JSON: nested 100,000 deep: deeper than Python's" in err


def test_deeply_nested_model_config_attribute_is_one_clean_line(tmp_path, capsys):
    def edit(h5: h5py.File) -> None:
        h5.attrs["model_config"] = '{"config": ' + "[" * 50_000 + "]" * 50_000 + "}"

    path = edited_example(tmp_path, "deep_config.h5", edit)
    assert cli_main(["inspect", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"weightscope: {path}: attribute model_config nests arrays and objects 50,001 deep, over "
        "the limit max_json_depth=128 (raise it with --limit max_json_depth=65536)\n"
    )


def test_a_deep_config_within_the_limit_is_shown(tmp_path):
    """A layer config nesting as deep as the limit allows goes through every output."""
    path = keras_archive(tmp_path, layer_extra=nested_list(120))
    for args in (["--layer", "dense"], ["--json"], ["--layer", "dense", "--json"]):
        result = run_cli("inspect", path, *args)
        assert result.returncode == 0, result.stderr


def test_unknown_format_lists_the_supported_ones(tmp_path, capsys):
    path = tmp_path / "x.bin"
    path.write_bytes(b"\x01\x02 not a model " * 10)
    assert cli_main(["inspect", str(path)]) == 2
    assert capsys.readouterr().err == (
        f"weightscope: {path}: unknown format (not Keras .h5/.keras/.weights.h5, PyTorch "
        ".pt/.pth/.bin/.ckpt zip or legacy pickle, TorchScript, .safetensors, ONNX .onnx, "
        "TFLite .tflite, NumPy .npz/.npy, GGUF .gguf, a TensorFlow checkpoint .index, or a "
        "SavedModel directory)\n"
    )


@pytest.mark.parametrize(
    ("build", "prefix"),
    [
        (lambda f: _cut(EXAMPLE, f / "cut.h5", 0.5), "damaged Keras HDF5 file: "),
        (lambda f: _cut(torch_legacy(f), f / "cut.pt", 0.6), "damaged PyTorch checkpoint (legacy"),
        (lambda f: _cut(onnx_sparse(f), f / "cut.onnx", 0.5), "damaged ONNX model: "),
        (
            lambda f: _edit_safetensors_offsets(safetensors_file(f)),
            "damaged .safetensors file: tensor 'fc.weight' lies outside the file",
        ),
        (
            lambda f: _without_storage(torch_state(f)),
            "damaged PyTorch checkpoint: zip entry 'model/data/0' missing",
        ),
        (
            lambda f: _without_storage(torchscript(f)),
            "damaged TorchScript archive: zip entry ",
        ),
    ],
    ids=["keras_h5", "torch_legacy", "onnx", "safetensors", "torch_zip", "torchscript"],
)
def test_error_names_the_format_the_file_looked_like(build, prefix, tmp_path):
    path = build(tmp_path)
    with pytest.raises(WeightscopeError) as error:
        read_all(path, Limits())
    line = str(error.value)
    assert line.startswith(f"{path}: {prefix}"), line
    assert line.count("damaged") == 1, line


def _cut(source: Path, target: Path, fraction: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def _edit_safetensors_offsets(path: Path) -> Path:
    data = path.read_bytes()
    length = struct.unpack("<Q", data[:8])[0]
    header = data[8 : 8 + length].replace(b"[0, 24]", b"[0, 99]")
    path.write_bytes(data[:8] + header + data[8 + length :])
    return path


def _without_storage(path: Path) -> Path:
    target = path.with_name("without_" + path.name)
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, "w") as out:
        for info in source.infolist():
            if not re.search(r"(^|/)data/0$", info.filename):
                out.writestr(info, source.read(info))
    return target


def test_damage_found_while_reading_names_the_format(tmp_path):
    path = torch_state(tmp_path)
    with weightscope.load(path) as model:
        tensor = model.layers[0].tensors[0]
        with open(path, "r+b") as handle:
            handle.truncate(100)  # the file shrinks after loading
        with pytest.raises(WeightscopeError, match="damaged PyTorch checkpoint: tensor data cut"):
            tensor.numpy()


# ---------------------------------------------------------------------------------------------
# consistency checks found in the audit (not limits: they hold whatever the limits are)


DEEP_GROUPS = """
import sys, h5py
with h5py.File(sys.argv[1], "w") as h5:
    group = h5.create_group("layers").id
    for _ in range(12_000):
        group = h5py.h5g.create(group, b"g")
"""


@pytest.mark.slow
def test_hdf5_groups_nested_past_the_c_stack_are_refused(tmp_path):
    """h5py's ``visititems`` overflows the C stack on groups nested 12,000 deep (a 12 MB file);
    the store is walked without it, and the nesting refused. Run apart: a crash would be a
    segmentation fault."""
    path = tmp_path / "deep.weights.h5"
    # written apart too: closing the file recurses through libhdf5 as deep, and it crashed a
    # pytest-xdist worker once
    subprocess.run([sys.executable, "-c", DEEP_GROUPS, str(path)], check=True, timeout=120)
    result = run_cli_subprocess("inspect", path, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "HDF5 groups nested more than 256 deep, over the limit max_nesting=256" in result.stderr
    raised = run_cli_subprocess("inspect", path, "--limit", "max_nesting=1M", timeout=120)
    assert raised.returncode == 0, (raised.returncode, raised.stderr)


def _store_with(folder: Path, name: str, make: Callable[[h5py.File], None]) -> Path:
    path = folder / name
    with h5py.File(path, "w") as h5:
        h5["layers/dense/vars/0"] = np.ones((4, 3), np.float32)
        make(h5)
    return path


def test_hdf5_data_kept_in_other_files_is_refused(tmp_path):
    """External raw storage, virtual datasets and external links would make HDF5 read any file
    on the machine as weights."""
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"password" * 4)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = np.arange(3, dtype=np.float32)

    def external_raw(h5: h5py.File) -> None:
        h5.create_dataset("layers/dense/vars/1", (8,), "f4", external=[(str(secret), 0, 32)])

    def virtual(h5: h5py.File) -> None:
        layout = h5py.VirtualLayout(shape=(3,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(other), "x", shape=(3,))
        h5.create_virtual_dataset("layers/dense/vars/1", layout)

    def external_link(h5: h5py.File) -> None:
        h5["layers/dense/vars/1"] = h5py.ExternalLink(str(other), "x")

    for make, words in (
        (external_raw, "in external raw data files"),
        (virtual, "(a virtual dataset)"),
    ):
        path = _store_with(tmp_path, f"{make.__name__}.weights.h5", make)
        with pytest.raises(UnsafeFileError, match=re.escape(words)):
            read_all(path, Limits())
    # an external link is not followed at all: refused where the reader meets it
    path = _store_with(tmp_path, "link.weights.h5", external_link)
    with pytest.raises(UnsafeFileError, match="'/layers/dense/vars/1' is an external link to"):
        read_all(path, Limits())


def test_legacy_pickle_declaring_more_bytes_than_the_file_holds(tmp_path):
    """A BINBYTES8 of 2**40 bytes: the length is checked against the file before anything is
    read (Python's file ``read(n)`` would allocate n bytes first)."""
    from torch_builders import legacy_stream

    root = b"\x80\x04\x8e" + struct.pack("<Q", 2**40) + b"abc."
    path = tmp_path / "lying.pt"
    path.write_bytes(legacy_stream(root))
    with pytest.raises(WeightscopeError) as error:
        weightscope.load(path)
    line = str(error.value)
    assert "damaged PyTorch checkpoint (legacy format): unreadable pickle" in line, line
    assert "memory" not in line


def test_safetensors_header_length_past_the_end_is_named(tmp_path):
    path = safetensors_file(tmp_path)
    data = bytearray(path.read_bytes())
    data[:8] = struct.pack("<Q", 10**6)
    path.write_bytes(bytes(data))
    with pytest.raises(WeightscopeError, match=r"the header declares 1,000,000 bytes, more than"):
        weightscope.load(path)


def test_a_million_dims_are_refused_quickly(tmp_path):
    """The product of a million large dims would take minutes to compute."""
    header = {"w": {"dtype": "F32", "shape": [2**62] * 200_000, "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode()
    path = tmp_path / "dims.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0" * 4)
    proto = onnx_model([helper.make_node("Relu", ["X"], ["Y"])])
    tensor = proto.graph.initializer.add()
    tensor.name, tensor.data_type = "w", TensorProto.FLOAT
    tensor.dims.extend([2**62] * 200_000)
    tensor.raw_data = b"\0" * 4
    onnx_path = tmp_path / "dims.onnx"
    onnx_path.write_bytes(proto.SerializeToString())
    start = time.monotonic()
    with pytest.raises(WeightscopeError, match="bad header entry"):
        weightscope.load(path)
    with pytest.raises(WeightscopeError, match="has 200,000 dims"):
        weightscope.load(onnx_path)
    assert time.monotonic() - start < 10


def test_layer_scopes_with_many_suffixes_match_in_linear_time():
    from weightscope.formats.keras.legacy_h5 import _same_layer

    assert _same_layer("conv_1_2", "conv") and _same_layer("conv", "conv")
    assert not _same_layer("conv_12", "conv_1") and not _same_layer("conv_x", "conv")
    hostile = "a" + "_1" * 200_000
    start = time.monotonic()
    assert _same_layer(hostile, "a") and not _same_layer(hostile + "x", "a")
    assert time.monotonic() - start < 2


def test_torchscript_constants_that_would_exhaust_memory_are_skipped():
    from weightscope.formats.pytorch.files import _NOT_LITERAL, _literal

    assert _literal("(1, 2)") == (1, 2)
    assert _literal("-" * 4000 + "1") is _NOT_LITERAL or isinstance(_literal("-" * 4000 + "1"), int)
    assert _literal("-" * 100_000 + "1") is _NOT_LITERAL
    assert _literal("[" * 300 + "]" * 300) is _NOT_LITERAL


def test_example_files_read_with_default_limits(tmp_path):
    for framework in ("keras", "pytorch", "onnx"):
        path = tmp_path / weightscope.example_path(framework).name
        shutil.copy(weightscope.example_path(framework), path)
        model = read_all(path, Limits())
        assert model.params.total == 3114 or framework != "keras"
