"""Benchmark ``weightscope inspect`` on a ~550 MB Keras 3 legacy ``.h5`` (VGG16, 138 M params).

Goals (from the issue), all measured in this one run, page cache warm:

* wall time <= 1.2x a plain h5py script that reads every dataset whole and computes mean and std;
* wall time <= 0.1x ``keras.models.load_model(path, compile=False)`` run as its own Python
  process (import time included, as a user would pay it);
* peak resident memory <= 250 MB.

Every contender runs as a child process; wall time is taken around spawn..reap and peak RSS comes
from ``os.wait4`` (``ru_maxrss``, KiB on Linux). The benchmark process itself never imports
tensorflow or keras: the VGG16 file is generated (once, seeded) by a child into
``benchmarks/.cache/``.

    python benchmarks/bench_inspect_vgg16.py [--reps 5] [--keras-reps 3]

Exits 0 when every goal passes, 1 when one fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _measure import CACHE, Runs, measure, print_context, print_goals, print_table

VGG16_FILE = CACHE / "vgg16.h5"

GOAL_VS_H5PY = 1.2
GOAL_VS_KERAS = 0.1
GOAL_PEAK_RSS_MB = 250.0

GENERATE = r"""
import os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras
keras.utils.set_random_seed(0)
model = keras.applications.VGG16(weights=None)
model.save(sys.argv[1])
print(model.count_params())
"""

# The naive baseline: every dataset read whole, then mean and std (float32, as numpy does).
H5PY_BASELINE = r"""
import sys
import h5py

def visit(name, obj):
    if isinstance(obj, h5py.Dataset):
        data = obj[()]
        data.mean()
        data.std()

with h5py.File(sys.argv[1], "r") as f:
    f.visititems(visit)
"""

# A user's `load_model`, timed from interpreter start; also reports import and load-only times.
KERAS_BASELINE = r"""
import json, sys, time
t0 = time.perf_counter()
import keras
t1 = time.perf_counter()
model = keras.models.load_model(sys.argv[1], compile=False)
t2 = time.perf_counter()
assert model.count_params() > 0
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1}))
"""


def generate(path: Path) -> None:
    """Write the seeded VGG16 file with Keras in a child process (atomic rename when done)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.h5")
    print(f"generating {path} (keras.applications.VGG16(weights=None), seed 0) ...", flush=True)
    subprocess.run([sys.executable, "-c", GENERATE, str(partial)], check=True)
    partial.replace(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="runs of weightscope and h5py")
    parser.add_argument("--keras-reps", type=int, default=3, help="runs of keras load_model")
    parser.add_argument("--file", type=Path, default=VGG16_FILE, help="model file to use")
    args = parser.parse_args()
    if args.reps < 1 or args.keras_reps < 1:
        parser.error("--reps and --keras-reps must be at least 1")

    if not args.file.exists():
        if args.file != VGG16_FILE:
            parser.error(f"{args.file} does not exist")
        generate(VGG16_FILE)
    size_mb = args.file.stat().st_size / 1e6

    with tempfile.TemporaryDirectory() as tmp:
        baseline = Path(tmp) / "h5py_baseline.py"
        baseline.write_text(H5PY_BASELINE)
        weightscope = Runs(
            "weightscope inspect",
            [sys.executable, "-m", "weightscope", "inspect", str(args.file)],
        )
        h5py_runs = Runs("h5py read + mean/std", [sys.executable, str(baseline), str(args.file)])
        keras_runs = Runs(
            "keras load_model",
            [sys.executable, "-c", KERAS_BASELINE, str(args.file)],
            reports_json=True,
        )

        load_before = os.getloadavg()[0]
        warm_s = measure(
            args.file,
            [(weightscope, args.reps), (h5py_runs, args.reps), (keras_runs, args.keras_reps)],
        )

    load_after = os.getloadavg()[0]
    report(args.file, size_mb, warm_s, weightscope, h5py_runs, keras_runs)
    print(
        f"\n1-minute load average {load_before:.2f} before, {load_after:.2f} after "
        "(other work on the machine slows every contender; runs are interleaved)"
    )
    return 0 if all_pass(weightscope, h5py_runs, keras_runs) else 1


def goals(ws: Runs, h5: Runs, keras: Runs) -> list[tuple[str, str, bool]]:
    vs_h5py = ws.wall_median / h5.wall_median
    vs_keras = ws.wall_median / keras.wall_median
    return [
        (f"wall <= {GOAL_VS_H5PY}x h5py baseline", f"{vs_h5py:.2f}x", vs_h5py <= GOAL_VS_H5PY),
        (
            f"wall <= {GOAL_VS_KERAS}x keras load_model (process)",
            f"{vs_keras:.3f}x",
            vs_keras <= GOAL_VS_KERAS,
        ),
        (
            f"peak RSS <= {GOAL_PEAK_RSS_MB:.0f} MB",
            f"{ws.peak_rss_mb:.0f} MB",
            ws.peak_rss_mb <= GOAL_PEAK_RSS_MB,
        ),
    ]


def all_pass(ws: Runs, h5: Runs, keras: Runs) -> bool:
    return all(ok for *_, ok in goals(ws, h5, keras))


def report(path: Path, size_mb: float, warm_s: float, ws: Runs, h5: Runs, keras: Runs) -> None:
    print(f"## weightscope inspect on {path.name} ({size_mb:.0f} MB)\n")
    print_context(warm_s)
    print()
    print_table([ws, h5, keras])
    if keras.extra:
        imports = statistics.median(e["import_s"] for e in keras.extra)
        loads = statistics.median(e["load_s"] for e in keras.extra)
        print(
            f"\nkeras, in-process medians (context only): `import keras` {imports:.2f} s, "
            f"`load_model` alone {loads:.2f} s "
            f"(weightscope / load-only = {ws.wall_median / loads:.3f}x)"
        )
    print(
        f"\nagainst the fastest h5py run instead of its median: "
        f"{ws.wall_median / min(h5.wall):.2f}x (the baseline's own wall time varies a lot: it "
        "faults in ~820 MB of fresh memory)"
    )
    print()
    print_goals(goals(ws, h5, keras))


if __name__ == "__main__":
    sys.exit(main())
