"""Kernel-slice figures (``weightscope plot``, ``Layer.plot_kernels``), checked for what they show.

Every layer is built in its real framework (torch, Keras), saved in a real file and read back
with ``weightscope.load``; each figure's drawn array is compared with the framework's own weights:
grid shape (cells plus 1-pixel NaN separators), the pixels of a cell, tick labels, colour limits
(symmetric, from the whole layer), the notes about the subset, depth and groups.
"""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_runner import run_cli

import weightscope
from weightscope.errors import WeightscopeError
from weightscope.examples import example_path

torch = pytest.importorskip("torch")
nn = torch.nn

BIG_MAX = 5.0  # planted in the big conv outside its default subset


# ---------------------------------------------------------------------------------------------
# Real models


@pytest.fixture(scope="module")
def torch_layers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A whole pickled torch module (so groups are recorded) holding one layer of each kind,
    read back by weightscope; yields name -> (weightscope Layer, torch weight as numpy)."""
    torch.manual_seed(0)
    modules = OrderedDict(
        grouped=nn.Conv2d(4, 6, 3, groups=2),
        depthwise=nn.Conv2d(6, 12, 3, groups=6),
        conv1d=nn.Conv1d(3, 5, 4),
        conv3d=nn.Conv3d(2, 3, (3, 2, 2)),
        pointwise=nn.Conv2d(5, 7, 1),
        transposed=nn.ConvTranspose2d(4, 6, 3, groups=2),
        linear=nn.Linear(10, 4),
        norm=nn.BatchNorm2d(3),
        big=nn.Conv2d(40, 48, 3),
        wide=nn.Linear(256, 10),
        tall=nn.Linear(3, 200),
        huge=nn.Linear(700, 1200),
        many_dw=nn.Conv2d(48, 48, 3, groups=48),
    )
    with torch.no_grad():
        modules["big"].weight[47, 39, 1, 1] = BIG_MAX  # outside the default 32 x 16 subset
    path = tmp_path_factory.mktemp("torch") / "layers.pt"
    torch.save(nn.Sequential(modules), path)
    weights = {name: m.weight.detach().numpy().copy() for name, m in modules.items()}
    with weightscope.load(path) as model:
        yield {name: (model.layer(name), weights[name]) for name in modules}


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A Keras model with a Conv2D on an RGB input, another conv, an LSTM and a ConvLSTM1D (a
    layer with no canonical form), saved as .keras and as legacy .h5; returns the paths and the
    native kernels."""
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    image = keras.Input((9, 9, 3))
    sequence = keras.Input((5, 4))
    first = keras.layers.Conv2D(8, 5, name="rgb_conv")(image)
    second = keras.layers.Conv2D(4, 3, name="conv4")(first)
    lstm = keras.layers.LSTM(3, name="lstm")(sequence)
    frames = keras.Input((3, 6, 2))
    conv_lstm = keras.layers.ConvLSTM1D(2, 3, name="conv_lstm")(frames)
    model = keras.Model([image, sequence, frames], [second, lstm, conv_lstm])
    folder = tmp_path_factory.mktemp("keras")
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    return {
        "keras": folder / "model.keras",
        "h5": folder / "model.h5",
        "rgb_conv": model.get_layer("rgb_conv").get_weights()[0],  # (kh, kw, 3, filters)
    }


def _layer(layers: dict[str, Any], name: str) -> tuple[weightscope.model.Layer, np.ndarray]:
    layer, weight = layers[name]
    return layer, weight


def _image(fig: Any) -> np.ndarray:
    """The array the figure draws, before colouring (weights with NaN separators)."""
    assert len(fig.axes[0].images) == 1  # one image for the whole grid, not one Axes per slice
    return np.asarray(fig.values)


def _cell(image: np.ndarray, row: int, col: int, kh: int, kw: int) -> np.ndarray:
    return image[row * (kh + 1) : row * (kh + 1) + kh, col * (kw + 1) : col * (kw + 1) + kw]


