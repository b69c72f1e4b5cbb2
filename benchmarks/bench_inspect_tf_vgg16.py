"""Benchmark ``weightscope inspect`` on VGG16 (138 M params) in TensorFlow's own formats: a
SavedModel directory (~553 MB of variables) and a float32 ``.tflite`` file (~553 MB).

Goals (issue 18, "Speed"), all measured in this one run, page cache warm:

* SavedModel: wall time <= 0.2x a process that runs ``tf.saved_model.load(dir)`` and then mean and
  std of every variable (``import tensorflow`` included, as a user would pay it);
* TFLite: wall time <= 0.2x a process that opens the file with the TFLite interpreter
  (``tf.lite.Interpreter(path)`` + ``allocate_tensors()``) and then mean and std of every tensor
  that holds a buffer of the file (``get_tensor``);
* peak resident memory <= 250 MB for both;
* no framework imported: ``weightscope.cli.app.main(["inspect", path])`` run in a fresh
  interpreter, which then reports whether ``tensorflow``, ``keras``, ``flatbuffers`` or
  ``google.protobuf`` is in ``sys.modules``.

The model is the one the Keras benchmark uses (``keras.applications.VGG16(weights=None)``, seed
0; biases set small and random so that the converter keeps them apart), built once by a child
process into ``benchmarks/.cache/``: exported with ``model.export(dir)``
(Keras 3's SavedModel export) and converted to TFLite with ``tf.lite.TFLiteConverter.
from_saved_model(dir)`` (float32, no optimizations). The benchmark process itself imports neither
tensorflow nor keras. Measurement as in the other benchmarks (``_measure.py``).

    python benchmarks/bench_inspect_tf_vgg16.py [--reps 5] [--tf-reps 3]

Exits 0 when every goal passes, 1 when one fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from _measure import (
    CACHE,
    IMPORT_CHECK,
    Runs,
    measure,
    print_context,
    print_goals,
    print_table,
    run_once,
    warm_page_cache,
)

SAVED_MODEL_DIR = CACHE / "vgg16_savedmodel"
TFLITE_FILE = CACHE / "vgg16.tflite"
VGG16_PARAMS = 138_357_544
VGG16_LAYERS = 16  # 13 convolutions, 3 dense

GOAL_VS_TF = 0.2
GOAL_PEAK_RSS_MB = 250.0

FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras", "flatbuffers", "google.protobuf")

GENERATE = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
import tensorflow as tf
keras.utils.set_random_seed(0)
import numpy as np
model = keras.applications.VGG16(weights=None)
# Keras zeroes biases, and the TFLite converter would then share one buffer between equal ones:
# small random biases, as after training, keep all 32 weights apart in both files.
rng = np.random.default_rng(0)
for layer in model.layers:
    if getattr(layer, "bias", None) is not None:
        layer.bias.assign(rng.normal(0, 0.01, layer.bias.shape).astype("float32"))
saved, tflite = sys.argv[1:3]
model.export(saved, verbose=False)
converter = tf.lite.TFLiteConverter.from_saved_model(saved)
with open(tflite, "wb") as handle:
    handle.write(converter.convert())
print(model.count_params())
"""

