"""The report page in a real browser (headless Chromium, driven by Playwright): it renders, every
image decodes, nothing is fetched from outside the file, no script runs and the console stays
clean. Skipped only where no Chromium is installed (CI installs Debian's: see .ci/run)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cli_runner import run_cli
from playwright.sync_api import sync_playwright

import weightscope
from weightscope.reporters.html import report_html

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("browser")]  # one Chromium per module

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium() -> str | None:
    for path in CHROMIUM_PATHS:
        if Path(path).is_file():
            return path
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    if executable is None:
        pytest.skip(
            "no Chromium browser installed (looked for /usr/bin/chromium and chromium on PATH; "
            "apt-get install chromium)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True)
        yield browser
        browser.close()


def open_page(browser, path: Path) -> dict:
    """Load ``path`` and collect what a reader would notice: the images' state, console
    messages, page errors, dialogs, and every request that left the file."""
    page = browser.new_page()
    seen: dict = {"console": [], "errors": [], "dialogs": [], "external": []}

    def route(request_route):
        url = request_route.request.url
        if url.startswith(("file:", "data:")):
            request_route.continue_()
        else:
            seen["external"].append(url)
            request_route.abort()

    page.route("**/*", route)
    page.on("console", lambda msg: seen["console"].append((msg.type, msg.text)))
    page.on("pageerror", lambda exc: seen["errors"].append(str(exc)))

    def dialog(d):
        seen["dialogs"].append(d.message)
        d.dismiss()

    page.on("dialog", dialog)
    page.goto(path.as_uri(), wait_until="load")
    seen["images"] = page.evaluate(
        """() => Array.from(document.images).map(img => ({
            alt: img.alt, complete: img.complete,
            width: img.naturalWidth, height: img.naturalHeight}))"""
    )
    seen["scripts"] = page.evaluate("() => document.scripts.length")
    seen["title"] = page.title()
    seen["headings"] = page.eval_on_selector_all("h2", "nodes => nodes.map(n => n.textContent)")
    seen["first_cells"] = page.eval_on_selector_all(
        "#summary tbody tr td:first-child", "nodes => nodes.map(n => n.textContent)"
    )
    seen["layer_sections"] = page.eval_on_selector_all(
        "section.layer h3", "nodes => nodes.map(n => n.firstChild.textContent.trim())"
    )
    seen["baselines"] = page.evaluate(BASELINES)
    seen["overflow"] = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    page.close()
    return seen


BASELINES = """() => Array.from(document.querySelectorAll("table tbody tr")).map(row =>
    Array.from(row.cells).map(cell => {
        // an empty inline-block's bottom edge is the baseline of the line it sits on
        const marker = document.createElement("span");
        marker.style.display = "inline-block";
        cell.prepend(marker);
        const y = marker.getBoundingClientRect().bottom;
        marker.remove();
        return y;
    }))"""
"""For every body row of every table, where the first line of text of each cell sits."""


def assert_clean(seen: dict) -> None:
    errors = [text for kind, text in seen["console"] if kind == "error"]
    assert errors == [] and seen["errors"] == [], (errors, seen["errors"])
    assert seen["dialogs"] == [] and seen["scripts"] == 0
    assert seen["external"] == []
    assert seen["images"], "the report has figures"
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image


def test_report_renders_in_chromium(browser, tmp_path):
    out = tmp_path / "report.html"
    result = run_cli("report", "--example", "-o", out, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = open_page(browser, out)
    assert_clean(seen)
    assert seen["title"].startswith("weightscope report: ")
    assert seen["headings"] == [
        "Summary",
        "Parameter verification",
        "Initialization",
        "Layers",
    ]
    layers = ["conv1", "bn1", "dwconv2", "pwconv2", "logits"]
    assert seen["first_cells"] == layers
    assert seen["layer_sections"] == layers
    alts = [image["alt"] for image in seen["images"]]
    for name in ("conv1", "dwconv2", "pwconv2"):
        assert f"{name}: kernel slices" in alts
    assert "logits: kernel matrix" in alts and "logits: weights against init" in alts


def test_every_cell_of_a_row_stands_on_one_baseline(browser, tmp_path):
    """The shape column (monospace) sat above the line of the other cells: top-aligned in a
    smaller font. Every cell of every row of the report's tables now shares one baseline, and
    the page is no wider than the window (wide tables scroll in their own box)."""
    out = tmp_path / "report.html"
    with weightscope.load(weightscope.example_path()) as model:
        out.write_text(report_html(model), encoding="utf-8")
    seen = open_page(browser, out)
    assert len(seen["baselines"]) > 10
    for row in seen["baselines"]:
        assert max(row) - min(row) <= 1.0, row
    assert seen["overflow"] <= 0


def test_hostile_names_stay_text_in_chromium(browser, tmp_path):
    torch = pytest.importorskip("torch")
    names = ["<script>alert('x')</script>", '<img src=x onerror="alert(1)">']
    state = {f"{names[0]}.weight": torch.randn(4, 3, 3, 3), f"{names[1]}.weight": torch.randn(2, 4)}
    model_file = tmp_path / "hostile.pt"
    torch.save(state, model_file)
    out = tmp_path / "report.html"
    with weightscope.load(model_file) as model:
        out.write_text(report_html(model), encoding="utf-8")
    seen = open_page(browser, out)
    assert_clean(seen)  # no alert, no script, the bogus <img src=x> never became an image
    assert seen["first_cells"] == names
    assert all(image["alt"].endswith(("kernel slices", "kernel matrix")) or "init" in image["alt"]
               for image in seen["images"])  # fmt: skip
