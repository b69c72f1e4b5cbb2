"""Run the weightscope command line in a subprocess, the way a user does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "weightscope", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