def _ticks(fig: Any) -> tuple[list[str], list[str]]:
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    cols = [t.get_text() for t in ax.get_xticklabels()]
    return rows, cols


def _text(fig: Any) -> str:
    return "\n".join(t.get_text() for t in fig.texts)


# ---------------------------------------------------------------------------------------------
# The slices view


def test_grouped_conv_grid_shows_each_canonical_slice(torch_layers: dict[str, Any]) -> None:
    layer, weight = _layer(torch_layers, "grouped")  # torch (6, 2, 3, 3), groups=2
    fig = layer.plot_kernels()
    image = _image(fig)
    assert image.shape == (6 * 3 + 5, 2 * 3 + 1)
    for f in range(6):
        for c in range(2):
            np.testing.assert_array_equal(_cell(image, f, c, 3, 3), weight[f, c])
    assert np.isnan(image[3, :]).all() and np.isnan(image[:, 3]).all()  # 1-pixel separators
    assert _ticks(fig) == ([f"f{i}" for i in range(6)], ["in0", "in1"])
    m = float(np.abs(weight).max())
    assert fig.mappable.get_clim() == (-m, m)
    assert fig.mappable.get_cmap().name.startswith("RdBu_r")
    text = _text(fig)
    assert "grouped" in text and "conv2d" in text and "(6, 2, 3, 3) OIHW" in text
    assert "groups=2" in text and "WITHIN the filter's group" in text
    assert "all 6 filters x all 2 input channels per group" in text
    # the pixels drawn are the colours of those weights on that scale
    drawn = fig.axes[0].images[0].get_array()
    expected = fig.mappable.to_rgba(weight[4, 1, 2, 0])
    np.testing.assert_allclose(drawn[4 * 4 + 2, 1 * 4 + 0], expected, atol=1 / 255)
    assert len(fig.axes) == 2  # the image and its colorbar


def test_colour_scale_is_the_whole_layers_and_the_default_subset_is_stated(
    torch_layers: dict[str, Any],
) -> None:
    layer, weight = _layer(torch_layers, "big")  # (48, 40, 3, 3), max |w| at [47, 39]
    fig = layer.plot_kernels()
    image = _image(fig)
    assert image.shape == (32 * 4 - 1, 16 * 4 - 1)
    assert fig.mappable.get_clim() == (-BIG_MAX, BIG_MAX)
    assert np.nanmax(np.abs(image)) < BIG_MAX
    assert (
        "showing filters 0-31 of 48, input channels 0-15 of 40; use --all or --filters/--channels"
        in _text(fig)
    )
    rows, cols = _ticks(fig)  # at most 16 labels an axis: every second filter
    assert rows == [f"f{i}" for i in range(0, 32, 2)] and cols == [f"in{i}" for i in range(16)]

    smaller = layer.plot_kernels(max_filters=4, max_channels=2)
    assert _image(smaller).shape == (4 * 4 - 1, 2 * 4 - 1)
    assert "filters 0-3 of 48, input channels 0-1 of 40; use --all" in _text(smaller)

    everything = layer.plot_kernels(all=True)
    image = _image(everything)
    assert image.shape == (48 * 4 - 1, 40 * 4 - 1)
    np.testing.assert_array_equal(_cell(image, 47, 39, 3, 3), weight[47, 39])
    assert "showing all 48 filters x all 40 input channels" in _text(everything)
    assert "use --all" not in _text(everything)


