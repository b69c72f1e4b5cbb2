"""Tables that fit: ``inspect``, ``inspect --layer``, ``init``, ``params`` and ``compare`` printed
to a terminal of 80, 100, 120 and 160 columns.

At every width each line fits; the columns shown are the most important ones (those left out
are named in a note under the table, least important first); every number is whole (no
``…``) and parses back to the true value, computed here from the tensor data, within the
precision it is printed with (three significant digits); every name is on one line, whole or
shortened in the middle. ``--wide`` keeps every column and name, as does output to a pipe,
whatever its width.

The terminal is the one a user has: ``COLUMNS`` gives its width and ``FORCE_COLOR`` makes rich
treat the in-process runner's pipe as a terminal, in colour; the colours' escape codes are
taken out before the lines are measured.
"""

from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from cli_runner import run_cli
from damaged import edited_example

import weightscope
from weightscope.examples import example_path

WIDTHS = (80, 100, 120, 160)
ELLIPSIS = "…"

INSPECT = ["Layer", "Kind", "Canonical shape", "Native shape", "Params", "dtype",
           "mean", "std", "min", "max"]  # fmt: skip
INSPECT_DROPS = ["Native shape", "dtype", "max", "min", "std", "mean", "Params",
                 "Canonical shape", "Kind"]  # fmt: skip
DETAIL = ["Role", "Stored name", "Canonical shape", "Native shape", "dtype", "Trainable",
          "mean", "std", "min", "max", "zeros", "NaN", "Inf"]  # fmt: skip
DETAIL_DROPS = ["Native shape", "dtype", "Trainable", "Inf", "NaN", "zeros", "max", "min", "std",
                "mean", "Canonical shape"]  # fmt: skip
INIT = ["Layer", "Kind", "Initializer", "fan in / out", "Bound / std", "Std ratio", "Outside",
        "Best fit (KS)", "Verdict"]  # fmt: skip
INIT_DROPS = ["fan in / out", "Best fit (KS)", "Bound / std", "Outside", "Std ratio",
              "Initializer", "Kind"]  # fmt: skip
PARAMS = ["Layer", "Kind", "Stored", "Formula", "Declared", "Status", "Formula terms"]
PARAMS_DROPS = ["Declared", "Formula terms", "Formula", "Kind"]
COMPARE = ["a", "b", "kind", "transform", "max_abs_diff", "max_rel_diff", "match"]
COMPARE_DROPS = ["max_rel_diff", "max_abs_diff", "kind", "transform"]
LABELS = {"fan in / out": "fans", "Best fit (KS)": "best fit", "Bound / std": "bound / std",
          "NaN": "NaN", "Inf": "Inf"}  # fmt: skip
"""How the note names a left-out column where it is not the title in lower case."""

LONG_NAMES = {
    "encoder.layers.11.self_attention.query_key_value.weight": (96, 32),
    "encoder.layers.11.self_attention.query_key_value.bias": (96,),
    "encoder.layers.11.mlp.dense_h_to_4h.weight": (128, 32),
    "decoder.blocks.3.conv_transpose_upsampling_layer.weight": (8, 4, 3, 3),
    "head.weight": (4, 4),
}


