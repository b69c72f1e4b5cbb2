"""Benchmark ``weightscope scan`` on a generated zoo of 200+ small and medium models in every
format weightscope reads (see ``make_zoo.py``).

Goals (from the issue), measured in this one run on this machine:

* files per second with ``--jobs 2`` at least 1.6x that with ``--jobs 1``;
* through a 2-worker ``dask.distributed.LocalCluster``, at least 0.8x the files per second of
  ``--jobs 2`` (both timed while the cluster is up; the cluster is started before the timed runs,
  as an existing cluster would be, and its start-up time is printed apart);
* a re-run with nothing changed (every file's size, mtime and SHA-256 checked) takes at most 5%
  of the first run's wall time (the first run: ``--jobs 2``, the default on 2 cores).

Every scan runs as a child process (``python -m weightscope scan ZOO -o OUT --quiet``), timed from
spawn to exit, interleaved with its rivals, after one untimed run of each. The zoo is generated
once (seeded, in a child process that imports torch and Keras) into ``benchmarks/.cache/zoo``.

    python benchmarks/bench_scan_zoo.py [--reps 3]

Exits 0 when every goal passes, 1 when one fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _measure import (
    CACHE,
    HERE,
    Runs,
    measure,
    print_context,
    print_goals,
    print_table,
    run_once,
)

ZOO = CACHE / "zoo"
OUT = CACHE / "scan-out"

FLAG_OF_PROBLEM = {
    "nan": "nan_inf",
    "dead_filters": "dead_filters",
    "duplicate_filter": "duplicate_filters",
    "large_norm": "large_norm",
}
"""The health flag each problem ``make_zoo.py`` injects must raise."""

GOAL_SCALING = 1.6
GOAL_DASK = 0.8
GOAL_RERUN = 0.05


def scan_command(output: Path) -> list[str]:
    return [sys.executable, "-m", "weightscope", "scan", str(ZOO), "-o", str(output), "--quiet"]


def scan_runs(name: str, output: Path, *options: str) -> Runs:
    return Runs(name, [*scan_command(output), *options])


def manifest() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((ZOO / "zoo.json").read_text())["files"]
    return entries


def files_to_scan() -> int:
    """Models and damaged model files (the READMEs and configs are passed over)."""
    return sum(entry["kind"] in ("model", "damaged") for entry in manifest())


def detection(table: Path) -> tuple[int, int, list[str]]:
    """Check the table's flags against what ``make_zoo.py`` built: each injected problem
    flagged in its layer, every kernel of an untouched model ``at_init``, and no flag at all
    on the models it perturbed as if trained. Returns (models checked, agreeing, mismatches)."""
    import pyarrow.parquet as pq

    rows = pq.ParquetFile(table).read().to_pylist()
    layers: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if row["record"] == "layer":
            layers.setdefault(row["path"], []).append(row)
    checked, mismatches = 0, []
    for entry in manifest():
        if entry["kind"] != "model":
            continue
        checked += 1
        found = layers.get(str((ZOO / entry["path"]).resolve()), [])
        flagged = {
            (row["layer"], flag)
            for row in found
            for flag in (row["flags"] or "").split(",")
            if flag
        }
        if entry["state"] == "problem":
            expected = {(p["layer"], FLAG_OF_PROBLEM[p["type"]]) for p in entry["problems"]}
            ok = expected <= flagged and all(flag != "at_init" for _, flag in flagged)
        elif entry["state"] == "init":
            kernels = [row for row in found if row["init_verdict"] is not None]
            ok = bool(kernels) and all(row["init_verdict"] == "at_init" for row in kernels)
        else:
            ok = not flagged
        if not ok:
            mismatches.append(f"{entry['path']} ({entry['state']}): flagged {sorted(flagged)}")
    return checked, checked - len(mismatches), mismatches


def summary_of(output: Path, *options: str) -> dict:
    done = subprocess.run(
        [*scan_command(output), *options, "--json"], capture_output=True, text=True, check=True
    )
    result: dict = json.loads(done.stdout)
    return result


def rate(runs: Runs, files: int) -> float:
    return files / runs.wall_median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    CACHE.mkdir(exist_ok=True)
    OUT.mkdir(exist_ok=True)
    started = time.perf_counter()
    zoo_maker = [sys.executable, str(HERE / "make_zoo.py"), str(ZOO)]
    subprocess.run(zoo_maker, check=True, stdout=sys.stderr)  # stdout is the Markdown report
    print(f"zoo ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    files = files_to_scan()
    in_table = summary_of(OUT / "check.parquet", "--force")["files"]
    checked, agreeing, mismatches = detection(OUT / "check.parquet")
    size_mb = sum(p.stat().st_size for p in ZOO.rglob("*") if p.is_file()) / 1e6

    # Phase 1: local workers, and the re-run of an unchanged zoo.
    jobs1 = scan_runs("scan --jobs 1", OUT / "jobs1.parquet", "--jobs", "1", "--force")
    jobs2 = scan_runs("scan --jobs 2", OUT / "jobs2.parquet", "--jobs", "2", "--force")
    first = scan_runs("scan --jobs 2, first run", OUT / "resume.parquet", "--jobs", "2")
    rerun = scan_runs("scan --jobs 2, re-run, nothing changed", OUT / "resume.parquet")
    warm_s = measure(ZOO / "zoo.json", [(jobs1, args.reps), (jobs2, args.reps)])
    for _ in range(args.reps):  # each pair: a fresh table, then a re-run over it
        (OUT / "resume.parquet").unlink(missing_ok=True)
        run_once(first)
        run_once(rerun)
    resumed = summary_of(OUT / "resume.parquet")

    # Phase 2: a 2-worker LocalCluster, up before the timed runs, against --jobs 2 again.
    from distributed import LocalCluster

    cluster_start = time.perf_counter()
    cluster = LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    cluster_s = time.perf_counter() - cluster_start
    with cluster:
        dask = scan_runs(
            "scan --dask (2-worker LocalCluster)",
            OUT / "dask.parquet",
            "--dask",
            cluster.scheduler_address,
            "--force",
        )
        jobs2_b = scan_runs(
            "scan --jobs 2 (cluster up, idle)", OUT / "jobs2b.parquet", "--jobs", "2", "--force"
        )
        measure(ZOO / "zoo.json", [(jobs2_b, args.reps), (dask, args.reps)])

    print("## `weightscope scan` on a generated zoo\n")
    print_context(warm_s)
    print(
        f"- zoo: {files} files ({size_mb:.0f} MB) from `make_zoo.py`; the table holds "
        f"{in_table} model rows"
    )
    print(f"- LocalCluster start-up (not in the timings): {cluster_s:.2f} s\n")
    print_table([jobs1, jobs2, first, rerun, jobs2_b, dask])
    print()
    print("| contender | files/s |")
    print("|---|---:|")
    for runs in (jobs1, jobs2, jobs2_b, dask):
        print(f"| {runs.name} | {rate(runs, files):.2f} |")
    print()
    scaling = jobs1.wall_median / jobs2.wall_median
    dask_ratio = jobs2_b.wall_median / dask.wall_median
    rerun_ratio = rerun.wall_median / first.wall_median
    goals = [
        (f"--jobs 2 over --jobs 1 >= {GOAL_SCALING}x", f"{scaling:.2f}x", scaling >= GOAL_SCALING),
        (
            f"Dask 2 workers over --jobs 2 >= {GOAL_DASK}x",
            f"{dask_ratio:.2f}x",
            dask_ratio >= GOAL_DASK,
        ),
        (
            f"re-run, nothing changed <= {GOAL_RERUN:.0%} of the first run",
            f"{rerun_ratio:.1%} ({rerun.wall_median:.2f} s of {first.wall_median:.2f} s; "
            f"{resumed['scanned']} files read, {resumed['reused']} kept)",
            rerun_ratio <= GOAL_RERUN and resumed["scanned"] == 0,
        ),
        ("every file in the table", f"{in_table} of {files}", in_table == files),
        (
            "flags agree with the problems built into the zoo",
            f"{agreeing} of {checked} models",
            agreeing == checked,
        ),
    ]
    for line in mismatches:
        print(f"- mismatch: {line}")
    print_goals(goals)
    return 0 if all(ok for _, _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
