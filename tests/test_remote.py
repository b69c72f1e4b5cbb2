"""Model files read by URL: a loopback HTTP server that honours Range and counts what it sends
(with switches to misbehave), and moto's S3 server. The tensors read remotely equal the local
file's; inspect without statistics fetches the header and nothing more; every failure is one
line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

fsspec = pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

from remote_servers import Counting  # noqa: E402
from remote_servers import layers as _layers  # noqa: E402
from remote_servers import run as _run  # noqa: E402
from remote_servers import safetensors_file as _safetensors  # noqa: E402
from remote_servers import same_tensors as _same_tensors  # noqa: E402
from remote_servers import serve_folder as _serve_folder  # noqa: E402
from remote_servers import sharded as _sharded  # noqa: E402
from remote_servers import small_model as _small_model  # noqa: E402
from remote_servers import sparse_large as _sparse_large  # noqa: E402

import weightscope  # noqa: E402
from weightscope.errors import RemoteError, UnsupportedFormatError  # noqa: E402
from weightscope.formats._common.remote import (  # noqa: E402
    RemoteFile,
    RemotePath,
    beside,
    url_scheme,
)

ROOT = Path(__file__).resolve().parent.parent


def test_urls_are_told_from_paths(tmp_path: Path) -> None:
    assert url_scheme("https://example.org/m.safetensors") == "https"
    assert url_scheme("s3://bucket/key") == "s3"
    assert url_scheme("hf://org/repo/model.safetensors") == "hf"
    for local in ("C://model.pt", "model:v1.pt", "dir/a://b", "file:///tmp/x", str(tmp_path)):
        assert url_scheme(local) is None, local
    odd = tmp_path / "odd://name.safetensors"  # a local path that looks like a URL
    odd.parent.mkdir(parents=True)
    odd.write_bytes(b"x")
    assert url_scheme(str(odd)) is None


def test_a_remote_path_is_no_local_file() -> None:
    """Where readers expect a Path: printed as the URL, named by its last part, existing as no
    local file, and refused in one line by whatever would read it locally."""
    path = RemotePath("https://host/models/m.safetensors")
    assert (path.name, path.suffix) == ("m.safetensors", ".safetensors")
    assert str(path) == "https://host/models/m.safetensors"
    assert not path.exists() and not path.is_file() and not path.is_dir()
    for local in (path.stat, path.read_bytes, lambda: os.fspath(path), path.resolve):
        with pytest.raises(UnsupportedFormatError, match=r"^https://host/models/m\.safetensors: "):
            local()


def test_https_tensors_equal_the_local_file(tmp_path: Path, http: Counting) -> None:
    small = _small_model(tmp_path)
    http.files["m/small.safetensors"] = small
    # every request at most 16 KiB (fc.weight is 300 KiB): statistics stream in such slabs
    limits = weightscope.Limits(remote_range_bytes=16 << 10)
    with (
        weightscope.load(f"{http.url}/m/small.safetensors", limits=limits) as remote,
        weightscope.load(small) as local,
    ):
        assert str(remote.source) == f"{http.url}/m/small.safetensors"
        assert remote.source.name == "small.safetensors"
        assert [x.name for x in remote.layers] == [x.name for x in local.layers]
        assert remote.params == local.params
        _same_tensors(remote, local)
    assert min(n for _, n in http.ranges) > 0  # the empty tensor asks for nothing
    assert max(n for _, n in http.ranges) == 16 << 10
    whole = [n for _, n in http.ranges if n == 16 << 10]
    # fc.weight read whole by stored() and streamed by its statistics, each in 16 KiB requests
    assert len(whole) >= 2 * ((300 * 256 * 4) // (16 << 10))


def test_one_range_is_fetched_ahead(tmp_path: Path, http: Counting) -> None:
    """While the caller reduces one range, the next is requested, and no more: the transfer
    overlaps the work and at most two ranges are held."""
    small = _small_model(tmp_path)
    http.files["small.safetensors"] = small
    file = RemoteFile(f"{http.url}/small.safetensors")
    try:
        ranges = [(index * 4096, 4096) for index in range(8)]
        requested = []
        for index, data in enumerate(file.read_ranges(ranges)):
            assert data == small.read_bytes()[index * 4096 : (index + 1) * 4096]
            time.sleep(0.1)  # the reduction, during which the next range arrives
            requested.append(len(http.ranges))
    finally:
        file.close()
    assert requested == [min(index + 2, 8) for index in range(8)]


def test_statistics_of_a_large_tensor_hold_bounded_memory(tmp_path: Path, http: Counting) -> None:
    """A 256 MiB tensor's statistics by URL: every byte sent once, in 16 MiB ranges, while
    Python's allocations peak far below the tensor (two ranges and the reduction's scratch)."""
    import tracemalloc

    big = tmp_path / "big.safetensors"
    header = _sparse_large(big, tensors=1, elements=64 << 20)
    http.files["big.safetensors"] = big
    with weightscope.load(f"{http.url}/big.safetensors") as model:
        tensor = next(t for _, t in model.tensors())
        tracemalloc.start()
        try:
            stats = tensor.stats()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert stats.mean == 0 and stats.std == 0 and stats.zeros_fraction == 1
    assert http.sent == 64 + header - 8 + (64 << 20) * 4  # the head, the header, the data once
    assert {n for _, n in http.ranges[2:]} == {16 << 20}
    assert peak < 96 << 20, peak / 2**20


def test_inspect_without_stats_reads_only_the_header(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 4 GiB safetensors file (a hole on disk): inspect --no-stats fetches its header (a few
    KiB) and nothing of its data."""
    big = tmp_path / "big.safetensors"
    header = _sparse_large(big, tensors=64, elements=16 << 20)
    assert big.stat().st_size > 4 << 30
    http.files["big.safetensors"] = big
    status, out, err = _run(["inspect", f"{http.url}/big.safetensors", "--no-stats"], capsys)
    assert status == 0, err
    assert "layers.63" in out
    assert http.sent == 64 + header - 8  # the first bytes, then the header: nothing more
    assert http.ranges == [(0, 64), (8, header - 8)]
    assert http.sent < 2 << 20


