"""ONNX files as containers: external data (and locations that try to leave the model's folder),
tensor data cut out of the .onnx and read by offset, every element type, sniffing, the graph
features that decide what is listed, live ``ModelProto`` objects, and malformed files."""

from __future__ import annotations

import builtins
import json
import os
import sys
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ml_dtypes = pytest.importorskip("ml_dtypes")

from cli_runner import run_cli  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from torch_builders import assert_one_error_line, digest  # noqa: E402

import weightscope  # noqa: E402
from weightscope.formats.onnx.wire import SMALL_BULK_BYTES  # noqa: E402
from weightscope.limits import Limits  # noqa: E402

MAX_GRAPH_DEPTH = Limits().max_graph_depth

FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64
OPSET = 17

# ---------------------------------------------------------------------------------------------
# builders


def vinfo(name: str, elem_type: int = FLOAT, shape: list[int] | None = None) -> object:
    return helper.make_tensor_value_info(name, elem_type, shape)


def make_model(
    nodes: list[onnx.NodeProto],
    initializers: Sequence[onnx.TensorProto] = (),
    inputs: tuple[str, ...] = ("X",),
    outputs: tuple[str, ...] = ("Y",),
    *,
    sparse: Sequence[onnx.SparseTensorProto] = (),
    producer: tuple[str, str] | None = ("pytorch", "2.13.0"),
    opsets: dict[str, int] | None = None,
    extra_inputs: Sequence[object] = (),
) -> onnx.ModelProto:
    """A model with ``nodes`` and ``initializers`` (nothing checked: malformed ones too)."""
    graph = helper.make_graph(
        nodes,
        "g",
        [vinfo(n) for n in inputs] + list(extra_inputs),
        [vinfo(n) for n in outputs],
        list(initializers),
        sparse_initializer=list(sparse),
    )
    kwargs = (
        {} if producer is None else {"producer_name": producer[0], "producer_version": producer[1]}
    )
    imports = [helper.make_opsetid(d, v) for d, v in (opsets or {"": OPSET}).items()]
    model = helper.make_model(graph, opset_imports=imports, **kwargs)
    model.ir_version = 8
    return model


