"""Every notebook in notebooks/ runs from top to bottom in a fresh Jupyter kernel without an
error, and is stored without outputs (so that its diffs stay small)."""

from __future__ import annotations

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
