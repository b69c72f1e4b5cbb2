"""Hand-built hostile PyTorch files (malformed input only): each is refused with one line, or
read without the damage it aims at. Built opcode by opcode, as an attacker would."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

import weightscope

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")

PROTO = b"\x80\x02"


def global_(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def text(value: str) -> bytes:
    data = value.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def integer(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)


def storage(numel: int, key: str = "0") -> bytes:
    return (
        b"("
        + text("storage")
        + global_("torch", "FloatStorage")
        + text(key)
        + text("cpu")
        + (integer(numel) + b"tQ")
    )


def tensor(shape: tuple[int, ...], stride: tuple[int, ...], numel: int) -> bytes:
    def ints(values: tuple[int, ...]) -> bytes:
        return b"(" + b"".join(integer(v) for v in values) + b"t"

    return (
        global_("torch._utils", "_rebuild_tensor_v2")
        + b"("
        + storage(numel)
        + integer(0)
        + ints(shape)
        + ints(stride)
        + b"\x89"
        + global_("collections", "OrderedDict")
        + b")RtR"
    )


def state_dict(**tensors: bytes) -> bytes:
    return PROTO + b"}(" + b"".join(text(k) + v for k, v in tensors.items()) + b"u."


def write_pt(path: Path, pickle_bytes: bytes, numel: int = 4, **members: tuple[bytes, int]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        compress = members.pop("data_pkl_compression", (b"", zipfile.ZIP_STORED))[1]
        archive.writestr("archive/data.pkl", pickle_bytes, compress_type=compress)
        byteorder = members.pop("byteorder", (b"little", zipfile.ZIP_STORED))
        archive.writestr("archive/byteorder", byteorder[0], compress_type=byteorder[1])
        archive.writestr("archive/data/0", np.arange(numel, dtype="<f4").tobytes())
    return path


def assert_refused(path: Path, words: str) -> None:
    result = run_cli("inspect", path)
    assert result.returncode == 2, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"weightscope: {path}: "), result.stderr
    assert words in lines[0]


def test_a_valid_hand_built_file_reads(tmp_path):
    """The builders make files weightscope reads, so each refusal below is for its one flaw."""
    path = write_pt(tmp_path / "ok.pt", state_dict(w=tensor((2, 2), (2, 1), 4)))
    with weightscope.load(path) as model:
        np.testing.assert_array_equal(model.layers[0].tensors[0].numpy(), [[0, 1], [2, 3]])


def test_zero_strides_cannot_inflate_a_tiny_storage(tmp_path):
    path = write_pt(tmp_path / "zero.pt", state_dict(w=tensor((20000, 20000), (0, 0), 4)))
    assert_refused(path, "more elements than its storage")


def test_compressed_pickle_is_refused(tmp_path):
    """A deflated data.pkl could expand to gigabytes; torch never compresses it."""
    pickle_bytes = state_dict(w=tensor((4,), (1,), 4))
    path = write_pt(
        tmp_path / "bomb.pt", pickle_bytes, data_pkl_compression=(b"", zipfile.ZIP_DEFLATED)
    )
    assert_refused(path, "compressed")


def test_unknown_byte_order_is_refused(tmp_path):
    pickle_bytes = state_dict(w=tensor((4,), (1,), 4))
    path = write_pt(tmp_path / "order.pt", pickle_bytes, byteorder=(b"middle", zipfile.ZIP_STORED))
    assert_refused(path, "unknown byte order")


def test_build_cannot_alter_the_rebuild_functions(tmp_path):
    """BUILD with slot state on an allowed function would set its __defaults__ for every later
    file in the process; it is refused and a later file reads as before."""
    poison = (
        PROTO
        + global_("torch._utils", "_rebuild_tensor_v2")
        + b"N}" + text("__defaults__") + b"(\x88\x88Nt" + b"s\x86b0"
        + b"}" + text("w") + tensor((4,), (1,), 4) + b"s."
    )  # fmt: skip
    bad = write_pt(tmp_path / "poison.pt", poison)
    good = write_pt(tmp_path / "good.pt", state_dict(w=tensor((4,), (1,), 4)))
    code = (
        "import weightscope, sys\n"
        "try:\n    weightscope.load(sys.argv[1])\nexcept weightscope.WeightscopeError as e:\n"
        "    print('refused:', e)\n"
        "with weightscope.load(sys.argv[2]) as m:\n"
        "    print('trainable:', m.layers[0].tensors[0].trainable)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(bad), str(good)], capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    assert "refused:" in result.stdout and "alter a tensor rebuilding function" in result.stdout
    assert "trainable: None" in result.stdout


def test_chained_calls_of_opaque_objects_stay_small(tmp_path):
    """Calling an opaque object in a chain must not build names (or classes) that grow with the
    chain; past the nesting limit the chain is refused."""
    chain = PROTO + global_("somewhere", "thing") + b")R" * 900 + b"0" + state_dict()[2:]
    path = write_pt(tmp_path / "calls.pt", chain)
    result = run_cli("inspect", path, "--json", timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layers"] == []
    longer = PROTO + global_("somewhere", "thing") + b")R" * 5000 + b"0" + state_dict()[2:]
    assert_refused(write_pt(tmp_path / "longer.pt", longer), "nested more than 1000 deep")


def test_memo_index_far_ahead_allocates_nothing(tmp_path):
    """CPython's unpickler would zero-fill its memo up to the index (255 bytes, 1 GB); the memo
    is a dict keyed by index, so the index is only a key (tests/test_hostile_pickles.py reads
    such files under a memory cap, and Python 2's memo starting at 1)."""
    bomb = PROTO + b"}r" + struct.pack("<I", 0x04000000) + b"."
    result = run_cli("inspect", write_pt(tmp_path / "memo.pt", bomb), "--json", timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["layers"] == []


def test_deeply_nested_key_is_refused(tmp_path):
    """A tuple nested 100,000 deep as a dict key would overflow the C stack when hashed."""
    deep = PROTO + b"}" + b")" + b"\x85" * 100_000 + integer(1) + b"s."
    assert_refused(write_pt(tmp_path / "deep.pt", deep), "nested more than 1000 deep")


def test_exponentially_shared_structure_is_refused(tmp_path):
    """Each level a pair of the one below, shared through the memo: 60 levels are 2**60 nodes
    to hash or walk, in a few hundred bytes."""
    body = b")q\x00"
    for level in range(60):
        body += b"0h" + bytes([level]) + b"h" + bytes([level]) + b"\x86q" + bytes([level + 1])
    shared = PROTO + b"}" + body + integer(1) + b"s."
    assert_refused(write_pt(tmp_path / "shared.pt", shared), "shares parts so often")


def test_whole_modules_under_any_checkpoint_key(tmp_path):
    """Modules are found under keys no list names; the one holding the most tensor data is the
    model, and the other is named in the notes, not counted."""
    generator = torch.nn.Sequential(torch.nn.Linear(3, 4))
    discriminator = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3))
    path = tmp_path / "gan.pt"
    torch.save({"generator": generator, "discriminator": discriminator, "step": 9}, path)
    with weightscope.load(path) as model:
        kinds = {layer.name: layer.kind for layer in model.layers}
        assert kinds == {"0": "conv2d"}
        assert model.params.total == sum(p.numel() for p in discriminator.parameters())
        assert model.notes[0].startswith("weights from the checkpoint's entry 'discriminator'")
        assert "'generator' (2 tensors, 16 values)" in model.notes[1]