def test_http_statistics_and_export_on_the_command_line(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    small = _small_model(tmp_path)
    http.files["small.safetensors"] = small
    url = f"{http.url}/small.safetensors"
    status, out, err = _run(["inspect", url, "--json"], capsys)
    assert status == 0, err
    remote = json.loads(out)
    status, out, _ = _run(["inspect", str(small), "--json"], capsys)
    local = json.loads(out)
    assert remote["layers"] == local["layers"]
    assert http.sent <= small.stat().st_size + 256  # each byte once (the head twice)
    status, _, err = _run(["export", url, "-o", str(tmp_path / "remote.npz")], capsys)
    assert status == 0, err
    assert _run(["export", str(small), "-o", str(tmp_path / "local.npz")], capsys)[0] == 0
    with np.load(tmp_path / "remote.npz") as ours, np.load(tmp_path / "local.npz") as theirs:
        assert sorted(ours.files) == sorted(theirs.files)
        for name in theirs.files:
            np.testing.assert_array_equal(ours[name], theirs[name])


@pytest.mark.parametrize(
    ("mode", "path", "reason"),
    [
        ("ok", "missing.safetensors", "no such file on the server"),
        ("ignore-range", "big.safetensors", "ignores Range requests"),
        ("truncate", "big.safetensors", "cut short"),
        ("no-length", "big.safetensors", "does not give the file's size"),
        ("forbidden", "big.safetensors", "HTTP 403"),
        ("long-body", "big.safetensors", "the server sent more than the 64 bytes asked for"),
    ],
)
def test_server_failures_are_one_line(
    tmp_path: Path,
    http: Counting,
    capsys: pytest.CaptureFixture[str],
    mode: str,
    path: str,
    reason: str,
) -> None:
    """A server that is down a file, ignores Range (200 and the whole 1 GiB body), cuts its
    answers short, gives no size, refuses, or sends past the range: one line each, and never
    the whole file downloaded."""
    big = tmp_path / "big.safetensors"
    _sparse_large(big, tensors=16, elements=16 << 20)
    http.files["big.safetensors"] = big
    http.mode = mode
    url = f"{http.url}/{path}"
    status, _, err = _run(["inspect", url], capsys)
    assert status == 2
    assert err.count("\n") == 1 and err.startswith(f"weightscope: {url}: "), err
    assert reason in err, err
    assert http.sent < 32 << 20  # what sockets buffer before the client hangs up, not 1 GiB


def test_no_server_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"http://127.0.0.1:{port}/m.safetensors"
    status, _, err = _run(["inspect", url], capsys)
    assert status == 2 and err.count("\n") == 1 and err.startswith(f"weightscope: {url}: "), err


def test_formats_not_read_by_url_are_refused(tmp_path: Path, http: Counting) -> None:
    npy = tmp_path / "w.npy"
    np.save(npy, np.ones(10, np.float32))
    http.files["w.npy"] = npy
    with pytest.raises(UnsupportedFormatError, match=r"w\.npy: a .* is not read by URL"):
        weightscope.load(f"{http.url}/w.npy")


def test_unknown_scheme_is_one_line() -> None:
    with pytest.raises(RemoteError, match=r"^nosuch://x/m\.safetensors: "):
        weightscope.load("nosuch://x/m.safetensors")


def test_local_reading_does_not_import_fsspec(tmp_path: Path) -> None:
    small = _small_model(tmp_path)
    code = (
        "import sys, weightscope\n"
        f"with weightscope.load({str(small)!r}) as m: [t.stats() for _, t in m.tensors()]\n"
        "from weightscope.cli.app import main\n"
        f"assert main(['inspect', {str(small)!r}]) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('fsspec', 's3fs', 'aiohttp', 'huggingface_hub', 'botocore')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_hf_tensors_equal_the_local_file(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    """hf://org/repo/file through huggingface_hub's HfFileSystem, its endpoint the loopback
    server answering the Hub's repository and listing calls and its resolve URLs by range."""
    pytest.importorskip("huggingface_hub")
    small = _small_model(tmp_path)
    http.files["small.safetensors"] = small
    options = {"endpoint": http.url, "skip_instance_cache": True}
    with (
        weightscope.load("hf://org/cnn/small.safetensors", storage_options=options) as remote,
        weightscope.load(small) as local,
    ):
        assert str(remote.source) == "hf://org/cnn/small.safetensors"
        _same_tensors(remote, local)
    argv = ["inspect", "hf://org/cnn/small.safetensors", "--no-stats"]
    status, out, err = _run([*argv, "--storage-option", f"endpoint={http.url}"], capsys)
    assert status == 0, err
    assert "conv1" in out


# --- S3, through moto's server ------------------------------------------------------------


def test_s3_tensors_equal_the_local_file(
    tmp_path: Path, s3: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import s3fs

    small = _small_model(tmp_path)
    fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    fs.mkdir("models")
    fs.put(str(small), "models/cnn/small.safetensors")
    options = {"endpoint_url": s3, "skip_instance_cache": True}
    with (
        weightscope.load("s3://models/cnn/small.safetensors", storage_options=options) as remote,
        weightscope.load(small) as local,
    ):
        assert remote.params == local.params
        _same_tensors(remote, local)
    argv = [
        "inspect",
        "s3://models/cnn/small.safetensors",
        "--storage-option",
        f"endpoint_url={s3}",
    ]
    status, out, err = _run(argv, capsys)
    assert status == 0, err
    assert "fc" in out
    status, _, err = _run([*argv[:1], "s3://models/cnn/none.safetensors", *argv[2:]], capsys)
    assert status == 2 and "no such file on the server" in err and err.count("\n") == 1, err


def test_compare_a_url_with_the_local_file(
    tmp_path: Path, s3: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``compare`` passes ``--storage-option`` on to the URL it reads."""
    import s3fs

    small = _small_model(tmp_path)
    fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    fs.mkdir("ports")
    fs.put(str(small), "ports/small.safetensors")
    url = "s3://ports/small.safetensors"
    argv = ["compare", url, str(small), "--json", "--storage-option", f"endpoint_url={s3}"]
    status, out, err = _run(argv, capsys)
    assert status == 0, err
    assert json.loads(out)["verdict"] == "identical"
    comparison = weightscope.compare(url, small, storage_options={"endpoint_url": s3})
    assert comparison.verdict == "identical" and comparison.pairs


def test_scan_an_s3_prefix(tmp_path: Path, s3: str) -> None:
    """scan s3://bucket/prefix/: the files under it listed by name and read by ranges in the
    scan's workers, one row per model with the same parameters as the local files; a file not
    named like a model is counted, not read."""
    import s3fs

    from weightscope.scan import scan

    small = _small_model(tmp_path)
    other = _safetensors(tmp_path / "other.safetensors", {"w": np.ones((4, 4), np.float32)})
    fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    fs.mkdir("zoo")
    fs.put(str(small), "zoo/models/a/small.safetensors")
    fs.put(str(other), "zoo/models/b/other.safetensors")
    fs.pipe("zoo/models/README.md", b"# not a model")
    out = tmp_path / "zoo.jsonl"
    summary = scan(
        ["s3://zoo/models/"], out, jobs=1, storage_options={"endpoint_url": s3}, timeout=120
    )
    assert summary.models == 2 and summary.errors == 0 and summary.not_models == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    models = {row["path"]: row for row in rows if row["record"] == "model"}
    assert set(models) == {
        "s3://zoo/models/a/small.safetensors",
        "s3://zoo/models/b/other.safetensors",
    }
    with weightscope.load(small) as local:
        assert models["s3://zoo/models/a/small.safetensors"]["params"] == local.params.total
    with pytest.raises(weightscope.WeightscopeError, match=r"s3://zoo/nothing/: no such file"):
        scan(["s3://zoo/nothing/"], out, jobs=1, storage_options={"endpoint_url": s3})


def _onnx_model(folder: Path, external: bool) -> Path:
    """A conv and a dense layer in ONNX, their weights in ``weights.bin`` beside the model when
    ``external``."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = {
        "conv.weight": rng.normal(size=(8, 3, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=8).astype(np.float32),
        "fc.weight": rng.normal(size=(10, 8 * 6 * 6)).astype(np.float32),
        "fc.bias": rng.normal(size=10).astype(np.float32),
    }
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], name="/conv/Conv"),
        helper.make_node("Flatten", ["c"], ["f"], name="/Flatten"),
        helper.make_node("Gemm", ["f", "fc.weight", "fc.bias"], ["y"], transB=1, name="/fc/Gemm"),
    ]
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "net.onnx"
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location="weights.bin",
        size_threshold=0,
    )
    return path


