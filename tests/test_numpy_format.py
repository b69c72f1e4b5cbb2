"""NumPy ``.npz`` and ``.npy`` files as a format weightscope reads: ``export`` round-trips (the
same layers, kinds, canonical shapes and totals as the model it came from, keyed by the names
the model's authors know), ``np.savez`` archives read as unknown layers, and hostile files are
refused with one line, never unpickled."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runner import run_cli

import weightscope
from weightscope.errors import CorruptFileError, LimitError, UnsafeFileError, UnsupportedFormatError

FRAMEWORKS = ("keras", "pytorch", "onnx")
EXAMPLE_LAYERS = ["conv1", "bn1", "dwconv2", "pwconv2", "logits"]


def described(model: weightscope.Model, *, names: str = "user") -> list[Any]:
    """What inspect shows of a model: layers (as exported), kinds, canonical shapes, totals."""
    return [
        (
            layer.user_name if names == "user" else layer.name,
            layer.kind,
            layer.inferred,
            layer.groups,
            [(t.role, t.canonical_shape, t.counted, t.trainable) for t in layer.tensors],
        )
        for layer in model.layers
    ] + [model.params.to_dict()]


def export(source: Path, out: Path) -> Path:
    result = run_cli("export", source, "-o", out)
    assert result.returncode == 0, result.stderr
    return out


# ---------------------------------------------------------------------------------------------
# export -> inspect


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_export_reads_back_as_the_model_it_came_from(framework, tmp_path):
    source = weightscope.example_path(framework)
    out = export(source, tmp_path / "weights.npz")
    with weightscope.load(source) as original, weightscope.load(out) as exported:
        assert exported.format == "npz" and exported.framework == "numpy"
        assert described(exported) == described(original)
        assert [layer.name for layer in exported.layers] == EXAMPLE_LAYERS
        for (layer, tensor), (_, back) in zip(original.tensors(), exported.tensors(), strict=True):
            expected = tensor.canonical() if tensor.native_layout else tensor.numpy()
            np.testing.assert_array_equal(back.numpy(), expected)
            assert back.name == f"{layer.user_name}/{tensor.role}"
            if tensor.has_stats:
                assert back.stats().mean == pytest.approx(tensor.stats().mean, rel=1e-6)
        assert exported.notes == [
            f"exported by weightscope {weightscope.__version__} from {source.name} "
            f"({original.format}, {original.framework})"
        ]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_inspect_of_an_export_shows_the_same_table(framework, tmp_path):
    source = weightscope.example_path(framework)
    out = export(source, tmp_path / "weights.npz")
    original = json.loads(run_cli("inspect", source, "--json").stdout)
    result = run_cli("inspect", out, "--json")
    assert result.returncode == 0, result.stderr
    back = json.loads(result.stdout)
    assert back["params"] == original["params"]

    def rows(data: dict[str, Any]) -> list[Any]:
        return [
            (
                layer["kind"],
                [(t["role"], t["canonical_shape"], t["size"]) for t in layer["tensors"]],
            )
            for layer in data["layers"]
        ]

    assert rows(back) == rows(original)
    assert [layer["name"] for layer in back["layers"]] == EXAMPLE_LAYERS
    table = run_cli("inspect", out)
    assert table.returncode == 0, table.stderr
    assert "Total params: 3,114" in table.stdout


def test_inspect_json_of_an_export_follows_the_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(
        (Path(__file__).parents[1] / "docs/schemas/inspect.schema.json").read_text()
    )
    out = export(weightscope.example_path("onnx"), tmp_path / "weights.npz")
    np.save(tmp_path / "one.npy", np.ones(3, np.float32))
    for path in (out, tmp_path / "one.npy"):
        for options in ([], ["--health"]):
            result = run_cli("inspect", path, "--json", *options)
            assert result.returncode == 0, result.stderr
            jsonschema.Draft202012Validator(schema).validate(json.loads(result.stdout))


def test_onnx_exports_are_keyed_by_module_not_node(tmp_path):
    """The ONNX example's nodes are ``/conv1/Conv``...; its export keys read ``conv1/kernel``,
    as the Keras and PyTorch exports do."""
    keys = {}
    for framework in FRAMEWORKS:
        out = export(weightscope.example_path(framework), tmp_path / f"{framework}.npz")
        with np.load(out, allow_pickle=False) as archive:
            keys[framework] = archive.files
    assert keys["onnx"] == keys["keras"]
    assert keys["onnx"][:2] == ["conv1/kernel", "conv1/bias"]
    assert keys["pytorch"] == [*keys["keras"][:6], "bn1/num_batches_tracked", *keys["keras"][6:]]


def test_what_export_adds_stays_out_of_np_load(tmp_path):
    out = export(weightscope.example_path(), tmp_path / "w.npz")
    with np.load(out, allow_pickle=False) as archive:
        assert all(isinstance(archive[key], np.ndarray) for key in archive.files)
        assert len(archive.files) == 12
    with zipfile.ZipFile(out) as archive:
        meta = json.loads(archive.getinfo("dwconv2/kernel.npy").comment)
        assert meta == {
            "kind": "depthwise_conv2d", "inferred": False, "class": "DepthwiseConv2D",
            "groups": 8, "layout": "OIHW", "trainable": True, "counted": True,
        }  # fmt: skip
        assert json.loads(archive.comment)["weightscope"] == weightscope.__version__


def test_scan_reads_an_export_as_a_model(tmp_path):
    (tmp_path / "models").mkdir()
    export(weightscope.example_path(), tmp_path / "models" / "w.npz")
    result = run_cli("scan", tmp_path / "models", "-o", tmp_path / "t.csv", "--jobs", "1")
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith(f"wrote 1 model to {tmp_path / 't.csv'}: 1 file read, ")


# ---------------------------------------------------------------------------------------------
# archives numpy wrote


@pytest.mark.parametrize("compressed", [False, True], ids=["savez", "savez_compressed"])
def test_a_numpy_archive_reads_as_unknown_layers(tmp_path, compressed):
    rng = np.random.default_rng(0)
    arrays = {
        "enc/kernel": rng.standard_normal((4, 3, 2)).astype(np.float32),
        "enc/bias": rng.standard_normal(4).astype(">f8"),  # big-endian
        "steps": np.arange(5, dtype=np.int64),
        "dec/kernel": np.asfortranarray(rng.standard_normal((3, 5)).astype(np.float16)),
    }
    path = tmp_path / "arrays.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    with weightscope.load(path) as model, np.load(path, allow_pickle=False) as expected:
        assert [(x.name, x.kind, [t.role for t in x.tensors]) for x in model.layers] == [
            ("enc", "unknown", ["kernel", "bias"]),
            ("steps", "unknown", ["array"]),
            ("dec", "unknown", ["kernel"]),
        ]
        for _, tensor in model.tensors():
            assert tensor.native_layout is None and tensor.trainable is None
            np.testing.assert_array_equal(tensor.numpy(), expected[tensor.name])
            assert tensor.numpy().shape == expected[tensor.name].shape
            if tensor.dtype != "int64":
                values = expected[tensor.name].astype(np.float64)
                assert tensor.stats().mean == pytest.approx(values.mean(), rel=1e-6)
        assert model.params.total == 24 + 4 + 15  # the integer steps are not parameters
        assert model.notes == []


def test_a_npy_file_is_one_layer_named_after_it(tmp_path):
    path = tmp_path / "embedding.npy"
    np.save(path, np.arange(12, dtype=np.float32).reshape(3, 4))
    result = run_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    assert "embedding" in result.stdout and "(3, 4)" in result.stdout
    with weightscope.load(path) as model:
        (layer,) = model.layers
        assert (layer.name, layer.tensors[0].role, model.format) == ("embedding", "array", "npy")
        assert model.params.total == 12
        np.testing.assert_array_equal(layer.tensors[0].numpy(), np.load(path))


# ---------------------------------------------------------------------------------------------
# hostile files: one line, exit 2, nothing unpickled


class Payload:
    """Unpickling this creates ``marker``: proof that a reader unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (open, (str(self.marker), "w"))


