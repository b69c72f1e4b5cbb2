"""``weightscope ARGS`` in a subprocess under an address-space limit and a timeout, with the
peak memory it held: how the hostile-file and many-tensor tests run the command line."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
GiB = 1 << 30

MEASURED = """
import os, runpy, sys
report = int(sys.argv[1])
sys.argv = ["weightscope", *sys.argv[2:]]
try:
    runpy.run_module("weightscope", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status:
        peak = [line.split()[1] for line in status if line.startswith("VmHWM:")]
    os.write(report, (peak[0] if peak else "0").encode())
"""
"""``python -m weightscope ARGS`` that writes its peak memory in KiB to the fd given first."""


@dataclass
class Measured:
    returncode: int
    stdout: bytes
    """Empty when the output went to a file."""
    stderr: bytes
    seconds: float
    peak_rss: int
    """The most memory the command held at once, in bytes (its ``VmHWM``: since ``exec``, so not
    the pytest process it was forked from)."""


def _cap_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (GiB, GiB))


def run_measured(args: list[str], timeout: float, stdout: IO[bytes] | None = None) -> Measured:
    """``weightscope ARGS`` from this checkout under 1 GiB of address space and ``timeout``
    seconds (``subprocess.TimeoutExpired`` then), its output captured or written to
    ``stdout``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
    }
    peak_read, peak_write = os.pipe()
    try:
        start = time.monotonic()
        process = subprocess.run(
            [sys.executable, "-c", MEASURED, str(peak_write), *args],
            stdout=subprocess.PIPE if stdout is None else stdout,
            stderr=subprocess.PIPE,
            timeout=timeout,
            preexec_fn=_cap_memory,
            pass_fds=(peak_write,),
            env=env,
            check=False,
        )
        seconds = time.monotonic() - start
        os.close(peak_write)
        peak_write = -1
        with os.fdopen(peak_read, "rb") as report:
            peak_read = -1
            peak = int(report.read() or b"0") * 1024
    finally:
        for fd in (peak_read, peak_write):
            if fd >= 0:
                os.close(fd)
    return Measured(process.returncode, process.stdout or b"", process.stderr, seconds, peak)