@pytest.mark.parametrize("external", [True, False], ids=["external-data", "embedded"])
def test_onnx_by_url_equals_the_local_file(tmp_path: Path, http: Counting, external: bool) -> None:
    """An ONNX model by URL: its protobuf fetched whole (small when the weights lie beside it),
    its external data read by ranges from the file of that name beside it on the server."""
    path = _onnx_model(tmp_path, external)
    http.files["m/net.onnx"] = path
    if external:
        http.files["m/weights.bin"] = tmp_path / "weights.bin"
    with (
        weightscope.load(f"{http.url}/m/net.onnx") as remote,
        weightscope.load(path) as local,
    ):
        assert [x.kind for x in remote.layers] == [x.kind for x in local.layers]
        assert remote.notes == local.notes
        _same_tensors(remote, local)
    fetched = {start: n for start, n in http.ranges if n == path.stat().st_size}
    assert fetched  # the protobuf, in one request


def test_external_data_stays_beside_the_model() -> None:
    model = RemotePath("s3://bucket/models/net.onnx")
    assert str(beside(model, "weights.bin")) == "s3://bucket/models/weights.bin"
    assert str(beside(model, "./data/w.bin")) == "s3://bucket/models/data/w.bin"
    for hostile in ("../w.bin", "data/../../w.bin", "/etc/passwd", "C:/w.bin", "http://x/w", ""):
        assert beside(model, hostile) is None, hostile


