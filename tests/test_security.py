"""A corpus of malicious model files, and every path weightscope reads them by (issue 7, item 3).

Each case is a file built here that carries a payload which leaves a mark if it ever runs:

- pickles that run a program or Python code when unpickled (``os.system``,
  ``subprocess.Popen`` / ``check_call``, ``builtins.exec`` / ``eval``, the chain
  ``getattr(__import__('os'), 'system')``, the protocol-0/1 ``INST`` and ``OBJ`` opcodes, and a
  class from a module that does the harm on import), in the ``data.pkl`` of a torch zip, a legacy
  torch file (also in its ``sys_info`` pickle), a TorchScript archive (``data.pkl`` and
  ``constants.pkl``), and in a checkpoint written by ``torch.save`` next to real tensors;
- Keras models whose ``Lambda`` layer holds marshalled code that writes a file: a Keras 3
  ``.keras``, a Keras 3 legacy ``.h5`` and a tf_keras ``.h5``, saved by the real Keras;
- ONNX models whose external data lies outside the model's folder (``../secret.bin``,
  ``/etc/passwd``, a symlink in the folder that leads out) or is a FIFO or ``/dev/zero``.

The mark of a pickle or a Lambda is a file ``pwned-<case>`` created in the working directory:
the payloads name it relatively, so the very same file proves itself live in a control directory
and is checked in its own folder while weightscope reads it. The mark of an ONNX case is a read
of the file outside the folder (or of the FIFO, or the device).

- ``test_payload_is_live``: the naive loader (``torch.load(weights_only=False)``, ``pickle.load``,
  Keras' ``load_model``, ``marshal`` + a call of the Lambda's stored code, a plain ``open`` of
  the external data location), run in a subprocess, does leave the mark; so a payload that
  silently does nothing cannot make the tests below pass.
- ``test_reading_path``: every case x every reading path (``PATHS``: ``weightscope.load`` with
  the statistics and canonical array of every tensor, then the commands ``inspect``, ``inspect
  --json``, ``export``, ``params``, ``init``, ``report`` and ``compare`` against itself), in this
  process, the working directory being the case's folder, under an audit hook that sees programs
  started, code executed or unmarshalled, globals resolved by a standard unpickler, modules of
  the corpus imported and files opened. The file is refused with one clear line, or read without
  running anything where that is right (a Lambda is only a name; ``constants.pkl`` is never
  unpickled; a class is never imported); the mark never appears and nothing in the case's folder
  changes. A deadline turns a hang into a failure.
- ``test_command_line``: representative cases through the real command line, one subprocess
  each, every command at least once.
"""

from __future__ import annotations

import builtins
import concurrent.futures
import contextlib
import hashlib
import json
import marshal
import os
import pickle
import re
import resource
import signal
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from cli_runner import run_cli_subprocess  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from torch_builders import (  # noqa: E402
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    legacy_stream,
    rewrite_zip,
)

import weightscope  # noqa: E402
from weightscope.cli.app import main as cli_main  # noqa: E402
from weightscope.errors import UnsafeFileError, WeightscopeError  # noqa: E402

# the corpus and its controls (naive loaders in subprocesses) are built once: one xdist worker
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.xdist_group("security"),
]

DEADLINE_S = 20  # per reading path; a hang becomes a failure, not a stuck test run
CLI_TIMEOUT_S = 60

# ---------------------------------------------------------------------------------------------
# what runs, what is opened: an audit hook (sys.addaudithook cannot be removed; it records only
# while a test has switched it on)

_EVENTS = frozenset(
    {
        "os.system", "subprocess.Popen", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
        "os.forkpty", "pty.spawn", "exec", "marshal.loads", "marshal.load", "pickle.find_class",
        "ctypes.dlopen", "socket.connect", "webbrowser.open",
    }
)  # fmt: skip
"""Events of code running. ``exec`` and ``marshal.loads`` also happen when Python imports a module
(weightscope imports its reporters lazily): those, raised under ``importlib``, are not counted."""
EVIL_MODULE_PREFIX = "pwnmod_"


@dataclass
class _Spy:
    events: list[str] = field(default_factory=list)
    opened: list[str] = field(default_factory=list)


_spy: _Spy | None = None


def _under_import() -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


_KERAS = (Path(weightscope.__file__).parent / "formats" / "keras").resolve()
_REPORTERS = (Path(weightscope.__file__).parent / "reporters").resolve()
_GUARDS = {
    ("os.fork", str(_KERAS / "hdf5_guard.py"), "_forked"),
    ("subprocess.Popen", str(_KERAS / "hdf5_guard_server.py"), "_spawn"),
    ("os.fork", str(_REPORTERS / "html.py"), "_fork_child"),
}
"""weightscope's own processes: a child forked to walk an HDF5 file's structure with h5py under
a deadline (libhdf5 can loop for ever on damaged metadata), the helper, running weightscope's
own code, that a process holding a framework forks those children from, or the child that
draws half of a report's layers (the same checks and figures on the model already read; it
sends them back as JSON, not a pickle). They run nothing from the file; any other process
started is counted."""


