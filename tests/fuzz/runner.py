"""The parent side of the fuzzer: a pool of persistent worker processes (``worker.py``), the
per-step timeout, the checks made outside the worker (input files unchanged, the API and the
command line agree), and the figures of a campaign."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import queue
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")
STEP_TIMEOUT_S = 5.0
MEMORY_BYTES = 1 << 30
START_TIMEOUT_S = 60.0

Files = dict[str, bytes]
"""A mutant: file name -> content, the file weightscope is pointed at first (ONNX external
data beside it)."""


@dataclass
class Outcome:
    """What one mutant did: ``ok`` (every step read it), ``error`` (refused with one error line
    somewhere, everything else correct) or ``fail`` (``failures`` says how)."""

    status: str
    failures: list[tuple[str, str]] = field(default_factory=list)
    """(signature, detail): the signature names the bug (step, kind, place), the detail is one
    mutant's symptom."""
    steps: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def digest(files: Files) -> str:
    hasher = hashlib.sha256()
    for name in sorted(files):
        hasher.update(name.encode() + b"\0" + files[name] + b"\0")
    return hasher.hexdigest()


def folder_digest(folder: Path) -> tuple[tuple[str, str], ...]:
    return tuple(
        (p.name, hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "?")
        for p in sorted(folder.iterdir())
    )


class WorkerDied(Exception):
    pass


def absolute_path_list(value: str) -> str:
    """A PYTHONPATH with every entry made absolute (an empty one is the current directory):
    the workers run in folders of their own, where a relative entry would name nothing, or
    another checkout."""
    return os.pathsep.join(str(Path(entry or ".").resolve()) for entry in value.split(os.pathsep))


def weightscope_origin() -> Path | None:
    """The weightscope package this process imports (or would)."""
    spec = importlib.util.find_spec("weightscope")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve()


class Worker:
    """One worker process and its own input and output folders."""

    def __init__(self, root: Path, number: int, memory: int = MEMORY_BYTES) -> None:
        self.root = root / f"w{number}"
        self.inputs = self.root / "in"
        self.outputs = self.root / "out"
        self.capture = self.root / "captured.log"
        self.memory = memory
        self.process: subprocess.Popen[bytes] | None = None
        self.buffer = b""
        self.restarts = 0

    def start(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.inputs.mkdir(parents=True)
        self.outputs.mkdir()
        self.capture.write_bytes(b"")
        env = {
            **os.environ,
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONHASHSEED": "0",
            "COLUMNS": "160",
        }
        env.pop("PYTHONWARNINGS", None)
        if env.get("PYTHONPATH"):
            env["PYTHONPATH"] = absolute_path_list(env["PYTHONPATH"])
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER), str(self.memory), str(self.capture)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
            env=env,
            start_new_session=True,
        )
        self.buffer = b""
        message = self.read(START_TIMEOUT_S)
        if message is None or "ready" not in message:
            raise RuntimeError(f"fuzz worker did not start: {self.captured_tail()}")
        ours = weightscope_origin()
        if ours is not None and Path(message.get("weightscope", "")).resolve() != ours:
            raise RuntimeError(
                f"the fuzz worker imports weightscope from {message.get('weightscope')}, this "
                f"process from {ours}: it would fuzz another copy"
            )

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            if stream:
                stream.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.restarts += 1
        self.start()

    def captured_tail(self) -> str:
        try:
            return self.capture.read_bytes()[-2000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def read(self, timeout: float) -> dict[str, Any] | None:
        """The next message, None on timeout; WorkerDied when the process ended."""
        assert self.process is not None and self.process.stdout is not None
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise WorkerDied()
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, files: Files, main: str) -> Outcome:
        """Run every step on ``files`` (written to the input folder) and check the outcome."""
        if self.process is None:
            self.start()
        assert self.process is not None and self.process.stdin is not None
        shutil.rmtree(self.inputs)
        self.inputs.mkdir()
        for name, data in files.items():
            (self.inputs / name).write_bytes(data)
        before = folder_digest(self.inputs)
        path = self.inputs / main
        request = {"path": str(path), "out": str(self.outputs / "out.npz")}
        request["folder"] = str(self.inputs)
        started = time.monotonic()
        self.process.stdin.write((json.dumps(request) + "\n").encode())
        self.process.stdin.flush()
        step = "start"
        steps: dict[str, Any] = {}
        while True:
            try:
                message = self.read(STEP_TIMEOUT_S)
            except WorkerDied:
                code = self.process.wait()
                tail = self.captured_tail()
                what = f"signal {-code}" if code < 0 else f"exit {code}"
                kind = "killed (memory?)" if code == -signal.SIGKILL else "crash"
                self.restart()
                detail = f"worker died ({what}) during {step}: {last_lines(tail)}"
                return Outcome("fail", [(f"{step}: {kind} {what}", detail)], steps)
            if message is None:
                self.restart()
                detail = f"{step} took over {STEP_TIMEOUT_S:g} s"
                return Outcome("fail", [(f"{step}: hang", detail)], steps)
            if "step" in message:
                step = message["step"]
                continue
            steps = message["done"]
            break
        seconds = time.monotonic() - started
        outcome = judge(steps)
        outcome.seconds = seconds
        if folder_digest(self.inputs) != before:
            outcome.status = "fail"
            outcome.failures.append(("input: modified", "an input file changed or appeared"))
        if any(kind == "MemoryError" for kind in failure_kinds(steps)):
            self.restart()  # whatever half-built state the MemoryError left behind
        return outcome


