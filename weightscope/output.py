"""Writing an output file (an export, a figure, a report) safely: never onto a file the model was
read from, and atomically, so that a reader never sees half a file."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from weightscope.errors import WeightscopeError
from weightscope.model import Model


def check_output(target: Path, model: Model) -> None:
    """Refuse ``target`` if it is (or links to) any file the model was read from, ONNX external
    data included, or if its folder does not exist."""
    check_target(target, model.inputs)


def check_target(target: Path, inputs: Iterable[Path]) -> None:
    """Refuse ``target`` if it is (or links to) one of ``inputs``, if it exists and is not a
    regular file (a directory, a device such as ``/dev/null``, a FIFO, a socket: replacing one
    would destroy it), or if its folder does not exist or cannot be written to. Every message
    names ``target``."""
    try:
        mode: int | None = target.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise WeightscopeError(f"{target}: cannot use as output: {exc.strerror or exc}") from None
    if mode is not None:
        for source in inputs:
            if source.exists() and os.path.samefile(target, source):
                raise WeightscopeError(
                    f"{target}: refusing to overwrite {source}, which is read as input"
                )
        if not stat.S_ISREG(mode):
            raise WeightscopeError(f"{target}: is {_special(mode)}, not a regular file")
    folder = target.parent
    if not folder.is_dir():
        raise WeightscopeError(f"{target}: output folder {folder} does not exist")
    _check_writable(target, folder)


def _special(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _check_writable(target: Path, folder: Path) -> None:
    """Create and remove a temporary file in ``folder``: the one test that holds for root, ACLs
    and read-only mounts alike."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".ws-check-")
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WeightscopeError(f"{target}: cannot write to folder {folder}: {reason}") from None
    os.close(fd)
    os.unlink(name)


@contextmanager
def atomic_output(target: Path, model: Model) -> Iterator[Path]:
    """A temporary path beside ``target`` to write to; renamed onto ``target`` when the block
    succeeds (replacing a symlink, never writing through it), removed when it fails."""
    with atomic_file(target, model.inputs) as temporary:
        yield temporary


@contextmanager
def atomic_file(target: Path, inputs: Iterable[Path]) -> Iterator[Path]:
    """:func:`atomic_output` for a file that must not be any of ``inputs``."""
    check_target(target, inputs)
    try:
        fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".ws-", suffix=target.suffix)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise WeightscopeError(
            f"{target}: cannot write to folder {target.parent}: {reason}"
        ) from None
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp_name, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
    try:
        yield Path(temp_name)
        _replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _replace(temporary: str, target: Path) -> None:
    """Rename the finished file onto ``target``, unless ``target`` became something other than
    a regular file while the work ran."""
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        raise WeightscopeError(f"{target}: is {_special(mode)}, not a regular file")
    try:
        os.replace(temporary, target)
    except OSError as exc:
        raise WeightscopeError(f"{target}: cannot write: {exc.strerror or exc}") from None
