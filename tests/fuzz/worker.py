"""The fuzzing worker: a long-lived child process that reads one request per line on stdin,
runs weightscope on the file it names (the Python API, then ``inspect --json`` and
``export -o OUT.npz`` through ``weightscope.cli.app.main`` in this process) and answers on its
original stdout, one JSON object per line.

Before each step it writes ``{"step": NAME}`` so that the parent can time every step apart
(5 s each) and kill a worker that hangs. Its own file descriptors 1 and 2 point at a capture
file, so output written below Python (the HDF5 library, ``faulthandler`` on a crash) is seen
too. Memory is capped with ``RLIMIT_AS`` after the imports.

Run as a script (``python worker.py MEMORY_BYTES CAPTURE_FILE``); it imports nothing from the
test suite, only weightscope, numpy and the standard library.
"""

from __future__ import annotations

import contextlib
import faulthandler
import io
import json
import os
import resource
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

# Run as a script, its folder comes first on sys.path, where the harness's own gguf.py would
# stand for the gguf package weightscope imports to dequantize GGUF's grid types.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

import weightscope  # noqa: E402
import weightscope.cli.app  # noqa: E402
from weightscope.formats import registry  # noqa: E402, F401  (every reader before the cap)

STAT_FIELDS = ("mean", "std", "min", "max", "zeros_fraction", "nan", "inf")


def where(exc: BaseException, lines: bool = True) -> str:
    """The innermost weightscope frame of ``exc``'s traceback (``adapters/_zip.py:12 in f``),
    then the innermost frame overall when it lies elsewhere; without line numbers (which move
    as the code is edited) when ``lines`` is false."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if f"{os.sep}weightscope{os.sep}" in f.filename]
    parts = []
    if ours:
        frame = ours[-1]
        short = frame.filename.split(f"{os.sep}weightscope{os.sep}", 1)[1]
        parts.append(f"{short}{f':{frame.lineno}' if lines else ''} in {frame.name}")
    if frames and (not ours or frames[-1] is not ours[-1]):
        frame = frames[-1]
        name = Path(frame.filename).name
        parts.append(f"{name}{f':{frame.lineno}' if lines else ''} in {frame.name}")
    return " <- ".join(reversed(parts)) if parts else "?"


def failure(kind: str, message: str, exc: BaseException | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {"status": "fail", "kind": kind, "message": message[:500]}
    if exc is not None:
        found["where"] = where(exc, lines=False)
        found["message"] = f"{message[:400]} (at {where(exc)})"
        found["traceback"] = "".join(traceback.format_exception(exc))[-3000:]
    return found


def error_line_problem(message: str, folder: str) -> str | None:
    """What is wrong with a WeightscopeError's message, if anything."""
    if not message.strip():
        return "empty message"
    if "\n" in message or "\r" in message:
        return "message of several lines"
    if folder not in message:
        return "message does not name the file"
    return None


def check_array(tensor: Any, array: Any, canonical: bool) -> str | None:
    if not isinstance(array, np.ndarray):
        return f"{tensor.name!r}: read gives a {type(array).__name__}, not an array"
    want = tensor.canonical_shape if canonical else tensor.native_shape
    if want is not None and tuple(array.shape) != tuple(want):
        what = "canonical" if canonical else "native"
        return f"{tensor.name!r}: array of shape {array.shape}, {what} shape says {tuple(want)}"
    return None


def run_api(path: str, folder: str) -> dict[str, Any]:
    """load, then stats() and canonical() (numpy() where there is no canonical form) of every
    tensor, then close: a result, or one WeightscopeError."""
    stage = "load"
    model = None
    try:
        model = weightscope.load(path)
        stage = "params"
        _ = model.params
        tensors = 0
        for _layer, tensor in model.tensors():
            tensors += 1
            stage = f"stats of {tensor.name[:60]!r}"
            if tensor.has_stats:
                stats = tensor.stats()
                for name in STAT_FIELDS:
                    value = getattr(stats, name)
                    if value is not None and not isinstance(value, (int, float)):
                        return failure("bad result", f"{stage}: {name} is {type(value).__name__}")
            stage = f"read of {tensor.name[:60]!r}"
            canonical = tensor.native_layout is not None
            array = tensor.canonical() if canonical else tensor.numpy()
            problem = check_array(tensor, array, canonical)
            if problem:
                return failure("bad result", problem)
        stage = "close"
        model.close()
        return {"status": "ok", "tensors": tensors}
    except weightscope.WeightscopeError as exc:
        problem = error_line_problem(str(exc), folder)
        if problem:
            return failure("bad error line", f"{problem}: {str(exc)[:300]!r}")
        return {"status": "error", "stage": stage.split(" ")[0], "message": str(exc)[:300]}
    except MemoryError as exc:
        return failure("MemoryError", f"{stage}: over the memory cap", exc)
    except RecursionError as exc:
        return failure("RecursionError", f"{stage}: {exc}", exc)
    except BaseException as exc:  # a traceback for a user of the API: what we hunt
        return failure(type(exc).__name__, f"{stage}: {str(exc)[:300]}", exc)
    finally:
        if model is not None:
            with contextlib.suppress(BaseException):
                model.close()


class Captured:
    """Output below Python: the worker's fds 1 and 2 point at this file."""

    def __init__(self, name: str) -> None:
        self.name = name

    def size(self) -> int:
        return os.stat(self.name).st_size

    def since(self, start: int) -> str:
        with open(self.name, "rb") as handle:
            handle.seek(start)
            return handle.read(4000).decode("utf-8", "replace")