@pytest.mark.parametrize("protocol", [3, 4, 5])
def test_legacy_files_with_newer_pickle_protocols(protocol, tmp_path):
    module = torch.nn.Linear(3, 2)
    path = tmp_path / f"legacy_p{protocol}.pt"
    torch.save(
        module.state_dict(), path, _use_new_zipfile_serialization=False, pickle_protocol=protocol
    )
    with weightscope.load(path) as model:
        assert model.format == "pytorch-legacy"
        kernel = model.layers[0].tensor("kernel").numpy()
        np.testing.assert_array_equal(kernel, module.weight.detach().numpy())


def test_safetensors_metadata_of_the_wrong_type_is_ignored(tmp_path):
    data = np.arange(6, dtype="<f4").tobytes()
    header = {"__metadata__": [1, 2], "fc.weight": {"dtype": "F32", "shape": [2, 3],
                                                   "data_offsets": [0, len(data)]}}  # fmt: skip
    raw = json.dumps(header).encode()
    path = tmp_path / "meta.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    with weightscope.load(path) as model:
        assert model.layers[0].tensor("kernel").numpy().shape == (2, 3)


def test_traced_depthwise_conv_is_depthwise(tmp_path):
    module = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, groups=4))
    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(module, torch.randn(1, 4, 6, 6)), path)
    with weightscope.load(path) as model:
        layer = model.layers[0]
        assert (layer.kind, layer.groups) == ("depthwise_conv2d", 4)


def test_terminal_escapes_in_names_are_shown_not_obeyed(tmp_path):
    path = tmp_path / "escapes.pt"
    torch.save({"\x1b[2J\x1b[31mfc.weight": torch.ones(2, 3)}, path)
    result = run_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout
    assert "\\x1b[2J" in result.stdout
