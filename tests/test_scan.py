"""``weightscope scan``: a folder of real model files (one per format, nested, beside damaged
files, a README and a config) into one table; the table against ``weightscope.load``; the same
table as Parquet, CSV and JSON Lines; globs and several paths; resuming from an earlier table;
time-outs, memory caps and outputs that must not be written. Every scan runs through the real
command line (``python -m weightscope scan``), on local worker processes."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
pd = pytest.importorskip("pandas")
pytest.importorskip("pyarrow")
torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")
safetensors_torch = pytest.importorskip("safetensors.torch")

from cli_runner import run_cli  # noqa: E402
from framework_cache import build_cached  # noqa: E402

import weightscope  # noqa: E402
from tests.onnx_builders import conv_gemm_model  # noqa: E402
from tests.small_models import (  # noqa: E402
    ConvBnLinear,
    keras_conv_bn_dense,
    torch_conv_bn_linear,
)
from weightscope.analysis.health import layer_health  # noqa: E402
from weightscope.errors import WeightscopeError  # noqa: E402

# every scan starts worker processes; the zoo and its scan are module fixtures: one xdist worker
pytestmark = [
    pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning"),
    pytest.mark.slow,
    pytest.mark.xdist_group("scan"),
]

# ---------------------------------------------------------------------------------------------
# the zoo: real files written by the frameworks, in nested folders


def _keras_model(K: Any, seed: int) -> Any:
    """Conv2D(8, 3x3) on 8x8x3, BatchNormalization, Dense(4)."""
    return keras_conv_bn_dense(K, filters=8, outputs=4, seed=seed)


def torch_net(seed: int) -> ConvBnLinear:
    return torch_conv_bn_linear(filters=8, outputs=4, seed=seed)


def sick_net() -> ConvBnLinear:
    """Filter 2 of the conv zeroed (dead), one NaN in the dense kernel."""
    net = torch_net(9)
    with torch.no_grad():
        net.conv.weight[2].zero_()
        net.fc.weight[1, 3] = float("nan")
    return net


def onnx_model(seed: int) -> onnx.ModelProto:
    """Conv (8x3x3x3) then Flatten and Gemm (4x288, transB)."""
    return conv_gemm_model(seed, in_channels=3, filters=8, outputs=4)


def save_onnx_external(proto: onnx.ModelProto, path: Path, location: str) -> None:
    onnx.save_model(
        proto,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )


MODELS: dict[str, Callable[[Path], None]] = {
    # relative path: writer
    "keras/k3.keras": lambda p: _keras_model(keras, 1).save(p),
    "keras/k3.h5": lambda p: _keras_model(keras, 2).save(p),
    "keras/legacy/tf_keras.h5": lambda p: _keras_model(tf_keras, 3).save(p),
    "torch/state.pt": lambda p: torch.save(torch_net(4).state_dict(), p),
    "torch/old/legacy.pth": lambda p: torch.save(
        torch_net(5).state_dict(), p, _use_new_zipfile_serialization=False
    ),
    "torch/scripted.pt": lambda p: torch.jit.save(torch.jit.script(torch_net(6)), p),
    "torch/deep/er/weights.safetensors": lambda p: safetensors_torch.save_file(
        torch_net(7).state_dict(), p
    ),
    "torch/deep/checkpoint": lambda p: torch.save(torch_net(8).state_dict(), p),  # no extension
    "torch/sick.pt": lambda p: torch.save(sick_net().state_dict(), p),
    "onnx/inline.onnx": lambda p: onnx.save_model(onnx_model(10), p),
    "onnx/ext/external.onnx": lambda p: save_onnx_external(onnx_model(11), p, "external.data"),
}
DAMAGED = ["damaged/truncated.h5", "damaged/random.onnx", "damaged/empty.pt"]
OTHERS = ["README.txt", "torch/config.json", "onnx/ext/external.data"]
"""Files that are not models and not named like one: counted, never rows."""


def build_zoo(root: Path) -> Path:
    """The zoo in ``root``: written by the frameworks once, then copied from the tests' cache."""
    build_cached(root, _write_zoo)
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert on_disk == {*MODELS, *DAMAGED, *OTHERS}, on_disk
    return root


