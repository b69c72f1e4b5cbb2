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

from weightscope.adapters._torch_pickle import StorageRef, restricted_load
from weightscope.adapters._zip import stored_member_offset
from weightscope.errors import CorruptFileError, file_error

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
MAX_PICKLE_BYTES = 1 << 30
MAX_CODE_BYTES = 64 << 20


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


def read_zip(path: Path) -> TorchFile:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [
            n for n in names if n == "data.pkl" or (n.endswith("/data.pkl") and n.count("/") == 1)
        ]
        if not pickles:
            raise file_error(
                CorruptFileError, path, "not a PyTorch checkpoint: zip entry data.pkl missing"
            )
        prefix = pickles[0][: -len("data.pkl")]
        info = archive.getinfo(pickles[0])
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = (
                _small_member(path, archive, prefix + "byteorder", 16)
                .decode("ascii", "replace")
                .strip()
            )
            if byteorder not in ("little", "big"):
                raise file_error(CorruptFileError, path, f"unknown byte order {byteorder[:16]!r}")
        storages: dict[str, StorageRef] = {}
        root = restricted_load(
            io.BytesIO(_small_member(path, archive, info.filename, MAX_PICKLE_BYTES)), storages
        )
        offsets = {}
        for key, storage in storages.items():
            member = f"{prefix}data/{key}"
            try:
                member_info = archive.getinfo(member)
            except KeyError:
                raise file_error(CorruptFileError, path, f"zip entry {member} missing") from None
            needed = storage.numel * storage.storage_type.itemsize
            if member_info.file_size < needed:
                raise file_error(
                    CorruptFileError,
                    path,
                    f"{member} holds {member_info.file_size:,} bytes, its storage needs {needed:,}",
                )
            offsets[key] = stored_member_offset(path, member_info)
        is_script = any(n.startswith(prefix + "code/") for n in names)
        classes = _script_classes(path, archive, prefix, names) if is_script else {}
    return TorchFile(
        "torchscript" if is_script else "pytorch-zip", root, storages, offsets, byteorder, classes
    )


def _small_member(
    path: Path, archive: zipfile.ZipFile, name: str, limit: int, compressed_ok: bool = False
) -> bytes:
    """A member read whole, never more than ``limit`` bytes even if its header lies (a zip
    bomb could hide in a compressed one). Torch stores pickles uncompressed; TorchScript
    compresses its code."""
    info = archive.getinfo(name)
    if info.compress_type != zipfile.ZIP_STORED and not compressed_ok:
        raise file_error(CorruptFileError, path, f"{name} is compressed; torch never compresses")
    if info.file_size > limit:
        raise file_error(CorruptFileError, path, f"{name} declares {info.file_size:,} bytes")
    with archive.open(info) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise file_error(CorruptFileError, path, f"{name} expands past {limit:,} bytes")
    return data


def read_legacy(path: Path) -> TorchFile:
    """The pre-1.6 stream: magic, protocol, sys_info, the object, storage keys, then per storage
    an int64 element count and its raw bytes."""
    with open(path, "rb") as stream:
        if restricted_load(stream) != LEGACY_MAGIC:
            raise file_error(CorruptFileError, path, "not a legacy PyTorch file: bad magic number")
        restricted_load(stream)  # protocol version
        sys_info = restricted_load(stream)
        little = not isinstance(sys_info, dict) or sys_info.get("little_endian", True)
        storages: dict[str, StorageRef] = {}
        root = restricted_load(stream, storages)
        keys = restricted_load(stream)
        if not isinstance(keys, list):
            raise file_error(CorruptFileError, path, "legacy file without its storage list")
        offsets: dict[str, int] = {}
        position = stream.tell()
        size = path.stat().st_size
        for key in keys:
            stream.seek(position)
            head = stream.read(8)
            if len(head) < 8:
                raise file_error(CorruptFileError, path, f"storage {key} is cut short")
            count = struct.unpack("<q" if little else ">q", head)[0]
            storage = storages.get(str(key))
            if storage is None:
                raise file_error(CorruptFileError, path, f"storage {key} is listed but never used")
            nbytes = count * storage.storage_type.itemsize
            if count < storage.numel or position + 8 + nbytes > size:
                raise file_error(
                    CorruptFileError, path, f"storage {key} runs past the end of the file"
                )
            offsets[str(key)] = position + 8
            position += 8 + nbytes
    missing = set(storages) - set(offsets)
    if missing:
        raise file_error(CorruptFileError, path, f"no data for storage {sorted(missing)[0]}")
    return TorchFile("pytorch-legacy", root, storages, offsets, "little" if little else "big")


_CLASS = re.compile(r"^class (\w+)\(", re.MULTILINE)
_LIST = re.compile(r"^  (__parameters__|__buffers__) = \[(.*?)\]", re.MULTILINE)
_FINAL = re.compile(r"^  (\w+) : Final\[[^\n]*?\] = (.+)$", re.MULTILINE)


def _script_classes(
    path: Path, archive: zipfile.ZipFile, prefix: str, names: list[str]
) -> dict[str, ClassInfo]:
    """Parameter and buffer names and constants of each TorchScript class, parsed from the
    archive's code as text (literals only, through ``ast.literal_eval``)."""
    classes: dict[str, ClassInfo] = {}
    code_root = prefix + "code/"
    budget = MAX_CODE_BYTES
    for name in names:
        if not (name.startswith(code_root) and name.endswith(".py")):
            continue
        module = name[len(code_root) : -len(".py")].replace("/", ".")
        data = _small_member(path, archive, name, budget, compressed_ok=True)
        budget -= len(data)
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
                try:
                    info.constants[attr] = ast.literal_eval(value.strip())
                except (ValueError, SyntaxError):
                    continue
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
        try:
            found[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            continue
    return found