def test_onnx_external_data_missing_on_the_server(tmp_path: Path, http: Counting) -> None:
    path = _onnx_model(tmp_path, external=True)
    http.files["m/net.onnx"] = path
    with pytest.raises(RemoteError, match=r"/m/weights\.bin: no such file on the server"):
        weightscope.load(f"{http.url}/m/net.onnx")


def test_pytorch_zip_by_url_equals_the_local_file(tmp_path: Path, http: Counting) -> None:
    """A torch.save'd state dict by URL: the zip's directory, data.pkl and each storage's local
    header read by ranges, the tensors and their statistics the local file's; without
    statistics far less than the file is fetched."""
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3), torch.nn.BatchNorm2d(16), torch.nn.Flatten(),
        torch.nn.Linear(16 * 6 * 6, 512), torch.nn.Linear(512, 10),
    )  # fmt: skip
    path = tmp_path / "net.pt"
    torch.save(net.state_dict(), path)
    http.files["net.pt"] = path
    with weightscope.load(f"{http.url}/net.pt") as remote, weightscope.load(path) as local:
        assert [x.kind for x in remote.layers] == [x.kind for x in local.layers]
        assert remote.params == local.params
        structure = http.sent
        _same_tensors(remote, local)
    assert structure < path.stat().st_size // 4, (structure, path.stat().st_size)