def refused(path: Path) -> str:
    result = run_cli("inspect", path)
    assert result.returncode == 2, result.stdout
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"weightscope: {path}: ")
    return result.stderr.strip()


@pytest.mark.parametrize("container", ["npy", "npz"])
def test_an_object_array_is_refused_without_unpickling(tmp_path, container):
    marker = tmp_path / "unpickled"
    objects = np.array([Payload(marker)], dtype=object)
    path = tmp_path / f"hostile.{container}"
    if container == "npy":
        np.save(path, objects, allow_pickle=True)
    else:
        np.savez(path, **{"fc/kernel": np.ones(3, np.float32), "fc/bias": objects})
    line = refused(path)
    assert "holds Python objects (dtype object), which only unpickling could read" in line
    with pytest.raises(UnsafeFileError):
        weightscope.load(path)
    out = tmp_path / "out"
    out.mkdir()
    for command in (
        ["export", path, "-o", out / "w.npz"], ["params", path], ["init", path],
        ["report", path, "-o", out / "r.html"], ["compare", path, path], ["explain", path, "fc"],
    ):  # fmt: skip
        result = run_cli(*command)
        assert result.returncode == 2 and "holds Python objects" in result.stderr, command
    scanned = run_cli("scan", path, "-o", out / "t.csv", "--jobs", "1")
    assert "1 error;" in scanned.stderr, scanned.stderr
    assert not marker.exists()
    assert sorted(p.name for p in out.iterdir()) == ["t.csv"]
    np.load(path, allow_pickle=True)["fc/bias" if container == "npz" else ...]  # the real thing
    assert marker.exists()  # ... would have run the payload


