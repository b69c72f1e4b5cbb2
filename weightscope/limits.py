"""Resource limits of the readers, in one place.

A model file is input from anywhere: its headers may declare sizes, counts and nestings it does
not hold, to make a reader allocate, loop or recurse without end. Two kinds of protection stand
between a file and the machine:

- *consistency checks*, which are not limits and cannot be lifted: a size, offset or shape a
  header declares must fit in the bytes the file really holds (a safetensors tensor inside the
  file, a torch storage inside its zip member, an ONNX tensor's dims times its item size equal to
  its bytes) before anything is allocated for it;
- *limits*, gathered here: bounds on what a well-formed file could legitimately ask for but a
  hostile one uses to exhaust memory, disk, time or the stack (a zip member that inflates
  a thousandfold, a pickle nested 100,000 deep). Each has a default no real model reaches.

A file over a limit is refused with one line naming the limit and how to raise it
(``--limit NAME=VALUE`` on the command line, ``weightscope.load(path, limits=Limits(NAME=...))``
in Python); a few limits instead stop a search early and say so in the model's notes.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightscope.errors import LimitError, printable

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def _size(default: int, minimum: int = 0) -> Any:
    return field(default=default, metadata={"unit": "bytes", "minimum": minimum})


def _count(default: int, minimum: int = 0) -> Any:
    return field(default=default, metadata={"unit": "count", "minimum": minimum})


def _seconds(default: int) -> Any:
    return field(default=default, metadata={"unit": "seconds"})


@dataclass(frozen=True)
class Limits:
    """Bounds on what reading one model file may cost. ``Limits()`` holds the defaults; change
    one with ``Limits(max_json_bytes=128 * 2**20)`` or ``limits.replace(max_json_bytes=...)``."""

    max_json_bytes: int = _size(64 * MiB)
    """Keras: the largest ``config.json`` / ``metadata.json`` of a ``.keras`` archive (checked
    against the size the zip declares, then against what decompression really yields) and the
    largest ``model_config`` / ``training_config`` attribute of an ``.h5``. Configs are a few
    hundred KB even for large models; a deflated member can expand a thousandfold."""

    max_json_depth: int = _count(128)
    """Deepest nesting of arrays and objects in a JSON text (Keras configs, the header of a
    ``.safetensors`` file), checked before it is parsed. Real configs nest about 8 deep plus 4 per
    nested model; the parser, and whatever walks the result, recurse once per level."""

    max_extracted_bytes: int = _size(4 * GiB)
    """Keras: the largest ``model.weights.h5`` that is extracted from a compressed ``.keras``
    archive to a temporary file (Keras stores it uncompressed, and then it is read in place). The
    size the zip declares is checked before extracting, and extraction never writes more."""

    max_zip_ratio: int = _count(1024)
    """Largest ratio of the declared (uncompressed) size of a zip member to its compressed size,
    for the members weightscope decompresses (``.keras`` configs and weights, TorchScript code).
    Deflate cannot exceed about 1032; a higher claim is a zip bomb or a lying header."""

    hdf5_checked_above: int = _size(64 * MiB)
    """HDF5 datasets (Keras) declaring more bytes than this are compared with the bytes the file
    stores for them (``max_hdf5_expansion``) before any is read. Smaller ones are read as
    declared: HDF5 fills unwritten chunks with a fill value, so a small dataset may be unbacked."""

    max_hdf5_expansion: int = _count(1024)
    """How many times the bytes the file stores for a dataset (compressed chunks included) it may
    declare, above ``hdf5_checked_above``. HDF5's deflate stays under about 1032."""

    max_hdf5_chunk_bytes: int = _size(64 * MiB)
    """HDF5 (Keras): the largest chunk a dataset may be stored in. HDF5 decompresses a whole
    chunk to read any value of it, so a chunk is what reading costs, whatever the dataset's
    shape: 4 x 3 values can be declared in one chunk of 2**14 x 2**14 (a GiB, from a file of
    1 MB). Keras writes no chunks; HDF5 advises chunks of about 1 MB. A deflated chunk that could
    inflate past this is also checked not to inflate past its declared size."""

    max_hdf5_seconds: int = _seconds(3)
    """HDF5 (Keras): longest the HDF5 library may go without finishing a step of reading a
    file's structure (opening it, one object's links and attributes, one stretch of a chunk
    index). That reading is first done in a child process, which is stopped once a step takes
    longer: damaged metadata can make the library loop for ever inside one call, where nothing
    else could stop it. A large file is never refused for its size, only for a stalled step."""

    max_safetensors_header_bytes: int = _size(100 * MiB)
    """Largest JSON header of a ``.safetensors`` file (the format's own readers refuse over
    100 MB). It must also lie within the file."""

    max_npy_header_bytes: int = _size(16 * KiB)
    """NumPy ``.npy`` files and the members of ``.npz`` archives: the largest header (the dict
    naming dtype, shape and order, read as a Python literal), checked before it is read. NumPy
    writes about 128 bytes and ``np.load`` refuses over 10,000; format 2.0 can declare 4 GiB.
    It must also lie within the file or member."""

    max_pickle_bytes: int = _size(1 * GiB)
    """PyTorch: the largest pickle (``data.pkl`` of a zip checkpoint, the object stream of a
    legacy one). It holds names and shapes, never tensor data: a few MB for the largest models.
    A pickle is unpickled in memory."""

    max_pickle_expansion: int = _count(64)
    """PyTorch: how many bytes of memory (estimated) unpickling may build per byte of pickle,
    plus 1 MiB: each object built, each element added to a container (when it is added, so a
    container stored in the memo and filled later counts too), each memo entry, the work of
    hashing dict keys, and the plain values config attributes are turned into. Real
    checkpoints build 10 to 25 bytes per byte, up to 40 with pickle protocol 4 (whose memo
    opcode is one byte). A pickle reaches an object again for two bytes: without this bound a
    few hundred bytes expand exponentially, and one-byte opcodes allocate hundreds each."""

    max_pickle_depth: int = _count(1000)
    """PyTorch: deepest nesting of the objects one pickle builds. Hashing or freeing a deeper
    object recurses in C and can overflow the stack; real checkpoints stay under a few dozen."""

    max_pickle_tree: int = _count(1 << 26)
    """PyTorch: most nodes one pickled object may have, a shared sub-object counted at each use.
    Sharing through the memo makes this grow exponentially with the pickle's size, and hashing or
    walking such an object never ends."""

    max_code_bytes: int = _size(64 * MiB)
    """TorchScript: the total size of an archive's ``code/*.py`` (read as text for parameter
    names and constants, never run), after decompression."""

    max_nesting: int = _count(256)
    """Deepest nesting of model structure that is walked: Keras nested models and weight-store
    groups, PyTorch submodules, and containers in a checkpoint searched for tensors (deeper
    containers are skipped, with a note). Each level is a step of recursion."""

    max_checkpoint_steps: int = _count(1_000_000)
    """PyTorch: most objects visited while searching a checkpoint for tensors and modules; past it
    the search stops, with a note. A pickle can share objects so that paths through them
    multiply."""

    max_graph_depth: int = _count(32)
    """ONNX: most graphs nested in one another, the main graph counting as one (subgraphs are
    ``If``/``Loop``/``Scan`` bodies). Each level is three protobuf messages, and protobuf itself
    refuses messages nested 100 deep, so raising this past 32 lets protobuf refuse the file
    instead."""

    max_static_chain: int = _count(256)
    """ONNX: longest chain of static nodes (``Identity``, ``Cast``, ``Reshape``, ``Transpose``,
    ...) followed back from a weight to its stored tensor; a longer one is reported as computed at
    run time, with a note. A hostile file could make following chains cost the square of their
    length."""

    max_dense_elements: int = _count(1 << 30)
    """ONNX: the largest dense shape a sparse tensor is expanded to when read. Nothing in the file
    bounds it: a few bytes of indices can declare any shape."""

    max_saved_model_bytes: int = _size(1 * GiB)
    """TensorFlow: the largest ``saved_model.pb`` (and ``keras_metadata.pb``) read into memory to
    decode. A real one holds the graph and its functions, tens of MB for large models; protobuf
    itself refuses messages over 2 GB."""

    max_read_ratio: int = _count(16)
    """Most bytes the tensors of a file may declare, as a multiple of the bytes the file (and its
    external data) holds. An honest file declares each byte once (tied weights twice); a hostile
    one can make thousands of tensors point at one region and have it read again and again."""

    max_export_ratio: int = _count(16)
    """``export``: most bytes written per byte of the files read. Canonical arrays take about the
    room their stored form does (twice for bfloat16 or 4-bit values); a sparse tensor declared
    over a huge dense shape would otherwise fill a disk from a file of a few bytes."""

    max_remote_whole_bytes: int = _size(64 * MiB)
    """By URL: the largest file fetched whole to be decoded (an ONNX model's protobuf, which has
    no index to its parts). A model holding its weights inside is usually larger, and is refused
    rather than downloaded; its external data is read by ranges whatever its size."""

    remote_range_bytes: int = _size(16 * MiB, minimum=1)
    """By URL: the most bytes one request asks for. A longer read (a tensor's data, a slab of
    its statistics) is split into requests of at most this, each answer checked to be exactly
    the bytes asked (at most one byte more is ever read, whatever the server sends)."""

    remote_ranges_in_flight: int = _count(2, minimum=1)
    """By URL: how many ranges a stream of ranges holds at once, the one being worked on and
    those requested ahead of it (2: one fetched while one is reduced). Each is at most
    ``remote_range_bytes``."""

    remote_head_bytes: int = _size(4 * KiB)
    """By URL: the first read at offset 0 (recognising the format) is kept when it is at most
    this many bytes, so that reading the header's length in it costs no request."""

    remote_zip_header_bytes: int = _size(1 * KiB, minimum=30)
    """By URL: the bytes read for a zip member's local header (30 bytes and its name; a PyTorch
    checkpoint has one per storage): the header and its padding in one request, neighbours'
    headers read with it when they lie within."""

    remote_stream_bytes: int = _size(64 * KiB, minimum=1)
    """By URL: the buffer of the stream a zip's directory and its ``data.pkl`` are read through
    (each refill one request)."""

    max_tf_index_bytes: int = _size(256 * MiB)
    """TensorFlow checkpoints: the largest ``.index`` file, read whole into memory, and the
    largest serialized object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``) read for layer names.
    Both hold about 100 bytes per variable (a few MB for the largest models); the tensor data
    lies in the shards, read lazily."""

    max_gguf_header_bytes: int = _size(256 * MiB)
    """GGUF: the largest header (metadata and tensor infos, before the tensor data), read
    before any tensor. The largest real ones hold a tokenizer of a few hundred thousand tokens
    and merges: 10 to 30 MB. Every size it declares must also lie within the file."""

    max_gguf_entries: int = _count(1 << 20)
    """GGUF: most metadata keys and tensors together that a header may declare (checked before
    any is read). Real models declare a few dozen keys and up to a few thousand tensors."""

    max_gguf_array_elements: int = _count(1 << 22)
    """GGUF: most elements in all the metadata arrays of a file together. A tokenizer's tokens,
    scores, types and merges hold under a million in the largest vocabularies (262,144 tokens
    three times over; 280,000 merges). Each string of an array is walked to find the next (about
    0.3 us each); numbers are skipped at once."""

    def __post_init__(self) -> None:
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            least = item.metadata.get("minimum", 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"limit {item.name} must be an integer >= {least}, not {value!r}")

    def replace(self, **changes: int) -> Limits:
        """A copy with some limits changed (unknown names raise ``TypeError``)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(item.name for item in dataclasses.fields(cls))

    @classmethod
    def unit(cls, name: str) -> str:
        """What the limit ``name`` counts: ``bytes``, ``count`` or ``seconds``."""
        return str(_FIELDS[name].metadata.get("unit", "count"))

    @classmethod
    def is_size(cls, name: str) -> bool:
        return cls.unit(name) == "bytes"

    def check(self, name: str, needed: int, what: str) -> None:
        """Raise ``LimitExceeded`` when ``needed`` is over the limit ``name``; ``what`` says what
        needed it (``config.json declares 80,000,000 bytes``)."""
        if needed > getattr(self, name):
            raise LimitExceeded(name, getattr(self, name), needed, what)


_FIELDS = {item.name: item for item in dataclasses.fields(Limits)}
DEFAULT = Limits()


class LimitExceeded(Exception):
    """A limit was hit where the file's path is not known; the reader turns it into
    :class:`~weightscope.errors.LimitError` with :func:`limit_error`."""

    def __init__(self, name: str, limit: int, needed: int, what: str) -> None:
        super().__init__(what)
        self.name = name
        self.limit = limit
        self.needed = needed
        self.what = what


def limit_error(path: Path | str, exceeded: LimitExceeded) -> LimitError:
    """The one-line error for ``exceeded`` in the file ``path``: what went over which limit, and
    a value that would let it through."""
    name, limit = exceeded.name, exceeded.limit
    suggestion = suggest(name, limit, exceeded.needed)
    line = " ".join(
        f"{path}: {exceeded.what}, over the limit {name}={format_value(name, limit)} "
        f"(raise it with --limit {name}={format_value(name, suggestion)})".split()
    )
    error = LimitError(printable(line))
    error.limit = name
    error.value = limit
    error.needed = exceeded.needed
    return error


def suggest(name: str, limit: int, needed: int) -> int:
    """A round value over ``needed``: the limit doubled until it is enough."""
    value = max(limit, 1) * 2
    while value < needed:
        value *= 2
    return value


_SUFFIXES = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1 << 40}


def format_value(name: str, value: int) -> str:
    """``64M`` for sizes that are whole MiB (or KiB, GiB, TiB), the plain number otherwise."""
    if Limits.is_size(name) and value:
        for suffix in ("T", "G", "M", "K"):
            if value % _SUFFIXES[suffix] == 0:
                return f"{value // _SUFFIXES[suffix]}{suffix}"
    return str(value)


_VALUE = re.compile(r"(\d[\d_]*)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)


def parse_value(text: str) -> int:
    """``64M`` -> 67108864: an integer with an optional binary suffix K, M, G or T (``KB``,
    ``MiB`` and lower case accepted too) and ``_`` between digits."""
    match = _VALUE.fullmatch(text.strip())
    if match is None or match.group(1).endswith("_"):
        raise ValueError(f"not a number: {text!r} (examples: 1000, 64M, 2G)")
    return int(match.group(1).replace("_", "")) * _SUFFIXES[match.group(2).upper()]


def parse_assignment(text: str) -> tuple[str, int]:
    """``max_json_bytes=128M`` -> (``max_json_bytes``, 134217728), for ``--limit``. Names may use
    ``-`` for ``_``."""
    name, sep, value = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep:
        raise ValueError(f"expected NAME=VALUE, not {text!r}")
    if name not in _FIELDS:
        raise ValueError(f"unknown limit {name!r} (limits: {', '.join(Limits.names())})")
    try:
        number = parse_value(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    least = _FIELDS[name].metadata.get("minimum", 0)
    if number < least:
        raise ValueError(f"{name}: must be at least {least}, not {number}")
    return name, number


def from_assignments(assignments: list[tuple[str, int]] | None) -> Limits:
    """The defaults with each ``(name, value)`` applied in order (the last one wins)."""
    return DEFAULT.replace(**dict(assignments or []))


def descriptions() -> dict[str, str]:
    """What each limit bounds: the docstring under its field of :class:`Limits`, read from the
    source (attribute docstrings are not kept at run time), whitespace folded. Empty when the
    source is not installed."""
    import ast
    import inspect
    import itertools

    try:
        source = inspect.getsource(Limits)
    except (OSError, TypeError):
        return {}
    body = ast.parse(source).body[0]
    assert isinstance(body, ast.ClassDef)
    found: dict[str, str] = {}
    for field_, following in itertools.pairwise(body.body):
        if (
            isinstance(field_, ast.AnnAssign)
            and isinstance(field_.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            found[field_.target.id] = " ".join(following.value.value.split())
    return found
