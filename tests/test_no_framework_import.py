"""Reading a file never imports torch, tensorflow or keras (checked in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import weightscope

FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras", "jax", "onnx")

CHECK = f"""
import sys
from weightscope.cli import main
codes = [main(["inspect", sys.argv[1]]), main(["inspect", sys.argv[1], "--json"]),
         main(["export", sys.argv[1], "-o", sys.argv[2]])]
assert codes == [0, 0, 0], codes
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {set(FRAMEWORKS)!r})
print("FRAMEWORKS:", loaded)
"""


def keras_files(tmp_path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3)])
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    return [tmp_path / "m.keras", tmp_path / "m.weights.h5"]


def test_inspect_and_export_import_no_framework(tmp_path):
    for path in [weightscope.example_path(), *keras_files(tmp_path)]:
        result = subprocess.run(
            [sys.executable, "-c", CHECK, str(path), str(tmp_path / "out.npz")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "FRAMEWORKS: []" in result.stdout, result.stdout
