"""The documented example queries on a scan table (pandas and duckdb, in docs/commands/scan.md),
run as written on a real scan of models built with PyTorch, and their answers checked against
what was built."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

import weightscope
from tests.cli_runner import run_cli

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")
duckdb = pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("readme_scan")]  # a scan, once

SCAN_PAGE = Path(__file__).resolve().parents[1] / "docs" / "commands" / "scan.md"


def _block(marker: str, language: str) -> str:
    text = SCAN_PAGE.read_text(encoding="utf-8")
    found = re.search(rf"<!-- {marker}:[^>]*-->\s*```{language}\n(.*?)```", text, re.DOTALL)
    assert found, f"{SCAN_PAGE.name} has no {language} block after <!-- {marker} -->"
    return found.group(1)


def _net(width: int) -> Any:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, width, 3),
        torch.nn.ReLU(),
        torch.nn.Conv2d(width, 2 * width, 3),
        torch.nn.Flatten(),
        torch.nn.Linear(2 * width, 10),
    )


def _trained(module: Any) -> Any:
    """Weights moved well away from any initializer, as training would."""
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.mul_(3.0).add_(0.05)
    return module


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("zoo")
    (root / "runs" / "a").mkdir(parents=True)
    fresh = root / "runs" / "a" / "fresh.pt"
    torch.save(_net(32).state_dict(), fresh)  # never trained: every kernel at init
    broken = _trained(_net(16))
    with torch.no_grad():
        broken[2].weight[5, 0, 1, 1] = float("nan")
    nan_file = root / "runs" / "nan.pt"
    torch.save(broken.state_dict(), nan_file)
    for width in (8, 24, 48):
        torch.save(_trained(_net(width)).state_dict(), root / f"trained_{width}.pt")
    (root / "damaged.pt").write_bytes(b"PK\x03\x04 not really a zip")
    (root / "notes.txt").write_text("not a model")
    table_dir = tmp_path_factory.mktemp("table")
    done = run_cli("scan", root, "-o", table_dir / "zoo.parquet", "--jobs", "2", timeout=240)
    assert done.returncode == 0, done.stderr
    return {"root": root, "table_dir": table_dir, "fresh": fresh, "nan": nan_file}


def _largest_convs(root: Path) -> list[tuple[str, str, int]]:
    convs = []
    for path in sorted(root.rglob("*.pt")):
        if path.name == "damaged.pt":
            continue
        with weightscope.load(path) as model:
            convs += [(str(path), x.name, x.params) for x in model.layers if "conv" in x.kind]
    return sorted(convs, key=lambda conv: -conv[2])[:10]


def test_pandas_queries_answer_what_was_built(
    zoo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(zoo["table_dir"])
    namespace: dict[str, Any] = {}
    exec(compile(_block("scan-queries", "python"), str(SCAN_PAGE), "exec"), namespace)
    assert namespace["at_init"] == [str(zoo["fresh"])]
    assert namespace["with_nan"] == [str(zoo["nan"])]
    largest = namespace["largest_convs"]
    expected = _largest_convs(zoo["root"])
    assert list(zip(largest.path, largest.layer, largest.params, strict=True)) == expected
    assert all(re.fullmatch(r"\d+x\d+x3x3", shape) for shape in largest.canonical_shape)
    failed = namespace["failed"]
    assert list(failed.path) == [str(zoo["root"] / "damaged.pt")]
    assert "damaged.pt" in failed.error.iloc[0]


def test_sql_queries_agree_with_pandas(
    zoo: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(zoo["table_dir"])
    statements = [s for s in _block("scan-queries-sql", "sql").split(";") if s.strip()]
    assert len(statements) == 3
    at_init, with_nan, largest = (duckdb.sql(s).fetchall() for s in statements)
    with weightscope.load(zoo["fresh"]) as fresh:
        kernels = sum(1 for layer in fresh.layers if layer.kind in ("conv2d", "dense"))
    assert at_init == [(str(zoo["fresh"]), kernels)]
    assert with_nan == [(str(zoo["nan"]), 1)]
    expected = _largest_convs(zoo["root"])
    assert [(path, layer, params) for path, layer, _, _, params in largest] == expected
