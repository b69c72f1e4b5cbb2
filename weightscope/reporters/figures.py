"""Figures that show themselves in Jupyter without pyplot."""

from __future__ import annotations

import io

from matplotlib.figure import Figure


class NotebookFigure(Figure):
    """A matplotlib Figure that also renders itself as PNG in Jupyter, even when pyplot (and so
    the inline backend's display hook) was never imported. Built with the object API, so no
    global pyplot state is touched and nothing needs closing."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png")
        return buffer.getvalue()