def write(path: Path, model: onnx.ModelProto) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def conv_model(rng: np.random.Generator, out: int = 16, inp: int = 8) -> onnx.ModelProto:
    """One Conv: a 16x8x3x3 kernel (4608 bytes, above the cut-out threshold) and a bias."""
    kernel = rng.standard_normal((out, inp, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(out).astype(np.float32)
    node = helper.make_node("Conv", ["X", "conv.weight", "conv.bias"], ["Y"], name="conv")
    return make_model(
        [node],
        [
            numpy_helper.from_array(kernel, "conv.weight"),
            numpy_helper.from_array(bias, "conv.bias"),
        ],
    )


def reference(tensor: onnx.TensorProto) -> np.ndarray:
    """``tensor`` as onnx reads it; bfloat16 and float8 widened to float32 as weightscope does."""
    array = numpy_helper.to_array(tensor)
    if array.dtype.name == "bfloat16" or array.dtype.name.startswith("float8"):
        return array.astype(np.float32)
    return array


def by_name(model: weightscope.Model) -> dict[str, weightscope.Tensor]:
    """Each stored tensor once, where it is first listed."""
    seen: dict[str, weightscope.Tensor] = {}
    for _, tensor in model.tensors():
        seen.setdefault(tensor.name, tensor)
    return seen


def assert_same_values(model: weightscope.Model, expected: dict[str, np.ndarray]) -> None:
    tensors = by_name(model)
    assert sorted(tensors) == sorted(expected)
    for name, want in expected.items():
        np.testing.assert_array_equal(tensors[name].numpy(), want, err_msg=name, strict=True)


def external_tensor(name: str, dims: tuple[int, ...], **info: object) -> onnx.TensorProto:
    """A float tensor whose data the model says lies in another file (entries as given)."""
    tensor = TensorProto(name=name, data_type=FLOAT, dims=list(dims))
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in info.items():
        entry = tensor.external_data.add()
        entry.key, entry.value = key, str(value)
    return tensor


@pytest.fixture
def pread_log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int]]:
    """Every positioned read (``os.pread``, ``os.preadv``) made while the test runs: (file read,
    bytes asked for, offset)."""
    log: list[tuple[str, int, int]] = []

    def path_of(fd: int) -> str:
        if sys.platform == "darwin":
            import fcntl

            name = fcntl.fcntl(fd, fcntl.F_GETPATH, bytes(1024))  # type: ignore[attr-defined]
            return os.path.realpath(name.split(b"\0", 1)[0].decode())
        return os.path.realpath(f"/proc/self/fd/{fd}")

    real_pread = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        log.append((path_of(fd), n, offset))
        return real_pread(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    if hasattr(os, "preadv"):
        real_preadv = os.preadv

        def preadv(fd: int, buffers: list[memoryview], offset: int, *flags: int) -> int:
            log.append((path_of(fd), sum(memoryview(b).nbytes for b in buffers), offset))
            return real_preadv(fd, buffers, offset, *flags)

        monkeypatch.setattr(os, "preadv", preadv)
    return log


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The real path of every file opened (``os.open``, ``open``) while the test runs."""
    log: list[str] = []
    real_os_open, real_open = os.open, builtins.open

    def os_open(path: object, *args: object, **kwargs: object) -> int:
        log.append(os.path.realpath(os.fspath(path)))  # type: ignore[arg-type]
        return real_os_open(path, *args, **kwargs)  # type: ignore[arg-type]

    def py_open(file: object, *args: object, **kwargs: object) -> object:
        if isinstance(file, (str, os.PathLike)):
            log.append(os.path.realpath(os.fspath(file)))
        return real_open(file, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", py_open)
    return log


# ---------------------------------------------------------------------------------------------
# external data


def save_external(folder: Path, model: onnx.ModelProto, one_file: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.onnx"
    onnx.save_model(
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=one_file,
        location="w.bin",
        size_threshold=0,
    )
    return path


def test_external_data_reads_what_onnx_reads(tmp_path, rng):
    path = save_external(tmp_path / "m", conv_model(rng))
    assert path.stat().st_size < 1000  # the weights really are elsewhere
    expected = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    with weightscope.load(path) as model:
        assert (model.framework, model.format) == ("onnx", "onnx")
        assert_same_values(model, expected)
        assert "external data read from: w.bin" in model.notes
        layer = model.layer("conv")
        assert layer.kind == "conv2d"
        np.testing.assert_array_equal(layer.tensor("kernel").canonical(), expected["conv.weight"])
        stats = layer.tensor("kernel").stats()
        assert stats.mean == pytest.approx(float(expected["conv.weight"].mean()), rel=1e-5)
        assert model.params.total == 16 * 8 * 9 + 16


def test_external_data_is_read_only_when_asked_for(tmp_path, rng, pread_log):
    path = save_external(tmp_path / "m", conv_model(rng))
    data_file = path.parent / "w.bin"
    kernel_before = numpy_helper.to_array(onnx.load(path).graph.initializer[0])
    with weightscope.load(path) as model:
        assert pread_log == []  # listing the layers read no tensor bytes
        # the data is not held either: change it on disk, and the new values are what is read
        original = data_file.read_bytes()
        negated = (-np.frombuffer(original, np.float32)).tobytes()
        with open(data_file, "r+b") as handle:
            handle.write(negated)
        kernel = model.layer("conv").tensor("kernel")
        bias = model.layer("conv").tensor("bias")
        first = kernel.numpy()
        assert pread_log and {f for f, _, _ in pread_log} == {str(data_file.resolve())}
        reads = len(pread_log)
        np.testing.assert_array_equal(first, -kernel_before)
        bias.stats()
        assert len(pread_log) > reads


def test_external_data_in_several_files(tmp_path, rng):
    model_proto = conv_model(rng)
    path = save_external(tmp_path / "m", model_proto, one_file=False)
    data_files = sorted(p.name for p in path.parent.iterdir() if p != path)
    assert len(data_files) == 2
    expected = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    with weightscope.load(path) as model:
        assert_same_values(model, expected)
        assert f"external data read from: {', '.join(data_files)}" in model.notes


def test_external_data_beside_inline_data(tmp_path, rng):
    """``size_threshold`` keeps the small bias inline: both are read."""
    path = tmp_path / "m" / "model.onnx"
    path.parent.mkdir()
    proto = conv_model(rng)
    onnx.save_model(proto, path, save_as_external_data=True, location="w.bin", size_threshold=1024)
    expected = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    with weightscope.load(path) as model:
        assert_same_values(model, expected)
        assert "external data read from: w.bin" in model.notes


def test_external_data_in_a_subfolder(tmp_path, rng):
    folder = tmp_path / "m"
    (folder / "data").mkdir(parents=True)
    path = folder / "model.onnx"
    onnx.save_model(
        conv_model(rng), path, save_as_external_data=True, location="data/w.bin", size_threshold=0
    )
    expected = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    with weightscope.load(path) as model:
        assert_same_values(model, expected)
        assert any(n.startswith("external data read from: ") and "w.bin" in n for n in model.notes)


def test_external_data_cli_inspect_and_export(tmp_path, rng):
    path = save_external(tmp_path / "m", conv_model(rng))
    expected = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    result = run_cli("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert "external data read from: w.bin" in data["notes"]
    out = tmp_path / "w.npz"
    result = run_cli("export", path, "-o", out)
    assert result.returncode == 0, result.stderr
    with np.load(out) as npz:
        np.testing.assert_array_equal(npz["conv/kernel"], expected["conv.weight"])
        np.testing.assert_array_equal(npz["conv/bias"], expected["conv.bias"])


# ---------------------------------------------------------------------------------------------
# external data that must not be read

KERNEL_DIMS = (16, 8, 3, 3)
KERNEL_BYTES = 16 * 8 * 9 * 4


def escaping_model(tmp_path: Path, location: Callable[[Path, Path], str]) -> tuple[Path, Path]:
    """A model in ``tmp_path/m`` whose kernel lies at ``location(folder, outside)``; the outside
    file holds exactly the bytes the kernel needs, so only a refusal stops it being read."""
    folder = tmp_path / "m"
    folder.mkdir()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(np.arange(KERNEL_BYTES // 4, dtype=np.float32).tobytes())
    tensor = external_tensor(
        "conv.weight", KERNEL_DIMS, location=location(folder, outside), offset=0
    )
    node = helper.make_node("Conv", ["X", "conv.weight"], ["Y"], name="conv")
    return write(folder / "model.onnx", make_model([node], [tensor])), outside


def _symlink(folder: Path, outside: Path) -> str:
    (folder / "link.bin").symlink_to(outside)
    return "link.bin"


def _symlinked_folder(folder: Path, outside: Path) -> str:
    (folder / "sub").symlink_to(outside.parent, target_is_directory=True)
    return f"sub/{outside.name}"


ESCAPES: dict[str, Callable[[Path, Path], str]] = {
    "absolute": lambda folder, outside: str(outside),
    "etc_passwd": lambda folder, outside: "/etc/passwd",
    "parent": lambda folder, outside: f"../{outside.name}",
    "down_then_up": lambda folder, outside: f"sub/../../{outside.name}",
    "windows_parent": lambda folder, outside: f"..\\{outside.name}",
    "symlink": _symlink,
    "symlinked_folder": _symlinked_folder,
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_location_outside_the_folder_is_refused_unread(case, tmp_path, opened):
    path, outside = escaping_model(tmp_path, ESCAPES[case])
    with pytest.raises(weightscope.WeightscopeError, match="refused") as info:
        weightscope.load(path).close()
    assert str(info.value).startswith(f"{path}: ")
    assert os.path.realpath(path) in opened  # the spy sees what is opened
    assert os.path.realpath(outside) not in opened
    assert os.path.realpath("/etc/passwd") not in opened


@pytest.mark.parametrize(
    ("case", "command"),
    [("absolute", "inspect"), ("down_then_up", "inspect"), ("symlink", "inspect"),
     ("symlink", "export")],
)  # fmt: skip
def test_location_outside_the_folder_cli(case, command, tmp_path):
    path, outside = escaping_model(tmp_path, ESCAPES[case])
    before = digest(outside), digest(path)
    extra = ["-o", tmp_path / "out.npz"] if command == "export" else []
    assert_one_error_line(run_cli(command, path, *extra), path, "refused")
    assert (digest(outside), digest(path)) == before
    assert not (tmp_path / "out.npz").exists()


def test_missing_external_file_is_named(tmp_path):
    folder = tmp_path / "m"
    tensor = external_tensor("conv.weight", KERNEL_DIMS, location="w.bin")
    node = helper.make_node("Conv", ["X", "conv.weight"], ["Y"], name="conv")
    path = write(folder / "model.onnx", make_model([node], [tensor]))
    line = assert_one_error_line(run_cli("inspect", path), path, "missing", "'w.bin'")
    assert str(folder / "w.bin") in line
    with pytest.raises(weightscope.WeightscopeError, match=r"w\.bin"):
        weightscope.load(path)


def _bad_external(
    tmp_path: Path, dims: tuple[int, ...] = KERNEL_DIMS, location: str = "w.bin", **info: object
) -> Path:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.ones(KERNEL_BYTES // 4, np.float32).tobytes())
    tensor = external_tensor("conv.weight", dims, location=location, **info)
    node = helper.make_node("Conv", ["X", "conv.weight"], ["Y"], name="conv")
    return write(folder / "model.onnx", make_model([node], [tensor]))


BAD_EXTERNAL: dict[str, tuple[dict[str, object], tuple[str, ...]]] = {
    # (external_tensor arguments, words the error line must hold)
    "offset_past_end": ({"offset": 8}, ("needs bytes 8..4,616", "holds 4,608")),
    "offset_far_past_end": ({"offset": 10**12}, ("needs bytes",)),
    "length_past_end": ({"offset": 0, "length": KERNEL_BYTES + 4}, ("4,612", "4,608")),
    "length_not_dims": ({"offset": 0, "length": 100}, ("holds 100 bytes", "need 4,608")),
    "lying_dims": ({"dims": (2**40,), "offset": 0}, ("needs bytes",)),
    "lying_dims_with_length": (
        {"dims": (2**40,), "offset": 0, "length": KERNEL_BYTES},
        ("holds 4,608 bytes",),
    ),
    "negative_offset": ({"offset": -4}, ("negative",)),
    "text_offset": ({"offset": "zero"}, ("non-numeric",)),
    "no_location": ({"location": ""}, ("names no file",)),
    "nul_in_location": ({"location": "w\0.bin"}, ("null byte",)),
    "folder_as_location": ({"location": "."}, ("'.'",)),
}


@pytest.mark.parametrize("case", sorted(BAD_EXTERNAL))
def test_external_data_that_does_not_fit_is_refused(case, tmp_path):
    info, words = BAD_EXTERNAL[case]
    path = _bad_external(tmp_path, **info)  # type: ignore[arg-type]
    data_file = path.parent / "w.bin"
    before = digest(path), digest(data_file)
    with pytest.raises(weightscope.WeightscopeError) as error, weightscope.load(path) as model:
        for _, tensor in model.tensors():
            tensor.stats()
    message = str(error.value)
    assert "\n" not in message
    # the line names the model, or the data file the problem lies in
    assert message.startswith((f"{path}: ", f"{data_file}: ")), message
    for word in words:
        assert word in message, (word, message)
    assert (digest(path), digest(data_file)) == before


@pytest.mark.parametrize("case", ["offset_past_end", "length_not_dims", "nul_in_location"])
def test_external_data_that_does_not_fit_cli(case, tmp_path):
    info, words = BAD_EXTERNAL[case]
    path = _bad_external(tmp_path, **info)  # type: ignore[arg-type]
    data_file = path.parent / "w.bin"
    before = digest(path), digest(data_file)
    result = run_cli("inspect", path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith((f"weightscope: {path}: ", f"weightscope: {data_file}: ")), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    assert (digest(path), digest(data_file)) == before


def test_symlink_within_the_folder_is_followed(tmp_path, rng):
    folder = tmp_path / "m"
    path = save_external(folder, conv_model(rng))
    expected = {t.name: numpy_helper.to_array(t) for t in onnx.load(path).graph.initializer}
    (folder / "w.bin").rename(folder / "real.bin")
    (folder / "w.bin").symlink_to("real.bin")  # (onnx.load itself refuses any symlink)
    with weightscope.load(path) as model:
        assert_same_values(model, expected)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_files_are_closed_after_a_refusal_and_after_close(tmp_path, rng):
    """A model whose first tensors open their files and whose last one is refused leaves no
    descriptor open; nor does a model read and closed."""

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "w.bin").write_bytes(np.ones(4, np.float32).tobytes())
    tensors = [
        external_tensor("A", (4,), location="w.bin", offset=0),
        numpy_helper.from_array(np.ones(5000, np.float32), "inline"),  # cut out: opens the model
    ]
    nodes = [
        helper.make_node("Mul", ["X", "A"], ["M"], name="m1"),
        helper.make_node("Mul", ["M", "inline"], ["N"], name="m2"),
        helper.make_node("Mul", ["N", "B"], ["Y"], name="m3"),
    ]
    good = write(
        folder / "good.onnx",
        make_model(nodes, [*tensors, external_tensor("B", (4,), location="w.bin", offset=0)]),
    )
    refused = write(
        folder / "refused.onnx",
        make_model(nodes, [*tensors, external_tensor("B", (4,), location="../x.bin")]),
    )
    before = open_descriptors()
    with pytest.raises(weightscope.WeightscopeError, match="refused"):
        weightscope.load(refused)
    assert open_descriptors() == before
    model = weightscope.load(good)
    assert open_descriptors() > before
    model.close()
    assert open_descriptors() == before


def test_external_file_cut_short_after_loading(tmp_path, rng):
    """The data file shrinks between listing and reading: an error, not short data."""
    path = save_external(tmp_path / "m", conv_model(rng))
    with weightscope.load(path) as model:
        os.truncate(path.parent / "w.bin", 100)
        with pytest.raises(weightscope.WeightscopeError, match="cut short"):
            model.layer("conv").tensor("kernel").numpy()


# ---------------------------------------------------------------------------------------------
# tensor data inside the .onnx, every element type

DTYPE_NAMES = {
    TensorProto.FLOAT: "float32",
    TensorProto.DOUBLE: "float64",
    TensorProto.FLOAT16: "float16",
    TensorProto.BFLOAT16: "bfloat16",
    TensorProto.INT8: "int8",
    TensorProto.UINT8: "uint8",
    TensorProto.INT64: "int64",
    TensorProto.BOOL: "bool",
    TensorProto.FLOAT8E4M3FN: "float8_e4m3fn",
}


def typed(name: str, kind: int, values: np.ndarray) -> onnx.TensorProto:
    """``values`` in the typed field of ``kind`` (``float_data``, ``int32_data``, ...)."""
    return helper.make_tensor(name, kind, values.shape, values.reshape(-1).tolist(), raw=False)


def dtype_zoo(rng: np.random.Generator) -> list[onnx.TensorProto]:
    """Each element type in ``raw_data`` and in its typed field (``raw=False``), once above and
    once below the cut-out threshold, plus tensors just either side of it."""
    tensors: list[onnx.TensorProto] = []
    for tag, n in (("big", 5000), ("small", 10)):
        shape = (n // 10, 10)
        f32 = rng.standard_normal(shape).astype(np.float32)
        f64 = rng.standard_normal(shape) * 1e3
        i8 = rng.integers(-128, 128, shape).astype(np.int8)
        i64 = rng.integers(-(2**40), 2**40, shape)
        flags = rng.random(shape) < 0.3
        fp8 = rng.integers(0, 256, shape, dtype=np.uint8).view(ml_dtypes.float8_e4m3fn)
        finite_fp8 = np.where(np.isnan(fp8.astype(np.float32)), 0, fp8.astype(np.float32))
        tensors += [
            numpy_helper.from_array(f32, f"float32_raw_{tag}"),
            typed(f"float32_typed_{tag}", FLOAT, f32),
            numpy_helper.from_array(f64, f"float64_raw_{tag}"),
            typed(f"float64_typed_{tag}", TensorProto.DOUBLE, f64),
            numpy_helper.from_array(f32.astype(np.float16), f"float16_raw_{tag}"),
            typed(f"float16_typed_{tag}", TensorProto.FLOAT16, f32),
            numpy_helper.from_array(f32.astype(ml_dtypes.bfloat16), f"bfloat16_raw_{tag}"),
            typed(f"bfloat16_typed_{tag}", TensorProto.BFLOAT16, f32),
            numpy_helper.from_array(i8, f"int8_raw_{tag}"),
            typed(f"int8_typed_{tag}", TensorProto.INT8, i8),
            numpy_helper.from_array(i8.view(np.uint8), f"uint8_raw_{tag}"),
            numpy_helper.from_array(i64, f"int64_raw_{tag}"),
            typed(f"int64_typed_{tag}", INT64, i64),
            numpy_helper.from_array(flags, f"bool_raw_{tag}"),
            typed(f"bool_typed_{tag}", TensorProto.BOOL, flags),
            numpy_helper.from_array(fp8, f"float8_raw_{tag}"),
            typed(f"float8_typed_{tag}", TensorProto.FLOAT8E4M3FN, finite_fp8),
        ]
    edge = SMALL_BULK_BYTES
    for n in (edge - 1, edge):
        data = rng.integers(0, 256, n, dtype=np.uint8)
        tensors.append(numpy_helper.from_array(data, f"uint8_raw_{n}_bytes"))
    for n in (edge // 4 - 1, edge // 4):
        values = rng.standard_normal(n).astype(np.float32)
        tensors.append(
            helper.make_tensor(f"float32_typed_{4 * n}_bytes", FLOAT, [n], values, raw=False)
        )
    return tensors


def inline_bytes(tensor: onnx.TensorProto) -> int:
    """Size of the tensor's bulk field in the file (0 for varint-coded typed fields)."""
    if tensor.HasField("raw_data"):
        return len(tensor.raw_data)
    return 4 * len(tensor.float_data) + 8 * len(tensor.double_data)


ZOO_SEED = 20240611
ZOO_NAMES = [t.name for t in dtype_zoo(np.random.default_rng(ZOO_SEED))]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> tuple[Path, list[onnx.TensorProto]]:
    tensors = dtype_zoo(np.random.default_rng(ZOO_SEED))
    node = helper.make_node("Identity", ["X"], ["Y"], name="pass")
    path = tmp_path_factory.mktemp("zoo") / "zoo.onnx"
    return write(path, make_model([node], tensors)), tensors


def mismatches(got: dict[str, np.ndarray], protos: list[onnx.TensorProto]) -> list[str]:
    """What differs, tensor by tensor, from what onnx reads (dtype and shape, or values)."""
    wrong = []
    for proto in protos:
        mine, want = got[proto.name], reference(proto)
        if (mine.dtype, mine.shape) != (want.dtype, want.shape):
            wrong.append(f"{proto.name}: {mine.dtype}{mine.shape}, not {want.dtype}{want.shape}")
            continue
        try:
            np.testing.assert_array_equal(mine, want)
        except AssertionError:
            wrong.append(f"{proto.name}: values differ")
    return wrong


def test_zoo_covers_every_type_and_both_sides_of_the_threshold(zoo):
    _, protos = zoo
    assert {t.data_type for t in protos} == set(DTYPE_NAMES)
    sizes = {t.name: inline_bytes(t) for t in protos}
    assert sizes["uint8_raw_4095_bytes"] == SMALL_BULK_BYTES - 1
    assert sizes["uint8_raw_4096_bytes"] == SMALL_BULK_BYTES
    assert sizes["float32_typed_4092_bytes"] == SMALL_BULK_BYTES - 4  # packed float_data
    assert sizes["float32_typed_4096_bytes"] == SMALL_BULK_BYTES
    assert sizes["float64_typed_big"] == 8 * 5000  # packed double_data
    assert sizes["float16_typed_big"] == 0  # int32_data: varints, left to protobuf
    stored = {t.name for t in onnx.load(zoo[0]).graph.initializer}
    with weightscope.load(zoo[0]) as model:
        assert sorted(by_name(model)) == sorted(stored) == sorted(ZOO_NAMES)


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_inline_tensor_matches_onnx(name, zoo, pread_log):
    path, _ = zoo
    proto = next(t for t in onnx.load(path).graph.initializer if t.name == name)
    want = reference(proto)
    with weightscope.load(path) as model:
        assert pread_log == []
        tensor = by_name(model)[name]
        assert tensor.dtype == DTYPE_NAMES[proto.data_type]
        assert tensor.native_shape == tuple(proto.dims)
        np.testing.assert_array_equal(tensor.numpy(), want, strict=True)
        # data at least SMALL_BULK_BYTES long was cut out of the skeleton: read by offset
        cut = inline_bytes(proto) >= SMALL_BULK_BYTES
        assert bool(pread_log) == cut, (inline_bytes(proto), pread_log)
        assert all(f == str(path.resolve()) for f, _, _ in pread_log)
        values = want.astype(np.float64)
        finite = values[np.isfinite(values)]
        stats = tensor.stats(chunk_elements=1000)
        assert stats.nan == int(np.isnan(values).sum())
        assert stats.min == finite.min() and stats.max == finite.max()
        scale = float(np.abs(finite).mean())
        assert stats.mean == pytest.approx(finite.mean(), rel=1e-6, abs=1e-6 * scale)


def test_inline_tensors_export(zoo, tmp_path):
    path, protos = zoo
    out = tmp_path / "zoo.npz"
    result = run_cli("export", path, "-o", out)
    assert result.returncode == 0, result.stderr
    with np.load(out) as npz:
        assert sorted(npz.files) == sorted(f"{t.name}/value" for t in protos)
        got = {name.removesuffix("/value"): npz[name] for name in npz.files}
    assert mismatches(got, protos) == []


def test_large_constant_node_value_is_read_by_offset(tmp_path, rng, pread_log):
    big = rng.standard_normal((40, 30)).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["C"], name="c", value=numpy_helper.from_array(big, "C")),
        helper.make_node("MatMul", ["X", "C"], ["Y"], name="mm"),
    ]
    path = write(tmp_path / "m.onnx", make_model(nodes))
    with weightscope.load(path) as model:
        kernel = model.layer("mm").tensor("kernel")
        assert model.layer("mm").kind == "dense"
        np.testing.assert_array_equal(kernel.numpy(), big)
        assert pread_log


