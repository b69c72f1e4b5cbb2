"""PyTorch files as containers: dtypes, storages seen through views, byte order, files saved on a
GPU, reading without torch, and truncated or corrupted files."""

from __future__ import annotations

import json
import pickletools
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from cli_runner import run_cli  # noqa: E402
from torch_builders import (  # noqa: E402
    archive_member,
    assert_one_error_line,
    digest,
    read_member,
    rewrite_zip,
)

import weightscope  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def _numpy(value: Any) -> np.ndarray:
    """A torch tensor as numpy; bfloat16 (which numpy lacks) widened exactly to float32."""
    value = value.detach()
    return (value.float() if value.dtype == torch.bfloat16 else value).numpy()


def _assert_same_tensors(model: weightscope.Model, expected: dict[str, Any]) -> None:
    names = [tensor.name for _, tensor in model.tensors()]
    assert sorted(names) == sorted(expected)
    for _, tensor in model.tensors():
        want = _numpy(expected[tensor.name])
        np.testing.assert_array_equal(tensor.numpy(), want, err_msg=tensor.name, strict=True)


# ---------------------------------------------------------------------------------------------
# dtypes


def _mixed_dtypes() -> dict[str, Any]:
    """Half, bfloat16 and double tensors whose mean lies far from zero: 60,000 values near 1000
    overflow a float16 sum and drown in a bfloat16 one, so the statistics must be taken in
    float32 or better."""
    generator = torch.Generator().manual_seed(11)
    base = torch.randn((300, 200), generator=generator, dtype=torch.float64)
    return {
        "half.weight": (base + 1000).half(),
        "bf16.weight": (base * 3 + 1000).bfloat16(),
        "double.weight": base * 1e-3 + 2.5,
        "half.bias": torch.randn(7, generator=generator).half(),
        "bf16.bias": torch.randn(7, generator=generator).bfloat16(),
        "double.bias": torch.randn(7, generator=generator, dtype=torch.float64),
    }


DTYPE_FORMS: dict[str, tuple[Callable[[dict[str, Any], Path], None], Callable[[Path], Any]]] = {
    "zip": (lambda sd, p: torch.save(sd, p), lambda p: torch.load(p, weights_only=True)),
    "legacy": (
        lambda sd, p: torch.save(sd, p, _use_new_zipfile_serialization=False),
        lambda p: torch.load(p, weights_only=True),
    ),
    "safetensors": (safetensors_torch.save_file, safetensors_torch.load_file),
}


@pytest.mark.parametrize("form", sorted(DTYPE_FORMS))
def test_half_bfloat16_and_double_read_exactly(tmp_path: Path, form: str) -> None:
    save, load = DTYPE_FORMS[form]
    path = tmp_path / f"dtypes.{form}"
    save(_mixed_dtypes(), path)
    expected = load(path)
    assert {str(v.dtype) for v in expected.values()} == {
        "torch.float16", "torch.bfloat16", "torch.float64",
    }  # fmt: skip
    with weightscope.load(path) as model:
        _assert_same_tensors(model, expected)
        for _, tensor in model.tensors():
            value = expected[tensor.name]
            assert tensor.dtype == str(value.dtype).removeprefix("torch."), tensor.name
            native = tensor.numpy().dtype
            assert native == (np.float32 if value.dtype == torch.bfloat16 else _numpy(value).dtype)
            stats = tensor.stats()
            exact = value.double()
            assert stats.count == value.numel()
            assert (stats.nan, stats.inf) == (0, 0), tensor.name
            assert stats.mean == pytest.approx(float(exact.mean()), rel=1e-6, abs=1e-9)
            assert stats.std == pytest.approx(float(exact.std(unbiased=False)), rel=1e-4)
            assert stats.min == float(exact.min())
            assert stats.max == float(exact.max())


# ---------------------------------------------------------------------------------------------
# views, byte order, GPU


def test_views_of_one_storage_keep_offset_and_stride(tmp_path: Path) -> None:
    """torch.save keeps one storage for a tensor and its views: a slice (an offset), a
    transpose (strides) and a strided slice are read from the shared bytes."""
    base = torch.arange(48, dtype=torch.float32).reshape(6, 8) / 7
    state = {
        "base": base,
        "rows": base[2:5],
        "transposed": base.t(),
        "every_other": base[:, 1::2],
    }
    path = tmp_path / "views.pt"
    torch.save(state, path)
    expected = torch.load(path, weights_only=True)
    assert expected["transposed"].untyped_storage().data_ptr() == (
        expected["base"].untyped_storage().data_ptr()
    )
    with weightscope.load(path) as model:
        _assert_same_tensors(model, expected)
        for _, tensor in model.tensors():
            chunks = np.concatenate(list(tensor.source.chunks(5)))
            np.testing.assert_array_equal(np.sort(chunks), np.sort(tensor.numpy().ravel()))