def _guard_process(event: str) -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        code = frame.f_code
        if (event, str(Path(code.co_filename).resolve()), code.co_name) in _GUARDS:
            return True
        frame = frame.f_back
    return False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    spy = _spy
    if spy is None:
        return
    if event == "open":
        if isinstance(args[0], (str, bytes, os.PathLike)):
            spy.opened.append(os.fsdecode(args[0]))
    elif event == "import":
        if str(args[0]).startswith(EVIL_MODULE_PREFIX):
            spy.events.append(f"import {args[0]}")
    elif event in _EVENTS and not _under_import() and not _guard_process(event):
        spy.events.append(f"{event} {args!r:.200}")


sys.addaudithook(_audit)


@contextlib.contextmanager
def watched() -> Iterator[_Spy]:
    global _spy
    spy = _Spy()
    _spy = spy
    try:
        yield spy
    finally:
        _spy = None


class Hang(BaseException):
    """Raised by the deadline's signal; a BaseException, so no ``except Exception`` hides it."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Interrupt the main thread after ``seconds`` (also a blocking ``open`` of a FIFO)."""

    def expire(signum: int, frame: object) -> None:
        raise Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_the_spy_sees_code_run_and_files_opened(tmp_path: Path) -> None:
    """The audit hook is live: a watch that saw nothing means that nothing happened."""
    (tmp_path / f"{EVIL_MODULE_PREFIX}selftest.py").write_text("VALUE = 1\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with watched() as spy:
            exec("1")
            marshal.loads(marshal.dumps(1))
            subprocess.run(["true"], check=True)
            __import__(f"{EVIL_MODULE_PREFIX}selftest")
            (tmp_path / "opened").write_bytes(b"")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(f"{EVIL_MODULE_PREFIX}selftest", None)
    kinds = [event.split()[0] for event in spy.events]
    assert kinds == ["exec", "marshal.loads", "subprocess.Popen", "import"], spy.events
    assert str(tmp_path / "opened") in spy.opened


# ---------------------------------------------------------------------------------------------
# pickle payloads; ``mark`` is a relative file name, created in the working directory


class OsSystem:
    def __init__(self, mark: str) -> None:
        self.mark = mark

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.mark}",))


class SubprocessPopen(OsSystem):
    def __reduce__(self) -> Any:
        return (subprocess.Popen, (["touch", self.mark],))


class SubprocessCheckCall(OsSystem):
    def __reduce__(self) -> Any:
        return (subprocess.check_call, (["touch", self.mark],))


class BuiltinsExec(OsSystem):
    def __reduce__(self) -> Any:
        return (builtins.exec, (f"open({self.mark!r}, 'w').close()",))


class BuiltinsEval(OsSystem):
    def __reduce__(self) -> Any:
        return (builtins.eval, (f"open({self.mark!r}, 'w').close()",))


class _ImportOs:
    def __reduce__(self) -> Any:
        return (builtins.__import__, ("os",))


class _GetSystem:
    """Unpickles as ``getattr(__import__('os'), 'system')``."""

    def __reduce__(self) -> Any:
        return (builtins.getattr, (_ImportOs(), "system"))

    def __call__(self, *args: Any) -> Any:  # pickle wants the callable of a REDUCE to be one
        raise AssertionError("never called while pickling")


class GetattrChain(OsSystem):
    """``getattr(__import__('os'), 'system')('touch MARK')``."""

    def __reduce__(self) -> Any:
        return (_GetSystem(), (f"touch {self.mark}",))


def evil_module_source(mark: str) -> str:
    """A module of a training repository that does harm on import and on unpickling."""
    return textwrap.dedent(f"""\
        open({mark!r}, "w").close()


        class Config:
            def __setstate__(self, state):
                open({mark!r}, "w").close()
        """)


def importable_class(module: str) -> Any:
    """An instance of ``<module>.Config``, pickled by name (the module lies beside the file)."""
    cls = type("Config", (), {"__module__": module, "__qualname__": "Config"})
    instance = cls()
    instance.lr = 0.1
    return instance


@contextlib.contextmanager
def registered(module: str, obj: Any) -> Iterator[None]:
    """Let pickle find ``obj``'s class as ``<module>.Config`` without running the module."""
    stub = types.ModuleType(module)
    stub.Config = type(obj)  # type: ignore[attr-defined]
    sys.modules[module] = stub
    try:
        yield
    finally:
        del sys.modules[module]


