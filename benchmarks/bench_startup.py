"""Benchmark what the command line costs before any work: ``weightscope inspect`` on the bundled
example model as ONNX against the same model as PyTorch, refusing a file of no known format, and
``--help``.

Goals (issue 16, "No onnx import on the reading path"), all measured in this one run:

* ``weightscope inspect digits_cnn.onnx`` within 1.3x the wall time of ``weightscope inspect
  digits_cnn.pt`` (both bundled in ``weightscope/examples/``; medians);
* an unrecognised file (a text file) refused in under 0.3 s (median, exit status 2);
* nothing heavy imported: in a fresh interpreter, after ``inspect`` of the ``.onnx``, after the
  refusal, and after ``--help`` of every command, none of onnx, google.protobuf, ml_dtypes, torch,
  tensorflow, keras, jax, onnxruntime, nor (refusal and help) matplotlib, h5py, pandas, pyarrow,
  dask, ipywidgets, scipy is in ``sys.modules``.

Measurement as in the other benchmarks (see ``_measure.py``): every contender is a child process,
wall time spawn..reap, one untimed run each, then ``--reps`` runs interleaved. The table also
gives each child's CPU time (user + system, from ``wait4``), which other load on the machine
disturbs less than wall time, and, for context, times the bare interpreter (``python -c pass``),
``python -m weightscope --help`` and ``import onnx`` alone (what reading ONNX cost when it went
through onnx's protobuf classes). Children may write bytecode (``PYTHONDONTWRITEBYTECODE`` is
removed from their environment), so that, as in an installed package, modules are compiled once,
in the untimed run, rather than on every start. The ONNX/PyTorch ratio is given as the ratio of
medians (the goal) and as the median of the ratios within each round, which other load disturbs
less.

    python benchmarks/bench_startup.py [--reps 15]

Exits 0 when every goal passes, 1 when one fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys

from _measure import (
    CACHE,
    REPO,
    Runs,
    measure,
    print_context,
    print_goals,
)

EXAMPLES = REPO / "weightscope" / "examples"
ONNX_FILE = EXAMPLES / "digits_cnn.onnx"
TORCH_FILE = EXAMPLES / "digits_cnn.pt"
TEXT_FILE = CACHE / "not_a_model.txt"

GOAL_ONNX_VS_TORCH = 1.3
GOAL_REFUSE_S = 0.3

FORBIDDEN = ("onnx", "google.protobuf", "ml_dtypes", "torch", "tensorflow", "keras", "tf_keras",
             "jax", "onnxruntime")  # fmt: skip
HEAVY = (*FORBIDDEN, "matplotlib", "h5py", "pandas", "pyarrow", "dask", "distributed",
         "ipywidgets", "scipy")  # fmt: skip

# In a fresh interpreter: run the command line in-process, then list what it imported.
IMPORT_CHECK = r"""
import json, sys
from weightscope.cli.app import main
from weightscope.cli.options import COMMANDS
what, names = sys.argv[1], sys.argv[2].split(",")
if what == "help":
    for command in [[], *([name] for name in COMMANDS)]:
        try:
            main([*command, "--help"])
        except SystemExit:
            pass
    code = 0
else:
    code = main(["inspect", what])
loaded = sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))
print(json.dumps({"exit": code, "loaded": loaded}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=15, help="timed runs of each contender")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    CACHE.mkdir(parents=True, exist_ok=True)
    TEXT_FILE.write_text("These are notes about a model, not a model.\n" * 40)
    no_bytecode = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    def weightscope(name: str, *argv: str, expected_exit: int = 0) -> Runs:
        command = [sys.executable, "-m", "weightscope", *argv]
        return Runs(name, command, expected_exit=expected_exit)

    bare = Runs("python -c pass (the interpreter alone)", [sys.executable, "-c", "pass"])
    onnx_import = Runs(
        "python -c 'import onnx' (information)", [sys.executable, "-c", "import onnx"]
    )
    helps = weightscope("weightscope --help", "--help")
    refuse = weightscope(
        "weightscope inspect not_a_model.txt", "inspect", str(TEXT_FILE), expected_exit=2
    )
    torch = weightscope("weightscope inspect digits_cnn.pt", "inspect", str(TORCH_FILE))
    onnx = weightscope("weightscope inspect digits_cnn.onnx", "inspect", str(ONNX_FILE))
    contenders = [bare, helps, refuse, torch, onnx]
    if importlib.util.find_spec("onnx") is not None:  # installed for the tests, not needed
        contenders.append(onnx_import)

    load_before = os.getloadavg()[0]
    warm_s = measure(ONNX_FILE, [(runs, args.reps) for runs in contenders])
    load_after = os.getloadavg()[0]

    checks = {}
    for label, what, names in (
        ("inspect digits_cnn.onnx", str(ONNX_FILE), FORBIDDEN),
        ("refusing not_a_model.txt", str(TEXT_FILE), HEAVY),
        ("--help of every command", "help", HEAVY),
    ):
        result = subprocess.run(
            [sys.executable, "-c", IMPORT_CHECK, what, ",".join(names)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        lines = result.stdout.strip().splitlines()
        if not lines:
            print(f"import check {label} failed:\n{result.stderr[-3000:]}", file=sys.stderr)
            return 2
        checks[label] = json.loads(lines[-1])

    ratio = onnx.wall_median / torch.wall_median
    paired = statistics.median(o / t for o, t in zip(onnx.wall, torch.wall, strict=True))
    results = [
        (
            f"inspect digits_cnn.onnx <= {GOAL_ONNX_VS_TORCH}x inspect digits_cnn.pt (medians)",
            f"{ratio:.2f}x (median of per-round ratios {paired:.2f}x)",
            ratio <= GOAL_ONNX_VS_TORCH,
        ),
        (
            f"a text file refused in < {GOAL_REFUSE_S} s (median)",
            f"{refuse.wall_median:.3f} s",
            refuse.wall_median < GOAL_REFUSE_S,
        ),
    ]
    for label, check in checks.items():
        loaded = check["loaded"]
        results.append(
            (
                f"{label}: nothing heavy imported",
                "imported: " + (", ".join(loaded[:4]) if loaded else "none"),
                not loaded,
            )
        )

    print("## weightscope start-up: the bundled example as ONNX and PyTorch, a refusal, --help\n")
    print_context(warm_s)
    print(
        f"- {args.reps} timed runs of each contender, interleaved; "
        f"1-minute load average {load_before:.2f} before, {load_after:.2f} after"
    )
    found = f"found set to {no_bytecode!r}, removed" if no_bytecode is not None else "not set"
    print(f"- bytecode written and reused (PYTHONDONTWRITEBYTECODE {found})")
    print()
    print("| contender | runs | wall median (s) | wall min..max (s) | CPU median (s) ", end="")
    print("| peak RSS (MB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for runs in contenders:
        print(
            f"| {runs.name} | {len(runs.wall)} | {runs.wall_median:.3f} | "
            f"{min(runs.wall):.3f}..{max(runs.wall):.3f} | {statistics.median(runs.cpu):.3f} | "
            f"{runs.peak_rss_mb:.0f} |"
        )
    print()
    print(
        f"over the bare interpreter ({bare.wall_median:.3f} s): inspect .onnx "
        f"+{onnx.wall_median - bare.wall_median:.3f} s, inspect .pt "
        f"+{torch.wall_median - bare.wall_median:.3f} s, refusal "
        f"+{refuse.wall_median - bare.wall_median:.3f} s"
    )
    print()
    print_goals(results)
    return 0 if all(ok for *_, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
