"""TFLite operators with weights beyond the convs and dense layers, as TensorFlow's converter
writes them and proven against its interpreter: ``CONV_3D_TRANSPOSE`` (filter
``(kd, kh, kw, out, in)``, a Keras bias added by an ``ADD`` after it) and an embedding's
``GATHER`` of a constant table (float32, float16 and dynamic-range int8). Recurrent layers
are converted only with select TF ops or a fixed batch (``UNIDIRECTIONAL_SEQUENCE_LSTM``), and
their constants stay listed as ``unknown`` (see docs/formats.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")
pytest.importorskip("torch")

import reference  # noqa: E402

import weightscope  # noqa: E402
from weightscope.kinds import Kind  # noqa: E402

ATOL = RTOL = 1e-5


def _convert(model: Any, mode: str) -> bytes:
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    return converter.convert()


def _interpreter(path: Path) -> Any:
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def _run(interpreter: Any, x: np.ndarray) -> np.ndarray:
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def _stored_equal_the_interpreter(model: weightscope.Model, interpreter: Any) -> None:
    details = {d["name"]: d for d in interpreter.get_tensor_details()}
    for layer in model.layers:
        for tensor in layer.tensors:
            stored = interpreter.get_tensor(details[tensor.name]["index"])
            np.testing.assert_array_equal(tensor.stored(), stored, err_msg=tensor.name)


@pytest.mark.parametrize("mode", ["float32", "float16"])
def test_conv3d_transpose_recomputes_the_interpreter(mode: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inputs = keras.Input((3, 4, 3, 2), batch_size=1)
    layer = keras.layers.Conv3DTranspose(3, (2, 3, 2), strides=(2, 1, 2), name="up")
    model = keras.Model(inputs, layer(inputs))
    layer.set_weights([(rng.normal(size=w.shape) * 0.5).astype(np.float32) for w in layer.weights])
    path = tmp_path / f"up_{mode}.tflite"
    path.write_bytes(_convert(model, mode))
    interpreter = _interpreter(path)
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert "CONV_3D_TRANSPOSE" in ops and "ADD" in ops  # the bias, added after the conv
    x = rng.normal(size=(1, 3, 4, 3, 2)).astype(np.float32)
    expected = _run(interpreter, x)
    with weightscope.load(path) as read:
        up = next(layer for layer in read.layers if layer.kind is Kind.CONV_TRANSPOSE3D)
        kernel = next(t for t in up.tensors if t.role == "kernel")
        bias = next(t for t in up.tensors if t.role == "bias")
        assert (kernel.native_shape, kernel.native_layout) == ((2, 3, 2, 3, 2), "DHWOI")
        assert kernel.canonical_shape == (3, 2, 2, 3, 2)
        assert "ADD after the conv" in (up.note or "")
        assert ("float16" in (up.note or "")) == (mode == "float16")
        assert read.params.total == model.count_params()
        _stored_equal_the_interpreter(read, interpreter)
        mine = reference.conv_transpose(
            reference.channels_first(x), kernel.canonical(), bias.canonical(), stride=(2, 1, 2)
        )
    np.testing.assert_allclose(reference.channels_last(mine), expected, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(expected, np.asarray(model(x)), rtol=1e-2 if mode == "float16"
                               else RTOL, atol=1e-2 if mode == "float16" else ATOL)  # fmt: skip


@pytest.mark.parametrize("mode", ["float32", "float16", "dynamic"])
def test_embedding_gather_recomputes_the_interpreter(mode: str, tmp_path: Path) -> None:
    """A table of 40 x 32 (over the 1024 elements dynamic-range conversion quantizes)."""
    rng = np.random.default_rng(1)
    ids = keras.Input((5,), batch_size=1, dtype="int32")
    layer = keras.layers.Embedding(40, 32, name="words")
    model = keras.Model(ids, layer(ids))
    layer.set_weights([rng.normal(size=(40, 32)).astype(np.float32)])
    path = tmp_path / f"words_{mode}.tflite"
    path.write_bytes(_convert(model, mode))
    interpreter = _interpreter(path)
    x = np.array([[3, 0, 39, 3, 17]], np.int32)
    expected = _run(interpreter, x)
    with weightscope.load(path) as read:
        words = next(layer for layer in read.layers if layer.kind is Kind.EMBEDDING)
        (table,) = words.tensors
        assert (table.role, table.native_shape, table.native_layout) == (
            "embeddings", (40, 32), "VE"
        )  # fmt: skip
        assert table.dtype == {"float32": "float32", "float16": "float16"}.get(mode, "int8")
        assert (table.quantization is not None) == (mode == "dynamic")
        assert read.params.total == model.count_params() == 40 * 32
        _stored_equal_the_interpreter(read, interpreter)
        rows = table.canonical()[x[0]]
    np.testing.assert_allclose(rows, expected[0], rtol=RTOL, atol=ATOL)


def test_a_gather_of_shapes_is_no_embedding(tmp_path: Path) -> None:
    """A Dense on a sequence converts to GATHERs of constant shape vectors around its
    FULLY_CONNECTED: they stay listed as constants, not embeddings."""
    inputs = keras.Input((5, 3))
    dense = keras.layers.Dense(4, name="fc", bias_initializer="ones")  # a zero bias is dropped
    model = keras.Model(inputs, dense(inputs))
    path = tmp_path / "seq.tflite"
    path.write_bytes(_convert(model, "float32"))
    with weightscope.load(path) as read:
        kinds = {layer.kind for layer in read.layers}
        assert Kind.EMBEDDING not in kinds and Kind.DENSE in kinds
        assert read.params.total == model.count_params()
