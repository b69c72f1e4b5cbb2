"""Writing an output file (an export, a figure, a report) safely: never onto a file the model was
read from, and atomically, so that a reader never sees half a file."""

from __future__ import annotations

import os
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
    """Refuse ``target`` if it is (or links to) one of ``inputs``, or if its folder does not
    exist."""
    if target.exists():
        for source in inputs:
            if source.exists() and os.path.samefile(target, source):
                raise WeightscopeError(
                    f"{target}: refusing to overwrite {source}, which is read as input"
                )
        if target.is_dir():
            raise WeightscopeError(f"{target}: is a directory")
    if not target.parent.is_dir():
        raise WeightscopeError(f"{target}: output folder {target.parent} does not exist")


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
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".ws-", suffix=target.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp_name, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
    try:
        yield Path(temp_name)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
