"""``weightscope.explore(model)``: a Jupyter widget to browse the kernels of a model.

A layer picker (every conv and dense kernel), a view toggle (``slices``, ``norms``, and ``rgb``
where a kernel has exactly 3 input channels), filter and channel range sliders, a depth slider for
3-D kernels, and the figure of :func:`weightscope.reporters.kernels.plot_kernels` for the current
choice. ipywidgets is needed only here, and imported only when the explorer is built.
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from typing import Any

from weightscope.errors import WeightscopeError
from weightscope.model import Layer, Model

KERNEL_ROLES = ("kernel", "depthwise_kernel", "pointwise_kernel")

SLIDER_LAYOUT = {"width": "32em"}


@dataclass(frozen=True)
class KernelChoice:
    """One entry of the layer picker: a layer and one of its kernels, with the canonical axes
    the sliders range over (known from the shapes alone: nothing is read to build the picker)."""

    layer: Layer
    role: str
    shape: tuple[int, ...]
    """Canonical shape: ``(out, in/groups, *k)`` or, for dense, ``(out, in)``."""
    groups: int

    @property
    def label(self) -> str:
        shape = "x".join(map(str, self.shape))
        role = "" if self.role == "kernel" else f" {self.role}"
        return f"{self.layer.name}{role}  ({self.layer.kind}, {shape})"

    @property
    def out(self) -> int:
        return self.shape[0]

    @property
    def in_per_group(self) -> int:
        return self.shape[1]

    @property
    def in_total(self) -> int:
        return self.shape[1] * self.groups

    @property
    def depth(self) -> int | None:
        """The depth of a 3-D kernel, None for the others."""
        return self.shape[2] if len(self.shape) == 5 else None

    @property
    def matrix(self) -> bool:
        """Dense and 1x1 kernels: the slices view shows them as one ``out x in`` matrix."""
        return len(self.shape) == 2 or all(k == 1 for k in self.shape[2:])

    @property
    def views(self) -> list[str]:
        views = ["slices", "norms"]
        if len(self.shape) == 4 and self.in_per_group == 3 and self.in_total == 3:
            views.append("rgb")
        return views

    def channel_count(self, view: str) -> int:
        """Input channels the channel slider ranges over: within the group for slices, absolute
        for norms (as :func:`plot_kernels` counts them)."""
        return self.in_total if view == "norms" else self.in_per_group


def kernel_choices(model: Model) -> list[KernelChoice]:
    """Every conv and dense kernel of ``model`` that has a canonical layout, in model order."""
    choices = []
    for layer in model.layers:
        if not layer.kind.has_kernel:
            continue
        for tensor in layer.tensors:
            shape = tensor.canonical_shape
            if tensor.role not in KERNEL_ROLES or shape is None or not 2 <= len(shape) <= 5:
                continue
            if not tensor.has_stats:
                continue
            groups = 1 if tensor.role == "pointwise_kernel" or len(shape) == 2 else layer.groups
            choices.append(KernelChoice(layer, tensor.role, tuple(shape), max(1, groups)))
    return choices


def _default_limits(choice: KernelChoice, view: str) -> tuple[int, int]:
    from weightscope.reporters.kernels import DEFAULT_LIMITS

    mode = "matrix" if view == "slices" and choice.matrix else view
    filters, channels = DEFAULT_LIMITS[mode]
    return filters, channels


def explore(model_or_path: Model | str | os.PathLike[str]) -> Any:
    """An ipywidgets box to browse the kernels of a model (or of the model file at a path).

    Pick a layer, a view (``slices``, ``norms``, ``rgb`` for 3-channel kernels), the range of
    output filters and of input channels (and the depth slice of a 3-D kernel); the figure below
    is ``layer.plot_kernels(...)`` for that choice. A model opened from a path stays open while
    the widget lives. Needs ``ipywidgets``: ``pip install 'weightscope[notebook]'``.
    """
    try:
        import ipywidgets as widgets
    except ImportError as exc:
        raise ImportError(
            "weightscope.explore needs ipywidgets, which is not installed: "
            "pip install 'weightscope[notebook]' (then restart the notebook's kernel)"
        ) from exc
    if isinstance(model_or_path, Model):
        model = model_or_path
    else:
        from weightscope.formats.registry import load

        model = load(model_or_path)
    choices = kernel_choices(model)
    if not choices:
        raise WeightscopeError(f"{model.source}: no conv or dense kernel to explore")
    return _Explorer(widgets, model, choices).box


class _Explorer:
    """The widgets and the callbacks that keep them consistent."""

    def __init__(self, widgets: Any, model: Model, choices: list[KernelChoice]) -> None:
        self.model = model  # keeps a model opened from a path alive as long as the widget
        self.choices = choices
        self._quiet = False
        self.picker = widgets.Dropdown(
            options=[(choice.label, index) for index, choice in enumerate(choices)],
            value=0,
            description="layer",
            layout={"width": "32em"},
        )
        self.view = widgets.ToggleButtons(options=["slices", "norms"], description="view")
        self.filters = widgets.IntRangeSlider(
            description="filters", continuous_update=False, layout=SLIDER_LAYOUT
        )
        self.channels = widgets.IntRangeSlider(
            description="channels", continuous_update=False, layout=SLIDER_LAYOUT
        )
        self.depth = widgets.IntSlider(
            description="depth", continuous_update=False, layout=SLIDER_LAYOUT
        )
        self.info = widgets.Label()
        self.output = widgets.Output()
        self.box = widgets.VBox(
            [
                self.picker,
                self.view,
                self.filters,
                self.channels,
                self.depth,
                self.info,
                self.output,
            ]
        )
        self._choose_layer()
        self.picker.observe(lambda _: self._choose_layer(), names="value")
        self.view.observe(lambda _: self._choose_view(), names="value")
        for slider in (self.filters, self.channels, self.depth):
            slider.observe(lambda _: self.draw(), names="value")

    @property
    def choice(self) -> KernelChoice:
        return self.choices[int(self.picker.value)]

    def _choose_layer(self) -> None:
        choice = self.choice
        self._quiet = True
        try:
            view = self.view.value if self.view.value in choice.views else "slices"
            self.view.options = choice.views
            self.view.value = view
            filters, _ = _default_limits(choice, view)
            _set_range(self.filters, choice.out, filters)
            self._reset_channels(view)
            depth = choice.depth
            self.depth.layout.display = "none" if depth is None else None
            if depth is not None:
                self.depth.max = depth - 1
                self.depth.value = depth // 2
        finally:
            self._quiet = False
        self.draw()

    def _choose_view(self) -> None:
        if self._quiet:  # set along with a new layer
            return
        self._quiet = True
        try:
            self._reset_channels(self.view.value)
        finally:
            self._quiet = False
        self.draw()

    def _reset_channels(self, view: str) -> None:
        choice = self.choice
        _, channels = _default_limits(choice, view)
        _set_range(self.channels, choice.channel_count(view), channels)
        # rgb shows all 3 channels as R, G, B; a depthwise kernel has one channel per filter
        self.channels.disabled = view == "rgb" or choice.channel_count(view) == 1
        self.depth.disabled = view == "norms"  # norms cover the whole kernel, depth included

    def options(self) -> dict[str, Any]:
        """The keyword arguments of ``plot_kernels`` for the current choice."""
        choice = self.choice
        view = self.view.value
        low, high = self.filters.value
        options: dict[str, Any] = {"view": view, "filters": slice(low, high + 1)}
        if choice.role != "kernel":
            options["role"] = choice.role
        if view != "rgb":
            low, high = self.channels.value
            options["channels"] = slice(low, high + 1)
        if choice.depth is not None and view != "norms":
            options["depth"] = int(self.depth.value)
        return options

    def draw(self) -> None:
        if self._quiet:
            return
        choice = self.choice
        options = self.options()
        shown = ", ".join(f"{k}={_option_text(v)}" for k, v in options.items())
        self.info.value = f"{choice.layer.name}.plot_kernels({shown})"
        try:
            figure = choice.layer.plot_kernels(**options)
        except WeightscopeError as exc:
            self.output.outputs = ({"output_type": "stream", "name": "stderr", "text": f"{exc}\n"},)
            return
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {
                    "image/png": _png_base64(figure),
                    "text/plain": f"<kernel figure of {choice.layer.name}>",
                },
                "metadata": {},
            },
        )


def _set_range(slider: Any, total: int, limit: int) -> None:
    """Range the slider over ``0 .. total-1`` and select the first ``limit`` (at most all)."""
    slider.min = 0
    if total - 1 > slider.max:
        slider.max = total - 1
        slider.value = (0, min(total, limit) - 1)
    else:
        slider.value = (0, min(total, limit) - 1)
        slider.max = total - 1


def _option_text(value: Any) -> str:
    if isinstance(value, slice):
        return f"{value.start}:{value.stop}"
    return repr(value)


def _png_base64(figure: Any) -> str:
    """The figure as base64 PNG (what a notebook's ``image/png`` output holds); closed after."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png")
    finally:
        import matplotlib.pyplot as plt

        plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
