"""Reading a file never imports torch, tensorflow or keras (checked in a fresh interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import weightscope

pytestmark = pytest.mark.slow  # fresh interpreters, one per file

FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras", "jax", "onnx")

# Reading an ONNX file uses onnx's own protobuf classes, so onnx may be imported then; nothing
# that runs a model may be.
ONNX_FILE_FORBIDDEN = ("torch", "tensorflow", "keras", "tf_keras", "jax", "onnxruntime")

CHECK_TEMPLATE = """
import sys
from weightscope.cli.app import main
codes = [main(["inspect", sys.argv[1]]), main(["inspect", sys.argv[1], "--json"]),
         main(["export", sys.argv[1], "-o", sys.argv[2]])]
assert codes == [0, 0, 0], codes
loaded = sorted(m for m in sys.modules if m.split(".")[0] in {forbidden!r})
print("FRAMEWORKS:", loaded)
"""

CHECK = CHECK_TEMPLATE.format(forbidden=set(FRAMEWORKS))
ONNX_CHECK = CHECK_TEMPLATE.format(forbidden=set(ONNX_FILE_FORBIDDEN))


def keras_files(tmp_path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3)])
    model.save(tmp_path / "m.keras")
    model.save_weights(tmp_path / "m.weights.h5")
    return [tmp_path / "m.keras", tmp_path / "m.weights.h5"]


def numpy_files(tmp_path):
    """An export of the example (read back by the NumPy reader) and a compressed np.savez."""
    import numpy as np

    from weightscope.reporters.npz import export_npz

    with weightscope.load(weightscope.example_path()) as model:
        export_npz(model, tmp_path / "export.npz")
    np.savez_compressed(tmp_path / "arrays.npz", **{"fc/kernel": np.ones((2, 3), np.float32)})
    return [tmp_path / "export.npz", tmp_path / "arrays.npz"]


def test_inspect_and_export_import_no_framework(tmp_path):
    for path in [weightscope.example_path(), *keras_files(tmp_path), *numpy_files(tmp_path)]:
        result = subprocess.run(
            [sys.executable, "-c", CHECK, str(path), str(tmp_path / "out.npz")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "FRAMEWORKS: []" in result.stdout, result.stdout


def onnx_files(tmp_path):
    """A small Conv model saved whole (its 4.6 KB kernel inside the .onnx, read by offset) and
    with its tensors in an external data file."""
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["X", "W", "B"], ["Y"], name="conv")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8, 5, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(rng.standard_normal((16, 8, 3, 3)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    inline = tmp_path / "inline" / "m.onnx"
    external = tmp_path / "external" / "m.onnx"
    inline.parent.mkdir()
    external.parent.mkdir()
    onnx.save_model(model, inline)
    onnx.save_model(model, external, save_as_external_data=True, location="w.bin", size_threshold=0)
    assert (external.parent / "w.bin").is_file()
    return [inline, external]


def test_onnx_files_import_no_runtime_or_framework(tmp_path):
    for path in onnx_files(tmp_path):
        result = subprocess.run(
            [sys.executable, "-c", ONNX_CHECK, str(path), str(tmp_path / "out.npz")],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert '"framework": "onnx"' in result.stdout  # read by the ONNX adapter
        assert "FRAMEWORKS: []" in result.stdout, result.stdout