def test_big_endian_zip_file(tmp_path: Path) -> None:
    """The ``byteorder`` record says ``big``: the data entries hold big-endian floats. torch
    reads such a file from a big-endian machine; so must weightscope."""
    state = {"conv.weight": torch.randn(6, 4, 3, 3), "conv.bias": torch.randn(6)}
    little = tmp_path / "little.pt"
    torch.save(state, little)
    assert read_member(little, "byteorder") == b"little"
    with zipfile.ZipFile(little) as archive:
        data = [n.split("/", 1)[1] for n in archive.namelist() if "/data/" in n]
    replace: dict[str, bytes | None] = {"byteorder": b"big"}
    for member in data:
        raw = read_member(little, member)
        replace[member] = np.frombuffer(raw, "<f4").astype(">f4").tobytes()
    big = rewrite_zip(little, tmp_path / "big.pt", replace)
    expected = torch.load(big, weights_only=True)
    for name, value in state.items():
        assert torch.equal(expected[name], value)  # torch itself reads the rewritten file
    with weightscope.load(big) as model:
        _assert_same_tensors(model, expected)
        assert model.layer("conv").tensor("kernel").stats().mean == pytest.approx(
            float(state["conv.weight"].double().mean()), rel=1e-6
        )


CPU = b"X\x03\x00\x00\x00cpu"  # BINUNICODE 'cpu', as torch's protocol-2 pickle writes it
CUDA = b"X\x06\x00\x00\x00cuda:0"


def _locations(pickle_bytes: bytes) -> set[str]:
    """Every string of the pickle that names a device."""
    return {
        str(arg)
        for op, arg, _ in pickletools.genops(pickle_bytes)
        if op.name == "BINUNICODE" and str(arg).startswith(("cpu", "cuda"))
    }


def test_zip_file_saved_on_a_gpu(tmp_path: Path) -> None:
    """No GPU here: a zip file saved on the CPU gets its storage locations rewritten from
    ``'cpu'`` to ``'cuda:0'`` inside data.pkl (the same pickle torch writes on a GPU; only the
    location string differs), the other entries copied as they are, stored uncompressed."""
    state = {
        "fc.weight": torch.randn(5, 3),
        "fc.bias": torch.randn(5),
        "emb.weight": torch.randn(4, 2).half(),
    }
    cpu = tmp_path / "cpu.pt"
    torch.save(state, cpu)
    pickle_bytes = read_member(cpu, "data.pkl")
    assert pickle_bytes.count(CPU) == 1 and _locations(pickle_bytes) == {"cpu"}
    gpu_pickle = pickle_bytes.replace(CPU, CUDA)
    assert _locations(gpu_pickle) == {"cuda:0"}
    gpu = rewrite_zip(cpu, tmp_path / "gpu.pt", {"data.pkl": gpu_pickle})
    if not torch.cuda.is_available():  # proof that the file now asks for a GPU
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu, weights_only=True)
    expected = torch.load(gpu, weights_only=True, map_location="cpu")
    with weightscope.load(gpu) as model:
        assert model.format == "pytorch-zip"
        _assert_same_tensors(model, expected)
    result = run_cli("inspect", gpu, "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["format"] == "pytorch-zip"


def test_legacy_file_saved_on_a_gpu(tmp_path: Path) -> None:
    """The same rewrite in a legacy stream: its pickle holds the location, the raw storage
    bytes follow it (located by reading, not by offsets, so the longer string is fine)."""
    state = {"fc.weight": torch.randn(5, 3), "fc.bias": torch.randn(5)}
    cpu = tmp_path / "cpu_legacy.pt"
    torch.save(state, cpu, _use_new_zipfile_serialization=False)
    raw = cpu.read_bytes()
    assert raw.count(CPU) == 1
    gpu = tmp_path / "gpu_legacy.pt"
    gpu.write_bytes(raw.replace(CPU, CUDA))
    expected = torch.load(gpu, weights_only=True, map_location="cpu")
    with weightscope.load(gpu) as model:
        assert model.format == "pytorch-legacy"
        _assert_same_tensors(model, expected)


# ---------------------------------------------------------------------------------------------
# reading never imports torch


NO_IMPORT_CHECK = """
import sys
from weightscope.cli.app import main
codes = [main(["inspect", sys.argv[1]]), main(["inspect", sys.argv[1], "--json"]),
         main(["export", sys.argv[1], "-o", sys.argv[2]])]
assert codes == [0, 0, 0], codes
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "safetensors"))
print("IMPORTED:", loaded)
"""


def _small_net() -> Any:
    torch.manual_seed(2)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, groups=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2),
    ).eval()


