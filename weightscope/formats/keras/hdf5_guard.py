"""The HDF5 library's reading of a file's structure, rehearsed in a child process under a
deadline.

Damaged metadata can make libhdf5 loop for ever inside one call (``tests/fuzz/found/
keras_h5-2.bin`` does, reading an attribute's strings from the global heap), where no Python
code runs that could stop it. So before a reader opens an HDF5 file, :func:`rehearse` has a child
process open it the same way and walk everything of its structure the readers may touch, with
the same calls (:mod:`~weightscope.formats.keras.hdf5_walk`). The child reports progress; one
that goes ``max_hdf5_seconds`` without finishing a step is killed and the file refused with one
line naming the limit. A child killed by a signal (the library crashing on the file) refuses the
file as damaged: the same calls would crash this process. Only then does the reader open the
file itself, and its reads (a subset of the walk's, done the same way) end as the walk's did.

Errors in the child are not reported: the reader meets them again and says what they are. The
child is forked from this process, which costs a few milliseconds in a small one (the command
line) but tens in one that holds a framework (a notebook or a test process with TensorFlow
loaded: the kernel copies the page tables of all its memory). A process over
:data:`SERVE_ABOVE_BYTES` therefore forks its children from a small helper process of its own
instead (:mod:`~weightscope.formats.keras.hdf5_guard_server`), started on its first rehearsal.
The walk's progress, not its total time, is bounded, so a large file on a slow disk is never
refused for its size. A file (or stored zip member) read again unchanged by the same process
is not walked again. Without ``os.fork`` (Windows) the file is read unguarded.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import IO

import h5py

from weightscope.errors import CorruptFileError, file_error
from weightscope.formats.keras.hdf5 import FileSlice, Origin
from weightscope.formats.keras.hdf5_walk import DONE, Outcome, walk_and_exit
from weightscope.limits import LimitExceeded

Source = Path | FileSlice | IO[bytes]
"""What the reader hands ``h5py.File``: a path, a stored zip member in place, a spooled one."""
SERVE_ABOVE_BYTES = 512 * 2**20
"""Resident memory above which a process rehearses through its helper process rather than by
forking itself (a fork of TensorFlow's ~900 MB costs ~25 ms; the helper's, ~2 ms)."""


def rehearse(origin: Origin, source: Source, what: str = "the file") -> None:
    """Walk the structure of the HDF5 file ``h5py.File(source)`` opens in a child process;
    return once it has been walked (or failed: the reader will meet the error), raise
    ``LimitExceeded`` (``max_hdf5_seconds``) when one step took longer than that, a
    ``CorruptFileError`` when the walk crashed. ``what`` names the HDF5 file in messages (``the
    file``, ``model.weights.h5``)."""
    if getattr(os, "fork", None) is None:
        return
    walked = _walked_key(source, origin)
    if walked is not None and walked in _WALKED:
        _WALKED.move_to_end(walked)
        return
    seconds = origin.limits.max_hdf5_seconds
    outcome = _served(source, origin, seconds) if _resident_bytes() > SERVE_ABOVE_BYTES else None
    finished, status = outcome if outcome is not None else _forked(source, origin, seconds)
    if finished is True and walked is not None:
        _WALKED[walked] = None
        if len(_WALKED) > WALKED_KEPT:
            _WALKED.popitem(last=False)
    if finished is False:
        raise LimitExceeded(
            "max_hdf5_seconds",
            seconds,
            seconds + 1,
            f"the HDF5 library spent over {seconds} s in one step of reading {what}'s "
            "structure (damaged metadata can make it loop for ever)",
        )
    if finished is None:
        raise file_error(
            CorruptFileError,
            origin.path,
            f"the HDF5 library crashed reading {what}'s structure ({death(status)})",
            origin.looked_like,
        )


WALKED_KEPT = 256
"""Files whose walk finished that a process remembers (the oldest forgotten first)."""
_WALKED: OrderedDict[tuple[int, ...], None] = OrderedDict()


def _walked_key(source: Source, origin: Origin) -> tuple[int, ...] | None:
    """What identifies a file on disk and the walk's depth: a file read again unchanged (by
    ``export`` after ``inspect`` in one process, or ``compare`` of a file with itself) is not
    walked again. Any write changes the file's ctime, which no user can set; one that lands
    between a walk and a read is no more possible this way than between a walk and its read.
    A stored zip member is its archive's window; None for a member inflated into memory."""
    if isinstance(source, Path):
        path, window = source, (0, -1)
    elif isinstance(source, FileSlice):
        path, window = source.path, (source.start, source.length)
    else:
        return None
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, *window,
            origin.limits.max_nesting)  # fmt: skip


def _served(source: Source, origin: Origin, seconds: int) -> Outcome | None:
    """The walk done by a child of this process's helper; None when there is no helper."""
    from weightscope.formats.keras.hdf5_guard_server import helper

    server = helper()
    return None if server is None else server.rehearse(source, origin.limits.max_nesting, seconds)


def _forked(source: Source, origin: Origin, seconds: int) -> Outcome:
    """The walk done by a child forked from this process."""
    parent = os.getpid()
    read_end, write_end = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns of forking a process with threads (numpy's BLAS pool, say):
            # the child takes no lock they hold. h5py holds its own over a fork, so that no
            # other thread is inside HDF5 then.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:  # no process to spare: read unguarded, as without fork
        os.close(read_end)
        os.close(write_end)
        return True, None
    if pid == 0:  # pragma: no cover - the child, measured through its parent
        os.close(read_end)
        walk_and_exit(parent, write_end, lambda: h5py.File(source, "r"), origin.limits.max_nesting)
    os.close(write_end)
    reaped = False
    status: int | None = None
    try:
        finished = wait_for_walk(read_end, seconds)
        if finished is False:
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):  # reaped already (SIGCHLD ignored)
            status = os.waitpid(pid, 0)[1]
        reaped = True
    finally:
        os.close(read_end)
        if not reaped:  # interrupted while waiting (Ctrl-C, a caller's alarm)
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
    return finished, status


def wait_for_walk(read_end: int, seconds: float) -> bool | None:
    """Read the child's reports until it is done: True when it finished its walk, False when it
    went ``seconds`` without a report, None when it ended without finishing (crashed)."""
    poll = select.poll()  # not select(): file descriptors past 1024 are fine
    poll.register(read_end, select.POLLIN)
    while True:
        if not poll.poll(seconds * 1000):
            return False
        report = os.read(read_end, 4096)
        if not report:
            return None
        if report.endswith(DONE):
            return True


def death(status: int | None) -> str:
    """How a child ended, in words."""
    if status is None:
        return "its end unknown"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _resident_bytes() -> int:
    """This process's resident memory (Linux; 0 where ``/proc`` does not tell)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