# ---------------------------------------------------------------------------------------------
# malformed files


def _valid(tmp_path: Path) -> tuple[bytes, bytes]:
    """A valid model's bytes and the bytes of its 4608-byte kernel."""
    proto = conv_model(np.random.default_rng(3))
    return proto.SerializeToString(), proto.graph.initializer[0].raw_data


def truncated(where: Callable[[bytes, int], int]) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        data, kernel = _valid(tmp_path)
        start = data.find(kernel)
        assert start > 0
        path = tmp_path / "cut.onnx"
        path.write_bytes(data[: where(data, start)])
        return path

    return build


def raw(name: str, content: bytes) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    return build


def with_tensor(tensor: onnx.TensorProto) -> Callable[[Path], Path]:
    """A model whose Conv kernel is ``tensor``."""

    def build(tmp_path: Path) -> Path:
        node = helper.make_node("Conv", ["X", tensor.name], ["Y"], name="conv")
        return write(tmp_path / "bad.onnx", make_model([node], [tensor]))

    return build


def lying_raw(dims: list[int], nbytes: int) -> onnx.TensorProto:
    return TensorProto(name="W", data_type=FLOAT, dims=dims, raw_data=b"\x01" * nbytes)


def lying_typed(dims: list[int]) -> onnx.TensorProto:
    return TensorProto(name="W", data_type=FLOAT, dims=dims, float_data=[1.0] * 5)


