"""Model files read by URL (``https://``, ``s3://``, ``hf://`` and whatever else fsspec knows)
through ranged reads: the same ``read(offset, nbytes)`` as :class:`~.file_region.OpenFile`, one
request per range, nothing cached and nothing downloaded whole. fsspec (and s3fs or
huggingface_hub for their schemes) is imported only when a URL is opened: ``pip install
'weightscope[remote]'``."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from weightscope.errors import RemoteError, UnsupportedFormatError, file_error
from weightscope.limits import DEFAULT, LimitExceeded, Limits

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
    ``read``, ``read_into``, ``read_ranges`` (with ranges fetched ahead), ``error``, ``close``.
    Every read is one or more ranged requests of at most ``remote_range_bytes`` (its
    :class:`~weightscope.limits.Limits`); an answer other than the bytes asked is an error,
    never retried, and of an answer longer than asked at most one byte more is read (over HTTP,
    S3 and the Hub: see :func:`_fetcher`)."""

    remote = True

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any] | None = None,
        looked_like: str = "model file",
        limits: Limits | None = None,
    ) -> None:
        self.remote_path = RemotePath(url)
        self.path: Path = self.remote_path
        self.url = url
        self.looked_like = looked_like
        self.limits = DEFAULT if limits is None else limits
        self.range_bytes = self.limits.remote_range_bytes
        """Most bytes one request asks for."""
        self.ranges_in_flight = self.limits.remote_ranges_in_flight
        """Ranges a stream of them holds at once, those requested ahead included."""
        self.storage_options = dict(storage_options or {})
        """The options it was opened with, for the files beside it (ONNX external data)."""
        self._turn = threading.Lock()
        self._head = b""
        """The first bytes, kept from the first read at offset 0 (recognition): the header's
        length lies in them, so reading it costs no request."""
        fsspec = _import_fsspec(url)
        try:
            fs, location = fsspec.core.url_to_fs(url, **self.storage_options)
            handle = fs.open(location, "rb", cache_type="none", block_size=self.range_bytes)
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
        self._ranged = _fetcher(handle)
        """How a range is fetched, bounded (None: through the fsspec file, as it reads)."""
        self.size = self.remote_path.remote_size = size
        self.remote_path.file = self

    def sibling(self, url: str, looked_like: str) -> RemoteFile:
        """Another file (an ONNX model's external data), opened with this one's storage
        options and limits."""
        return RemoteFile(url, self.storage_options, looked_like, self.limits)

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
        buffer = bytearray(nbytes)
        self._fetch(offset, memoryview(buffer))
        data = bytes(buffer)
        if offset == 0 and nbytes <= self.limits.remote_head_bytes:
            self._head = data
        return data

    def _fetch(self, offset: int, into: memoryview) -> None:
        """The bytes at ``offset`` written into ``into`` as they arrive, by requests of at most
        :attr:`range_bytes`, one after another."""
        step = self.range_bytes
        for start in range(0, len(into), step):
            self._fetch_range(offset + start, into[start : start + step])

    def _fetch_range(self, offset: int, into: memoryview) -> None:
        try:
            if self._ranged is not None:
                count = self._ranged(self._handle, offset, into)
            else:
                count = self._read_through(offset, into)
        except Exception as exc:
            raise self._failed(offset, len(into), exc) from None
        self._check_count(offset, len(into), count)

    def _read_through(self, offset: int, into: memoryview) -> int:
        """Through the fsspec file (a scheme without a bounded fetch of its own): a seek and a
        read, in turn. How many bytes came."""
        with self._turn:
            self._handle.seek(offset)
            data = self._handle.read(len(into))
        count = min(len(data), len(into))
        into[:count] = data[:count]
        return len(data)

    def _failed(self, offset: int, nbytes: int, exc: Exception) -> RemoteError:
        return self._fail(f"reading bytes {offset}-{offset + nbytes - 1}: {_reason(exc)}")

    def _check_count(self, offset: int, nbytes: int, count: int) -> None:
        if count != nbytes:
            raise self._fail(
                f"the answer for bytes {offset}-{offset + nbytes - 1} was cut short "
                f"({count:,} of {nbytes:,} bytes)"
                if count < nbytes
                else f"the server sent more than the {nbytes:,} bytes asked for; refused"
            )

    def read_whole(self) -> bytes:
        """All of the file, up to ``max_remote_whole_bytes`` (over it:
        :class:`~weightscope.limits.LimitExceeded`)."""
        limit = self.limits.max_remote_whole_bytes
        if self.size > limit:
            raise LimitExceeded(
                "max_remote_whole_bytes",
                limit,
                self.size,
                f"a {self.looked_like} of {self.size:,} bytes is fetched whole to be decoded",
            )
        return self.read(0, self.size)

    def stream(self) -> io.BufferedReader:
        """A seekable binary stream over the file (for ``zipfile``), read in ranges of
        ``remote_stream_bytes``."""
        return io.BufferedReader(_RangeStream(self), buffer_size=self.limits.remote_stream_bytes)

    def sequential_stream(self) -> io.BufferedReader:
        """A seekable binary stream for reading a header of unknown length from the start (a
        GGUF file's): each request twice as long as the one before, from
        ``remote_stream_bytes`` up to ``remote_range_bytes``, so a header of H bytes costs
        about log2(H) requests and at most about 2 H bytes."""
        raw = _ReadAhead(self, self.limits.remote_stream_bytes, self.range_bytes)
        return io.BufferedReader(raw, buffer_size=self.limits.remote_stream_bytes)

    def read_into(self, offset: int, buffer: np.ndarray) -> None:
        view = buffer.reshape(-1).view(np.uint8)
        if offset < 0 or offset + view.size > self.size:
            raise self.error(f"tensor data cut short at byte {offset}")
        if offset + view.size <= len(self._head):
            view[:] = np.frombuffer(self._head, np.uint8, view.size, offset)
        elif view.size:
            self._fetch(offset, view.data)  # no copy but the arriving chunks'

    def read_ranges(self, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The bytes of each ``(offset, nbytes)`` in turn, the following ones requested while
        the caller works on this one: at most :attr:`ranges_in_flight` ranges held."""
        ahead = self.ranges_in_flight - 1
        if ahead < 1 or len(ranges) < 2:
            yield from (self.read(offset, nbytes) for offset, nbytes in ranges)
            return
        following = iter(ranges)
        with ThreadPoolExecutor(ahead, thread_name_prefix="weightscope-read-ahead") as pool:
            pending = deque(pool.submit(self.read, *r) for r in itertools.islice(following, ahead))
            try:
                while pending:
                    data = pending.popleft().result()
                    after = next(following, None)
                    if after is not None:
                        pending.append(pool.submit(self.read, *after))
                    yield data
                    del data
            finally:
                for future in pending:
                    future.cancel()

    def close(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None:
            self._handle = None
            with contextlib.suppress(Exception):  # nothing was written: nothing to lose
                handle.close()


Fetch = Callable[[Any, int, memoryview], int]
"""Fills the view with the bytes at the offset of an open fsspec file; how many came."""


def _fetcher(handle: Any) -> Fetch | None:
    """The bounded fetch of a range for fsspec's file ``handle``: over HTTP, S3 and the Hub,
    weightscope's own request through the file system's session, which reads at most one byte
    past the range asked (one network read, for the Hub) and checks that the answer is that
    range. fsspec's own reads take whole answers, whatever their length: a server that ignores
    ``Range`` or never ends its answer would have them download the file into memory. None for
    other schemes, read through the fsspec file."""
    kinds = {kind.__name__ for kind in type(handle).__mro__}
    if "HTTPFile" in kinds and hasattr(handle, "session"):
        return _http_range
    if "S3File" in kinds and hasattr(handle, "bucket"):
        return _s3_range
    if "HfFileSystemFile" in kinds and hasattr(handle, "url"):
        return _hf_range
    return None


class _Status(Exception):
    """An answer with an HTTP error status, its body not read."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the server answered {status}")
        self.status = status


