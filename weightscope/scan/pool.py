"""Local worker processes for a scan: each scans one file at a time, under a cap on the memory
it may allocate and a deadline per file. A worker that runs past the deadline is killed, one
that dies (a crash in a native library, the kernel's OOM killer) is reported, and either is
replaced, so that one bad file never stops the scan."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from weightscope.scan.worker import FileResult, Task, error_result

GRACE_SECONDS = 5.0


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    tasks: Connection
    results: Connection
    task: Task | None = None
    started: float = 0.0


class LocalPool:
    """``jobs`` worker processes; :meth:`run` yields one :class:`FileResult` per task, in the
    order they finish."""

    def __init__(self, jobs: int, timeout: float | None, memory_bytes: int | None) -> None:
        self.jobs = max(1, jobs)
        self.timeout = timeout
        self.memory_bytes = memory_bytes
        self._workers: list[_Worker] = []

    def run(self, tasks: Sequence[Task]) -> Iterator[FileResult]:
        pending = deque(tasks)
        try:
            self._workers = [self._start() for _ in range(min(self.jobs, len(tasks)))]
            while pending or any(w.task is not None for w in self._workers):
                for worker in self._workers:
                    if worker.task is None and pending:
                        self._assign(worker, pending.popleft())
                yield from self._collect()
        finally:
            self._stop_all()

    def _start(self) -> _Worker:
        task_read, task_write = os.pipe()
        result_read, result_write = os.pipe()
        command = [sys.executable, "-m", "weightscope.scan.serve"]
        command += [str(task_read), str(result_write), str(self.memory_bytes or 0)]
        process = subprocess.Popen(
            command,
            pass_fds=(task_read, result_write),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # native libraries' chatter; errors come back as rows
        )
        os.close(task_read)
        os.close(result_write)
        tasks = Connection(task_write, readable=False)
        return _Worker(process, tasks, Connection(result_read, writable=False))

    def _assign(self, worker: _Worker, task: Task) -> None:
        worker.task = task
        worker.started = time.monotonic()
        worker.tasks.send(task)

    def _collect(self) -> Iterator[FileResult]:
        busy = [w for w in self._workers if w.task is not None]
        ready = wait([w.results for w in busy], timeout=self._wait_seconds(busy))
        for worker in busy:
            assert worker.task is not None
            task = worker.task
            if worker.results in ready:
                try:
                    result: FileResult = worker.results.recv()
                except (EOFError, OSError):
                    yield error_result(task.path, self._death(worker), "WorkerDied")
                    self._replace(worker)
                    continue
                worker.task = None
                yield result
            elif self.timeout is not None and time.monotonic() - worker.started > self.timeout:
                message = (
                    f"{task.path}: timed out after {self.timeout:g} s (its worker was stopped; "
                    "raise --timeout for very large files)"
                )
                yield error_result(task.path, message, "Timeout", self.timeout)
                self._replace(worker)

    def _wait_seconds(self, busy: list[_Worker]) -> float | None:
        if self.timeout is None:
            return None
        now = time.monotonic()
        return max(0.0, min(w.started + self.timeout - now for w in busy)) + 0.01

    def _death(self, worker: _Worker) -> str:
        code = _wait(worker.process, GRACE_SECONDS)
        assert worker.task is not None
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit {code}"
        return (
            f"{worker.task.path}: the worker reading it died ({how}; out of memory, or a crash in "
            "a native library)"
        )

    def _replace(self, worker: _Worker) -> None:
        self._kill(worker)
        fresh = self._start()
        worker.process, worker.tasks, worker.results = fresh.process, fresh.tasks, fresh.results
        worker.task = None

    def _kill(self, worker: _Worker) -> None:
        if worker.process.poll() is None:
            worker.process.kill()
        _wait(worker.process, GRACE_SECONDS)
        worker.tasks.close()
        worker.results.close()

    def _stop_all(self) -> None:
        for worker in self._workers:
            if worker.task is None and worker.process.poll() is None:
                with contextlib.suppress(OSError):  # it died just now: killed below
                    worker.tasks.send(None)
        deadline = time.monotonic() + GRACE_SECONDS
        for worker in self._workers:
            if worker.task is None:
                _wait(worker.process, max(0.0, deadline - time.monotonic()))
            self._kill(worker)
        self._workers = []


def _wait(process: subprocess.Popen[bytes], seconds: float) -> int | None:
    """The process's exit status (negative: killed by that signal), or None if still running."""
    try:
        return process.wait(seconds)
    except subprocess.TimeoutExpired:
        return None
