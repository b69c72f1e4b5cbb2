"""What the child that rehearses an HDF5 file's reading does (see ``hdf5_guard``): walk
everything of the file's structure the readers may touch, with the same calls, telling its parent
of each step through a file descriptor, and end without running anything of its parent's."""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn

import h5py
import numpy as np

from weightscope.formats.keras.hdf5 import ATTRIBUTES_READ, UNREAD_ROOT_GROUPS, each_chunk

TICK_SECONDS = 0.05
"""How often the child tells the parent it is still making progress (at most)."""
DONE = b"!"
"""What the child writes once it has walked the whole file."""
TICK = b"."
"""What the child writes when a step has ended."""
_READ = re.compile(
    b"|".join(re.escape(name.encode()) for name in ATTRIBUTES_READ) + rb"|(?:layer|weight)_names\d+"
)
"""The names of the attributes the readers read, with Keras' chunked ``layer_names0``, ..."""
PR_SET_PDEATHSIG = 1
Outcome = tuple[bool | None, int | None]
"""A walk's end: True when it finished, False when a step went over the deadline, None when the
child ended without finishing (crashed); and the child's wait status where known."""


def walk_and_exit(
    parent: int, report_to: int, open_file: Callable[[], h5py.File], max_nesting: int
) -> NoReturn:  # pragma: no cover - runs in the forked child
    """In a child just forked from ``parent``: walk the file ``open_file()`` opens, report each
    step to the file descriptor ``report_to`` and the end with :data:`DONE`, and leave without
    running anything of the parent's (no atexit handlers, no buffers flushed, no HDF5 files
    closed: ``os._exit``)."""
    try:
        die_with(parent)
        _quiet()
        progress = _Progress(report_to)
        with contextlib.suppress(Exception):
            h5 = open_file()  # left open: closing it is work, and the process ends here
            Walk(progress, max_nesting).walk(h5)
        os.write(report_to, DONE)
    finally:
        os._exit(0)


def die_with(parent: int) -> None:  # pragma: no cover - runs in the forked child
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
    with contextlib.suppress(ImportError, OSError, ValueError):
        import resource  # Unix only, as fork is

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
            os.write(self.fd, TICK)
            self.last = now


class Walk:  # pragma: no cover - runs in the forked child
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