def run_cli(argv: list[str], captured: Captured) -> tuple[int | None, str, str, list[str]]:
    """``weightscope.cli.app.main(argv)`` in this process: (status, stdout, stderr, problems).
    stderr holds what the real command would print there: Python's stderr, warnings shown
    as Python shows them, and output written below Python."""
    out, err = io.StringIO(), io.StringIO()
    start = captured.size()
    problems = []
    status: int | None = None
    with (
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            status = weightscope.cli.app.main(argv)
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            problems.append(f"main raised {type(exc).__name__}: {str(exc)[:200]} at {where(exc)}")
    stderr = err.getvalue()
    for warning in caught:
        stderr += warnings.formatwarning(
            warning.message, warning.category, warning.filename, warning.lineno
        )
    stderr += captured.since(start)
    return status, out.getvalue(), stderr, problems


def check_error_exit(status: int | None, stdout: str, stderr: str) -> str | None:
    if status != 2:
        return f"exit status {status}"
    lines = stderr.splitlines()
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr: {stderr[-600:]!r}"
    if not lines[0].startswith("weightscope: "):
        return f"stderr line does not start with 'weightscope: ': {lines[0][:300]!r}"
    if stdout:
        return f"stdout not empty on error: {stdout[:200]!r}"
    return None


def unexpected(line: str, path: str) -> str | None:
    """The exception type the CLI shows as ``<file>: unexpected <Type>: ...``: a traceback the
    command line hid, a bug all the same."""
    prefix = f"weightscope: {path}: unexpected "
    if not line.startswith(prefix):
        return None
    return line[len(prefix) :].split(":", 1)[0]


def no_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


def run_inspect(path: str, captured: Captured) -> dict[str, Any]:
    status, stdout, stderr, problems = run_cli(["inspect", path, "--json"], captured)
    if problems:
        return failure("CLI raised", problems[0])
    if status == 0:
        if stderr:
            return failure("stray stderr", f"inspect --json exit 0 with stderr {stderr[-600:]!r}")
        try:
            data = json.loads(stdout, parse_constant=no_constant)
        except ValueError as exc:
            return failure("invalid JSON", f"inspect --json: {exc}: {stdout[:200]!r}")
        if not isinstance(data, dict) or not isinstance(data.get("layers"), list):
            return failure("invalid JSON", f"inspect --json: no layers: {stdout[:200]!r}")
        return {"status": "ok", "layers": len(data["layers"])}
    problem = check_error_exit(status, stdout, stderr)
    line = stderr.strip()
    kind = unexpected(line, path)
    if kind:
        also = f" ({problem})" if problem else ""
        return failure(kind, f"inspect --json: {line[:400]}{also}")
    if problem:
        return failure("bad CLI error", f"inspect --json: {problem}")
    return {"status": "error", "message": line[:300]}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def run_export(path: str, out: str, captured: Captured) -> dict[str, Any]:
    target = Path(out)
    status, stdout, stderr, problems = run_cli(["export", path, "-o", out], captured)
    try:
        if problems:
            return failure("CLI raised", problems[0])
        if status == 0:
            lines = stderr.splitlines()
            if len(lines) != 1 or not lines[0].startswith("wrote "):
                return failure("stray stderr", f"export exit 0 with stderr {stderr[-600:]!r}")
            if not target.is_file():
                return failure("bad result", "export exit 0 but no output file")
            try:
                with np.load(target, allow_pickle=False) as npz:
                    for key in npz.files:
                        npz[key]
                    # a quantized tensor's integers, scales, zero points, offsets (GGUF): beside
                    # its values
                    keys = set(npz.files)
                    stored = [k for k in keys if k + "/stored" in keys]
                    parts = ("stored", "scale", "zero_point", "offset")
                    extras = {f"{k}/{p}" for k in stored for p in parts}
                    count, quantized = len(keys - extras), len(stored)
            except Exception as exc:
                return failure("bad result", f"export output unreadable: {exc!r}"[:300])
            said = [f"wrote {count:,} tensor{'' if count == 1 else 's'} "]
            if quantized:
                said.append(f"({quantized:,} quantized")
            if not all(text in lines[0] for text in said):
                return failure("bad result", f"{lines[0]!r} but the .npz holds {count} arrays")
            others = [n for n in leftovers(target.parent) if n != target.name]
            if others:
                return failure("bad result", f"export left files behind: {others}")
            return {"status": "ok", "arrays": count}
        problem = check_error_exit(status, stdout, stderr)
        line = stderr.strip()
        kind = unexpected(line, path)
        if kind:
            also = f" ({problem})" if problem else ""
            return failure(kind, f"export: {line[:400]}{also}")
        if problem:
            return failure("bad CLI error", f"export: {problem}")
        if leftovers(target.parent):
            return failure("bad result", f"failed export left {leftovers(target.parent)}")
        return {"status": "error", "message": line[:300]}
    finally:
        for name in leftovers(target.parent):
            (target.parent / name).unlink()


def main() -> None:
    memory, capture_name = int(sys.argv[1]), sys.argv[2]
    answers = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
    capture = open(capture_name, "ab", buffering=0)  # noqa: SIM115  (lives as long as we do)
    os.dup2(capture.fileno(), 1)
    os.dup2(capture.fileno(), 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), write_through=True)
    faulthandler.enable(sys.stderr)
    captured = Captured(capture_name)
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    ready = {"ready": os.getpid(), "weightscope": weightscope.__file__}
    answers.write(json.dumps(ready) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        path, out, folder = request["path"], request["out"], request["folder"]
        result: dict[str, Any] = {}
        for step in ("api", "inspect", "export"):
            answers.write(json.dumps({"step": step}) + "\n")
            if step == "api":
                result[step] = run_api(path, folder)
            elif step == "inspect":
                result[step] = run_inspect(path, captured)
            else:
                result[step] = run_export(path, out, captured)
        answers.write(json.dumps({"done": result}) + "\n")


if __name__ == "__main__":
    main()