def huge_sparse(tmp_path: Path) -> Path:
    values = numpy_helper.from_array(np.ones(1, np.float32), "S")
    indices = numpy_helper.from_array(np.array([2**40 - 1], np.int64), "S_indices")
    sparse = helper.make_sparse_tensor(values, indices, [2**20, 2**20])
    node = helper.make_node("MatMul", ["X", "S"], ["Y"], name="mm")
    return write(tmp_path / "sparse.onnx", make_model([node], sparse=[sparse]))


def nested_ifs(depth: int) -> Callable[[Path], Path]:
    """``If`` nodes nested ``depth`` deep, assembled on the wire (protobuf itself will not build
    messages that deep)."""

    def length_delimited(number: int, payload: bytes) -> bytes:
        return _varint(number << 3 | 2) + _varint(len(payload)) + payload

    def number(message: type, field: str) -> int:
        return message.DESCRIPTOR.fields_by_name[field].number  # type: ignore[attr-defined]

    def build(tmp_path: Path) -> Path:
        leaf = helper.make_graph(
            [helper.make_node("Mul", ["X", "W"], ["Y"], name="mul")],
            "leaf",
            [],
            [vinfo("Y")],
            [numpy_helper.from_array(np.ones(3, np.float32), "W")],
        )
        graph = leaf.SerializeToString()
        for level in range(depth):
            attr = onnx.AttributeProto(name="then_branch", type=onnx.AttributeProto.GRAPH)
            attr_bytes = attr.SerializeToString() + length_delimited(
                number(onnx.AttributeProto, "g"), graph
            )
            node = helper.make_node("If", ["C"], ["Y"], name=f"if{level}").SerializeToString()
            node += length_delimited(number(onnx.NodeProto, "attribute"), attr_bytes)
            shell = helper.make_graph([], f"g{level}", [], [vinfo("Y")]).SerializeToString()
            graph = shell + length_delimited(number(onnx.GraphProto, "node"), node)
        model = make_model([])
        model.ClearField("graph")
        path = tmp_path / f"nested_{depth}.onnx"
        path.write_bytes(
            model.SerializeToString() + length_delimited(number(onnx.ModelProto, "graph"), graph)
        )
        return path

    return build


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


