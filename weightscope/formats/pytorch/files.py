"""PyTorch containers: where the pickle and each storage's bytes are in a zip-format file, a
TorchScript archive, or a legacy (pre-1.6) pickle stream."""

from __future__ import annotations

import ast
import contextlib
import io
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightscope.errors import (
    CorruptFileError,
    UnsupportedFormatError,
    WeightscopeError,
    file_error,
    short,
)
from weightscope.formats._common.archive import (
    StoredMembers,
    check_ratio,
    stored_member_offset,
)
from weightscope.formats.pytorch.machine import Budget
from weightscope.formats.pytorch.records import PickleFormatError, StorageRef
from weightscope.formats.pytorch.unpickler import restricted_load
from weightscope.limits import LimitExceeded, Limits

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_LITERAL = 4096
"""TorchScript constants longer than this are not evaluated (``ast.literal_eval`` recurses, and
runs out of memory on a few hundred KB of nested operators); real ones are a few characters."""


def is_legacy_head(head: bytes) -> bool:
    """A pickle (protocol 2 to 5) whose first object is the legacy magic number."""
    magic = b"\x8a\x0a" + LEGACY_MAGIC.to_bytes(10, "little")
    if len(head) < 16 or head[0] != 0x80 or not 2 <= head[1] <= 5:
        return False
    body = head[11:] if head[1] >= 4 and head[2] == 0x95 else head[2:]  # skip a FRAME opcode
    return body.startswith(magic)


@dataclass
class ClassInfo:
    """What a TorchScript archive's code says of one module class (read as text, never run)."""

    parameters: list[str] = field(default_factory=list)
    buffers: list[str] = field(default_factory=list)
    constants: dict[str, Any] = field(default_factory=dict)


@dataclass
class TorchFile:
    format: str
    root: Any
    storages: dict[str, StorageRef]
    storage_offsets: dict[str, int]
    """File offset of each root storage's first byte."""
    byteorder: str = "little"
    classes: dict[str, ClassInfo] = field(default_factory=dict)
    """TorchScript: qualified class name (``__torch__.torch.nn.modules.conv.Conv2d``) -> info."""
    budget: Budget = field(default_factory=Budget)
    """What unpickling spent, and may still spend turning objects into plain values."""
    notes: list[str] = field(default_factory=list)
    """What the container says that the model's notes should (duplicate zip members)."""


def _is_data_pickle(name: str) -> bool:
    return name == "data.pkl" or (name.endswith("/data.pkl") and name.count("/") == 1)


def is_torch_zip(names: set[str]) -> bool:
    return any(_is_data_pickle(n) for n in names)


_LOWER = bytes.maketrans(bytes(range(65, 91)), bytes(range(97, 123)))


def _raw_name(info: zipfile.ZipInfo) -> bytes:
    """A member's name as the zip stores it (``zipfile`` decodes it, and may alter it)."""
    return info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")


class Members:
    """The members of a torch zip as torch finds them by name. torch's reader (miniz) sorts the
    central directory by name, ASCII letters lowered, with a heap sort, then looks names up by
    binary search: a name is found whatever its case, and among several members of one name
    (a zip may hold two ``archive/data.pkl``) the one found depends on the whole directory,
    neither the first nor the last. ``zipfile.getinfo`` returns the last: reading that one
    would judge a pickle other than the one torch runs."""

    def __init__(self, archive: zipfile.ZipFile) -> None:
        self.infos = archive.infolist()
        self.lowered = [_raw_name(info).translate(_LOWER) for info in self.infos]
        counts: dict[bytes, int] = {}
        for name in self.lowered:
            counts[name] = counts.get(name, 0) + 1
        self.duplicates = {name: count for name, count in counts.items() if count > 1}
        self.index = {name: n for n, name in enumerate(self.lowered)}
        self.order = _miniz_sort(self.lowered) if self.duplicates else []

    def find(self, name: str) -> zipfile.ZipInfo | None:
        """The member torch reads for ``name``, if any."""
        target = name.encode("utf-8").translate(_LOWER)
        if target not in self.duplicates:
            found = self.index.get(target)
            return None if found is None else self.infos[found]
        low, high = 0, len(self.order) - 1
        while low <= high:
            middle = low + ((high - low) >> 1)
            index = self.order[middle]
            entry = self.lowered[index]
            if entry == target:
                return self.infos[index]
            if entry < target:
                low = middle + 1
            else:
                high = middle - 1
        return None  # not reached: the name is in the directory

    def others(self, info: zipfile.ZipInfo) -> list[zipfile.ZipInfo]:
        """Members with the name of ``info`` (up to case) other than ``info``."""
        lowered = _raw_name(info).translate(_LOWER)
        return [
            other
            for other, name in zip(self.infos, self.lowered, strict=True)
            if name == lowered and other is not info
        ]

    def folder(self) -> str | None:
        """The folder torch reads the archive from: the first member's, up to its first
        ``/`` (torch refuses a zip whose first member is in no folder)."""
        if not self.infos or "/" not in self.infos[0].orig_filename:
            return None
        return self.infos[0].orig_filename.split("/", 1)[0] + "/"

    def notes(self) -> list[str]:
        notes = []
        for name, count in list(self.duplicates.items())[:3]:
            shown = short(name.decode("utf-8", "replace"), 60)
            notes.append(
                f"the zip holds {count} members named {shown} (letter case aside); weightscope "
                "reads the one torch reads, which zip tools may not show"
            )
        return notes


