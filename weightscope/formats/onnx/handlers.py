"""Which operators weightscope reads as layers: the float ones (:mod:`.ops`), the recurrent
ones (:mod:`.recurrent`) and the quantized ones (:mod:`.quantized`), those of the default
domain and onnxruntime's contrib operators in the ``com.microsoft`` domain."""

from __future__ import annotations

from weightscope.formats.onnx import ops, quantized, recurrent
from weightscope.formats.onnx.ops import DEFAULT_DOMAINS, Handler
from weightscope.formats.onnx.proto import NodeProto

CONTRIB_DOMAIN = "com.microsoft"

HANDLERS: dict[str, Handler] = {
    **ops.HANDLERS,
    **recurrent.HANDLERS,
    **quantized.HANDLERS,
    **quantized.CONTRIB_HANDLERS,
}
"""Every operator read as a layer (the owners of the ONNX entries of the layout table)."""

CONTRIB_OPS = frozenset(quantized.CONTRIB_HANDLERS)
"""Operators read only in the ``com.microsoft`` domain."""


def handler_of(node: NodeProto) -> Handler | None:
    """The handler of ``node``'s operator, in the domain it is read in; None for others."""
    handler = HANDLERS.get(node.op_type)
    if handler is None:
        return None
    domains = (CONTRIB_DOMAIN,) if node.op_type in CONTRIB_OPS else DEFAULT_DOMAINS
    return handler if node.domain in domains else None
