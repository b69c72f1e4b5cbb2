"""Benchmark ``plot_kernels(layer, all=True)`` to PNG on a 512x512x3x3 conv layer (issue 5).

Goal: weightscope renders every one of the 262,144 3x3 slices of the layer (``plot_kernels`` then
``savefig`` to PNG, in-process) in at most 2 s; the whole ``weightscope plot --all`` process
(interpreter start, imports, reading the file) is reported beside it.

The baseline is the obvious matplotlib program: ``plt.subplots(n, n)`` with one ``imshow`` per
slice (same colour map and symmetric limits, axes off), same figure size and dpi as weightscope's
figure, saved to PNG. With 262,144 Axes that would run for over half an hour (and need tens of GB),
so it is measured on ``n x n`` sub-grids (32x32 and 64x64 by default: 1,024 and 4,096 Axes) and
extrapolated linearly in the number of Axes to 512x512; its cost per Axes does not fall as the grid
grows (it rises slightly from 32x32 to 64x64), so the extrapolation is a lower bound. A sub-grid
that runs past ``--baseline-timeout`` is reported as "> N s".

The layer is built with numpy (seeded, He-normal) and written once as a real ``.safetensors`` file
(``features.28.weight`` (512, 512, 3, 3) F32 and its bias, as torchvision's VGG16 names its last
conv) into ``benchmarks/.cache/``; no framework is needed. Every contender is a child process
(wall = spawn..reap, peak RSS from ``os.wait4``); the children report their in-process phases.

    python benchmarks/bench_plot_kernels.py [--reps 5] [--baseline-grids 32,64]

Exits 0 when the goal passes, 1 when it fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _measure import (
    CACHE,
    REPO,
    Runs,
    print_context,
    print_goals,
    print_table,
    run_once,
    warm_page_cache,
)

LAYER_FILE = CACHE / "conv512x512x3x3.safetensors"
LAYER_NAME = "features.28"
SHAPE = (512, 512, 3, 3)
GOAL_RENDER_S = 2.0

# weightscope's Python API: load, plot_kernels(all=True), savefig PNG; phases timed in-process.
WS_RENDER = r"""
import json, sys, time
t0 = time.perf_counter()
import weightscope
from weightscope.reporters.kernels import plot_kernels
t1 = time.perf_counter()
path, name, out = sys.argv[1:4]
with weightscope.load(path) as model:
    layer = model.layer(name)
    t2 = time.perf_counter()
    fig = plot_kernels(layer, all=True)
    t3 = time.perf_counter()
    fig.savefig(out)
    t4 = time.perf_counter()
width, height = (fig.get_size_inches() * fig.dpi).round().astype(int).tolist()
print(json.dumps({
    "import_s": t1 - t0, "load_s": t2 - t1, "figure_s": t3 - t2, "save_s": t4 - t3,
    "render_s": t4 - t2, "inches": fig.get_size_inches().tolist(), "dpi": fig.dpi,
    "px": [width, height], "axes": len(fig.axes), "images": len(fig.axes[0].images),
    "image_shape": list(fig.values.shape), "shown": fig.shown,
}))
"""

# The naive program: one Axes per slice. Reads the same layer (with weightscope, untimed part).
BASELINE = r"""
import json, sys, time
t0 = time.perf_counter()
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import weightscope
t1 = time.perf_counter()
path, name, n, width, height, dpi, out = sys.argv[1:8]
n = int(n)
with weightscope.load(path) as model:
    kernel = model.layer(name).tensor("kernel").canonical()