def _miniz_sort(names: list[bytes]) -> list[int]:
    """Indices of ``names`` in the order of miniz's heap sort (the order torch's binary search
    sees, equal names included), step for step."""
    order = list(range(len(names)))
    size = len(order)

    def sift(root: int, end: int) -> None:
        while True:
            child = 2 * root + 1
            if child >= end:
                return
            if child + 1 < end and names[order[child]] < names[order[child + 1]]:
                child += 1
            if not names[order[root]] < names[order[child]]:
                return
            order[root], order[child] = order[child], order[root]
            root = child

    for start in range((size - 2) >> 1, -1, -1):
        sift(start, size)
    for end in range(size - 1, 0, -1):
        order[end], order[0] = order[0], order[end]
        sift(0, end)
    return order


def read_zip(path: Path, archive: zipfile.ZipFile, limits: Limits) -> TorchFile:
    members = Members(archive)
    names = [info.filename for info in members.infos]
    folder = members.folder()
    info = members.find(folder + "data.pkl") if folder is not None else None
    if info is None:  # torch would not read it; where a data.pkl is, weightscope still looks
        pickles = [n for n in names if _is_data_pickle(n)]
        info = members.find(pickles[0]) if pickles else None
    if info is None:
        raise file_error(
            UnsupportedFormatError, path, "not a PyTorch checkpoint: zip entry data.pkl missing"
        )
    prefix = info.filename[: -len("data.pkl")]
    byteorder = "little"
    order_info = members.find(prefix + "byteorder")
    if order_info is not None:
        if order_info.file_size > 16:
            raise file_error(CorruptFileError, path, "byteorder entry of more than 16 bytes")
        byteorder = (
            _small_member(path, archive, order_info, limits).decode("ascii", "replace").strip()
        )
        if byteorder not in ("little", "big"):
            raise file_error(CorruptFileError, path, f"unknown byte order {byteorder[:16]!r}")
    storages: dict[str, StorageRef] = {}
    budget = Budget(limits)
    root = restricted_load(_pickle_member(path, archive, info, limits), storages, limits, budget)
    for other in members.others(info):
        _check_other_pickle(path, archive, other, limits)
    offsets = {}
    with StoredMembers(path) as stored:
        for key, storage in storages.items():
            offsets[key] = _storage_offset(path, members, stored, prefix, key, storage)
    is_script = any(n.startswith(prefix + "code/") for n in names)
    classes = _script_classes(path, archive, members, prefix, limits) if is_script else {}
    return TorchFile(
        "torchscript" if is_script else "pytorch-zip",
        root,
        storages,
        offsets,
        byteorder,
        classes,
        budget,
        members.notes(),
    )


