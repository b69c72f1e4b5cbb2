"""Resuming a scan: the rows of an earlier table are kept for every file whose size,
modification time and content (SHA-256), and those of the files it read beside it (ONNX
external data), are unchanged; except rows of files refused for a resource limit or memory,
which a re-run with other ``--limit`` or ``--memory-per-job`` values may read."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from weightscope.scan.worker import file_sha256

RETRIED_ERRORS = frozenset({"LimitError", "MemoryError"})
"""Errors that depend on the run's options (``--limit``, ``--memory-per-job``), not only on
the file: read again even when the file is unchanged."""


def rows_by_path(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """An earlier table's rows grouped by file, model row first (files without one dropped)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row["path"]), []).append(row)
    return {
        path: sorted(group, key=lambda row: row["record"] != "model")
        for path, group in grouped.items()
        if sum(row["record"] == "model" for row in group) == 1
    }


def unchanged(
    previous: dict[str, list[dict[str, Any]]], paths: Iterable[str], threads: int
) -> set[str]:
    """The paths whose earlier rows still hold. Hashes on ``threads`` threads (hashlib
    releases the GIL on large blocks)."""
    candidates = [p for p in paths if p in previous and _same_stat(previous[p][0], p)]
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        verdicts = pool.map(lambda p: _same_content(previous[p][0], p), candidates)
        return {path for path, same in zip(candidates, verdicts, strict=True) if same}


def _same_stat(row: dict[str, Any], path: str) -> bool:
    if row.get("sha256") is None:  # timed out or crashed last time: try again
        return False
    if row.get("error_type") in RETRIED_ERRORS:
        return False
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return bool(stat.st_size == row.get("size_bytes") and stat.st_mtime_ns == row.get("mtime_ns"))


def _same_content(row: dict[str, Any], path: str) -> bool:
    try:
        if file_sha256(path) != row["sha256"]:
            return False
        inputs = json.loads(row.get("inputs") or "[]")
        return all(_same_input(entry) for entry in inputs)
    except (OSError, ValueError, TypeError, KeyError):
        return False


def _same_input(entry: dict[str, Any]) -> bool:
    path = entry["path"]
    stat = os.stat(path)
    return bool(
        stat.st_size == entry["size_bytes"]
        and stat.st_mtime_ns == entry["mtime_ns"]
        and file_sha256(path) == entry["sha256"]
    )
