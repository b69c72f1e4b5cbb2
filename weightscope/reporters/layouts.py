"""``weightscope layouts``: the native layout of every tensor of every layer class (ONNX:
operator) weightscope reads, next to its canonical layout, generated from the layout table
(``weightscope.layouts.USES``) that the adapters themselves look their layouts up in."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from weightscope import layouts
from weightscope.kinds import LAYER_KINDS

SCHEMA_VERSION = 1

CANONICAL_RULE = (
    "every convolution kernel (out, in/groups, *kernel), input channels per group, transposed "
    "ones too; a depthwise kernel (*kernel, in, multiplier) becomes (in*multiplier, 1, *kernel), "
    "output channel c*multiplier + m from input channel c; dense kernels (out, in); recurrent "
    "kernels (gates, units, in) and biases (gates, units), one direction of one layer each, the "
    "gates in one order per kind (LSTM i,f,g,o; GRU z,r,n; g and n being the c and h of some "
    "frameworks), input and recurrent biases kept apart; vectors and embedding tables as stored"
)


def _order(use: layouts.Use) -> tuple[int, int]:
    kind = LAYER_KINDS.index(use.kind) if use.kind in LAYER_KINDS else len(LAYER_KINDS)
    return kind, layouts.FRAMEWORKS.index(use.framework)


def entries(framework: str | None = None) -> list[layouts.Use]:
    """The table's entries (of one framework), by layer kind, then framework, then table order."""
    return sorted(layouts.uses(framework), key=_order)  # sorted() is stable


def _shape(words: tuple[str, ...]) -> str:
    return f"({', '.join(words)})"


def entry_to_dict(use: layouts.Use) -> dict[str, Any]:
    spec = layouts.LAYOUTS[use.layout]
    return {
        "kind": use.kind,
        "framework": use.framework,
        "class": use.owner,
        "tensor": use.tensor,
        "role": use.role,
        "when": use.when or None,
        "native_layout": use.layout,
        "native_axes": list(layouts.axis_words(use.layout)),
        "canonical_layout": spec.canonical,
        "canonical_axes": list(layouts.canonical_words(use.layout)),
        "grouped_axis": spec.grouped_axis,
    }


def layouts_to_dict(framework: str | None = None) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "framework": framework,
        "letters": dict(layouts.AXIS_LETTERS),
        "canonical": CANONICAL_RULE,
        "entries": [entry_to_dict(use) for use in entries(framework)],
    }


def _merged(uses: list[layouts.Use]) -> list[tuple[layouts.Use, list[str]]]:
    """Entries that differ only in their class (``BatchNorm1d``, ``BatchNorm2d``...) as one row,
    with the classes in table order."""
    rows: dict[tuple[str, ...], tuple[layouts.Use, list[str]]] = {}
    for use in uses:
        key = (use.kind, use.framework, use.tensor, use.role, use.when, use.layout)
        if key in rows:
            rows[key][1].append(use.owner)
        else:
            rows[key] = (use, [use.owner])
    return list(rows.values())


def layouts_table(framework: str | None = None) -> RenderableType:
    table = Table(show_edge=False, header_style="bold", pad_edge=False)
    table.add_column("Kind", no_wrap=True)
    table.add_column("Framework", no_wrap=True)
    table.add_column("Class / op", overflow="fold")
    table.add_column("Tensor", overflow="fold")
    table.add_column("Native layout", no_wrap=True)
    table.add_column("Canonical", no_wrap=True)
    rows = _merged(entries(framework))
    for index, (use, owners) in enumerate(rows):
        previous = rows[index - 1][0] if index else None
        following = rows[index + 1][0] if index + 1 < len(rows) else None
        new_kind = previous is None or previous.kind != use.kind
        new_framework = new_kind or previous is None or previous.framework != use.framework
        owner = ", ".join(owners) + (f" [{use.when}]" if use.when else "")
        tensor = use.tensor if use.tensor == use.role else f"{use.tensor} ({use.role})"
        table.add_row(
            use.kind if new_kind else "",
            layouts.FRAMEWORK_NAMES[use.framework] if new_framework else "",
            Text(owner),  # Text: a condition in brackets is not markup
            Text(tensor),
            f"{use.layout} {_shape(layouts.axis_words(use.layout))}",
            layouts.canonical_layout(use.layout),
            end_section=following is not None and following.kind != use.kind,
        )
    letters = ", ".join(f"{k} {v}" for k, v in layouts.AXIS_LETTERS.items())
    return Group(
        table,
        Text(f"Letters: {letters}."),
        Text(f"Canonical: {CANONICAL_RULE}."),
        Text("Generated from weightscope/layouts.py, the table the readers use."),
    )
