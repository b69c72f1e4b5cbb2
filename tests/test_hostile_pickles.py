"""Hostile pickles of the "hostile files, round two" findings, each built opcode by opcode as an
attacker would and put in a torch zip or legacy container. ``weightscope inspect`` runs on each
in a child process capped at 1 GiB of address space (``RLIMIT_AS``) and 10 s: it must read the
file correctly or refuse it with one ``weightscope: FILE: ...`` line (exit 2), and leave the
file unchanged. Plus the legitimate file that was refused: a Python 2 legacy checkpoint."""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import shlex
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from torch_builders import digest, legacy_stream

import weightscope

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")

MEMORY = 1 << 30
SECONDS = 10.0

# ---------------------------------------------------------------------------------------------
# opcodes


def proto(version: int = 2) -> bytes:
    return b"\x80" + bytes([version])


def global_(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def long12(value: int) -> bytes:
    """LONG1 with 12 bytes of two's complement (for multiples of 2**61 - 1)."""
    return b"\x8a\x0c" + value.to_bytes(12, "little", signed=True)


def put(index: int) -> bytes:
    return b"q" + bytes([index]) if index < 256 else b"r" + struct.pack("<I", index)


def get(index: int) -> bytes:
    return b"h" + bytes([index]) if index < 256 else b"j" + struct.pack("<I", index)


def storage(numel: int, key: str = "0") -> bytes:
    return (
        b"(" + text("storage") + global_("torch", "FloatStorage") + text(key) + text("cpu")
        + integer(numel) + b"tQ"
    )  # fmt: skip


def ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(integer(v) for v in values) + b"t"


def tensor(shape: tuple[int, ...] = (2, 2), stride: tuple[int, ...] = (2, 1)) -> bytes:
    return (
        global_("torch._utils", "_rebuild_tensor_v2") + b"(" + storage(4) + integer(0)
        + ints(shape) + ints(stride) + b"\x89" + global_("collections", "OrderedDict") + b")RtR"
    )  # fmt: skip


def state_dict(**tensors: bytes) -> bytes:
    return proto() + b"}(" + b"".join(text(k) + v for k, v in tensors.items()) + b"u."


def write_pt(path: Path, pickle_bytes: bytes, numel: int = 4) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/byteorder", b"little")
        archive.writestr("archive/data/0", np.arange(numel, dtype="<f4").tobytes())
    return path


# ---------------------------------------------------------------------------------------------
# running weightscope within bounds

CAPPED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({memory}, {memory}))
from weightscope.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def inspect_capped(path: Path, *extra: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``weightscope inspect PATH`` in a child process under 1 GiB of address space; it must end
    within 10 s (and leave the file as it was)."""
    before = digest(path)
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", CAPPED.format(memory=MEMORY), "inspect", str(path), *extra],
        capture_output=True, text=True, timeout=SECONDS, env=env, check=False,
    )  # fmt: skip
    seconds = time.monotonic() - started
    assert digest(path) == before, "the input file changed"
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result, seconds


def assert_refused(path: Path, *words: str) -> str:
    result, _ = inspect_capped(path, "--no-stats")
    assert result.returncode == 2, (result.returncode, result.stdout[-500:], result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"weightscope: {path}: "), lines[0]
    assert "unexpected" not in lines[0], lines[0]
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert result.stdout == ""
    return lines[0]


def assert_read(path: Path) -> str:
    result, _ = inspect_capped(path, "--no-stats")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


# ---------------------------------------------------------------------------------------------
# 1. containers filled with references after they were memoized


def module_pickle(config_value: bytes) -> bytes:
    """A whole pickled ``Conv2d`` whose ``kernel_size`` is ``config_value`` (which may use memo
    slots 10 and up)."""
    return (
        proto() + global_("torch.nn.modules.conv", "Conv2d") + b")\x81" + b"}("
        + text("_parameters") + b"}" + text("weight") + tensor((2, 2), (2, 1)) + b"s"
        + text("_buffers") + b"}" + text("_modules") + b"}"
        + text("kernel_size") + config_value + b"ub."
    )  # fmt: skip


def self_filled_list(copies: int = 64) -> bytes:
    """``l = []`` memoized, then ``l.extend([l] * copies)``: a list made of itself."""
    return b"]" + put(10) + b"(" + get(10) * copies + b"e"


def shared_levels(levels: int = 8, copies: int = 64) -> bytes:
    """``levels`` empty lists memoized first, then each filled with ``copies`` references to
    the next: no cycle, ``copies ** levels`` paths."""
    body = b"".join(b"]" + put(10 + level) + b"0" for level in range(levels + 1))
    for level in range(levels):
        body += get(10 + level) + b"(" + get(11 + level) * copies + b"e0"
    return body + get(10)


def test_a_list_filled_with_itself_after_it_was_memoized_is_read(tmp_path):
    """The 492-byte finding: converting ``kernel_size`` to plain values expanded 64**8 times."""
    path = write_pt(tmp_path / "itself.pt", module_pickle(self_filled_list()))
    assert path.stat().st_size < 1000
    output = assert_read(path)
    assert "conv" in output.lower()
    with weightscope.load(path) as model:
        kernel_size = model.layers[0].config["kernel_size"]
        assert len(kernel_size) == 64 and set(kernel_size) == {"<the list itself>"}


def test_lists_filled_with_shared_lists_after_they_were_memoized_are_refused(tmp_path):
    path = write_pt(tmp_path / "shared.pt", module_pickle(shared_levels()))
    assert_refused(path, "over the limit max_pickle_expansion=64")


# ---------------------------------------------------------------------------------------------
# 2. dict keys chosen to collide


COLLIDING = 2**61 - 1
"""``hash(n * (2**61 - 1)) == 0`` for every integer n."""


@pytest.mark.parametrize("size", [520_000, 10_000_000])
def test_dict_keys_that_all_hash_alike_are_refused(tmp_path, size):
    count = size // 15
    items = b"".join(long12(n * COLLIDING) + b"N" for n in range(1, count + 1))
    path = write_pt(tmp_path / "flood.pt", proto() + b"}(" + items + b"u.")
    assert path.stat().st_size >= size
    assert_refused(path, "share one hash value")


@pytest.mark.parametrize("kind", ["set", "tuple keys", "dict built at once"])
def test_other_colliding_keys_are_refused(tmp_path, kind):
    keys = [long12(n * COLLIDING) for n in range(1, 50_001)]
    if kind == "set":
        body = proto(4) + b"\x8f(" + b"".join(keys) + b"\x90."
    elif kind == "tuple keys":
        body = proto() + b"}(" + b"".join(k + b"\x85N" for k in keys) + b"u."
    else:
        body = proto() + b"(" + b"".join(k + b"N" for k in keys) + b"d."
    assert_refused(write_pt(tmp_path / "flood.pt", body), "share one hash value")


def test_many_distinct_int_keys_are_read(tmp_path):
    """Optimizer states are keyed by 0..n: distinct hashes cost nothing."""
    items = b"".join(integer(n) + b"N" for n in range(200_000))
    path = write_pt(tmp_path / "ints.pt", proto() + b"}(" + items + b"u.")
    assert_read(path)


# ---------------------------------------------------------------------------------------------
# 3. one-byte opcodes by the million

FLOODS = {
    "EMPTY_SET": b"\x8f",
    "EMPTY_DICT": b"}",
    "EMPTY_LIST": b"]",
    "EMPTY_TUPLE": b")",
    "NONE": b"N",
    "NEWTRUE": b"\x88",
    "MARK": b"(",
    "DUP": b"2",
    "MEMOIZE": b"\x94",
}


@pytest.mark.parametrize("name", sorted(FLOODS))
def test_four_megabytes_of_one_byte_opcodes_stay_within_bounds(tmp_path, name):
    """A 4 MB data.pkl of EMPTY_SET reached 1 GB of memory; of NONE, 4 us a byte."""
    opcode = FLOODS[name]
    head = proto(4) + (b"N" if name in ("DUP", "MEMOIZE") else b"")
    path = write_pt(tmp_path / "flood.pt", head + opcode * (4 << 20) + b"N.")
    result, seconds = inspect_capped(path, "--no-stats")
    lines = result.stderr.strip().splitlines()
    if result.returncode == 2:
        assert len(lines) == 1 and lines[0].startswith(f"weightscope: {path}: "), result.stderr
        assert "unexpected" not in lines[0]
    else:
        assert result.returncode == 0 and not lines, result.stderr
    if name == "EMPTY_SET":
        assert "over the limit max_pickle_expansion" in result.stderr
    assert seconds < SECONDS


# ---------------------------------------------------------------------------------------------
# 4. BUILD on what the rebuild functions return


@pytest.mark.parametrize(
    ("state", "words"),
    [
        (b"}" + text("shape") + b"(G?\xf8\x00\x00\x00\x00\x00\x00t" + b"s", "alter a tensor"),
        (b"}" + text("shape") + b"(" + text("2") + b"t" + b"s", "alter a tensor"),
        (b"}" + text("offset") + text("x") + b"s", "alter a tensor"),
        (
            b"}" + text("shape") + b"(" + b"K\x01" * 300_000 + b"t" + b"s" + text("stride")
            + b"(" + b"K\x01" * 300_000 + b"t" + b"s",
            "alter a tensor",
        ),
    ],
    ids=["float-dims", "string-dims", "string-offset", "300000-dims"],
)  # fmt: skip
def test_build_cannot_rewrite_a_rebuilt_tensor(tmp_path, state, words):
    body = proto() + b"}(" + text("w") + tensor() + state + b"bu."
    path = write_pt(tmp_path / "rewritten.pt", body)
    assert_refused(path, words)


def test_build_cannot_rewrite_a_storage(tmp_path):
    body = proto() + b"}(" + text("s") + storage(4) + b"}" + text("numel") + integer(9) + b"sbu."
    assert_refused(write_pt(tmp_path / "storage.pt", body), "alter a storage")


@pytest.mark.parametrize(
    ("shape", "stride", "words"),
    [
        (b"(G?\xf8\x00\x00\x00\x00\x00\x00t", ints((1,)), "shape or stride"),
        (b"(" + b"K\x01" * 300_000 + b"t", b"(" + b"K\x01" * 300_000 + b"t", "at most 64"),
        (ints((2, 2)), ints((1,)), "differ in length"),
    ],
    ids=["float", "300000-dims", "mismatch"],
)
def test_malformed_shapes_are_format_errors(tmp_path, shape, stride, words):
    rebuilt = (
        global_("torch._utils", "_rebuild_tensor_v2") + b"(" + storage(4) + integer(0)
        + shape + stride + b"\x89" + global_("collections", "OrderedDict") + b")RtR"
    )  # fmt: skip
    assert_refused(write_pt(tmp_path / "shape.pt", state_dict(w=rebuilt)), words)


# ---------------------------------------------------------------------------------------------
# 5. two zip members of one name


def dict_pickle(**values: int) -> bytes:
    return pickle.dumps(dict(values), protocol=2)


def state_pickle(folder: Path, name: str) -> bytes:
    """The data.pkl of ``torch.save({name: torch.zeros(3)})`` (its storage is ``data/0``)."""
    path = folder / f"{name}.pt"
    torch.save({name: torch.zeros(3)}, path)
    with zipfile.ZipFile(path) as archive:
        return archive.read(next(n for n in archive.namelist() if n.endswith("/data.pkl")))


def zip_with_copies(path: Path, copies: list[bytes], extra: int = 3) -> Path:
    """A torch.save zip whose data.pkl is given ``len(copies)`` times, the copies spread among
    the other members (in that order)."""
    base = path.with_name("base.pt")
    torch.save({"w": torch.zeros(3)}, base)
    with zipfile.ZipFile(base) as source:
        members = [(i.filename, source.read(i)) for i in source.infolist()]
    folder = members[0][0].split("/", 1)[0]
    others = [m for m in members if not m[0].endswith("/data.pkl")]
    others += [(f"{folder}/extra{n}", b"x") for n in range(extra)]
    layout: list[tuple[str, bytes]] = []
    for index, member in enumerate(others):
        layout.append(member)
        if index < len(copies):
            layout.append((f"{folder}/data.pkl", copies[index]))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in layout:
            archive.writestr(name, data)
    return path


@pytest.mark.parametrize("count", [2, 3, 4, 5, 7])
def test_duplicate_data_pkl_reads_the_one_torch_reads(tmp_path, count):
    """torch finds a member by binary search over its sorted directory: with duplicates it
    reads neither always the first nor always the last (zipfile.getinfo gives the last)."""
    copies = [state_pickle(tmp_path, f"copy{n}") for n in range(count)]
    path = zip_with_copies(tmp_path / "dup.pt", copies)
    with zipfile.ZipFile(path) as archive:
        assert sum(n.endswith("/data.pkl") for n in archive.namelist()) == count
    torch_read = list(torch.load(path, weights_only=True))
    with weightscope.load(path) as model:
        assert [t.name for _, t in model.tensors()] == torch_read
        assert any(f"{count} members named" in note for note in model.notes), model.notes
    assert assert_read(path)


@pytest.mark.parametrize("unsafe", [0, 1])
def test_an_unsafe_copy_of_data_pkl_makes_the_file_unsafe(tmp_path, unsafe):
    evil = pickle.dumps({"w": _Mark(tmp_path / "MARK")}, protocol=2)
    copies = [dict_pickle(a=1), dict_pickle(b=2)]
    copies[unsafe] = evil
    path = zip_with_copies(tmp_path / "dup.pt", copies)
    assert_refused(path, "unsafe")
    assert not (tmp_path / "MARK").exists()


class _Mark:
    def __init__(self, mark: Path) -> None:
        self.mark = mark

    def __reduce__(self) -> object:
        return (os.system, (f"touch {shlex.quote(str(self.mark))}",))


# ---------------------------------------------------------------------------------------------
# 6. gadgets that run code under plain pickle


def gadget(module: str, name: str, *args: bytes, protocol: int = 2) -> bytes:
    """``{"w": module.name(*args)}``; names with dots go through STACK_GLOBAL."""
    dotted = "." in name
    callable_ = text(module) + text(name) + b"\x93" if dotted else global_(module, name)
    return proto(protocol) + b"}" + text("w") + callable_ + b"(" + b"".join(args) + b"tRs."


def _evil_pickle_bytes(mark: Path) -> bytes:
    return pickle.dumps(_Mark(mark), protocol=2)


def _bytes_arg(data: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(data)) + data


def gadgets(mark: Path, folder: Path) -> dict[str, bytes]:
    evil_file = folder / "evil.npy"
    evil_file.write_bytes(_evil_pickle_bytes(mark))
    return {
        "pydoc.locate": gadget("pydoc", "locate", text("os.system")),
        "torch._utils._import_dotted_name": gadget(
            "torch._utils", "_import_dotted_name", text("os.system")
        ),
        "torch.serialization.load": gadget("torch.serialization", "load", text(str(evil_file))),
        "torch.storage._load_from_bytes": gadget(
            "torch.storage", "_load_from_bytes", _bytes_arg(_evil_pickle_bytes(mark))
        ),
        "numpy.load": gadget("numpy", "load", text(str(evil_file)), b"N\x88"),
        "_codecs.decode": gadget("_codecs", "decode", text("eJw="), text("zlib")),
        "torch.serialization.load (dotted)": gadget(
            "torch", "serialization.load", text(str(evil_file)), protocol=4
        ),
    }


GADGETS = [
    "pydoc.locate",
    "torch._utils._import_dotted_name",
    "torch.serialization.load",
    "torch.storage._load_from_bytes",
    "numpy.load",
    "_codecs.decode",
    "torch.serialization.load (dotted)",
]


@pytest.mark.parametrize("name", GADGETS)
def test_gadgets_are_refused_as_unsafe(tmp_path, name):
    mark = tmp_path / "MARK"
    data = gadgets(mark, tmp_path)[name]
    zipped = write_pt(tmp_path / "gadget.pt", data)
    line = assert_refused(zipped, "unsafe pickle, refused", "nothing was run")
    assert name.split(" ")[0].rsplit(".", 1)[0] in line
    legacy = tmp_path / "gadget_legacy.pt"
    legacy.write_bytes(legacy_stream(data))
    assert_refused(legacy, "unsafe pickle, refused")
    assert not mark.exists()


@pytest.mark.parametrize("name", ["torch._utils._import_dotted_name", "numpy.load"])
def test_gadget_controls_run_code_under_plain_pickle(tmp_path, name):
    """Control: the gadgets are live (plain pickle, then a call, leaves the mark)."""
    mark = tmp_path / "MARK"
    data = gadgets(mark, tmp_path)[name]
    found = pickle.loads(data)["w"]  # the point of this control
    if name == "numpy.load":
        assert mark.exists()
    else:
        found(f"touch {shlex.quote(str(mark))}")
        assert mark.exists()


def test_pydoc_and_load_from_bytes_controls(tmp_path):
    mark = tmp_path / "MARK"
    table = gadgets(mark, tmp_path)
    pickle.loads(table["pydoc.locate"])["w"](f"touch {shlex.quote(str(mark))}")
    assert mark.exists()
    mark.unlink()
    # torch.load(BytesIO(b), weights_only=False) unpickles b as a legacy file's magic number:
    # the payload runs, then the magic number is found wrong
    with pytest.raises(Exception):  # noqa: B017
        pickle.loads(table["torch.storage._load_from_bytes"])
    assert mark.exists()


def test_codecs_encode_of_protocol_2_bytes_is_still_read(tmp_path):
    """``_codecs`` is unsafe but for ``encode``, which protocol 2 uses for every bytes value."""
    path = tmp_path / "bytes.pt"
    torch.save({"w": torch.ones(2), "blob": b"\x00\xffabc", "empty": b""}, path,
               _use_new_zipfile_serialization=False)  # fmt: skip
    assert b"_codecs" in path.read_bytes()
    with weightscope.load(path) as model:
        assert [t.name for _, t in model.tensors()] == ["w"]


# ---------------------------------------------------------------------------------------------
# 7. a Python 2 checkpoint: memo from 1, str keys, saved on a GPU


def _pickle_spans(data: bytes, count: int) -> list[tuple[int, int]]:
    stream = io.BytesIO(data)
    spans = []
    for _ in range(count):
        start = stream.tell()
        for _op in pickletools.genops(stream):
            pass
        spans.append((start, stream.tell()))
    return spans


def as_python2(data: bytes) -> bytes:
    """One protocol 2 pickle rewritten as Python 2's cPickle wrote torch's: memo indices from
    1 (cPickle's first PUT is 1), strings as byte strings (SHORT_BINSTRING / BINSTRING), and
    storages of a GPU (``torch.cuda.FloatStorage`` at ``cuda:0``)."""
    ops = list(pickletools.genops(io.BytesIO(data)))
    out = bytearray()
    for number, (opcode, arg, position) in enumerate(ops):
        end = ops[number + 1][2] if number + 1 < len(ops) else len(data)
        name = opcode.name
        if name in ("BINPUT", "LONG_BINPUT"):
            out += put(arg + 1)
        elif name in ("BINGET", "LONG_BINGET"):
            out += get(arg + 1)
        elif name in ("BINUNICODE", "SHORT_BINUNICODE") and arg.isascii():
            raw = ("cuda:0" if arg == "cpu" else arg).encode()
            out += (
                (b"U" + bytes([len(raw)])) if len(raw) < 256 else b"T" + struct.pack("<i", len(raw))
            )
            out += raw
        elif name == "GLOBAL" and arg.startswith("torch ") and arg.endswith("Storage"):
            out += global_("torch.cuda", arg.split(" ")[1])
        else:
            assert name not in ("MEMOIZE", "PUT", "GET"), name
            out += data[position:end]
    return bytes(out)


def python2_checkpoint(path: Path) -> dict[str, object]:
    torch.manual_seed(3)
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(5, 2)
    )
    state = module.state_dict()
    state["tied.weight"] = state["2.weight"]
    state["view.bias"] = state["2.weight"][1:]  # a view of another tensor's storage
    saved = path.with_name("py3.pt")
    torch.save(state, saved, _use_new_zipfile_serialization=False)
    data = saved.read_bytes()
    spans = _pickle_spans(data, 5)
    rewritten = b"".join(as_python2(data[start:end]) for start, end in spans)
    path.write_bytes(rewritten + data[spans[-1][1] :])
    return state


def test_a_python2_checkpoint_saved_on_a_gpu_reads_as_torch_reads_it(tmp_path):
    path = tmp_path / "py2.pt"
    python2_checkpoint(path)
    data = path.read_bytes()
    root_start, root_end = _pickle_spans(data, 5)[3]
    first_put = next(
        arg for op, arg, _ in pickletools.genops(io.BytesIO(data[root_start:root_end]))
        if op.name in ("BINPUT", "LONG_BINPUT")
    )  # fmt: skip
    assert first_put == 1 and b"torch.cuda\nFloatStorage" in data and b"U\x06cuda:0" in data
    expected = torch.load(path, weights_only=True, map_location="cpu")
    with weightscope.load(path) as model:
        assert model.format == "pytorch-legacy"
        read = {t.name: t.numpy() for _, t in model.tensors()}
    assert sorted(read) == sorted(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(read[name], value.numpy(), strict=True)
    assert_read(path)


def test_memo_indices_far_ahead_allocate_nothing(tmp_path):
    """CPython's unpickler zero-fills its memo up to an index (255 bytes asked for 1 GB)."""
    bomb = proto() + b"}r" + struct.pack("<I", 0xFFFFFFF0) + b"0" + b"}" + b"r\x00\x00\x00\x04."
    assert_read(write_pt(tmp_path / "memo.pt", bomb))