OBJECT_PAYLOADS: dict[str, tuple[Callable[[str], Any], str]] = {
    # name: (payload, the global the refusal must name; protocol 2 writes Python 2's module
    # names, ``commands.Popen`` and ``__builtin__.eval``, so only the attribute is checked)
    "os_system": (OsSystem, ".system"),
    "subprocess_popen": (SubprocessPopen, ".Popen"),
    "subprocess_check_call": (SubprocessCheckCall, ".check_call"),
    "builtins_exec": (BuiltinsExec, ".exec"),
    "builtins_eval": (BuiltinsEval, ".eval"),
    "getattr_chain": (GetattrChain, ".getattr"),
}


def _inst_opcode(mark: str) -> bytes:
    """``{'w': os.system('touch MARK')}`` with protocol 0's INST opcode, written by hand."""
    return f"(dp0\nS'w'\np1\n(S'touch {mark}'\np2\nios\nsystem\np3\ns.".encode()


def _obj_opcode(mark: str) -> bytes:
    """The same with GLOBAL then protocol 1's OBJ opcode (``cls(*args)`` from the stack)."""
    return f"(dp0\nS'w'\np1\n(cos\nsystem\np2\nS'touch {mark}'\np3\nos.".encode()


RAW_PAYLOADS: dict[str, tuple[Callable[[str], bytes], str]] = {
    "inst_opcode": (_inst_opcode, "os.system"),
    "obj_opcode": (_obj_opcode, "os.system"),
}


def payload_pickle(payload: str, mark: str) -> bytes:
    if payload in RAW_PAYLOADS:
        return RAW_PAYLOADS[payload][0](mark)
    return pickle.dumps({"w": OBJECT_PAYLOADS[payload][0](mark)}, protocol=2)


# ---------------------------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    name: str
    family: str  # torch, keras or onnx: who builds it, and how its control runs
    build: Callable[[Path, str], Path] | None  # (case folder, mark name) -> model file
    expect: str  # "unsafe": refused as unsafe; "error": refused; "read": read, nothing run
    words: tuple[str, ...] = ()  # the refusal line holds each
    naive: str = ""  # the naive loader of the control
    check: Callable[[weightscope.Model], None] | None = None  # what a read must find

    @property
    def mark(self) -> str:
        return f"pwned-{self.name}"


def _base_zip(folder: Path) -> Path:
    base = folder / "base.pt"
    torch.save({"w": torch.zeros(3)}, base)
    return base


_SCRIPT_BYTES: dict[str, bytes] = {}


def _base_script(folder: Path) -> Path:
    """A real torch.jit.save archive (scripted once per session, copied after)."""
    base = folder / "base_script.pt"
    if "archive" not in _SCRIPT_BYTES:
        module = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        torch.jit.save(module, base)
        _SCRIPT_BYTES["archive"] = base.read_bytes()
    base.write_bytes(_SCRIPT_BYTES["archive"])
    return base


def _in_zip(payload: str) -> Callable[[Path, str], Path]:
    def build(folder: Path, mark: str) -> Path:
        evil = rewrite_zip(
            _base_zip(folder), folder / "model.pt", {"data.pkl": payload_pickle(payload, mark)}
        )
        (folder / "base.pt").unlink()
        return evil

    return build


def _in_legacy(payload: str) -> Callable[[Path, str], Path]:
    def build(folder: Path, mark: str) -> Path:
        path = folder / "model.pt"
        path.write_bytes(legacy_stream(payload_pickle(payload, mark)))
        return path

    return build


def _in_legacy_sys_info(folder: Path, mark: str) -> Path:
    """The payload where a legacy file keeps its sys_info (the third pickle), before the root."""
    path = folder / "model.pt"
    head = [pickle.dumps(LEGACY_MAGIC, 2), pickle.dumps(LEGACY_PROTOCOL, 2)]
    tail = [pickle.dumps({"epoch": 1}, 2), pickle.dumps([], 2)]  # the root, the storage keys
    path.write_bytes(b"".join([*head, payload_pickle("os_system", mark), *tail]))
    return path


def _in_script(payload: str, member: str) -> Callable[[Path, str], Path]:
    def build(folder: Path, mark: str) -> Path:
        base = _base_script(folder)
        evil = rewrite_zip(base, folder / "model.pt", {member: payload_pickle(payload, mark)})
        base.unlink()
        return evil

    return build


STATE_DICT = {"fc.weight": torch.arange(6.0).reshape(2, 3), "fc.bias": torch.tensor([0.5, -1.0])}


def _in_checkpoint(payload: str, legacy: bool) -> Callable[[Path, str], Path]:
    """Written by torch.save itself: real tensors next to the payload in one checkpoint."""

    def build(folder: Path, mark: str) -> Path:
        path = folder / "model.ckpt"
        if payload == "importable_class":
            module = f"{EVIL_MODULE_PREFIX}{folder.name.replace('-', '_')}"
            (folder / f"{module}.py").write_text(evil_module_source(mark))
            obj = importable_class(module)
            context: contextlib.AbstractContextManager[None] = registered(module, obj)
        else:
            obj = OBJECT_PAYLOADS[payload][0](mark)
            context = contextlib.nullcontext()
        with context:
            torch.save(
                {"state_dict": dict(STATE_DICT), "epoch": 3, "config": obj},
                path,
                _use_new_zipfile_serialization=not legacy,
            )
        return path

    return build