@pytest.fixture(scope="module")
def long_names(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A safetensors file (written by hand: no framework) of layers with long names, one of
    tiny values, one of zeros with a NaN."""
    rng = np.random.default_rng(16)
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name, shape in LONG_NAMES.items():
        array = rng.standard_normal(shape).astype("<f4")
        if "dense_h_to_4h" in name:
            array *= 1e-5
        if name == "head.weight":
            array[:] = 0
            array[0, 1] = np.nan
        data = array.tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape),
                        "data_offsets": [offset, offset + len(data)]}  # fmt: skip
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path_factory.mktemp("tables") / "long_names.safetensors"
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    return path


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled example with conv1's kernel scaled by 1.001 and noise added to logits: pairs
    that differ by known amounts."""

    def edit(h5: h5py.File) -> None:
        kernel = "model_weights/conv1/digits_cnn/conv1/kernel"
        h5[kernel][...] = h5[kernel][...] * np.float32(1.001)
        logits = "model_weights/logits/digits_cnn/logits/kernel"
        noise = np.random.default_rng(1).normal(0, 1e-3, h5[logits].shape).astype("f4")
        h5[logits][...] = h5[logits][...] + noise

    return edited_example(tmp_path_factory.mktemp("retrained"), "retrained.h5", edit)


def as_terminal(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    monkeypatch.setenv("COLUMNS", str(width))
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TERM", "xterm-256color")  # not dumb: rich makes a dumb one 80 wide
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)


def as_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE"):
        monkeypatch.delenv(name, raising=False)


# -- reading a printed table ---------------------------------------------------------------------


@dataclass
class Shown:
    lines: list[str]
    headers: list[str]
    rows: list[dict[str, str]]
    note: str | None
    """The note under the table, its lines joined."""


NOTE_START = ("Not shown at ", "Names shortened ")


COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def read_table(stdout: str) -> Shown:
    plain = COLOUR.sub("", stdout)
    assert "\x1b" not in plain
    lines = plain.splitlines()
    (top,) = [i for i, line in enumerate(lines) if "┃" in line]
    headers = [cell.strip() for cell in lines[top].split("┃")]
    assert set(lines[top + 1]) <= {"━", "╇"}
    rows = []
    end = top + 2
    while end < len(lines) and "│" in lines[end]:
        cells = [cell.strip() for cell in lines[end].split("│")]
        rows.append(dict(zip(headers, cells, strict=True)))
        end += 1
    note = None
    if end < len(lines) and lines[end].startswith(NOTE_START):
        parts = []
        while not parts or not parts[-1].endswith(")."):
            parts.append(lines[end].strip())
            end += 1
        note = " ".join(parts)
    return Shown(lines, headers, rows, note)


def left_out(note: str | None) -> list[str]:
    if note is None or not note.startswith("Not shown"):
        return []
    found = re.fullmatch(
        r"Not shown at \d+ columns: (.+?)(; names shortened in the middle)? "
        r"\(--wide shows (them|all)\)\.",
        note,
    )
    assert found, note
    return found.group(1).split(", ")


def check_layout(shown: Shown, width: int | None, columns: list[str], drops: list[str]) -> None:
    """Lines within ``width`` (None: not a terminal, no limit); the columns shown in their
    order; those missing named by the note, and missing least important first."""
    if width is not None:
        assert max(len(line) for line in shown.lines) <= width, "\n".join(shown.lines)
        assert (
            shown.note is None
            or f" at {width} columns" in shown.note
            or (f"fit {width} columns" in shown.note)
        )
    assert shown.headers == [c for c in columns if c in shown.headers]
    missing = [c for c in columns if c not in shown.headers]
    assert sorted(missing, key=drops.index) == drops[: len(missing)], missing
    assert left_out(shown.note) == [LABELS.get(c, c.lower()) for c in missing]
    if width is None:
        assert not missing and shown.note is None


def check_name(cell: str, name: str) -> None:
    """Whole, or its start and end around one ellipsis."""
    if cell == name:
        return
    assert cell.count(ELLIPSIS) == 1, (cell, name)
    head, tail = cell.split(ELLIPSIS)
    assert head and tail and name.startswith(head) and name.endswith(tail), (cell, name)


SCIENTIFIC = re.compile(r"-?[1-9]\.\d\de-?\d+")
PERCENT = re.compile(r"\d+(?:\.(\d+))?%")


def check_number(cell: str, true: float) -> None:
    """``cell`` is a whole number in the tables' format, within its last digit of ``true``."""
    assert ELLIPSIS not in cell, cell
    if math.isnan(true):
        assert cell == "nan"
    elif cell == "0":
        assert true == 0
    elif PERCENT.fullmatch(cell):
        decimals = len(PERCENT.fullmatch(cell).group(1) or "")  # type: ignore[union-attr]
        assert abs(float(cell[:-1]) - 100 * true) <= 0.5 * 10.0**-decimals * (1 + 1e-6), cell
    else:
        assert SCIENTIFIC.fullmatch(cell), f"not a whole number: {cell!r}"
        exponent = int(cell.split("e")[1])
        tolerance = 0.5 * 10.0 ** (exponent - 2)
        assert abs(float(cell) - true) <= tolerance * (1 + 1e-6) + 1e-6 * abs(true), (cell, true)


def statistics(array: np.ndarray) -> dict[str, float]:
    values = array.astype(np.float64).ravel()
    finite = values[np.isfinite(values)]
    return {
        "mean": float(finite.mean()),
        "std": float(finite.std()),
        "min": float(finite.min()),
        "max": float(finite.max()),
        "zeros": float(np.count_nonzero(values == 0) / values.size),
    }


def shape_cell(shape: tuple[int, ...] | None, layout: str | None) -> str:
    assert shape is not None
    text = f"({shape[0]},)" if len(shape) == 1 else "(" + ", ".join(map(str, shape)) + ")"
    return f"{text} {layout}"


# -- inspect -------------------------------------------------------------------------------------

MODELS = ["keras", "pytorch", "onnx", "long_names"]


def model_path(which: str, long_names: Path) -> Path:
    return long_names if which == "long_names" else example_path(which)


def check_inspect(stdout: str, path: Path, width: int | None) -> Shown:
    shown = read_table(stdout)
    check_layout(shown, width, INSPECT, INSPECT_DROPS)
    with weightscope.load(path) as model:
        assert len(shown.rows) == len(model.layers)  # one line each: no name broken over two
        for row, layer in zip(shown.rows, model.layers, strict=True):
            check_name(row["Layer"], layer.name)
            main = layer.principal
            assert main is not None
            truth = statistics(main.numpy())
            for column in ("mean", "std", "min", "max"):
                if column in row:
                    check_number(row[column], truth[column])
            if "Params" in row:
                assert row["Params"] == f"{layer.params:,}"
            if "Canonical shape" in row:
                assert row["Canonical shape"] == shape_cell(
                    main.canonical_shape, main.canonical_layout
                )
            if "Native shape" in row:
                assert row["Native shape"] == shape_cell(main.native_shape, main.native_layout)
            if "dtype" in row:
                assert row["dtype"] == main.dtype
            if width is None:
                assert row["Layer"] == layer.name
    return shown


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("which", MODELS)
def test_inspect_fits_the_terminal(
    which: str, width: int, long_names: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = model_path(which, long_names)
    as_terminal(monkeypatch, width)
    result = run_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    shown = check_inspect(result.stdout, path, width)
    assert {"Layer", "Kind", "Canonical shape", "Params"} <= set(shown.headers)
    if which == "keras" or width >= 100:
        assert "mean" in shown.headers
    if which != "long_names" and width >= 120:
        assert {"std", "min", "max"} <= set(shown.headers)
    if which == "keras" and width == 160:
        assert shown.headers == INSPECT and shown.note is None


def test_inspect_shortens_long_names_in_the_middle_at_80_columns(
    long_names: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_terminal(monkeypatch, 80)
    shown = read_table(run_cli("inspect", long_names).stdout)
    names = [row["Layer"] for row in shown.rows]
    assert any(ELLIPSIS in name for name in names) and "head" in names
    assert shown.note is not None and "names shortened in the middle" in shown.note


@pytest.mark.parametrize("which", MODELS)
def test_inspect_wide_keeps_every_column_at_80(
    which: str, long_names: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = model_path(which, long_names)
    as_terminal(monkeypatch, 80)
    result = run_cli("inspect", path, "--wide")
    assert result.returncode == 0, result.stderr
    shown = check_inspect(result.stdout, path, None)
    assert shown.headers == INSPECT and ELLIPSIS not in result.stdout


@pytest.mark.parametrize("which", MODELS)
def test_inspect_to_a_pipe_is_complete(
    which: str, long_names: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = model_path(which, long_names)
    as_pipe(monkeypatch)
    result = run_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    check_inspect(result.stdout, path, None)
    assert ELLIPSIS not in result.stdout


def test_inspect_json_is_the_same_with_wide() -> None:
    plain = run_cli("inspect", "--example", "--json", "--health")
    assert plain.returncode == 0, plain.stderr
    assert run_cli("inspect", "--example", "--json", "--health", "--wide").stdout == plain.stdout


@pytest.mark.parametrize("width", WIDTHS)
def test_inspect_health_column_is_kept(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    as_terminal(monkeypatch, width)
    shown = read_table(run_cli("inspect", "--example", "--health").stdout)
    assert shown.headers[-1] == "Health" and all(row["Health"] == "ok" for row in shown.rows)
    check_layout(shown, width, [*INSPECT, "Health"], INSPECT_DROPS)


# -- inspect --layer -----------------------------------------------------------------------------


@pytest.mark.parametrize("width", [*WIDTHS, None])
@pytest.mark.parametrize(("which", "layer"), [("keras", "conv1"), ("keras", "bn1"),
                                              ("long_names", "head")])  # fmt: skip
def test_one_layer_fits_the_terminal(
    which: str, layer: str, width: int | None, long_names: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = model_path(which, long_names)
    if width is None:
        as_pipe(monkeypatch)
    else:
        as_terminal(monkeypatch, width)
    result = run_cli("inspect", path, "--layer", layer)
    assert result.returncode == 0, result.stderr
    shown = read_table(result.stdout)
    check_layout(shown, width, DETAIL, DETAIL_DROPS)
    with weightscope.load(path) as model:
        tensors = model.layer(layer).tensors
        assert len(shown.rows) == len(tensors)
        for row, tensor in zip(shown.rows, tensors, strict=True):
            check_name(row["Role"], tensor.role)
            check_name(row["Stored name"], tensor.name)
            truth = statistics(tensor.numpy())
            for column in ("mean", "std", "min", "max", "zeros"):
                if column in row:
                    check_number(row[column], truth[column])
            values = tensor.numpy()
            if "NaN" in row:
                assert row["NaN"] == f"{int(np.isnan(values).sum()):,}"
    assert {"Role", "Stored name", "Canonical shape", "mean"} <= set(shown.headers)


# -- init ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [*WIDTHS, None])
def test_init_fits_the_terminal(width: int | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if width is None:
        as_pipe(monkeypatch)
    else:
        as_terminal(monkeypatch, width)
    result = run_cli("init", "--example")
    assert result.returncode == 0, result.stderr
    shown = read_table(result.stdout)
    check_layout(shown, width, INIT, INIT_DROPS)
    assert {"Layer", "Std ratio", "Outside", "Verdict"} <= set(shown.headers)
    reports = {r["layer"]: r for r in json.loads(run_cli("init", "--example", "--json").stdout)
               ["layers"]}  # fmt: skip
    assert [row["Layer"] for row in shown.rows] == list(reports)
    with weightscope.load(example_path()) as model:
        for row in shown.rows:
            report = reports[row["Layer"]]
            weights = model.layer(row["Layer"]).tensor("kernel").numpy().astype(np.float64)
            bound = math.sqrt(6.0 / (report["fan_in"] + report["fan_out"]))  # glorot_uniform
            assert report["initializer"] == "glorot_uniform" and report["declared"]
            check_number(row["Std ratio"], float(weights.std() / (bound / math.sqrt(3.0))))
            check_number(row["Outside"], float(np.mean(np.abs(weights) > bound)))
            if "Bound / std" in row:
                assert row["Bound / std"].startswith("±")
                check_number(row["Bound / std"][1:], bound)
            if "Best fit (KS)" in row:
                ks = re.fullmatch(r"\S+ \((.*)\)", row["Best fit (KS)"])
                assert ks, row["Best fit (KS)"]
                check_number(ks.group(1), report["ks"]["best_fit"])
            assert row["Verdict"] == report["verdict"]


# -- params --------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [*WIDTHS, None])
@pytest.mark.parametrize("which", ["keras", "long_names"])
def test_params_fits_the_terminal(
    which: str, width: int | None, long_names: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = model_path(which, long_names)
    if width is None:
        as_pipe(monkeypatch)
    else:
        as_terminal(monkeypatch, width)
    result = run_cli("params", path)
    assert result.returncode == 0, result.stderr
    shown = read_table(result.stdout)
    check_layout(shown, width, PARAMS, PARAMS_DROPS)
    # only the formula's terms may wrap (between words): a line with no name continues a row
    named = [row for row in shown.rows if row["Layer"]]
    for row in shown.rows:
        if not row["Layer"]:
            assert not any(cell for title, cell in row.items() if title != "Formula terms")
    with weightscope.load(path) as model:
        assert len(named) == len(model.layers)
        for row, layer in zip(named, model.layers, strict=True):
            check_name(row["Layer"], layer.name)
            if "Kind" in row:
                check_name(row["Kind"], layer.kind_label)
            assert row["Stored"] == f"{layer.params:,}"
            assert row["Status"] == ("ok" if which == "keras" else "shapes only")


# -- compare -------------------------------------------------------------------------------------


def pair_differences(a: Path, b: Path) -> dict[str, tuple[float, float]]:
    """Per layer of the same name, the largest |a - b| and the largest |a - b| / max|b| over
    its tensors (canonical layouts)."""
    found = {}
    with weightscope.load(a) as first, weightscope.load(b) as second:
        for layer in first.layers:
            other = second.layer(layer.name)
            absolute = relative = 0.0
            for tensor in layer.tensors:
                x = tensor.numpy().astype(np.float64)
                y = other.tensor(tensor.role).numpy().astype(np.float64)
                difference = float(np.max(np.abs(x - y)))
                absolute = max(absolute, difference)
                relative = max(relative, difference / float(np.max(np.abs(y))))
            found[layer.name] = (absolute, relative)
    return found


@pytest.mark.parametrize("width", [*WIDTHS, None])
def test_compare_fits_the_terminal(
    width: int | None, retrained: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if width is None:
        as_pipe(monkeypatch)
    else:
        as_terminal(monkeypatch, width)
    result = run_cli("compare", example_path(), retrained)
    assert result.returncode == 1, result.stderr  # layers differ
    shown = read_table(result.stdout)
    check_layout(shown, width, COMPARE, COMPARE_DROPS)
    truth = pair_differences(example_path(), retrained)
    assert [row["a"] for row in shown.rows] == list(truth)
    for row in shown.rows:
        absolute, relative = truth[row["a"]]
        if "max_abs_diff" in row:
            check_number(row["max_abs_diff"], absolute)
        if "max_rel_diff" in row:
            check_number(row["max_rel_diff"], relative)
    assert {"a", "b", "kind", "transform", "max_abs_diff", "match"} <= set(shown.headers)
    assert any(row["max_abs_diff"] != "0" for row in shown.rows)


def test_compare_of_long_names_keeps_both_ends(
    long_names: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    as_terminal(monkeypatch, 80)
    result = run_cli("compare", long_names, long_names)
    assert result.returncode == 0, result.stderr
    shown = read_table(result.stdout)
    check_layout(shown, 80, COMPARE, COMPARE_DROPS)
    with weightscope.load(long_names) as model:
        names = [layer.name for layer in model.layers]
    assert len(shown.rows) == len(names)
    for row, name in zip(shown.rows, names, strict=True):
        check_name(row["a"], name)
        check_name(row["b"], name)


# -- the docs ------------------------------------------------------------------------------------


def test_the_80_column_table_on_the_inspect_page_is_what_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/commands/inspect.md shows the table at 80 columns in a ``text`` block (the docs'
    runnable blocks print to a pipe, where nothing is left out); it is checked here."""
    page = Path(__file__).resolve().parents[1] / "docs" / "commands" / "inspect.md"
    text = page.read_text(encoding="utf-8")
    marker = "<!-- fits: inspect model.h5 at 80 columns"
    assert text.count(marker) == 1
    block = text.split(marker, 1)[1].split("```text\n", 1)[1].split("\n```", 1)[0]
    (tmp_path / "model.h5").write_bytes(example_path().read_bytes())
    monkeypatch.chdir(tmp_path)
    as_terminal(monkeypatch, 80)
    result = run_cli("inspect", "model.h5")
    assert result.returncode == 0, result.stderr
    printed = [line.rstrip() for line in COLOUR.sub("", result.stdout).splitlines()]
    assert printed == block.splitlines()
