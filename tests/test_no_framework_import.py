"""Reading a file never imports torch, tensorflow or keras, nor (for ONNX) onnx, protobuf or
ml_dtypes; refusing a file and printing help import nothing heavy either (checked in a fresh
interpreter)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import weightscope

pytestmark = pytest.mark.slow  # fresh interpreters, one per file

FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras", "jax", "onnx")

# Reading an ONNX file decodes its protobuf with weightscope's own wire reader: neither onnx, nor
# protobuf (which onnx would bring), nor ml_dtypes (which onnx imports, ~0.8 s), nor anything that
# runs a model is imported.
ONNX_FILE_FORBIDDEN = (*FRAMEWORKS, "onnxruntime", "google.protobuf", "ml_dtypes")

HEAVY = (
    *ONNX_FILE_FORBIDDEN,
    "matplotlib",
    "h5py",
    "pandas",
    "pyarrow",
    "dask",
    "distributed",
    "ipywidgets",
    "scipy",
)
"""What neither ``--help`` nor refusing a file of no known format may import (numpy and rich
are imported with the package)."""

LOADED = """
def loaded(names):
    return sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
"""

CHECK_TEMPLATE = (
    """
import sys
from weightscope.cli.app import main
codes = [main(["inspect", sys.argv[1]]), main(["inspect", sys.argv[1], "--json"]),
         main(["export", sys.argv[1], "-o", sys.argv[2]])]
assert codes == [0, 0, 0], codes
"""
    + LOADED
    + """
print("FRAMEWORKS:", loaded({forbidden!r}))
"""
)

CHECK = CHECK_TEMPLATE.format(forbidden=FRAMEWORKS)
ONNX_CHECK = CHECK_TEMPLATE.format(forbidden=ONNX_FILE_FORBIDDEN)

REFUSE_CHECK = (
    """
import sys
from weightscope.cli.app import main
assert main(["inspect", sys.argv[1]]) == 2
"""
    + LOADED
    + f"""
print("HEAVY:", loaded({HEAVY!r}))
"""
)

HELP_CHECK = (
    """
import sys
from weightscope.cli.app import main
from weightscope.cli.options import COMMANDS
for command in [[], *([name] for name in COMMANDS)]:
    try:
        main([*command, "--help"])
    except SystemExit as exc:
        assert exc.code == 0, (command, exc.code)
    else:
        raise AssertionError(f"{command} --help did not exit")
"""
    + LOADED
    + f"""
print("HEAVY:", loaded({HEAVY!r}))
"""
)


def run_check(check: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", check, *map(str, args)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


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
        result = run_check(CHECK, path, tmp_path / "out.npz")
        assert result.returncode == 0, result.stderr
        assert "FRAMEWORKS: []" in result.stdout, result.stdout


def tf_checkpoint_files(tmp_path):
    """A tf-keras model's checkpoint bundle, written by tf.train.Checkpoint with its optimizer's
    slots, named by its .index file and by its prefix."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.Input((6, 6, 2)), tf_keras.layers.Conv2D(3, 3)])
    optimizer = tf_keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    prefix = tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp_path / "ckpt"))
    return [Path(prefix + ".index"), Path(prefix)]


def test_tf_checkpoints_import_no_framework(tmp_path):
    for path in tf_checkpoint_files(tmp_path):
        result = run_check(CHECK, path, tmp_path / "out.npz")
        assert result.returncode == 0, result.stderr
        assert "FRAMEWORKS: []" in result.stdout, result.stdout


