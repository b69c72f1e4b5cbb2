"""Where Unix calls are missing (Windows; macOS before 11 lacks ``preadv``), files are still
read: each command's output on the bundled example is what it is with every call present.

The check runs ``python -m weightscope`` with the calls removed before weightscope is imported:
``os.pread``, ``os.preadv`` and ``os.fork`` (the HDF5 file is then read unguarded, as on
Windows), and the modules ``resource`` and ``fcntl``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import weightscope

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = Path(weightscope.example_path()).parent
WITHOUT_UNIX = """
import os, runpy, sys
for name in ("pread", "preadv", "fork"):
    if hasattr(os, name):
        delattr(os, name)
sys.modules["resource"] = None
sys.modules["fcntl"] = None
sys.argv = ["weightscope", *sys.argv[1:]]
runpy.run_module("weightscope", run_name="__main__")
"""


def _weightscope(*args: str, without_unix: bool) -> subprocess.CompletedProcess[str]:
    command = ["-c", WITHOUT_UNIX] if without_unix else ["-m", "weightscope"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, *command, *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.slow
@pytest.mark.parametrize("example", ["digits_cnn.h5", "digits_cnn.pt", "digits_cnn.onnx"])
def test_files_are_read_without_unix_calls(example: str) -> None:
    args = ("inspect", "--json", str(EXAMPLES / example))
    unix = _weightscope(*args, without_unix=False)
    portable = _weightscope(*args, without_unix=True)
    assert unix.returncode == 0, unix.stderr
    assert portable.returncode == 0, portable.stderr
    assert portable.stdout == unix.stdout