@pytest.mark.parametrize(
    ("filters", "channels", "rows", "cols", "note"),
    [
        (
            "2:5",
            "0:8:3",
            [2, 3, 4],
            [0, 3, 6],
            "filters 2-4 of 48, input channels 0-6 step 3 of 40",
        ),
        (slice(40, None), [0, 39, -2], list(range(40, 48)), [0, 39, 38], "0, 39, 38 of 40"),
        ("7", "5,1", [7], [5, 1], "filters 7 of 48, input channels 5, 1 of 40"),
    ],
)
def test_selection(
    torch_layers: dict[str, Any],
    filters: Any,
    channels: Any,
    rows: list[int],
    cols: list[int],
    note: str,
) -> None:
    layer, weight = _layer(torch_layers, "big")
    fig = layer.plot_kernels(filters=filters, channels=channels)
    image = _image(fig)
    assert image.shape == (len(rows) * 4 - 1, len(cols) * 4 - 1)
    for r, f in enumerate(rows):
        for c, i in enumerate(cols):
            np.testing.assert_array_equal(_cell(image, r, c, 3, 3), weight[f, i])
    assert _ticks(fig) == ([f"f{f}" for f in rows], [f"in{i}" for i in cols])
    assert note in _text(fig) and "use --all" not in _text(fig)
    assert fig.mappable.get_clim() == (-BIG_MAX, BIG_MAX)  # still the whole layer's


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"filters": "48:50"}, "selects no filters"),
        ({"filters": [0, 48]}, "index 48 is out of range"),
        ({"channels": "a:b"}, "channels 'a:b'"),
        ({"filters": "0:4:0"}, "step cannot be 0"),
        ({"view": "histogram"}, "unknown view"),
        ({"depth": 1}, "depth applies to 3-D kernels only"),
    ],
)
def test_bad_options_raise_one_line(
    torch_layers: dict[str, Any], options: dict[str, Any], words: str
) -> None:
    layer, _ = _layer(torch_layers, "big")
    with pytest.raises(WeightscopeError, match=words) as info:
        layer.plot_kernels(**options)
    assert "\n" not in str(info.value)


def test_many_filters_thin_the_tick_labels(torch_layers: dict[str, Any]) -> None:
    layer, _ = _layer(torch_layers, "big")
    rows, _ = _ticks(layer.plot_kernels(all=True, max_filters=None))
    assert rows == [f"f{i}" for i in range(0, 48, 4)]  # 48 rows: every fourth labelled


