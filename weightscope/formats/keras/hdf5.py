"""h5py helpers shared by the HDF5-based readers: lazy tensor sources and Keras-style attributes."""

from __future__ import annotations

import io
import math
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from weightscope.chunking import iter_slabs, slab_shape
from weightscope.dtypes import bfloat16_to_float32
from weightscope.errors import CorruptFileError, UnsafeFileError, file_error, short
from weightscope.limits import DEFAULT, LimitExceeded, Limits, limit_error
from weightscope.stats import Scratch, TensorStats, compute_stats, reduce_slabs


@dataclass(frozen=True)
class Origin:
    """The file HDF5 datasets were found in: its path and the format it is (as error lines name
    them), and the limits it was loaded with (which its tensors keep when read later)."""

    path: Path
    looked_like: str
    limits: Limits
    fileno: Any = None
    """HDF5's number of the open file, to tell its datasets from those of files it links to."""


DEFLATE_MAX_RATIO = 1032
"""The most a deflate stream inflates: 258 bytes from each 2-bit code, about 1032 to 1."""
CHUNK_SLACK = 64
"""What a chunk's filters may add to its bytes before deflate reads them (fletcher32's 4)."""


def inflated_size(stored: bytes, mask: int, filters: list[Any], cap: int) -> int | None:
    """How many bytes the deflate filter makes of a stored chunk (at most ``cap + 1``: inflating
    stops there), undoing first the filters applied after deflate when it was written (HDF5
    reads a pipeline backwards; ``mask`` has a bit set for each filter the chunk skipped).
    Fletcher32 drops its checksum, shuffle is undone; any other filter before deflate (in the
    reading order) gives None: the size cannot be told. A stream that does not inflate is
    HDF5's to report: 0."""
    data = stored
    for index in reversed(range(len(filters))):
        if mask & (1 << index):
            continue
        code, _flags, values, _name = filters[index]
        if code == h5py.h5z.FILTER_FLETCHER32:
            data = data[:-4]
        elif code == h5py.h5z.FILTER_SHUFFLE:
            size = int(values[0]) if len(values) else 1
            count = len(data) // max(size, 1)
            planes = np.frombuffer(data, np.uint8, count * size).reshape(size, count)
            data = planes.T.tobytes() + data[count * size :]
        elif code == h5py.h5z.FILTER_DEFLATE:
            try:
                return len(zlib.decompressobj().decompress(data, cap + 1))
            except zlib.error:
                return 0
        else:
            return None
    return len(data)


def each_chunk(dataset: Any, visit: Any) -> None:
    """``visit(info)`` for every chunk of the chunked dataset (a ``DatasetID``) in one walk of
    its index (``info`` has ``chunk_offset``, ``filter_mask``, ``byte_offset`` and ``size``)."""
    iterate = getattr(dataset, "chunk_iter", None)
    if iterate is not None:
        iterate(visit)
        return
    for index in range(dataset.get_num_chunks()):  # h5py before 3.8: slower, same answers
        visit(dataset.get_chunk_info(index))


