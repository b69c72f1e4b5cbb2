"""mkdocs hooks: the parts of the docs that are generated from the code at build time.

A page asks for generated text with a line of its own, ``<!-- generated: NAME -->``, which
:func:`on_page_markdown` replaces with what ``GENERATORS[NAME]`` returns. Each generator asks the
program itself (the command line in-process, or the module that owns the table), so the pages
cannot drift from what weightscope does:

- ``inspect-json-fields``: every key of ``weightscope inspect --json``, from the JSON Schema
  ``docs/schemas/inspect.schema.json`` (which ``tests/test_docs.py`` validates real output
  against, so a key the program prints but the schema lacks fails the tests);
- ``inspect-json-example`` / ``inspect-json-full``: the real ``inspect --example --json``;
- ``layouts``: every entry of the layout table, from ``weightscope layouts --json`` (generated
  itself from ``weightscope/layouts.py``, the table the readers look their layouts up in), and
  ``layouts-terminal``: what ``weightscope layouts`` prints;
- ``limits``: the reader limits, their defaults and descriptions, from
  ``weightscope.limits.Limits``;
- ``cli-help``: the ``--help`` of ``weightscope`` and of every command, from its parser;
- ``layering``: which room of the package may import which, from ``tests/layering.py``, the
  table ``tests/test_layering.py`` checks the imports against.

An unknown NAME fails the build. The functions are plain (no mkdocs import), so the tests call
them too. The repository root is put first on ``sys.path``: the docs describe the tree being
built, not whatever weightscope happens to be installed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SCHEMA_PATH = ROOT / "docs" / "schemas" / "inspect.schema.json"
LAYERING_PATH = ROOT / "tests" / "layering.py"
MARKER = re.compile(r"^<!-- generated: ([a-z0-9-]+) -->$", re.MULTILINE)
HELP_COLUMNS = "100"


# -- running the program ------------------------------------------------------------------------


def run_cli(*argv: str) -> str:
    """Run ``weightscope ARGV`` in this process and return its standard output (raises when it
    fails: a generated page must come from a successful run)."""
    from weightscope.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(list(argv))
    if status != 0:
        raise RuntimeError(f"weightscope {' '.join(argv)} exited {status}: {err.getvalue()}")
    return out.getvalue()


def shorten_paths(text: str) -> str:
    """The bundled example's absolute folder as ``.../weightscope/examples`` (it depends on where
    weightscope is installed)."""
    from weightscope.examples import example_path

    folder = str(example_path().parent)
    return text.replace(folder, ".../weightscope/examples")


def inspect_example_json(*options: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run_cli("inspect", "--example", "--json", *options))
    return data


# -- inspect --json -----------------------------------------------------------------------------


def load_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    name = ref.removeprefix("#/$defs/")
    resolved: dict[str, Any] = schema["$defs"][name]
    return resolved


def _type_words(schema: dict[str, Any], node: dict[str, Any]) -> str:
    """A short type: ``string | null``, ``array of integer``, ``object``."""
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node and "type" not in node:
        return "string"
    if "anyOf" in node:
        return " | ".join(_type_words(schema, option) for option in node["anyOf"])
    if "$ref" in node:
        return _type_words(schema, _resolve(schema, node))
    kinds = node.get("type", "any")
    if isinstance(kinds, list):
        words = [_one_type(schema, node, kind) for kind in kinds]
        return " | ".join(words)
    return _one_type(schema, node, kinds)


def _one_type(schema: dict[str, Any], node: dict[str, Any], kind: str) -> str:
    if kind == "array" and "items" in node:
        return f"array of {_type_words(schema, node['items'])}"
    return str(kind)


def _enum_of(schema: dict[str, Any], node: dict[str, Any]) -> list[Any] | None:
    node = _resolve(schema, node)
    if "enum" in node:
        return list(node["enum"])
    items = node.get("items")
    if isinstance(items, dict):
        return _enum_of(schema, items)
    return None


def schema_fields(schema: dict[str, Any] | None = None) -> list[tuple[str, str, bool, str]]:
    """Every documented key of ``inspect --json`` as (path, type, always present, description),
    depth first in the order the program prints them."""
    schema = schema or load_schema()
    rows: list[tuple[str, str, bool, str]] = []

    def walk(node: dict[str, Any], prefix: str) -> None:
        node = _resolve(schema, node)
        required = set(node.get("required", ()))
        for key, child in node.get("properties", {}).items():
            path = f"{prefix}{key}"
            resolved = _resolve(schema, child)
            description = child.get("description") or resolved.get("description", "")
            values = _enum_of(schema, child)
            words = [
                value if isinstance(value, str) else json.dumps(value) for value in values or ()
            ]
            if words and not all(f"`{word}`" in description for word in words):
                description += " One of: " + ", ".join(f"`{word}`" for word in words) + "."
            rows.append((path, _type_words(schema, child), key in required, description))
            _descend(resolved, path)

    def _descend(node: dict[str, Any], path: str) -> None:
        for option in node.get("anyOf", [node]):
            option = _resolve(schema, option)
            if "properties" in option and option is not schema:
                walk(option, f"{path}.")
            items = option.get("items")
            if isinstance(items, dict) and "properties" in _resolve(schema, items):
                walk(items, f"{path}[].")

    walk(schema, "")
    return rows


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def inspect_json_fields() -> str:
    lines = ["| key | type | present | meaning |", "|---|---|---|---|"]
    for path, kind, always, description in schema_fields():
        present = "always" if always else "see meaning"
        lines.append(f"| `{path}` | {_cell(kind)} | {present} | {_cell(description)} |")
    return "\n".join(lines)


CONFIG_SHOWN = ("filters", "kernel_size", "use_bias", "kernel_initializer")


def _abbreviated(data: dict[str, Any]) -> dict[str, Any]:
    """The first layer with its first tensor, and a few keys of its config."""
    layer = dict(data["layers"][0])
    config = layer["config"]
    layer["config"] = {key: config[key] for key in CONFIG_SHOWN if key in config}
    layer["tensors"] = layer["tensors"][:1]
    return {**data, "layers": [layer]}


def dump_json(data: Any) -> str:
    """Indented JSON with arrays of numbers and strings on one line."""
    text = json.dumps(data, indent=2)
    flat = re.compile(r"\[\s*((?:[-\w.\"/]+,\s*)*[-\w.\"/]+)\s*\]")
    return flat.sub(lambda m: "[" + ", ".join(v.strip() for v in m.group(1).split(",")) + "]", text)


def inspect_json_example() -> str:
    data = _abbreviated(inspect_example_json())
    text = shorten_paths(dump_json(data))
    return f"```json\n{text}\n```"


def inspect_json_full() -> str:
    text = shorten_paths(dump_json(inspect_example_json()))
    body = "\n".join(f"    {line}" for line in f"```json\n{text}\n```".splitlines())
    return f'??? example "The whole output of `weightscope inspect --example --json`"\n\n{body}'


# -- layouts ------------------------------------------------------------------------------------


def _axes(words: list[str]) -> str:
    return f"({', '.join(words)})"


def layouts_markdown() -> str:
    """One table per layer kind, rows that differ only in their class merged (as the terminal
    table does), from ``weightscope layouts --json``."""
    data = json.loads(run_cli("layouts", "--json"))
    names = {"keras": "Keras", "pytorch": "PyTorch", "onnx": "ONNX", "tflite": "TFLite",
             "gguf": "GGUF"}  # fmt: skip
    merged: dict[str, dict[tuple[Any, ...], list[str]]] = {}
    for entry in data["entries"]:
        key = (
            entry["framework"],
            entry["tensor"],
            entry["role"],
            entry["when"],
            entry["native_layout"],
            tuple(entry["native_axes"]),
            entry["canonical_layout"],
            tuple(entry["canonical_axes"]),
        )
        merged.setdefault(entry["kind"], {}).setdefault(key, []).append(entry["class"])
    parts = []
    for kind, rows in merged.items():
        parts += [
            f"### `{kind}`",
            "",
            "| framework | class / op | tensor (role) | native layout | canonical |",
            "|---|---|---|---|---|",
        ]
        for key, owners in rows.items():
            framework, tensor, role, when, native, native_axes, canonical, canonical_axes = key
            owner = ", ".join(owners) + (f" [{when}]" if when else "")
            named = tensor if tensor == role else f"{tensor} ({role})"
            parts.append(
                f"| {names[framework]} | {_cell(owner)} | `{named}` "
                f"| `{native}` {_axes(list(native_axes))} "
                f"| `{canonical}` {_axes(list(canonical_axes))} |"
            )
        parts.append("")
    letters = "\n".join(f"- `{letter}`: {words}" for letter, words in data["letters"].items())
    header = [
        f"{len(data['entries'])} entries over {len(merged)} layer kinds.",
        "",
        "Letters of a layout, one per stored axis:",
        "",
        letters,
        "",
        f"Canonical: {data['canonical']}.",
        "",
    ]
    return "\n".join(header + parts)


def layouts_terminal() -> str:
    text = run_cli("layouts").rstrip()
    body = "\n".join(f"    {line.rstrip()}" for line in f"```text\n{text}\n```".splitlines())
    return f'??? note "What `weightscope layouts` prints"\n\n{body}'


# -- limits -------------------------------------------------------------------------------------


def limit_docstrings() -> dict[str, str]:
    """The docstring under each field of ``Limits``, from its source (what ``weightscope
    limits`` prints too)."""
    from weightscope.limits import descriptions

    return descriptions()


def limits_markdown() -> str:
    from weightscope.limits import DEFAULT, Limits, format_value

    docs = limit_docstrings()
    missing = [name for name in Limits.names() if name not in docs]
    if missing:
        raise RuntimeError(f"limits without a docstring to document them: {missing}")
    lines = ["| limit | default | unit | bounds |", "|---|---:|---|---|"]
    for name in Limits.names():
        unit = Limits.unit(name)
        default = format_value(name, getattr(DEFAULT, name))
        lines.append(f"| `{name}` | {default} | {unit} | {_cell(docs[name])} |")
    return "\n".join(lines)


# -- command-line help --------------------------------------------------------------------------


def command_help() -> dict[str, str]:
    """``weightscope --help`` and each command's ``--help``, formatted at 100 columns."""
    from weightscope.cli import build_parser

    saved = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        parser = build_parser()
        helps = {"weightscope": parser.format_help()}
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        for name, sub in commands.choices.items():
            helps[name] = sub.format_help()
    finally:
        if saved is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = saved
    return helps


