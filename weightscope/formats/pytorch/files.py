"""PyTorch containers: where the pickle and each storage's bytes are in a zip-format file, a
TorchScript archive, or a legacy (pre-1.6) pickle stream."""

from __future__ import annotations

import ast
import io
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightscope.errors import CorruptFileError, UnsupportedFormatError, file_error, short
from weightscope.formats._common.archive import check_ratio, stored_member_offset
from weightscope.formats.pytorch.unpickler import StorageRef, restricted_load
from weightscope.limits import Limits

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


def _is_data_pickle(name: str) -> bool:
    return name == "data.pkl" or (name.endswith("/data.pkl") and name.count("/") == 1)


def is_torch_zip(names: set[str]) -> bool:
    return any(_is_data_pickle(n) for n in names)


def read_zip(path: Path, archive: zipfile.ZipFile, limits: Limits) -> TorchFile:
    names = archive.namelist()
    pickles = [
        n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)
    ]
    if not pickles:
        raise file_error(
            UnsupportedFormatError, path, "not a PyTorch checkpoint: zip entry data.pkl missing"
        )
    prefix = pickles[0][: -len("data.pkl")]
    info = archive.getinfo(pickles[0])
    byteorder = "little"
    if prefix + "byteorder" in names:
        order_info = archive.getinfo(prefix + "byteorder")
        if order_info.file_size > 16:
            raise file_error(CorruptFileError, path, "byteorder entry of more than 16 bytes")
        byteorder = (
            _small_member(path, archive, prefix + "byteorder", limits)
            .decode("ascii", "replace")
            .strip()
        )
        if byteorder not in ("little", "big"):
            raise file_error(CorruptFileError, path, f"unknown byte order {byteorder[:16]!r}")
    storages: dict[str, StorageRef] = {}
    limits.check(
        "max_pickle_bytes",
        info.file_size,
        f"{short(info.filename)} declares {info.file_size:,} bytes",
    )
    pickle_bytes = _small_member(path, archive, info.filename, limits)
    root = restricted_load(io.BytesIO(pickle_bytes), storages, limits)
    offsets = {}
    for key, storage in storages.items():
        member = f"{prefix}data/{key}"
        try:
            member_info = archive.getinfo(member)
        except KeyError:
            raise file_error(CorruptFileError, path, f"zip entry {short(member)} missing") from None
        needed = storage.numel * storage.storage_type.itemsize
        if member_info.file_size < needed:
            raise file_error(
                CorruptFileError,
                path,
                f"{short(member)} holds {member_info.file_size:,} bytes, its storage needs "
                f"{needed:,}",
            )
        offsets[key] = stored_member_offset(path, member_info)
    is_script = any(n.startswith(prefix + "code/") for n in names)
    classes = _script_classes(path, archive, prefix, names, limits) if is_script else {}
    return TorchFile(
        "torchscript" if is_script else "pytorch-zip", root, storages, offsets, byteorder, classes
    )


def _small_member(
    path: Path, archive: zipfile.ZipFile, name: str, limits: Limits, compressed_ok: bool = False
) -> bytes:
    """A member read whole, once its declared size is checked (stored: within the file;
    compressed: within ``max_zip_ratio`` of its compressed size), never more than that size
    even if its header lies (``zipfile`` stops there; a zip bomb could hide in a compressed
    one). Torch stores pickles uncompressed; TorchScript compresses its code."""
    info = archive.getinfo(name)
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
    an int64 element count and its raw bytes."""
    size = path.stat().st_size
    with open(path, "rb") as raw:
        stream: Any = _Bounded(raw, size)
        if restricted_load(stream, limits=limits) != LEGACY_MAGIC:
            raise file_error(
                UnsupportedFormatError, path, "not a legacy PyTorch file: bad magic number"
            )
        restricted_load(stream, limits=limits)  # protocol version
        sys_info = restricted_load(stream, limits=limits)
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        storages: dict[str, StorageRef] = {}
        root = restricted_load(stream, storages, limits)
        keys = restricted_load(stream, limits=limits)
        if not isinstance(keys, list):
            raise file_error(CorruptFileError, path, "legacy file without its storage list")
        offsets: dict[str, int] = {}
        position = stream.tell()
        for key in keys:
            name = short(key, 40)
            stream.seek(position)
            head = stream.read(8)
            if len(head) < 8:
                raise file_error(CorruptFileError, path, f"storage {name} is cut short")
            count = struct.unpack("<q" if little else ">q", head)[0]
            storage = storages.get(str(key))
            if storage is None:
                raise file_error(CorruptFileError, path, f"storage {name} is listed but never used")
            nbytes = count * storage.storage_type.itemsize
            if count < storage.numel or position + 8 + nbytes > size:
                raise file_error(
                    CorruptFileError, path, f"storage {name} runs past the end of the file"
                )
            offsets[str(key)] = position + 8
            position += 8 + nbytes
    missing = set(storages) - set(offsets)
    if missing:
        raise file_error(
            CorruptFileError, path, f"no data for storage {short(sorted(missing)[0], 40)}"
        )
    return TorchFile("pytorch-legacy", root, storages, offsets, "little" if little else "big")


_CLASS = re.compile(r"^class (\w+)\(", re.MULTILINE)
_LIST = re.compile(r"^  (__parameters__|__buffers__) = \[(.*?)\]", re.MULTILINE)
_FINAL = re.compile(r"^  (\w+) : Final\[[^\n]*?\] = (.+)$", re.MULTILINE)


def _script_classes(
    path: Path, archive: zipfile.ZipFile, prefix: str, names: list[str], limits: Limits
) -> dict[str, ClassInfo]:
    """Parameter and buffer names and constants of each TorchScript class, parsed from the
    archive's code as text (literals only, through ``ast.literal_eval``)."""
    classes: dict[str, ClassInfo] = {}
    code_root = prefix + "code/"
    code = [n for n in names if n.startswith(code_root) and n.endswith(".py")]
    total = sum(archive.getinfo(name).file_size for name in code)
    limits.check("max_code_bytes", total, f"TorchScript code declares {total:,} bytes")
    for name in code:
        module = name[len(code_root) : -len(".py")].replace("/", ".")
        data = _small_member(path, archive, name, limits, compressed_ok=True)
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