def _write_zoo(root: Path) -> None:
    for name, write in MODELS.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write(path)
    (root / "damaged").mkdir()
    whole = (root / "keras/k3.h5").read_bytes()
    (root / "damaged/truncated.h5").write_bytes(whole[: len(whole) // 2])
    (root / "damaged/random.onnx").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "damaged/empty.pt").write_bytes(b"")
    (root / "README.txt").write_text("Models of the zoo, one per format.\n")
    (root / "torch/config.json").write_text('{"lr": 0.1, "epochs": 3}\n')


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo, never changed by a test (tests that change files work on a copy)."""
    return build_zoo(tmp_path_factory.mktemp("zoo"))


# ---------------------------------------------------------------------------------------------
# helpers


def scan(*args: str | Path, status: int = 0) -> Any:
    """``weightscope scan ARGS``; checks the exit status and that nothing crashed."""
    result = run_cli("scan", *args, timeout=120)
    assert result.returncode == status, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def scan_json(*args: str | Path) -> tuple[dict[str, Any], Any]:
    result = scan(*args, "--json")
    return json.loads(result.stdout), result


def read_table(path: Path, like: Any = None) -> Any:
    """A scan table as a DataFrame of nullable columns (Int64, Float64, string), rows in
    table order. CSV and JSON Lines are read with the column types of ``like`` (a frame read
    from Parquet), so that integers such as ``mtime_ns`` stay exact."""
    if path.suffix == ".parquet":
        return pd.read_parquet(path, dtype_backend="numpy_nullable")
    dtypes = like.dtypes.to_dict()
    if path.suffix == ".csv":
        # only an empty field is null: a layer named "nan" or "NA" stays a name
        return pd.read_csv(path, dtype=dtypes, keep_default_na=False, na_values=[""])
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert all(list(row) == list(dtypes) for row in rows)  # every row has every column
    columns = {name: pd.array([row[name] for row in rows], dtype=t) for name, t in dtypes.items()}
    return pd.DataFrame(columns)


def model_rows(table: Any) -> Any:
    rows = table[table["record"] == "model"]
    assert rows["path"].is_unique
    return rows.set_index("path")


def layer_rows(table: Any, path: Path) -> Any:
    return table[(table["record"] == "layer") & (table["path"] == str(path))]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_error(path: Path) -> WeightscopeError:
    with pytest.raises(WeightscopeError) as caught:
        weightscope.load(path).close()
    return caught.value


def same_number(value: Any, expected: float) -> bool:
    """A statistic in the table against the one computed here: equal, or null where it has no
    finite value (NaN in every format)."""
    if not math.isfinite(expected):
        return bool(pd.isna(value))
    return not pd.isna(value) and float(value) == pytest.approx(expected, rel=1e-12, abs=0)


def same_value(value: Any, expected: Any) -> bool:
    """A cell against a value computed here: equal, or null where that is None."""
    return bool(pd.isna(value)) if expected is None else bool(value == expected)


def copy_zoo(zoo: Path, folder: Path) -> Path:
    """A copy with the same content and modification times."""
    return Path(shutil.copytree(zoo, folder / "zoo"))


CANONICAL_SHAPES = {"conv2d": "8x3x3x3", "dense": "4x288", "batch_norm": "8"}
"""Principal tensor of each layer of the zoo's models, in canonical layout: the conv kernel
(out, in, kh, kw), the dense kernel (out, in), the batch norm's gamma."""
STATISTICS = ("mean", "std", "min", "max", "zeros_fraction")


# ---------------------------------------------------------------------------------------------
# one scan of the zoo, checked against weightscope.load


@pytest.fixture(scope="module")
def zoo_scan(zoo: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("out") / "zoo.parquet"
    summary, result = scan_json(zoo, "-o", out, "--jobs", "2")
    return {"summary": summary, "stderr": result.stderr, "path": out, "table": read_table(out)}


def test_one_model_row_per_model_file_and_nothing_else(zoo, zoo_scan):
    table = zoo_scan["table"]
    models = model_rows(table)
    assert set(models.index) == {str(zoo / name) for name in [*MODELS, *DAMAGED]}
    assert set(table["path"]) == set(models.index)  # README, config, external data: no rows
    assert list(table["record"].unique()) == ["model", "layer"]
    # rows come grouped by file, sorted by path, the model row first
    assert list(dict.fromkeys(table["path"])) == sorted(models.index)
    for _, group in table.groupby("path", sort=False):
        assert list(group["record"]) == ["model"] + ["layer"] * (len(group) - 1)
    summary = zoo_scan["summary"]
    assert summary["files"] == summary["scanned"] == len(MODELS) + len(DAMAGED)
    assert summary["models"] == len(MODELS)  # the damaged files are errors, not models
    assert summary["not_models"] == len(OTHERS)
    assert summary["errors"] == len(DAMAGED)


def test_damaged_files_are_rows_with_their_one_line_error(zoo, zoo_scan):
    table = zoo_scan["table"]
    models = model_rows(table)
    for name in DAMAGED:
        path = zoo / name
        row = models.loc[str(path)]
        error = load_error(path)
        assert row["error_type"] == type(error).__name__, name
        assert row["error"].startswith(f"{path}: "), row["error"]
        assert "\n" not in row["error"]
        assert row["error"] == " ".join(str(error).split())
        assert len(layer_rows(table, path)) == 0
        assert pd.isna(row["format"]) and pd.isna(row["params"])
        # fingerprinted: the same bytes are not read again on the next run
        assert row["sha256"] == digest(path)
        assert row["size_bytes"] == path.stat().st_size
    assert models.loc[str(zoo / "damaged/empty.pt"), "error"].endswith("empty file")
    assert models["error"].notna().sum() == len(DAMAGED)


@pytest.mark.parametrize("name", list(MODELS))
def test_rows_match_weightscope_load(zoo, zoo_scan, name):
    table = zoo_scan["table"]
    path = zoo / name
    head = model_rows(table).loc[str(path)]
    layers = layer_rows(table, path)
    with weightscope.load(path) as model:
        assert head["format"] == model.format
        assert head["framework"] == model.framework
        assert pd.isna(head["error"]) and pd.isna(head["error_type"])
        counts = model.params
        assert head["params"] == counts.total > 0
        assert head["trainable_params"] == counts.trainable
        assert head["non_trainable_params"] == counts.non_trainable
        assert head["trainability_unknown_params"] == counts.unknown
        assert head["layers"] == len(model.layers) == len(layers)
        assert layers["params"].sum() == counts.total
        assert head["sha256"] == digest(path)
        assert head["size_bytes"] == path.stat().st_size
        assert head["mtime_ns"] == path.stat().st_mtime_ns
        assert list(layers["layer"]) == [layer.name for layer in model.layers]
        for (_, row), layer in zip(layers.iterrows(), model.layers, strict=True):
            where = f"{name}:{layer.name}"
            assert row["kind"] == layer.kind, where
            assert row["params"] == layer.params, where
            assert row["format"] == model.format and row["framework"] == model.framework
            if layer.class_name is None:
                assert pd.isna(row["class_name"]), where
            else:
                assert row["class_name"] == layer.class_name, where
            main = layer.tensor("gamma" if layer.kind == "batch_norm" else "kernel")
            assert row["tensor"] == main.role
            assert row["canonical_shape"] == CANONICAL_SHAPES[layer.kind], where
            assert row["canonical_shape"] == "x".join(map(str, main.canonical_shape))
            assert row["native_shape"] == "x".join(map(str, main.native_shape))
            assert row["canonical_layout"] == main.canonical_layout
            assert row["dtype"] == main.dtype == "float32"
            stats = main.stats()
            for column in STATISTICS:
                assert same_number(row[column], getattr(stats, column)), (where, column)
            assert row["nan"] == sum(t.stats().nan for t in layer.tensors), where
            assert row["inf"] == sum(t.stats().inf for t in layer.tensors), where
            health = layer_health(layer, producer=model.producer)
            assert row["flags"] == ",".join(health.flags), where
            for column in ("init_verdict", "filters", "dead_filters", "duplicate_filters",
                           "large_filters", "max_norm_ratio"):  # fmt: skip
                assert same_value(row[column], getattr(health, column)), (where, column)
    # the model row counts its layers' flags
    flags = [set(filter(None, text.split(","))) for text in layers["flags"]]
    assert head["layers_flagged"] == sum(bool(f) for f in flags)
    for flag, column in [
        ("nan_inf", "layers_nan_inf"),
        ("dead_filters", "layers_dead_filters"),
        ("duplicate_filters", "layers_duplicate_filters"),
        ("large_norm", "layers_large_norm"),
        ("at_init", "layers_at_init"),
    ]:
        assert head[column] == sum(flag in f for f in flags), (name, column)


def test_injected_dead_filter_and_nan_are_flagged(zoo, zoo_scan):
    table = zoo_scan["table"]
    path = zoo / "torch/sick.pt"
    head = model_rows(table).loc[str(path)]
    layers = layer_rows(table, path).set_index("layer")
    conv, fc = layers.loc["conv"], layers.loc["fc"]
    assert "dead_filters" in conv["flags"].split(",")
    assert conv["dead_filters"] == 1 and conv["filters"] == 8
    assert "nan_inf" in fc["flags"].split(",")
    assert fc["nan"] == 1 and fc["inf"] == 0
    # the statistics are those of the finite values
    with weightscope.load(path) as model:
        kernel = model.layer("fc").tensor("kernel").numpy()
    assert fc["mean"] == pytest.approx(float(np.nanmean(kernel.astype(np.float64))), rel=1e-6)
    assert head["layers_dead_filters"] == 1 and head["layers_nan_inf"] == 1
    assert head["layers_flagged"] >= 2
    # the same network without the damage raises neither flag
    healthy = layer_rows(table, zoo / "torch/deep/checkpoint").set_index("layer")
    assert not set(healthy.loc["conv", "flags"].split(",")) & {"dead_filters", "nan_inf"}
    assert healthy.loc["conv", "dead_filters"] == 0
    assert "nan_inf" not in healthy.loc["fc", "flags"].split(",")
    assert zoo_scan["summary"]["flagged"] == int((model_rows(table)["layers_flagged"] > 0).sum())
    # keras models with N(0, 1) weights: nothing wrong with them
    for name in ("keras/k3.keras", "keras/k3.h5", "keras/legacy/tf_keras.h5"):
        assert model_rows(table).loc[str(zoo / name), "layers_flagged"] == 0


def test_json_summary(zoo, zoo_scan):
    summary = zoo_scan["summary"]
    assert set(summary) == {
        "output", "files", "models", "scanned", "reused", "errors", "flagged", "not_models",
        "missing",
        "previous_unreadable", "written", "interrupted", "seconds",
    }  # fmt: skip
    assert summary["output"] == str(zoo_scan["path"])
    assert summary["reused"] == 0
    assert summary["missing"] == []
    assert summary["previous_unreadable"] is None
    assert summary["written"] is True and summary["interrupted"] is False
    assert summary["seconds"] > 0
    assert zoo_scan["stderr"] == ""  # --json: the summary is the only output


def test_help_mentions_every_option():
    result = run_cli("scan", "--help")
    assert result.returncode == 0
    for flag in ("-o", "--jobs", "--dask", "--timeout", "--memory-per-job", "--force", "--json",
                 "--quiet", "--limit", ".parquet", ".csv", ".jsonl", "exit status"):  # fmt: skip
        assert flag in result.stdout, flag
    assert "scan" in run_cli("--help").stdout


# ---------------------------------------------------------------------------------------------
# output formats


def test_csv_and_jsonl_hold_the_same_table_as_parquet(zoo, zoo_scan, tmp_path):
    reference = zoo_scan["table"]
    count = len(MODELS) + len(DAMAGED)
    csv_run = scan(zoo, "-o", tmp_path / "zoo.csv", "--jobs", "1")
    assert csv_run.stderr.startswith(
        f"wrote {len(MODELS)} models to {tmp_path / 'zoo.csv'}: {count} files read, 0 unchanged; "
        f"{len(DAMAGED)} errors; {zoo_scan['summary']['flagged']} models with flagged layers; "
        f"{len(OTHERS)} other files are not models ("
    )
    scan(zoo, "-o", tmp_path / "zoo.jsonl", "--quiet")  # one job per CPU
    for path in (tmp_path / "zoo.csv", tmp_path / "zoo.jsonl"):
        other = read_table(path, like=reference)
        assert list(other.columns) == list(reference.columns)
        pd.testing.assert_frame_equal(_comparable(other), _comparable(reference), check_exact=True)
        # read back for resuming: nothing to do on the next run
        summary, _ = scan_json(zoo, "-o", path, "--jobs", "2")
        assert (summary["scanned"], summary["reused"]) == (0, count), path.name
        assert summary["written"] is False


def _comparable(table: Any) -> Any:
    """Sorted, without the time each file took; ``flags`` null read as empty (CSV cannot tell
    an empty string from a null)."""
    table = table.drop(columns=["seconds"]).assign(flags=table["flags"].fillna(""))
    key = ["path", "record", "layer"]
    return table.sort_values(key, na_position="first", kind="stable").reset_index(drop=True)


@pytest.mark.parametrize(
    ("output", "words"),
    [
        ("zoo.txt", ["unknown output format", "'.txt'"]),
        ("zoo", ["unknown output format", "no extension"]),
        ("no-such-folder/zoo.parquet", ["does not exist"]),
        ("folder.parquet", ["is a directory"]),
    ],
)
def test_bad_output_is_one_line_and_exit_2(zoo, tmp_path, output, words):
    (tmp_path / "folder.parquet").mkdir()
    result = scan(zoo / "torch", "-o", tmp_path / output, status=2)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert str(tmp_path / output) in lines[0]
    for word in words:
        assert word in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.parquet"]  # nothing written


# ---------------------------------------------------------------------------------------------
# which files: folders, globs, several paths


def test_globs_and_several_paths(zoo, tmp_path):
    out = tmp_path / "t.parquet"
    summary, _ = scan_json(
        f"{zoo}/**/*.pt", zoo / "onnx", zoo / "torch/sick.pt", "-o", out, "--jobs", "2"
    )
    expected = {
        "torch/state.pt", "torch/scripted.pt", "torch/sick.pt", "damaged/empty.pt",
        "onnx/inline.onnx", "onnx/ext/external.onnx",
    }  # fmt: skip
    table = read_table(out)
    assert set(model_rows(table).index) == {str(zoo / name) for name in expected}
    assert summary["files"] == len(expected)  # sick.pt matched twice, scanned once
    assert summary["missing"] == []
    assert summary["not_models"] == 1  # the external data file, in the onnx folder


def test_a_missing_path_or_empty_glob_is_an_error_that_leaves_the_table(zoo, tmp_path):
    """A mistyped path must not rewrite the table without the rows its files had."""
    out = tmp_path / "t.parquet"
    scan_json(zoo / "onnx", "-o", out)
    before = out.read_bytes()
    nothing = zoo / "no-such-folder"
    result = run_cli("scan", zoo / "onnx", nothing, f"{zoo}/**/*.bin", "-o", out, "--json")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"weightscope: {nothing}, {zoo}/**/*.bin: no such file or folder (or no match)"
    ]
    assert out.read_bytes() == before


def test_a_file_named_explicitly_is_always_scanned(zoo, zoo_scan, tmp_path):
    like = zoo_scan["table"]
    out = tmp_path / "t.csv"
    summary, _ = scan_json(zoo / "README.txt", zoo / "torch/deep/checkpoint", "-o", out)
    models = model_rows(read_table(out, like=like))
    assert set(models.index) == {str(zoo / "README.txt"), str(zoo / "torch/deep/checkpoint")}
    readme = models.loc[str(zoo / "README.txt")]
    assert readme["error_type"] == "UnsupportedFormatError"
    assert readme["error"].startswith(f"{zoo / 'README.txt'}: ")
    assert models.loc[str(zoo / "torch/deep/checkpoint"), "format"] == "pytorch-zip"
    # the README has its row, but it is not a model, nor a model that failed
    assert summary["files"] == 2 and summary["models"] == 1
    assert summary["errors"] == 0 and summary["not_models"] == 1


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["state.pt"], "wrote 1 model to {out}: 1 file read, 0 unchanged; 0 errors; "
         "N models with flagged layers; no other files ("),
        (["junk.txt"], "wrote 0 models to {out}: 1 file read, 0 unchanged; 0 errors; "
         "N models with flagged layers; 1 other file is not a model ("),
        (["state.pt", "other.pt", "bad.pt", "junk.txt"], "wrote 2 models to {out}: 4 files "
         "read, 0 unchanged; 1 error; N models with flagged layers; 1 other file is not a model ("),
    ],
)  # fmt: skip
def test_summary_line_counts_models_errors_and_other_files(zoo, tmp_path, names, expected):
    """A junk file named on the command line is not a model (nor an error); nouns agree with
    their counts."""
    shutil.copy(zoo / "torch/state.pt", tmp_path / "state.pt")
    shutil.copy(zoo / "torch/old/legacy.pth", tmp_path / "other.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "junk.txt").write_text("notes\n")
    out = tmp_path / "t.csv"
    summary, _ = scan_json(*(tmp_path / name for name in names), "-o", out, "--jobs", "1")
    result = scan(*(tmp_path / name for name in names), "-o", out, "--jobs", "1", "--force")
    flagged = summary["flagged"]
    models = f"{flagged} model{'' if flagged == 1 else 's'}"
    expected = expected.format(out=out).replace("N models", models)
    assert result.stderr.startswith(expected), result.stderr
    assert result.stderr.count("\n") == 1


def test_a_folder_without_models_gives_an_empty_table(tmp_path):
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "notes.txt").write_text("no models here\n")
    out = tmp_path / "t.parquet"
    summary, result = scan_json(folder, "-o", out)
    assert summary["files"] == 0 and summary["not_models"] == 1
    assert summary["missing"] == []  # the folder exists: it is not reported as missing
    assert result.stderr == ""
    assert summary["written"] is True
    table = read_table(out)  # the table exists, with its columns and no rows
    assert len(table) == 0
    assert {"record", "path", "error", "sha256"} <= set(table.columns)


