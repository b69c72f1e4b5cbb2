"""Unreadable input: exit code 2, one line on stderr naming the file, no traceback, and the
file left untouched."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import run_cli
from damaged import EXAMPLE, edited_example, with_lying_bias, with_string_bias

import weightscope


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


def truncated(tmp_path: Path, fraction: float) -> Path:
    data = EXAMPLE.read_bytes()
    path = tmp_path / f"truncated_{int(fraction * 100)}.h5"
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def random_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "noise.h5"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    return path


def hdf5_without_keras(tmp_path: Path) -> Path:
    path = tmp_path / "plain.h5"
    with h5py.File(path, "w") as h5:
        h5["data"] = np.arange(10)
        h5.attrs["note"] = "not a model"
    return path


def empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.h5"
    path.write_bytes(b"")
    return path


def zip_not_keras(tmp_path: Path) -> Path:
    path = tmp_path / "archive.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    return path


def keras_zip_with_bad_weights(tmp_path: Path) -> Path:
    path = tmp_path / "broken.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("metadata.json", "{}")
        archive.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100)
    return path


def missing(tmp_path: Path) -> Path:
    return tmp_path / "does_not_exist.h5"


def directory(tmp_path: Path) -> Path:
    path = tmp_path / "folder.h5"
    path.mkdir()
    return path


def dangling_layer_name(tmp_path: Path) -> Path:
    def edit(h5: h5py.File) -> None:
        del h5["model_weights/conv1"]

    return edited_example(tmp_path, "dangling.h5", edit)


def truncated_keras(tmp_path: Path) -> Path:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr("model.weights.h5", EXAMPLE.read_bytes())
    path = tmp_path / "cut.keras"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * 2 // 3])
    return path


def config_bomb(tmp_path: Path) -> Path:
    """A .keras whose config.json inflates to over 64 MB."""
    path = tmp_path / "bomb.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b" " * (65 * 1024 * 1024))
        archive.writestr("model.weights.h5", EXAMPLE.read_bytes())
    return path


def model_config_not_an_object(tmp_path: Path) -> Path:
    def edit(h5: h5py.File) -> None:
        h5.attrs["model_config"] = "5"

    return edited_example(tmp_path, "odd_config.h5", edit)


CASES = {
    "truncated_half": lambda p: truncated(p, 0.5),
    "truncated_head": lambda p: truncated(p, 0.02),
    "truncated_tail": lambda p: truncated(p, 0.9),
    "random_bytes": random_bytes,
    "hdf5_without_keras": hdf5_without_keras,
    "empty": empty,
    "zip_not_keras": zip_not_keras,
    "keras_zip_bad_weights": keras_zip_with_bad_weights,
    "missing": missing,
    "directory": directory,
    "dangling_layer_name": dangling_layer_name,
    "truncated_keras": truncated_keras,
    "lying_shape": with_lying_bias,
    "string_weights": with_string_bias,
    "config_bomb": config_bomb,
}


@pytest.mark.parametrize("command", ["inspect", "export"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_unreadable_file_exits_2_with_one_line(case, command, tmp_path):
    path = CASES[case](tmp_path)
    before = digest(path)
    extra = ["-o", str(tmp_path / "out.npz")] if command == "export" else []
    result = run_cli(command, path, *extra)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"weightscope: {path}: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert digest(path) == before
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("hdf5_without_keras", "without Keras structure"),
        ("random_bytes", "unknown format"),
        ("empty", "empty file"),
        ("missing", "no such file"),
        ("zip_not_keras", "not a .keras file"),
        ("dangling_layer_name", "no such group"),
        ("truncated_keras", "damaged or truncated zip"),
        ("lying_shape", "but the file stores 0 bytes"),
        ("string_weights", "not numbers"),
        ("config_bomb", "config.json declares"),
    ],
)
def test_error_names_the_problem(case, problem, tmp_path):
    result = run_cli("inspect", CASES[case](tmp_path))
    assert problem in result.stderr


def test_python_api_raises_weightscope_error(tmp_path):
    for case in ("truncated_half", "random_bytes", "hdf5_without_keras"):
        with (
            pytest.raises(weightscope.WeightscopeError),
            weightscope.load(CASES[case](tmp_path)) as model,
        ):
            for _, tensor in model.tensors():
                tensor.stats()


def test_debug_shows_traceback(tmp_path):
    result = run_cli("inspect", truncated(tmp_path, 0.5), "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_valid_files_are_not_modified(tmp_path):
    before = digest(EXAMPLE)
    assert run_cli("inspect", EXAMPLE).returncode == 0
    assert run_cli("inspect", EXAMPLE, "--json").returncode == 0
    assert run_cli("export", EXAMPLE, "-o", tmp_path / "w.npz").returncode == 0
    assert digest(EXAMPLE) == before


def test_model_config_that_is_no_object_reads_as_weights_only(tmp_path):
    """A config of the wrong type is ignored, not a crash: layers are then inferred."""
    result = run_cli("inspect", model_config_not_an_object(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    layers = json.loads(result.stdout)["layers"]
    assert [layer["kind"] for layer in layers][:1] == ["conv2d"]
    assert all(layer["inferred"] for layer in layers)
