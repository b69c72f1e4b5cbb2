"""Each framework's conventions, as data: where a layer's config records each quantity, what a
file leaves unsaid (batch-norm eps and momentum, whether a bias was asked for), which
initializer draws a fresh kernel and by which fans, and the words its users know.

A layer's :attr:`~weightscope.model.Layer.convention` comes from this table (an ONNX file
written by PyTorch's exporter draws its kernels by PyTorch's rule). Analysis, comparison and
reporters read the convention's fields; nothing outside ``formats/`` asks which framework a
layer came from."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

STRIDE_KEYS = ("strides", "stride")
"""Where a conv's config records its stride: Keras and ONNX ``strides``, PyTorch ``stride``."""
DILATION_KEYS = ("dilation_rate", "dilation", "dilations")
"""Keras ``dilation_rate``, PyTorch ``dilation``, ONNX ``dilations``."""
EPSILON_KEYS = ("epsilon", "eps")
"""A normalisation's eps: Keras and ONNX ``epsilon``, PyTorch ``eps``."""

KERAS_INIT = "keras"
"""Kernels drawn by the initializer the layer config declares, else ``glorot_uniform``, with
Keras' fans (receptive field x input or output channels)."""
PYTORCH_INIT = "pytorch"
"""Kernels drawn by ``kaiming_uniform_(a=sqrt(5))`` with PyTorch's fans."""
NO_INIT = "none"
"""No known default initializer (ONNX written by other exporters)."""


@dataclass(frozen=True)
class BatchNormDefaults:
    """Where batch norm's eps and momentum sit in a layer config, and their defaults."""

    eps_key: str
    eps: float
    momentum_key: str
    momentum: float
    momentum_weights_new: bool
    """True where ``momentum`` weights the new batch statistic (PyTorch: Keras' momentum is
    1 - PyTorch's); False where it weights the old moving one (Keras, ONNX)."""
    defaults_by_spec: bool
    """True where the format's specification fixes the default (ONNX), so a value the file
    leaves out is known; False where it is only the framework's usual default."""


@dataclass(frozen=True)
class Convention:
    name: str
    """Key of this table (``keras``, ``pytorch``, ``onnx``; ``unknown`` for anything else)."""
    display_name: str
    """The framework as its users write it (``PyTorch``)."""
    config_keys: Mapping[str, str] = field(default_factory=dict)
    """Where each quantity a parameter formula needs sits in a layer's config."""
    records_input_channels: bool = True
    """False where layer configs never record input channels (Keras)."""
    bias_source: str = "bias from the stored tensors"
    """How the params check learns whether a bias was asked for, when the config does not say."""
    out_channels_word: str = "output channels"
    """What the output channels of a conv are called (Keras: ``filters``)."""
    depthwise_has_multiplier: bool = False
    """True where a depthwise conv is a layer of its own with a depth multiplier, stored
    ``(*k, in, M)`` (Keras); False where it is a conv with groups == in_channels."""
    batch_norm_has_affine: bool = False
    """True where one ``affine`` flag says whether gamma and beta exist and
    ``track_running_stats`` whether moving statistics do (PyTorch); False where ``scale`` and
    ``center`` say it apart and moving statistics always exist (Keras)."""
    layer_norm_flags: bool = False
    """True where a layer norm's config says ``scale``/``center``/``rms_scaling`` (Keras)."""
    layer_norm_affine_unread: bool = False
    """True where a layer norm's ``elementwise_affine`` is not read and gamma/beta come from the
    stored tensors (PyTorch)."""
    flattens_channels_last: bool = False
    """True where ``Flatten`` reads feature maps as ``(h, w, c)`` (Keras); False where NCHW maps
    flatten as ``(c, h, w)``."""
    batch_norm: BatchNormDefaults | None = None
    initializer: str = NO_INIT
    """How a fresh kernel is drawn: :data:`KERAS_INIT`, :data:`PYTORCH_INIT` or
    :data:`NO_INIT`."""


_KERAS_KEYS = {
    "out": "filters", "kernel": "kernel_size", "groups": "groups", "use_bias": "use_bias",
    "multiplier": "depth_multiplier", "units": "units", "center": "center", "scale": "scale",
    "rms_scaling": "rms_scaling", "vocab": "input_dim", "width": "output_dim",
}  # fmt: skip