def _check_range(status: int, content_range: str | None, offset: int) -> None:
    """Refuse an answer that is not the range asked: not 206 (a 200 would be the whole file),
    or a ``Content-Range`` starting elsewhere."""
    if status == 404:
        raise FileNotFoundError("not found")
    if status >= 400:
        raise _Status(status)
    where = re.match(r"bytes (\d+)-", content_range or "")
    if status != 206 or (where is not None and int(where.group(1)) != offset):
        raise ValueError("the server ignores range requests")


async def _read_body(read: Callable[[int], Awaitable[bytes]], into: memoryview) -> int:
    """Fill ``into`` from ``read`` (an answer's body), then read one byte more: there must be
    none. How many bytes came (fewer than asked: the answer ended early)."""
    nbytes = len(into)
    got = 0
    while got < nbytes:
        chunk = await read(nbytes - got)
        if not chunk:
            return got
        into[got : got + len(chunk)] = chunk
        got += len(chunk)
    if await read(1):
        raise ValueError(f"the server sent more than the {nbytes:,} bytes asked for")
    return got


def _http_range(handle: Any, offset: int, into: memoryview) -> int:
    """Over HTTP, through fsspec's own aiohttp session."""
    from fsspec.asyn import sync

    return int(sync(handle.fs.loop, _fetch_http_range, handle, offset, into))


