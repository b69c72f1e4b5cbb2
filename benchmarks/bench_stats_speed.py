"""Benchmark the statistics of large float tensors against memory speed (issue 19, item 4).

The floor is a single-threaded numpy pass over the mapped file computing the sum and the sum of
squares of every float32 in it: ``np.memmap`` of each tensor's bytes (for a ``.safetensors`` file
the whole data region after the header, which holds nothing but the tensors; for a ``.pt`` each
storage member of the zip; for ONNX the whole external data file), walked in chunks of 2**20
elements, ``chunk.sum()`` and ``np.dot(chunk, chunk)`` on each (one pass over memory: the second
reads the chunk from cache), with ``OPENBLAS_NUM_THREADS=1``. Its peak RSS counts the mapped pages,
so it is as large as the file; it is a time to compare with, not a memory budget.

Files, generated once into ``benchmarks/.cache/`` (git-ignored) in child processes, of float32
tensors of 8192 x 8192 (256 MiB), normal values of a different scale and offset each:

* ``stats_speed_10g.safetensors``: 37 tensors, 9.9 GB, written with numpy (byte by byte to the
  format);
* ``stats_speed_5g.pt``: 19 tensors, 5.1 GB, written by ``torch.save`` (zip format) from tensors
  that map the first 19 of the safetensors file (no copy in memory);
* ``stats_speed_5g.onnx`` + ``stats_speed_5g.onnx.data``: 19 ``MatMul`` initializers, 5.1 GB of
  external data (the same bytes, copied), the model message written with onnx but no tensor
  data in it.

``--size GB`` scales them (the ``.pt`` and ONNX files are half of it) for a quick run.

Goals, for each file, measured in this one run with the page cache warm (``_measure.py``:
child processes, wall time spawn..reap, peak RSS and CPU time from ``os.wait4``, runs
interleaved):

* ``weightscope inspect FILE`` (statistics of every tensor, the table to /dev/null) takes at most
  1.5x the floor's wall time (medians);
* its peak RSS is at most 300 MB;
* it uses both cores: CPU time / wall time at least 1.3 (the interpreter's start, ~0.35 s, runs on
  one; the reduction on two).

``inspect --json`` is measured too, for information. The remote case (``remote`` in ``--only``)
is the ``.safetensors`` file served over loopback by ``bench_remote.py``'s server: ``weightscope
inspect URL`` (statistics streamed by ranges) against the floor on the file behind it, in the
same run; its goals are each byte transferred once (counted by the server, in a run of its own)
and peak RSS at most 300 MB, its wall time against the floor given for information.

The files need ``--size`` x 2 GB of disk (checked before anything is written).

    python benchmarks/bench_stats_speed.py [--reps 3] [--size 10] [--only safetensors,remote]

Exits 0 when every goal passes, 1 when one fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from _measure import CACHE, Runs, measure, print_context, print_goals, print_table

GOAL_VS_FLOOR = 1.5
GOAL_PEAK_RSS_MB = 300.0
GOAL_CORES = 1.3
ROWS = COLUMNS = 8192
TENSOR_BYTES = ROWS * COLUMNS * 4

WRITE_SAFETENSORS = r"""
import json, struct, sys
import numpy as np
path, count = sys.argv[1], int(sys.argv[2])
shape = [8192, 8192]
nbytes = shape[0] * shape[1] * 4
header = {f"blocks.{i}.weight": {"dtype": "F32", "shape": shape,
                                 "data_offsets": [i * nbytes, (i + 1) * nbytes]}
          for i in range(count)}
raw = json.dumps(header).encode()
raw += b" " * (-len(raw) % 8)
rng = np.random.default_rng(0)
noise = rng.standard_normal(shape[0] * shape[1], dtype=np.float32)
with open(path, "wb") as out:
    out.write(struct.pack("<Q", len(raw)) + raw)
    for i in range(count):
        scale, offset = rng.uniform(0.01, 0.1), rng.uniform(-0.01, 0.01)
        (noise * np.float32(scale) + np.float32(offset)).tofile(out)
"""

WRITE_TORCH = r"""
import json, struct, sys
import numpy as np, torch
source, path, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(source, "rb") as f:
    length = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(length))