def _has_state_dict(model: weightscope.Model) -> None:
    tensors = {t.name: t for _, t in model.tensors()}
    assert sorted(tensors) == ["fc.bias", "fc.weight"]
    for name, value in STATE_DICT.items():
        np.testing.assert_array_equal(tensors[name].numpy(), value.numpy(), strict=True)


def _has_linear(model: weightscope.Model) -> None:
    assert model.format == "torchscript"
    assert [t.native_shape for _, t in model.tensors()] == [(2, 2), (2,)]


def _lists_the_lambda(model: weightscope.Model) -> None:
    assert "lam" in model.weightless_layers, model.weightless_layers
    assert [layer.name for layer in model.layers] == ["conv", "dense"]


def _torch_cases() -> list[Case]:
    cases = []
    for payload, (_, name) in {**OBJECT_PAYLOADS, **RAW_PAYLOADS}.items():
        containers = {
            "zip": (_in_zip(payload), "torch.load"),
            "legacy": (_in_legacy(payload), "torch.load"),
            # torch.jit.load's own unpickler knows only TorchScript's types and refuses these
            # globals: the naive loader of an archive's pickle is pickle.load
            "torchscript": (_in_script(payload, "data.pkl"), "pickle.load data.pkl"),
        }
        if payload in OBJECT_PAYLOADS:  # (torch.save writes protocol 2: no INST or OBJ)
            containers["checkpoint_zip"] = (_in_checkpoint(payload, False), "torch.load")
            containers["checkpoint_legacy"] = (_in_checkpoint(payload, True), "torch.load")
        unsafe = ("unsafe", "nothing was run", name)
        for container, (build, naive) in containers.items():
            cases.append(Case(f"{container}-{payload}", "torch", build, "unsafe", unsafe, naive))
    cases.append(
        Case(
            "legacy_sys_info-os_system",
            "torch",
            _in_legacy_sys_info,
            "unsafe",
            ("unsafe", "nothing was run", ".system"),
            "torch.load",
        )
    )
    # weightscope never unpickles constants.pkl: the archive is read, the payload ignored
    for payload in ("os_system", "inst_opcode"):
        build = _in_script(payload, "constants.pkl")
        naive = "pickle.load constants.pkl"
        name = f"torchscript_constants-{payload}"
        cases.append(Case(name, "torch", build, "read", naive=naive, check=_has_linear))
    # a class is an opaque stand-in, never imported: the checkpoint is read, not unsafe
    for container, legacy in (("checkpoint_zip", False), ("checkpoint_legacy", True)):
        build = _in_checkpoint("importable_class", legacy)
        name = f"{container}-importable_class"
        cases.append(Case(name, "torch", build, "read", naive="torch.load", check=_has_state_dict))
    return cases


# built by KERAS_SCRIPT in a subprocess, with the real Keras; read, the Lambda listed by name
KERAS_CASES = [
    Case(name, "keras", None, "read", naive=naive, check=_lists_the_lambda)
    for name, naive in (
        ("keras3_keras-lambda", "keras load_model"),
        ("keras3_h5-lambda", "marshal + call"),
        ("tf_keras_h5-lambda", "tf_keras load_model"),
    )
]
KERAS_FILES = {
    "keras3_keras-lambda": "model.keras",
    "keras3_h5-lambda": "model.h5",
    "tf_keras_h5-lambda": "model.h5",
}

# ONNX: model.onnx in <case>/model/; the file outside its folder is <case>/secret.bin
KERNEL_DIMS = (4, 2, 3, 3)


def _onnx_case(location: Callable[[Path], str]) -> Callable[[Path, str], Path]:
    def build(folder: Path, mark: str) -> Path:
        model_folder = folder / "model"
        model_folder.mkdir()
        secret = np.arange(np.prod(KERNEL_DIMS), dtype=np.float32) + 0.25
        (folder / "secret.bin").write_bytes(secret.tobytes())
        tensor = TensorProto(name="conv.weight", data_type=TensorProto.FLOAT, dims=KERNEL_DIMS)
        tensor.data_location = TensorProto.EXTERNAL
        entry = tensor.external_data.add()  # no length: a naive reader reads to the end
        entry.key, entry.value = "location", location(model_folder)
        node = helper.make_node("Conv", ["X", "conv.weight"], ["Y"], name="conv")
        graph = helper.make_graph(
            [node],
            "g",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 2, 5, 5])],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
            [tensor],
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        proto.ir_version = 8
        path = model_folder / "model.onnx"
        path.write_bytes(proto.SerializeToString())
        return path

    return build


