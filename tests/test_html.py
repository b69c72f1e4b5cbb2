"""HTML views: the Jupyter tables of a model and a layer, the self-contained report page, and
``weightscope report``."""

from __future__ import annotations

import base64
import html
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

    assert re.findall(r"<h2>(.*?)</h2>", report) == [
        "Summary",
        "Parameter verification",
        "Initialization",
        "Layers",
    ]
    assert summary_table(example) in model_html(example)
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


def _section(report: str, name: str) -> str:
    """The HTML of the report's section about the layer ``name``."""
    sections = re.findall(r'<section id="layer-\d+" class="layer">.*?</section>', report, re.S)
    (found,) = [s for s in sections if re.search(rf"<h3>{re.escape(name)} <small", s)]
    return found


def test_report_summary_has_min_max_and_flags(example, report):
    summary = re.search(r'<section id="summary">(.*?)</section>', report, re.S).group(1)
    header = re.findall(r"<th[^>]*>(.*?)</th>", summary)
    assert header[-5:] == ["mean", "std", "min", "max", "Flags"]
    rows = {row[0]: row for row in cells(summary) if row}
    assert list(rows) == LAYERS
    for name in LAYERS:
        stats = example.layer(name).principal.stats()
        assert rows[name][5:9] == [
            f"{v:.4g}" for v in (stats.mean, stats.std, stats.min, stats.max)
        ]
        assert rows[name][9] == "none"  # the example's layers raise no flag


def test_report_has_a_section_for_every_weight_bearing_layer(example, report):
    """The dense layer (82% of the example's parameters) included: its kernel matrix, its
    histogram against the initializer, its health, init verdict and parameter check."""
    from weightscope.analysis.init import analyze

    sections = re.findall(r'<section id="layer-\d+" class="layer"><h3>(.*?) <small', report)
    assert sections == LAYERS
    alts = [img["alt"] for img in Page(report).all("img")]
    assert "logits: kernel matrix" in alts and "logits: weights against init" in alts
    logits = _section(report, "logits")
    verdict = analyze(example.layer("logits"))
    assert "<b>Health:</b> no flag raised" in logits
    evidence = html.escape(verdict.evidence)
    assert f"<b>Init:</b> <b>trained</b> against glorot_uniform: {evidence}" in logits
    assert "<b>Params:</b> ok: 2,570 stored, 2,570 by formula (256 x 10 + 10)" in logits
    rows = {row[0]: row for row in cells(logits) if row}
    stats = example.layer("logits").tensor("kernel").stats()
    assert rows["kernel"][5:9] == [
        f"{v:.4g}" for v in (stats.mean, stats.std, stats.min, stats.max)
    ]
    bn1 = _section(report, "bn1")  # no figure, but its tensors, checks and notes
    assert "<img" not in bn1 and "moving_variance" in bn1 and "filter checks do not apply" in bn1


def test_report_runs_each_init_check_once(example, monkeypatch):
    """The init check reads and tests a kernel once for the page: its verdict, the health
    flags and the histogram all come from that one run (it ran twice per layer)."""
    import weightscope.analysis.init as init

    read = init._read
    counted: list[str] = []

    def counting(tensor, limits, *rest):
        counted.append(tensor.name)
        return read(tensor, limits, *rest)

    monkeypatch.setattr(init, "_read", counting)
    report_html(example)
    kernels = [example.layer(name).tensor("kernel").name for name in [*CONVS, "logits"]]
    assert sorted(counted) == sorted(kernels)


@pytest.fixture(scope="module")
def mixed_file(tmp_path_factory):
    """A whole pickled torch module with an embedding, an LSTM, a conv with a dead filter and a
    NaN, and a dense layer with a duplicated row."""
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    modules = nn.Sequential()
    modules.add_module("embed", nn.Embedding(300, 16))
    modules.add_module("lstm", nn.LSTM(16, 8))
    modules.add_module("conv", nn.Conv2d(3, 8, 3))
    modules.add_module("fc", nn.Linear(32, 6))
    with torch.no_grad():
        modules.conv.weight[2] = 0.0  # a dead filter
        modules.conv.weight[5, 0, 0, 0] = float("nan")
        modules.fc.weight[4] = modules.fc.weight[1]  # a duplicated row
    path = tmp_path_factory.mktemp("mixed") / "mixed.pt"
    torch.save(modules, path)
    return path


def test_report_shows_embedding_recurrent_and_health_flags(mixed_file):
    with weightscope.load(mixed_file) as model:
        kinds = {layer.name: layer.kind for layer in model.layers}
        text = report_html(model)
    assert kinds["embed"] == "embedding" and kinds["lstm"] == "lstm"
    sections = re.findall(r'<section id="layer-\d+" class="layer"><h3>(.*?) <small', text)
    assert sections == ["embed", "lstm", "conv", "fc"]
    alts = [img["alt"] for img in Page(text).all("img")]
    assert "embed: weights against init" in alts  # torch's normal(0, 1) embedding init
    assert "lstm: values" in alts  # no init check applies
    assert "conv: kernel slices" in alts and "fc: kernel matrix" in alts
    summary = re.search(r'<section id="summary">(.*?)</section>', text, re.S).group(1)
    rows = {row[0]: row for row in cells(summary) if row}
    assert rows["conv"][-1] == "nan_inf, dead_filters"
    assert rows["fc"][-1] == "duplicate_filters, at_init"  # a fresh torch model
    conv = _section(text, "conv")
    assert "1 NaN/Inf values; 1 of 8 filters dead" in conv
    assert "1 filters duplicate an earlier one" in _section(text, "fc")
    lstm = _section(text, "lstm")
    assert "weight_ih_l0" in lstm and "weight_hh_l0" in lstm  # every tensor, with its statistics


class _RefusingSource:
    """A tensor source that fails the test on any use."""

    def __getattr__(self, name):
        raise AssertionError(f"tensor data read ({name})")


def test_report_without_stats_reads_no_tensor(example, monkeypatch):
    for _, tensor in example.tensors():
        monkeypatch.setattr(tensor, "source", _RefusingSource())
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


def test_report_drawn_by_two_processes_is_the_same_page(example, report, monkeypatch):
    """processes=2 forks a child that draws about half of the layers: the page is byte for
    byte the one process's; a child that fails leaves its share to the parent, same page."""
    import os

    import weightscope.reporters.html as page

    if not page._can_fork():
        pytest.skip("the report forks only on Linux")
    assert report_html(example, processes=2) == report
    parent = os.getpid()
    section = page._layer_section

    def failing_in_the_child(index, found):
        if os.getpid() != parent:
            raise RuntimeError("the child fails")
        return section(index, found)

    monkeypatch.setattr(page, "_layer_section", failing_in_the_child)
    assert report_html(example, processes=2) == report


def test_report_shares_out_the_layers_by_cost(example):
    """The two shares cover every layer once, each in page order; the dense layer, the costliest
    (2,560 weights and two figures), goes first to one share, the rest balance it."""
    from weightscope.reporters.html import _share

    todo = list(enumerate(example.layers))
    mine, theirs = _share(todo)
    assert sorted(i for i, _ in mine + theirs) == list(range(len(todo)))
    for share in (mine, theirs):
        assert share and [i for i, _ in share] == sorted(i for i, _ in share)
    assert [layer.name for _, layer in mine][-1] == "logits"
