"""ONNX ``LSTM``, ``GRU`` and ``RNN`` nodes (and onnxruntime's ``DynamicQuantizeLSTM``) ->
one weightscope layer per direction: node ``n``, and ``n/reverse`` for the backward direction
of a bidirectional one. Each direction's kernels and biases are parts of the node's stored
``W`` (directions, gates * hidden, in), ``R`` and ``B`` (directions, 2 * gates * hidden: the
input biases, then the recurrent ones); an LSTM's peepholes ``P`` (directions, 3 * hidden) are
listed as ``peephole`` (counted, without a layout: the table has none for them)."""

from __future__ import annotations

from weightscope import layouts
from weightscope.formats.onnx.constants import Constant
from weightscope.formats.onnx.graph import Scope, attributes
from weightscope.formats.onnx.ops import (
    Entry,
    GraphReader,
    Handler,
    LayerDraft,
    _plain_config,
    _runtime,
    add_parameters,
)
from weightscope.formats.onnx.proto import NodeProto
from weightscope.formats.onnx.quantization import granularity, quantization_of

KINDS = {"LSTM": "lstm", "GRU": "gru", "RNN": "simple_rnn", "DynamicQuantizeLSTM": "lstm"}
GATES = {"lstm": 4, "gru": 3, "simple_rnn": 1}
DEFAULT_ACTIVATIONS = {
    "lstm": ["sigmoid", "tanh", "tanh"],
    "gru": ["sigmoid", "tanh"],
    "simple_rnn": ["tanh"],
}
PEEPHOLE_INPUT = 7


def recurrent(reader: GraphReader, scope: Scope, node: NodeProto) -> list[LayerDraft] | None:
    """The layers of one recurrent node, a direction each."""
    kind = KINDS[node.op_type]
    config = _plain_config(node)
    attrs = attributes(node)
    direction = attrs.get("direction", "forward")
    directions = 2 if direction == "bidirectional" else 1
    if direction not in ("forward", "reverse", "bidirectional"):
        return None  # not a valid node: listed as an unknown one
    quantized = node.op_type == "DynamicQuantizeLSTM"
    inputs = list(node.input) + [""] * 12
    w, r, b = (scope.resolve(name) if name else None for name in inputs[1:4])
    peephole = scope.resolve(inputs[PEEPHOLE_INPUT]) if inputs[PEEPHOLE_INPUT] else None
    gates = GATES[kind]
    hidden = attrs.get("hidden_size")
    problem = _check(w, r, b, peephole, directions, gates, hidden, quantized)
    if problem is not None:
        reader.node_notes.setdefault(id(node), []).append(problem)
        return None
    hidden = int(hidden) if isinstance(hidden, int) else _hidden(w, r, gates, quantized)
    config["hidden_size"] = hidden
    config["direction"] = direction
    if kind == "gru":
        config["reset_after"] = bool(attrs.get("linear_before_reset", 0))
    notes = _options(kind, attrs, directions)
    if quantized:
        notes.append("quantized LSTM: W and R are integers, one scale per direction")
    drafts = []
    for d in range(directions):
        backward = d == 1 or direction == "reverse"
        draft = LayerDraft(
            node, scope, kind, config={**config, "go_backwards": backward}, notes=list(notes)
        )
        if d == 1:
            draft.name = f"{node.name or node.op_type}/reverse"
        for role, constant, index in (("kernel", w, 1), ("recurrent_kernel", r, 2)):
            if constant is None:
                _runtime(draft, role, inputs[index])
                continue
            layout = _layout(node, role, 2, kind)
            entry = Entry(role, constant, layout, None if quantized else True, True, part=(d,))
            draft.tensors.append(entry)
            if quantized:
                _quantize(draft, entry, inputs, index, scope, d)
        if b is not None:
            width = gates * hidden
            for role, part in (("bias", slice(0, width)), ("recurrent_bias", slice(width, None))):
                layout = _layout(node, role, 1, kind)
                trainable = None if quantized else True
                draft.tensors.append(Entry(role, b, layout, trainable, True, part=(d, part)))
        elif inputs[3]:
            _runtime(draft, "bias", inputs[3])
        if peephole is not None:
            draft.tensors.append(Entry("peephole", peephole, None, True, True, part=(d,)))
            draft.notes.append(
                "peephole: P's input, output and forget gate weights (3 * hidden, in ONNX's order "
                "i, o, f), without a canonical layout"
            )
        drafts.append(draft)
    return drafts


