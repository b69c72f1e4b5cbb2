"""Measurement shared by the benchmarks in this folder.

Every contender runs as a child process: wall time is taken around spawn..reap and peak RSS comes
from ``os.wait4`` (``ru_maxrss``, KiB on Linux). The page cache is warmed by reading the model file
once, each contender gets one untimed run, and the timed runs are interleaved so that any drift of
the machine hits every contender alike. Results are printed as Markdown.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CACHE = HERE / ".cache"


IMPORT_CHECK = r"""
import json, sys
from weightscope.cli.app import main
code = main(["inspect", sys.argv[1]])
names = sys.argv[2].split(",")
frameworks = sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
print(json.dumps({"exit": code, "frameworks": frameworks}))
sys.exit(code)
"""
"""A child that runs weightscope's own ``inspect`` (statistics included) on ``argv[1]`` and
prints which of the comma-separated modules of ``argv[2]`` (a name or a parent package) ended up
imported."""


@dataclass
class Runs:
    name: str
    command: list[str]
    reports_json: bool = False
    """The child prints one JSON line (its last line on stdout) of in-process figures."""
    expected_exit: int = 0
    """The exit status of a run that went as intended (2: a file refused with one line)."""
    wall: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    """The child's user + system CPU seconds (``wait4``): less disturbed by other load than wall
    time, though not immune to it."""
    extra: list[dict] = field(default_factory=list)

    @property
    def wall_median(self) -> float:
        return statistics.median(self.wall)

    @property
    def peak_rss_mb(self) -> float:
        return max(self.rss_kib) * 1024 / 1e6

    @property
    def rss_median_mb(self) -> float:
        return statistics.median(self.rss_kib) * 1024 / 1e6

    def clear(self) -> None:
        self.wall.clear()
        self.rss_kib.clear()
        self.cpu.clear()
        self.extra.clear()


def warm_page_cache(path: Path) -> float:
    """Read the whole file once; return the seconds it took."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as handle:
        buffer = bytearray(16 << 20)
        while handle.readinto(buffer):
            pass
    return time.perf_counter() - start


def run_once(runs: Runs) -> None:
    """Spawn, reap with wait4, record wall time and the child's peak RSS (exit 2 if it fails:
    ends with another status than ``runs.expected_exit``)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdout = out if runs.reports_json else subprocess.DEVNULL
        start = time.perf_counter()
        process = subprocess.Popen(runs.command, cwd=REPO, stdout=stdout, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != runs.expected_exit:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            print(f"\n{runs.name} failed (exit {process.returncode}):\n{tail}", file=sys.stderr)
            sys.exit(2)
        if stdout is out:
            out.seek(0)
            lines = out.read().decode().strip().splitlines()
            runs.extra.append(json.loads(lines[-1]))
    runs.wall.append(wall)
    runs.rss_kib.append(usage.ru_maxrss)
    runs.cpu.append(usage.ru_utime + usage.ru_stime)


def measure(path: Path, schedule: Sequence[tuple[Runs, int]]) -> float:
    """Warm the page cache with ``path``, run each contender once untimed, then ``reps`` timed
    runs of each, interleaved in schedule order. Returns the seconds the warming read took."""
    warm_s = warm_page_cache(path)
    # One untimed run each so interpreter, shared libraries and .pyc files are warm too.
    for runs, _ in schedule:
        run_once(runs)
        runs.clear()
    for rep in range(max(reps for _, reps in schedule)):
        for runs, reps in schedule:
            if rep < reps:
                run_once(runs)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    return warm_s


def print_context(warm_s: float) -> None:
    """The bullet list under a benchmark's title: machine, revision, how it was measured."""
    print(
        f"- machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, "
        f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} (left as found)"
    )
    print(f"- weightscope at {git_revision()}")
    print(
        f"- page cache warmed before timing (whole file read once, {warm_s:.2f} s), "
        "plus one untimed run of each contender; all figures are warm-cache"
    )
    print("- each contender is a child process; wall = spawn..reap, peak RSS = ru_maxrss (wait4)")


def print_table(contenders: Sequence[Runs]) -> None:
    print("| contender | runs | wall median (s) | wall min..max (s) | peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|")
    for runs in contenders:
        print(
            f"| {runs.name} | {len(runs.wall)} | {runs.wall_median:.3f} | "
            f"{min(runs.wall):.3f}..{max(runs.wall):.3f} | {runs.peak_rss_mb:.0f} |"
        )


def print_goals(goals: Sequence[tuple[str, str, bool]]) -> None:
    """``goals``: (label, measured value as shown, passed)."""
    print("| goal | measured | result |")
    print("|---|---:|---|")
    for label, shown, ok in goals:
        print(f"| {label} | {shown} | {'PASS' if ok else 'FAIL'} |")


def git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return "(unknown revision)"
    return f"{head or '(unknown revision)'}{' + uncommitted changes' if dirty else ''}"
