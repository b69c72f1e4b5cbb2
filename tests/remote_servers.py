"""Servers the remote tests start on loopback, and the files they serve: an HTTP server that
honours ``Range``, counts the bytes it sends and answers the Hub's API calls (for ``hf://``),
with switches to misbehave; moto's S3 server; and a proxy in front of it that counts what S3
sends and misbehaves as the HTTP server does. The fixtures ``http`` and ``s3`` (conftest.py)
start them."""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import threading
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import weightscope
from weightscope.cli.app import main


class _Loopback(ThreadingHTTPServer):
    """A threaded HTTP server on 127.0.0.1 that keeps quiet about clients hanging up."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client hanging up on a body it did not ask for

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass


class Counting(_Loopback):
    """Serves ``files`` (name -> local path); counts body bytes sent and remembers each Range
    asked. ``mode``: ``ok``, ``ignore-range`` (200 and the whole body), ``truncate`` (half the
    range, then the connection closed), ``no-length`` (no size in HEAD nor GET), ``forbidden``
    (403 to everything), ``long-body`` (206 without a length, then the file to its end)."""

    def __init__(self, files: dict[str, Path]) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files = files
        self.sent = 0
        self.ranges: list[tuple[int, int]] = []
        self.mode = "ok"
        self.lock = threading.Lock()


class Handler(_QuietHandler):
    server: Counting

    def _target(self) -> Path | None:
        if self.server.mode == "forbidden":
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        # the Hub's file URLs, /{org}/{repo}/resolve/{revision}/{path}, serve the same files
        name = re.sub(r"^/[^/]+/[^/]+/resolve/[^/]+/", "/", self.path).lstrip("/")
        path = self.server.files.get(name)
        if path is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
        return path

    def do_HEAD(self) -> None:
        path = self._target()
        if path is None:
            return
        self.send_response(200)
        if self.server.mode != "no-length":
            self.send_header("Content-Length", str(path.stat().st_size))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def _json(self, value: object) -> None:
        raw = json.dumps(value).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _hub_api(self) -> bool:
        """The two Hub API calls HfFileSystem makes before reading a file: the repository
        (``/api/models/{repo}``) and a folder's listing (``.../tree/{revision}``)."""
        files = self.server.files
        if re.fullmatch(r"/api/models/[^/]+/[^/]+(/revision/[^/?]+)?(\?.*)?", self.path):
            repo = "/".join(self.path.split("?")[0].split("/")[3:5])
            siblings = [{"rfilename": name} for name in files]
            self._json({"id": repo, "sha": "a" * 40, "siblings": siblings})
            return True
        if re.fullmatch(r"/api/models/[^/]+/[^/]+/tree/[^?]+(\?.*)?", self.path):
            self._json(
                [
                    {"type": "file", "path": name, "size": path.stat().st_size, "oid": "b" * 40}
                    for name, path in files.items()
                ]
            )
            return True
        return False

    def do_GET(self) -> None:
        if self.path.startswith("/api/") and self._hub_api():
            return
        path = self._target()
        if path is None:
            return
        size = path.stat().st_size
        mode = self.server.mode
        asked = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = 0, size - 1
        if asked and mode != "ignore-range":
            start = int(asked.group(1))
            end = min(int(asked.group(2) or size - 1), size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        with self.server.lock:
            self.server.ranges.append((start, end + 1 - start))
        length = end + 1 - start
        if mode not in ("no-length", "long-body"):
            self.send_header("Content-Length", str(length))
        else:  # the body ends when the connection does
            self.send_header("Connection", "close")
        self.end_headers()
        if mode == "truncate":
            length //= 2
            self.close_connection = True
        if mode == "long-body":  # 206 and the asked range, then the rest of the file unasked
            length = size - start
            self.close_connection = True
        with open(path, "rb") as handle:
            handle.seek(start)
            while length > 0:
                piece = handle.read(min(length, 1 << 20))
                with self.server.lock:  # counted before it goes: never under what was sent
                    self.server.sent += len(piece)
                try:
                    self.wfile.write(piece)
                except OSError:  # the client hung up (as it should on a body it did not ask)
                    return
                length -= len(piece)


@contextlib.contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[None]:
    """``server`` answering on a thread until the block ends."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def moto_s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on loopback, with fake credentials; its endpoint URL."""
    pytest.importorskip("s3fs")
    moto_server = pytest.importorskip("moto.server")
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto keeps its buckets in the process, from one server to the next: each test starts empty
    reset = urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=30).close()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


class CountingProxy(_Loopback):
    """Forwards every request to ``target`` (moto's S3 server) and counts the body bytes it
    sends back. ``mode``: ``ok``; ``ignore-range`` (the ``Range`` of a GET dropped: S3 answers
    200 and the whole object); ``long-body`` (the ``Range`` dropped, the answer a 206 for the
    range asked, no length, then the object to its end)."""

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), ProxyHandler)
        found = re.fullmatch(r"http://([^:/]+):(\d+)", target)
        assert found is not None, target
        self.target = (found.group(1), int(found.group(2)))
        self.sent = 0
        self.ranges: list[str] = []
        self.mode = "ok"
        self.lock = threading.Lock()