NO_IMPORT_FILES: dict[str, Callable[[Any, Path], None]] = {
    "zip": lambda m, p: torch.save(m.state_dict(), p),
    "legacy": lambda m, p: torch.save(m.state_dict(), p, _use_new_zipfile_serialization=False),
    "whole_module": lambda m, p: torch.save(m, p),
    "torchscript": lambda m, p: torch.jit.save(torch.jit.script(m), p),
    "safetensors": lambda m, p: safetensors_torch.save_file(m.state_dict(), p),
}


@pytest.mark.parametrize("form", sorted(NO_IMPORT_FILES))
def test_reading_never_imports_torch(tmp_path: Path, form: str) -> None:
    path = tmp_path / f"model.{form}"
    NO_IMPORT_FILES[form](_small_net(), path)
    out = tmp_path / "out.npz"
    result = subprocess.run(
        [sys.executable, "-c", NO_IMPORT_CHECK, str(path), str(out)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "IMPORTED: []" in result.stdout, result.stdout
    keys = set(np.load(out).files)
    assert {"0/kernel", "1/moving_mean", "2/kernel"} <= keys, keys
    assert np.load(out)["2/kernel"].shape == (6, 2, 2, 2)  # canonical (out, in/groups, kh, kw)


# ---------------------------------------------------------------------------------------------
# truncated and corrupted files


def _state() -> dict[str, Any]:
    generator = torch.Generator().manual_seed(4)
    return {
        "conv.weight": torch.randn((6, 4, 3, 3), generator=generator),
        "conv.bias": torch.randn(6, generator=generator),
        "fc.weight": torch.randn((3, 10), generator=generator),
    }


def _zip(tmp_path: Path) -> Path:
    path = tmp_path / "good.pt"
    torch.save(_state(), path)
    return path


def _legacy(tmp_path: Path) -> Path:
    path = tmp_path / "good_legacy.pt"
    torch.save(_state(), path, _use_new_zipfile_serialization=False)
    return path


def _safetensors(tmp_path: Path) -> Path:
    path = tmp_path / "good.safetensors"
    safetensors_torch.save_file(_state(), path)
    return path


def _cut(make: Callable[[Path], Path], fraction: float) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        data = make(tmp_path).read_bytes()
        path = tmp_path / f"cut_{int(fraction * 1000)}.bin"
        path.write_bytes(data[: max(int(len(data) * fraction), 1)])
        return path

    return build


def _cut_bytes(
    make: Callable[[Path], Path], keep: Callable[[bytes], int]
) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        data = make(tmp_path).read_bytes()
        path = tmp_path / "cut_exact.bin"
        path.write_bytes(data[: keep(data)])
        return path

    return build


def _zip_without(suffix: str) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        return rewrite_zip(_zip(tmp_path), tmp_path / "missing_entry.pt", {suffix: None})

    return build


def _zip_with(suffix: str, content: Callable[[bytes], bytes]) -> Callable[[Path], Path]:
    def build(tmp_path: Path) -> Path:
        good = _zip(tmp_path)
        new = content(read_member(good, suffix))
        return rewrite_zip(good, tmp_path / "edited.pt", {suffix: new})

    return build


def _safetensors_edited(edit: Callable[[dict[str, Any]], None]) -> Callable[[Path], Path]:
    """A safetensors file whose JSON header was edited (data offsets count from the end of
    the header, so the data bytes stay as they were)."""

    def build(tmp_path: Path) -> Path:
        data = _safetensors(tmp_path).read_bytes()
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + length])
        edit(header)
        text = json.dumps(header, separators=(",", ":")).encode()
        text = text.ljust(-(-len(text) // 8) * 8)  # padded with spaces, as safetensors does
        path = tmp_path / "edited.safetensors"
        path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])
        return path

    return build


def _offsets_past_the_end(header: dict[str, Any]) -> None:
    begin, end = header["conv.weight"]["data_offsets"]
    header["conv.weight"]["data_offsets"] = [begin + 10_000_000, end + 10_000_000]


def _offsets_that_do_not_fit_the_shape(header: dict[str, Any]) -> None:
    begin, _ = header["conv.bias"]["data_offsets"]
    header["conv.bias"]["data_offsets"] = [begin, begin + 8]


def _shape_larger_than_its_bytes(header: dict[str, Any]) -> None:
    header["fc.weight"]["shape"] = [3, 1_000_000]


def _header_length_past_the_end(tmp_path: Path) -> Path:
    data = _safetensors(tmp_path).read_bytes()
    path = tmp_path / "long_header.safetensors"
    path.write_bytes((len(data) + 100).to_bytes(8, "little") + data[8:])
    return path


