"""A local scan worker: ``python -m weightscope.scan.serve READ_FD WRITE_FD MEMORY_BYTES``.
Receives tasks on one pipe and sends their results on the other, until it receives None.
Started by :class:`weightscope.scan.pool.LocalPool` as a fresh interpreter, so it never depends
on (or re-runs) the program that started the scan."""

from __future__ import annotations

import resource
import signal
import sys
from multiprocessing.connection import Connection

from weightscope.scan.worker import scan_file


def serve(tasks: Connection, results: Connection, memory_bytes: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if memory_bytes > 0:
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
