"""Hand-made PyTorch files for the tests: torch zip archives rewritten entry by entry, legacy
(pre-1.6) streams assembled from their pickles, and the checks every unreadable-file test makes."""

from __future__ import annotations

import hashlib
import pickle
import subprocess
import zipfile
from collections.abc import Mapping
from pathlib import Path

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001
LEGACY_SYS_INFO = {
    "protocol_version": LEGACY_PROTOCOL,
    "little_endian": True,
    "type_sizes": {"short": 2, "int": 4, "long": 4},
}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archive_member(path: Path, suffix: str) -> str:
    """The full name of the entry ``<folder>/<suffix>`` of a torch zip (the folder is named
    after the file torch saved to: ``model/data.pkl``)."""
    with zipfile.ZipFile(path) as archive:
        names = [n for n in archive.namelist() if n.split("/", 1)[-1] == suffix]
    assert len(names) == 1, (suffix, names)
    return names[0]


def rewrite_zip(src: Path, dst: Path, replace: Mapping[str, bytes | None]) -> Path:
    """Copy the torch zip ``src`` to ``dst`` entry by entry, in the same order, every entry
    stored uncompressed. ``replace`` maps an entry's name below the archive folder
    (``data.pkl``, ``data/0``, ``byteorder``) to its new content, or to None to drop it.
    torch's 64-byte alignment of the data entries is not kept (weightscope does not need it)."""
    seen = set()
    with zipfile.ZipFile(src) as source, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for info in source.infolist():
            suffix = info.filename.split("/", 1)[-1]
            data = source.read(info)
            if suffix in replace:
                seen.add(suffix)
                new = replace[suffix]
                if new is None:
                    continue
                data = new
            out.writestr(info.filename, data, compress_type=zipfile.ZIP_STORED)
    missing = set(replace) - seen
    assert not missing, f"{src} has no entries {sorted(missing)}"
    return dst


def read_member(path: Path, suffix: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(archive_member(path, suffix))


def legacy_stream(root_pickle: bytes, storage_keys: list[str] | None = None) -> bytes:
    """A legacy torch file: magic number, protocol version and sys_info (pickle protocol 2), the
    root object's pickle as given, then the list of storage keys (no storage data follows)."""
    return b"".join(
        [
            pickle.dumps(LEGACY_MAGIC, protocol=2),
            pickle.dumps(LEGACY_PROTOCOL, protocol=2),
            pickle.dumps(LEGACY_SYS_INFO, protocol=2),
            root_pickle,
            pickle.dumps(list(storage_keys or []), protocol=2),
        ]
    )


def assert_one_error_line(result: subprocess.CompletedProcess[str], path: Path, *words: str) -> str:
    """Exit status 2, nothing on stdout, one line on stderr that names ``path`` and contains
    every one of ``words``; no traceback. Returns the line."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"weightscope: {path}: "), lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    return lines[0]