def _storage_offset(
    path: Path, members: Members, stored: StoredMembers, prefix: str, key: str, storage: StorageRef
) -> int:
    """Where the bytes of ``storage`` start in the file: its member's data, once that member is
    found to hold all of them."""
    member = f"{prefix}data/{key}"
    member_info = members.find(member)
    if member_info is None:
        raise file_error(CorruptFileError, path, f"zip entry {short(member)} missing")
    needed = storage.numel * storage.storage_type.itemsize
    if member_info.file_size < needed:
        raise file_error(
            CorruptFileError,
            path,
            f"{short(member)} holds {member_info.file_size:,} bytes, its storage needs {needed:,}",
        )
    return stored.offset(member_info)


def _pickle_member(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits
) -> bytes:
    limits.check(
        "max_pickle_bytes",
        info.file_size,
        f"{short(info.filename)} declares {info.file_size:,} bytes",
    )
    return _small_member(path, archive, info, limits)


def _check_other_pickle(
    path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits
) -> None:
    """A second member of the name of the pickle read: another zip reader (another torch
    release) could run it, so a file where it is unsafe is refused as unsafe; anything else
    about it is not weightscope's to judge."""
    with contextlib.suppress(PickleFormatError, LimitExceeded, WeightscopeError):
        restricted_load(_pickle_member(path, archive, info, limits), {}, limits)


def _small_member(
    path: Path,
    archive: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    limits: Limits,
    compressed_ok: bool = False,
) -> bytes:
    """A member read whole, once its declared size is checked (stored: within the file;
    compressed: within ``max_zip_ratio`` of its compressed size), never more than that size
    even if its header lies (``zipfile`` stops there; a zip bomb could hide in a compressed
    one). Torch stores pickles uncompressed; TorchScript compresses its code."""
    name = info.filename
    if info.compress_type == zipfile.ZIP_STORED:
        stored_member_offset(path, info)
    elif compressed_ok:
        check_ratio(info, limits)
    else:
        raise file_error(
            CorruptFileError, path, f"{short(name)} is compressed; torch never compresses"
        )
    with archive.open(info) as member:
        data = member.read(info.file_size + 1)
    if len(data) != info.file_size:
        raise file_error(CorruptFileError, path, f"{short(name)} does not hold its declared size")
    return data


class _Bounded:
    """A file read no further than its size when it was opened: a length in a pickle past the
    end of the file reads short (and is refused), instead of making ``read`` allocate all it
    asks for first."""

    def __init__(self, raw: io.BufferedReader, size: int) -> None:
        self.raw = raw
        self.size = size

    def read(self, count: int = -1) -> bytes:
        left = max(self.size - self.raw.tell(), 0)
        return self.raw.read(left if count is None or count < 0 else min(count, left))

    def readline(self, count: int = -1) -> bytes:
        left = max(self.size - self.raw.tell(), 0)
        return self.raw.readline(left if count is None or count < 0 else min(count, left))

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)


def read_legacy(path: Path, limits: Limits) -> TorchFile:
    """The pre-1.6 stream: magic, protocol, sys_info, the object, storage keys, then per storage
    an int64 element count and its raw bytes. Its five pickles share one budget."""
    size = path.stat().st_size
    budget = Budget(limits)
    with open(path, "rb") as raw:
        stream: Any = _Bounded(raw, size)
        if restricted_load(stream, limits=limits, budget=budget) != LEGACY_MAGIC:
            raise file_error(
                UnsupportedFormatError, path, "not a legacy PyTorch file: bad magic number"
            )
        restricted_load(stream, limits=limits, budget=budget)  # protocol version
        sys_info = restricted_load(stream, limits=limits, budget=budget)
        little = not isinstance(sys_info, dict) or bool(sys_info.get("little_endian", True))
        storages: dict[str, StorageRef] = {}
        root = restricted_load(stream, storages, limits, budget)
        keys = restricted_load(stream, limits=limits, budget=budget)
        if not isinstance(keys, list):
            raise file_error(CorruptFileError, path, "legacy file without its storage list")
        offsets: dict[str, int] = {}
        position = stream.tell()
        for raw_key in keys:
            key = _storage_key(path, raw_key)
            name = short(key, 40)
            stream.seek(position)
            head = stream.read(8)
            if len(head) < 8:
                raise file_error(CorruptFileError, path, f"storage {name} is cut short")
            count = struct.unpack("<q" if little else ">q", head)[0]
            storage = storages.get(key)
            if storage is None:
                raise file_error(CorruptFileError, path, f"storage {name} is listed but never used")
            nbytes = count * storage.storage_type.itemsize
            if count < storage.numel or position + 8 + nbytes > size:
                raise file_error(
                    CorruptFileError, path, f"storage {name} runs past the end of the file"
                )
            offsets[key] = position + 8
            position += 8 + nbytes
    missing = set(storages) - set(offsets)
    if missing:
        raise file_error(
            CorruptFileError, path, f"no data for storage {short(sorted(missing)[0], 40)}"
        )
    byteorder = "little" if little else "big"
    return TorchFile("pytorch-legacy", root, storages, offsets, byteorder, budget=budget)


