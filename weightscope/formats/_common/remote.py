"""Model files read by URL (``https://``, ``s3://``, ``hf://`` and whatever else fsspec knows)
through ranged reads: the same ``read(offset, nbytes)`` as :class:`~.file_region.OpenFile`, one
request per range, nothing cached and nothing downloaded whole. fsspec (and s3fs or
huggingface_hub for their schemes) is imported only when a URL is opened: ``pip install
'weightscope[remote]'``."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from weightscope.errors import RemoteError, UnsupportedFormatError, file_error

READ_BYTES = 16 << 20
"""Most bytes one range request fetches while statistics stream a tensor: they hold at most two
such ranges (the one being reduced and the one in flight), whatever the tensor's size."""

READERS = 2
"""Threads that fetch and reduce a float tensor's ranges by URL, each its own range (one
fetching while another reduces): at most this many ranges of :data:`READ_BYTES` in memory."""

HEAD_BYTES = 4096
"""Most bytes of a first read at offset 0 that are kept for later reads within them."""

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
"""A scheme of two letters or more, then ``://``: ``C://x`` stays a Windows path."""

_INSTALL = "pip install 'weightscope[remote]'"


def url_scheme(source: object) -> str | None:
    """The scheme of ``source`` when it is a URL string (``https``, ``s3``, ``hf``), else None.
    A local path is never a URL, even one holding ``:`` or ``://`` (an existing file wins)."""
    if isinstance(source, RemotePath):
        return source.scheme
    if not isinstance(source, str):
        return None
    found = _URL.match(source)
    if found is None or found.group(1).lower() == "file" or Path(source).exists():
        return None
    return found.group(1).lower()


class RemotePath(type(Path())):  # type: ignore[misc]
    """A URL where the readers expect a :class:`~pathlib.Path`: printed as the URL, named by its
    last part (``.name``, ``.suffix``); it exists as no local file, and anything that would read
    it locally raises one line saying the format is not read by URL (a reader that needs a
    local file)."""

    _url: str = ""
    remote_size: int | None = None
    """The file's size on the server, once opened."""
    file: RemoteFile | None = None
    """The open file, for the helpers that take a path (a zip's member offsets)."""

    def __init__(self, url: str, *rest: Any) -> None:
        if hasattr(Path, "with_segments"):  # Python 3.12 and later, derived paths included
            super().__init__(url, *rest)  # pragma: no cover
        if isinstance(url, str) and not rest:
            self._url = url

    def __str__(self) -> str:
        return self._url or super().__str__()

    def __repr__(self) -> str:
        return f"RemotePath({str(self)!r})"

    @property
    def scheme(self) -> str:
        return str(self).split("://", 1)[0].lower()

    def _local(self) -> NoReturn:
        raise file_error(
            UnsupportedFormatError,
            self,
            "this format is not read by URL (only .safetensors, ONNX and PyTorch zip "
            "checkpoints are); download the file first",
        )

    # Not a local file: what asks whether one exists (an output checked against the inputs)
    # is told no; what would read one is refused.
    def exists(self, *args: Any, **kwargs: Any) -> bool:
        return False

    def is_file(self) -> bool:
        return False

    def is_dir(self) -> bool:
        return False

    def is_symlink(self) -> bool:
        return False

    def samefile(self, other: Any) -> bool:
        return False

    def __fspath__(self) -> str:
        self._local()

    def stat(self, *args: Any, **kwargs: Any) -> Any:
        self._local()

    def lstat(self) -> Any:
        self._local()

    def open(self, *args: Any, **kwargs: Any) -> Any:
        self._local()

    def resolve(self, strict: bool = False) -> Any:
        self._local()

    def iterdir(self) -> Any:
        self._local()


WHOLE_BYTES = 64 << 20
"""Largest file read whole by URL: a format without an index to its data (an ONNX model's
protobuf) is fetched whole to be decoded; one holding its weights inside is usually larger, and
refused rather than downloaded."""