def savedmodel_files(tmp_path):
    """A tf-keras model saved as a SavedModel (Keras metadata), the same layer exported by
    Keras 3 (the graph's ops) and a tf.Module saved by tf.saved_model.save: read by
    weightscope's own protobuf decoding, the folder and its saved_model.pb."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = pytest.importorskip("tensorflow")
    tf_keras = pytest.importorskip("tf_keras")
    keras = pytest.importorskip("keras")
    model = tf_keras.Sequential([tf_keras.Input((6, 6, 2)), tf_keras.layers.Conv2D(3, 3)])
    model.save(tmp_path / "tf_keras", save_format="tf")
    exported = keras.Sequential([keras.Input((6, 6, 2)), keras.layers.Conv2D(3, 3)])
    exported.export(tmp_path / "keras3", verbose=False)
    module = tf.Module()
    module.w = tf.Variable(tf.ones((4, 3)))
    module.f = tf.function(lambda x: tf.matmul(x, module.w), [tf.TensorSpec((None, 4))])
    tf.saved_model.save(module, str(tmp_path / "module"))
    return [tmp_path / "tf_keras", tmp_path / "keras3", tmp_path / "module" / "saved_model.pb"]


def test_savedmodels_import_no_framework_or_protobuf(tmp_path):
    for path in savedmodel_files(tmp_path):
        result = run_check(ONNX_CHECK, path, tmp_path / "out.npz")
        assert result.returncode == 0, result.stderr
        assert "FRAMEWORKS: []" in result.stdout, result.stdout
        assert '"format": "savedmodel"' in subprocess.run(
            [sys.executable, "-m", "weightscope", "inspect", str(path), "--json"],
            capture_output=True, text=True, timeout=120, check=False,
        ).stdout  # fmt: skip


def onnx_files(tmp_path):
    """A small Conv model saved whole (its 4.6 KB kernel inside the .onnx, read by offset) and
    with its tensors in an external data file; and one whose weights are 8-bit floats (decoded
    by weightscope: onnx would use ml_dtypes)."""
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
    float8 = tmp_path / "float8" / "m.onnx"
    float8.parent.mkdir()
    bits = rng.integers(0, 0x70, (16, 8, 3, 3), dtype=np.uint8)  # finite, positive
    kernel = TensorProto(name="W", data_type=TensorProto.FLOAT8E4M3FN, dims=bits.shape)
    kernel.raw_data = bits.tobytes()
    graph = helper.make_graph(
        [helper.make_node("Conv", ["X", "W"], ["Y"], name="conv")],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8, 5, 5])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [kernel],
    )
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), float8)
    return [inline, external, float8]


def test_onnx_files_import_no_runtime_or_framework(tmp_path):
    for path in onnx_files(tmp_path):
        result = run_check(ONNX_CHECK, path, tmp_path / "out.npz")
        assert result.returncode == 0, result.stderr
        assert '"framework": "onnx"' in result.stdout  # read by the ONNX adapter
        assert '"float8_e4m3fn"' in result.stdout or "float8" not in str(path)
        assert "FRAMEWORKS: []" in result.stdout, result.stdout


def tflite_files(tmp_path):
    """A dense layer as .tflite with its weights inside the flatbuffer and in the offset/size
    form of files over 2 GB (written with TensorFlow's schema objects, read without them)."""
    pytest.importorskip("tensorflow")
    import numpy as np
    import tflite_builders

    weights = np.arange(12, dtype=np.float32).reshape(3, 4)
    bias = np.ones(3, np.float32)
    paths = []
    for offset_form in (False, True):
        path = tmp_path / f"dense_{offset_form}.tflite"
        path.write_bytes(tflite_builders.dense(weights, bias, offset_form=offset_form))
        paths.append(path)
    return paths


def test_tflite_files_import_no_framework(tmp_path):
    """The flatbuffer is parsed by weightscope itself: neither tensorflow, nor the tflite
    runtime, nor the flatbuffers package is imported."""
    forbidden = (*FRAMEWORKS, "tflite_runtime", "ai_edge_litert", "flatbuffers")
    check = CHECK_TEMPLATE.format(forbidden=forbidden)
    for path in tflite_files(tmp_path):
        result = run_check(check, path, tmp_path / "out.npz")
        assert result.returncode == 0, result.stderr
        assert '"framework": "tflite"' in result.stdout  # read by the TFLite reader
        assert "FRAMEWORKS: []" in result.stdout, result.stdout


def test_gguf_files_import_no_framework_nor_gguf(tmp_path):
    """GGUF is parsed and dequantized by weightscope itself: the ``gguf`` package (which wrote
    the file) is never imported."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    values = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    q8 = gguf.GGMLQuantizationType.Q8_0
    writer.add_tensor("blk.0.ffn_up.weight", gguf.quants.quantize(values, q8), raw_dtype=q8)
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    check = CHECK_TEMPLATE.format(forbidden=(*FRAMEWORKS, "gguf"))
    result = run_check(check, path, tmp_path / "out.npz")
    assert result.returncode == 0, result.stderr
    assert '"framework": "gguf"' in result.stdout
    assert "FRAMEWORKS: []" in result.stdout, result.stdout


GRID_CHECK = (
    """
import sys
from weightscope.cli.app import main
assert main(["inspect", sys.argv[1], "--no-stats"]) == 0
assert main(["inspect", sys.argv[1], "--json", "--no-stats"]) == 0
"""
    + LOADED
    + """
print("LISTED:", loaded(["gguf"]))
assert main(["inspect", sys.argv[1]]) == 0
print("STATS:", loaded(["gguf"])[:1])
"""
)


def test_gguf_package_is_imported_only_for_the_values_of_a_grid_tensor(tmp_path):
    """A GGUF file holding an IQ2_XXS tensor is listed without the ``gguf`` package; only its
    values (statistics here) import it, to dequantize the grid type."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    path = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    raw = np.zeros((4, 66), np.uint8)
    iq2 = gguf.GGMLQuantizationType.IQ2_XXS
    writer.add_tensor("blk.0.ffn_up.weight", raw, raw_dtype=iq2)
    writer.add_tensor("blk.0.ffn_norm.weight", np.ones(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    result = run_check(GRID_CHECK, path)
    assert result.returncode == 0, result.stderr
    assert "LISTED: []" in result.stdout, result.stdout
    assert "STATS: ['gguf']" in result.stdout, result.stdout


def test_refusing_an_unknown_file_imports_nothing_heavy(tmp_path):
    for name, content in (("notes.txt", b"just some text\n" * 50), ("blob", bytes(range(256)))):
        path = tmp_path / name
        path.write_bytes(content)
        result = run_check(REFUSE_CHECK, path)
        assert result.returncode == 0, result.stderr
        assert "unknown format" in result.stderr
        assert "HEAVY: []" in result.stdout, result.stdout


def test_help_of_every_command_imports_nothing_heavy():
    result = run_check(HELP_CHECK)
    assert result.returncode == 0, result.stderr
    assert "usage: weightscope" in result.stdout
    assert "HEAVY: []" in result.stdout, result.stdout[-2000:]


START_UP_CHECK = (
    """
import sys
from weightscope.cli.app import main
assert main(["inspect", sys.argv[1]]) == 0
"""
    + LOADED
    + """
print("LOADED:", loaded(["weightscope.formats", "weightscope.cli.commands"]))
"""
)


def test_reading_a_pytorch_file_imports_only_the_readers_tried_and_its_command():
    """Start-up: the readers are imported as the registry tries them (Keras, then PyTorch, which
    claims the file), and only the command run is imported."""
    path = Path(weightscope.__file__).parent / "examples" / "digits_cnn.pt"
    result = run_check(START_UP_CHECK, path)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.split("LOADED:", 1)[1]
    assert "weightscope.formats.pytorch.reader" in loaded
    assert "weightscope.cli.commands.inspect" in loaded
    for untried in ("gguf.reader", "onnx.reader", "tflite.reader", "tensorflow.savedmodel",
                    "tensorflow.reader"):  # fmt: skip
        assert f"'weightscope.formats.{untried}'" not in loaded
    assert "weightscope.cli.commands.export" not in loaded
