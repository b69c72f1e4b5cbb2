"""The bundled example model: a small CNN trained on scikit-learn's 8x8 digits, as a Keras
``.h5`` and, with the same trained weights, a PyTorch state dict and an ONNX file.

Made by ``scripts/make_example_model.py`` (deterministic); see the README.
"""

from pathlib import Path

EXAMPLE_FILE = "digits_cnn.h5"
EXAMPLE_FILES = {"keras": EXAMPLE_FILE, "pytorch": "digits_cnn.pt", "onnx": "digits_cnn.onnx"}
"""The example in each framework's format: the same weights, the same layer names (ONNX: node
names such as ``/conv1/Conv``)."""


def example_path(framework: str = "keras") -> Path:
    """Path of the bundled example model in ``framework``'s format: ``keras`` (``.h5``, the
    default), ``pytorch`` (a ``torch.save`` state dict, ``.pt``) or ``onnx`` (``.onnx``)."""
    try:
        name = EXAMPLE_FILES[framework]
    except KeyError:
        choices = ", ".join(EXAMPLE_FILES)
        raise ValueError(f"no example for {framework!r}: choose one of {choices}") from None
    return Path(__file__).with_name(name)
