"""Small real models the file-level tests save in every format: a conv, a batch norm and a dense
layer on an 8x8x3 input, in Keras (2 or 3) and in PyTorch, with seeded weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def keras_conv_bn_dense(K: Any, filters: int, outputs: int, seed: int) -> Any:
    """``K`` is ``keras`` or ``tf_keras``. Weights are drawn N(0, 1), so that no layer looks
    untrained."""
    model = K.Sequential(
        [
            K.Input((8, 8, 3)),
            K.layers.Conv2D(filters, 3, name="conv"),
            K.layers.BatchNormalization(name="bn"),
            K.layers.Flatten(),
            K.layers.Dense(outputs, name="dense"),
        ]
    )
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


class ConvBnLinear(torch.nn.Module):
    def __init__(self, filters: int, outputs: int) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, filters, 3)
        self.bn = torch.nn.BatchNorm2d(filters)
        self.fc = torch.nn.Linear(filters * 6 * 6, outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.bn(self.conv(x)), 1))


def torch_conv_bn_linear(filters: int, outputs: int, seed: int) -> ConvBnLinear:
    """Seeded with torch's own default initialisation, in eval mode."""
    torch.manual_seed(seed)
    return ConvBnLinear(filters, outputs).eval()
