"""GGUF by URL: the header read from the start by requests that double in length, the tensors'
blocks by ranges; the model equals the local file's, and ``inspect --no-stats`` transfers the
header and little more (counted by the loopback server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")
gguf = pytest.importorskip("gguf")

from gguf_files import finish_gguf  # noqa: E402  (after the skips: it imports gguf)
from remote_servers import Counting, run, same_tensors  # noqa: E402

import weightscope  # noqa: E402
from weightscope import Limits  # noqa: E402
from weightscope.formats.gguf.header import read_header  # noqa: E402

KiB = 1 << 10
Q = gguf.GGMLQuantizationType


def _model(path: Path, tokens: int = 50_000, rows: int = 1024) -> Path:
    """A llama-style GGUF: a vocabulary of ``tokens`` strings (most of the header), a Q8_0
    matrix of ``rows`` x 1024 quantized by the gguf package, and a float32 norm."""
    rng = np.random.default_rng(7)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("remote test model")
    writer.add_tokenizer_model("llama")
    writer.add_token_list([f"token-{i:06d}" for i in range(tokens)])
    weight = rng.standard_normal((rows, 1024)).astype(np.float32)
    quantized = gguf.quants.quantize(weight, Q.Q8_0)
    norm = rng.standard_normal(1024).astype(np.float32)
    finish_gguf(
        writer, [("blk.0.attn_q.weight", quantized, Q.Q8_0), ("output_norm.weight", norm, None)]
    )
    return path


def test_gguf_by_url_reads_as_the_local_file(tmp_path: Path, http: Counting) -> None:
    path = _model(tmp_path / "m.gguf")
    http.files["m.gguf"] = path
    with weightscope.load(f"{http.url}/m.gguf") as remote, weightscope.load(path) as local:
        assert remote.format == local.format == "gguf"
        assert [x.name for x in remote.layers] == [x.name for x in local.layers]
        assert remote.notes == local.notes
        assert remote.params == local.params
        same_tensors(remote, local)
        for (_, ours), (_, theirs) in zip(remote.tensors(), local.tensors(), strict=True):
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())  # dequantized


def test_the_header_is_read_by_requests_that_double(tmp_path: Path, http: Counting) -> None:
    """A header of ~1 MB: after the recognition's first bytes, requests of 64, 128, 256 ...
    KiB, each starting where the one before ended; nothing past the header's last request."""
    path = _model(tmp_path / "m.gguf", tokens=60_000, rows=4096)
    header_bytes = read_header(path, Limits()).data_start
    http.files["m.gguf"] = path
    with weightscope.load(f"{http.url}/m.gguf"):
        pass
    sizes = [n for _, n in http.ranges[1:]]
    offsets = [offset for offset, _ in http.ranges[1:]]
    assert sizes == [64 * KiB << i for i in range(len(sizes))]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
    assert sum(sizes) >= header_bytes > sum(sizes[:-1])  # the last request ends past the header


def test_inspect_no_stats_of_a_gguf_by_url_transfers_its_header_only(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _model(tmp_path / "m.gguf", tokens=60_000, rows=8192)  # 8.9 MB, the header ~1 MB
    header_bytes = read_header(path, Limits()).data_start
    http.files["m.gguf"] = path
    status, out, err = run(["inspect", f"{http.url}/m.gguf", "--no-stats"], capsys)
    assert status == 0, err
    assert "blk.0.attn_q" in out
    assert http.sent <= 2 * header_bytes + 64 * KiB
    assert http.sent < path.stat().st_size / 4


def test_statistics_of_a_gguf_by_url_follow_the_range_limit(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _model(tmp_path / "m.gguf", tokens=100, rows=1024)
    http.files["m.gguf"] = path
    status, _, err = run(
        ["inspect", f"{http.url}/m.gguf", "--limit", "remote_range_bytes=64K"], capsys
    )
    assert status == 0, err
    assert max(n for _, n in http.ranges) <= 64 * KiB


def test_a_split_gguf_by_url_is_one_line(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(3)
    first = tmp_path / "m-00001-of-00002.gguf"
    writer = gguf.GGUFWriter(str(first), "llama")
    writer.add_uint16("split.no", 0)
    writer.add_uint16("split.count", 2)
    writer.add_int32("split.tensors.count", 2)
    finish_gguf(writer, [("a.weight", rng.standard_normal((4, 32)).astype(np.float32), None)])
    http.files["m-00001-of-00002.gguf"] = first
    status, _, err = run(["inspect", f"{http.url}/m-00001-of-00002.gguf"], capsys)
    assert status == 2
    assert err.count("\n") == 1
    assert "split GGUF, which is not read by URL; download its files first" in err
