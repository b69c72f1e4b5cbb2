"""How the core objects show themselves in Jupyter and rich, supplied from above.

:class:`~weightscope.model.Model`, :class:`~weightscope.model.Layer` and a comparison offer
``_repr_html_``, ``plot_kernels()``, ``plot_init()``, ``explain()`` and ``__rich__`` for
notebooks, but the core must not import the reporters that draw them (the reporters import the
core). So the core calls through the :class:`Presenter` installed here, and the package root
installs :class:`weightscope.notebook.display.ReporterPresenter` when ``weightscope`` is imported
(which any import of a submodule does first)."""

from __future__ import annotations

from typing import Any, Protocol


class Presenter(Protocol):
    def model_html(self, model: Any) -> str: ...

    def layer_html(self, layer: Any) -> str: ...

    def plot_kernels(self, layer: Any, **options: Any) -> Any: ...

    def plot_init(self, layer: Any, **options: Any) -> Any: ...

    def explain(self, layer: Any, **options: Any) -> str: ...

    def comparison(self, comparison: Any) -> Any: ...


_installed: Presenter | None = None


def install(presenter: Presenter) -> None:
    """Make ``presenter`` draw the core objects from now on."""
    global _installed
    _installed = presenter


def presenter() -> Presenter:
    if _installed is None:  # only when the package root was bypassed
        raise RuntimeError("no presenter installed: import weightscope first")
    return _installed
