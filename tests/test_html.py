"""HTML views: the Jupyter tables of a model and a layer, the self-contained report page, and
``weightscope report``."""

from __future__ import annotations

import base64
import io
import re
import shutil
from html.parser import HTMLParser

import pytest
from cli_runner import run_cli
from damaged import with_lying_bias

import weightscope
from weightscope.reporters.html import layer_html, model_html, report_html, summary_table

EXAMPLE = weightscope.example_path()
LAYERS = ["conv1", "bn1", "dwconv2", "pwconv2", "logits"]
CONVS = ["conv1", "dwconv2", "pwconv2"]

pytestmark = pytest.mark.xdist_group("html")  # the report page is a module fixture (seconds)

HOSTILE_CONV = "<script>alert('conv')</script>"
HOSTILE_DENSE = '<img src=x onerror="alert(1)">&amp;'


@pytest.fixture(scope="module")
def example():
    with weightscope.load(EXAMPLE) as model:
        yield model


@pytest.fixture(scope="module")
def report(example):
    return report_html(example)


@pytest.fixture(scope="module")
def hostile_file(tmp_path_factory):
    """A real PyTorch state dict whose layer names are markup."""
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    state = {
        f"{HOSTILE_CONV}.weight": torch.randn(4, 3, 3, 3, generator=generator),
        f"{HOSTILE_CONV}.bias": torch.zeros(4),
        f"{HOSTILE_DENSE}.weight": torch.randn(2, 16, generator=generator) * 0.1,
    }
    path = tmp_path_factory.mktemp("hostile") / "hostile.pt"
    torch.save(state, path)
    return path


class Page(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def all(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == name]


def png_size(uri: str) -> tuple[int, int]:
    """Width and height of the PNG in a data URI (after checking it decodes as one)."""
    from PIL import Image

    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    data = base64.b64decode(uri[len(prefix) :], validate=True)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(data)) as image:
        image.verify()
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


