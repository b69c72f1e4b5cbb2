"""The presenter the package root installs in :mod:`weightscope.display`: each method imports
its reporter when first used, so importing weightscope stays light."""

from __future__ import annotations

from typing import Any


class ReporterPresenter:
    def model_html(self, model: Any) -> str:
        from weightscope.reporters.html import model_html

        return model_html(model)

    def layer_html(self, layer: Any) -> str:
        from weightscope.reporters.html import layer_html

        return layer_html(layer)

    def plot_kernels(self, layer: Any, **options: Any) -> Any:
        from weightscope.reporters.kernels import plot_kernels

        return plot_kernels(layer, **options)

    def plot_init(self, layer: Any, **options: Any) -> Any:
        from weightscope.reporters.init import plot_init

        return plot_init(layer, **options)

    def explain(self, layer: Any, **options: Any) -> str:
        from weightscope.reporters.explain import explain

        return explain(layer, **options)

    def comparison(self, comparison: Any) -> Any:
        from weightscope.reporters.compare import comparison_table

        return comparison_table(comparison)