MALFORMED: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    # case: (builder, words the error line must hold)
    "cut_in_header": (truncated(lambda data, start: 10), ("damaged ONNX model",)),
    "cut_before_tensor": (truncated(lambda data, start: start - 2), ("truncated",)),
    "cut_in_tensor_data": (truncated(lambda data, start: start + 1000), ("truncated",)),
    "cut_last_byte": (truncated(lambda data, start: len(data) - 1), ("damaged ONNX model",)),
    "random_bytes": (
        raw("noise.onnx", np.random.default_rng(1).bytes(4096)),
        ("damaged ONNX model",),
    ),
    "empty": (raw("empty.onnx", b""), ("empty file",)),
    "one_byte": (raw("one.onnx", b"\x08"), ("truncated number",)),
    "zero_byte": (raw("zero.onnx", b"\x00"), ("damaged ONNX model: field number 0 at byte 0",)),
    "text": (
        raw("notes.onnx", b"this is not a model, just some text\n" * 20),
        ("damaged ONNX model",),
    ),
    "no_graph": (
        raw("nograph.onnx", onnx.ModelProto(ir_version=8, producer_name="x").SerializeToString()),
        ("it has no graph",),
    ),
    "tensor_not_model": (
        raw("tensor.onnx", numpy_helper.from_array(np.ones(5000, np.float32)).SerializeToString()),
        ("ONNX model",),
    ),
    "lying_dims_small_raw": (with_tensor(lying_raw([2**40], 16)), ("holds 16 bytes",)),
    "lying_dims_cut_out_raw": (with_tensor(lying_raw([2**20, 2**20], 8000)), ("8,000 bytes",)),
    "lying_dims_typed": (with_tensor(lying_typed([2**40])), ("holds 5 values",)),
    "raw_shorter_than_dims": (with_tensor(lying_raw([16, 8, 3, 3], 100)), ("need 4,608",)),
    "negative_dims": (with_tensor(lying_raw([-1, 4], 16)), ("negative dims",)),
    "huge_sparse": (huge_sparse, ("too large to densify",)),
    "nested_too_deep": (nested_ifs(MAX_GRAPH_DEPTH + 1), ("nested",)),
    "nested_65": (nested_ifs(65), ("nested",)),
    "nested_2000": (nested_ifs(2000), ("nested",)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_exits_2_with_one_line(case, tmp_path):
    build, words = MALFORMED[case]
    path = build(tmp_path)
    before = digest(path)
    assert_one_error_line(run_cli("inspect", path), path, *words)
    assert digest(path) == before


@pytest.mark.parametrize("case", ["cut_in_tensor_data", "lying_dims_small_raw", "nested_65"])
def test_malformed_file_export_writes_nothing(case, tmp_path):
    path = MALFORMED[case][0](tmp_path)
    out = tmp_path / "out.npz"
    assert_one_error_line(run_cli("export", path, "-o", out), path)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ws-")] == []


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_raises_weightscope_error(case, tmp_path):
    path = MALFORMED[case][0](tmp_path)
    before = digest(path)
    with pytest.raises(weightscope.WeightscopeError) as info, weightscope.load(path) as model:
        for _, tensor in model.tensors():
            tensor.stats()
    assert str(info.value).startswith(f"{path}: ")
    assert digest(path) == before


LYING_DIMS: dict[str, Callable[[Path], Path]] = {
    **{
        case: MALFORMED[case][0]
        for case in ("lying_dims_small_raw", "lying_dims_cut_out_raw", "lying_dims_typed")
    },
    "huge_sparse": huge_sparse,
    "external": lambda tmp_path: _bad_external(tmp_path, dims=(2**40,), offset=0),
}


@pytest.mark.parametrize("case", sorted(LYING_DIMS))
def test_lying_dims_allocate_nothing_large(case, tmp_path):
    path = LYING_DIMS[case](tmp_path)
    tracemalloc.start()
    try:
        with pytest.raises(weightscope.WeightscopeError), weightscope.load(path) as model:
            for _, tensor in model.tensors():
                tensor.numpy()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20


@pytest.mark.parametrize("depth", [3, MAX_GRAPH_DEPTH - 1])
def test_nesting_below_the_cap_is_read(depth, tmp_path):
    """Up to the cap, protobuf's own parser (whose depth limit is lower than it looks: each
    level is a graph, a node and an attribute) reads the skeleton."""
    with weightscope.load(nested_ifs(depth)(tmp_path)) as model:
        (layer,) = model.layers
        assert layer.name == "mul"
        assert layer.note is not None and f"then_branch of If 'if{depth - 1}'" in layer.note
        np.testing.assert_array_equal(layer.tensor("input1").numpy(), np.ones(3, np.float32))


# ---------------------------------------------------------------------------------------------
# sniffing


@pytest.mark.parametrize("producer", [("pytorch", "2.13.0"), None])
@pytest.mark.parametrize("name", ["model.bin", "model"])
def test_onnx_without_the_suffix_is_recognised(name, producer, tmp_path, rng):
    proto = conv_model(rng)
    if producer is None:
        proto.ClearField("producer_name")
        proto.ClearField("producer_version")
    path = write(tmp_path / name, proto)
    with weightscope.load(path) as model:
        assert (model.framework, model.format) == ("onnx", "onnx")
        assert model.layer("conv").kind == "conv2d"
        np.testing.assert_array_equal(
            model.layer("conv").tensor("kernel").numpy(),
            numpy_helper.to_array(proto.graph.initializer[0]),
        )


def test_renamed_onnx_with_cli(tmp_path, rng):
    path = write(tmp_path / "model.bin", conv_model(rng))
    result = run_cli("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["framework"] == "onnx"


# ---------------------------------------------------------------------------------------------
# graph features


def test_shared_initializer_is_counted_once(tmp_path, rng):
    kernel = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(4).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["H"], name="conv_a", pads=[1] * 4),
        helper.make_node("Conv", ["H", "W"], ["Y"], name="conv_b", pads=[1] * 4),
    ]
    inits = [numpy_helper.from_array(kernel, "W"), numpy_helper.from_array(bias, "B")]
    path = write(tmp_path / "shared.onnx", make_model(nodes, inits))
    with weightscope.load(path) as model:
        first = model.layer("conv_a").tensor("kernel")
        second = model.layer("conv_b").tensor("kernel")
        assert (first.counted, first.shared_with) == (True, None)
        assert (second.counted, second.shared_with) == (False, "conv_a/kernel")
        np.testing.assert_array_equal(second.numpy(), kernel)
        assert model.layer("conv_b").params == 0
        assert model.params.total == kernel.size + bias.size