def cells(text: str) -> list[list[str]]:
    """The text of every table row's cells (tags removed)."""
    rows = re.findall(r"<tr>(.*?)</tr>", text, flags=re.S)
    return [[re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td.*?>(.*?)</td>", r)] for r in rows]


def test_model_html_has_one_row_per_layer(example):
    text = model_html(example)
    rows = [row for row in cells(text) if row]
    assert [row[0] for row in rows] == LAYERS
    conv1 = rows[0]
    stats = example.layer("conv1").tensor("kernel").stats()
    assert conv1[1] == "conv2d"
    assert conv1[2] == "(3, 3, 1, 8) HWIO -&gt; (8, 1, 3, 3) OIHW"
    assert conv1[3] == "80" and conv1[4] == "float32"
    assert conv1[5:] == [f"{stats.mean:.4g}", f"{stats.std:.4g}"]
    assert rows[4][2] == "(256, 10) IO -&gt; (10, 256) OI" and rows[4][3] == "2,570"
    counts = example.params
    assert f"{counts.total:,}" in text and f"{counts.non_trainable:,}" in text
    assert "layers without weights: relu1, relu2, pool, flatten" in text
    assert example._repr_html_() == text


def test_layer_html_lists_every_tensor(example):
    layer = example.layer("bn1")
    text = layer_html(layer)
    rows = [row for row in cells(text) if row]
    assert [row[0] for row in rows] == ["gamma", "beta", "moving_mean", "moving_variance"]
    variance = layer.tensor("moving_variance")
    stats = variance.stats()
    assert rows[3][1] == variance.name and rows[3][4] == "no"
    assert rows[3][5:9] == [f"{v:.4g}" for v in (stats.mean, stats.std, stats.min, stats.max)]
    assert "params=32" in text and "class BatchNormalization" in text
    dw = layer_html(example.layer("dwconv2"))
    assert "(3, 3, 8, 2) <span" in dw and "(16, 1, 3, 3) OIHW" in dw and "groups=8" in dw
    assert "depth_multiplier=2" in dw
    assert example.layer("conv1")._repr_html_() == layer_html(example.layer("conv1"))


def test_closed_model_is_shown_without_statistics():
    model = weightscope.load(EXAMPLE)
    model.close()  # displayed after its `with` block, in a notebook
    text = model_html(model)
    assert "statistics not shown" in text and all(name in text for name in LAYERS)
    assert "statistics not shown" in layer_html(model.layer("conv1"))


def test_cli_report_on_a_damaged_tensor_fails(tmp_path):
    damaged = with_lying_bias(tmp_path)
    out = tmp_path / "r.html"
    one_line_error(run_cli("report", damaged, "-o", out))
    assert not out.exists()


def test_names_from_the_file_are_escaped(hostile_file):
    with weightscope.load(hostile_file) as model:
        assert [layer.name for layer in model.layers] == [HOSTILE_CONV, HOSTILE_DENSE]
        views = [model_html(model), layer_html(model.layers[0]), layer_html(model.layers[1])]
        views.append(report_html(model))
    escaped_conv = "&lt;script&gt;alert(&#x27;conv&#x27;)&lt;/script&gt;"
    escaped_dense = "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;amp;"
    for text in views:
        assert "<script" not in text.lower()
        assert "<img src=x" not in text and "onerror=" not in text.replace("onerror=&quot;", "")
    for text in (views[0], views[3]):
        assert escaped_conv in text and escaped_dense in text
    assert escaped_conv in views[1] and escaped_dense in views[2]
    # the report's figures are the only images, and every name stays inside text or alt
    page = Page(views[3])
    assert all(png_size(img["src"] or "") for img in page.all("img"))


def test_report_is_self_contained(report):
    assert report.startswith("<!DOCTYPE html>")
    assert not re.search(r"https?:", report, flags=re.I)
    assert "<script" not in report.lower() and "javascript:" not in report.lower()
    page = Page(report)
    assert not page.all("link") and not page.all("iframe") and not page.all("object")
    for tag, attrs in page.tags:
        if tag != "img":
            assert "src" not in attrs, (tag, attrs)
        href = attrs.get("href")
        assert href is None or href.startswith("#"), href
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
    images = page.all("img")
    assert len(images) >= len(CONVS)
    for img in images:
        width, height = png_size(img["src"] or "")
        assert width > 50 and height > 50
    alts = [img["alt"] or "" for img in images]
    for name in CONVS:
        assert f"{name}: kernel slices" in alts


def test_report_sections(example, report):
    from weightscope.analysis.init import analyze_model
    from weightscope.analysis.params import verify

    for title in ("Summary", "Parameter verification", "Initialization", "Convolution kernels"):
        assert f"<h2>{title}</h2>" in report
    assert summary_table(example) in report and summary_table(example) in model_html(example)
    verified = verify(example).to_dict()
    for layer in verified["layers"]:
        assert f"<td>{layer['name']}</td>" in report
    init = [r.to_dict() for r in analyze_model(example)]
    assert init, "the example's layers are analysed"
    for record in init:
        assert f"<td>{record['layer']}</td>" in report
        assert f">{record['verdict']}</td>" in report
    alts = [img["alt"] for img in Page(report).all("img")]
    analysed = {record["layer"] for record in init}
    for name in CONVS:
        assert (f"{name}: weights against init" in alts) == (name in analysed)


def test_report_without_stats_reads_no_tensor(example, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("tensor data read")

    for _, tensor in example.tensors():
        monkeypatch.setattr(tensor, "numpy", refuse)
        monkeypatch.setattr(tensor, "source", None)
    text = report_html(example, with_stats=False)
    assert "<img" not in text and "Parameter verification" in text
    assert all(name in text for name in LAYERS)


def test_report_closes_its_figures(example):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    report_html(example)
    assert plt.get_fignums() == before


def test_cli_report_writes_the_page(tmp_path):
    out = tmp_path / "report.html"
    result = run_cli("report", "--example", "-o", out, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(out) in result.stderr
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert text.count("<img ") >= len(CONVS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]  # no temporary left


def test_cli_report_no_stats(tmp_path):
    out = tmp_path / "r.html"
    result = run_cli("report", "--example", "-o", out, "--no-stats")
    assert result.returncode == 0, result.stderr
    assert "<img" not in out.read_text(encoding="utf-8")


def one_line_error(result) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("weightscope: ")
    assert "Traceback" not in result.stderr
    return result.stderr


def test_cli_report_refuses_to_overwrite_the_model(tmp_path):
    model = tmp_path / "model.h5"
    shutil.copy(EXAMPLE, model)
    before = model.read_bytes()
    assert "refusing to overwrite" in one_line_error(run_cli("report", model, "-o", model))
    assert model.read_bytes() == before
    link = tmp_path / "link.h5"
    link.symlink_to(model)
    assert "refusing to overwrite" in one_line_error(run_cli("report", link, "-o", model))
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.h5", "model.h5"]


def test_cli_report_errors_are_one_line(tmp_path):
    missing = tmp_path / "missing.h5"
    assert "no such file" in one_line_error(run_cli("report", missing, "-o", tmp_path / "r.html"))
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not a model at all")
    one_line_error(run_cli("report", garbage, "-o", tmp_path / "r.html"))
    nowhere = tmp_path / "no" / "such" / "r.html"
    assert "does not exist" in one_line_error(run_cli("report", "--example", "-o", nowhere))
    assert "is a directory" in one_line_error(run_cli("report", "--example", "-o", tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.h5"]


def test_cli_report_overwrites_an_old_report(tmp_path):
    out = tmp_path / "r.html"
    out.write_text("old")
    assert run_cli("report", "--example", "-o", out, "--no-stats").returncode == 0
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_help_describes_report():
    result = run_cli("report", "--help")
    assert result.returncode == 0
    assert "self-contained" in result.stdout and "--output" in result.stdout
