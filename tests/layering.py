"""The package's import graph, its layering rules and cycles, read from the source with ``ast``
(every import counts: module level, inside functions and under ``TYPE_CHECKING``).

``python -m tests.layering`` prints every violation and exits 1 if there is one."""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "weightscope"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

CORE = (
    "model", "kinds", "dtypes", "layouts", "conventions", "stats", "errors", "limits",
    "chunking", "output", "display", "_version", "examples",
)  # fmt: skip
"""Modules every room may use; they import nothing but one another."""

ROOMS = ("formats", "analysis", "comparison", "reporters", "scan", "cli", "notebook")

FORBIDDEN: Mapping[str, tuple[str, ...]] = {
    "core": ROOMS,
    "formats": ("analysis", "comparison", "reporters", "scan", "cli", "notebook"),
    "analysis": ("formats", "comparison", "reporters", "scan", "cli", "notebook"),
    "comparison": ("analysis", "reporters", "scan", "cli", "notebook"),
    "reporters": ("formats", "scan", "cli", "notebook"),
    "scan": ("reporters", "cli", "notebook"),
    "notebook": ("cli", "scan"),
    "cli": (),
}
"""Which rooms each room must never import. Data flows one way: file -> formats -> model ->
analysis -> reporters -> cli; ``comparison`` reads models (through ``formats``) and is drawn by
``reporters``; ``scan`` reads and analyses files and writes its own table; ``notebook`` is the
Jupyter front, as ``cli`` is the terminal's. Nothing imports the package root, which imports
from every room to offer the public names."""


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def modules(root: Path, package: str = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join([package, *parts])] = path
    return found


def imports(root: Path, package: str = PACKAGE) -> list[Import]:
    """Every import of one of the package's modules by another."""
    known = modules(root, package)
    edges = []
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, name, is_package)
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    targets.append(candidate if candidate in known else base)
            for target in targets:
                if target.split(".")[0] == package and target != name:
                    edges.append(Import(name, _existing(target, known), node.lineno))
    return edges


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    keep = len(parts) - node.level + (1 if is_package else 0)
    return ".".join(parts[:keep] + ([node.module] if node.module else []))


def _existing(target: str, known: Mapping[str, Path]) -> str:
    while target not in known and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def room(module: str, package: str = PACKAGE) -> str | None:
    """``core``, a room's name, or None for the package root."""
    parts = module.split(".")
    if len(parts) == 1:
        return None
    if parts[1] == "__main__":  # ``python -m weightscope`` is the command line
        return "cli"
    return parts[1] if parts[1] in FORBIDDEN else "core"


def violations(edges: Iterable[Import], package: str = PACKAGE) -> list[str]:
    found = []
    for edge in edges:
        source, target = room(edge.importer, package), room(edge.imported, package)
        if target is None:
            found.append(f"{edge.importer}:{edge.line} imports the package root {package}")
        elif source is not None and target in FORBIDDEN[source]:
            found.append(
                f"{edge.importer}:{edge.line} ({source}) must not import {edge.imported} ({target})"
            )
    return found


def cycles(edges: Iterable[Import]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.importer, set()).add(edge.imported)
        graph.setdefault(edge.imported, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def main() -> int:
    edges = imports(ROOT)
    problems = violations(edges) + [" <-> ".join(c) for c in cycles(edges)]
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