def test_initializer_no_node_reads_is_listed(tmp_path, rng):
    orphan = rng.standard_normal((3, 5)).astype(np.float32)
    path = write(
        tmp_path / "orphan.onnx",
        make_model(
            [helper.make_node("Relu", ["X"], ["Y"], name="relu")],
            [numpy_helper.from_array(orphan, "orphan")],
        ),
    )
    with weightscope.load(path) as model:
        layer = model.layer("orphan")
        assert layer.kind == "unknown"
        assert layer.note is not None and "no node reads" in layer.note
        tensor = layer.tensor("value")
        assert tensor.counted
        np.testing.assert_array_equal(tensor.numpy(), orphan)
        assert model.params.total == orphan.size
        assert "relu" in model.weightless_layers


def test_weight_computed_at_run_time_is_said(tmp_path, rng):
    bias = rng.standard_normal(4).astype(np.float32)
    node = helper.make_node(
        "Conv", ["X", "W_dynamic", "B"], ["Y"], name="conv", kernel_shape=[3, 3]
    )
    proto = make_model(
        [node],
        [numpy_helper.from_array(bias, "B")],
        extra_inputs=[vinfo("W_dynamic", FLOAT, [4, 2, 3, 3])],
    )
    with weightscope.load(write(tmp_path / "dyn.onnx", proto)) as model:
        layer = model.layer("conv")
        assert layer.kind == "conv2d"
        assert [t.role for t in layer.tensors] == ["bias"]
        assert layer.note is not None
        assert "'W_dynamic' is computed at run time" in layer.note
        assert model.params.total == 4