def cli_help_markdown() -> str:
    parts = []
    for name, text in command_help().items():
        title = name if name == "weightscope" else f"weightscope {name}"
        parts += [f"## `{title}`", "", "```text", text.rstrip(), "```", ""]
    return "\n".join(parts)


# -- layering -----------------------------------------------------------------------------------


def _layering() -> ModuleType:
    """``tests/layering.py``, the checker the tests run, read by path (``tests`` is no package)."""
    spec = importlib.util.spec_from_file_location("_weightscope_layering", LAYERING_PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def layering_markdown() -> str:
    """The rooms and what each must never import, from the table ``tests/test_layering.py``
    checks the package against."""
    layering = _layering()
    core = ", ".join(f"`{name}`" for name in layering.CORE)
    lines = [
        f"The core modules ({core}) import nothing but one another; every room may use them.",
        "",
        "| room | must never import |",
        "|---|---|",
    ]
    for room, forbidden in layering.FORBIDDEN.items():
        name = "core" if room == "core" else f"`{room}/`"
        never = ", ".join(f"`{f}/`" for f in forbidden) or "nothing forbidden (the top)"
        lines.append(f"| {name} | {never} |")
    return "\n".join(lines)


# -- the hook -----------------------------------------------------------------------------------

GENERATORS: dict[str, Callable[[], str]] = {
    "inspect-json-fields": inspect_json_fields,
    "inspect-json-example": inspect_json_example,
    "inspect-json-full": inspect_json_full,
    "layouts": layouts_markdown,
    "layouts-terminal": layouts_terminal,
    "limits": limits_markdown,
    "cli-help": cli_help_markdown,
    "layering": layering_markdown,
}


def expand(markdown: str, where: str = "a page") -> str:
    """``markdown`` with every ``<!-- generated: NAME -->`` line replaced."""

    def generated(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in GENERATORS:
            raise KeyError(f"{where}: unknown generated section {name!r}")
        return GENERATORS[name]()

    return MARKER.sub(generated, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return expand(markdown, page.file.src_path)
