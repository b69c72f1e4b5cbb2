"""One scan at a time writes the tables of a folder: two scans onto one table would overwrite
each other's rows. The lock is an advisory ``flock`` on the table's folder, so no lock file is
ever left beside the table, and the kernel releases it when the scan ends however it ends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from weightscope.errors import WeightscopeError


@contextmanager
def table_lock(target: Path) -> Iterator[None]:
    """Hold the lock on ``target``'s folder, or refuse at once with one line if another scan
    holds it. Where ``fcntl`` is missing (Windows) scans are not locked."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    folder = target.parent if str(target.parent) else Path(".")
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise WeightscopeError(
                f"{target}: another weightscope scan is writing a table in {folder}; "
                "run this one when it has finished"
            ) from None
        yield
    finally:
        os.close(fd)