async def _fetch_http_range(handle: Any, offset: int, into: memoryview) -> int:
    kwargs = dict(handle.kwargs)
    headers = {**kwargs.pop("headers", {}), "Range": _range_header(offset, len(into))}
    url = handle.fs.encode_url(handle.url)
    async with handle.session.get(url, headers=headers, **kwargs) as answer:
        _check_range(answer.status, answer.headers.get("Content-Range"), offset)
        return await _read_body(answer.content.read, into)


def _s3_range(handle: Any, offset: int, into: memoryview) -> int:
    """Over S3, through s3fs's client (its credentials, endpoint and retries of the call)."""
    from fsspec.asyn import sync

    return int(sync(handle.fs.loop, _fetch_s3_range, handle, offset, into))


async def _fetch_s3_range(handle: Any, offset: int, into: memoryview) -> int:
    version = {"VersionId": handle.version_id} if getattr(handle, "version_id", None) else {}
    answer = await handle.fs._call_s3(
        "get_object",
        Bucket=handle.bucket,
        Key=handle.key,
        Range=_range_header(offset, len(into)),
        **version,
        **getattr(handle, "req_kw", {}),
    )
    body = answer["Body"]
    try:
        status = answer.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        _check_range(status, answer.get("ContentRange"), offset)
        return await _read_body(body.read, into)
    finally:
        body.close()  # the connection, unread rest and all


def _hf_range(handle: Any, offset: int, into: memoryview) -> int:
    """Over the Hub, through huggingface_hub's HTTP client (its token and endpoint)."""
    from huggingface_hub import constants
    from huggingface_hub.utils import http_stream_backoff

    headers = {"range": _range_header(offset, len(into)), **handle.fs._api._build_hf_headers()}
    timeout = constants.HF_HUB_DOWNLOAD_TIMEOUT
    with http_stream_backoff("GET", handle.url(), headers=headers, timeout=timeout) as answer:
        _check_range(answer.status_code, answer.headers.get("content-range"), offset)
        nbytes, got = len(into), 0
        for chunk in answer.iter_raw():  # as the network gives them: one read past at most
            if got + len(chunk) > nbytes:
                raise ValueError(f"the server sent more than the {nbytes:,} bytes asked for")
            into[got : got + len(chunk)] = chunk
            got += len(chunk)
        return got


def _range_header(offset: int, nbytes: int) -> str:
    return f"bytes={offset}-{offset + nbytes - 1}"


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


class _ReadAhead(_RangeStream):
    """:class:`_RangeStream` that fetches ahead of what is asked, twice as far each time (from
    ``first`` to ``most`` bytes), and serves reads from what it fetched."""

    def __init__(self, file: RemoteFile, first: int, most: int) -> None:
        super().__init__(file)
        self.ahead = first
        self.most = max(first, most)
        self.data = b""
        self.data_start = 0

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        at = self.position - self.data_start
        if not 0 <= at < len(self.data):  # outside what was fetched: fetch from here on
            nbytes = min(max(len(view), self.ahead), self.file.size - self.position)
            self.data, self.data_start, at = self.file.read(self.position, nbytes), self.position, 0
            self.ahead = min(2 * self.ahead, self.most)
        count = min(len(view), len(self.data) - at)
        view[:count] = self.data[at : at + count]
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