_PYTORCH_KEYS = {
    "out": "out_channels", "in": "in_channels", "kernel": "kernel_size", "groups": "groups",
    "units": "out_features", "in_features": "in_features", "features": "num_features",
    "affine": "affine", "running": "track_running_stats", "normalized": "normalized_shape",
    "vocab": "num_embeddings", "width": "embedding_dim",
}  # fmt: skip

_KERAS_KEYS = {
    "out": "filters", "kernel": "kernel_size", "groups": "groups", "use_bias": "use_bias",
    "multiplier": "depth_multiplier", "units": "units", "center": "center", "scale": "scale",
    "rms_scaling": "rms_scaling", "vocab": "input_dim", "width": "output_dim",
}  # fmt: skip

_PYTORCH_KEYS = {
    "out": "out_channels", "in": "in_channels", "kernel": "kernel_size", "groups": "groups",
    "units": "out_features", "in_features": "in_features", "features": "num_features",
    "affine": "affine", "running": "track_running_stats", "normalized": "normalized_shape",
    "vocab": "num_embeddings", "width": "embedding_dim",
}  # fmt: skip

KERAS = Convention(
    name="keras",
    display_name="Keras",
    config_keys=_KERAS_KEYS,
    records_input_channels=False,
    out_channels_word="filters",
    depthwise_has_multiplier=True,
    layer_norm_flags=True,
    flattens_channels_last=True,
    batch_norm=BatchNormDefaults("epsilon", 1e-3, "momentum", 0.99, False, False),
    initializer=KERAS_INIT,
)

PYTORCH = Convention(
    name="pytorch",
    display_name="PyTorch",
    config_keys=_PYTORCH_KEYS,
    bias_source="bias from the stored tensors (PyTorch modules do not record bias=False)",
    batch_norm_has_affine=True,
    layer_norm_affine_unread=True,
    batch_norm=BatchNormDefaults("eps", 1e-5, "momentum", 0.1, True, False),
    initializer=PYTORCH_INIT,
)

ONNX = Convention(
    name="onnx",
    display_name="ONNX",
    config_keys={"kernel": "kernel_shape", "groups": "group"},
    bias_source="bias from the stored tensors (an ONNX node has an optional bias input)",
    batch_norm=BatchNormDefaults("epsilon", 1e-5, "momentum", 0.9, False, True),
)

ONNX_FROM_PYTORCH = Convention(
    **{**ONNX.__dict__, "name": "onnx", "initializer": PYTORCH_INIT},
)
"""ONNX written by PyTorch's exporter: ONNX's config keys, PyTorch's initializers."""

TFLITE = Convention(
    name="tflite",
    display_name="TFLite",
    bias_source="bias from the stored tensors (an operator has an optional bias input)",
    flattens_channels_last=True,  # tensors are NHWC, as in the Keras model it was converted from
)
"""TFLite operators keep no configs: kinds and shapes come from the operators and tensors."""

GGUF = Convention(
    name="gguf",
    display_name="GGUF",
    bias_source="bias from the stored tensors (a GGUF file keeps no layer configs)",
)
"""GGUF files keep tensors and metadata, no layer configs: kinds come from names and shapes."""

UNKNOWN = Convention(name="unknown", display_name="unknown framework")

CONVENTIONS: Mapping[str, Convention] = {c.name: c for c in (KERAS, PYTORCH, ONNX, TFLITE, GGUF)}


def lookup(framework: str | None, producer: str | None = None) -> Convention:
    """The convention of a layer read from ``framework``'s file, written by ``producer`` (an
    ONNX exporter's name and version, where the file says)."""
    convention = CONVENTIONS.get(framework or "", UNKNOWN)
    if convention is ONNX and _written_by_pytorch(producer):
        return ONNX_FROM_PYTORCH
    return convention


def display_name(framework: str) -> str:
    """``framework`` as its users write it (``PyTorch``), or as given when unknown."""
    convention = CONVENTIONS.get(framework)
    return framework if convention is None else convention.display_name


def _written_by_pytorch(producer: str | None) -> bool:
    return bool(producer) and str(producer).strip().lower().startswith("pytorch")
