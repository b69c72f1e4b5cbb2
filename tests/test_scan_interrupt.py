"""A scan stopped by Ctrl-C keeps what it finished, and the next run reads only the rest."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cli_runner import interrupt_while_stopped, interruptible

from weightscope.scan import ScanInterrupted, scan
from weightscope.scan.table_io import read_table

torch = pytest.importorskip("torch")
pytest.importorskip("pyarrow")

# real scans on worker processes, Ctrl-C and a terminal; 300 files built once for the module
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("scan_interrupt")]

FILES = 300
"""Enough small files that a one-job scan is still busy when the test interrupts it."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("models")
    for index in range(FILES):
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Linear(16, 4 + index))
        torch.save(net.state_dict(), root / f"model_{index:02d}.pt")
    return root


def _stop_after(count: int) -> Any:
    def progress(result: Any, done: int, total: int) -> None:
        if done == count:
            raise KeyboardInterrupt

    return progress


def _wait_for_worker(parent: int, seconds: float = 60.0) -> None:
    """Until ``parent`` has started a scan worker (``python -m weightscope.scan.serve``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                command = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == parent and b"weightscope.scan.serve" in command:
                return
        time.sleep(0.02)
    raise AssertionError("the scan started no worker")


def _model_paths(table: Path) -> set[str]:
    return {row["path"] for row in read_table(table) if row["record"] == "model"}


def test_interrupted_scan_writes_what_it_finished(folder: Path, tmp_path: Path) -> None:
    table = tmp_path / "zoo.parquet"
    with pytest.raises(ScanInterrupted) as stopped:
        scan([folder], table, jobs=2, progress=_stop_after(5))
    summary = stopped.value.summary
    assert summary.interrupted and summary.written
    assert summary.scanned == 5
    finished = _model_paths(table)
    assert len(finished) == 5
    assert all(Path(path).parent == folder for path in finished)


def test_next_run_reads_only_the_rest(folder: Path, tmp_path: Path) -> None:
    table = tmp_path / "zoo.parquet"
    with pytest.raises(ScanInterrupted):
        scan([folder], table, jobs=1, progress=_stop_after(4))
    before = _model_paths(table)
    read: list[str] = []
    summary = scan([folder], table, jobs=2, progress=lambda r, done, total: read.append(r.path))
    assert summary.reused == 4
    assert summary.scanned == FILES - 4
    assert set(read).isdisjoint(before)
    assert _model_paths(table) == {str(path) for path in folder.glob("*.pt")}


def test_ctrl_c_on_the_command_line_exits_130_without_traceback(
    folder: Path, tmp_path: Path
) -> None:
    table = tmp_path / "zoo.parquet"
    command = [sys.executable, "-m", "weightscope", "scan", str(folder), "-o", str(table)]
    process = interruptible([*command, "--jobs", "1"])
    _wait_for_worker(process.pid)  # files are being read now
    interrupt_while_stopped(process)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "interrupted" in stderr
    done = _model_paths(table) if table.exists() else set()
    rest = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert rest.returncode == 0, rest.stderr
    assert _model_paths(table) == {str(path) for path in folder.glob("*.pt")}
    assert done <= _model_paths(table)


def test_progress_bar_on_a_terminal(folder: Path, tmp_path: Path) -> None:
    """On a terminal, stderr shows a bar with files done out of files to do; piped, it does
    not (the other tests read stderr from a pipe)."""
    import os
    import pty

    leader, follower = pty.openpty()
    command = [sys.executable, "-m", "weightscope", "scan", str(folder)]
    command += ["-o", str(tmp_path / "zoo.jsonl"), "--jobs", "2"]
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    assert process.wait(timeout=120) == 0
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode(errors="replace"))  # colours
    assert re.search(rf"scanning.*\d+/{FILES} files", text), text[-2000:]
    assert f"wrote {FILES} models" in text