def _storage_key(path: Path, key: Any) -> str:
    """A key of the legacy storage list (a string; Python 2 files may have written numbers)."""
    if type(key) is int and -(2**63) <= key < 2**64:
        return str(key)
    if type(key) is not str:
        raise file_error(CorruptFileError, path, "a storage key that is not a string")
    return key


_CLASS = re.compile(r"^class (\w+)\(", re.MULTILINE)
_LIST = re.compile(r"^  (__parameters__|__buffers__) = \[(.*?)\]", re.MULTILINE)
_FINAL = re.compile(r"^  (\w+) : Final\[[^\n]*?\] = (.+)$", re.MULTILINE)


def _script_classes(
    path: Path, archive: zipfile.ZipFile, members: Members, prefix: str, limits: Limits
) -> dict[str, ClassInfo]:
    """Parameter and buffer names and constants of each TorchScript class, parsed from the
    archive's code as text (literals only, through ``ast.literal_eval``)."""
    classes: dict[str, ClassInfo] = {}
    code_root = prefix + "code/"
    names = dict.fromkeys(info.filename for info in members.infos)
    code = {}
    for name in names:
        found = members.find(name) if name.startswith(code_root) and name.endswith(".py") else None
        if found is not None:
            code[name] = found
    total = sum(info.file_size for info in code.values())
    limits.check("max_code_bytes", total, f"TorchScript code declares {total:,} bytes")
    for name, member in code.items():
        module = name[len(code_root) : -len(".py")].replace("/", ".")
        data = _small_member(path, archive, member, limits, compressed_ok=True)
        text = data.decode("utf8", "replace")
        starts = [(m.start(), m.group(1)) for m in _CLASS.finditer(text)]
        for index, (start, class_name) in enumerate(starts):
            end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
            body = text[start:end]
            info = ClassInfo()
            for kind, items in _LIST.findall(body):
                names_list = [item.strip().strip('"') for item in items.split(",") if item.strip()]
                if kind == "__parameters__":
                    info.parameters = names_list
                else:
                    info.buffers = names_list
            for attr, value in _FINAL.findall(body):
                constant = _literal(value.strip())
                if constant is not _NOT_LITERAL:
                    info.constants[attr] = constant
            for key, value in _traced_convolution(body).items():
                info.constants.setdefault(key, value)
            classes[f"{module}.{class_name}"] = info
    return classes


_CONVOLUTION_ARGS = ("stride", "padding", "dilation", "transposed", "output_padding", "groups")


def _traced_convolution(body: str) -> dict[str, Any]:
    """Traced modules keep no constants, but their code calls ``torch._convolution(input, weight,
    bias, stride, padding, dilation, transposed, output_padding, groups, ...)`` with literals."""
    start = body.find("torch._convolution(")
    if start < 0:
        return {}
    depth = 0
    args: list[str] = []
    current: list[str] = []
    for char in body[start + len("torch._convolution(") :]:
        if char in "([":
            depth += 1
        elif char in ")]":
            if depth == 0:
                args.append("".join(current).strip())
                break
            depth -= 1
        elif char == "," and depth == 0:
            args.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    found: dict[str, Any] = {}
    for name, text in zip(_CONVOLUTION_ARGS, args[3:9], strict=False):
        constant = _literal(text)
        if constant is not _NOT_LITERAL:
            found[name] = constant
    return found


_NOT_LITERAL = object()


def _literal(text: str) -> Any:
    """``ast.literal_eval(text)`` for short literals, else ``_NOT_LITERAL``."""
    if len(text) > MAX_LITERAL:
        return _NOT_LITERAL
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _NOT_LITERAL
