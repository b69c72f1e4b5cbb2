"""Benchmark ``weightscope inspect`` of a ``.safetensors`` file by URL over loopback (issue 19,
item 3: statistics streamed with read-ahead in bounded memory), against the same file read
locally and against downloading it first.

One file, built into ``benchmarks/.cache/``: 8 float32 tensors of 16 Mi random normal values
(512 MiB). It is served on 127.0.0.1 by aiohttp's ``web.FileResponse`` (which honours ``Range``
and sends with ``sendfile``) in a child process started here (:func:`served`, which
``bench_stats_speed.py`` uses too; it counts the bytes it sends).

Contenders, each a child process, page cache warm (measurement as ``_measure.py``):

* ``weightscope inspect URL`` (statistics: each tensor in 16 MiB ranges, one ahead);
* ``weightscope inspect URL --no-stats`` (the header alone);
* ``weightscope inspect FILE``, the same file locally;
* baseline: download the file with fsspec to a temporary file, then
  ``safetensors.numpy.load_file`` and mean/std of each tensor.

Goals: statistics by URL at <= 300 MB peak RSS and faster than the download-then-load baseline;
``--no-stats`` by URL at <= 2 s.

    python benchmarks/bench_remote.py [--reps 3]

Exits 0 when every goal passes, 1 when one fails, 2 when a contender crashes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _measure import CACHE, Runs, measure, print_context, print_goals, print_table

TENSORS = 8
ELEMENTS = 16 << 20
GOAL_PEAK_RSS_MB = 300
GOAL_NO_STATS_S = 2.0

SERVER = r"""
import sys
from aiohttp import web
path, port = sys.argv[1], int(sys.argv[2])
sent = 0

async def serve(request):
    return web.FileResponse(path)

async def count(request, response):
    global sent
    if request.method == "GET" and request.path == "/model.safetensors":
        sent += response.content_length or 0

async def report(request):
    return web.Response(text=str(sent))

app = web.Application()
app.on_response_prepare.append(count)
app.router.add_get("/model.safetensors", serve)
app.router.add_get("/sent", report)
web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)
"""
"""Serves ``argv[1]`` as ``/model.safetensors`` on 127.0.0.1 port ``argv[2]``; ``/sent`` gives
the bytes of the file's answers so far (each answer's length: the ranges asked, or the file)."""


@dataclass
class Server:
    url: str
    """The file's URL."""
    port: int

    def sent(self) -> int:
        """Bytes of the file sent so far."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/sent") as answer:
            return int(answer.read())


@contextlib.contextmanager
def served(path: Path) -> Iterator[Server]:
    """``path`` served over loopback by a child process (aiohttp's ``web.FileResponse``, which
    honours ``Range`` and sends with ``sendfile``) until the block ends."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(path), str(port)])
    try:
        wait_for(port)
        yield Server(f"http://127.0.0.1:{port}/model.safetensors", port)
    finally:
        server.terminate()
        server.wait()


BASELINE = r"""
import os, sys, tempfile
import fsspec
from safetensors.numpy import load_file
with tempfile.TemporaryDirectory() as folder:
    local = os.path.join(folder, "model.safetensors")
    fsspec.filesystem("http").get_file(sys.argv[1], local)
    for value in load_file(local).values():
        value.mean(), value.std()
"""


def build() -> Path:
    path = CACHE / f"remote_{TENSORS}x{ELEMENTS}.safetensors"
    if not path.exists():
        from safetensors.numpy import save_file

        CACHE.mkdir(parents=True, exist_ok=True)
        print(f"writing {path} ...", file=sys.stderr, flush=True)
        rng = np.random.default_rng(0)
        tensors = {
            f"layers.{i}.weight": rng.standard_normal((ELEMENTS // 4096, 4096), np.float32)
            for i in range(TENSORS)
        }
        partial = path.with_name(path.name + ".partial")
        save_file(tensors, str(partial))
        partial.replace(path)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(port: int, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit("the loopback server did not start")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="timed runs of each contender")
    args = parser.parse_args()
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    path = build()
    with served(path) as server:
        url = server.url
        weightscope = [sys.executable, "-m", "weightscope", "inspect"]
        contenders = [
            Runs("weightscope inspect URL", [*weightscope, url]),
            Runs("weightscope inspect URL --no-stats", [*weightscope, url, "--no-stats"]),
            Runs("weightscope inspect FILE (local)", [*weightscope, str(path)]),
            Runs("download (fsspec) + safetensors.numpy.load_file + mean/std",
                 [sys.executable, "-c", BASELINE, url]),
        ]  # fmt: skip
        warm_s = measure(path, [(runs, args.reps) for runs in contenders])
    remote, no_stats, _, baseline = contenders
    print(f"# weightscope inspect by URL over loopback: {path.stat().st_size / 1e6:.0f} MB\n")
    print_context(warm_s)
    print()
    print_table(contenders)
    print()
    goals = [
        ("statistics by URL: peak RSS <= 300 MB", f"{remote.peak_rss_mb:.0f} MB",
         remote.peak_rss_mb <= GOAL_PEAK_RSS_MB),
        ("statistics by URL faster than download + load",
         f"{remote.wall_median / baseline.wall_median:.2f}x",
         remote.wall_median < baseline.wall_median),
        ("--no-stats by URL: wall <= 2 s", f"{no_stats.wall_median:.2f} s",
         no_stats.wall_median <= GOAL_NO_STATS_S),
    ]  # fmt: skip
    print("## Goals\n")
    print_goals(goals)
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")
    return 0 if all(ok for *_, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
