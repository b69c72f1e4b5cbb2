"""Malicious pickles: refused as unsafe, and nothing from them runs.

Each payload would leave a mark file on disk if it ran (a control test proves it with the plain
``pickle`` module). It is put into a torch zip container, a legacy container, a TorchScript
archive, and (where it is an object) into a checkpoint written by ``torch.save`` itself.
weightscope must refuse every one through the command line (exit 2, one line saying ``unsafe``
and naming the file) and the Python API (``UnsafeFileError``), and the mark must never appear.
"""

from __future__ import annotations

import argparse
import builtins
import codecs
import os
import pathlib
import pickle
import pickletools
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from cli_runner import run_cli  # noqa: E402
from torch_builders import (  # noqa: E402
    assert_one_error_line,
    digest,
    legacy_stream,
    read_member,
    rewrite_zip,
)

import weightscope  # noqa: E402
from weightscope.cli.app import main as cli_main  # noqa: E402
from weightscope.errors import UnsafeFileError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

# ---------------------------------------------------------------------------------------------
# payloads: each leaves the file `mark` when unpickled by plain pickle


class OsSystem:
    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {shlex.quote(str(self.mark))}",))


class SubprocessPopen(OsSystem):
    def __reduce__(self) -> Any:
        return (subprocess.Popen, (["touch", str(self.mark)],))


class BuiltinsEval(OsSystem):
    def __reduce__(self) -> Any:
        return (builtins.eval, (f"open({str(self.mark)!r}, 'w').close()",))


class BuiltinsExec(OsSystem):
    def __reduce__(self) -> Any:
        return (builtins.exec, (f"with open({str(self.mark)!r}, 'w'): pass",))


class _ImportBuiltins:
    def __reduce__(self) -> Any:
        return (builtins.__import__, ("builtins",))


class _GetEval:
    """Unpickles as ``getattr(__import__('builtins'), 'eval')``."""

    def __reduce__(self) -> Any:
        return (getattr, (_ImportBuiltins(), "eval"))

    def __call__(self, *args: Any) -> Any:  # pickle wants the callable of a REDUCE to be one
        raise AssertionError("never called while pickling")


class GetattrChain(OsSystem):
    """``getattr(__import__('builtins'), 'eval')(code)``: no dangerous name in the REDUCE of the
    payload itself, only in the chain that builds its callable."""

    def __reduce__(self) -> Any:
        return (_GetEval(), (f"open({str(self.mark)!r}, 'w').close()",))


def _protocol0_inst(mark: Path) -> bytes:
    """``{'w': os.system('touch MARK')}`` with the protocol-0 INST opcode, written by hand."""
    return f"(dp0\nS'w'\np1\n(S'touch {mark}'\np2\nios\nsystem\np3\ns.".encode()


def _protocol0_obj(mark: Path) -> bytes:
    """The same with GLOBAL then OBJ (``cls(*args)`` taken from the stack)."""
    return f"(dp0\nS'w'\np1\n(cos\nsystem\np2\nS'touch {mark}'\np3\nos.".encode()


class CodecsOpen(OsSystem):
    """No 'os' or 'builtins' in sight: ``codecs.open(MARK, 'w')`` creates the file."""

    def __reduce__(self) -> Any:
        return (codecs.open, (str(self.mark), "w"))


PAYLOAD_OBJECTS: dict[str, Callable[[Path], Any]] = {
    "os_system": OsSystem,
    "codecs_open": CodecsOpen,
    "subprocess_popen": SubprocessPopen,
    "builtins_eval": BuiltinsEval,
    "builtins_exec": BuiltinsExec,
    "getattr_chain": GetattrChain,
}
RAW_PAYLOADS: dict[str, Callable[[Path], bytes]] = {
    "protocol0_inst": _protocol0_inst,
    "protocol0_obj": _protocol0_obj,
}
PAYLOADS = sorted([*PAYLOAD_OBJECTS, *RAW_PAYLOADS])


def payload_pickle(name: str, mark: Path, protocol: int | None = None) -> bytes:
    """The pickle of ``{"w": payload}`` (raw payloads are such a dict already)."""
    if name in RAW_PAYLOADS:
        return RAW_PAYLOADS[name](mark)
    return pickle.dumps({"w": PAYLOAD_OBJECTS[name](mark)}, protocol=protocol)


def _wait_for(path: Path, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.02)
    return path.exists()


CONTROL_PARAMS = [
    pytest.param(payload, protocol, id=f"{payload}-protocol{protocol}")
    for payload in PAYLOAD_OBJECTS
    for protocol in sorted({0, 2, pickle.DEFAULT_PROTOCOL})
] + [pytest.param(payload, None, id=payload) for payload in RAW_PAYLOADS]


@pytest.mark.parametrize(("payload", "protocol"), CONTROL_PARAMS)
def test_payload_runs_under_plain_pickle(
    tmp_path: Path, payload: str, protocol: int | None
) -> None:
    """Control: the payloads are live. Plain ``pickle.loads`` runs them and the mark appears
    (so its absence below means that weightscope ran nothing)."""
    mark = tmp_path / "MARK"
    data = payload_pickle(payload, mark, protocol)
    result = pickle.loads(data)  # the point of this control
    if isinstance(result["w"], subprocess.Popen):
        assert result["w"].wait(timeout=10) == 0
    assert _wait_for(mark), f"{payload} left no mark: it is not a working payload"


# ---------------------------------------------------------------------------------------------
# containers


