"""The bundled example: its whole forward pass recomputed from the exported canonical tensors
matches Keras' predictions, and the script in the repo really produces it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")
sklearn_datasets = pytest.importorskip("sklearn.datasets")

import torch.nn.functional as F  # noqa: E402

import weightscope  # noqa: E402
from weightscope.export import export_npz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def forward_from_canonical(w: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """The digits CNN written against canonical (out, in/groups, kh, kw) kernels, NCHW."""
    t = {k: torch.from_numpy(v).double() for k, v in w.items()}
    x = torch.from_numpy(images).double().permute(0, 3, 1, 2)
    x = F.conv2d(x, t["conv1/kernel"], t["conv1/bias"], padding=1)
    x = F.batch_norm(x, t["bn1/moving_mean"], t["bn1/moving_variance"], t["bn1/gamma"],
                     t["bn1/beta"], training=False, eps=1e-3)  # fmt: skip
    x = F.relu(x)
    x = F.conv2d(x, t["dwconv2/kernel"], t["dwconv2/bias"], padding=1, groups=8)
    x = F.relu(F.conv2d(x, t["pwconv2/kernel"], t["pwconv2/bias"]))
    x = F.max_pool2d(x, 2)
    x = x.permute(0, 2, 3, 1).reshape(len(x), -1)  # Keras flattens (h, w, c)
    return F.linear(x, t["logits/kernel"], t["logits/bias"]).numpy()


def test_forward_pass_from_exported_tensors_matches_keras(tmp_path):
    digits = sklearn_datasets.load_digits()
    images = (digits.images[:64] / 16.0).astype("float32")[..., None]
    model = keras.models.load_model(weightscope.example_path(), compile=False)
    expected = model.predict(images, verbose=0)
    with weightscope.load(weightscope.example_path()) as loaded:
        export_npz(loaded, tmp_path / "w.npz")
    with np.load(tmp_path / "w.npz") as exported:
        got = forward_from_canonical(dict(exported), images)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    accuracy = np.mean(got.argmax(1) == digits.target[:64])
    assert accuracy > 0.9  # really trained, not at its initializer


def test_script_reproduces_the_bundled_model(tmp_path):
    out = tmp_path / "digits_cnn.h5"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_example_model.py"), str(out)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    with weightscope.load(out) as fresh, weightscope.load(weightscope.example_path()) as bundled:
        assert [layer.name for layer in fresh.layers] == [layer.name for layer in bundled.layers]
        for (_, a), (_, b) in zip(fresh.tensors(), bundled.tensors(), strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-5)
