"""The PyTorch module each layer of an ONNX file exported from PyTorch came from.

An ONNX layer is named after its node (``/layer1/layer1.0/conv1/Conv``, or ``node_Conv_63`` from
the dynamo exporter), which is how the file and Netron know it; the people who trained the model
know it as ``layer1.0.conv1``. That module path is read from the file, never guessed from
shapes: from the names of the layer's stored tensors where the exporter kept the state-dict names
(``layer1.0.conv1.weight``), else from the scope the TorchScript exporter writes into node names
(``/layer1/layer1.0/conv1/Conv``). A layer whose module cannot be read, or whose module is
shared with another layer (``nn.MultiheadAttention`` becomes several MatMul nodes), keeps only
its node name."""

from __future__ import annotations

import re
from collections import Counter

from weightscope.model import Layer

INITIALIZER = "initializer"
"""``class_name`` of the layers made of stored tensors that no node reads."""

_STATE_NAME = re.compile(r"(?P<path>[A-Za-z_]\w*(?:\.\w+)*)\.[A-Za-z_]\w*")
"""``conv1.weight``, ``layer1.0.bn1.running_mean``: a module path, a dot, an attribute."""
_SCOPED_NODE = re.compile(r"/(?P<scope>[^/].*)/(?P<op>[A-Za-z]\w*?)(?:_\d+)?")
"""``/layer1/layer1.0/conv1/Conv``, ``/attn/MatMul_1``: the exporter's scope, then the op."""


def name_modules(layers: list[Layer], producer: str | None) -> None:
    """Set :attr:`Layer.module` on the layers of a file that PyTorch's exporter wrote, where the
    file says which module each came from and no other layer came from the same one."""
    if not (producer or "").strip().lower().startswith("pytorch"):
        return
    found = {id(layer): module_of(layer) for layer in layers}
    taken = Counter(found.values())
    names = {layer.name for layer in layers}
    for layer in layers:
        module = found[id(layer)]
        if (
            module is not None
            and taken[module] == 1
            and (module == layer.name or module not in names)
        ):
            layer.module = module


def module_of(layer: Layer) -> str | None:
    """The module path the layer's own tensors or node name record, or None."""
    if layer.class_name == INITIALIZER:
        return None
    return _from_tensors(layer) or _from_scope(layer.name, layer.class_name)


def _from_tensors(layer: Layer) -> str | None:
    """``layer1.0.conv1`` when every tensor the layer holds itself is ``layer1.0.conv1.<attr>``
    (exports without constant folding keep the state dict's names; folded ones name their tensors
    ``onnx::Conv_138``)."""
    paths = set()
    for tensor in layer.tensors:
        if tensor.shared_with is not None:
            continue
        match = _STATE_NAME.fullmatch(tensor.name)
        if match is None:
            return None
        paths.add(match["path"])
    return paths.pop() if len(paths) == 1 else None


def _from_scope(node_name: str, op_type: str | None) -> str | None:
    """``layer1.0.conv1`` from ``/layer1/layer1.0/conv1/Conv``: each scope is a module's
    attribute, or, for a child of a container, the container's scope, a dot and the child's
    index (``layer1.0`` under ``layer1``, ``downsample.0`` under ``downsample``)."""
    match = _SCOPED_NODE.fullmatch(node_name)
    if match is None or match["op"] != op_type:
        return None
    path = last = ""
    for part in match["scope"].split("/"):
        if not part:
            return None
        if last and part.startswith(last + "."):  # a child of the scope before: replace it
            path = path[: len(path) - len(last)] + part
        else:
            path = f"{path}.{part}" if path else part
        last = part
    return path