# copy-on-write maps: torch wants writable arrays; nothing is written, so nothing is copied
data = np.memmap(source, dtype=np.float32, mode="c", offset=8 + length)
state = {}
for i in range(count):
    entry = header[f"blocks.{i}.weight"]
    start, end = (o // 4 for o in entry["data_offsets"])
    state[f"blocks.{i}.weight"] = torch.from_numpy(data[start:end]).view(*entry["shape"])
torch.save(state, path)
"""

WRITE_ONNX = r"""
import json, shutil, struct, sys
import onnx
from onnx import TensorProto, helper
source, path, count, data_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(source, "rb") as f:
    length = struct.unpack("<Q", f.read(8))[0]
shape = [8192, 8192]
nbytes = shape[0] * shape[1] * 4
data_name = data_path.rsplit("/", 1)[-1]
with open(source, "rb") as src, open(data_path, "wb") as out:
    src.seek(8 + length)
    left = count * nbytes
    while left:
        block = src.read(min(left, 64 << 20))
        out.write(block)
        left -= len(block)
initializers, nodes, previous = [], [], "x"
for i in range(count):
    tensor = TensorProto(name=f"blocks.{i}.weight", dims=shape, data_type=TensorProto.FLOAT)
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", data_name), ("offset", str(i * nbytes)),
                       ("length", str(nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    initializers.append(tensor)
    nodes.append(helper.make_node("MatMul", [previous, tensor.name], [f"h{i}"],
                                  name=f"/blocks.{i}/MatMul"))
    previous = f"h{i}"
graph = helper.make_graph(
    nodes, "stats_speed",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, shape[0]])],
    [helper.make_tensor_value_info(previous, TensorProto.FLOAT, [1, shape[1]])],
    initializers,
)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
with open(path, "wb") as out:
    out.write(model.SerializeToString())
"""

FLOOR = r"""
import json, struct, sys, zipfile
import numpy as np
kind, path = sys.argv[1], sys.argv[2]
regions = []  # (file, byte offset, bytes) of the float32 data
if kind == "safetensors":
    with open(path, "rb") as f:
        length = struct.unpack("<Q", f.read(8))[0]
    regions.append((path, 8 + length, None))
elif kind == "pt":
    with zipfile.ZipFile(path) as archive, open(path, "rb") as f:
        for info in archive.infolist():
            if "/data/" in info.filename:
                f.seek(info.header_offset + 26)
                name_len, extra_len = struct.unpack("<HH", f.read(4))
                regions.append((path, info.header_offset + 30 + name_len + extra_len,
                                info.file_size))
else:  # the external data file itself
    regions.append((path, 0, None))