def _zip_container(tmp_path: Path, payload: str, mark: Path) -> Path:
    """A real torch.save zip of a small state dict whose data.pkl is replaced."""
    base = tmp_path / "base.pt"
    torch.save({"w": torch.zeros(3)}, base)
    return rewrite_zip(base, tmp_path / "evil.pt", {"data.pkl": payload_pickle(payload, mark)})


def _legacy_container(tmp_path: Path, payload: str, mark: Path) -> Path:
    path = tmp_path / "evil_legacy.pt"
    path.write_bytes(legacy_stream(payload_pickle(payload, mark, protocol=2)))
    return path


def _torchscript_container(tmp_path: Path, payload: str, mark: Path) -> Path:
    """A real torch.jit.save archive (code and constants kept) whose data.pkl is replaced."""
    base = tmp_path / "base_script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 2))), base)
    return rewrite_zip(
        base, tmp_path / "evil_script.pt", {"data.pkl": payload_pickle(payload, mark)}
    )


def _torch_save(legacy: bool) -> Callable[[Path, str, Path], Path]:
    """Written by torch.save itself: real tensors beside the payload in one checkpoint."""

    def build(tmp_path: Path, payload: str, mark: Path) -> Path:
        path = tmp_path / ("saved_legacy.pt" if legacy else "saved.pt")
        checkpoint = {
            "state_dict": {"fc.weight": torch.ones(2, 2)},
            "w": PAYLOAD_OBJECTS[payload](mark),
        }
        torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
        return path

    return build


CONTAINERS: dict[str, Callable[[Path, str, Path], Path]] = {
    "zip": _zip_container,
    "legacy": _legacy_container,
    "torchscript": _torchscript_container,
    "torch_save_zip": _torch_save(legacy=False),
    "torch_save_legacy": _torch_save(legacy=True),
}
UNSAFE_PARAMS = [
    pytest.param(container, payload, id=f"{container}-{payload}")
    for container in CONTAINERS
    for payload in PAYLOADS
    if payload in PAYLOAD_OBJECTS or not container.startswith("torch_save")
]


@pytest.mark.parametrize(("container", "payload"), UNSAFE_PARAMS)
def test_malicious_pickle_is_refused_and_runs_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], container: str, payload: str
) -> None:
    mark = tmp_path / "MARK"
    path = CONTAINERS[container](tmp_path, payload, mark)
    assert not mark.exists()
    before = digest(path)

    assert_one_error_line(run_cli("inspect", path), path, "unsafe")

    with pytest.raises(UnsafeFileError, match=f"^{re.escape(str(path))}: .*unsafe"):
        weightscope.load(path)

    out = tmp_path / "out.npz"
    assert cli_main(["export", str(path), "-o", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"weightscope: {path}: ")
    assert "unsafe" in error[0]
    assert not out.exists()

    time.sleep(0.1)  # a process started in the background would have touched it by now
    assert not mark.exists(), "the payload ran"
    assert digest(path) == before


def test_unsafe_message_names_the_global(tmp_path: Path) -> None:
    mark = tmp_path / "MARK"
    path = _zip_container(tmp_path, "subprocess_popen", mark)
    line = assert_one_error_line(run_cli("inspect", path), path, "unsafe")
    assert "subprocess.Popen" in line
    assert not mark.exists()


# ---------------------------------------------------------------------------------------------
# benign objects of unknown classes are not unsafe


class MyConfig:
    """A user's own config class, pickled as ``__main__.MyConfig`` (as from a training script)."""

    def __init__(self) -> None:
        self.lr = 0.1
        self.layers = [3, 4]
        self.name = "run-7"


def _benign_checkpoint(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setattr(MyConfig, "__module__", "__main__")
    monkeypatch.setattr(sys.modules["__main__"], "MyConfig", MyConfig, raising=False)
    generator = torch.Generator().manual_seed(9)
    return {
        "state_dict": {
            "fc.weight": torch.randn((3, 4), generator=generator),
            "fc.bias": torch.randn(3, generator=generator),
        },
        "config": MyConfig(),
        "args": argparse.Namespace(batch_size=32, data="imagenet"),
        "best_accuracy": np.float64(0.93),
        "class_weights": np.arange(3, dtype=np.float32),
        "epoch": 12,
        "log_dir": pathlib.PurePosixPath("runs/7"),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_benign_unknown_classes_do_not_make_a_file_unsafe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, legacy: bool
) -> None:
    checkpoint = _benign_checkpoint(monkeypatch)
    path = tmp_path / "benign.ckpt"
    torch.save(checkpoint, path, _use_new_zipfile_serialization=not legacy)
    monkeypatch.undo()  # weightscope reads the file without the class

    stream = path.read_bytes() if legacy else read_member(path, "data.pkl")
    assert b"__main__" in stream and b"MyConfig" in stream
    if not legacy:  # the names really are globals of the pickle
        globals_seen = {
            str(arg) for op, arg, _ in pickletools.genops(stream) if op.name == "GLOBAL"
        }
        assert "__main__ MyConfig" in globals_seen
        assert "argparse Namespace" in globals_seen

    with weightscope.load(path) as model:
        tensors = {t.name: t for _, t in model.tensors()}
        assert sorted(tensors) == ["fc.bias", "fc.weight"]
        for name, value in checkpoint["state_dict"].items():
            np.testing.assert_array_equal(tensors[name].numpy(), value.numpy(), strict=True)
        assert any("state_dict" in note for note in model.notes), model.notes
    result = run_cli("inspect", path)
    assert result.returncode == 0, result.stderr
