"""Benchmark ``weightscope report`` on a 25-layer, 236 MB PyTorch model (issue 16, point 4).

Goal: the whole ``weightscope report FILE -o report.html`` process takes at most 5 s on a model
of 25 weight-bearing layers and 236 MB, every one of them with its section, checks and figures.

The model is a whole pickled ``nn.Sequential`` (so that layer classes are recorded), built once,
seeded, by a child process with ``torch.nn`` into ``benchmarks/.cache/report25.pt``: an embedding
(35,300 x 512), an LSTM and a GRU (512 -> 512), eight 3x3 convolutions (3 -> 64 -> ... -> 512),
each followed by a batch norm, a depthwise 3x3 and a pointwise 1x1 conv (512), a layer norm, and
three dense layers (25,088 -> 1,024 -> 1,024 -> 1,000): 59,016,816 values, 236 MB of float32.

Contenders, each a child process timed spawn..reap with its peak RSS and CPU time (user + sys)
from ``os.wait4``, page cache warm, one untimed run each, then timed runs interleaved:

* ``weightscope report`` as of this checkout;
* the same command at the base commit ``82f2436`` (before this work: figures for convolutions
  only, the init check run twice per layer), exported with ``git archive`` into
  ``benchmarks/.cache/base-82f2436/`` and imported from there: the named baseline;
* ``report_html(model, processes=1)`` as of this checkout, the page drawn by one process (what
  a notebook gets; the command line forks a child to draw half of the layers where two CPUs
  are free), for information;
* ``weightscope inspect`` of the same file (reads every tensor's statistics), for scale.

Then, untimed, a child checks the page this checkout wrote: one section per weight-bearing
layer (25), every figure a PNG, nothing loaded from outside the page, and each kernel read by
the init check exactly once; and the two-process page must equal the one-process page.

    python benchmarks/bench_report.py [--reps 3] [--base-reps 2]

Exits 0 when the goal passes, 1 when it fails, 2 when a contender crashes. The machine is
shared: the 1-minute load average is printed before and after, and the CPU time (what the
process itself needed) beside the wall time.
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
from dataclasses import dataclass, field
from pathlib import Path

from _measure import CACHE, REPO, print_context, print_goals, warm_page_cache

MODEL_FILE = CACHE / "report25.pt"
MODEL_LAYERS = 25
MODEL_VALUES = 59_016_816
BASE_COMMIT = "82f2436"
BASE_TREE = CACHE / f"base-{BASE_COMMIT}"
GOAL_WALL_S = 5.0

GENERATE = r"""
import sys
from collections import OrderedDict

import torch
from torch import nn

torch.manual_seed(0)
layers = OrderedDict()
layers["embed"] = nn.Embedding(35_300, 512)
layers["lstm"] = nn.LSTM(512, 512)
layers["gru"] = nn.GRU(512, 512)
channels = [3, 64, 128, 256, 256, 512, 512, 512, 512]
for i in range(8):
    layers[f"conv{i + 1}"] = nn.Conv2d(channels[i], channels[i + 1], 3, padding=1)
    layers[f"bn{i + 1}"] = nn.BatchNorm2d(channels[i + 1])
layers["dwconv"] = nn.Conv2d(512, 512, 3, groups=512)
layers["pwconv"] = nn.Conv2d(512, 512, 1)
layers["norm"] = nn.LayerNorm(512)
layers["fc1"] = nn.Linear(512 * 7 * 7, 1024)
layers["fc2"] = nn.Linear(1024, 1024)
layers["fc3"] = nn.Linear(1024, 1000)
model = nn.Sequential(layers)
values = sum(t.numel() for t in model.state_dict().values())
torch.save(model, sys.argv[1])
print(len(layers), values)
"""

# Run weightscope's command line from a given source tree (this checkout or the base commit's):
# the tree goes first on sys.path, so the current directory's package cannot shadow it.
RUN_FROM = r"""
import runpy, sys
sys.path.insert(0, sys.argv[1])
sys.argv = ["weightscope", *sys.argv[2:]]
runpy.run_module("weightscope", run_name="__main__", alter_sys=True)
"""

# The same page drawn by this process alone (what a notebook's report_html(model) does).
ONE_PROCESS = r"""
import sys
sys.path.insert(0, sys.argv[1])
import matplotlib
matplotlib.use("Agg")
import weightscope
from weightscope.reporters.html import report_html