class ProxyHandler(_QuietHandler):
    server: CountingProxy

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        skip = {"host", "connection", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        asked = re.fullmatch(r"bytes=(\d+)-(\d+)", self.headers.get("Range", ""))
        mode = self.server.mode
        if asked is not None:
            with self.server.lock:
                self.server.ranges.append(asked.group(0))
            if mode != "ok" and self.command == "GET":
                headers = {k: v for k, v in headers.items() if k.lower() != "range"}
        connection = http.client.HTTPConnection(*self.server.target, timeout=60)
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            answer = connection.getresponse()
            status = answer.status
            out = [(k, v) for k, v in answer.getheaders() if k.lower() not in ("connection",)]
            endless = answer.getheader("Content-Length") is None
            if mode == "long-body" and asked is not None and status == 200:
                status, endless = 206, True
                out = [(k, v) for k, v in out if k.lower() != "content-length"]
                size = answer.getheader("Content-Length", "*")
                out.append(("Content-Range", f"bytes {asked.group(1)}-{asked.group(2)}/{size}"))
            out = [(k, v) for k, v in out if k.lower() != "transfer-encoding"]
            self.send_response(status)
            for key, value in out:
                self.send_header(key, value)
            if endless:  # the body ends when the connection does
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            if self.command == "HEAD":
                return
            while piece := answer.read(1 << 20):
                with self.server.lock:  # counted before it goes: never under what was sent
                    self.server.sent += len(piece)
                try:
                    self.wfile.write(piece)
                except OSError:  # the client hung up
                    self.close_connection = True
                    return
        finally:
            connection.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


def safetensors_file(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors, str(path))
    return path


def small_model(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    return safetensors_file(
        tmp_path / "small.safetensors",
        {
            "conv1.weight": rng.normal(size=(16, 3, 3, 3)).astype(np.float32),
            "conv1.bias": rng.normal(size=16).astype(np.float32),
            "fc.weight": rng.normal(size=(300, 256)).astype(np.float32),
            "fc.bias": np.zeros(300, np.float16),
            "empty.weight": np.zeros((0, 4), np.float32),
        },
    )


def sparse_large(path: Path, tensors: int, elements: int, first: int = 0) -> int:
    """A safetensors file of ``tensors`` float32 tensors of ``elements`` each (named
    ``layers.N.weight`` from ``first``), written as a header and a hole (zeros): large on the
    server, nothing on the disk. Its header's size."""
    header: dict[str, object] = {}
    offset = 0
    for index in range(first, first + tensors):
        nbytes = elements * 4
        header[f"layers.{index}.weight"] = {
            "dtype": "F32",
            "shape": [elements // 1024, 1024],
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as handle:
        handle.write(len(raw).to_bytes(8, "little") + raw)
        handle.truncate(8 + len(raw) + offset)
    return 8 + len(raw)


def same_tensors(remote: weightscope.Model, local: weightscope.Model) -> None:
    pairs = list(zip(remote.tensors(), local.tensors(), strict=True))
    assert pairs
    for (_, ours), (_, theirs) in pairs:
        assert ours.name == theirs.name
        np.testing.assert_array_equal(ours.stored(), theirs.stored())
        ours_stats, theirs_stats = ours.stats(), theirs.stats()
        assert ours_stats.mean == pytest.approx(theirs_stats.mean, rel=1e-5, abs=1e-7, nan_ok=True)
        assert ours_stats.std == pytest.approx(theirs_stats.std, rel=1e-5, abs=1e-7, nan_ok=True)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def sharded(folder: Path, shards: int = 3) -> Path:
    """A model in ``shards`` safetensors shards and its index, as HF writes them (a layer's
    weight and bias in different shards, names in the index sorted), with a config beside."""
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"layers.{i}.{part}": rng.normal(size=(64, 32) if part == "weight" else 64).astype(
            np.float32
        )
        for i in range(shards)
        for part in ("weight", "bias")
    }
    names = list(tensors)
    weight_map = {}
    for number in range(shards):
        shard = f"model-{number + 1:05d}-of-{shards:05d}.safetensors"
        # shifted by one: each shard ends with the next layer's weight (a layer split in two)
        part = names[2 * number + 1 : 2 * number + 3] if number else names[:3]
        part = [n for n in part if n not in weight_map]
        safetensors_file(folder / shard, {n: tensors[n] for n in part})
        weight_map.update(dict.fromkeys(part, shard))
    assert set(weight_map) == set(tensors)
    total = sum(t.nbytes for t in tensors.values())
    index = folder / "model.safetensors.index.json"
    index.write_text(
        json.dumps(
            {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        )
    )
    (folder / "config.json").write_text(json.dumps({"architectures": ["Tiny"]}))
    return index


def serve_folder(http: Counting, folder: Path, under: str = "repo") -> str:
    for path in folder.iterdir():
        http.files[f"{under}/{path.name}"] = path
    return f"{http.url}/{under}"


def layers(model: weightscope.Model) -> list[tuple]:
    return sorted(
        (layer.name, str(layer.kind), sorted(t.name for t in layer.tensors))
        for layer in model.layers
    )
