"""Hostile files and hostile places, round two: outputs that are not regular files, folders that
cannot be written, regions declared over and over, sparse tensors declared huge, escape
sequences in names, Ctrl-C anywhere, and a scan that is mistyped, killed or run twice.

Each file is built here; each case must end in a correct reading or one ``weightscope:`` line,
within 10 s and 1 GB (a child process under ``RLIMIT_AS`` and a timeout), with the input
unchanged and nothing written but the requested regular file."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_runner import interrupt_while_stopped, interruptible

import weightscope
from weightscope.cli import main

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

MEMORY = 1 << 30
SECONDS = 10


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))


def run_limited(*args: str | Path, timeout: float = SECONDS) -> subprocess.CompletedProcess[str]:
    """``python -m weightscope ARGS`` within 1 GB of address space and ``timeout`` seconds (the
    interpreter's start included)."""
    return subprocess.run(
        [sys.executable, "-m", "weightscope", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_limited,
        check=False,
    )


def in_process(*args: str | Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def one_line(stderr: str, *words: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("weightscope: "), stderr
    assert "Traceback" not in stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_safetensors(
    path: Path, entries: dict[str, tuple[str, list[int], int, int]], data: bytes, meta=None
) -> Path:
    header: dict[str, object] = {
        name: {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}
        for name, (dtype, shape, begin, end) in entries.items()
    }
    if meta is not None:
        header["__metadata__"] = meta
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + data)
    return path


@pytest.fixture
def example_pt(tmp_path: Path) -> Path:
    target = tmp_path / "model.pt"
    target.write_bytes(weightscope.example_path("pytorch").read_bytes())
    return target


# ---------------------------------------------------------------------------------------------
# outputs


def _special_targets(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    server.close()
    folder = tmp_path / "folder.npz"
    folder.mkdir()
    device_link = tmp_path / "null.npz"
    device_link.symlink_to("/dev/null")
    return {
        "fifo": (fifo, "named pipe"),
        "socket": (sock_path, "socket"),
        "directory": (folder, "directory"),
        "device": (device_link, "device"),
    }


@pytest.mark.parametrize("command", ["export", "plot", "report", "init"])
def test_output_onto_a_special_file_is_refused_and_left_alone(tmp_path, example_pt, command):
    for name, (target, word) in _special_targets(tmp_path).items():
        before = os.lstat(target)
        args = [command, example_pt, "-o", target]
        if command == "plot":
            args += ["--layer", "conv1"]
        code, _, err = in_process(*args)
        assert code == 2, (name, err)
        line = one_line(err, str(target), word, "not a regular file")
        assert "model.pt:" not in line  # the output is named, not the input
        after = os.lstat(target)
        assert (after.st_ino, after.st_mode) == (before.st_ino, before.st_mode), name
    assert Path("/dev/null").is_char_device()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["model.pt", "fifo", "sock", "folder.npz", "null.npz"]
    )


def test_an_unwritable_output_folder_is_named_before_the_model_is_read(
    tmp_path, example_pt, monkeypatch
):
    """As root a read-only folder is writable, so the folder's refusal is simulated where the
    check creates its probe file; the model must not have been opened by then."""
    import tempfile

    from weightscope.formats import registry

    opened: list[object] = []
    real_load = registry.load
    monkeypatch.setattr(
        "weightscope.cli.app.load", lambda *a, **k: opened.append(a) or real_load(*a, **k)
    )

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    out = tmp_path / "out" / "w.npz"
    out.parent.mkdir()
    code, _, err = in_process("export", example_pt, "-o", out)
    assert code == 2
    one_line(err, str(out), "cannot write to folder", "Permission denied")
    assert opened == []


# ---------------------------------------------------------------------------------------------
# regions declared over and over, sparse tensors declared huge


def test_overlapping_safetensors_regions_are_refused(tmp_path):
    data = np.arange(16, dtype=np.float32).tobytes()
    path = write_safetensors(
        tmp_path / "overlap.safetensors",
        {"a.weight": ("F32", [8], 0, 32), "b.weight": ("F32", [8], 16, 48)},
        data[:48],
    )
    before = digest(path)
    result = run_limited("inspect", path)
    assert result.returncode == 2
    one_line(result.stderr, str(path), "overlap")
    assert digest(path) == before


def test_thousands_of_onnx_tensors_over_one_external_region_are_refused(tmp_path):
    """5,000 initializers all pointing at one 4 MB region of external data: today's readers
    would read 20 GB for statistics and write 20 GB on export."""
    region = tmp_path / "weights.bin"
    region.write_bytes(np.zeros(1 << 20, np.float32).tobytes())
    initializers = []
    for index in range(5000):
        tensor = TensorProto(name=f"w{index}", data_type=TensorProto.FLOAT, dims=[1 << 20])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in (("location", "weights.bin"), ("offset", "0"), ("length", "4194304")):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        initializers.append(tensor)
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([], "g", [], [output], initializer=initializers)
    path = tmp_path / "many.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    for command in (["inspect", path], ["export", path, "-o", tmp_path / "out.npz"]):
        result = run_limited(*command)
        assert result.returncode == 2, result.stderr
        one_line(result.stderr, str(path), "max_read_ratio")
    assert not (tmp_path / "out.npz").exists()


def _sparse_model(path: Path, shape: list[int]) -> Path:
    values = numpy_helper.from_array(np.array([1.5, -2.0, 4.0], np.float32), "w")
    indices = numpy_helper.from_array(np.array([5, 7, 5], np.int64), "w_idx")
    sparse = helper.make_sparse_tensor(values, indices, shape)
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([], "g", [], [output], sparse_initializer=[sparse])
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def test_a_huge_sparse_tensor_is_summarised_without_densifying_and_not_exported(tmp_path):
    path = _sparse_model(tmp_path / "sparse.onnx", [32768, 32768])
    assert path.stat().st_size < 200
    result = run_limited("inspect", path, "--json")
    assert result.returncode == 0, result.stderr
    (layer,) = json.loads(result.stdout)["layers"]
    stats = layer["tensors"][0]["stats"]
    numel = 32768 * 32768
    # where an index repeats the dense tensor keeps the last value: 4.0 at 5, -2.0 at 7
    assert stats["mean"] == pytest.approx(2.0 / numel)
    assert stats["std"] == pytest.approx(np.sqrt((16.0 + 4.0) / numel - (2.0 / numel) ** 2))
    assert (stats["min"], stats["max"]) == (-2.0, 4.0)
    assert stats["zeros_fraction"] == pytest.approx(1 - 2 / numel)
    out = tmp_path / "sparse.npz"
    result = run_limited("export", path, "-o", out)
    assert result.returncode == 2
    one_line(result.stderr, "max_export_ratio", "--limit max_export_ratio=")
    assert not out.exists()


def test_sparse_statistics_equal_those_of_the_dense_tensor(tmp_path):
    """The path that avoids densifying gives the dense tensor's statistics."""
    from weightscope.formats.onnx import sparse as sparse_module

    path = _sparse_model(tmp_path / "small.onnx", [64, 64])
    with weightscope.load(path) as model:
        (_, tensor), *_ = model.tensors()
        dense_stats = tensor.source.stats(1 << 20)  # fits one chunk: densified
        summarised = tensor.source.stats(16)  # over one chunk: from the values
        assert isinstance(tensor.source, sparse_module.SparseSource)
    assert summarised.count == dense_stats.count == 4096
    for field in ("mean", "std", "min", "max", "zeros_fraction"):
        assert getattr(summarised, field) == pytest.approx(getattr(dense_stats, field)), field


# ---------------------------------------------------------------------------------------------
# what a file says reaches the terminal escaped


ESCAPE = "\x1b]0;pwned\x07\x1b[31m"


def test_escape_sequences_from_files_never_reach_the_terminal(tmp_path):
    st = write_safetensors(
        tmp_path / "meta.safetensors",
        {"fc.weight": ("F32", [2, 2], 0, 16)},
        np.ones(4, np.float32).tobytes(),
        meta={"note" + ESCAPE: "value" + ESCAPE},
    )
    weight = numpy_helper.from_array(np.ones((2, 2), np.float32), "W" + ESCAPE)
    node = helper.make_node("Gemm", ["x", "W" + ESCAPE], ["y"], name="fc" + ESCAPE)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[weight],
    )
    model = helper.make_model(graph, producer_name="evil" + ESCAPE, producer_version=ESCAPE)
    onnx_path = tmp_path / "evil.onnx"
    onnx_path.write_bytes(model.SerializeToString())
    for path in (st, onnx_path):
        for args in (["inspect", path], ["params", path], ["init", path], ["compare", path, path]):
            code, out, err = in_process(*args)
            assert "\x1b" not in out + err and "\x07" not in out + err, args
            assert code in (0, 1), err
        code, out, _ = in_process("inspect", path)
        assert "\\x1b" in out


# ---------------------------------------------------------------------------------------------
# Ctrl-C


@pytest.mark.parametrize(
    ("args", "target"),
    [
        (["inspect", "--example", "--health"], "weightscope.analysis.health.layer_health"),
        (["init", "--example"], "weightscope.analysis.init.analyze_with_sample"),
        (
            ["report", "--example", "-o", "{tmp}/r.html"],
            "weightscope.analysis.findings.layer_findings",  # a layer's checks, on a thread
        ),
        (["inspect", "--example"], "weightscope.formats.registry.load"),
    ],
)
def test_ctrl_c_anywhere_is_one_line_and_exit_130(tmp_path, monkeypatch, args, target):
    def interrupt(*a, **k):
        raise KeyboardInterrupt

    module, name = target.rsplit(".", 1)
    monkeypatch.setattr(f"{module}.{name}", interrupt)
    if name == "load":
        monkeypatch.setattr("weightscope.cli.app.load", interrupt)
    code, _, err = in_process(*[a.format(tmp=tmp_path) for a in args])
    assert code == 130
    assert err.strip() == "weightscope: interrupted"
    assert not (tmp_path / "r.html").exists()


def test_a_real_sigint_gives_one_line(tmp_path):
    """SIGINT to the process while it works (a large file being read), not a patched function."""
    path = write_safetensors(
        tmp_path / "big.safetensors",
        {f"l{i}.weight": ("F32", [1 << 20], i << 22, (i + 1) << 22) for i in range(64)},
        b"",
    )
    with open(path, "r+b") as handle:  # 256 MB of zeros, sparse on disk
        handle.truncate(path.stat().st_size + (64 << 22))
    process = interruptible([sys.executable, "-m", "weightscope", "inspect", str(path), "--health"])
    _wait_until_reading(process, path)
    interrupt_while_stopped(process)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert err.strip() == "weightscope: interrupted"


def _wait_until_reading(process: subprocess.Popen[str], path: Path, seconds: float = 60) -> None:
    """Until ``process`` has ``path`` open (it is reading it), or has ended: a fixed sleep
    missed the work on a fast machine, and the test skipped."""
    deadline = time.monotonic() + seconds
    target = str(path.resolve())
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError):  # a descriptor closed while we look
            fds = os.listdir(f"/proc/{process.pid}/fd")
            if any(os.readlink(f"/proc/{process.pid}/fd/{fd}") == target for fd in fds):
                return
        time.sleep(0.001)


# ---------------------------------------------------------------------------------------------
# scan


def _zoo(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "zoo"
    folder.mkdir()
    for index in range(count):
        write_safetensors(
            folder / f"m{index}.safetensors",
            {"fc.weight": ("F32", [4, 4], 0, 64)},
            np.full(16, index, np.float32).tobytes(),
        )
    return folder


def test_scan_of_a_missing_path_is_an_error_and_leaves_the_table(tmp_path):
    folder = _zoo(tmp_path, 2)
    table = tmp_path / "zoo.csv"
    code, _, err = in_process("scan", folder, "-o", table, "--jobs", "1")
    assert code == 0, err
    before = digest(table)
    for args in (["scan", tmp_path / "zooo", "-o", table], ["scan", folder, "nosuch", "-o", table]):
        code, _, err = in_process(*args, "--jobs", "1")
        assert code == 2
        one_line(err, "no such file or folder")
        assert digest(table) == before


def test_a_second_scan_onto_the_same_folder_is_refused(tmp_path):
    from weightscope.scan.lock import table_lock

    folder = _zoo(tmp_path, 1)
    table = tmp_path / "zoo.csv"
    with table_lock(table):
        code, _, err = in_process("scan", folder, "-o", table, "--jobs", "1")
    assert code == 2
    one_line(err, "another weightscope scan")
    assert not table.exists()
    code, _, err = in_process("scan", folder, "-o", table, "--jobs", "1")
    assert code == 0, err


def test_a_scan_that_dies_keeps_the_rows_of_its_checkpoints(tmp_path, monkeypatch):
    import weightscope.scan as scan_module
    from weightscope.scan.table_io import read_table

    folder = _zoo(tmp_path, 6)
    table = tmp_path / "zoo.csv"
    monkeypatch.setattr(scan_module, "CHECKPOINT_SECONDS", 0.0)
    done: list[str] = []

    def die_after_three(result, finished, total):
        done.append(result.path)
        if finished == 3:
            raise SystemExit("killed")  # not Ctrl-C: nothing is written at the end

    with pytest.raises(SystemExit):
        scan_module.scan([folder], table, jobs=1, progress=die_after_three)
    rows = read_table(table)
    kept = {row["path"] for row in rows if row["record"] == "model"}
    assert kept == set(done[:3])
    # the next run reads only the rest
    summary = scan_module.scan([folder], table, jobs=1)
    assert (summary.reused, summary.scanned) == (3, 3)


def test_scan_workers_die_with_a_killed_scan(tmp_path):
    """``kill -9`` of the scan while its workers are busy with large files: they must end at
    once, not finish their file first (one stuck in a native loop would spin for ever)."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    for index in range(2):
        path = write_safetensors(
            folder / f"big{index}.safetensors",
            {f"l{i}.weight": ("F32", [1024, 4096], i << 24, (i + 1) << 24) for i in range(64)},
            b"",
        )
        with open(path, "r+b") as handle:  # 1 GB of zeros each, sparse on disk
            handle.truncate(path.stat().st_size + (64 << 24))
    process = subprocess.Popen(
        [sys.executable, "-m", "weightscope", "scan", str(folder), "-o", str(tmp_path / "t.csv")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    deadline = time.monotonic() + 30
    while not workers and time.monotonic() < deadline:
        time.sleep(0.2)
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children")
        if children.exists():
            workers = [int(p) for p in children.read_text().split()]
    assert workers, "the scan started no worker"
    time.sleep(2.0)  # the workers are reading now
    assert all(_running(pid) for pid in workers), "a worker finished before the kill"
    process.kill()
    process.wait()
    deadline = time.monotonic() + 2.0
    alive = workers
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in workers if _running(pid)]
    assert alive == []
    for pid in workers:  # do not leave them to the next test if the check failed
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"