def last_lines(text: str, count: int = 6) -> str:
    """The gist of a dying worker's output: faulthandler's error line and innermost frames,
    else its last lines."""
    lines = [line.strip() for line in text.strip().splitlines()]
    fatal = [n for n, line in enumerate(lines) if line.startswith("Fatal Python error")]
    if fatal:
        start = fatal[-1]
        frames = [line for line in lines[start:] if line.startswith("File ")]
        return " | ".join([lines[start], *frames[:count]])
    return " | ".join(lines[-count:])


def failure_kinds(steps: dict[str, Any]) -> list[str]:
    return [r["kind"] for r in steps.values() if r.get("status") == "fail"]


def judge(steps: dict[str, Any]) -> Outcome:
    """Failures reported by the steps, and the agreement between them: a file the API reads
    whole must be read by ``inspect`` (the same reads), and a file the API cannot load must be
    refused by both commands."""
    failures = []
    for name, result in steps.items():
        if result.get("status") == "fail":
            place = result.get("where", "")
            signature = f"{name}: {result['kind']}" + (f" at {place}" if place else "")
            failures.append((signature, result["message"]))
    api, inspect, export = steps.get("api", {}), steps.get("inspect", {}), steps.get("export", {})
    if api.get("status") == "ok" and inspect.get("status") == "error":
        failures.append(("inconsistent: API reads, inspect refuses", inspect["message"]))
    if api.get("status") == "error" and api.get("stage") == "load":
        for name, result in (("inspect", inspect), ("export", export)):
            if result.get("status") == "ok":
                failures.append((f"inconsistent: API cannot load, {name} reads", api["message"]))
    if failures:
        return Outcome("fail", failures, steps)
    if all(r.get("status") == "ok" for r in steps.values()):
        return Outcome("ok", [], steps)
    return Outcome("error", [], steps)


class Pool:
    """``size`` workers; ``map`` runs jobs on them in parallel, each job making its own mutant."""

    def __init__(self, size: int = 2, memory: int = MEMORY_BYTES) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="weightscope-fuzz-"))
        self.workers = [Worker(self.root, n, memory) for n in range(size)]
        for worker in self.workers:
            worker.start()

    def close(self) -> None:
        for worker in self.workers:
            worker.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def map(
        self,
        jobs: Iterable[Any],
        make: Callable[[Any], tuple[Files, str]],
        done: Callable[[Any, Files, Outcome], None],
    ) -> None:
        """For each job: ``make(job)`` -> (files, main file name), run, ``done(job, files,
        outcome)``. ``done`` is called under a lock, in completion order."""
        todo: queue.Queue[Any] = queue.Queue()
        for job in jobs:
            todo.put(job)
        lock = threading.Lock()
        errors: list[BaseException] = []

        def drive(worker: Worker) -> None:
            try:
                while not errors:
                    try:
                        job = todo.get_nowait()
                    except queue.Empty:
                        return
                    files, main = make(job)
                    outcome = worker.run(files, main)
                    with lock:
                        done(job, files, outcome)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=drive, args=(w,)) for w in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]


@dataclass
class Tally:
    """Figures of a campaign, per format."""

    tried: Counter[str] = field(default_factory=Counter)
    ok: Counter[str] = field(default_factory=Counter)
    error: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    signatures: dict[str, Counter[str]] = field(default_factory=dict)
    examples: dict[tuple[str, str], str] = field(default_factory=dict)
    seconds: Counter[str] = field(default_factory=Counter)

    def add(self, fmt: str, outcome: Outcome) -> list[tuple[str, str]]:
        """Count ``outcome``; return its failures whose signature is new for ``fmt``."""
        self.tried[fmt] += 1
        self.seconds[fmt] += outcome.seconds
        getattr(self, "failed" if outcome.status == "fail" else outcome.status)[fmt] += 1
        new = []
        counts = self.signatures.setdefault(fmt, Counter())
        for signature, detail in outcome.failures:
            if counts[signature] == 0:
                new.append((signature, detail))
                self.examples[(fmt, signature)] = detail
            counts[signature] += 1
        return new

    def to_json(self) -> dict[str, Any]:
        """The figures as plain data (what a pytest-xdist worker sends to the controller)."""
        counters = ("tried", "ok", "error", "failed", "seconds")
        return {
            **{name: dict(getattr(self, name)) for name in counters},
            "signatures": {fmt: dict(counts) for fmt, counts in self.signatures.items()},
            "examples": [[fmt, sig, detail] for (fmt, sig), detail in self.examples.items()],
        }

    def merge(self, data: dict[str, Any]) -> None:
        """Add figures another process counted (``to_json``)."""
        for name in ("tried", "ok", "error", "failed", "seconds"):
            getattr(self, name).update(data[name])
        for fmt, counts in data["signatures"].items():
            self.signatures.setdefault(fmt, Counter()).update(counts)
        for fmt, signature, detail in data["examples"]:
            self.examples.setdefault((fmt, signature), detail)

    def report(self) -> str:
        lines = [
            f"{'format':<22}{'mutants':>8}{'ok':>8}{'error':>8}{'failed':>8}{'ms/mutant':>11}",
        ]
        for fmt in sorted(self.tried):
            per = 1000 * self.seconds[fmt] / max(self.tried[fmt], 1)
            lines.append(
                f"{fmt:<22}{self.tried[fmt]:>8}{self.ok[fmt]:>8}{self.error[fmt]:>8}"
                f"{self.failed[fmt]:>8}{per:>11.1f}"
            )
        total = sum(self.tried.values())
        lines.append(
            f"{'total':<22}{total:>8}{sum(self.ok.values()):>8}{sum(self.error.values()):>8}"
            f"{sum(self.failed.values()):>8}"
        )
        for fmt in sorted(self.signatures):
            for signature, count in self.signatures[fmt].most_common():
                detail = self.examples[(fmt, signature)]
                lines.append(f"  {fmt}: {count} x {signature}")
                lines.append(f"      e.g. {detail[:300]}")
        return "\n".join(lines)