# tf.saved_model.load, then every variable's value, its mean and std.
SAVED_MODEL_BASELINE = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
t0 = time.perf_counter()
import tensorflow as tf
t1 = time.perf_counter()
loaded = tf.saved_model.load(sys.argv[1])
t2 = time.perf_counter()
count = 0
for variable in loaded.variables:
    array = variable.numpy()
    array.mean()
    array.std()
    count += array.size
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "stats_s": t3 - t2, "count": count}))
"""

# The TFLite interpreter, then every tensor that holds a buffer of the file, its mean and std.
TFLITE_BASELINE = r"""
import json, os, sys, time, warnings
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.simplefilter("ignore")  # tf.lite.Interpreter is deprecated in favour of LiteRT
t0 = time.perf_counter()
import tensorflow as tf
t1 = time.perf_counter()
interpreter = tf.lite.Interpreter(sys.argv[1])
interpreter.allocate_tensors()
t2 = time.perf_counter()
# Weights: the tensors no op writes and the model does not take as input.
written = {i for op in interpreter._get_ops_details() for i in op["outputs"]}
written |= {d["index"] for d in interpreter.get_input_details()}
count = 0
for detail in interpreter.get_tensor_details():
    if detail["index"] in written:
        continue
    array = interpreter.get_tensor(detail["index"])
    if array.dtype.kind == "f":
        array.mean()
        array.std()
        count += array.size
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "stats_s": t3 - t2, "count": count}))
"""

READ_CHECK = r"""
import contextlib, io, json, sys
from weightscope.cli.app import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    code = main(["inspect", "--json", sys.argv[1]])
data = json.loads(out.getvalue())
tensors = [t for layer in data["layers"] for t in layer["tensors"]]
weighted = [layer for layer in data["layers"] if layer["kind"] in ("conv2d", "dense")]
print(json.dumps({
    "exit": code,
    "framework": data["framework"],
    "format": data["format"],
    "weighted_layers": len(weighted),
    "params": data["params"]["total"],
    "tensors": len(tensors),
    "with_stats": sum(1 for t in tensors if (t.get("stats") or {}).get("mean") is not None),
}))
sys.exit(code)
"""


def generate(saved: Path, tflite: Path) -> None:
    """Write the SavedModel and the TFLite file in a child process (renamed into place when
    both are complete)."""
    saved.parent.mkdir(parents=True, exist_ok=True)
    partial_saved = saved.with_name(saved.name + ".partial")
    partial_tflite = tflite.with_suffix(".partial.tflite")
    shutil.rmtree(partial_saved, ignore_errors=True)
    print(
        f"generating {saved} and {tflite} (keras.applications.VGG16(weights=None), seed 0, "
        "model.export, TFLiteConverter.from_saved_model float32) ...",
        flush=True,
    )
    subprocess.run(
        [sys.executable, "-c", GENERATE, str(partial_saved), str(partial_tflite)], check=True
    )
    shutil.rmtree(saved, ignore_errors=True)
    partial_saved.replace(saved)
    partial_tflite.replace(tflite)


def saved_model_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed runs of weightscope")
    parser.add_argument("--tf-reps", type=int, default=3, help="timed runs of each TF baseline")
    args = parser.parse_args()
    if args.reps < 1 or args.tf_reps < 1:
        parser.error("--reps and --tf-reps must be at least 1")
    if not (SAVED_MODEL_DIR / "saved_model.pb").exists() or not TFLITE_FILE.exists():
        generate(SAVED_MODEL_DIR, TFLITE_FILE)

    def inspect(name: str, path: Path) -> Runs:
        return Runs(name, [sys.executable, "-m", "weightscope", "inspect", str(path)])

    def baseline(name: str, script: str, path: Path) -> Runs:
        return Runs(name, [sys.executable, "-c", script, str(path)], reports_json=True)

    ws_saved = inspect("weightscope inspect SAVEDMODEL_DIR", SAVED_MODEL_DIR)
    tf_saved = baseline("tf.saved_model.load + mean/std", SAVED_MODEL_BASELINE, SAVED_MODEL_DIR)
    ws_tflite = inspect("weightscope inspect vgg16.tflite", TFLITE_FILE)
    tf_tflite = baseline("TFLite interpreter + mean/std", TFLITE_BASELINE, TFLITE_FILE)
    contenders = [ws_saved, tf_saved, ws_tflite, tf_tflite]

    load_before = os.getloadavg()[0]
    for file in saved_model_files(SAVED_MODEL_DIR):  # measure() warms the TFLite file
        warm_page_cache(file)
    warm_s = measure(
        TFLITE_FILE,
        [(ws_saved, args.reps), (tf_saved, args.tf_reps), (ws_tflite, args.reps),
         (tf_tflite, args.tf_reps)],
    )  # fmt: skip
    load_after = os.getloadavg()[0]

    checks = {}
    for label, path in (("SavedModel", SAVED_MODEL_DIR), ("TFLite", TFLITE_FILE)):
        read = Runs(f"read check ({label})", [sys.executable, "-c", READ_CHECK, str(path)], True)
        run_once(read)
        imported = Runs(
            f"import check ({label})",
            [sys.executable, "-c", IMPORT_CHECK, str(path), ",".join(FRAMEWORKS)],
            True,
        )
        run_once(imported)
        checks[label] = (read.extra[0], imported.extra[0])

    results = goals(contenders, checks)
    saved_mb = sum(p.stat().st_size for p in saved_model_files(SAVED_MODEL_DIR)) / 1e6
    tflite_mb = TFLITE_FILE.stat().st_size / 1e6
    print(
        f"## weightscope inspect on VGG16 as a SavedModel ({saved_mb:.0f} MB in all) and as "
        f"TFLite ({tflite_mb:.0f} MB)\n"
    )
    print_context(warm_s)
    print()
    print_table(contenders)
    for runs in (tf_saved, tf_tflite):

        def median(key: str, runs: Runs = runs) -> float:
            return statistics.median(e[key] for e in runs.extra)

        print(
            f"\n{runs.name}, in-process medians (context only): `import tensorflow` "
            f"{median('import_s'):.2f} s, load {median('load_s'):.2f} s, mean/std "
            f"{median('stats_s'):.2f} s over {int(median('count')):,} values"
        )
    print()
    print_goals(results)
    print(
        f"\n1-minute load average {load_before:.2f} before, {load_after:.2f} after "
        "(other work on the machine slows every contender; runs are interleaved)"
    )
    return 0 if all(ok for *_, ok in results) else 1


def goals(
    contenders: list[Runs], checks: dict[str, tuple[dict, dict]]
) -> list[tuple[str, str, bool]]:
    ws_saved, tf_saved, ws_tflite, tf_tflite = contenders
    results = []
    for label, ws, tf in (("SavedModel", ws_saved, tf_saved), ("TFLite", ws_tflite, tf_tflite)):
        ratio = ws.wall_median / tf.wall_median
        results += [
            (
                f"{label}: wall <= {GOAL_VS_TF}x {tf.name} (process)",
                f"{ratio:.3f}x",
                ratio <= GOAL_VS_TF,
            ),
            (
                f"{label}: peak RSS <= {GOAL_PEAK_RSS_MB:.0f} MB",
                f"{ws.peak_rss_mb:.0f} MB",
                ws.peak_rss_mb <= GOAL_PEAK_RSS_MB,
            ),
        ]
    for label, (read, imported) in checks.items():
        frameworks = imported["frameworks"]
        results.append(
            (
                f"{label}: no framework imported (sys.modules after inspect: "
                f"{', '.join(FRAMEWORKS)})",
                "imported: " + (", ".join(frameworks[:3]) if frameworks else "none"),
                not frameworks,
            )
        )
        read_ok = (
            read["weighted_layers"] == VGG16_LAYERS
            and read["params"] == VGG16_PARAMS
            and read["with_stats"] == read["tensors"]
        )
        results.append(
            (
                f"(check) {label}: read as {read['format']}: {VGG16_LAYERS} conv/dense layers, "
                f"{VGG16_PARAMS:,} params, statistics for every tensor",
                f"{read['weighted_layers']} layers, {read['params']:,} params, "
                f"stats {read['with_stats']}/{read['tensors']}",
                read_ok,
            )
        )
    return results


if __name__ == "__main__":
    sys.exit(main())