def _symlink(name: str, target: Callable[[Path], Path]) -> Callable[[Path], str]:
    def location(model_folder: Path) -> str:
        (model_folder / name).symlink_to(target(model_folder))
        return name

    return location


def _fifo(model_folder: Path) -> str:
    os.mkfifo(model_folder / "pipe.bin")
    return "pipe.bin"


ONNX_LOCATIONS: dict[str, tuple[Callable[[Path], str], str, str | None]] = {
    # case: (location, what the refusal says, the file a naive reader leaks)
    "onnx-parent": (lambda m: "../secret.bin", "refused", "secret.bin"),
    "onnx-etc_passwd": (lambda m: "/etc/passwd", "refused", "/etc/passwd"),
    "onnx-symlink_out": (
        _symlink("link.bin", lambda m: m.parent / "secret.bin"),
        "refused",
        "secret.bin",
    ),
    "onnx-dev_zero": (lambda m: "/dev/zero", "refused", None),
    "onnx-symlink_dev_zero": (_symlink("zero.bin", lambda m: Path("/dev/zero")), "refused", None),
    "onnx-fifo": (_fifo, "not a file", None),
}
ONNX_CASES = [
    Case(
        name,
        "onnx",
        _onnx_case(location),
        "unsafe" if word == "refused" else "error",
        (word,),
        naive="open(location)",
    )
    for name, (location, word, _) in ONNX_LOCATIONS.items()
]

CASES = {case.name: case for case in [*_torch_cases(), *KERAS_CASES, *ONNX_CASES]}


def forbidden_reads(case: Case, folder: Path) -> list[str]:
    """Files an ONNX case must never open: whatever its location leads to, and the secret."""
    if case.family != "onnx":
        return []
    return [str(folder / "secret.bin"), "/etc/passwd", "/dev/zero", str(folder / "model/pipe.bin")]


# ---------------------------------------------------------------------------------------------
# building the corpus (once per module) and the controls


KERAS_SCRIPT = r"""
import base64, builtins, json, marshal, os, sys, types
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import h5py
import numpy as np

spec = json.loads(sys.argv[1])
os.chdir(spec["scratch"])  # building a model calls its Lambda once: that mark lands here


def model(K, mark):
    function = eval(f"lambda x: (open({mark!r}, 'w'), x)[1]")  # the mark's name is a constant
    return K.Sequential([
        K.Input((6, 6, 2)), K.layers.Conv2D(3, 3, name="conv"),
        K.layers.Lambda(function, name="lam"), K.layers.Flatten(), K.layers.Dense(2, name="dense"),
    ])


import keras
import tf_keras
for case, item in spec["cases"].items():
    K = tf_keras if case.startswith("tf_keras") else keras
    model(K, item["mark"]).save(item["path"])

results = {}
for case, item in spec["cases"].items():
    os.chdir(item["control"])
    result = results[case] = {"error": None}
    try:
        if case == "keras3_keras-lambda":
            try:
                keras.saving.load_model(item["path"])
            except ValueError as exc:
                result["safe_mode_refused"] = "safe_mode" in str(exc)
            result["mark_after_safe_load"] = os.path.exists(item["mark"])
            loaded = keras.saving.load_model(item["path"], safe_mode=False)
            result["mark_after_load"] = os.path.exists(item["mark"])
            loaded(np.zeros((1, 6, 6, 2), "float32"))
        elif case == "keras3_h5-lambda":
            with h5py.File(item["path"], "r") as h5:
                config = json.loads(h5.attrs["model_config"])
            (layer,) = [l for l in config["config"]["layers"] if l["class_name"] == "Lambda"]
            code = marshal.loads(base64.b64decode(layer["config"]["function"]["config"]["code"]))
            types.FunctionType(code, {"__builtins__": builtins})(None)
        else:
            tf_keras.models.load_model(item["path"])  # the default: no safe_mode for .h5
            result["mark_after_load"] = os.path.exists(item["mark"])
    except Exception as exc:
        result["error"] = repr(exc)[:300]
print("RESULTS " + json.dumps(results))
"""

TORCH_SCRIPT = r"""
import json, os, pickle, subprocess, sys, zipfile
import torch

results = {}
for case, item in json.loads(sys.argv[1]).items():
    os.chdir(item["control"])
    sys.path.insert(0, item["folder"])  # a checkpoint's own module lies beside it, as in a repo
    try:
        if item["naive"] == "torch.load":
            loaded = torch.load(item["path"], weights_only=False)
        else:  # "pickle.load <member>": torch.jit.load's own unpickler refuses these globals
            member = item["naive"].split()[-1]
            with zipfile.ZipFile(item["path"]) as archive:
                (name,) = [n for n in archive.namelist() if n.endswith("/" + member)]
                loaded = pickle.loads(archive.read(name))
        values = loaded.values() if isinstance(loaded, dict) else [loaded]
        for value in values:
            if isinstance(value, subprocess.Popen):
                value.wait(timeout=20)
        results[case] = None
    except Exception as exc:
        results[case] = repr(exc)[:300]
    finally:
        sys.path.remove(item["folder"])
print("RESULTS " + json.dumps(results))
"""