def beside(path: RemotePath, location: str) -> RemotePath | None:
    """The URL of ``location`` (a relative name an ONNX model gives its external data) in the
    folder of ``path``; None when ``location`` would leave that folder (absolute, ``..``, a URL
    of its own)."""
    parts = location.replace("\\", "/").split("/")
    if not location or location.startswith("/") or "://" in location or ".." in parts:
        return None
    if re.match(r"^[A-Za-z]:", location):  # a Windows drive
        return None
    folder = str(path).rsplit("/", 1)[0]
    return RemotePath(f"{folder}/{'/'.join(p for p in parts if p not in ('', '.'))}")


def parse_storage_option(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` as fsspec takes it: the value read as JSON when it is JSON (``anon=true``,
    ``client_kwargs={"region_name": "eu-west-1"}``), else as the string itself."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r} is not KEY=VALUE")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


class RemoteFile:
    """A file read by URL, with the interface of :class:`~.file_region.OpenFile`: ``size``,
    ``read``, ``read_into``, ``read_ranges`` (with one range fetched ahead), ``error``,
    ``close``. Every read is one ranged request; a short answer is an error, never retried."""

    remote = True

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        looked_like: str = "model file",
    ) -> None:
        self.remote_path = RemotePath(url)
        self.path: Path = self.remote_path
        self.url = url
        self.looked_like = looked_like
        self.storage_options = dict(storage_options or {})
        """The options it was opened with, for the files beside it (ONNX external data)."""
        self._turn = threading.Lock()
        self._head = b""
        """The first bytes, kept from the first read at offset 0 (recognition): the header's
        length lies in them, so reading it costs no request."""
        fsspec = _import_fsspec(url)
        try:
            fs, location = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
            handle = fs.open(location, "rb", cache_type="none", block_size=READ_BYTES)
        except ImportError as exc:  # the scheme's own package: s3fs, huggingface_hub, aiohttp
            raise self._fail(_missing_package(exc)) from None
        except Exception as exc:
            raise self._fail(_reason(exc)) from None
        size = getattr(handle, "size", None)
        if not isinstance(size, int) or not hasattr(handle, "seek"):
            handle.close()
            raise self._fail(
                "the server does not give the file's size, so it cannot be read by ranges"
            )
        self._handle = handle
        self._http = type(handle).__name__ == "HTTPFile" and hasattr(handle, "session")
        """fsspec's HTTP file: its ranges fetched by :func:`_http_range`, bounded."""
        self.size = self.remote_path.remote_size = size
        self.remote_path.file = self

    def _fail(self, reason: str) -> RemoteError:
        error = file_error(RemoteError, self.url, reason)
        assert isinstance(error, RemoteError)
        return error

    def error(self, problem: str) -> Exception:
        from weightscope.errors import CorruptFileError

        return file_error(CorruptFileError, self.path, problem, self.looked_like)

    def read(self, offset: int, nbytes: int) -> bytes:
        if offset < 0 or offset + nbytes > self.size:
            raise self.error(f"tensor data cut short at byte {offset}")
        if nbytes == 0:
            return b""
        if offset + nbytes <= len(self._head):  # the format's magic, then its header length
            return self._head[offset : offset + nbytes]
        if self._http:
            buffer = bytearray(nbytes)
            self._fetch(offset, memoryview(buffer))
            data = bytes(buffer)
        else:
            data = self._read(offset, nbytes)
        if offset == 0 and nbytes <= HEAD_BYTES:
            self._head = data
        return data

    def _read(self, offset: int, nbytes: int) -> bytes:
        """Through the fsspec file (s3fs, huggingface_hub...): a seek and a read, in turn."""
        try:
            with self._turn:
                self._handle.seek(offset)
                data = bytes(self._handle.read(nbytes))
        except Exception as exc:
            raise self._failed(offset, nbytes, exc) from None
        self._check_count(offset, nbytes, len(data))
        return data

    def _fetch(self, offset: int, into: memoryview) -> None:
        """Over HTTP: the range ``into`` covers, written into it as it arrives."""
        try:
            count = _http_range(self._handle, offset, into)
        except Exception as exc:
            raise self._failed(offset, len(into), exc) from None
        self._check_count(offset, len(into), count)

    def _failed(self, offset: int, nbytes: int, exc: Exception) -> RemoteError:
        return self._fail(f"reading bytes {offset}-{offset + nbytes - 1}: {_reason(exc)}")

    def _check_count(self, offset: int, nbytes: int, count: int) -> None:
        if count != nbytes:
            raise self._fail(
                f"the answer for bytes {offset}-{offset + nbytes - 1} was cut short "
                f"({count:,} of {nbytes:,} bytes)"
            )

    def read_whole(self) -> bytes:
        """All of the file, in one request, up to :data:`WHOLE_BYTES`."""
        if self.size > WHOLE_BYTES:
            raise self._fail(
                f"a {self.looked_like} of {self.size:,} bytes is read whole to be decoded, and "
                f"by URL only up to {WHOLE_BYTES:,}; download the file first"
            )
        return self.read(0, self.size)

    def stream(self) -> io.BufferedReader:
        """A seekable binary stream over the file (for ``zipfile``), read in ranges of 64 KiB."""
        return io.BufferedReader(_RangeStream(self), buffer_size=64 << 10)

    def read_into(self, offset: int, buffer: np.ndarray) -> None:
        view = buffer.reshape(-1).view(np.uint8)
        if self._http and view.size and offset + view.size > len(self._head):
            if offset < 0 or offset + view.size > self.size:
                raise self.error(f"tensor data cut short at byte {offset}")
            self._fetch(offset, view.data)  # no copy but the arriving chunks'
        else:
            view[:] = np.frombuffer(self.read(offset, view.size), np.uint8)

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The bytes of each ``(offset, nbytes)`` in turn, the next range requested while the
        caller works on this one (at most two ranges in memory)."""
        if len(ranges) < 2:
            yield from (self.read(offset, nbytes) for offset, nbytes in ranges)
            return
        with ThreadPoolExecutor(1, thread_name_prefix="weightscope-read-ahead") as pool:
            ahead: Future[bytes] = pool.submit(self.read, *ranges[0])
            try:
                for following in (*ranges[1:], None):
                    data = ahead.result()
                    if following is not None:
                        ahead = pool.submit(self.read, *following)
                    yield data
                    del data
            finally:
                ahead.cancel()

    def close(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            self._handle = None
            with contextlib.suppress(Exception):  # nothing was written: nothing to lose
                handle.close()


def _http_range(handle: Any, offset: int, into: memoryview) -> int:
    """Fill ``into`` with the bytes at ``offset`` of fsspec's HTTP file ``handle``, through its
    own session, reading at most one byte more than asked: fsspec's read takes a whole body,
    and a server that ignores ``Range`` or never ends its answer would have it download the
    file (or fill the memory). How many bytes came."""
    from fsspec.asyn import sync

    return int(sync(handle.fs.loop, _fetch_range, handle, offset, into))


async def _fetch_range(handle: Any, offset: int, into: memoryview) -> int:
    nbytes = len(into)
    kwargs = dict(handle.kwargs)
    headers = {**kwargs.pop("headers", {}), "Range": f"bytes={offset}-{offset + nbytes - 1}"}
    url = handle.fs.encode_url(handle.url)
    async with handle.session.get(url, headers=headers, **kwargs) as answer:
        if answer.status == 404:
            raise FileNotFoundError(handle.url)
        answer.raise_for_status()
        where = re.match(r"bytes (\d+)-", answer.headers.get("Content-Range", ""))
        if answer.status != 206 or (where is not None and int(where.group(1)) != offset):
            raise ValueError("the server ignores range requests")
        got = 0
        while got < nbytes:
            chunk = await answer.content.read(nbytes - got)
            if not chunk:
                return got
            into[got : got + len(chunk)] = chunk
            got += len(chunk)
        if await answer.content.read(1):
            raise ValueError(f"the server sent more than the {nbytes:,} bytes asked for")
    return got


class _RangeStream(io.RawIOBase):
    """:class:`RemoteFile` as a raw stream: each read one ranged request (closing it leaves the
    file open)."""

    def __init__(self, file: RemoteFile) -> None:
        self.file = file
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.file.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self.file.size - self.position))
        view[:count] = self.file.read(self.position, count)
        self.position += count
        return count


def list_files(url: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The files ``url`` names, as URLs: the file itself, every file under a folder or prefix
    (``s3://bucket/models/``, ``hf://org/repo``), or a glob's matches (``**`` crosses folders);
    empty when nothing is there. A plain ``http(s)://`` URL is taken as one file, unlisted."""
    if url_scheme(url) in ("http", "https") and not _has_magic(url):
        return [url]
    fsspec = _import_fsspec(url)
    try:
        fs, location = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        if _has_magic(location):
            found = [p for p, i in fs.glob(location, detail=True).items() if i["type"] == "file"]
        elif not fs.exists(location):
            found = []
        elif fs.isfile(location):
            return [url]
        else:
            found = fs.find(location)
    except ImportError as exc:
        raise file_error(RemoteError, url, _missing_package(exc)) from None
    except Exception as exc:
        raise file_error(RemoteError, url, _reason(exc)) from None
    return sorted(fs.unstrip_protocol(path) for path in found)


def looks_like_folder(url: str) -> bool:
    """Whether ``url`` names a folder rather than a file by its look: it ends with ``/``, or
    its last part has no suffix (``hf://org/repo``, ``s3://bucket/models/tiny``). Only such a
    URL costs a listing before it is read."""
    last = url.rstrip("/").rsplit("/", 1)[-1]
    return url.endswith("/") or "." not in last


def folder_files(url: str, storage_options: Mapping[str, Any] | None = None) -> list[str] | None:
    """The names of the files directly in the folder ``url`` (``hf://org/repo``,
    ``s3://bucket/prefix/``), or None when ``url`` is no folder there (a file, or nothing). A
    plain ``http(s)://`` URL is never listed: None."""
    if url_scheme(url) in ("http", "https"):
        return None
    fsspec = _import_fsspec(url)
    try:
        fs, location = fsspec.core.url_to_fs(url, **dict(storage_options or {}))
        if not fs.isdir(location):
            return None
        entries = fs.ls(location, detail=True)
    except ImportError as exc:
        raise file_error(RemoteError, url, _missing_package(exc)) from None
    except Exception as exc:
        raise file_error(RemoteError, url, _reason(exc)) from None
    return sorted(
        str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]
        for entry in entries
        if entry.get("type") == "file"
    )


def _missing_package(exc: ImportError) -> str:
    """fsspec names the package a scheme needs (gcsfs for gs://); the remote extra holds those
    of https, s3 and hf."""
    text = _first_line(exc)
    return text if "install" in text.lower() else f"{text} ({_INSTALL})"


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _import_fsspec(url: str) -> Any:
    try:
        import fsspec
    except ImportError:
        raise file_error(RemoteError, url, f"reading by URL needs fsspec ({_INSTALL})") from None
    return fsspec


NOT_FOUND = "no such file on the server (not found)"
"""How a file the server does not have is said: a reader that may do without one (a
``config.json`` beside an index) tells it from other failures by this ending."""


def _reason(exc: BaseException) -> str:
    """One line for a failure of the network or the server."""
    status = _status(exc)
    if isinstance(exc, FileNotFoundError) and status in (None, 404):
        return NOT_FOUND
    if isinstance(exc, PermissionError):
        return f"access denied: {_first_line(exc)}"
    if isinstance(exc, ValueError) and "range requests" in str(exc):
        return "the server ignores Range requests (it would send the whole file); refused"
    if isinstance(exc, ValueError) and "more than the" in str(exc):
        return f"{exc}; refused"
    text = _first_line(exc)
    if type(exc).__name__ == "ClientPayloadError":  # aiohttp: fewer bytes than announced
        return f"the server's answer was cut short ({text})"
    if status is not None:
        return f"HTTP {status}: {text}"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _status(exc: BaseException) -> int | None:
    """The HTTP status behind ``exc``, where it or what caused it carries one (fsspec's HTTP
    file system says FileNotFoundError for a 403 too)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        status = getattr(seen, "status", None) or getattr(seen, "code", None)
        if isinstance(status, int) and 100 <= status < 600:
            return status
        seen = seen.__cause__ or seen.__context__
    return None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:200] + "..."
