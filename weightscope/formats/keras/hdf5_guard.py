"""The HDF5 library's reading of a file's structure, rehearsed in a child process under a
deadline.

Damaged metadata can make libhdf5 loop for ever inside one call (``tests/fuzz/found/
keras_h5-2.bin`` does, reading an attribute's strings from the global heap), where no Python
code runs that could stop it. So before a reader opens an HDF5 file, :func:`rehearse` forks a
child that opens it the same way and walks everything of its structure the readers may touch,
with the same calls: every group below the root reached through hard links (but the optimizer's
state, which no reader reads), each link's kind, every object's header, the attributes the
readers read (:data:`~weightscope.formats.keras.hdf5.ATTRIBUTES_READ`), each dataset's type,
shape, creation properties and whole chunk index. The child reports progress through a pipe; one
that goes ``max_hdf5_seconds`` without finishing a step is killed and the file refused with one
line naming the limit. A child killed by a signal (the library crashing on the file) refuses the
file as damaged: the same calls would crash this process. Only then does the reader open the
file itself, and its reads (a subset of the walk's, done the same way) end as the walk's did.

Errors in the child are not reported: the reader meets them again and says what they are. What
the child costs is a ``fork`` and the walk, a few milliseconds for a small model and some tens
for a large one (ResNet50's 600 objects); the walk's progress, not its total time, is bounded,
so a large file on a slow disk is never refused for its size. Without ``os.fork`` (Windows) the
file is read unguarded.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import re
import select
import signal
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

if sys.platform != "win32":  # nor is there a fork there: files are read unguarded
    import resource

from weightscope.errors import CorruptFileError, file_error
from weightscope.formats.keras.hdf5 import (
    ATTRIBUTES_READ,
    UNREAD_ROOT_GROUPS,
    Origin,
    each_chunk,
)
from weightscope.limits import LimitExceeded

TICK_SECONDS = 0.05
"""How often the child tells the parent it is still making progress (at most)."""
_READ = re.compile(
    b"|".join(re.escape(name.encode()) for name in ATTRIBUTES_READ) + rb"|(?:layer|weight)_names\d+"
)
"""The names of the attributes the readers read, with Keras' chunked ``layer_names0``, ..."""
PR_SET_PDEATHSIG = 1
_DONE = b"!"
_TICK = b"."


def rehearse(origin: Origin, open_file: Callable[[], h5py.File], what: str = "the file") -> None:
    """Walk the structure of the HDF5 file that ``open_file()`` opens in a forked child; return
    once it has been walked (or failed: the reader will meet the error), raise
    ``LimitExceeded`` (``max_hdf5_seconds``) when one step took longer than that, a
    ``CorruptFileError`` when the walk crashed. ``what`` names the HDF5 file in messages (``the
    file``, ``model.weights.h5``)."""
    fork = getattr(os, "fork", None)
    if fork is None:
        return
    seconds = origin.limits.max_hdf5_seconds
    parent = os.getpid()
    read_end, write_end = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns of forking a process with threads (numpy's BLAS pool, say):
            # the child takes no lock they hold. h5py holds its own over a fork, so that no
            # other thread is inside HDF5 then.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = fork()
    except OSError:  # no process to spare: read unguarded, as without fork
        os.close(read_end)
        os.close(write_end)
        return
    if pid == 0:  # pragma: no cover - the child, measured through its parent
        _child(parent, read_end, write_end, open_file, origin.limits.max_nesting)
    os.close(write_end)
    reaped = False
    status: int | None = None
    try:
        finished = _wait(read_end, seconds)
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
            f"the HDF5 library crashed reading {what}'s structure ({_death(status)})",
            origin.looked_like,
        )


def _wait(read_end: int, seconds: float) -> bool | None:
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
        if report.endswith(_DONE):
            return True


def _death(status: int | None) -> str:
    if status is None:
        return "its end unknown"
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _child(
    parent: int,
    read_end: int,
    write_end: int,
    open_file: Callable[[], h5py.File],
    max_nesting: int,
) -> None:  # pragma: no cover - runs in the forked child
    """Walk, report, and leave without running anything of the parent's (no atexit handlers,
    no buffers flushed, no HDF5 files closed: ``os._exit``)."""
    try:
        os.close(read_end)
        _die_with(parent)
        _quiet()
        progress = _Progress(write_end)
        with contextlib.suppress(Exception):
            h5 = open_file()  # left open: closing it is work, and the process ends here
            _Walk(progress, max_nesting).walk(h5)
        os.write(write_end, _DONE)
    finally:
        os._exit(0)


