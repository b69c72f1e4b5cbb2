"""The package's layering (``tests/layering.py``): rooms import only what their layer may, no
import cycle anywhere, and no framework branches outside the format readers. The checker itself
is tested on small packages that break each rule, so a broken rule cannot pass unseen."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from tests import layering

OUTSIDE_FORMATS_MAY_KEY_BY_FRAMEWORK = {"weightscope.layouts", "weightscope.reporters.layouts"}
"""The layout table is keyed by framework by design (``weightscope layouts`` lists it per
framework); it says nothing about where a layer came from."""


def test_no_room_imports_a_room_above_it() -> None:
    assert layering.violations(layering.imports(layering.ROOT)) == []


def test_no_import_cycle() -> None:
    assert layering.cycles(layering.imports(layering.ROOT)) == []


def test_every_module_has_a_room() -> None:
    for module in layering.modules(layering.ROOT):
        room = layering.room(module)
        assert module == "weightscope" or room in layering.FORBIDDEN, module


def _write(root: Path, files: dict[str, str]) -> Path:
    package = root / "weightscope"
    for name, text in files.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for folder in [package, *[p for p in package.rglob("*") if p.is_dir()]]:
        (folder / "__init__.py").touch()
    return package


def test_checker_finds_a_reader_importing_a_reporter(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "formats/reader.py": "def load():\n    from weightscope.reporters.table import x\n",
            "reporters/table.py": "from weightscope import model\nx = 1\n",
            "model.py": "",
        },
    )
    found = layering.violations(layering.imports(package))
    assert found == [
        "weightscope.formats.reader:2 (formats) must not import "
        "weightscope.reporters.table (reporters)"
    ]


def test_checker_finds_relative_imports_and_the_package_root(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "analysis/init.py": "from ..reporters import table\n",
            "reporters/table.py": "import weightscope\n",
        },
    )
    found = layering.violations(layering.imports(package))
    assert found == [
        "weightscope.analysis.init:1 (analysis) must not import "
        "weightscope.reporters.table (reporters)",
        "weightscope.reporters.table:1 imports the package root weightscope",
    ]


def test_checker_finds_cycles_through_function_level_imports(tmp_path: Path) -> None:
    package = _write(
        tmp_path,
        {
            "formats/onnx/graph.py": "def f():\n    from weightscope.formats.onnx import sparse\n",
            "formats/onnx/sparse.py": "from weightscope.formats.onnx.graph import f\n",
            "formats/onnx/ops.py": "from weightscope.formats.onnx import graph\n",
        },
    )
    assert layering.cycles(layering.imports(package)) == [
        ["weightscope.formats.onnx.graph", "weightscope.formats.onnx.sparse"]
    ]


def _framework_branches(path: Path, module: str) -> list[str]:
    """Comparisons of a ``framework`` name or attribute with string literals, and tables
    looked up by a ``.framework`` attribute."""

    def names_framework(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "framework") or (
            isinstance(node, ast.Name) and node.id == "framework"
        )

    def is_literal(node: ast.AST) -> bool:
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return all(is_literal(e) for e in node.elts)
        return False

    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(map(names_framework, operands)) and any(map(is_literal, operands)):
                found.append(f"{module}:{node.lineno}")
        keyed_by = None
        if isinstance(node, ast.Subscript):
            keyed_by = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            keyed_by = node.args[0] if node.func.attr == "get" and node.args else None
        if keyed_by is not None and any(
            isinstance(n, ast.Attribute) and n.attr == "framework" for n in ast.walk(keyed_by)
        ):
            found.append(f"{module}:{node.lineno}")
    return found


def test_only_format_readers_and_the_conventions_table_ask_which_framework() -> None:
    found = []
    for module, path in layering.modules(layering.ROOT).items():
        if layering.room(module) == "formats" or module == "weightscope.conventions":
            continue
        if module in OUTSIDE_FORMATS_MAY_KEY_BY_FRAMEWORK:
            continue
        found += _framework_branches(path, module)
    assert found == []


@pytest.mark.parametrize(
    "source",
    [
        'if layer.framework == "keras":\n    pass\n',
        'x = 1 if framework in ("pytorch", "onnx") else 2\n',
        'x = DEFAULTS.get(layer.framework or "", 1e-5)\n',
        "x = NAMES[model.framework]\n",
    ],
)
def test_framework_branch_check_sees_each_form(tmp_path: Path, source: str) -> None:
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _framework_branches(path, "m") != []
