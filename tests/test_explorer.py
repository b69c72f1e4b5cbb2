"""``weightscope.explore``: the Jupyter widget that browses a model's kernels, driven here the
way a notebook drives it (setting widget values runs the same callbacks)."""

from __future__ import annotations

import base64
import io
import sys

import pytest

import weightscope

EXAMPLE = weightscope.example_path()
CONVS = ["conv1", "dwconv2", "pwconv2"]


def png_size(data: str) -> tuple[int, int]:
    """Width and height of a base64 PNG (a notebook output's ``image/png``)."""
    from PIL import Image

    with Image.open(io.BytesIO(base64.b64decode(data, validate=True))) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


@pytest.fixture(scope="module")
def example():
    with weightscope.load(EXAMPLE) as model:
        yield model


def test_explore_is_a_lazy_attribute():
    import weightscope.notebook.explorer

    assert weightscope.explore is weightscope.notebook.explorer.explore
    assert "explore" in weightscope.__all__


def test_explorer_widget(example):
    pytest.importorskip("ipywidgets")
    box = weightscope.explore(example)
    picker, view, filters, channels, depth, info, output = box.children
    assert [label.split()[0] for label, _ in picker.options] == [*CONVS, "logits"]

    def shown() -> str:
        (item,) = output.outputs
        assert item["output_type"] == "display_data", item
        return item["data"]["image/png"]

    assert min(png_size(shown())) > 50
    assert info.value == "conv1.plot_kernels(view='slices', filters=0:8, channels=0:1)"
    assert channels.disabled  # conv1 reads one input channel
    picker.value = 2  # pwconv2 (16, 16, 1, 1)
    assert (filters.max, channels.max) == (15, 15) and not channels.disabled
    filters.value = (2, 5)
    assert info.value == "pwconv2.plot_kernels(view='slices', filters=2:6, channels=0:16)"
    view.value = "norms"
    assert "view='norms'" in info.value
    first = shown()
    picker.value = 3  # logits, dense (10, 256)
    assert (filters.max, channels.max) == (9, 255) and view.value == "norms"
    assert shown() != first
    assert depth.layout.display == "none"


def test_explorer_widget_rgb_and_errors(tmp_path):
    pytest.importorskip("ipywidgets")
    torch = pytest.importorskip("torch")
    conv = torch.nn.Conv3d(3, 5, (3, 3, 3))
    rgb = torch.nn.Conv2d(3, 4, 3)
    path = tmp_path / "m.pt"
    torch.save({"c3.weight": conv.weight.data, "rgb.weight": rgb.weight.data}, path)
    box = weightscope.explore(path)
    picker, view, _, channels, depth, info, output = box.children
    assert depth.layout.display is None and depth.max == 2 and depth.value == 1
    assert "depth=1" in info.value
    assert "rgb" not in view.options
    picker.value = 1
    assert "rgb" in view.options
    view.value = "rgb"
    assert channels.disabled and "channels" not in info.value
    assert output.outputs[0]["output_type"] == "display_data"


def test_explorer_needs_a_kernel(tmp_path):
    pytest.importorskip("ipywidgets")
    torch = pytest.importorskip("torch")
    path = tmp_path / "bn.pt"
    torch.save({"bn.weight": torch.ones(3), "bn.bias": torch.zeros(3)}, path)
    with pytest.raises(weightscope.WeightscopeError, match="no conv or dense kernel"):
        weightscope.explore(path)


def test_explorer_without_ipywidgets(monkeypatch, example):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with pytest.raises(ImportError, match=r"pip install 'weightscope\[notebook\]'"):
        weightscope.explore(example)