def npy(header: str, data: bytes = b"", version: int = 1, declared: int | None = None) -> bytes:
    """A .npy file with this header dict text (padded as numpy pads it)."""
    text = header.encode("latin1")
    prefix = 10 if version == 1 else 12
    text += b" " * (-(prefix + len(text) + 1) % 64) + b"\n"
    length = len(text) if declared is None else declared
    packed = struct.pack("<H" if version == 1 else "<I", length)
    return b"\x93NUMPY" + bytes([version, 0]) + packed + text + data


def test_a_shape_larger_than_the_data_is_refused(tmp_path):
    path = tmp_path / "short.npy"
    path.write_bytes(
        npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1000, 1000), }", b"\0" * 16)
    )
    line = refused(path)
    assert "shape (1000, 1000) of float32 needs 4,000,000 bytes, but it holds 16" in line
    with pytest.raises(CorruptFileError):
        weightscope.load(path)
    archive = tmp_path / "short.npz"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fc/kernel.npy", path.read_bytes())
    assert "member 'fc/kernel.npy': shape (1000, 1000) of float32 needs" in refused(archive)


def test_a_huge_header_is_refused_before_it_is_read(tmp_path):
    path = tmp_path / "huge.npy"
    path.write_bytes(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", b"\0" * 4,
                         version=2, declared=0xFFFF_FFF0))  # fmt: skip
    line = refused(path)
    assert (
        "declares a header of 4,294,967,280 bytes, over the limit max_npy_header_bytes=16K" in line
    )
    with pytest.raises(LimitError):
        weightscope.load(path)
    padded = tmp_path / "padded.npy"  # a real header, padded to 20,000 bytes
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }" + " " * 20_000
    padded.write_bytes(npy(header, np.ones(2, "<f4").tobytes()))
    assert "over the limit max_npy_header_bytes=16K" in refused(padded)
    raised = run_cli("inspect", padded, "--limit", "max_npy_header_bytes=32K")
    assert raised.returncode == 0, raised.stderr
    past = tmp_path / "past.npy"
    past.write_bytes(
        npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", declared=1000)
    )
    assert "declares a header of 1,000 bytes, more than it holds (128)" in refused(past)


def test_a_header_is_read_as_a_literal_never_run(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "code.npy"
    path.write_bytes(npy(f"__import__('pathlib').Path({str(marker)!r}).touch()", b""))
    line = refused(path)
    assert "damaged NumPy .npy file" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    ("array", "words"),
    [
        (np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")]), "holds |V8 elements"),
        (np.array(["a", "bc"]), "holds <U2 elements"),
    ],
)
def test_other_dtypes_are_refused(tmp_path, array, words):
    path = tmp_path / "other.npy"
    np.save(path, array)
    line = refused(path)
    assert words in line and "only booleans, integers, floats and complex numbers" in line
    with pytest.raises(UnsupportedFormatError):
        weightscope.load(path)


def test_lying_export_metadata_is_refused(tmp_path):
    out = export(weightscope.example_path(), tmp_path / "w.npz")
    lying = tmp_path / "lying.npz"
    with zipfile.ZipFile(out) as source, zipfile.ZipFile(lying, "w") as target:
        target.comment = source.comment
        for info in source.infolist():
            meta = json.loads(info.comment)
            if info.filename == "conv1/bias.npy":
                meta["layout"] = "OIHW"  # on a vector
            info.comment = json.dumps(meta).encode()
            target.writestr(info, source.read(info))
    line = refused(lying)
    assert "array 'conv1/bias': layout 'OIHW' does not fit its shape (8,)" in line


def test_a_deflated_member_is_decompressed_within_the_zip_ratio(tmp_path):
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, **{"fc/kernel": np.zeros((256, 256), np.float32)})
    result = run_cli("inspect", path, "--limit", "max_zip_ratio=8")
    assert result.returncode == 2
    assert "fc/kernel.npy declares 262,272 bytes from" in result.stderr
    assert "over the limit max_zip_ratio=8" in result.stderr
    assert run_cli("inspect", path).returncode == 0


def test_an_archive_with_other_members_is_not_numpys(tmp_path):
    path = tmp_path / "mixed.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(
            "a.npy", npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", b"\0" * 4)
        )
        zf.writestr("readme.txt", "hello")
    assert "nor a NumPy .npz (members other than .npy files)" in refused(path)


def test_export_keys_keep_a_zero_byte_visible():
    """zipfile ends a member name at a zero byte: a layer ``tin\\0/conv`` (a damaged TFLite
    name, tests/fuzz/found/tflite-2) would export its kernel and bias both as ``tin``."""
    from weightscope.reporters.npz import export_key

    kernel, bias = export_key("tin\0/conv", "kernel"), export_key("tin\0/conv", "bias")
    assert kernel == "tin\\x00/conv/kernel" and bias == "tin\\x00/conv/bias"