def test_float_and_integer_constants_of_other_nodes(tmp_path, rng):
    scale = rng.standard_normal(6).astype(np.float32)
    shape = np.array([2, 3], np.int64)
    nodes = [
        helper.make_node("Mul", ["X", "scale"], ["M"], name="mul"),
        helper.make_node("Reshape", ["M", "shape"], ["Y"], name="reshape"),
    ]
    inits = [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(shape, "shape")]
    with weightscope.load(write(tmp_path / "ops.onnx", make_model(nodes, inits))) as model:
        mul, reshape = model.layer("mul"), model.layer("reshape")
        assert (mul.kind, reshape.kind) == ("unknown", "unknown")
        floats = mul.tensor("input1")
        assert (floats.name, floats.dtype, floats.counted) == ("scale", "float32", True)
        np.testing.assert_array_equal(floats.numpy(), scale)
        ints = reshape.tensor("input1")
        assert (ints.name, ints.dtype, ints.counted) == ("shape", "int64", False)
        np.testing.assert_array_equal(ints.numpy(), shape)
        assert reshape.note is not None and "not counted" in reshape.note
        assert model.params.total == 6


@pytest.mark.parametrize("coordinates", [False, True], ids=["flat_indices", "coordinates"])
def test_sparse_initializer_is_densified(coordinates, tmp_path, rng):
    dense = np.zeros((60, 50), np.float32)
    flat = np.sort(rng.choice(dense.size, 1500, replace=False))
    dense.reshape(-1)[flat] = rng.standard_normal(flat.size).astype(np.float32)
    values = numpy_helper.from_array(dense.reshape(-1)[flat], "S")
    index_array = np.stack(np.unravel_index(flat, dense.shape), 1) if coordinates else flat
    indices = numpy_helper.from_array(index_array.astype(np.int64), "S_indices")
    sparse = helper.make_sparse_tensor(values, indices, list(dense.shape))
    node = helper.make_node("MatMul", ["X", "S"], ["Y"], name="mm")
    path = write(tmp_path / "sparse.onnx", make_model([node], sparse=[sparse]))
    with weightscope.load(path) as model:
        layer = model.layer("mm")
        assert layer.kind == "dense"
        kernel = layer.tensor("kernel")
        assert kernel.native_shape == dense.shape
        np.testing.assert_array_equal(kernel.numpy(), dense, strict=True)
        assert kernel.stats().zeros_fraction == pytest.approx(1 - 1500 / dense.size)
        assert model.params.total == dense.size