limit = float(np.abs(kernel).max())  # the whole layer's, as weightscope uses
t2 = time.perf_counter()
fig, axes = plt.subplots(n, n, figsize=(float(width), float(height)), dpi=float(dpi), squeeze=False)
t3 = time.perf_counter()
for f in range(n):
    for c in range(n):
        ax = axes[f, c]
        ax.imshow(kernel[f, c], cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
        ax.set_axis_off()
t4 = time.perf_counter()
fig.savefig(out)
t5 = time.perf_counter()
print(json.dumps({
    "import_s": t1 - t0, "subplots_s": t3 - t2, "imshow_s": t4 - t3, "save_s": t5 - t4,
    "render_s": t5 - t2, "axes": len(fig.axes),
}))
"""


def generate(path: Path) -> None:
    """Write the seeded 512x512x3x3 conv (weight and bias) as a .safetensors file, by hand:
    8-byte little-endian header length, JSON header, then the raw little-endian data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating {path} (numpy, seed 0, He-normal 512x512x3x3) ...", flush=True)
    rng = np.random.default_rng(0)
    fan_in = SHAPE[1] * SHAPE[2] * SHAPE[3]
    weight = (rng.standard_normal(SHAPE) * np.sqrt(2 / fan_in)).astype("<f4")
    bias = (rng.standard_normal(SHAPE[0]) * 0.01).astype("<f4")
    header = {
        "__metadata__": {"format": "pt"},
        f"{LAYER_NAME}.weight": {
            "dtype": "F32",
            "shape": list(SHAPE),
            "data_offsets": [0, weight.nbytes],
        },
        f"{LAYER_NAME}.bias": {
            "dtype": "F32",
            "shape": [SHAPE[0]],
            "data_offsets": [weight.nbytes, weight.nbytes + bias.nbytes],
        },
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    partial = path.with_suffix(".partial")
    with open(partial, "wb") as handle:
        handle.write(len(text).to_bytes(8, "little"))
        handle.write(text)
        handle.write(weight.tobytes())
        handle.write(bias.tobytes())
    partial.replace(path)


def run_limited(runs: Runs, timeout: float) -> bool:
    """As ``_measure.run_once``, but give up (and kill the child) after ``timeout`` seconds.
    Returns False when it ran out of time."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(runs.command, stdout=out, stderr=err, cwd=REPO)
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                process.kill()
                os.wait4(process.pid, 0)
                return False
            time.sleep(0.02)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            print(f"\n{runs.name} failed (exit {process.returncode}):\n{tail}", file=sys.stderr)
            sys.exit(2)
        out.seek(0)
        runs.extra.append(json.loads(out.read().decode().strip().splitlines()[-1]))
    runs.wall.append(wall)
    runs.rss_kib.append(usage.ru_maxrss)
    return True


def median(runs: Runs, key: str) -> float:
    return statistics.median(e[key] for e in runs.extra)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="timed runs of each weightscope run")
    parser.add_argument(
        "--baseline-grids",
        default="32,64",
        help="n of the n x n sub-grids the one-Axes-per-slice baseline draws (default 32,64)",
    )
    parser.add_argument(
        "--baseline-reps", type=int, default=1, help="timed runs of each baseline grid"
    )
    parser.add_argument(
        "--baseline-timeout", type=float, default=600, help="seconds before a grid is given up"
    )
    args = parser.parse_args()
    grids = sorted({int(n) for n in args.baseline_grids.split(",") if n.strip()})
    if args.reps < 1 or args.baseline_reps < 1 or not grids or not all(0 < n <= 512 for n in grids):
        parser.error("reps must be >= 1 and grids between 1 and 512")
    if not LAYER_FILE.exists():
        generate(LAYER_FILE)

    out_dir = Path(tempfile.mkdtemp(prefix="ws-bench-plot-"))
    api = Runs(
        "weightscope `plot_kernels(layer, all=True)` + `savefig` PNG (process)",
        [sys.executable, "-c", WS_RENDER, str(LAYER_FILE), LAYER_NAME, str(out_dir / "api.png")],
        reports_json=True,
    )
    cli_out = out_dir / "cli.png"
    cli = Runs(
        "`weightscope plot FILE --layer features.28 --all -o cli.png` (process)",
        [
            *(sys.executable, "-m", "weightscope", "plot", str(LAYER_FILE)),
            *("--layer", LAYER_NAME, "--all", "-o", str(cli_out)),
        ],
    )
    load_before = os.getloadavg()[0]
    warm_s = warm_page_cache(LAYER_FILE)
    for runs in (api, cli):  # untimed: warm .pyc files, shared libraries, font cache
        run_once(runs)
        runs.clear()
    for _ in range(args.reps):
        run_once(api)
        run_once(cli)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    info = api.extra[0]
    width, height = info["inches"]

    baselines: list[tuple[int, Runs, bool]] = []
    for n in grids:
        runs = Runs(
            f"baseline: `plt.subplots({n}, {n})`, one imshow per slice, savefig PNG (process)",
            [
                *(sys.executable, "-c", BASELINE, str(LAYER_FILE), LAYER_NAME, str(n)),
                *(str(width), str(height), str(info["dpi"]), str(out_dir / f"baseline{n}.png")),
            ],
            reports_json=True,
        )
        finished = True
        for _ in range(args.baseline_reps):
            print(f"baseline {n}x{n} ...", file=sys.stderr, flush=True)
            finished = run_limited(runs, args.baseline_timeout)
            if not finished:
                break
        baselines.append((n, runs, finished))
    load_after = os.getloadavg()[0]

    total_axes = SHAPE[0] * SHAPE[1]
    print(f"## plot_kernels(all=True) to PNG: one {SHAPE} conv layer ({total_axes:,} slices)\n")
    print_context(warm_s)
    print(
        f"- layer: `{LAYER_FILE.name}`, `{LAYER_NAME}` read by weightscope as a conv2d, "
        f"canonical {SHAPE}; figure {width:.2f} x {height:.2f} in at {info['dpi']:.0f} dpi = "
        f"{info['px'][0]} x {info['px'][1]} px PNG, for every contender"
    )
    print(
        f"- weightscope draws {info['images']} image ({info['image_shape'][0]} x "
        f"{info['image_shape'][1]} pixels: 512 rows of 3 + 511 separators each way) on "
        f"{info['axes']} Axes (image + colorbar); shows {info['shown']}"
    )
    print(
        f"- weightscope: {args.reps} timed runs each, interleaved; baseline: {args.baseline_reps} "
        f"run per sub-grid, no untimed run (matplotlib's files are warm from weightscope's)"
    )
    print()
    print_table([api, cli] + [runs for _, runs, done in baselines if done])
    for n, _, done in baselines:
        if not done:
            print(f"| baseline {n}x{n} | 0 | > {args.baseline_timeout:.0f} | | |")

    print("\nIn-process phases (medians, s):\n")
    print(
        "| contender | imports | read layer | build figure | savefig PNG | render = build + save |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| weightscope, 512x512 (all) | {median(api, 'import_s'):.3f} | "
        f"{median(api, 'load_s'):.3f} | {median(api, 'figure_s'):.3f} | "
        f"{median(api, 'save_s'):.3f} | {median(api, 'render_s'):.3f} |"
    )
    for n, runs, done in baselines:
        if done:
            print(
                f"| baseline, {n}x{n} sub-grid ({n * n:,} Axes) | {median(runs, 'import_s'):.3f} | "
                f"(untimed) | {median(runs, 'subplots_s') + median(runs, 'imshow_s'):.3f} | "
                f"{median(runs, 'save_s'):.3f} | {median(runs, 'render_s'):.3f} |"
            )

    print("\nBaseline extrapolated to 512x512 (linear in the number of Axes; a lower bound):\n")
    print("| measured grid | Axes | render (s) | ms per Axes | 512x512 = 262,144 Axes (s) |")
    print("|---|---:|---:|---:|---:|")
    extrapolated = None
    for n, runs, done in baselines:
        if not done:
            print(f"| {n}x{n} | {n * n:,} | > {args.baseline_timeout:.0f} | | |")
            continue
        render = median(runs, "render_s")
        full = render / (n * n) * total_axes
        extrapolated = full
        print(
            f"| {n}x{n} | {n * n:,} | {render:.2f} | {1000 * render / (n * n):.2f} | "
            f"{full:,.0f} (~{full / 60:.0f} min) |"
        )
    render = median(api, "render_s")
    if extrapolated is not None:
        print(
            f"\nweightscope's render ({render:.2f} s) against the extrapolated baseline "
            f"({extrapolated:,.0f} s, from the largest grid): {extrapolated / render:,.0f}x faster"
        )
    print()
    cli_px = cli_out.read_bytes()[16:24]
    print_goals(
        [
            (
                f"render all 262,144 slices to PNG <= {GOAL_RENDER_S:.0f} s "
                "(plot_kernels + savefig, in-process, median)",
                f"{render:.2f} s",
                render <= GOAL_RENDER_S,
            ),
            (
                "(information) whole `weightscope plot --all` process, import and read included",
                f"{cli.wall_median:.2f} s",
                True,
            ),
            (
                "(check) one image for the whole grid, PNG written",
                f"{info['images']} image, {int.from_bytes(cli_px[:4], 'big')} x "
                f"{int.from_bytes(cli_px[4:], 'big')} px",
                info["images"] == 1 and cli_out.stat().st_size > 0,
            ),
        ]
    )
    print(
        f"\n1-minute load average {load_before:.2f} before, {load_after:.2f} after "
        "(other work on the machine slows every contender)"
    )
    return 0 if render <= GOAL_RENDER_S else 1


if __name__ == "__main__":
    sys.exit(main())