def _hidden(w: Constant | None, r: Constant | None, gates: int, quantized: bool) -> int:
    known = r or w
    if known is None:
        return 0
    return known.shape[2 if quantized else 1] // gates


def _check(
    w: Constant | None,
    r: Constant | None,
    b: Constant | None,
    peephole: Constant | None,
    directions: int,
    gates: int,
    hidden: object,
    quantized: bool,
) -> str | None:
    """Why the stored tensors do not fit the node's directions, gates and hidden size."""
    if hidden is not None and (not isinstance(hidden, int) or hidden <= 0):
        return f"hidden_size {hidden!r} is not a positive integer"
    gate_axis = 2 if quantized else 1
    if hidden is None:
        known = r or w
        if known is None or len(known.shape) != 3 or known.shape[gate_axis] % gates:
            return "no hidden_size, and no stored W or R to tell it"
        hidden = known.shape[gate_axis] // gates
    assert isinstance(hidden, int)
    width = gates * hidden
    for name, constant in (("W", w), ("R", r)):
        if constant is None:
            continue
        shape = constant.shape
        if len(shape) != 3 or shape[0] != directions or shape[gate_axis] != width:
            expected = "(directions, in, gates * hidden)" if quantized else "(directions, gates "
            expected += "" if quantized else "* hidden, in)"
            return (
                f"{name} {shape} is not {expected} for {directions} direction(s) of "
                f"{gates} gate(s) of {hidden} units"
            )
        if name == "R" and shape[2 if not quantized else 1] != hidden:
            return f"R {shape} does not hold {hidden} recurrent inputs"
    if b is not None and b.shape != (directions, 2 * width):
        return f"B {b.shape} is not ({directions}, {2 * width}) (input then recurrent biases)"
    if peephole is not None and peephole.shape != (directions, 3 * hidden):
        return f"P {peephole.shape} is not ({directions}, {3 * hidden})"
    return None


def _options(kind: str, attrs: dict[str, object], directions: int) -> list[str]:
    """Notes on what makes the node compute otherwise than the canonical cell."""
    notes = []
    activations = attrs.get("activations")
    if isinstance(activations, list):
        default = DEFAULT_ACTIVATIONS[kind] * directions
        if [a.lower() for a in activations] != default:
            notes.append(f"activations {activations} (not the default {default})")
    if "clip" in attrs:
        notes.append(f"cell input clipped to [-{attrs['clip']}, {attrs['clip']}]")
    if attrs.get("input_forget"):
        notes.append("input_forget=1: the input and forget gates are coupled")
    if attrs.get("activation_alpha") or attrs.get("activation_beta"):
        notes.append("activations take alpha/beta arguments")
    return notes


def _layout(node: NodeProto, role: str, rank: int, kind: str) -> str | None:
    return layouts.native_layout("onnx", role, rank, owner=node.op_type, kind=kind)


def _quantize(
    draft: LayerDraft, entry: Entry, inputs: list[str], index: int, scope: Scope, d: int
) -> None:
    """``DynamicQuantizeLSTM``: W's scale and zero point are inputs 8 and 9, R's 10 and 11,
    one per direction (``(directions,)``) or one per column (``(directions, 4 * hidden)``)."""
    first = 8 if index == 1 else 10
    scale, zero_point = (scope.resolve(n) if n else None for n in inputs[first : first + 2])
    role = entry.role
    directions = entry.constant.shape[0]
    if any(c is not None and c.shape[:1] != (directions,) for c in (scale, zero_point)):
        draft.notes.append(f"{role} not dequantized: its scale or zero point is not per direction")
        if d == 0:
            add_parameters(draft, role, scale, zero_point)
        return
    found = quantization_of(entry.constant, scale, zero_point, 1, index=(d,))
    if isinstance(found, str):
        draft.notes.append(f"{role} not dequantized: {found}")
    else:
        entry.quantization = found
        draft.notes.append(f"{role} dequantized {granularity(found)} (of its direction)")
    add_parameters(draft, role, scale, zero_point, (d,))


HANDLERS: dict[str, Handler] = {"LSTM": recurrent, "GRU": recurrent, "RNN": recurrent}