total = squares = 0.0
count = 0
for name, offset, nbytes in regions:
    values = np.memmap(name, dtype=np.float32, mode="r", offset=offset,
                       shape=None if nbytes is None else (nbytes // 4,))
    for start in range(0, values.size, 1 << 20):
        chunk = values[start : start + (1 << 20)]
        total += float(chunk.sum())
        squares += float(np.dot(chunk, chunk))
    count += values.size
print(json.dumps({"elements": count, "sum": total, "sum_of_squares": squares}))
"""


@dataclass
class Case:
    """One file to reduce: ``target`` is what weightscope inspects, ``local`` the file the floor
    maps (and the page cache is warmed with), ``floor_kind`` how the floor finds its floats."""

    name: str
    target: str
    local: Path
    floor_kind: str
    package: str | None
    """The framework that writes it (the case is left out when it is missing)."""
    sent: Callable[[], int] | None = None
    """For a URL: the bytes its server has sent so far (the bytes one run transfers are
    counted around a run of their own, after the timed ones)."""


def tensor_count(gigabytes: float) -> int:
    return max(1, round(gigabytes * 1e9 / TENSOR_BYTES))


def generate(code: str, path: Path, *args: str) -> None:
    """Run ``code`` in a child to write ``path`` (through a partial name renamed when whole)."""
    if path.exists():
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"writing {path} ...", file=sys.stderr, flush=True)
    partial = path.with_name(path.name + ".partial")
    arguments = [str(partial) if a == "{out}" else a for a in args]
    subprocess.run([sys.executable, "-c", code, *arguments], check=True)
    partial.replace(path)


def build(size: float) -> list[Case]:
    big = tensor_count(size)
    half = tensor_count(size / 2)
    label = f"{size:g}g"
    half_label = f"{size / 2:g}g"
    safetensors = CACHE / f"stats_speed_{label}.safetensors"
    generate(WRITE_SAFETENSORS, safetensors, "{out}", str(big))
    cases = [Case("safetensors", str(safetensors), safetensors, "safetensors", None)]
    if importlib.util.find_spec("torch") is not None:
        pt = CACHE / f"stats_speed_{half_label}.pt"
        generate(WRITE_TORCH, pt, str(safetensors), "{out}", str(half))
        cases.append(Case("pt", str(pt), pt, "pt", "torch"))
    if importlib.util.find_spec("onnx") is not None:
        model = CACHE / f"stats_speed_{half_label}.onnx"
        # the data file is written first under its final name; the model, last, marks it whole
        generate(WRITE_ONNX, model, str(safetensors), "{out}", str(half), f"{model}.data")
        cases.append(Case("onnx", str(model), Path(str(model) + ".data"), "onnx", "onnx"))
    return cases


@contextlib.contextmanager
def remote_cases(local: list[Case]) -> Iterator[list[Case]]:
    """The remote case (issue 19, item 4: "a remote one over loopback"): the ``.safetensors``
    file of ``local`` served on 127.0.0.1 by ``bench_remote.py``'s server (``Range``,
    ``sendfile``, the bytes sent counted), one :class:`Case` whose ``target`` is its URL and whose
    ``local`` and ``floor_kind`` are the local case's (the floor maps the file behind the URL);
    the server stopped on exit. None when the safetensors case is not run."""
    from bench_remote import served

    source = next((case for case in local if case.name == "safetensors"), None)
    if source is None:
        yield []
        return
    with served(source.local) as server:
        yield [
            Case("safetensors by URL", server.url, source.local, "safetensors", None, server.sent)
        ]


def git_revision(tree: Path) -> str:
    """The short commit of ``tree`` if it is a git checkout, else ``tree``'s name."""
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True
    )
    return done.stdout.strip() or "not a git checkout"


def file_bytes(case: Case) -> int:
    return case.local.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each contender")
    parser.add_argument("--size", type=float, default=10.0, help="GB of the .safetensors file")
    parser.add_argument(
        "--only",
        default="safetensors,pt,onnx,remote",
        help="cases to run (remote: the .safetensors file by URL over loopback)",
    )
    parser.add_argument(
        "--compare",
        metavar="DIR",
        help="another weightscope source tree (a checkout of an older revision, say) whose "
        "inspect runs too, for information",
    )
    args = parser.parse_args()
    if args.reps < 1 or args.size <= 0:
        parser.error("--reps must be at least 1 and --size positive")

    # Children may write bytecode, as an installed package has it compiled (compiling
    # weightscope's modules at every start would cost each run a tenth of a second or more).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    wanted = set(args.only.split(","))
    check_disk(args.size)
    built = build(args.size)
    local = [case for case in built if case.name in wanted]
    if "remote" not in wanted:
        return run_cases(local, args)
    with remote_cases(built) as remote:
        return run_cases([*local, *remote], args)


