"""Benchmark ``weightscope inspect`` on files of 200,000 tiny tensors (issue 14, item 11: it took
245-300 s and 1.5-1.7 GB, ``--json`` 42-62 s).

Two files, built without torch by ``tests/many_tensor_files.py`` into ``benchmarks/.cache/``: a
safetensors file and a PyTorch zip state dict (one storage member per tensor, as ``torch.save``
writes it), each of 200,000 tensors of 4 x 5 float32.

Goals, for each file and each of ``inspect``, ``inspect --no-stats``, ``inspect --json`` and
``inspect --json --no-stats`` (measured in this one run, page cache warm):

* wall time at most 10 s;
* peak resident memory at most 1 GiB.

Named baselines, for scale: the framework's own reader of the same file in a process
(``torch.load(FILE, weights_only=True)``, ``safetensors.numpy.load_file(FILE)``, imports
included); a baseline whose package is missing is left out. Measurement as in the other
benchmarks (``_measure.py``): child processes, wall time spawn..reap, peak RSS from ``os.wait4``.

    python benchmarks/bench_many_tensors.py [--reps 3]

Exits 0 when every goal passes, 1 when one fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path

from _measure import CACHE, REPO, Runs, measure, print_context, print_goals, print_table

sys.path.insert(0, str(REPO / "tests"))
from many_tensor_files import TENSORS, write_safetensors, write_torch_zip

GOAL_WALL_S = 10.0
GOAL_PEAK_RSS_MB = (1 << 30) / 1e6
COMMANDS = [(), ("--no-stats",), ("--json",), ("--json", "--no-stats")]

BASELINES = {
    "safetensors": (
        "safetensors",
        "safetensors.numpy.load_file",
        "import sys\nfrom safetensors.numpy import load_file\nload_file(sys.argv[1])",
    ),
    "pytorch": (
        "torch",
        "torch.load(weights_only=True)",
        "import sys, torch\ntorch.load(sys.argv[1], weights_only=True)",
    ),
}


def build(kind: str) -> Path:
    """The cached file of ``kind`` (written once, renamed into place when whole)."""
    path = CACHE / f"many_tensors_{TENSORS}.{'pt' if kind == 'pytorch' else kind}"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        print(f"writing {path} ...", file=sys.stderr, flush=True)
        writer = write_torch_zip if kind == "pytorch" else write_safetensors
        writer(partial, TENSORS)
        partial.replace(path)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each contender")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")

    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    goals: list[tuple[str, str, bool]] = []
    print("# weightscope inspect on 200,000 tiny tensors\n")
    for kind in ("safetensors", "pytorch"):
        path = build(kind)
        contenders = [
            Runs(
                " ".join(["weightscope inspect", *extra]),
                [sys.executable, "-m", "weightscope", "inspect", str(path), *extra],
            )
            for extra in COMMANDS
        ]
        package, label, code = BASELINES[kind]
        if importlib.util.find_spec(package) is not None:
            contenders.append(Runs(label, [sys.executable, "-c", code, str(path)]))
        warm_s = measure(path, [(runs, args.reps) for runs in contenders])
        print(f"## {kind}: {path.name}, {path.stat().st_size / 1e6:.0f} MB\n")
        print_context(warm_s)
        print()
        print_table(contenders)
        print()
        for runs in contenders[: len(COMMANDS)]:
            name = f"{kind}: {runs.name}"
            goals.append(
                (f"{name}: wall <= {GOAL_WALL_S:.0f} s", f"{runs.wall_median:.2f} s",
                 runs.wall_median <= GOAL_WALL_S)
            )  # fmt: skip
            goals.append(
                (f"{name}: peak RSS <= 1 GiB", f"{runs.peak_rss_mb:.0f} MB",
                 runs.peak_rss_mb <= GOAL_PEAK_RSS_MB)
            )  # fmt: skip
    print("## Goals\n")
    print_goals(goals)
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")
    return 0 if all(ok for *_, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
