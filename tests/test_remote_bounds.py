"""What reading by URL may cost: the read sizes are named limits (``remote_*``,
``max_remote_whole_bytes``) that the reads follow; no server, over HTTP, S3 or the Hub, makes
weightscope read more than the range it asked for; and the issue's number: ``inspect
--no-stats`` of a 10 GB ``.safetensors`` file or sharded model transfers under 2 MB, counted by
the servers on loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

from remote_servers import (
    Counting,
    CountingProxy,
    run,
    safetensors_file,
    same_tensors,
    serving,
    small_model,
    sparse_large,
)

import weightscope
from weightscope import Limits
from weightscope.formats._common.remote import RemoteFile

KiB = 1 << 10
MiB = 1 << 20


# --- the read sizes are named limits, and the reads follow them ------------------------------


def test_requests_are_at_most_remote_range_bytes(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``remote_range_bytes`` lowered to 64 KiB, the statistics and a whole tensor's read
    (``export``) ask for ranges of at most 64 KiB, each byte of the data once for statistics;
    the numbers are the local file's."""
    path = small_model(tmp_path)  # fc.weight: 300 KiB
    http.files["small.safetensors"] = path
    url = f"{http.url}/small.safetensors"
    limits = Limits(remote_range_bytes=64 * KiB)
    with weightscope.load(url, limits=limits) as remote, weightscope.load(path) as local:
        for _, tensor in remote.tensors():
            tensor.stats()
        assert max(n for _, n in http.ranges) == 64 * KiB
        assert http.sent <= path.stat().st_size + 64  # each byte once (the head twice)
        before = len(http.ranges)
        same_tensors(remote, local)  # stored(): whole tensors, by ranges of 64 KiB
        assert max(n for _, n in http.ranges[before:]) == 64 * KiB
    http.ranges.clear()
    status, _, err = run(["inspect", url, "--limit", "remote_range_bytes=16K"], capsys)
    assert status == 0, err
    assert max(n for _, n in http.ranges) == 16 * KiB
    http.ranges.clear()
    status, _, err = run(["inspect", url], capsys)  # the default: fc.weight in one request
    assert status == 0, err
    assert max(n for _, n in http.ranges) == 300 * 256 * 4