ONNX_NAIVE = r"""
import os, sys
folder, location, mark = sys.argv[1:]
# what the ONNX spec says location means, read as a naive loader does (no length: to the end)
with open(os.path.join(folder, location), "rb") as data:
    content = data.read()
with open(mark, "wb") as out:
    out.write(content)
"""


def _results(completed: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [line for line in completed.stdout.splitlines() if line.startswith("RESULTS ")]
    assert completed.returncode == 0 and lines, completed.stderr[-3000:]
    return json.loads(lines[-1][len("RESULTS ") :])


class Corpus:
    """The corpus, built once per module in ``root/<case>/``, and the controls, which run the
    naive loaders with ``control/<case>/`` as working directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.control = root / "_control"
        self.paths: dict[str, Path] = {}
        self.controls: dict[str, Any] = {}
        self._families: set[str] = set()

    def folder(self, case: str) -> Path:
        return self.root / case

    def path(self, case: str) -> Path:
        family = CASES[case].family
        if family not in self._families:
            self._families.add(family)
            getattr(self, f"_build_{family}")()
        return self.paths[case]

    def control_result(self, case: str) -> Any:
        self.path(case)
        return self.controls[case]

    def _cases(self, family: str) -> list[Case]:
        cases = [case for case in CASES.values() if case.family == family]
        for case in cases:
            assert re.fullmatch(r"[\w.-]+", case.mark), case.mark
            self.folder(case.name).mkdir(parents=True)
            (self.control / case.name).mkdir(parents=True)
        return cases

    def _build_torch(self) -> None:
        spec = {}
        for case in self._cases("torch"):
            assert case.build is not None
            self.paths[case.name] = case.build(self.folder(case.name), case.mark)
            spec[case.name] = {
                "path": str(self.paths[case.name]),
                "naive": case.naive,
                "folder": str(self.folder(case.name)),
                "control": str(self.control / case.name),
            }
        script = [sys.executable, "-c", TORCH_SCRIPT, json.dumps(spec)]
        self.controls.update(_results(subprocess.run(script, **_quiet(120))))

    def _build_keras(self) -> None:
        for module in ("keras", "tf_keras"):
            pytest.importorskip(module)
        spec: dict[str, Any] = {"scratch": str(self.root / "_keras_scratch"), "cases": {}}
        Path(spec["scratch"]).mkdir()
        for case in self._cases("keras"):
            self.paths[case.name] = self.folder(case.name) / KERAS_FILES[case.name]
            spec["cases"][case.name] = {
                "path": str(self.paths[case.name]),
                "mark": case.mark,
                "control": str(self.control / case.name),
            }
        script = [sys.executable, "-c", KERAS_SCRIPT, json.dumps(spec)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.controls.update(_results(subprocess.run(script, env=env, **_quiet(240))))

    def _build_onnx(self) -> None:
        running = {}
        for case in self._cases("onnx"):
            assert case.build is not None
            path = self.paths[case.name] = case.build(self.folder(case.name), case.mark)
            location = onnx.load(path, load_external_data=False).graph.initializer[0]
            naive = [ONNX_NAIVE, str(path.parent), location.external_data[0].value, case.mark]
            running[case.name] = subprocess.Popen(
                [sys.executable, "-S", "-c", *naive],
                cwd=self.control / case.name,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_limit_memory,
            )
        for name, process in running.items():
            try:
                _, err = process.communicate(timeout=1.5)
                self.controls[name] = {"returncode": process.returncode, "stderr": err[-300:]}
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                self.controls[name] = {"returncode": None, "stderr": b"timed out: blocked"}


def _quiet(timeout: float) -> dict[str, Any]:
    return {"capture_output": True, "text": True, "timeout": timeout, "check": False}


def _limit_memory() -> None:
    """A naive read of /dev/zero grows without end: let it fail at 256 MiB instead."""
    resource.setrlimit(resource.RLIMIT_AS, (2**28, 2**28))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("corpus"))


# ---------------------------------------------------------------------------------------------
# controls: the payloads are live


def _wait_for(path: Path, seconds: float = 10.0) -> bool:
    deadline_at = time.monotonic() + seconds
    while time.monotonic() < deadline_at and not path.exists():
        time.sleep(0.02)
    return path.exists()


@pytest.mark.parametrize("case", sorted(CASES))
def test_payload_is_live(case: str, corpus: Corpus) -> None:
    """The naive loader, in a subprocess whose working directory is the control folder, leaves
    the mark there (for ONNX: reads the secret, /etc/passwd, or never finishes on a FIFO or
    /dev/zero); and the case's own folder holds no mark."""
    spec = CASES[case]
    result = corpus.control_result(case)
    mark = corpus.control / case / spec.mark
    if spec.family == "onnx":
        leaked = ONNX_LOCATIONS[case][2]
        if leaked is None:
            # blocked in open() on the FIFO; out of memory reading /dev/zero to its end
            assert result["returncode"] != 0, result
            assert not mark.exists()
        else:
            assert result["returncode"] == 0, result
            expected = corpus.folder(case) / leaked  # (an absolute path stays itself)
            assert mark.read_bytes() == expected.read_bytes()  # the naive reader leaked it
    else:
        assert _wait_for(mark), f"{case}: {spec.naive} left no mark ({result})"
        if spec.family == "keras":
            assert result["error"] is None, result
            if case == "keras3_keras-lambda":  # Keras 3's default load refuses the lambda,
                assert result["safe_mode_refused"], result  # safe_mode=False runs it on load
                assert not result["mark_after_safe_load"] and result["mark_after_load"], result
            if case == "tf_keras_h5-lambda":  # tf_keras' default load of an .h5 runs it
                assert result["mark_after_load"], result
    assert not (corpus.folder(case) / spec.mark).exists()


# ---------------------------------------------------------------------------------------------
# every reading path


PATHS: dict[str, Callable[[Path, Path], list[str]]] = {
    "inspect": lambda p, out: ["inspect", str(p)],
    "inspect_json": lambda p, out: ["inspect", str(p), "--json"],
    "export": lambda p, out: ["export", str(p), "-o", str(out / "weights.npz")],
    "params": lambda p, out: ["params", str(p)],
    "init": lambda p, out: ["init", str(p)],
    "report": lambda p, out: ["report", str(p), "-o", str(out / "report.html")],
    "compare": lambda p, out: ["compare", str(p), str(p)],
}
OUTPUTS = {"export": "weights.npz", "report": "report.html"}


def snapshot(folder: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``folder``: kind, and for files content hash, size, mtime and ctime."""
    entries: dict[str, tuple[object, ...]] = {}
    for entry in sorted(folder.rglob("*")):
        stat = entry.lstat()
        key = str(entry.relative_to(folder))
        if entry.is_symlink():
            entries[key] = ("link", os.readlink(entry))
        elif entry.is_fifo():
            entries[key] = ("fifo", stat.st_mtime_ns, stat.st_ctime_ns)
        elif entry.is_file():
            digest = hashlib.sha256(entry.read_bytes()).hexdigest()
            entries[key] = ("file", digest, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
        else:
            entries[key] = ("dir",)
    return entries


def run_path(
    case: Case, path_name: str, model: Path, out: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int | Exception, str, str]:
    """One reading path in this process: (exit status or the API's exception, stdout, stderr)."""
    capsys.readouterr()
    status: int | Exception = 0
    with deadline(DEADLINE_S):
        if path_name == "api":
            try:
                with weightscope.load(model) as loaded:
                    for _, tensor in loaded.tensors():
                        tensor.stats()
                        tensor.canonical() if tensor.native_layout else tensor.numpy()
                    if case.check is not None:
                        case.check(loaded)
            except WeightscopeError as exc:
                status = exc
        else:
            status = cli_main(PATHS[path_name](model, out))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_refused(
    case: Case, path_name: str, model: Path, result: tuple[int | Exception, str, str]
) -> None:
    status, out, err = result
    if path_name == "api":
        assert isinstance(status, WeightscopeError), f"read without complaint: {status}"
        if case.expect == "unsafe":
            assert isinstance(status, UnsafeFileError), repr(status)
        line = str(status)
        assert line.startswith(f"{model}: "), line
    else:
        assert status == 2, (status, err)
        assert out == "", out
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err, err
        line = lines[0]
        assert line.startswith(f"weightscope: {model}: "), line
    assert "\n" not in line and "unexpected" not in line, line
    for word in case.words:
        assert word in line, (word, line)


def assert_read(case: Case, path_name: str, out_dir: Path, result: tuple[Any, str, str]) -> None:
    status, out, err = result
    assert status == 0, (status, err)
    assert "Traceback" not in err, err
    if path_name == "inspect_json":
        data = json.loads(out)
        if case.family == "keras":
            assert "lam" in data["weightless_layers"]
    if path_name in OUTPUTS:
        written = out_dir / OUTPUTS[path_name]
        assert written.is_file()
        if path_name == "export":
            with np.load(written, allow_pickle=False) as arrays:
                assert arrays.files


TABLE = [
    pytest.param(case, path_name, id=f"{case}-{path_name}")
    for case in CASES
    for path_name in ("api", *PATHS)
]


@pytest.mark.parametrize(("case", "path_name"), TABLE)
def test_reading_path(
    case: str,
    path_name: str,
    corpus: Corpus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = CASES[case]
    model = corpus.path(case)
    folder = corpus.folder(case)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = snapshot(folder)
    monkeypatch.chdir(folder)  # a payload's mark would land here
    monkeypatch.syspath_prepend(str(folder))  # and the module of a pickled class is importable

    with watched() as spy:
        result = run_path(spec, path_name, model, out_dir, capsys)

    if spec.expect == "read":
        assert_read(spec, path_name, out_dir, result)
    else:
        assert_refused(spec, path_name, model, result)
        assert sorted(p.name for p in out_dir.iterdir()) == [], "output written for a refused file"
    if path_name in OUTPUTS and spec.expect == "read":
        assert sorted(p.name for p in out_dir.iterdir()) == [OUTPUTS[path_name]]
    assert spy.events == [], f"code ran while reading: {spy.events}"
    opened = {os.path.realpath(p) for p in spy.opened}
    for target in forbidden_reads(spec, folder):
        assert os.path.realpath(target) not in opened, f"opened {target}"
    assert not (folder / spec.mark).exists(), "the payload ran"
    assert snapshot(folder) == before, "the case's folder changed"


# ---------------------------------------------------------------------------------------------
# the real command line, one subprocess per representative case, every command at least once

COMMAND_LINE = [
    ("zip-os_system", "inspect"),
    ("legacy-obj_opcode", "inspect_json"),
    ("legacy_sys_info-os_system", "params"),
    ("torchscript-getattr_chain", "export"),
    ("torchscript_constants-os_system", "report"),
    ("checkpoint_zip-subprocess_popen", "init"),
    ("checkpoint_legacy-importable_class", "compare"),
    ("zip-inst_opcode", "compare"),
    ("keras3_keras-lambda", "inspect"),
    ("keras3_h5-lambda", "export"),
    ("tf_keras_h5-lambda", "report"),
    ("onnx-symlink_out", "inspect"),
    ("onnx-etc_passwd", "export"),
    ("onnx-fifo", "inspect_json"),
    ("onnx-symlink_dev_zero", "init"),
]


def _command_line(corpus: Corpus, case: str, path_name: str, out: Path) -> Any:
    model = corpus.path(case)
    argv = PATHS[path_name](model, out)
    return run_cli_subprocess(*argv, cwd=corpus.folder(case), timeout=CLI_TIMEOUT_S)


@pytest.fixture(scope="module")
def command_lines(
    corpus: Corpus, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], tuple[Any, Path, dict[str, tuple[object, ...]]]]:
    """Run every representative case at once (two at a time), each with its own output folder."""
    jobs = {}
    for case, path_name in COMMAND_LINE:
        corpus.path(case)
        out = tmp_path_factory.mktemp("cli_out")
        jobs[case, path_name] = (out, snapshot(corpus.folder(case)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_command_line, corpus, *key, jobs[key][0]) for key in jobs}
        return {key: (futures[key].result(), *jobs[key]) for key in jobs}


@pytest.mark.parametrize(
    ("case", "path_name"), COMMAND_LINE, ids=[f"{c}-{p}" for c, p in COMMAND_LINE]
)
def test_command_line(
    case: str, path_name: str, corpus: Corpus, command_lines: dict[Any, Any]
) -> None:
    spec = CASES[case]
    model = corpus.path(case)
    completed, out_dir, before = command_lines[case, path_name]
    result = (completed.returncode, completed.stdout, completed.stderr)
    if spec.expect == "read":
        assert_read(spec, path_name, out_dir, result)
    else:
        assert_refused(spec, path_name, model, result)
        assert list(out_dir.iterdir()) == []
    assert not (corpus.folder(case) / spec.mark).exists(), "the payload ran"
    assert snapshot(corpus.folder(case)) == before


def test_every_command_runs_in_a_real_process() -> None:
    assert {path_name for _, path_name in COMMAND_LINE} == set(PATHS)
    assert {CASES[case].family for case, _ in COMMAND_LINE} == {"torch", "keras", "onnx"}


# ---------------------------------------------------------------------------------------------
# a model path that is not a regular file


def test_model_path_that_is_a_fifo_does_not_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    with deadline(2), pytest.raises(WeightscopeError):
        weightscope.load(fifo)


def test_model_path_that_is_dev_zero_is_refused(tmp_path: Path) -> None:
    for name in ("model.onnx", "model.pt", "model.h5", "model.keras", "model.safetensors"):
        link = tmp_path / name
        link.symlink_to("/dev/zero")
        with deadline(DEADLINE_S), pytest.raises(WeightscopeError) as error:
            weightscope.load(link).close()
        assert str(error.value).startswith(f"{link}: ")