# ---------------------------------------------------------------------------------------------
# resuming


@pytest.fixture
def scanned_copy(zoo: Path, tmp_path: Path) -> dict[str, Any]:
    """A copy of the zoo and a first scan of it."""
    root = copy_zoo(zoo, tmp_path)
    out = tmp_path / "t.parquet"
    summary, _ = scan_json(root, "-o", out, "--jobs", "2")
    assert summary["scanned"] == len(MODELS) + len(DAMAGED)
    return {"root": root, "out": out, "table": read_table(out)}


def rows_of(table: Any, path: Path) -> Any:
    return table[table["path"] == str(path)].reset_index(drop=True)


def others_unchanged(before: Any, after: Any, changed: set[str]) -> None:
    """Every row of the files not in ``changed`` is kept as it was (``seconds`` included: the
    rows were not recomputed)."""
    keep_before = before[~before["path"].isin(changed)].reset_index(drop=True)
    keep_after = after[~after["path"].isin(changed)].reset_index(drop=True)
    pd.testing.assert_frame_equal(keep_after, keep_before, check_exact=True)


def test_rerun_reads_only_what_changed(scanned_copy):
    root, out, first = scanned_copy["root"], scanned_copy["out"], scanned_copy["table"]
    count = len(MODELS) + len(DAMAGED)
    # nothing changed: nothing read, the table left as it is
    before = out.stat().st_mtime_ns, digest(out)
    summary, _ = scan_json(root, "-o", out, "--jobs", "2")
    assert summary["scanned"] == 0
    assert summary["reused"] == summary["files"] == count
    assert summary["errors"] == len(DAMAGED)  # damaged files are not read again either
    assert summary["written"] is False
    assert (out.stat().st_mtime_ns, digest(out)) == before
    human = scan(root, "-o", out)
    assert f"{out} (unchanged): 0 files read, {count} unchanged" in human.stderr

    # a file deleted, one added: the new one read, the deleted one's rows dropped
    gone = root / "keras/k3.h5"
    gone.unlink()
    new = root / "torch/new.pt"
    torch.save(torch_net(70).state_dict(), new)
    summary, _ = scan_json(root, "-o", out, "--jobs", "2")
    assert (summary["scanned"], summary["reused"], summary["files"]) == (1, count - 1, count)
    table = read_table(out)
    assert str(gone) not in set(table["path"])
    assert len(layer_rows(table, new)) == 3
    _assert_rows_describe(table, new)
    others_unchanged(first[first["path"] != str(gone)], table, {str(new)})

    # --force: every file read again, to the same rows
    summary, _ = scan_json(root, "-o", out, "--jobs", "2", "--force")
    assert summary["scanned"] == summary["files"] == count
    assert summary["reused"] == 0 and summary["written"] is True
    forced = read_table(out)
    pd.testing.assert_frame_equal(_comparable(forced), _comparable(table), check_exact=True)


