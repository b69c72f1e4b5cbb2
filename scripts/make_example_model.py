"""Train and save the bundled example model: a small CNN on scikit-learn's 8x8 digits.

Deterministic (fixed seeds, deterministic TensorFlow ops, one thread): running it again writes a
model with the same weights. Takes a few seconds on a CPU.

    python scripts/make_example_model.py            # writes weightscope/examples/digits_cnn.h5
    python scripts/make_example_model.py OUT.h5     # writes elsewhere

Needs the test dependencies (tensorflow-cpu, scikit-learn); weightscope itself never does.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["PYTHONHASHSEED"] = "0"

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = Path(__file__).resolve().parents[1] / "weightscope" / "examples" / "digits_cnn.h5"
SEED = 0


def build() -> keras.Model:
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((8, 8, 1), name="digit"),
            layers.Conv2D(8, 3, padding="same", name="conv1"),
            layers.BatchNormalization(name="bn1"),
            layers.ReLU(name="relu1"),
            layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dwconv2"),
            layers.Conv2D(16, 1, name="pwconv2"),
            layers.ReLU(name="relu2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(10, name="logits"),
        ],
        name="digits_cnn",
    )


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else OUT
    keras.utils.set_random_seed(SEED)
    tf.config.experimental.enable_op_determinism()
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")[..., None]
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=0.2, random_state=SEED, stratify=digits.target
    )
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, epochs=15, batch_size=64, shuffle=True, verbose=0)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    checksum = sum(float(np.sum(w)) for w in model.get_weights())
    print(f"test accuracy {accuracy:.3f}; wrote {out} ({out.stat().st_size:,} bytes)")
    print(f"params {model.count_params():,}, checksum {checksum:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
