"""A local scan worker: ``python -m weightscope.scan.serve READ_FD WRITE_FD MEMORY_BYTES``.
Receives tasks on one pipe and sends their results on the other, until it receives None.
Started by :class:`weightscope.scan.pool.LocalPool` as a fresh interpreter, so it never depends
on (or re-runs) the program that started the scan."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from weightscope.scan.worker import scan_file

PR_SET_PDEATHSIG = 1
WATCH_SECONDS = 1.0


def die_with_parent() -> None:
    """End this worker when the scan that started it ends, however it ends (``kill -9``
    included), even while it is stuck in native code: the kernel's parent-death signal on
    Linux, and a thread that watches the parent elsewhere (and for a death before the signal
    was armed)."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(WATCH_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def serve(tasks: Connection, results: Connection, memory_bytes: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    die_with_parent()
    try:
        import resource
    except ImportError:  # Windows: the worker's memory is not capped there
        resource = None  # type: ignore[assignment]
    if memory_bytes > 0 and resource is not None:
        # RLIMIT_DATA caps heap and anonymous mappings (numpy arrays), not files mapped
        # read-only: an mmapped ONNX file costs the worker no memory of its own
        resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    while True:
        try:
            task = tasks.recv()
        except EOFError:  # the parent went away
            return
        if task is None:
            return
        results.send(scan_file(task))


if __name__ == "__main__":
    read_fd, write_fd, memory = (int(arg) for arg in sys.argv[1:4])
    serve(Connection(read_fd, writable=False), Connection(write_fd, readable=False), memory)
