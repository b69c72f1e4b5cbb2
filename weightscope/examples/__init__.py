"""The bundled example model: a small CNN trained on scikit-learn's 8x8 digits.

Made by ``scripts/make_example_model.py`` (deterministic); see the README.
"""

from pathlib import Path

EXAMPLE_FILE = "digits_cnn.h5"


def example_path() -> Path:
    """Path of the bundled example Keras ``.h5`` model."""
    return Path(__file__).with_name(EXAMPLE_FILE)
