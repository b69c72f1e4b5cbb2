"""Reading never changes the input (issue 7, item 4).

One small real file per supported format, each alone in its folder (the ONNX external-data model
with its data file). Before and after every command (``inspect``, ``inspect --json``, ``inspect
--no-stats``, ``export``, ``plot``, ``init``, ``params``, ``explain``, ``report``, ``compare``
with itself), run with the fixture's folder as working directory and any output written
elsewhere, the folder holds the same entries with the same content hash, size, mode, inode, link
count, mtime and ctime (so not even a write that restores the content and the times goes
unseen). Every command runs in this process on every format, and each format also goes through
the real command line once, with a different command each, so that every command runs in a real
process at least once.

Then ``-o`` pointed at the model itself (directly, through a symlink, through a hard link, or at
the ONNX model's external data file): the model must come out unchanged.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")
safetensors_torch = pytest.importorskip("safetensors.torch")

import weightscope  # noqa: E402
from tests.onnx_builders import conv_gemm_model  # noqa: E402
from tests.small_models import (  # noqa: E402
    ConvBnLinear,
    keras_conv_bn_dense,
    torch_conv_bn_linear,
)
from weightscope.cli.app import main as cli_main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

# ---------------------------------------------------------------------------------------------
# one fixture per format


def _keras_model(K: Any) -> Any:
    return keras_conv_bn_dense(K, filters=4, outputs=3, seed=7)


def _torch_net() -> ConvBnLinear:
    return torch_conv_bn_linear(filters=4, outputs=3, seed=7)


def _onnx_model() -> onnx.ModelProto:
    """Conv (a 16x8x3x3 kernel: over onnx's 4 KB, read by offset) then Flatten and Gemm."""
    return conv_gemm_model(7, in_channels=8, filters=16, outputs=3)


def _save_external(proto: onnx.ModelProto, path: Path) -> None:
    onnx.save_model(
        proto,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="model.onnx.data",
        size_threshold=0,
    )


FORMATS: dict[str, tuple[str, Callable[[Path], None]]] = {
    # name: (file name, writer), each writing into its own empty folder
    "keras3_h5": ("model.h5", lambda p: _keras_model(keras).save(p)),
    "keras3_keras": ("model.keras", lambda p: _keras_model(keras).save(p)),
    "keras3_weights_h5": ("model.weights.h5", lambda p: _keras_model(keras).save_weights(p)),
    "tf_keras_h5": ("model.h5", lambda p: _keras_model(tf_keras).save(p)),
    "torch_zip": ("model.pt", lambda p: torch.save(_torch_net().state_dict(), p)),
    "torch_legacy": (
        "model.pt",
        lambda p: torch.save(_torch_net().state_dict(), p, _use_new_zipfile_serialization=False),
    ),
    "torchscript": ("model.pt", lambda p: torch.jit.save(torch.jit.script(_torch_net()), p)),
    "safetensors": (
        "model.safetensors",
        lambda p: safetensors_torch.save_file(_torch_net().state_dict(), p),
    ),
    "onnx_inline": ("model.onnx", lambda p: onnx.save_model(_onnx_model(), p)),
    "onnx_external": ("model.onnx", lambda p: _save_external(_onnx_model(), p)),
}
EXPECTED_FILES = {"onnx_external": ["model.onnx", "model.onnx.data"]}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("inputs")
    paths = {}
    for name, (file_name, write) in FORMATS.items():
        folder = root / name
        folder.mkdir()
        write(folder / file_name)
        paths[name] = folder / file_name
        listing = sorted(p.name for p in folder.iterdir())
        assert listing == EXPECTED_FILES.get(name, [file_name]), listing
    return paths


def first_conv(path: Path) -> str:
    with weightscope.load(path) as model:
        names = [layer.name for layer in model.layers if layer.kind.startswith("conv")]
    assert names, path
    return names[0]


# ---------------------------------------------------------------------------------------------
# what "unchanged" means


def snapshot(folder: Path) -> dict[str, tuple[object, ...]]:
    """Every entry of ``folder``: content hash, size, mode, inode, links, mtime and ctime."""
    entries: dict[str, tuple[object, ...]] = {}
    for entry in sorted(folder.iterdir()):
        stat = entry.lstat()
        digest = hashlib.sha256(entry.read_bytes()).hexdigest() if entry.is_file() else None
        entries[entry.name] = (
            digest,
            stat.st_size,
            stat.st_mode,
            stat.st_ino,
            stat.st_nlink,
            stat.st_mtime_ns,
            stat.st_ctime_ns,
        )
    return entries


def content(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


# ---------------------------------------------------------------------------------------------
# every command on every format

COMMANDS: dict[str, Callable[[Path, str, Path], list[str]]] = {
    # name: (model, first conv layer, output folder) -> arguments; outputs land in `out`
    "inspect": lambda m, conv, out: ["inspect", str(m)],
    "inspect_json": lambda m, conv, out: ["inspect", str(m), "--json"],
    "inspect_no_stats": lambda m, conv, out: ["inspect", str(m), "--no-stats"],
    "export": lambda m, conv, out: ["export", str(m), "-o", str(out / "weights.npz")],
    "plot": lambda m, conv, out: ["plot", str(m), "--layer", conv, "-o", str(out / "k.png")],
    "init": lambda m, conv, out: ["init", str(m)],
    "params": lambda m, conv, out: ["params", str(m)],
    "explain": lambda m, conv, out: ["explain", str(m), conv],
    "report": lambda m, conv, out: ["report", str(m), "-o", str(out / "report.html")],
    "compare": lambda m, conv, out: ["compare", str(m), str(m)],
}
OUTPUTS = {"export": "weights.npz", "plot": "k.png", "report": "report.html"}
# each format goes through the real command line once, each with its own command
REAL_PROCESS = dict(zip(sorted(FORMATS), COMMANDS, strict=True))


def test_every_command_runs_in_a_real_process_once() -> None:
    assert sorted(REAL_PROCESS.values()) == sorted(COMMANDS)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_no_command_changes_the_input(
    fmt: str,
    fixtures: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    model = fixtures[fmt]
    folder = model.parent
    conv = first_conv(model)
    before, root_before = snapshot(folder), sorted(p.name for p in folder.parent.iterdir())
    monkeypatch.chdir(folder)  # a stray relative write would land beside the model

    # the real command line, in the background while the same commands run in this process
    real_out = tmp_path / "real"
    real_out.mkdir()
    real_command = REAL_PROCESS[fmt]
    real = subprocess.Popen(
        [sys.executable, "-m", "weightscope", *COMMANDS[real_command](model, conv, real_out)],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for name, arguments in COMMANDS.items():
            out = tmp_path / name
            out.mkdir()
            capsys.readouterr()
            status = cli_main(arguments(model, conv, out))
            captured = capsys.readouterr()
            assert status == 0, (name, captured.err)
            expected = [OUTPUTS[name]] if name in OUTPUTS else []
            assert sorted(p.name for p in out.iterdir()) == expected, name
        _, stderr = real.communicate(timeout=120)
    finally:
        real.kill()
        real.wait()
    assert real.returncode == 0, (real_command, stderr)
    expected = [OUTPUTS[real_command]] if real_command in OUTPUTS else []
    assert sorted(p.name for p in real_out.iterdir()) == expected
    with np.load(tmp_path / "export" / "weights.npz", allow_pickle=False) as exported:
        assert f"{conv}/kernel" in exported.files

    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.parent.iterdir()) == root_before


# ---------------------------------------------------------------------------------------------
# -o pointed at the model


@pytest.mark.parametrize("fmt", sorted(FORMATS))
@pytest.mark.parametrize("command", ["export", "report"])
def test_output_onto_the_model_is_refused(
    fmt: str, command: str, fixtures: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model = fixtures[fmt]
    before = snapshot(model.parent)
    capsys.readouterr()
    assert cli_main([command, str(model), "-o", str(model)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error
    # export names only .npz files: a model of another suffix is refused for its name first
    named = command == "export" and model.suffix != ".npz" and model.suffix
    assert ("export writes a NumPy .npz archive" if named else "refusing to overwrite") in error[0]
    assert snapshot(model.parent) == before  # no temporary file left beside it either


def _symlink(model: Path, out: Path, suffix: str) -> Path:
    link = out / f"link{suffix}"
    link.symlink_to(model)
    return link


def _hard_link(model: Path, out: Path, suffix: str) -> Path:
    link = out / f"hard{suffix}"
    os.link(model, link)
    return link


def _data_file(model: Path, out: Path, suffix: str) -> Path:
    return model.parent / "model.onnx.data"


TARGETS = {"symlink": _symlink, "hard_link": _hard_link, "onnx_data_file": _data_file}
ONTO_THE_MODEL = [
    pytest.param(
        fmt,
        command,
        target,
        id=f"{fmt}-{command}-{target}",
    )
    for fmt in ("keras3_h5", "torch_zip", "onnx_external")
    for command in ("export", "report", "plot", "init")
    for target in TARGETS
    if target != "onnx_data_file" or fmt == "onnx_external"
]
SUFFIXES = {"export": ".npz", "report": ".html", "plot": ".png", "init": ".png"}


@pytest.mark.parametrize(("fmt", "command", "target"), ONTO_THE_MODEL)
def test_output_through_a_link_leaves_the_model_unchanged(
    fmt: str,
    command: str,
    target: str,
    fixtures: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Refused, or written beside (replacing the link, not the file behind it): either way the
    model's content and mtime stay as they were. (A hard link changes the file's ctime and link
    count by itself, so those are not compared here.)"""
    copy = shutil.copytree(fixtures[fmt].parent, tmp_path / "model")  # the fixture is shared
    model = copy / fixtures[fmt].name
    data = copy / "model.onnx.data"
    inputs = [model, data] if data.exists() else [model]
    before = [content(path) for path in inputs]
    out = TARGETS[target](model, tmp_path, SUFFIXES[command])
    arguments = [command, str(model), "-o", str(out)]
    if command == "plot":
        arguments += ["--layer", first_conv(model)]
    capsys.readouterr()
    status = cli_main(arguments)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert [content(path) for path in inputs] == before, (status, captured.err)
    with weightscope.load(model) as loaded:  # and it still reads
        assert loaded.params.total > 0