def _storage_too_short(raw: bytes) -> bytes:
    return raw[: len(raw) // 2]


CASES: dict[str, Callable[[Path], Path]] = {
    "zip_cut_1pct": _cut(_zip, 0.01),
    "zip_cut_half": _cut(_zip, 0.5),
    "zip_cut_90pct": _cut(_zip, 0.9),
    "zip_cut_last_byte": _cut_bytes(_zip, lambda d: len(d) - 1),
    "zip_cut_central_directory": _cut_bytes(_zip, lambda d: d.rfind(b"PK\x01\x02")),
    "zip_without_data_0": _zip_without("data/0"),
    "zip_without_data_pkl": _zip_without("data.pkl"),
    "zip_storage_cut_short": _zip_with("data/1", _storage_too_short),
    "zip_data_pkl_cut": _zip_with("data.pkl", lambda raw: raw[: len(raw) // 2]),
    "zip_data_pkl_garbage": _zip_with("data.pkl", lambda raw: b"\x80\x02garbage\xff\x00" * 3),
    "legacy_cut_in_magic": _cut_bytes(_legacy, lambda d: 12),
    "legacy_cut_in_sys_info": _cut_bytes(_legacy, lambda d: 40),
    "legacy_cut_in_pickle": _cut_bytes(_legacy, lambda d: d.find(b"conv.bias") + 4),
    "legacy_cut_in_keys": _cut_bytes(_legacy, lambda d: d.rfind(b"]") + 3),
    "legacy_cut_in_data": _cut(_legacy, 0.8),
    "legacy_cut_last_byte": _cut_bytes(_legacy, lambda d: len(d) - 1),
    "safetensors_offsets_past_the_end": _safetensors_edited(_offsets_past_the_end),
    "safetensors_offsets_do_not_fit_shape": _safetensors_edited(_offsets_that_do_not_fit_the_shape),
    "safetensors_shape_larger_than_bytes": _safetensors_edited(_shape_larger_than_its_bytes),
    "safetensors_header_length_past_the_end": _header_length_past_the_end,
    "safetensors_cut_in_header": _cut(_safetensors, 0.1),
    "safetensors_cut_in_data": _cut(_safetensors, 0.7),
    "safetensors_cut_last_byte": _cut_bytes(_safetensors, lambda d: len(d) - 1),
}


def test_corrupt_cases_are_really_unreadable_by_torch(tmp_path: Path) -> None:
    """Each damaged file is one that torch or safetensors refuses as well: weightscope is right
    to refuse it."""
    readable_by_torch = []
    for name, build in CASES.items():
        folder = tmp_path / name
        folder.mkdir()
        path = build(folder)
        try:
            if name.startswith("safetensors"):
                safetensors_torch.load_file(path)
            else:
                torch.load(path, weights_only=True)
        except Exception:
            continue
        readable_by_torch.append(name)
    assert readable_by_torch == [], readable_by_torch


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_file_exits_2_with_one_line(tmp_path: Path, case: str) -> None:
    path = CASES[case](tmp_path)
    before = digest(path)
    result = run_cli("inspect", path)
    assert_one_error_line(result, path)
    assert digest(path) == before


@pytest.mark.parametrize("case", sorted(CASES))
def test_corrupt_file_raises_a_weightscope_error(tmp_path: Path, case: str) -> None:
    """Through the Python API the same files raise ``WeightscopeError`` (whose one line names
    the file), never a bare exception of the pickle or zip reader."""
    path = CASES[case](tmp_path)
    with (
        pytest.raises(weightscope.WeightscopeError, match=f"^{re.escape(str(path))}: "),
        weightscope.load(path) as model,
    ):
        for _, tensor in model.tensors():
            tensor.stats()


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("zip_without_data_0", "data/0"),
        ("zip_storage_cut_short", "data/1"),
        ("safetensors_offsets_past_the_end", "conv.weight"),
        ("safetensors_offsets_do_not_fit_shape", "conv.bias"),
        ("safetensors_shape_larger_than_bytes", "fc.weight"),
    ],
)
def test_error_names_the_damaged_part(tmp_path: Path, case: str, problem: str) -> None:
    path = CASES[case](tmp_path)
    assert_one_error_line(run_cli("inspect", path), path, problem)


def test_export_of_a_corrupt_file_writes_nothing(tmp_path: Path) -> None:
    path = CASES["zip_storage_cut_short"](tmp_path)
    out = tmp_path / "out.npz"
    assert_one_error_line(run_cli("export", path, "-o", out), path)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".ws-")] == []


def test_data_entry_names_follow_the_archive_folder(tmp_path: Path) -> None:
    """torch names the archive folder after the file; weightscope finds the entries anyway."""
    path = tmp_path / "some.name.with.dots.pth"
    torch.save(_state(), path)
    assert archive_member(path, "data.pkl").endswith("/data.pkl")
    with weightscope.load(path) as model:
        _assert_same_tensors(model, torch.load(path, weights_only=True))