def test_legacy_pytorch_by_url_is_refused(tmp_path: Path, http: Counting) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "old.pt"
    torch.save({"w": torch.ones(3)}, path, _use_new_zipfile_serialization=False)
    http.files["old.pt"] = path
    with pytest.raises(UnsupportedFormatError, match=r"old\.pt: .*not read by URL"):
        weightscope.load(f"{http.url}/old.pt")


# --- A sharded model by URL -----------------------------------------------------------------


def test_a_sharded_model_by_url_equals_the_local_one(tmp_path: Path, http: Counting) -> None:
    """The index fetched by URL, each shard beside it read by ranges, merged as the local
    shards are: the same layers (one split across two shards), the same tensors and
    statistics."""
    index = _sharded(tmp_path / "m")
    base = _serve_folder(http, index.parent)
    with (
        weightscope.load(f"{base}/{index.name}") as remote,
        weightscope.load(index) as local,
    ):
        assert str(remote.source) == f"{base}/{index.name}"
        assert remote.format == local.format == "safetensors-sharded"
        assert _layers(remote) == _layers(local)
        assert remote.params == local.params
        assert "read from 3 shards named by model.safetensors.index.json" in remote.notes
        assert any("split across shards" in note for note in remote.notes)
        assert "config.json: architectures Tiny" in remote.notes  # read by URL too
        assert remote.notes == local.notes
        _same_tensors(remote, local)
    del http.files["repo/config.json"]  # none on the server: no note, no error
    with weightscope.load(f"{base}/{index.name}") as remote:
        assert remote.notes == [n for n in local.notes if not n.startswith("config.json")]


def test_inspect_of_a_sharded_model_by_url_reads_only_headers(
    tmp_path: Path, http: Counting, capsys: pytest.CaptureFixture[str]
) -> None:
    """inspect --no-stats: the index whole, and of each shard its first bytes and its header,
    nothing of the tensors' data."""
    index = _sharded(tmp_path / "m")
    base = _serve_folder(http, index.parent)
    status, out, err = _run(["inspect", f"{base}/{index.name}", "--no-stats"], capsys)
    assert status == 0, err
    assert "layers.2" in out
    shards = sorted(index.parent.glob("*-of-*"))
    headers = [int.from_bytes(p.read_bytes()[:8], "little") for p in shards]
    expected = [(0, index.stat().st_size)]
    for header in headers:  # the first bytes (recognition), then the JSON header after its length
        expected += [(0, 64), (8, header)]
    expected.append((0, (index.parent / "config.json").stat().st_size))
    assert http.ranges == expected
    assert http.sent == sum(nbytes for _, nbytes in expected)
    assert http.sent < sum(p.stat().st_size for p in shards) // 4


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            "missing",
            "{base}/model-00002-of-00003.safetensors: shard missing: "
            "model.safetensors.index.json places tensors in it",
        ),
        (
            "outside",
            "{base}/model.safetensors.index.json: shard '../x.safetensors' lies outside the "
            "index's folder",
        ),
    ],
)
def test_sharded_model_by_url_failures_are_one_line(
    tmp_path: Path,
    http: Counting,
    capsys: pytest.CaptureFixture[str],
    change: str,
    reason: str,
) -> None:
    index = _sharded(tmp_path / "m")
    if change == "missing":
        (index.parent / "model-00002-of-00003.safetensors").unlink()
    else:
        data = json.loads(index.read_text())
        data["weight_map"]["layers.0.bias"] = "../x.safetensors"
        index.write_text(json.dumps(data))
    base = _serve_folder(http, index.parent)
    status, _, err = _run(["inspect", f"{base}/{index.name}"], capsys)
    assert status == 2 and err.count("\n") == 1, err
    assert err.startswith("weightscope: " + reason.format(base=base)), err