def _die_with(parent: int) -> None:  # pragma: no cover - runs in the forked child
    """End when the parent ends, however it ends (a scan's worker killed at its timeout), even
    while looping inside libhdf5: the kernel's parent-death signal on Linux. Elsewhere a child
    ends at its next report to a parent gone (a write to a closed pipe)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # gone before the signal was armed
        os._exit(0)


def _quiet() -> None:  # pragma: no cover - runs in the forked child
    """Nothing of the parent's may run in the child: its signal handlers (a scan worker's, a
    test's alarm) go back to the defaults, ``faulthandler`` is off, a crash dumps no core and
    what libraries print goes nowhere."""
    for number in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            if callable(signal.getsignal(number)):
                signal.signal(number, signal.SIG_DFL)
    faulthandler.disable()
    if sys.platform != "win32":
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash is reported, not dumped
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)


class _Progress:
    """Tells the parent, at most every :data:`TICK_SECONDS`, that a step has ended."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.last = time.monotonic()

    def __call__(self, *_: Any) -> None:
        now = time.monotonic()
        if now - self.last >= TICK_SECONDS:
            os.write(self.fd, _TICK)
            self.last = now


class _Walk:  # pragma: no cover - runs in the forked child
    """Everything of an HDF5 file's structure the readers may touch, errors passed over. Through
    h5py's low-level calls (the high-level objects would cost more than the reading itself):
    links listed with their kinds, objects opened by name through hard links only, each once,
    attributes listed and those the readers read opened by name and read (their strings too),
    datasets' type, space, creation properties and chunk index."""

    def __init__(self, progress: _Progress, max_nesting: int) -> None:
        self.progress = progress
        self.max_nesting = max_nesting
        self.seen: set[int] = set()

    def walk(self, h5: h5py.File) -> None:
        root = h5py.h5o.open(h5.id, b"/")
        self.seen.add(int(h5py.h5o.get_info(root).addr))
        stack: list[tuple[Any, int]] = [(root, 0)]
        while stack:
            group, depth = stack.pop()
            self.attributes(group)
            if depth > self.max_nesting:  # the readers refuse it before listing it
                continue
            for name in self.hard_links(group, depth == 0):
                with contextlib.suppress(Exception):
                    child = h5py.h5o.open(group, name)
                    if isinstance(child, h5py.h5g.GroupID):
                        stack.append((child, depth + 1))
                    elif isinstance(child, h5py.h5d.DatasetID):
                        self.dataset(child)
                self.progress()

    def hard_links(self, group: Any, at_root: bool) -> list[bytes]:
        """The names of ``group``'s hard links to objects not met yet (links of other kinds are
        read, never followed)."""
        names: list[bytes] = []

        def visit(name: bytes, info: Any) -> None:
            self.progress()
            if at_root and name.decode("utf8", "replace") in UNREAD_ROOT_GROUPS:
                return
            if info.type != h5py.h5l.TYPE_HARD:
                group.links.get_val(name)
            elif info.u not in self.seen:
                self.seen.add(info.u)
                names.append(name)

        with contextlib.suppress(Exception):
            group.links.iterate(visit, info=True)
        return names

    def attributes(self, obj: Any) -> None:
        """The attributes the readers read, as h5py reads them (strings from the global heap
        too). Listing them touches all the storage a lookup by name, of a name present or not,
        would."""
        with contextlib.suppress(Exception):
            present: list[bytes] = []

            def listed(name: bytes) -> None:
                if _READ.fullmatch(name):
                    present.append(name)

            if h5py.h5a.get_num_attrs(obj):
                h5py.h5a.iterate(obj, listed)
            for name in present:
                with contextlib.suppress(Exception):
                    attribute = h5py.h5a.open(obj, name)
                    if attribute.shape is not None:
                        attribute.read(np.empty(attribute.shape, attribute.dtype))
                self.progress()

    def dataset(self, dataset: Any) -> None:
        """A dataset's attributes and, when chunked, its chunk index (its type, space and
        creation properties were read when it was opened)."""
        self.attributes(dataset)
        with contextlib.suppress(Exception):
            plist = dataset.get_create_plist()
            if plist.get_layout() != h5py.h5d.CHUNKED or plist.get_external_count() > 0:
                return  # contiguous or compact: no more to read; external: refused unread
            dataset.get_storage_size()
            each_chunk(dataset, self.progress)