def test_remote_statistics_hold_the_limits_in_slabs_and_threads(
    tmp_path: Path, http: Counting, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A float tensor's statistics by URL are reduced in slabs of ``remote_range_bytes`` on
    ``remote_ranges_in_flight`` threads (the memory they hold: one slab per thread)."""
    from weightscope.formats._common import file_region

    calls: list[tuple[int, int | None]] = []
    reduce = file_region.reduce_slabs

    def recording(slabs, read, workers=None, done=None):  # type: ignore[no-untyped-def]
        calls.append((len(slabs), workers))
        return reduce(slabs, read, workers, done)

    monkeypatch.setattr(file_region, "reduce_slabs", recording)
    path = small_model(tmp_path)  # fc.weight: 300 KiB
    http.files["small.safetensors"] = path
    limits = Limits(remote_range_bytes=64 * KiB, remote_ranges_in_flight=3)
    with weightscope.load(f"{http.url}/small.safetensors", limits=limits) as remote:
        stats = remote.layer("fc").tensor("kernel").stats()
    assert calls == [(5, 3)]  # 300 KiB in slabs of 64 KiB, 3 threads
    with weightscope.load(path) as local:
        assert stats.mean == pytest.approx(local.layer("fc").tensor("kernel").stats().mean)


@pytest.mark.parametrize("in_flight", [1, 2, 3])
def test_ranges_in_flight_is_a_limit(tmp_path: Path, http: Counting, in_flight: int) -> None:
    """While the caller works on one range, ``remote_ranges_in_flight - 1`` more are requested,
    and no more."""
    path = small_model(tmp_path)
    http.files["small.safetensors"] = path
    limits = Limits(remote_ranges_in_flight=in_flight)
    file = RemoteFile(f"{http.url}/small.safetensors", limits=limits)
    whole = path.read_bytes()
    try:
        ranges = [(index * 4096, 4096) for index in range(8)]
        requested = []
        for index, data in enumerate(file.read_ranges(ranges)):
            assert data == whole[index * 4096 : (index + 1) * 4096]
            time.sleep(0.1)  # the reduction, during which the next ranges arrive
            requested.append(len(http.ranges))
    finally:
        file.close()
    assert requested == [min(index + in_flight, 8) for index in range(8)]


def test_the_first_bytes_are_kept_up_to_remote_head_bytes(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    """The first 64 bytes (recognition) hold the header's length: kept, it costs no request;
    with ``remote_head_bytes`` under 64 they are not kept and the length is asked for."""
    http.files["small.safetensors"] = small_model(tmp_path)
    url = f"{http.url}/small.safetensors"
    assert run(["inspect", url, "--no-stats"], capsys)[0] == 0
    header = http.ranges[1][1]
    assert http.ranges == [(0, 64), (8, header)]
    http.ranges.clear()
    status, _, err = run(["inspect", url, "--no-stats", "--limit", "remote_head_bytes=32"], capsys)
    assert status == 0, err
    assert http.ranges == [(0, 64), (0, 8), (8, header)]


def test_zip_reads_follow_their_limits(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    """A PyTorch zip by URL: its directory and data.pkl stream in refills of
    ``remote_stream_bytes`` and each storage's local header is read in a window of
    ``remote_zip_header_bytes``; lowered, no request is longer, and more are made."""
    torch = pytest.importorskip("torch")
    state = {f"layer{i}.weight": torch.ones(64 + i) for i in range(40)}
    path = tmp_path / "many.pt"
    torch.save(state, path)
    http.files["many.pt"] = path
    url = f"{http.url}/many.pt"
    assert run(["inspect", url, "--no-stats"], capsys)[0] == 0
    default = list(http.ranges)
    http.ranges.clear()
    argv = ["--limit", "remote_stream_bytes=4K", "--limit", "remote_zip_header_bytes=64"]
    status, out, err = run(["inspect", url, "--no-stats", *argv], capsys)
    assert status == 0, err
    assert "layer39" in out
    assert max(n for _, n in default) > 4 * KiB
    assert max(n for _, n in http.ranges) <= 4 * KiB
    headers = [n for _, n in http.ranges if n == 64]  # each storage's header on its own
    assert len(headers) >= 40 > len([n for _, n in default if n == 1 * KiB])
    assert len(http.ranges) > len(default)


def test_a_file_fetched_whole_is_over_max_remote_whole_bytes(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ONNX model holding its weights is fetched whole to be decoded: over
    ``max_remote_whole_bytes`` it is refused in one line naming the limit, before its body is
    asked for; raised, it is read."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper, save_model

    weight = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/fc/MatMul")],
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        [numpy_helper.from_array(weight, "w")],
    )
    path = tmp_path / "net.onnx"
    save_model(helper.make_model(graph), str(path))
    http.files["net.onnx"] = path
    url = f"{http.url}/net.onnx"
    status, _, err = run(["inspect", url, "--limit", "max_remote_whole_bytes=8K"], capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith(f"weightscope: {url}: ") and (
        "over the limit max_remote_whole_bytes=8K (raise it with --limit "
        "max_remote_whole_bytes=32K)" in err
    ), err
    assert http.ranges == [(0, 64)]  # recognised, then refused by its size
    status, out, err = run(["inspect", url, "--limit", "max_remote_whole_bytes=32K"], capsys)
    assert status == 0, err
    assert "4,096" in out


def test_remote_limits_have_a_floor(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="remote_range_bytes must be an integer >= 1"):
        Limits(remote_range_bytes=0)
    with pytest.raises(ValueError, match="remote_ranges_in_flight must be an integer >= 1"):
        Limits(remote_ranges_in_flight=0)
    from weightscope.cli.app import main

    with pytest.raises(SystemExit):
        main(["inspect", "x.safetensors", "--limit", "remote_ranges_in_flight=0"])
    assert "remote_ranges_in_flight: must be at least 1, not 0" in capsys.readouterr().err


# --- no server makes a read longer than its range: S3 and the Hub as HTTP --------------------


@pytest.fixture
def s3_proxy(s3: str) -> CountingProxy:
    """moto's S3 server behind a proxy that counts what it sends (and misbehaves on request)."""
    proxy = CountingProxy(s3)
    with serving(proxy):
        yield proxy


def _put(endpoint: str, bucket: str, files: dict[str, Path]) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, skip_instance_cache=True)
    fs.makedirs(bucket, exist_ok=True)  # moto's buckets outlive the test
    for key, path in files.items():
        fs.put(str(path), f"{bucket}/{key}")


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("ignore-range", "ignores Range requests"),
        ("long-body", "the server sent more than the 64 bytes asked for"),
    ],
)
def test_s3_answers_past_the_range_are_refused(
    tmp_path: Path,
    s3: str,
    s3_proxy: CountingProxy,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    reason: str,
) -> None:
    """An S3 server that ignores Range (200 and the whole 64 MiB object) or answers 206 and
    sends on to the end: one line, and the object is not downloaded (s3fs's own read takes a
    whole answer)."""
    big = tmp_path / "big.safetensors"
    sparse_large(big, tensors=4, elements=4 * MiB)
    _put(s3, "hostile", {"big.safetensors": big})
    s3_proxy.mode = mode
    url = "s3://hostile/big.safetensors"
    argv = ["inspect", url, "--storage-option", f"endpoint_url={s3_proxy.url}"]
    status, _, err = run(argv, capsys)
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"weightscope: {url}: "), err
    assert reason in err, err
    assert s3_proxy.sent < 24 * MiB, s3_proxy.sent  # what sockets buffer, not 64 MiB


