"""``weightscope scan``: many model files into one table, one row per model and one per layer,
with statistics and health flags, on local worker processes or a Dask cluster. A re-run keeps
the rows of files that have not changed.

>>> from weightscope.scan import scan
>>> summary = scan(["models/"], "zoo.parquet", jobs=2)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weightscope.analysis.health import MAX_ELEMENTS
from weightscope.errors import WeightscopeError
from weightscope.limits import Limits
from weightscope.output import atomic_file, check_target
from weightscope.scan.lock import table_lock
from weightscope.scan.resume import rows_by_path, unchanged
from weightscope.scan.table_io import read_table, require_writer, write_table
from weightscope.scan.walk import named_like_model, walk
from weightscope.scan.worker import FileResult, Task

DEFAULT_TIMEOUT = 600.0
DEFAULT_MEMORY_PER_JOB = 4 << 30


def default_jobs() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class ScanSummary:
    output: Path
    files: int = 0
    """Files in the table (one model row each): ``models + errors`` and the files named on the
    command line that turned out not to be models."""
    models: int = 0
    """Files read as models (their rows hold layers)."""
    scanned: int = 0
    """Files read in this run."""
    reused: int = 0
    """Files unchanged since the table was last written, whose rows were kept."""
    errors: int = 0
    """Model files that could not be read (their model row says why): recognised by content or
    named like a model, and damaged, unsafe or over a limit."""
    flagged: int = 0
    """Models with at least one layer flagged."""
    not_models: int = 0
    """Files that are not models: neither recognised by content nor named like a model. Those
    found in folders or globs are passed over; one named on the command line has a row saying
    why it could not be read, but is not counted as a model or an error."""
    missing: list[str] = field(default_factory=list)
    previous_unreadable: str | None = None
    """Why an existing output could not be resumed from (it was rebuilt)."""
    written: bool = False
    interrupted: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dict(vars(self))
        data["output"] = str(self.output)
        return data


Progress = Callable[[FileResult, int, int], None]
"""Called after each file with its result, the files done so far and the files to do."""


def scan(
    paths: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    jobs: int | None = None,
    dask: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT,
    memory_per_job: int | None = DEFAULT_MEMORY_PER_JOB,
    force: bool = False,
    limits: Limits | None = None,
    max_elements: int = MAX_ELEMENTS,
    progress: Progress | None = None,
    on_start: Callable[[int], None] | None = None,
    storage_options: Mapping[str, Any] | None = None,
) -> ScanSummary:
    """Scan every model file under ``paths`` (files, folders, globs) into the table ``output``
    (.parquet, .csv or .jsonl). ``jobs`` local worker processes (default: one per CPU), or the
    Dask scheduler at ``dask``; ``timeout`` seconds and ``memory_per_job`` bytes per file and
    worker process (None for no limit). ``force`` rescans files whose rows are already in
    ``output``. ``paths`` may hold URLs (``s3://bucket/prefix/``, ``hf://org/repo``), listed and
    read through fsspec with ``storage_options``. Files that fail are rows with an ``error``;
    only an unwritable output raises (``WeightscopeError``). On Ctrl-C the files done so far are
    written before ``KeyboardInterrupt`` propagates."""
    start = time.perf_counter()
    target = Path(output)
    require_writer(target)
    check_target(target, [])
    jobs = default_jobs() if jobs is None else jobs
    with table_lock(target):
        return _scan_locked(
            paths, target, start, jobs, dask, timeout, memory_per_job, force, limits,
            max_elements, progress, on_start, dict(storage_options or {}),
        )  # fmt: skip


def _scan_locked(
    paths: Sequence[str | os.PathLike[str]],
    target: Path,
    start: float,
    jobs: int,
    dask: str | None,
    timeout: float | None,
    memory_per_job: int | None,
    force: bool,
    limits: Limits | None,
    max_elements: int,
    progress: Progress | None,
    on_start: Callable[[int], None] | None,
    storage_options: dict[str, Any],
) -> ScanSummary:
    summary = ScanSummary(target)
    previous = {} if force else _previous_rows(target, summary)
    found = walk(
        [os.fspath(p) for p in paths], known=frozenset(previous), storage_options=storage_options
    )
    summary.not_models, summary.missing = len(found.not_models), found.missing
    if found.missing:  # a mistyped path must not empty the table of what it used to find
        missing = ", ".join(found.missing)
        raise WeightscopeError(f"{missing}: no such file or folder (or no match)")
    check_target(target, [Path(p) for p in found.files])  # before hours of work, not after
    keep = unchanged(previous, found.files, threads=jobs)
    tasks = [
        Task(path, limits or Limits(), max_elements, storage_options)
        for path in found.files
        if path not in keep
    ]
    if on_start is not None:
        on_start(len(tasks))
    results: dict[str, FileResult] = {}
    checkpoint = Checkpoint(target, found.files, keep, previous)
    try:
        for result in _run(tasks, jobs, dask, timeout, memory_per_job):
            results[result.path] = result
            checkpoint.maybe_write(results)
            if progress is not None:
                progress(result, len(results), len(tasks))
    except KeyboardInterrupt:
        summary.interrupted = True
    rows: list[dict[str, Any]] = []
    inputs = [Path(p) for p in found.files]
    for path in found.files:
        group = _rows_of(path, results, keep, previous)
        if group is None:
            continue  # interrupted before it was done
        rows.extend(group)
        inputs.extend(_read_beside(group[0]))
        summary.files += 1
        if group[0]["error"] is None:
            summary.models += 1
        elif _not_a_model(path, group[0]):
            summary.not_models += 1
        else:
            summary.errors += 1
        summary.flagged += bool(group[0].get("layers_flagged"))
    summary.scanned, summary.reused = len(results), len(keep)
    if (
        results
        or set(found.files) != set(previous)
        or summary.previous_unreadable
        or not target.exists()  # no model found: still an (empty) table
    ):
        with atomic_file(target, inputs) as temporary:
            write_table(rows, temporary)
        summary.written = True
    summary.seconds = time.perf_counter() - start
    if summary.interrupted:
        raise ScanInterrupted(summary)
    return summary


def _not_a_model(path: str, row: dict[str, Any]) -> bool:
    """A file that could not be read because it is in no format weightscope knows, and whose name
    does not promise a model either (a README named on the command line): not a model, so not
    counted as a model that failed."""
    return row.get("error_type") == "UnsupportedFormatError" and not named_like_model(path)


def _rows_of(
    path: str,
    results: dict[str, FileResult],
    keep: Collection[str],
    previous: dict[str, list[dict[str, Any]]],
) -> list[dict[str, Any]] | None:
    if path in results:
        return results[path].rows
    if path in keep:
        return previous[path]
    return None


CHECKPOINT_SECONDS = 30.0
"""How often a long scan writes what it has done, so that a scan that is killed (``kill -9``,
a power cut) loses at most this much work."""


class Checkpoint:
    """Writes the table every :data:`CHECKPOINT_SECONDS` while a scan runs: the rows of the
    files done, kept, and of files not yet rescanned as they were (so a killed scan drops no row
    of the table it started from, and the next run reads only what is left)."""

    def __init__(
        self,
        target: Path,
        files: Sequence[str],
        keep: Collection[str],
        previous: dict[str, list[dict[str, Any]]],
    ) -> None:
        self.target, self.files, self.keep, self.previous = target, files, keep, previous
        self.last = time.monotonic()

    def maybe_write(self, results: dict[str, FileResult]) -> None:
        if time.monotonic() - self.last < CHECKPOINT_SECONDS:
            return
        rows: list[dict[str, Any]] = []
        inputs = [Path(p) for p in self.files]
        for path in self.files:
            group = _rows_of(path, results, self.keep, self.previous)
            if group is None:
                group = self.previous.get(path)
            if group:
                rows.extend(group)
                inputs.extend(_read_beside(group[0]))
        with atomic_file(self.target, inputs) as temporary:
            write_table(rows, temporary)
        self.last = time.monotonic()


class ScanInterrupted(KeyboardInterrupt):
    """Ctrl-C during a scan, after the finished files were written (``summary``)."""

    def __init__(self, summary: ScanSummary) -> None:
        super().__init__("scan interrupted")
        self.summary = summary


def _read_beside(row: dict[str, Any]) -> list[Path]:
    """The other files a model was read from (ONNX external data), from its model row: the
    table must never be written onto one of them."""
    try:
        return [Path(entry["path"]) for entry in json.loads(row.get("inputs") or "[]")]
    except (ValueError, TypeError, KeyError):
        return []


def _previous_rows(target: Path, summary: ScanSummary) -> dict[str, list[dict[str, Any]]]:
    if not target.exists():
        return {}
    try:
        return rows_by_path(read_table(target))
    except Exception as exc:  # not our table, an older layout, damaged: build it anew
        summary.previous_unreadable = f"{type(exc).__name__}: {exc}"[:300]
        return {}


def _run(
    tasks: Sequence[Task],
    jobs: int,
    dask: str | None,
    timeout: float | None,
    memory_per_job: int | None,
) -> Iterator[FileResult]:
    if not tasks:
        return iter(())
    if dask is not None:
        from weightscope.scan.cluster import run_on_cluster

        return run_on_cluster(dask, tasks, timeout, memory_per_job)
    from weightscope.scan.pool import LocalPool

    if jobs < 1:
        raise WeightscopeError(f"--jobs must be at least 1, not {jobs}")
    return LocalPool(jobs, timeout, memory_per_job).run(tasks)


__all__ = ["ScanInterrupted", "ScanSummary", "default_jobs", "scan"]
