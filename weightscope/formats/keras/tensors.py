"""The tensors one stored Keras variable holds, whatever holds it (an HDF5 file, a SavedModel or
checkpoint bundle, a live model): itself, or a recurrent bias's input and recurrent parts, each
with its layout from the layout table where the rank fits. Apart from :mod:`.layers` so that the
TensorFlow readers use it without importing h5py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from weightscope import layouts
from weightscope.formats.keras import catalog, recurrent
from weightscope.model import PartSource, Tensor, TensorSource, part_shape, part_text


def layout_for(
    layer_type: catalog.KerasLayerType | None, role: str, shape: tuple[int, ...]
) -> str | None:
    if layer_type is None:
        return None
    layout = layer_type.layouts.get(role)
    return layout if layout is not None and layouts.rank(layout) == len(shape) else None


def parts(
    class_name: str | None,
    layer_type: catalog.KerasLayerType | None,
    role: str,
    shape: tuple[int, ...],
) -> list[tuple[str, recurrent.Index | None]]:
    """The canonical roles one stored variable holds, with the index of each in it: one for
    most; a recurrent layer's bias of input and recurrent biases two."""
    if layer_type is None or role != "bias" or not recurrent.is_recurrent(class_name):
        return [(role, None)]
    return recurrent.bias_parts(class_name or "", shape)


def variable_tensors(
    stored_name: str,
    role: str,
    stored_shape: tuple[int, ...],
    dtype: str,
    source: TensorSource,
    trainable: bool | None,
    layer_type: catalog.KerasLayerType | None,
    class_name: str | None,
    declare: Callable[[str, tuple[int, ...]], Any] | None = None,
) -> list[Tensor]:
    """The tensors one stored Keras variable holds, whatever file or object held it: itself,
    or a recurrent bias's input and recurrent parts; each with the layer type's layout where
    its rank fits, a depthwise kernel with one group per input channel, and the initializer
    ``declare(role, shape)`` says its config declared."""
    tensors = []
    for part_role, index in parts(class_name, layer_type, role, stored_shape):
        shape = stored_shape if index is None else part_shape(stored_shape, index)
        layout = layout_for(layer_type, part_role, shape)
        depthwise = layout is not None and layout.endswith("IM")
        tensors.append(
            Tensor(
                name=stored_name,
                role=part_role,
                native_shape=shape,
                native_layout=layout,
                dtype=dtype,
                trainable=trainable,
                source=source if index is None else PartSource(source, index),
                groups=shape[-2] if depthwise else 1,
                declared_init=declare(part_role, shape) if declare is not None else None,
                part=None if index is None else part_text(index),
            )
        )
    return tensors


def depthwise_groups(tensors: list[Tensor], groups: int) -> int:
    """A layer's groups: a depthwise kernel's (one per input channel), else ``groups``."""
    return next((t.groups for t in tensors if t.groups > 1), groups)