def check_disk(size: float) -> None:
    """Stop, saying so, when the files to build do not fit on the disk of ``benchmarks/.cache``
    (the ``.safetensors`` file of ``size`` GB, the ``.pt`` and ONNX files of half of it each,
    with 1 GB to spare)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    label, half = f"{size:g}g", f"{size / 2:g}g"
    names = (f"stats_speed_{label}.safetensors", f"stats_speed_{half}.pt",
             f"stats_speed_{half}.onnx.data")  # fmt: skip
    wanted = {name: gb for name, gb in zip(names, (size, size / 2, size / 2), strict=True)}
    needed = sum(gb for name, gb in wanted.items() if not (CACHE / name).exists()) * 1e9
    free = shutil.disk_usage(CACHE).free
    if needed and free < needed + 1e9:
        raise SystemExit(
            f"{needed / 1e9:.1f} GB of files to write in {CACHE}, {free / 1e9:.1f} GB free: "
            "run with a smaller --size"
        )


def run_cases(cases: list[Case], args: argparse.Namespace) -> int:
    """Measure every case, print the tables and the goals; 0 when every goal passes."""
    weightscope = [sys.executable, "-m", "weightscope", "inspect"]
    goals: list[tuple[str, str, bool]] = []
    print("# Statistics at memory speed\n")
    for case in cases:
        floor = Runs(
            "floor: numpy sum + dot over the mapped floats, 1 thread",
            [sys.executable, "-c", FLOOR, case.floor_kind, str(case.local)],
        )
        floor.command = ["env", "OPENBLAS_NUM_THREADS=1", *floor.command]
        inspect = Runs("weightscope inspect", [*weightscope, case.target])
        as_json = Runs("weightscope inspect --json", [*weightscope, "--json", case.target])
        contenders = [floor, inspect, as_json]
        if args.compare:
            other = Path(args.compare).resolve()
            run_other = (
                f"import runpy, sys; sys.path.insert(0, {str(other)!r}); "
                "sys.argv = ['weightscope', *sys.argv[1:]]; "
                "runpy.run_module('weightscope', run_name='__main__')"
            )
            contenders.append(
                Runs(
                    f"weightscope inspect from {other.name} ({git_revision(other)})",
                    [sys.executable, "-c", run_other, "inspect", case.target],
                )
            )
        warm_s = measure(case.local, [(runs, args.reps) for runs in contenders])
        size = file_bytes(case)
        print(f"## {case.name}: {Path(case.target).name}, {size / 1e9:.2f} GB of float32\n")
        print_context(warm_s)
        print(f"- 1-minute load average after the runs: {os.getloadavg()[0]:.2f}")
        print()
        print_table(contenders)
        print()
        print("| contender | CPU median (s) | CPU / wall, median | min..max | GB/s (file / wall) |")
        print("|---|---:|---:|---:|---:|")
        for runs in contenders:
            cpu = statistics.median(runs.cpu)
            used = [c / w for c, w in zip(runs.cpu, runs.wall, strict=True)]
            print(
                f"| {runs.name} | {cpu:.2f} | {statistics.median(used):.2f} | "
                f"{min(used):.2f}..{max(used):.2f} | {size / 1e9 / runs.wall_median:.1f} |"
            )
        print()
        ratio = inspect.wall_median / floor.wall_median
        cores = statistics.median(c / w for c, w in zip(inspect.cpu, inspect.wall, strict=True))
        if case.sent is not None:  # by URL: the bytes one run transfers, and goals of its own
            before = case.sent()
            subprocess.run([*weightscope, case.target], check=True, stdout=subprocess.DEVNULL)
            transferred = case.sent() - before
            print(
                f"- bytes transferred by one `weightscope inspect URL`: {transferred:,} "
                f"({transferred / size:.3f} of the file)"
            )
            print(
                f"- wall time against the floor on the local file: {ratio:.2f}x "
                f"(information: the goal of {GOAL_VS_FLOOR}x is the local files')\n"
            )
            goals += [
                (f"{case.name}: each byte transferred once", f"{transferred / size:.3f}",
                 size * 0.99 <= transferred <= size + 64),  # the first 64 bytes twice
                (f"{case.name}: peak RSS <= {GOAL_PEAK_RSS_MB:.0f} MB",
                 f"{inspect.peak_rss_mb:.0f} MB", inspect.peak_rss_mb <= GOAL_PEAK_RSS_MB),
            ]  # fmt: skip
            continue
        goals += [
            (f"{case.name}: wall <= {GOAL_VS_FLOOR}x floor", f"{ratio:.2f}x",
             ratio <= GOAL_VS_FLOOR),
            (f"{case.name}: peak RSS <= {GOAL_PEAK_RSS_MB:.0f} MB", f"{inspect.peak_rss_mb:.0f} MB",
             inspect.peak_rss_mb <= GOAL_PEAK_RSS_MB),
            (f"{case.name}: CPU / wall >= {GOAL_CORES}", f"{cores:.2f}", cores >= GOAL_CORES),
        ]  # fmt: skip
    print("## Goals\n")
    print_goals(goals)
    return 0 if all(ok for *_, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
