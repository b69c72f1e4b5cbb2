"""weightscope: inspect the weights of trained neural networks, whatever framework wrote them.

>>> import weightscope
>>> model = weightscope.load(weightscope.example_path())
>>> model.layer("conv1").tensor("kernel").canonical().shape  # (out, in, kh, kw)
(8, 1, 3, 3)
"""

from typing import TYPE_CHECKING, Any

from weightscope import display as _display
from weightscope._version import __version__
from weightscope.errors import (
    CorruptFileError,
    LimitError,
    UnsafeFileError,
    UnsupportedFormatError,
    WeightscopeError,
)
from weightscope.examples import example_path
from weightscope.formats.registry import load
from weightscope.kinds import LAYER_KINDS, Kind
from weightscope.limits import Limits
from weightscope.model import Layer, Model, ParamCounts, Tensor
from weightscope.notebook.display import ReporterPresenter

if TYPE_CHECKING:
    from weightscope.analysis import check_health, check_init, check_params
    from weightscope.comparison.engine import compare
    from weightscope.notebook.explorer import explore


_display.install(ReporterPresenter())

__all__ = [
    "LAYER_KINDS",
    "CorruptFileError",
    "Kind",
    "Layer",
    "LimitError",
    "Limits",
    "Model",
    "ParamCounts",
    "Tensor",
    "UnsafeFileError",
    "UnsupportedFormatError",
    "WeightscopeError",
    "__version__",
    "check_health",
    "check_init",
    "check_params",
    "compare",
    "example_path",
    "explore",
    "load",
]


def __getattr__(name: str) -> Any:
    """``weightscope.explore`` (for notebooks only), ``weightscope.compare`` and the checks
    (``check_init``, ``check_params``, ``check_health``), imported on first use."""
    if name in ("check_init", "check_params", "check_health"):
        from weightscope import analysis

        return getattr(analysis, name)
    if name == "explore":
        from weightscope.notebook.explorer import explore

        return explore
    if name == "compare":
        from weightscope.comparison.engine import compare

        return compare
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