def test_a_huge_index_by_url_is_over_a_limit(tmp_path: Path, http: Counting) -> None:
    index = _sharded(tmp_path / "m")
    base = _serve_folder(http, index.parent)
    limits = weightscope.Limits(max_json_bytes=index.stat().st_size - 1)
    with pytest.raises(weightscope.WeightscopeError, match=r"max_json_bytes"):
        weightscope.load(f"{base}/{index.name}", limits=limits)
    assert http.sent == 0  # refused by its size, before its body


def test_a_sharded_model_on_s3_and_the_hub(tmp_path: Path, s3: str, http: Counting) -> None:
    import s3fs

    index = _sharded(tmp_path / "m")
    fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    fs.mkdir("sharded")
    for path in index.parent.iterdir():
        fs.put(str(path), f"sharded/tiny/{path.name}")
    options = {"endpoint_url": s3, "skip_instance_cache": True}
    url = f"s3://sharded/tiny/{index.name}"
    with (
        weightscope.load(url, storage_options=options) as remote,
        weightscope.load(index) as local,
    ):
        assert _layers(remote) == _layers(local)
        _same_tensors(remote, local)
    pytest.importorskip("huggingface_hub")
    for path in index.parent.iterdir():
        http.files[path.name] = path
    options = {"endpoint": http.url, "skip_instance_cache": True}
    with weightscope.load(f"hf://org/tiny/{index.name}", storage_options=options) as remote:
        assert _layers(remote) == _layers(local)
        assert str(remote.source) == f"hf://org/tiny/{index.name}"


def test_a_folder_url_is_read_through_its_index(tmp_path: Path, s3: str, http: Counting) -> None:
    """s3://bucket/prefix/ and hf://org/repo, listed by fsspec: the index in the folder read;
    a folder without one holding one model file, that file."""
    import s3fs

    index = _sharded(tmp_path / "m")
    fs = s3fs.S3FileSystem(endpoint_url=s3, skip_instance_cache=True)
    fs.mkdir("folders")
    for path in index.parent.iterdir():
        fs.put(str(path), f"folders/tiny/{path.name}")
    fs.put(str(_small_model(tmp_path)), "folders/one/small.safetensors")
    options = {"endpoint_url": s3, "skip_instance_cache": True}
    with weightscope.load(index) as local:
        for url in ("s3://folders/tiny/", "s3://folders/tiny"):
            with weightscope.load(url, storage_options=options) as remote:
                assert str(remote.source) == f"s3://folders/tiny/{index.name}"
                assert _layers(remote) == _layers(local)
        with weightscope.load("s3://folders/one/", storage_options=options) as one:
            assert str(one.source) == "s3://folders/one/small.safetensors"  # its one model
        pytest.importorskip("huggingface_hub")
        for path in index.parent.iterdir():
            http.files[path.name] = path
        hub = {"endpoint": http.url, "skip_instance_cache": True}
        with weightscope.load("hf://org/tiny", storage_options=hub) as remote:
            assert str(remote.source) == f"hf://org/tiny/{index.name}"
            assert _layers(remote) == _layers(local)