def test_changed_models_are_rescanned_alone(scanned_copy):
    root, out, first = scanned_copy["root"], scanned_copy["out"], scanned_copy["table"]
    # 1. other weights in the same file
    legacy = root / "torch/old/legacy.pth"
    torch.save(torch_net(50).state_dict(), legacy, _use_new_zipfile_serialization=False)
    summary, _ = scan_json(root, "-o", out, "--jobs", "2")
    assert (summary["scanned"], summary["reused"]) == (1, len(MODELS) + len(DAMAGED) - 1)
    assert summary["written"] is True
    second = read_table(out)
    others_unchanged(first, second, {str(legacy)})
    _assert_rows_describe(second, legacy)
    assert not rows_of(second, legacy)["sha256"].equals(rows_of(first, legacy)["sha256"])

    # 2. other weights, same size, modification time put back: only the hash tells
    state = root / "torch/state.pt"
    stat = state.stat()
    torch.save(torch_net(51).state_dict(), state)
    assert state.stat().st_size == stat.st_size  # same layout, other values
    os.utime(state, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert state.stat().st_mtime_ns == stat.st_mtime_ns
    summary, _ = scan_json(root, "-o", out, "--jobs", "2")
    assert summary["scanned"] == 1
    third = read_table(out)
    others_unchanged(second, third, {str(state)})
    _assert_rows_describe(third, state)
    old_conv = layer_rows(second, state).set_index("layer").loc["conv"]
    new_conv = layer_rows(third, state).set_index("layer").loc["conv"]
    assert new_conv["mean"] != old_conv["mean"]


def _assert_rows_describe(table: Any, path: Path) -> None:
    """The rows of ``path`` are those of the file as it is now."""
    head = model_rows(table).loc[str(path)]
    assert head["sha256"] == digest(path)
    assert head["mtime_ns"] == path.stat().st_mtime_ns
    with weightscope.load(path) as model:
        layers = layer_rows(table, path).set_index("layer")
        for layer in model.layers:
            stats = layer.tensor("gamma" if layer.kind == "batch_norm" else "kernel").stats()
            for column in STATISTICS:
                assert same_number(layers.loc[layer.name, column], getattr(stats, column))


def test_onnx_external_data_is_part_of_the_fingerprint(scanned_copy):
    root, out, first = scanned_copy["root"], scanned_copy["out"], scanned_copy["table"]
    model = root / "onnx/ext/external.onnx"
    data = root / "onnx/ext/external.data"
    inputs = json.loads(model_rows(first).loc[str(model), "inputs"])
    assert [entry["path"] for entry in inputs] == [str(data)]
    assert inputs[0]["sha256"] == digest(data)

    # touched: the data file's time changed, nothing else
    os.utime(data)
    summary, _ = scan_json(root, "-o", out, "--jobs", "2")
    assert summary["scanned"] == 1
    second = read_table(out)
    others_unchanged(first, second, {str(model)})
    changed = model_rows(second).loc[str(model), "inputs"]
    assert json.loads(changed)[0]["mtime_ns"] == data.stat().st_mtime_ns

    # other weights in the data file; the .onnx file itself is byte for byte the same, and
    # both files get their modification times back: only the data file's hash tells
    stats = {p: p.stat() for p in (model, data)}
    fresh = root.parent / "fresh"
    fresh.mkdir()
    save_onnx_external(onnx_model(60), fresh / model.name, data.name)
    assert (fresh / model.name).read_bytes() == model.read_bytes()
    assert (fresh / data.name).stat().st_size == stats[data].st_size
    data.write_bytes((fresh / data.name).read_bytes())
    for path, stat in stats.items():
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    summary, _ = scan_json(root, "-o", out, "--jobs", "2")
    assert summary["scanned"] == 1
    third = read_table(out)
    others_unchanged(second, third, {str(model)})
    _assert_rows_describe(third, model)


def test_a_limit_error_is_retried_once_the_limit_is_raised(zoo, tmp_path):
    root = copy_zoo(zoo, tmp_path) / "keras"
    out = tmp_path / "t.parquet"
    summary, _ = scan_json(root, "-o", out, "--jobs", "2", "--limit", "max_json_bytes=100")
    assert summary["errors"] == summary["files"] == 3
    models = model_rows(read_table(out))
    assert set(models["error_type"]) == {"LimitError"}
    assert all("max_json_bytes" in error for error in models["error"])
    # what the error line asks for: run again with the limit raised (here: the default)
    summary, _ = scan_json(root, "-o", out, "--jobs", "2")
    assert summary["scanned"] == 3 and summary["errors"] == 0
    assert model_rows(read_table(out))["error"].isna().all()


def test_an_output_that_is_not_a_scan_table_is_rebuilt(zoo, zoo_scan, tmp_path):
    expected = {str(zoo / "onnx/inline.onnx"), str(zoo / "onnx/ext/external.onnx")}
    for name, content in [
        ("t.csv", "name,value\nlr,0.1\n"),  # another program's CSV
        ("t.parquet", "not parquet at all"),  # damaged
        ("t.jsonl", '{"record": "model"}\n[1, 2]\n'),  # not this table's lines
    ]:
        out = tmp_path / name
        out.write_text(content)
        result = scan(zoo / "onnx", "-o", out, "--jobs", "2")
        warning = [line for line in result.stderr.splitlines() if "rebuilt" in line]
        assert len(warning) == 1, result.stderr
        assert warning[0].startswith(f"weightscope: {out} could not be resumed from and was ")
        table = read_table(out, like=zoo_scan["table"])
        assert set(model_rows(table).index) == expected, name
    # now it is a scan table: the next run resumes from it, without a warning
    summary, again = scan_json(zoo / "onnx", "-o", out)
    assert summary["reused"] == 2 and summary["previous_unreadable"] is None
    assert again.stderr == ""


# ---------------------------------------------------------------------------------------------
# robustness: time-outs, memory caps, outputs that must not be written


def test_every_file_times_out(zoo, tmp_path):
    root = copy_zoo(zoo, tmp_path)
    out = tmp_path / "t.parquet"
    summary, _ = scan_json(root, "-o", out, "--jobs", "2", "--timeout", "0.001")
    count = len(MODELS) + len(DAMAGED)
    assert summary["files"] == summary["errors"] == count
    table = read_table(out)
    assert len(table) == count and set(table["record"]) == {"model"}
    models = model_rows(table)
    assert set(models["error_type"]) == {"Timeout"}
    for path, error in models["error"].items():
        assert error.startswith(f"{path}: timed out after 0.001 s")
    assert models["sha256"].isna().all()  # not fingerprinted: a re-run tries again
    summary, _ = scan_json(root, "-o", out, "--jobs", "2")
    assert summary["scanned"] == count and summary["reused"] == 0
    assert summary["errors"] == len(DAMAGED)


def test_a_tiny_memory_cap_gives_each_file_one_error_row(zoo, tmp_path):
    root = zoo / "torch"
    out = tmp_path / "t.parquet"
    summary, result = scan_json(root, "-o", out, "--jobs", "2", "--memory-per-job", "64M")
    files = [name for name in MODELS if name.startswith("torch/")]
    assert summary["files"] == summary["errors"] == len(files)
    table = read_table(out)
    assert len(table) == len(files) and set(table["record"]) == {"model"}
    for path, row in model_rows(table).iterrows():
        assert row["error_type"] in {"WorkerDied", "MemoryError"}, row["error"]
        assert row["error"].startswith(f"{path}: ")
    assert result.stderr == ""


def test_output_onto_a_scanned_model_is_refused(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    model = folder / "model.jsonl"  # a torch state dict, recognised by its content
    torch.save(torch_net(80).state_dict(), model)
    (folder / "link.csv").symlink_to(model)
    before = digest(model), model.stat().st_mtime_ns
    for paths, output in [
        ([folder], model),
        ([model], model),
        ([folder], folder / "link.csv"),
    ]:
        result = scan(*paths, "-o", output, status=2)
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"weightscope: {output}: refusing to overwrite "), lines
        assert (digest(model), model.stat().st_mtime_ns) == before
        assert (folder / "link.csv").resolve() == model
        assert sorted(p.name for p in folder.iterdir()) == ["link.csv", "model.jsonl"]
    with weightscope.load(model) as loaded:
        assert loaded.format == "pytorch-zip"


def test_output_onto_onnx_external_data_is_refused(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    model, data = folder / "model.onnx", folder / "weights.csv"
    save_onnx_external(onnx_model(90), model, data.name)
    before = digest(model), digest(data)
    result = scan(folder, "-o", data, status=2)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("weightscope: ") and "refusing to overwrite" in lines[0]
    assert str(data) in lines[0]
    assert (digest(model), digest(data)) == before
    assert sorted(p.name for p in folder.iterdir()) == ["model.onnx", "weights.csv"]
    with weightscope.load(model) as loaded:
        assert loaded.layer("conv").tensor("kernel").stats().count == 8 * 3 * 3 * 3