with weightscope.load(sys.argv[2]) as model:
    page = report_html(model, processes=1)
with open(sys.argv[3], "w", encoding="utf-8") as out:
    out.write(page)
"""

# Check the page this checkout writes; count the init check's reads of each kernel.
CHECK = r"""
import base64, json, re, sys
sys.path.insert(0, sys.argv[1])
import matplotlib
matplotlib.use("Agg")
import weightscope
import weightscope.analysis.init as init
from weightscope.reporters.html import report_html

reads = []
read = init._read
def counting(tensor, limits):
    reads.append(tensor.name)
    return read(tensor, limits)
init._read = counting
with weightscope.load(sys.argv[2]) as model:
    page = report_html(model)
    kernels = [layer.name for layer in model.layers if init.kernel_tensor(layer) is not None]
    weighty = [layer.name for layer in model.layers if layer.tensors]
sections = re.findall(r'<section id="layer-\d+" class="layer"><h3>(.*?) <small', page)
images = re.findall(r'<img src="([^"]*)" alt="([^"]*)"', page)
pngs = all(base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n" for src, _ in images)
print(json.dumps({
    "sections": sections, "weight_layers": weighty, "figures": len(images), "pngs": pngs,
    "alts": [alt for _, alt in images], "external": bool(re.search(r"https?:", page)),
    "kernels": len(kernels), "reads": len(reads), "distinct_reads": len(set(reads)),
    "bytes": len(page.encode()),
}))
"""


@dataclass
class Timed:
    name: str
    command: list[str]
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)

    def median(self, values: list[float]) -> float:
        return statistics.median(values)


def run_once(runs: Timed) -> None:
    """Spawn, reap with wait4; record wall time, CPU time (user + sys) and peak RSS."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(runs.command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        if code != 0:
            err.seek(0)
            tail = err.read().decode(errors="replace")[-3000:]
            print(f"\n{runs.name} failed (exit {code}):\n{tail}", file=sys.stderr)
            sys.exit(2)
    runs.wall.append(wall)
    runs.cpu.append(usage.ru_utime + usage.ru_stime)
    runs.rss_kib.append(usage.ru_maxrss)


def generate(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"generating {path} (torch.nn, seed 0) ...", file=sys.stderr, flush=True)
    partial = path.with_suffix(".partial")
    result = subprocess.run(
        [sys.executable, "-c", GENERATE, str(partial)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        print(result.stderr[-3000:], file=sys.stderr)
        sys.exit(2)
    layers, values = map(int, result.stdout.split())
    if (layers, values) != (MODEL_LAYERS, MODEL_VALUES):
        print(f"built {layers} layers, {values:,} values: not the model", file=sys.stderr)
        sys.exit(2)
    partial.replace(path)


def export_base(tree: Path) -> None:
    """The package as of the base commit, without touching the repository's worktrees."""
    if (tree / "weightscope" / "__main__.py").exists():
        return
    tree.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "archive", BASE_COMMIT, "weightscope"], cwd=REPO, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed runs of this checkout")
    parser.add_argument("--base-reps", type=int, default=2, help="timed runs of the base commit")
    args = parser.parse_args()
    if args.reps < 1 or args.base_reps < 1:
        parser.error("reps must be >= 1")
    if not MODEL_FILE.exists():
        generate(MODEL_FILE)
    export_base(BASE_TREE)

    out = Path(tempfile.mkdtemp(prefix="ws-bench-report-"))
    current = Timed(
        "`weightscope report report25.pt -o report.html` (this checkout)",
        [sys.executable, "-c", RUN_FROM, str(REPO), "report", str(MODEL_FILE), "-o",
         str(out / "now.html")],
    )  # fmt: skip
    base = Timed(
        f"the same command at the base commit `{BASE_COMMIT}` (baseline)",
        [sys.executable, "-c", RUN_FROM, str(BASE_TREE), "report", str(MODEL_FILE), "-o",
         str(out / "base.html")],
    )  # fmt: skip
    alone = Timed(
        "`report_html(model, processes=1)`, this checkout in one process (information)",
        [sys.executable, "-c", ONE_PROCESS, str(REPO), str(MODEL_FILE), str(out / "one.html")],
    )
    inspect = Timed(
        "`weightscope inspect report25.pt` (this checkout; for scale)",
        [sys.executable, "-c", RUN_FROM, str(REPO), "inspect", str(MODEL_FILE)],
    )
    load_before = os.getloadavg()[0]
    warm_s = warm_page_cache(MODEL_FILE)
    for runs in (current, base, alone, inspect):  # untimed: .pyc, shared libraries, fonts
        run_once(runs)
        runs.wall.clear()
        runs.cpu.clear()
        runs.rss_kib.clear()
    for rep in range(max(args.reps, args.base_reps)):
        if rep < args.reps:
            run_once(current)
            run_once(alone)
            run_once(inspect)
        if rep < args.base_reps:
            run_once(base)
        print(".", end="", flush=True, file=sys.stderr)
    print(file=sys.stderr)
    load_after = os.getloadavg()[0]
    checked = subprocess.run(
        [sys.executable, "-c", CHECK, str(REPO), str(MODEL_FILE)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    if checked.returncode != 0:
        print(checked.stderr[-3000:], file=sys.stderr)
        return 2
    page = json.loads(checked.stdout.strip().splitlines()[-1])
    base_page = (out / "base.html").read_text(encoding="utf-8")
    same_page = (out / "now.html").read_bytes() == (out / "one.html").read_bytes()
    base_figures = base_page.count("<img ")

    size_mb = MODEL_FILE.stat().st_size / 1e6
    print(f"## weightscope report: {MODEL_LAYERS} layers, {size_mb:.0f} MB (PyTorch)\n")
    print_context(warm_s)
    print(
        f"- model: `{MODEL_FILE.name}`, a whole pickled `nn.Sequential`, {MODEL_LAYERS} "
        f"weight-bearing layers, {MODEL_VALUES:,} values ({MODEL_VALUES * 4 / 1e6:.0f} MB of "
        "float32)"
    )
    print(
        f"- {args.reps} timed runs of this checkout's contenders, {args.base_reps} of the base "
        "commit, interleaved; CPU = user + sys of the process (what it needed, whatever the load)"
    )
    print(f"- 1-minute load average {load_before:.2f} before, {load_after:.2f} after\n")
    print(
        "| contender | runs | wall median (s) | wall min..max (s) | CPU median (s) "
        "| peak RSS (MB) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for runs in (current, base, alone, inspect):
        print(
            f"| {runs.name} | {len(runs.wall)} | {statistics.median(runs.wall):.2f} | "
            f"{min(runs.wall):.2f}..{max(runs.wall):.2f} | {statistics.median(runs.cpu):.2f} | "
            f"{max(runs.rss_kib) * 1024 / 1e6:.0f} |"
        )
    wall = statistics.median(current.wall)
    speedup = statistics.median(base.wall) / wall
    cpu_speedup = statistics.median(base.cpu) / statistics.median(current.cpu)
    print(
        f"\nThis checkout against the base commit: {speedup:.1f}x less wall time, "
        f"{cpu_speedup:.1f}x less CPU; its page {page['bytes'] / 1e6:.1f} MB with "
        f"{page['figures']} figures (the base commit's: {base_figures}).\n"
    )
    every_layer = page["sections"] == page["weight_layers"] and len(page["sections"]) == 25
    print_goals(
        [
            (
                f"report of {MODEL_LAYERS} layers, {size_mb:.0f} MB <= {GOAL_WALL_S:.0f} s "
                "(whole process, median)",
                f"{wall:.2f} s (CPU {statistics.median(current.cpu):.2f} s)",
                wall <= GOAL_WALL_S,
            ),
            (
                "(check) a section for every weight-bearing layer, every figure a PNG, "
                "nothing from outside the page",
                f"{len(page['sections'])} of {len(page['weight_layers'])} layers, "
                f"{page['figures']} figures",
                every_layer and page["pngs"] and not page["external"],
            ),
            (
                "(check) the page drawn by two processes is the one process's, byte for byte",
                "same" if same_page else "different",
                same_page,
            ),
            (
                "(check) the init check reads each kernel once",
                f"{page['reads']} reads of {page['distinct_reads']} kernels "
                f"({page['kernels']} layers with one)",
                page["reads"] == page["distinct_reads"] == page["kernels"],
            ),
        ]
    )
    checks = every_layer and same_page and page["reads"] == page["kernels"]
    return 0 if wall <= GOAL_WALL_S and checks else 1


if __name__ == "__main__":
    sys.exit(main())