def test_s3_reads_only_what_the_file_declares(
    tmp_path: Path, s3: str, s3_proxy: CountingProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hostile object whose header places a tensor past its end: one line, after its first
    bytes and its header; nothing past what the object holds is asked for."""
    path = tmp_path / "lying.safetensors"
    header = {"w": {"dtype": "F32", "shape": [1 << 20], "data_offsets": [0, 4 << 20]}}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(1024))
    _put(s3, "lying", {"m.safetensors": path})
    url = "s3://lying/m.safetensors"
    argv = ["inspect", url, "--storage-option", f"endpoint_url={s3_proxy.url}"]
    status, _, err = run(argv, capsys)
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"weightscope: {url}: "), err
    assert s3_proxy.ranges == ["bytes=0-63", f"bytes=8-{8 + len(raw) - 1}"]
    assert s3_proxy.sent == 64 + len(raw)


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("ignore-range", "ignores Range requests"),
        ("long-body", "the server sent more than the 64 bytes asked for"),
    ],
)
def test_hub_answers_past_the_range_are_refused(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str], mode: str, reason: str
) -> None:
    """The Hub's file URLs answering the whole 1 GiB file, or a 206 that does not end: one
    line, not the file (huggingface_hub's own read takes a whole answer)."""
    pytest.importorskip("huggingface_hub")
    big = tmp_path / "big.safetensors"
    sparse_large(big, tensors=16, elements=16 * MiB)
    http.files["big.safetensors"] = big
    http.mode = mode
    url = "hf://org/repo/big.safetensors"
    argv = ["inspect", url, "--storage-option", f"endpoint={http.url}"]
    status, _, err = run(argv, capsys)
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"weightscope: {url}: "), err
    assert reason in err, err
    assert http.sent < 32 * MiB, http.sent


# --- the number: inspect --no-stats of 10 GB transfers under 2 MB --------------------

GB = 10**9


def test_inspect_of_a_10_gb_safetensors_file_transfers_under_2_mb(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    """40 float32 tensors of 256 MiB (10.7 GB; a hole on disk): ``inspect --no-stats`` fetches
    the first 64 bytes and the header, nothing of the data."""
    big = tmp_path / "big.safetensors"
    header = sparse_large(big, tensors=40, elements=64 * MiB)
    assert big.stat().st_size > 10 * GB
    http.files["big.safetensors"] = big
    status, out, err = run(["inspect", f"{http.url}/big.safetensors", "--no-stats"], capsys)
    assert status == 0, err
    assert "layers.39" in out and "2,684,354,560" in out  # the parameters: 40 x 64 Mi
    assert http.ranges == [(0, 64), (8, header - 8)]
    assert http.sent == 64 + header - 8 < 2 * MiB


def _sparse_shards(folder: Path, shards: int, tensors: int, elements: int) -> Path:
    """``shards`` sparse safetensors shards and their index; the index's path."""
    folder.mkdir()
    weight_map = {}
    for number in range(shards):
        name = f"model-{number + 1:05d}-of-{shards:05d}.safetensors"
        sparse_large(folder / name, tensors, elements, first=number * tensors)
        weight_map.update({f"layers.{number * tensors + i}.weight": name for i in range(tensors)})
    index = folder / "model.safetensors.index.json"
    total = shards * tensors * elements * 4
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    return index


def test_inspect_of_a_10_gb_sharded_model_transfers_under_2_mb(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    """An index and 5 shards of 2.1 GB (holes on disk): the index, and of each shard its first
    bytes and its header."""
    index = _sparse_shards(tmp_path / "m", shards=5, tensors=8, elements=64 * MiB)
    shards = sorted(index.parent.glob("*-of-*"))
    assert sum(p.stat().st_size for p in shards) > 10 * GB
    for path in index.parent.iterdir():
        http.files[f"repo/{path.name}"] = path
    url = f"{http.url}/repo/{index.name}"
    status, out, err = run(["inspect", url, "--no-stats"], capsys)
    assert status == 0, err
    assert "layers.39" in out and "read from 5 shards" in out
    expected = [(0, index.stat().st_size)]
    for shard in shards:
        expected += [(0, 64), (8, int.from_bytes(shard.read_bytes()[:8], "little"))]
    assert http.ranges == expected  # no config.json on the server: nothing more
    assert http.sent == sum(n for _, n in expected) < 2 * MiB


def test_inspect_of_a_sharded_model_on_s3_transfers_only_headers(
    tmp_path: Path, s3: str, s3_proxy: CountingProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same on S3 (moto), smaller (3 shards of 48 MiB: moto holds objects in memory), by
    its folder's URL: the listing, the index, each shard's first bytes and header; the bytes
    S3 sent counted by the proxy."""
    index = _sparse_shards(tmp_path / "m", shards=3, tensors=3, elements=4 * MiB)
    _put(s3, "big", {f"m/{p.name}": p for p in index.parent.iterdir()})
    argv = ["inspect", "s3://big/m/", "--no-stats", "--storage-option"]
    status, out, err = run([*argv, f"endpoint_url={s3_proxy.url}"], capsys)
    assert status == 0, err
    assert "layers.8" in out
    shards = sorted(index.parent.glob("*-of-*"))
    data = sum(p.stat().st_size for p in shards)
    headers = sum(64 + int.from_bytes(p.read_bytes()[:8], "little") for p in shards)
    ranged = index.stat().st_size + headers
    assert len(s3_proxy.ranges) == 1 + 2 * len(shards)
    assert ranged <= s3_proxy.sent < ranged + 64 * KiB  # and the listing's XML
    assert s3_proxy.sent < data // 100


def test_hub_tensors_equal_the_local_file_by_bounded_ranges(tmp_path: Path, http: Counting) -> None:
    """The Hub's ranges are fetched by weightscope's bounded request: the tensors and their
    statistics are the local file's, read in ranges of ``remote_range_bytes``."""
    pytest.importorskip("huggingface_hub")
    path = safetensors_file(
        tmp_path / "w.safetensors",
        {"fc.weight": np.random.default_rng(2).normal(size=(256, 512)).astype(np.float32)},
    )
    http.files["w.safetensors"] = path
    options = {"endpoint": http.url, "skip_instance_cache": True}
    limits = Limits(remote_range_bytes=100 * KiB)
    with (
        weightscope.load(
            "hf://org/repo/w.safetensors", storage_options=options, limits=limits
        ) as remote,
        weightscope.load(path) as local,
    ):
        same_tensors(remote, local)
    assert max(n for _, n in http.ranges) == 100 * KiB
