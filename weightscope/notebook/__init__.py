"""Jupyter: the ipywidgets explorer (ipywidgets is imported only when it opens)."""
