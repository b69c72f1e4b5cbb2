"""Every notebook in notebooks/ runs from top to bottom in a fresh Jupyter kernel without an
error, and is stored without outputs (so that its diffs stay small)."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 120


def test_there_are_notebooks():
    assert "explore_example.ipynb" in [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_uses_public_names_only(path):
    """What a notebook reaches of weightscope is its public API: ``weightscope.NAME`` with NAME
    in ``__all__``, never a submodule."""
    import weightscope

    reached: list[str] = []
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.startswith("%"))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("weightscope"):
                reached.append(f"from {node.module} import ...")
            elif isinstance(node, ast.Import):
                reached += [a.name for a in node.names if a.name.startswith("weightscope.")]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "weightscope"
            ):
                reached.append(node.attr)
    assert reached and all(name in weightscope.__all__ for name in reached), reached


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    """A cell that raises stops the run with CellExecutionError (the cell and the traceback)."""
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # run where it cannot litter the repo
    )
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    if path.name == "explore_example.ipynb":
        shown = [mime for out in outputs for mime in out.get("data", {})]
        assert shown.count("text/html") >= 2, "the model and layer tables"
        assert shown.count("image/png") >= 4, "the kernel and init figures"
        assert "application/vnd.jupyter.widget-view+json" in shown, "the explorer"
