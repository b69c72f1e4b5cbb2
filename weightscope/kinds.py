"""What a layer is: its :class:`Kind`, with the questions every room asks of it.

A ``Kind`` is a ``str`` (``"conv2d"``), so it prints, compares and serialises as the name the
JSON output and the layout table use; the predicates replace matching names by prefix."""

from __future__ import annotations

from enum import Enum


class Kind(str, Enum):
    CONV1D = "conv1d"
    CONV2D = "conv2d"
    CONV3D = "conv3d"
    CONV_TRANSPOSE1D = "conv_transpose1d"
    CONV_TRANSPOSE2D = "conv_transpose2d"
    CONV_TRANSPOSE3D = "conv_transpose3d"
    DEPTHWISE_CONV1D = "depthwise_conv1d"
    DEPTHWISE_CONV2D = "depthwise_conv2d"
    DEPTHWISE_CONV3D = "depthwise_conv3d"
    SEPARABLE_CONV1D = "separable_conv1d"
    SEPARABLE_CONV2D = "separable_conv2d"
    DENSE = "dense"
    BATCH_NORM = "batch_norm"
    LAYER_NORM = "layer_norm"
    EMBEDDING = "embedding"
    LSTM = "lstm"
    GRU = "gru"
    SIMPLE_RNN = "simple_rnn"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @property
    def is_conv(self) -> bool:
        """A convolution of any family: ordinary, transposed, depthwise or separable."""
        return self.spatial_rank > 0

    @property
    def is_plain_conv(self) -> bool:
        """An ordinary (possibly grouped) convolution: ``conv1d``, ``conv2d``, ``conv3d``."""
        return self in (Kind.CONV1D, Kind.CONV2D, Kind.CONV3D)

    @property
    def is_transposed(self) -> bool:
        return self.value.startswith("conv_transpose")

    @property
    def is_depthwise(self) -> bool:
        return self.value.startswith("depthwise_conv")

    @property
    def is_separable(self) -> bool:
        return self.value.startswith("separable_conv")

    @property
    def spatial_rank(self) -> int:
        """1, 2 or 3 for convolutions, 0 for everything else."""
        return int(self.value[-2]) if self.value.endswith("d") and "conv" in self.value else 0

    @property
    def has_kernel(self) -> bool:
        """Whose principal tensor is a convolution or dense kernel."""
        return self.is_conv or self is Kind.DENSE

    @property
    def is_recurrent(self) -> bool:
        """An LSTM, GRU or simple RNN: one direction of one layer of a stack (its kernels in the
        canonical ``(gates, units, in)`` form)."""
        return self in (Kind.LSTM, Kind.GRU, Kind.SIMPLE_RNN)

    @property
    def is_unknown(self) -> bool:
        return self is Kind.UNKNOWN


LAYER_KINDS: tuple[str, ...] = tuple(kind.value for kind in Kind)
"""Every kind's name, in the order tables list them."""

KERNEL_KINDS = frozenset(kind for kind in Kind if kind.has_kernel)
"""Kinds whose principal tensor is a convolution or dense kernel."""