class H5DatasetSource:
    """Reads one HDF5 dataset on demand, whole or in slabs of bounded size."""

    def __init__(self, dataset: h5py.Dataset, origin: Origin | Path) -> None:
        """``origin`` says where ``dataset`` comes from; a bare path stands for an HDF5 file
        read with the default limits."""
        if not isinstance(origin, Origin):
            origin = Origin(Path(origin), "HDF5 file", DEFAULT, dataset.file.id.fileno)
        self._dataset = dataset
        self._origin = origin
        self._path = origin.path
        # Keras 3 stores bfloat16 as 2-byte opaque (or integer) data tagged with a dtype attribute.
        self.is_bfloat16 = (
            dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16") and dataset.dtype.itemsize == 2
        )
        self._checked = False

    @property
    def dtype_name(self) -> str:
        return "bfloat16" if self.is_bfloat16 else str(self._dataset.dtype)

    def _check_readable(self) -> None:
        """Refuse non-numeric data, shapes the file cannot back and chunks too large to
        decompress, before allocating anything (once: a dataset passed stays passed)."""
        if not self._checked:
            self._check_values()
            self._checked = True

    def _check_values(self) -> None:
        dataset = self._dataset
        if dataset.dtype.kind not in "fiub" and not self.is_bfloat16:
            raise file_error(
                CorruptFileError,
                self._path,
                f"dataset {dataset.name} holds {dataset.dtype} values, not numbers",
                self._origin.looked_like,
            )
        self._check_in_file()
        self._check_chunks()
        limits = self._origin.limits
        declared = int(dataset.size) * dataset.dtype.itemsize
        if declared <= limits.hdf5_checked_above:
            return
        stored = int(dataset.id.get_storage_size())
        if stored * limits.max_hdf5_expansion >= declared:
            return
        what = (
            f"dataset {dataset.name} declares shape {dataset.shape} ({declared:,} bytes) but the "
            f"file stores {stored:,} bytes for it"
        )
        exceeded = (
            LimitExceeded("hdf5_checked_above", limits.hdf5_checked_above, declared, what)
            if stored == 0  # no expansion ratio lets it through: only not checking it does
            else LimitExceeded(
                "max_hdf5_expansion", limits.max_hdf5_expansion, -(-declared // stored), what
            )
        )
        raise limit_error(self._path, exceeded)

    def _check_chunks(self) -> None:
        """HDF5 decompresses a whole chunk to read any part of it: a chunk's declared size is
        what reading one value may cost, whatever the dataset's shape (4 x 3 values can sit in
        a chunk of 2**14 x 2**14, a GiB), so it is bounded by ``max_hdf5_chunk_bytes``. And its
        deflate filter keeps inflating a chunk past its declared size, to whatever the stream
        holds: a chunk whose stored bytes could inflate past that limit is inflated here first,
        the output capped at its declared size, and refused if it holds more."""
        dataset = self._dataset
        chunks = dataset.chunks
        if chunks is None:
            return
        limits = self._origin.limits
        chunk_bytes = math.prod(chunks) * dataset.dtype.itemsize
        if chunk_bytes > limits.max_hdf5_chunk_bytes:
            larger = ", larger than the dataset" if chunk_bytes > dataset.nbytes else ""
            what = (
                f"dataset {dataset.name} of shape {dataset.shape} is stored in chunks of shape "
                f"{chunks} ({chunk_bytes:,} bytes each{larger})"
            )
            raise limit_error(
                self._path,
                LimitExceeded(
                    "max_hdf5_chunk_bytes", limits.max_hdf5_chunk_bytes, chunk_bytes, what
                ),
            )
        plist = dataset.id.get_create_plist()
        filters = [plist.get_filter(index) for index in range(plist.get_nfilters())]
        if any(code == h5py.h5z.FILTER_DEFLATE for code, *_ in filters):
            self._check_inflation(chunk_bytes, filters)

    def _check_inflation(self, chunk_bytes: int, filters: list[Any]) -> None:
        dataset = self._dataset
        limit = self._origin.limits.max_hdf5_chunk_bytes
        suspects: list[tuple[int, ...]] = []

        def visit(info: Any) -> None:
            if info.size * DEFLATE_MAX_RATIO > limit:  # could inflate past the limit
                suspects.append(tuple(info.chunk_offset))

        try:
            each_chunk(dataset.id, visit)
            for offset in suspects:
                mask, stored = dataset.id.read_direct_chunk(offset)
                inflated = inflated_size(stored, mask, filters, chunk_bytes + CHUNK_SLACK)
                if inflated is None or inflated > chunk_bytes + CHUNK_SLACK:
                    break
            else:
                return
        except (OSError, ValueError, TypeError, RuntimeError) as exc:
            raise self._read_error(exc) from exc
        problem = (
            f"chunk {offset} of dataset {dataset.name} inflates past its {chunk_bytes:,} bytes"
            if inflated is not None
            else f"dataset {dataset.name} is deflated under another filter: cannot tell how "
            "far its chunks inflate"
        )
        raise file_error(CorruptFileError, self._path, problem, self._origin.looked_like)

    def _check_in_file(self) -> None:
        """Refuse data kept outside the file: raw data in external files, virtual datasets
        mapping other files, and datasets of another file reached through an external link.
        HDF5 would read any file on the machine for them (as ONNX external data outside the
        model's folder is refused)."""
        dataset = self._dataset
        where = None
        if dataset.id.get_create_plist().get_external_count() > 0:
            where = "in external raw data files"
        elif dataset.is_virtual:
            where = "in other files (a virtual dataset)"
        elif self._origin.fileno is not None and dataset.id.fileno != self._origin.fileno:
            where = "in another HDF5 file (reached through an external link)"
        if where is not None:
            raise file_error(
                UnsafeFileError,
                self._path,
                f"dataset {dataset.name} keeps its data {where}: refused (weightscope reads only "
                "the file it is given)",
            )

    def _read(self, selection: tuple[slice, ...] | tuple[()]) -> np.ndarray:
        try:
            data = np.asarray(self._dataset[selection])
        except (OSError, ValueError, TypeError) as exc:
            raise self._read_error(exc) from exc
        if self.is_bfloat16:
            return bfloat16_to_float32(data)
        return data

    def _read_error(self, exc: BaseException) -> Exception:
        return file_error(
            CorruptFileError,
            self._path,
            f"cannot read dataset {self._dataset.name}: {exc}",
            self._origin.looked_like,
        )

    def read(self) -> np.ndarray:
        self._check_readable()
        return self._read(())

    def chunks(self, max_elements: int) -> Iterator[np.ndarray]:
        self._check_readable()
        for slab in iter_slabs(self._dataset.shape, max_elements):
            yield self._read(slab)

    def stats(self, max_elements: int) -> TensorStats:
        """Statistics read in slabs of at most ``max_elements`` into reused buffers, on a few
        threads (see :func:`weightscope.stats.reduce_slabs`)."""
        self._check_readable()
        dtype = self._dataset.dtype
        if not (self.is_bfloat16 or dtype.kind == "f"):
            return compute_stats(self.chunks(max_elements))
        buffer_dtype = dtype.newbyteorder("=")  # HDF5 swaps bytes as it reads, if need be

        def read(slab: tuple[slice, ...], scratch: Scratch) -> np.ndarray:
            return self._read_slab(slab, scratch, buffer_dtype)

        return reduce_slabs(list(iter_slabs(self._dataset.shape, max_elements)), read)

    def _read_slab(
        self, slab: tuple[slice, ...], scratch: Scratch, buffer_dtype: np.dtype[Any]
    ) -> np.ndarray:
        """One slab's values as float32/64 (float16 as stored), in ``scratch``'s buffers."""
        shape = slab_shape(slab, self._dataset.shape)
        size = int(np.prod(shape))
        raw = scratch.get("read", size, buffer_dtype)
        try:
            self._dataset.read_direct(raw.reshape(shape), source_sel=slab or None)
        except (OSError, ValueError, TypeError) as exc:
            raise self._read_error(exc) from exc
        if not self.is_bfloat16:
            return raw
        widened = scratch.get("bfloat16", size, np.uint32)
        np.left_shift(raw.view(np.uint16), 16, out=widened, dtype=np.uint32)
        return widened.view(np.float32)


NOT_FOLLOWED = "refused (weightscope follows no links and reads only the file it is given)"


class ForeignLink(Exception):
    """An external link met where a reader looks: it would open another file (HDF5 opens a FIFO
    it names and waits for a writer for ever). Weightscope follows none; the reader turns this
    into an ``UnsafeFileError`` naming the file."""


@dataclass(frozen=True)
class Link:
    """One link of a group, read without following it. Only hard links are followed: Keras
    writes no other kind."""

    kind: str
    """``hard``, ``soft``, ``external`` or ``user-defined``."""
    where: str
    """The link's path in the file."""
    target: str
    """Where it leads, as the file says."""

    def __str__(self) -> str:
        article = "an" if self.kind[0] in "aeiou" else "a"
        return f"{short(self.where)} is {article} {self.kind} link to {short(self.target)}"


_LINK_KINDS = {
    h5py.h5l.TYPE_HARD: "hard",
    h5py.h5l.TYPE_SOFT: "soft",
    h5py.h5l.TYPE_EXTERNAL: "external",
}


def _join(group: h5py.Group, name: str) -> str:
    base = group.name or "/"
    return f"{base.rstrip('/')}/{name}"


def link_to(group: h5py.Group, name: str) -> Link | None:
    """The link ``name`` (one name, no ``/``) of ``group``, read without following it; None when
    there is no such link."""
    if not name or "/" in name:
        return None
    try:
        encoded = name.encode("utf8")
        kind = group.id.links.get_info(encoded).type
    except (KeyError, OSError, RuntimeError, ValueError, UnicodeEncodeError):  # missing, damaged
        return None
    if kind == h5py.h5l.TYPE_HARD:
        return Link("hard", _join(group, name), "")
    try:
        value = group.id.links.get_val(encoded)
    except (KeyError, OSError, RuntimeError, ValueError, TypeError):
        value = b"?"
    if isinstance(value, tuple):  # (file, path in it) of an external link
        target = ":".join(part.decode("utf8", "replace") for part in value)
    else:
        target = value.decode("utf8", "replace") if isinstance(value, bytes) else str(value)
    return Link(_LINK_KINDS.get(kind, "user-defined"), _join(group, name), target)


def hard_child(group: h5py.Group, name: str) -> Any:
    """The object ``name`` in ``group`` if a hard link leads to it, else None: a soft link is not
    followed. An external link raises :class:`ForeignLink` (it would open another file)."""
    link = link_to(group, name)
    if link is None or link.kind == "soft":
        return None
    if link.kind != "hard":
        raise ForeignLink(f"{link}: {NOT_FOLLOWED}")
    try:
        return group[name]
    except (KeyError, OSError, RuntimeError, ValueError):  # a hard link to a damaged object
        return None


def hard_path(group: h5py.Group, path: str) -> tuple[Any, Link | None]:
    """Follow ``path`` (names separated by ``/``, from the file's root when it starts with one)
    from ``group`` through hard links only: ``(object, None)``; ``(None, None)`` when a name on
    the way is missing; ``(None, link)`` at the first soft, external or user-defined link, which
    is not followed."""
    if not path:
        return None, None
    node: Any = group.file["/"] if path.startswith("/") else group
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if not isinstance(node, h5py.Group):
            return None, None
        link = link_to(node, name)
        if link is None:
            return None, None
        if link.kind != "hard":
            return None, link
        node = hard_child(node, name)
        if node is None:
            return None, None
    return node, None


def has_link(group: h5py.Group, name: str) -> bool:
    """Whether ``group`` has a link ``name``, of any kind (not followed)."""
    return link_to(group, name) is not None


def refuse_link(path: Path, what: str, link: Link) -> Exception:
    """The one-line error for a link a reader was sent to: ``what`` says who sent it there."""
    if link.kind == "soft":
        return file_error(
            CorruptFileError, path, f"{what}: {link}, not followed (Keras writes no links)"
        )
    return file_error(UnsafeFileError, path, f"{what}: {link}: {NOT_FOLLOWED}")


def hard_children(group: h5py.Group, skip: frozenset[str] = frozenset()) -> list[tuple[str, Any]]:
    """``group``'s members reached through hard links, in name order, but those named in
    ``skip``: soft links are passed over; an external link raises :class:`ForeignLink`."""
    children = []
    for name in group:
        if name in skip:
            continue
        child = hard_child(group, name)
        if child is not None:
            children.append((name, child))
    return children


def address(obj: h5py.HLObject) -> int:
    """Where an object's header lies in the file (which identifies it)."""
    try:
        return int(h5py.h5o.get_info(obj.id).addr)
    except (AttributeError, OSError, ValueError):
        return 0


def group_depth(group: h5py.Group) -> int:
    """How many groups deep ``group`` lies below the file's root (the root is 0)."""
    name = group.name or "/"
    return 0 if name == "/" else name.count("/")


def check_depth(depth: int, max_depth: int) -> None:
    """Refuse groups nested past ``max_nesting``: walking them is a step of recursion per level
    here, and HDF5's own recursive visit overflows the C stack some 10,000 levels down."""
    if depth > max_depth:
        raise LimitExceeded(
            "max_nesting", max_depth, depth, f"HDF5 groups nested more than {max_depth} deep"
        )


def datasets_under(group: h5py.Group, max_depth: int) -> list[tuple[str, h5py.Dataset]]:
    """Every dataset below ``group`` and its path from there, in the order of h5py's
    ``visititems`` (depth first, by name), each object once, through hard links only. Walked
    with a stack, not by HDF5's recursive visit; groups more than ``max_depth`` deep below the
    file's root raise ``LimitExceeded`` (``max_nesting``)."""
    found: list[tuple[str, h5py.Dataset]] = []
    seen: set[int] = {address(group)}
    base = group_depth(group)
    stack: list[tuple[str, Any, int]] = [
        (name, child, base + 1) for name, child in reversed(hard_children(group))
    ]
    while stack:
        path, obj, depth = stack.pop()
        where = address(obj)
        if where and where in seen:
            continue
        seen.add(where)
        if isinstance(obj, h5py.Dataset):
            found.append((path, obj))
        elif isinstance(obj, h5py.Group):
            check_depth(depth, max_depth)
            children = hard_children(obj)
            stack.extend((f"{path}/{name}", child, depth + 1) for name, child in reversed(children))
    return found


ATTRIBUTES_READ = ("model_config", "keras_version", "layer_names", "weight_names", "name", "dtype")
"""Every attribute the Keras readers read (``layer_names`` and ``weight_names`` also in Keras'
chunked form ``layer_names0``, ``layer_names1``, ...). The child that rehearses a file's reading
(``hdf5_guard``) reads these on every object: a reader that reads another must name it here."""

UNREAD_ROOT_GROUPS = frozenset({"optimizer", "optimizer_weights"})
"""Groups at a file's root that hold training state no reader reads (Keras 3 stores, legacy
``.h5`` files)."""


def string_list_attr(obj: h5py.HLObject, name: str) -> list[str] | None:
    """A list-of-strings attribute as Keras writes it, including the chunked ``name0..N`` form.

    Keras splits attributes over HDF5's 64 KB header limit into ``name0``, ``name1``, ...
    Returns None when the attribute is absent.
    """
    attrs = obj.attrs
    if name in attrs:
        return _decode_list(attrs[name])
    if f"{name}0" not in attrs:
        return None
    values: list[str] = []
    index = 0
    while f"{name}{index}" in attrs:
        values.extend(_decode_list(attrs[f"{name}{index}"]))
        index += 1
    return values


def _decode_list(value: Any) -> list[str]:
    array = np.atleast_1d(np.asarray(value))
    if array.size == 0:
        return []
    return [item.decode("utf8") if isinstance(item, bytes) else str(item) for item in array.ravel()]


def text_attr(obj: h5py.HLObject, name: str) -> str | None:
    value = obj.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf8")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
        return value.decode("utf8") if isinstance(value, bytes) else str(value)
    return str(value)


class FileSlice(io.RawIOBase):
    """A read-only window ``[start, start + length)`` of a file, so that h5py can open a stored
    zip member in place, without extracting it."""

    def __init__(self, path: Path, start: int, length: int) -> None:
        super().__init__()
        self.path = path
        self.start = start
        self.length = length
        self._file: io.BufferedReader = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self.length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self.length - self._pos))
        if count == 0:
            return 0
        self._file.seek(self.start + self._pos)
        got = self._file.readinto(view[:count]) or 0
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._file.close()
        super().close()
