"""The helper process from which a large process forks the children that rehearse its HDF5
reads (see ``hdf5_guard``): forking a process costs time in proportion to its memory, and this
one holds little more than h5py.

Started with ``subprocess`` (which does not copy the parent's memory) on a process's first
rehearsal, it talks with its parent over a Unix socket pair, one packet a message:

- the parent sends a request (JSON: the path, or the path and window of a stored zip member, or
  a spooled file sent as a file descriptor with it, and the nesting limit);
- the helper forks a child that walks the file, telling the parent of each step directly
  (``hdf5_walk``); once the child has ended the helper sends ``E<wait status>``.

A parent whose deadline passes, or which is interrupted while waiting, kills the helper (its
child dies with it) and starts a new one on its next rehearsal. The helper ends with its parent
(the kernel's parent-death signal) or when the parent closes the socket.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from weightscope.formats.keras.hdf5 import FileSlice
from weightscope.formats.keras.hdf5_walk import DONE, Outcome, die_with

START_SECONDS = 60
"""Longest a helper may take to start (importing h5py on a loaded machine): past it, or when it
cannot start at all, the process forks its rehearsals itself."""
_READY = b"R"
_ENDED = b"E"
_PACKET = 4096

_lock = threading.Lock()
_helper: Helper | None = None
_failed_in: int | None = None


def helper() -> Helper | None:
    """This process's helper, started on first use; None where none can be started."""
    global _helper, _failed_in
    pid = os.getpid()
    with _lock:
        if _helper is not None and _helper.owner != pid:  # inherited through a fork: not ours
            _helper.abandon()
            _helper = None
        if _helper is None and _failed_in != pid and hasattr(socket, "SOCK_SEQPACKET"):
            try:
                _helper = Helper()
            except (OSError, subprocess.SubprocessError, TimeoutError):
                _failed_in = pid
        return _helper


class Helper:
    """A started helper process and this process's end of its socket. ``launch(fd)`` starts
    the process that serves the other end, ``fd`` (by default a new Python running
    :func:`serve`), and returns it as a ``subprocess.Popen``-like object."""

    def __init__(self, launch: Callable[[int], Any] | None = None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.process = (launch or _spawn)(theirs.fileno())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket = ours
        self.owner = os.getpid()
        atexit.register(self.stop)
        if self._receive(START_SECONDS) != _READY:
            self.stop()
            raise TimeoutError("the HDF5 rehearsal helper did not start")

    def rehearse(self, source: Any, max_nesting: int, seconds: int) -> Outcome | None:
        """Have a child of the helper walk ``source``: the walk's outcome, or None when the
        helper failed (gone, or the request could not be sent), the file not judged."""
        request, fds = _describe(source, max_nesting)
        finished = False
        answered = False
        try:
            socket.send_fds(self.socket, [json.dumps(request).encode()], fds)
            while True:
                packet = self._receive(seconds)
                if packet is None:  # a step went over the deadline
                    return False, None
                if not packet:  # the helper is gone
                    return None
                if packet.startswith(_ENDED):
                    answered = True
                    return (True if finished else None), int(packet[1:])
                finished = finished or packet.endswith(DONE)
        except OSError:
            return None
        finally:
            if not answered:  # the helper may still be busy: it is no use to anyone now
                self.retire()

    def _receive(self, seconds: float) -> bytes | None:
        """The next packet, or None when none came within ``seconds``; ``b""`` when the helper
        is gone."""
        poll = select.poll()
        poll.register(self.socket.fileno(), select.POLLIN)
        if not poll.poll(seconds * 1000):
            return None
        return self.socket.recv(_PACKET)

    def retire(self) -> None:
        """Stop the helper and let the next rehearsal start a new one."""
        global _helper
        self.stop()
        with _lock:
            if _helper is self:
                _helper = None

    def stop(self) -> None:
        """End the helper (its child, if any, dies with it) and wait for it."""
        atexit.unregister(self.stop)
        self.socket.close()
        with contextlib.suppress(OSError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(START_SECONDS)

    def abandon(self) -> None:
        """Let go of a helper inherited through a fork: the process that started it owns it."""
        atexit.unregister(self.stop)
        self.socket.close()
        self.process.returncode = 0  # not ours to wait for


def _spawn(fd: int) -> subprocess.Popen[bytes]:
    """A new Python serving ``fd`` (inherited): weightscope's own code, found where this
    process found it."""
    package_root = str(Path(__file__).resolve().parents[3])  # above weightscope/formats/keras
    path = os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))
    # Never the working folder on the helper's path: a model zoo's folder may hold a
    # ``numpy.py`` (``-P`` from Python 3.11; before it, the code drops it itself).
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
        f"from weightscope.formats.keras.hdf5_guard_server import serve; serve({fd})"
    )
    safe_path = ["-P"] if sys.version_info >= (3, 11) else []
    return subprocess.Popen(
        [sys.executable, *safe_path, "-c", code],
        cwd=os.path.dirname(package_root),
        pass_fds=[fd],
        env={**os.environ, "PYTHONPATH": path},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _describe(source: Any, max_nesting: int) -> tuple[dict[str, Any], list[int]]:
    """The request for ``source`` and the file descriptors that go with it."""
    request: dict[str, Any] = {"max_nesting": max_nesting}
    if isinstance(source, FileSlice):
        request.update(path=str(source.path), start=source.start, length=source.length)
        return request, []
    if isinstance(source, (str, os.PathLike)):
        request["path"] = os.fspath(source)
        return request, []
    return request, [source.fileno()]


def serve(fd: int) -> NoReturn:  # pragma: no cover - runs in the helper, measured by its parent
    """The helper's loop: a request in, a child forked to walk it, its end sent back."""
    import h5py

    from weightscope.formats.keras.hdf5_walk import walk_and_exit

    die_with(os.getppid())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    channel = socket.socket(fileno=fd)
    channel.send(_READY)
    while True:
        message, fds, _, _ = socket.recv_fds(channel, _PACKET, 1)
        if not message:
            os._exit(0)
        request = json.loads(message)
        source: Any
        if fds:
            source = os.fdopen(fds[0], "rb")
        elif "start" in request:
            source = FileSlice(Path(request["path"]), request["start"], request["length"])
        else:
            source = Path(request["path"])
        me = os.getpid()
        pid = os.fork()
        if pid == 0:
            walk_and_exit(me, fd, functools.partial(h5py.File, source, "r"), request["max_nesting"])
        with contextlib.suppress(OSError):
            if not isinstance(source, Path):
                source.close()
        status = os.waitpid(pid, 0)[1]
        channel.send(_ENDED + str(status).encode())