def test_torch_depthwise_column_wraps_in_reading_order(torch_layers: dict[str, Any]) -> None:
    """One input channel per filter: the 12 filters' one column wraps into 4 rows of 3, filter
    f at row f // 3, column f % 3, each row labelled with its first filter."""
    layer, weight = _layer(torch_layers, "depthwise")  # (12, 1, 3, 3), groups=6, multiplier 2
    assert layer.kind == "depthwise_conv2d"
    fig = layer.plot_kernels()
    image = _image(fig)
    assert image.shape == (4 * 4 - 1, 3 * 4 - 1)
    for f in range(12):
        np.testing.assert_array_equal(_cell(image, f // 3, f % 3, 3, 3), weight[f, 0])
    assert _ticks(fig) == (["f0", "f3", "f6", "f9"], ["+0", "+1", "+2"])
    assert "filter o reads input channel o // 2" in _text(fig)
    assert "one input channel per filter: the filters in reading order, 3 per row" in _text(fig)
    assert fig.axes[0].get_ylabel() == "first filter of the row"


def test_keras_depthwise_cells_follow_the_multiplier() -> None:
    """Keras stores a depthwise kernel (kh, kw, in, M); canonical filter o = c * M + m."""
    with weightscope.load(example_path()) as model:
        layer = model.layer("dwconv2")
        native = layer.tensor("kernel").numpy()  # (3, 3, 8, 2) as Keras wrote it
        image = _image(layer.plot_kernels())
    assert image.shape == (4 * 4 - 1, 4 * 4 - 1)  # 16 filters, 4 a row
    for o in range(16):
        cell = _cell(image, o // 4, o % 4, 3, 3)
        np.testing.assert_array_equal(cell, native[:, :, o // 2, o % 2])


def test_a_depthwise_kernel_shows_as_many_cells_as_a_grid(torch_layers: dict[str, Any]) -> None:
    """Its one column wraps, so the default grid's 32 x 16 cells go to filters: all 48 of a
    48-filter depthwise conv (not the first 32), 7 a row."""
    layer, weight = _layer(torch_layers, "many_dw")  # (48, 1, 3, 3)
    fig = layer.plot_kernels()
    image = _image(fig)
    assert image.shape == (7 * 4 - 1, 7 * 4 - 1)
    np.testing.assert_array_equal(_cell(image, 47 // 7, 47 % 7, 3, 3), weight[47, 0])
    assert "showing all 48 filters x the one input channel per group" in _text(fig)
    assert "use --all" not in _text(fig)
    assert "filters 0-31" in _text(layer.plot_kernels(max_filters=2, max_channels=16))


def test_a_short_last_row_is_left_blank() -> None:
    """conv1 of the example (8 filters, one input channel): 3 a row, the ninth place empty and
    drawn as background, not as the grey of the separators (or of a NaN weight)."""
    with weightscope.load(example_path()) as model:
        layer = model.layer("conv1")
        native = layer.tensor("kernel").numpy()  # (3, 3, 1, 8)
        fig = layer.plot_kernels()
    image = _image(fig)
    assert image.shape == (3 * 4 - 1, 3 * 4 - 1)
    for o in range(8):
        np.testing.assert_array_equal(_cell(image, o // 3, o % 3, 3, 3), native[:, :, 0, o])
    drawn = fig.axes[0].images[0].get_array()
    assert (drawn[8:, 7:, 3] == 0).all()  # the empty place and the separators beside it
    assert (drawn[8:, :7, 3] == 1).all() and (drawn[:7, :, 3] == 1).all()
    assert _ticks(fig) == (["f0", "f3", "f6"], ["+0", "+1", "+2"])


def test_one_filter_row_wraps_its_channels(torch_layers: dict[str, Any]) -> None:
    layer, weight = _layer(torch_layers, "big")  # (48, 40, 3, 3)
    fig = layer.plot_kernels(filters="7")  # one filter, its first 16 channels (the default)
    image = _image(fig)
    assert image.shape == (4 * 4 - 1, 4 * 4 - 1)
    for c in range(16):
        np.testing.assert_array_equal(_cell(image, c // 4, c % 4, 3, 3), weight[7, c])
    assert _ticks(fig) == (["in0", "in4", "in8", "in12"], ["+0", "+1", "+2", "+3"])
    assert "one filter (f7): its input channels in reading order, 4 per row" in _text(fig)


def test_conv1d_cells_are_strips(torch_layers: dict[str, Any]) -> None:
    layer, weight = _layer(torch_layers, "conv1d")  # (5, 3, 4)
    fig = layer.plot_kernels()
    image = _image(fig)
    assert image.shape == (5 * 2 - 1, 3 * 5 - 1)
    for f in range(5):
        for c in range(3):
            np.testing.assert_array_equal(_cell(image, f, c, 1, 4), weight[f, c][None, :])
    assert "1 x 4 kernel" in _text(fig)


def test_conv3d_shows_one_depth_slice(torch_layers: dict[str, Any]) -> None:
    layer, weight = _layer(torch_layers, "conv3d")  # (3, 2, 3, 2, 2)
    fig = layer.plot_kernels()
    image = _image(fig)
    assert image.shape == (3 * 3 - 1, 2 * 3 - 1)
    np.testing.assert_array_equal(_cell(image, 2, 1, 2, 2), weight[2, 1, 1])
    assert "depth slice d=1 of 3 (the middle one" in _text(fig)
    m = float(np.abs(weight).max())  # over every depth, not only the slice shown
    assert fig.mappable.get_clim() == (-m, m)

    first = layer.plot_kernels(depth=0)
    np.testing.assert_array_equal(_cell(_image(first), 2, 1, 2, 2), weight[2, 1, 0])
    assert "depth slice d=0 of 3 (chosen)" in _text(first)
    with pytest.raises(WeightscopeError, match="depth 3 is out of range"):
        layer.plot_kernels(depth=3)


def test_pointwise_and_dense_are_one_matrix(torch_layers: dict[str, Any]) -> None:
    for name, matrix in (("pointwise", lambda w: w[:, :, 0, 0]), ("linear", lambda w: w)):
        layer, weight = _layer(torch_layers, name)
        fig = layer.plot_kernels()
        image = _image(fig)
        np.testing.assert_array_equal(image, matrix(weight))  # out x in, no separators
        rows, cols = _ticks(fig)
        assert rows == [f"f{i}" for i in range(weight.shape[0])]
        assert cols == [f"in{i}" for i in range(weight.shape[1])]


def test_transposed_conv_is_drawn_from_its_canonical_kernel(torch_layers: dict[str, Any]) -> None:
    """torch stores ConvTranspose2d(4, 6, groups=2) as (in=4, out/groups=3, kh, kw); canonical
    [o, i] connects input g*2 + i to output o, g = o // 3."""
    layer, weight = _layer(torch_layers, "transposed")
    image = _image(layer.plot_kernels())
    assert image.shape == (6 * 4 - 1, 2 * 4 - 1)
    for o in range(6):
        g = o // 3
        for i in range(2):
            expected = weight[g * 2 + i, o - g * 3]
            np.testing.assert_array_equal(_cell(image, o, i, 3, 3), expected)


# ---------------------------------------------------------------------------------------------
# Frames that are filled: the rendered figure, measured


def _boxes(fig: Any) -> dict[str, Any]:
    """Draw the figure and return the window extents (pixels) of what a reader looks at."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]

    def shown(texts: Any) -> list[Any]:
        return [t.get_window_extent(renderer) for t in texts if t.get_visible() and t.get_text()]

    boxes = {
        "figure": fig.bbox,
        "image": ax.get_window_extent(renderer),
        "image_all": ax.get_tightbbox(renderer),
        "yticks": shown(ax.get_yticklabels()),
        "xticks": shown(ax.get_xticklabels()),
        "labels": shown([ax.xaxis.label, ax.yaxis.label]),
        "header": shown(fig.texts),
        "colorbar": [a.get_tightbbox(renderer) for a in fig.axes[1:]],
    }
    return boxes


def _overlapping(boxes: list[Any]) -> list[tuple[int, int]]:
    return [
        (i, j)
        for i in range(len(boxes))
        for j in range(i + 1, len(boxes))
        if boxes[i].overlaps(boxes[j])
    ]


def assert_fills_its_frame(fig: Any, min_fraction: float = 0.2) -> None:
    """The image is neither a strip nor a stamp, and no two labels are drawn over each other."""
    boxes = _boxes(fig)
    image, figure = boxes["image"], boxes["figure"]
    assert 1 / 3.05 <= image.width / image.height <= 3.05, (image.width, image.height)
    fraction = image.width * image.height / (figure.width * figure.height)
    assert fraction >= min_fraction, f"the image fills {fraction:.0%} of the figure"
    for axis in ("yticks", "xticks"):
        assert boxes[axis], f"no {axis} labels"
        assert _overlapping(boxes[axis]) == [], f"{axis} labels overlap"
        for label in boxes[axis]:
            assert not any(label.overlaps(other) for other in boxes["labels"])
    assert _overlapping(boxes["labels"]) == []
    (header,) = boxes["header"]
    for other in [boxes["image_all"], *boxes["colorbar"]]:
        assert not header.overlaps(other), "the caption runs into the figure"
        assert not boxes["image"].overlaps(other) or other is boxes["image_all"]
    everything = [header, boxes["image_all"], *boxes["colorbar"]]
    for box in everything:  # nothing cut at the figure's edge
        assert box.x0 >= -1 and box.y0 >= -1, box
        assert box.x1 <= figure.x1 + 1 and box.y1 <= figure.y1 + 1, box


@pytest.mark.parametrize(
    ("layer", "options"),
    [
        ("conv1", {}),  # 8 filters x 1 input channel
        ("dwconv2", {}),  # depthwise: 16 filters x 1
        ("pwconv2", {}),  # 1x1: a 16 x 16 matrix
        ("logits", {}),  # dense 10 x 256
        ("logits", {"view": "norms"}),
        ("dwconv2", {"view": "norms"}),
    ],
)
def test_example_figures_fill_their_frame(layer: str, options: dict[str, Any]) -> None:
    with weightscope.load(example_path()) as model:
        fig = model.layer(layer).plot_kernels(**options)
    assert_fills_its_frame(fig)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("depthwise", {}),
        ("big", {"all": True}),  # 48 x 40 slices: every second row labelled
        ("big", {"filters": "3"}),
        ("wide", {}),  # 10 x 256
        ("tall", {}),  # 200 x 3
        ("huge", {}),  # 1200 x 700, sampled
        ("huge", {"all": True}),
        ("conv1d", {}),
        ("grouped", {"view": "norms"}),
    ],
)
def test_figures_fill_their_frame(
    torch_layers: dict[str, Any], name: str, options: dict[str, Any]
) -> None:
    layer, _ = _layer(torch_layers, name)
    assert_fills_its_frame(layer.plot_kernels(**options))


def test_a_dense_matrix_is_stretched_to_a_readable_aspect(torch_layers: dict[str, Any]) -> None:
    """A 10 x 256 dense kernel: 3 pixels a column, a whole number of pixels a row, and the
    drawn image no more than 3 times wider than tall (it was a 30-pixel stripe)."""
    layer, weight = _layer(torch_layers, "wide")
    fig = layer.plot_kernels()
    np.testing.assert_array_equal(_image(fig), weight)  # every weight, nothing resampled
    width, height = fig.axes[0].bbox.size
    assert width == pytest.approx(256 * 3) and height == pytest.approx(10 * 26)
    assert _ticks(fig)[0] == [f"f{i}" for i in range(10)]  # 26 pixels apart: all labelled
    assert _ticks(fig)[1] == [f"in{i}" for i in range(0, 256, 16)]  # at most 16 an axis
    tall, _ = _layer(torch_layers, "tall")
    width, height = tall.plot_kernels().axes[0].bbox.size
    assert height / width == pytest.approx(3, rel=0.05)


def test_a_large_matrix_is_sampled_evenly_and_says_so(torch_layers: dict[str, Any]) -> None:
    layer, weight = _layer(torch_layers, "huge")  # (1200, 700)
    fig = layer.plot_kernels()
    np.testing.assert_array_equal(_image(fig), weight[::3, ::2])  # at most 512 each way
    text = _text(fig)
    assert "filters 0-1197 step 3 of 1200, input channels 0-698 step 2 of 700" in text
    assert "(sampled evenly: too many to see each); use --all or --filters/--channels" in text
    rows, cols = _ticks(fig)
    assert rows[:2] == ["f0", "f96"] and cols[:2] == ["in0", "in64"]  # every 32nd of those shown
    norms = layer.plot_kernels(view="norms", max_filters=100)
    np.testing.assert_allclose(_image(norms), np.abs(weight[::12, :]), rtol=1e-6)
    everything = layer.plot_kernels(all=True)
    assert _image(everything).shape == (1200, 700) and "sampled" not in _text(everything)


# ---------------------------------------------------------------------------------------------
# The rgb and norms views


def test_rgb_view_shows_each_keras_filter_as_a_colour_image(keras_files: dict[str, Any]) -> None:
    kernel = keras_files["rgb_conv"]  # (5, 5, 3, 8): filter f is kernel[:, :, :, f]
    with weightscope.load(keras_files["keras"]) as model:
        layer = model.layer("rgb_conv")
        per_filter = layer.plot_kernels(view="rgb")
        per_layer = layer.plot_kernels(view="rgb", rgb_scale="layer")
        few = layer.plot_kernels(view="rgb", filters="0:2")
    image = _image(per_filter)
    assert image.shape == (3 * 6 - 1, 3 * 6 - 1, 4)  # 8 filters, 3 per row
    for f in range(8):
        r, c = divmod(f, 3)
        own = kernel[:, :, :, f]
        cell = _cell(image, r, c, 5, 5)
        np.testing.assert_allclose(cell[..., :3], 0.5 + own / (2 * np.abs(own).max()), atol=1e-6)
        assert (cell[..., 3] == 1).all()
    assert (image[5, :, 3] == 0).all()  # transparent separator rows
    assert "each filter scaled on its own" in _text(per_filter)
    assert "input channels 0, 1, 2 as R, G, B" in _text(per_filter)
    m = np.abs(kernel).max()
    np.testing.assert_allclose(
        _cell(_image(per_layer), 2, 1, 5, 5)[..., :3], 0.5 + kernel[:, :, :, 7] / (2 * m), atol=1e-6
    )
    assert "one scale for the whole layer" in _text(per_layer)
    assert _image(few).shape == (5, 11, 4)
    assert "filters 0-1 of 8" in _text(few)


def test_rgb_view_refuses_other_channel_counts(keras_files: dict[str, Any]) -> None:
    with weightscope.load(keras_files["keras"]) as model:
        layer = model.layer("conv4")  # 8 input channels
        with pytest.raises(WeightscopeError) as info:
            layer.plot_kernels(view="rgb")
    message = str(info.value)
    assert "conv4" in message and "exactly 3 input channels" in message and "has 8" in message
    assert "\n" not in message


def test_norm_map_of_a_grouped_conv_is_block_diagonal(torch_layers: dict[str, Any]) -> None:
    layer, weight = _layer(torch_layers, "grouped")  # (6, 2, 3, 3), groups=2: in_total 4
    fig = layer.plot_kernels(view="norms")
    image = _image(fig)
    assert image.shape == (6, 4)
    norms = np.sqrt((weight.astype(np.float64) ** 2).sum(axis=(2, 3)))
    np.testing.assert_allclose(image[0:3, 0:2], norms[0:3], rtol=1e-6)
    np.testing.assert_allclose(image[3:6, 2:4], norms[3:6], rtol=1e-6)
    assert np.isnan(image[0:3, 2:4]).all() and np.isnan(image[3:6, 0:2]).all()  # not connected
    assert fig.mappable.get_clim() == (0.0, pytest.approx(norms.max()))
    assert _ticks(fig) == ([f"f{i}" for i in range(6)], [f"in{i}" for i in range(4)])
    assert "blank = not connected" in _text(fig)


def test_norm_map_of_a_depthwise_conv_is_a_staircase(torch_layers: dict[str, Any]) -> None:
    layer, _ = _layer(torch_layers, "depthwise")  # 12 filters, 6 inputs, 2 filters per input
    image = _image(layer.plot_kernels(view="norms"))
    assert image.shape == (12, 6)
    connected = ~np.isnan(image)
    assert (connected == (np.arange(12)[:, None] // 2 == np.arange(6)[None, :])).all()


# ---------------------------------------------------------------------------------------------
# What cannot be drawn


def test_layer_without_a_kernel(torch_layers: dict[str, Any]) -> None:
    layer, _ = _layer(torch_layers, "norm")
    with pytest.raises(WeightscopeError, match=r"layer 'norm' \(batch_norm\): has no kernel"):
        layer.plot_kernels()


def test_kernel_without_a_canonical_form(keras_files: dict[str, Any]) -> None:
    with weightscope.load(keras_files["h5"]) as model:
        layer = model.layer("conv_lstm")  # kind unknown: its kernel has no canonical layout
        with pytest.raises(WeightscopeError) as info:
            layer.plot_kernels()
        figure = model.layer("lstm").plot_kernels()  # each gate's (units, in) rows
        kernel = model.layer("lstm").tensor("kernel")
        np.testing.assert_array_equal(figure.values, kernel.canonical().reshape(4 * 3, 4))
    message = str(info.value)
    assert "'conv_lstm'" in message and "no canonical layout" in message and "\n" not in message


def test_figure_works_without_pyplot_and_renders_in_jupyter() -> None:
    """A fresh interpreter: no pyplot, no backend chosen; the figure still writes a PNG (what
    Jupyter shows through ``_repr_png_``)."""
    code = (
        "import sys, weightscope\n"
        "from weightscope.examples import example_path\n"
        "with weightscope.load(example_path()) as m:\n"
        "    png = m.layer('conv1').plot_kernels()._repr_png_()\n"
        "assert png.startswith(b'\\x89PNG\\r\\n\\x1a\\n'), png[:8]\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "print(len(png))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 1000


# ---------------------------------------------------------------------------------------------
# The command line

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "pdf": b"%PDF-", "svg": b"<?xml"}


@pytest.mark.parametrize("fmt", ["png", "svg", "pdf"])
def test_cli_writes_the_format_of_the_suffix(tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"pw.{fmt}"
    result = run_cli("plot", "--example", "--layer", "pwconv2", "-o", out, "--dpi", "50")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote slices of layer 'pwconv2'")
    assert str(out) in lines[0]
    data = out.read_bytes()
    assert data.startswith(MAGIC[fmt])
    if fmt == "png":
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert f"({width}x{height} px)" in lines[0]
    if fmt == "svg":
        assert b"<svg" in data and b"<image" in data  # the kernel grid as one embedded image
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_cli_selection_and_view(tmp_path: Path) -> None:
    out = tmp_path / "norms.png"
    result = run_cli(
        "plot", "--example", "--layer", "dwconv2", "--view", "norms", "--filters", "0:4", "-o", out
    )
    assert result.returncode == 0, result.stderr
    assert "filters 0-3 of 16" in result.stderr
    assert out.read_bytes().startswith(MAGIC["png"])


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("weightscope: "), result.stderr
    return lines[0]


def test_cli_refuses_an_unknown_suffix(tmp_path: Path) -> None:
    out = tmp_path / "conv1.jpg"
    line = _one_line_error(run_cli("plot", "--example", "--layer", "conv1", "-o", out))
    assert "unknown output format (.jpg)" in line and ".png, .svg or .pdf" in line
    assert not out.exists()


def test_cli_without_layer_is_a_usage_error_and_a_wrong_one_lists_the_layers(
    tmp_path: Path,
) -> None:
    missing = run_cli("plot", "--example", "-o", tmp_path / "x.png")
    assert missing.returncode == 2
    assert missing.stderr.splitlines() == [
        "usage: weightscope plot (FILE | --example) --layer NAME -o OUT.png|svg|pdf [options]",
        "weightscope plot: error: the following arguments are required: --layer",
    ]
    line = _one_line_error(run_cli("plot", "--example", "--layer", "x", "-o", tmp_path / "x.png"))
    assert "layers: conv1, bn1, dwconv2, pwconv2, logits" in line


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--layer", "nope"], "no layer named 'nope'"),
        (["--layer", "bn1"], "has no kernel"),
        (["--layer", "conv1", "--view", "rgb"], "exactly 3 input channels"),
        (["--layer", "conv1", "--filters", "9:12"], "selects no filters"),
    ],
)
def test_cli_errors_are_one_line(tmp_path: Path, args: list[str], words: str) -> None:
    out = tmp_path / "x.png"
    line = _one_line_error(run_cli("plot", "--example", *args, "-o", out))
    assert words in line
    assert not out.exists()