def test_constant_nodes_with_list_attributes(tmp_path):
    nodes = [
        helper.make_node("Constant", [], ["cf"], name="c1", value_floats=[0.5, -1.5, 2.0]),
        helper.make_node("Constant", [], ["ci"], name="c2", value_ints=[1, -1]),
        helper.make_node("Constant", [], ["cs"], name="c3", value_float=4.0),
        helper.make_node("Mul", ["X", "cf"], ["M"], name="mul"),
        helper.make_node("Add", ["M", "cs"], ["A"], name="add"),
        helper.make_node("Reshape", ["A", "ci"], ["Y"], name="reshape"),
    ]
    with weightscope.load(write(tmp_path / "const.onnx", make_model(nodes))) as model:
        floats = model.layer("mul").tensor("input1")
        assert (floats.name, floats.dtype, floats.counted) == ("cf", "float32", True)
        np.testing.assert_array_equal(floats.numpy(), np.array([0.5, -1.5, 2.0], np.float32))
        scalar = model.layer("add").tensor("input1")
        assert scalar.native_shape == ()
        assert float(scalar.numpy()) == 4.0
        ints = model.layer("reshape").tensor("input1")
        assert (ints.name, ints.dtype, ints.counted) == ("ci", "int64", False)
        np.testing.assert_array_equal(ints.numpy(), np.array([1, -1], np.int64))
        assert model.params.total == 4
        assert not any(name in model.weightless_layers for name in ("c1", "c2", "c3"))


def if_model(rng: np.random.Generator) -> tuple[onnx.ModelProto, np.ndarray, np.ndarray]:
    inner_kernel = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    outer_kernel = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    then_branch = helper.make_graph(
        [helper.make_node("Conv", ["X", "W_inner"], ["T"], name="then_conv")],
        "then",
        [],
        [vinfo("T")],
        [numpy_helper.from_array(inner_kernel, "W_inner")],
    )
    else_branch = helper.make_graph(
        [helper.make_node("Conv", ["X", "W_outer"], ["E"], name="else_conv")],
        "else",
        [],
        [vinfo("E")],
    )
    node = helper.make_node(
        "If", ["cond"], ["Y"], name="gate", then_branch=then_branch, else_branch=else_branch
    )
    proto = make_model(
        [node],
        [numpy_helper.from_array(outer_kernel, "W_outer")],
        extra_inputs=[vinfo("cond", TensorProto.BOOL, [])],
    )
    return proto, inner_kernel, outer_kernel


def test_subgraph_weights_are_listed_with_their_if(tmp_path, rng):
    proto, inner, outer = if_model(rng)
    with weightscope.load(write(tmp_path / "if.onnx", proto)) as model:
        assert sorted(layer.name for layer in model.layers) == ["else_conv", "then_conv"]
        then_conv, else_conv = model.layer("then_conv"), model.layer("else_conv")
        assert then_conv.note is not None and "then_branch of If 'gate'" in then_conv.note
        assert else_conv.note is not None and "else_branch of If 'gate'" in else_conv.note
        np.testing.assert_array_equal(then_conv.tensor("kernel").numpy(), inner)
        np.testing.assert_array_equal(else_conv.tensor("kernel").numpy(), outer)
        assert model.params.total == inner.size + outer.size


@pytest.mark.parametrize("producer", [("pytorch", "2.13.0"), None])
def test_json_has_framework_producer_and_opset(producer, tmp_path, rng):
    proto = conv_model(rng)
    proto = make_model(
        list(proto.graph.node),
        list(proto.graph.initializer),
        producer=producer,
        opsets={"": 13, "com.microsoft": 1},
    )
    result = run_cli("inspect", write(tmp_path / "m.onnx", proto), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["framework"], data["format"]) == ("onnx", "onnx")
    assert data["producer"] == (None if producer is None else "pytorch 2.13.0")
    assert data["opset"] == {"ai.onnx": 13, "com.microsoft": 1}
    assert data["framework_version"] == "opset 13"
    assert data["params"]["total"] == 16 * 8 * 9 + 16


# ---------------------------------------------------------------------------------------------
# live ModelProto objects


def _summary(model: weightscope.Model) -> Iterator[tuple[object, ...]]:
    for layer, tensor in model.tensors():
        yield (layer.name, layer.kind, layer.note, tensor.name, tensor.role, tensor.native_shape,
               tensor.dtype, tensor.counted, tensor.shared_with)  # fmt: skip


@pytest.mark.parametrize("build", ["zoo", "if", "external"])
def test_live_proto_matches_its_file(build, tmp_path, rng):
    if build == "zoo":
        path = write(tmp_path / "m.onnx", make_model([], dtype_zoo(rng), outputs=("X",)))
    elif build == "if":
        path = write(tmp_path / "m.onnx", if_model(rng)[0])
    else:
        path = save_external(tmp_path / "m", conv_model(rng))
    with weightscope.load(path) as from_file, weightscope.load(onnx.load(path)) as live:
        assert (live.format, live.source, live.framework) == ("live", None, "onnx")
        assert (live.producer, live.opset) == (from_file.producer, from_file.opset)
        assert list(_summary(live)) == list(_summary(from_file))
        assert live.params == from_file.params
        got = {t.name: t.numpy() for _, t in live.tensors()}
        want = {t.name: t.numpy() for _, t in from_file.tensors()}
        wrong = [
            f"{name}: {got[name].dtype}{got[name].shape}, not {want[name].dtype}{want[name].shape}"
            for name in want
            if (got[name].dtype, got[name].shape) != (want[name].dtype, want[name].shape)
            or not np.array_equal(got[name], want[name], equal_nan=got[name].dtype.kind == "f")
        ]
        assert wrong == []


def test_live_proto_without_its_external_data(tmp_path, rng):
    path = save_external(tmp_path / "m", conv_model(rng))
    proto = onnx.load(path, load_external_data=False)
    with pytest.raises(weightscope.WeightscopeError, match=r"'w\.bin'.*from its path"):
        weightscope.load(proto)


def test_live_proto_with_lying_dims(rng):
    proto = make_model(
        [helper.make_node("Conv", ["X", "W"], ["Y"], name="conv")], [lying_raw([2**40], 16)]
    )
    with pytest.raises(weightscope.WeightscopeError, match="holds 16 bytes"):
        weightscope.load(proto)


def test_live_proto_without_graph():
    with pytest.raises(weightscope.WeightscopeError, match="no graph"):
        weightscope.load(onnx.ModelProto(ir_version=8))
