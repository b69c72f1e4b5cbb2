"""The command line on the bundled example: table, JSON, one-layer view, export."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli, run_cli_subprocess
from damaged import with_lying_bias

import weightscope
from weightscope.reporters.numbers import number

EXAMPLE = weightscope.example_path()
LAYERS = ["conv1", "bn1", "dwconv2", "pwconv2", "logits"]


def row(table: str, name: str) -> str:
    """The line of the table whose first cell is ``name``."""
    (line,) = [line for line in table.splitlines() if line.split("│")[0].strip() == name]
    return line.rstrip()


def test_help_explains_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for word in ("inspect", "export", "canonical", "--example", "exit status"):
        assert word in result.stdout


def test_console_script_matches_python_m():
    exe = shutil.which("weightscope")
    if exe is None:
        pytest.skip("package not installed with its console script")
    direct = subprocess.run([exe, "inspect", "--example", "--json"], capture_output=True,
                            text=True, check=True)  # fmt: skip
    python_m = run_cli_subprocess("inspect", "--example", "--json")
    assert json.loads(direct.stdout) == json.loads(python_m.stdout)


def test_inspect_table_lists_layers_and_totals():
    result = run_cli("inspect", "--example")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for name in LAYERS:
        assert name in out
    # canonical shape, then native shape, each in its column
    assert "│ (8, 1, 3, 3) OIHW   │ (3, 3, 1, 8) HWIO " in row(out, "conv1")
    assert "│ (16, 1, 3, 3) OIHW  │ (3, 3, 8, 2) HWIM " in row(out, "dwconv2")
    assert "│ (10, 256) OI        │ (256, 10) IO " in row(out, "logits")
    with weightscope.load(EXAMPLE) as model:
        counts = model.params
        conv1 = model.layer("conv1").tensor("kernel").stats()
    assert f"Total params: {counts.total:,}" in out
    assert f"Non-trainable: {counts.non_trainable:,}" in out
    assert f" {number(conv1.mean)} │" in row(out, "conv1")
    assert row(out, "conv1").endswith(f" {number(conv1.max)}")
    assert "layers without weights: relu1, relu2, pool, flatten" in out


def test_inspect_json_schema_and_values():
    result = run_cli("inspect", "--example", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "keras-h5" and data["framework"] == "keras"
    assert data["framework_version"]
    assert [layer["name"] for layer in data["layers"]] == LAYERS
    with weightscope.load(EXAMPLE) as model:
        assert data["params"] == model.params.to_dict()
        for layer_data, layer in zip(data["layers"], model.layers, strict=True):
            assert set(layer_data) >= {"name", "kind", "groups", "inferred", "config", "tensors"}
            assert layer_data["kind"] == layer.kind and layer_data["inferred"] is False
            for tensor_data, tensor in zip(layer_data["tensors"], layer.tensors, strict=True):
                values = tensor.numpy().astype(np.float64)
                stats = tensor_data["stats"]
                assert tensor_data["size"] == values.size
                assert tensor_data["native_shape"] == list(values.shape)
                assert tensor_data["canonical_shape"] == list(tensor.canonical().shape)
                assert stats["mean"] == pytest.approx(values.mean(), rel=1e-5, abs=1e-7)
                assert stats["std"] == pytest.approx(values.std(), rel=1e-5, abs=1e-7)
                assert stats["min"] == values.min() and stats["max"] == values.max()
                assert stats["zeros_fraction"] == np.mean(values == 0)
                assert stats["nan"] == 0 and stats["inf"] == 0
    dw = data["layers"][2]
    assert dw["groups"] == 8 and dw["config"]["depth_multiplier"] == 2
    assert dw["tensors"][0]["native_layout"] == "HWIM"
    moving = data["layers"][1]["tensors"][2]
    assert moving["role"] == "moving_mean" and moving["trainable"] is False


def test_inspect_one_layer():
    result = run_cli("inspect", "--example", "--layer", "bn1")
    assert result.returncode == 0, result.stderr
    for role in ("gamma", "beta", "moving_mean", "moving_variance"):
        assert role in result.stdout
    assert "zeros" in result.stdout and "NaN" in result.stdout
    data = json.loads(run_cli("inspect", "--example", "--layer", "bn1", "--json").stdout)
    assert [layer["name"] for layer in data["layers"]] == ["bn1"]


def test_unknown_layer_is_one_line_error():
    result = run_cli("inspect", "--example", "--layer", "nope")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no layer named 'nope'" in result.stderr


def test_missing_file_argument_is_a_usage_error():
    result = run_cli("inspect")
    assert result.returncode == 2 and "FILE is required" in result.stderr


def test_export_writes_canonical_tensors(tmp_path):
    out = tmp_path / "weights.npz"
    result = run_cli("export", "--example", "-o", out)
    assert result.returncode == 0, result.stderr
    with weightscope.load(EXAMPLE) as model, np.load(out, allow_pickle=False) as exported:
        expected = {f"{layer.name}/{t.role}": t.canonical() for layer, t in model.tensors()}
        assert sorted(exported.files) == sorted(expected)
        for key, array in expected.items():
            np.testing.assert_array_equal(exported[key], array)
    assert exported_shape(out, "dwconv2/kernel") == (16, 1, 3, 3)


def test_export_adds_npz_to_a_name_without_a_suffix(tmp_path):
    result = run_cli("export", "--example", "-o", tmp_path / "weights")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights.npz"]
    assert result.stderr == f"wrote 12 tensors in canonical layout to {tmp_path / 'weights.npz'}\n"
    assert exported_shape(tmp_path / "weights.npz", "conv1/kernel") == (8, 1, 3, 3)


@pytest.mark.parametrize("name", ["weights.npy", "weights.zip", "weights.NPY"])
def test_export_refuses_another_suffix_before_reading(tmp_path, name):
    """One line naming the file, before the model is read (here: a model that is not there)."""
    for source in (["--example"], [tmp_path / "no-such-model.h5"]):
        result = run_cli("export", *source, "-o", tmp_path / name)
        assert result.returncode == 2
        assert result.stderr == (
            f"weightscope: {tmp_path / name}: export writes a NumPy .npz archive, not a "
            f"{Path(name).suffix} file; name it {tmp_path / 'weights.npz'}\n"
        )
    assert list(tmp_path.iterdir()) == []
    assert run_cli("export", "--example", "-o", tmp_path / "w.NPZ").returncode == 0


def test_export_refuses_a_folder(tmp_path):
    result = run_cli("export", "--example", "-o", tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"weightscope: {tmp_path}: is a directory, not a regular file\n"


def exported_shape(path, key):
    with np.load(path) as data:
        return data[key].shape


def test_export_refuses_to_overwrite_its_input(tmp_path):
    model_copy = tmp_path / "model.npz"  # an .h5 by content; read by what it holds
    shutil.copy(EXAMPLE, model_copy)
    before = model_copy.read_bytes()
    result = run_cli("export", model_copy, "-o", model_copy)
    assert result.returncode == 2 and "refusing to overwrite" in result.stderr
    assert model_copy.read_bytes() == before


def test_export_file_mode_and_missing_folder(tmp_path):
    out = tmp_path / "w.npz"
    assert run_cli("export", "--example", "-o", out).returncode == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    missing = tmp_path / "no" / "such" / "w.npz"
    result = run_cli("export", "--example", "-o", missing)
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"weightscope: {missing}: output folder {missing.parent} does not exist"
    )


def test_one_layer_view_reads_only_that_layer(tmp_path):
    """--layer reduces only the chosen layer: a damaged tensor elsewhere does not matter."""
    path = with_lying_bias(tmp_path)
    assert run_cli("inspect", path, "--layer", "conv1").returncode == 0
    assert run_cli("inspect", path).returncode == 2


def test_names_are_printed_as_text_not_markup(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(4, name="[bold]x"),
            keras.layers.Dense(2, name="sq[i]"),
            keras.layers.Dense(2, name="[red]y"),
        ]
    )
    path = tmp_path / "markup.keras"
    model.save(path)
    result = run_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    for name in ("[bold]x", "sq[i]", "[red]y"):
        assert name in result.stdout
    detail = run_cli("inspect", path, "--layer", "[bold]x")
    assert detail.returncode == 0 and "[bold]x" in detail.stdout


def test_square_kernels_keep_their_layout_label(tmp_path):
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(6, name="square")])
    path = tmp_path / "square.keras"
    model.save(path)
    square = row(run_cli("inspect", path).stdout, "square")
    assert "│ (6, 6) OI  " in square and "│ (6, 6) IO  " in square


def test_long_list_of_weightless_layers_is_cut_with_a_count(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    names = [f"relu{i}" for i in range(20)]
    nodes = [helper.make_node("Conv", ["x", "w"], ["h0"], name="conv")]
    nodes += [
        helper.make_node("Relu", [f"h{i}"], [f"h{i + 1}"], name=n) for i, n in enumerate(names)
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("h20", onnx.TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((3, 2, 3, 3), np.float32), "w")],
    )  # fmt: skip
    path = tmp_path / "relus.onnx"
    onnx.save(helper.make_model(graph), path)
    table = run_cli("inspect", path)
    assert table.returncode == 0, table.stderr
    footnote = " ".join(table.stdout.split())
    assert "relu0, relu1," in footnote and "relu11," in footnote
    assert "relu12" not in footnote and "(20 in all; --json lists every one)" in footnote
    listed = json.loads(run_cli("inspect", path, "--json").stdout)["weightless_layers"]
    assert listed == names
