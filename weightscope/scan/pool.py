"""Worker processes for a scan: each reads one file at a time, under a cap on the memory it may
allocate and a deadline per file. A worker that runs past the deadline is killed, one that dies
(a crash in a native library, the kernel's OOM killer) is reported, and either is replaced, so
that one bad file never stops the scan. :class:`LocalPool` runs several on this machine; on a
Dask cluster, :func:`scan_in_child` gives each Dask worker thread one of its own."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from multiprocessing.connection import Connection, wait

from weightscope.scan.worker import FileResult, Task, error_result

GRACE_SECONDS = 5.0

UNSET_VARIABLES = ("MALLOC_TRIM_THRESHOLD_",)
"""Dask sets this for its workers (to hand memory back to the system at once); it turns off
glibc's adaptive thresholds and makes reading weights, which allocates many large short-lived
arrays, 2-3x slower. Workers run without it; their memory is capped by RLIMIT_DATA instead."""


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in UNSET_VARIABLES}


class WorkerProcess:
    """One ``python -m weightscope.scan.serve`` child and its two pipes."""

    def __init__(self, memory_bytes: int | None) -> None:
        self.memory_bytes = memory_bytes
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        command = [sys.executable, "-m", "weightscope.scan.serve"]
        command += [str(task_read), str(result_write), str(memory_bytes or 0)]
        self.process = subprocess.Popen(
            command,
            pass_fds=(task_read, result_write),
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # native libraries' chatter; errors come back as rows
        )
        os.close(task_read)
        os.close(result_write)
        self.tasks = Connection(task_write, readable=False)
        self.results = Connection(result_read, writable=False)
        self.task: Task | None = None
        self.started = 0.0

    def submit(self, task: Task) -> None:
        self.task = task
        self.started = time.monotonic()
        self.tasks.send(task)

    def overdue(self, timeout: float | None) -> bool:
        return timeout is not None and time.monotonic() - self.started > timeout

    def receive(self) -> FileResult:
        """The result of the task submitted (an error result if the worker died on it)."""
        assert self.task is not None
        task = self.task
        try:
            result: FileResult = self.results.recv()
        except (EOFError, OSError):
            return error_result(task.path, self._death(task), "WorkerDied")
        self.task = None
        return result

    def timed_out(self, timeout: float) -> FileResult:
        assert self.task is not None
        message = (
            f"{self.task.path}: timed out after {timeout:g} s (its worker was stopped; raise "
            "--timeout for very large files)"
        )
        return error_result(self.task.path, message, "Timeout", timeout)

    def _death(self, task: Task) -> str:
        code = _wait(self.process, GRACE_SECONDS)
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        return (
            f"{task.path}: the worker reading it died ({how}; out of memory, or a crash in a "
            "native library)"
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        _wait(self.process, GRACE_SECONDS)
        self.tasks.close()
        self.results.close()

    def stop(self, seconds: float = GRACE_SECONDS) -> None:
        """Ask an idle worker to finish, then make sure it has."""
        if self.task is None and self.process.poll() is None:
            with contextlib.suppress(OSError):  # it died just now: killed below
                self.tasks.send(None)
            _wait(self.process, seconds)
        self.kill()


class LocalPool:
    """``jobs`` worker processes; :meth:`run` yields one :class:`FileResult` per task, in the
    order they finish."""

    def __init__(self, jobs: int, timeout: float | None, memory_bytes: int | None) -> None:
        self.jobs = max(1, jobs)
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self._workers: list[WorkerProcess] = []

    def run(self, tasks: Sequence[Task]) -> Iterator[FileResult]:
        pending = deque(tasks)
        try:
            count = min(self.jobs, len(tasks))
            self._workers = [WorkerProcess(self.memory_bytes) for _ in range(count)]
            while pending or any(w.task is not None for w in self._workers):
                for worker in self._workers:
                    if worker.task is None and pending:
                        worker.submit(pending.popleft())
                yield from self._collect()
        finally:
            self._stop_all()

    def _collect(self) -> Iterator[FileResult]:
        busy = [w for w in self._workers if w.task is not None]
        ready = wait([w.results for w in busy], timeout=self._wait_seconds(busy))
        for worker in busy:
            if worker.results in ready:
                result = worker.receive()
                if worker.task is not None:  # it died on the task
                    self._replace(worker)
                yield result
            elif self.timeout is not None and worker.overdue(self.timeout):
                yield worker.timed_out(self.timeout)
                self._replace(worker)

    def _wait_seconds(self, busy: list[WorkerProcess]) -> float | None:
        if self.timeout is None:
            return None
        now = time.monotonic()
        return max(0.0, min(w.started + self.timeout - now for w in busy)) + 0.01

    def _replace(self, worker: WorkerProcess) -> None:
        worker.kill()
        self._workers[self._workers.index(worker)] = WorkerProcess(self.memory_bytes)

    def _stop_all(self) -> None:
        deadline = time.monotonic() + GRACE_SECONDS
        for worker in self._workers:
            worker.stop(max(0.0, deadline - time.monotonic()))
        self._workers = []


_children = threading.local()


def scan_in_child(task: Task, timeout: float | None, memory_bytes: int | None) -> FileResult:
    """Scan ``task`` in a worker process kept for the calling thread (started on first use),
    with the same deadline and memory cap as local workers: what runs on a Dask worker."""
    worker: WorkerProcess | None = getattr(_children, "worker", None)
    if worker is not None and (
        worker.process.poll() is not None or worker.memory_bytes != memory_bytes
    ):
        worker.kill()
        worker = None
    if worker is None:
        worker = _children.worker = WorkerProcess(memory_bytes)
    worker.submit(task)
    if not worker.results.poll(timeout):
        result = worker.timed_out(timeout or 0.0)
        worker.kill()
        _children.worker = None
        return result
    result = worker.receive()
    if worker.task is not None:  # it died on the task
        worker.kill()
        _children.worker = None
    return result


def _wait(process: subprocess.Popen[bytes], seconds: float) -> int | None:
    """The process's exit status (negative: killed by that signal), or None if still running."""
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        return None
