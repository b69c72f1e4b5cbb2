"""Zip members read in place: where a stored (uncompressed) member's bytes start in the file."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from weightscope.errors import CorruptFileError, file_error
from weightscope.limits import LimitExceeded, Limits

ZIP_SIGNATURE = b"PK\x03\x04"
LOCAL_HEADER_BYTES = 30


def _pread(fd: int, count: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        return os.pread(fd, count, offset)
    os.lseek(fd, offset, os.SEEK_SET)  # Windows: this descriptor is read by one thread only
    return os.read(fd, count)


def stored_member_offset(path: Path, info: zipfile.ZipInfo) -> int:
    """File offset of the first byte of an uncompressed member's data."""
    with StoredMembers(path) as members:
        return members.offset(info)


class StoredMembers:
    """Where uncompressed members' bytes start, their local headers read through one open
    descriptor (a torch zip holds one member per storage: 200,000 of them, each opened and
    stat-ed on its own, took seconds)."""

    WINDOW = 1 << 16
    """Bytes read at once: a local header is 30 bytes, and the members of tiny tensors lie close
    together (one read per header was 200,000 system calls)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.remote = getattr(path, "file", None)
        """The open file of a URL (a ``RemotePath``'s), read by ranges instead."""
        self.fd = -1
        if self.remote is not None:
            self.size = self.remote.size
        else:
            self.fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
            self.size = os.fstat(self.fd).st_size
        self.window = b""
        self.window_start = 0

    def _header(self, offset: int) -> bytes:
        """The 30 bytes at ``offset`` (fewer at the end of the file)."""
        start = offset - self.window_start
        if not (start >= 0 and start + LOCAL_HEADER_BYTES <= len(self.window)):
            if self.remote is not None:
                window = self.remote.limits.remote_zip_header_bytes  # a request each
                count = max(0, min(window, self.size - offset))
                self.window = self.remote.read(offset, count)
            else:
                self.window = _pread(self.fd, self.WINDOW, offset)
            self.window_start, start = offset, 0
        return self.window[start : start + LOCAL_HEADER_BYTES]

    def offset(self, info: zipfile.ZipInfo) -> int:
        """File offset of the first byte of the data of ``info``, an uncompressed member."""
        path = self.path
        if info.compress_type != zipfile.ZIP_STORED:
            raise file_error(CorruptFileError, path, f"{info.filename} is compressed")
        header = self._header(info.header_offset)
        if len(header) < LOCAL_HEADER_BYTES or header[:4] != ZIP_SIGNATURE:
            raise file_error(CorruptFileError, path, f"bad local header for {info.filename}")
        name_len = int.from_bytes(header[26:28], "little")
        extra_len = int.from_bytes(header[28:30], "little")
        start = info.header_offset + LOCAL_HEADER_BYTES + name_len + extra_len
        if start + info.file_size > self.size:
            raise file_error(
                CorruptFileError, path, f"{info.filename} runs past the end of the file"
            )
        return start

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> StoredMembers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_ratio(info: zipfile.ZipInfo, limits: Limits) -> None:
    """Refuse a compressed member whose declared size is over ``max_zip_ratio`` times its
    compressed size (deflate stays under about 1032: more is a zip bomb or a lying header)."""
    ratio = -(-info.file_size // max(info.compress_size, 1))
    if info.file_size > info.compress_size * limits.max_zip_ratio:
        raise LimitExceeded(
            "max_zip_ratio",
            limits.max_zip_ratio,
            ratio,
            f"{info.filename} declares {info.file_size:,} bytes from {info.compress_size:,} "
            f"compressed (a ratio of {ratio:,})",
        )
