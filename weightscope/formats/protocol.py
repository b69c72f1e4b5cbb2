"""What every format reader offers, and what the registry hands it.

The registry opens a file once into a :class:`Probe` (its first bytes, its size and, for a zip,
the archive with its member list). Each reader's ``match(probe)`` looks at that and, when the
file is its own, returns a :class:`Match` saying which variant it found; ``load(match, limits)``
consumes the match (and the open archive), so nothing is sniffed or parsed twice. Live objects
(a ``torch.nn.Module``, an ``onnx.ModelProto``) go through the same readers with
``match_object``/``load_object``. Adding a format means adding one reader to
:data:`weightscope.formats.registry.READERS`."""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from weightscope.formats._common.archive import ZIP_SIGNATURE
from weightscope.limits import Limits
from weightscope.model import Model


@dataclass(eq=False)
class Probe:
    """A file opened once for recognition: readers match on this, never on the path alone."""

    path: Path
    head: bytes
    size: int
    archive: zipfile.ZipFile | None = None
    """The zip, opened once, when the file starts like one and its directory reads."""
    archive_error: str | None = None
    """Why a file that starts like a zip could not be opened as one."""
    names: frozenset[str] = field(default_factory=frozenset)
    """The zip's member names (empty for other files)."""
    file: Any = None
    """For a URL, the open :class:`~weightscope.formats._common.remote.RemoteFile` the readers
    that read by URL take their bytes from (``path`` is then its ``RemotePath``)."""

    @classmethod
    def open(cls, path: Path, head: bytes) -> Probe:
        size = path.stat().st_size
        if not head.startswith(ZIP_SIGNATURE):
            return cls(path, head, size)
        try:
            archive = zipfile.ZipFile(path)
            names = frozenset(archive.namelist())
        except Exception as exc:  # BadZipFile, OSError, UnicodeDecodeError, ValueError...
            return cls(path, head, size, archive_error=str(exc)[:200])
        return cls(path, head, size, archive, names=names)

    @property
    def is_zip(self) -> bool:
        return self.head.startswith(ZIP_SIGNATURE)

    def take_archive(self) -> zipfile.ZipFile:
        """The open zip, for a reader whose model goes on reading from it (compressed members
        read on demand): the model closes it from then on, not the probe."""
        if self.archive is None:
            raise ValueError(f"{self.path} is not an open zip archive")
        archive, self.archive = self.archive, None
        return archive

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Match:
    """A reader's claim on a file: which of its variants it found, and what it looks like."""

    looks_like: str
    """The format, for error lines (``ONNX model``, ``TorchScript archive``)."""
    variant: str
    """The reader's own name for what it found (``legacy``, ``zip``, ``hdf5``...)."""
    probe: Probe


class Reader(Protocol):
    FRAMEWORK: str

    def match(self, probe: Probe) -> Match | None: ...

    def load(self, match: Match, limits: Limits) -> Model: ...

    def match_object(self, obj: Any) -> bool: ...

    def load_object(self, obj: Any, limits: Limits) -> Model: ...
