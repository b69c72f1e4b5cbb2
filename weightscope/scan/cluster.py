"""Scanning on a running ``dask.distributed`` cluster: the same per-file work as the local
workers, submitted to the scheduler at ``address``. The workers read the files themselves, so
the paths must be ones they can see (a shared file system), and weightscope must be installed
where they run. Each Dask worker thread reads its files in a child process of its own, kept
between tasks (see :func:`weightscope.scan.pool.scan_in_child`): the per-file deadline and
memory cap hold there as they do locally, and a file that crashes a native library takes down
that child, not the Dask worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any

from weightscope.errors import WeightscopeError
from weightscope.scan.pool import scan_in_child
from weightscope.scan.worker import FileResult, Task, error_result

CONNECT_TIMEOUT = "20s"


def _distributed(address: str) -> Any:
    try:
        import distributed
    except ImportError:
        raise WeightscopeError(
            f"--dask {address}: needs dask.distributed (pip install 'weightscope[scan]')"
        ) from None
    return distributed


def run_on_cluster(
    address: str, tasks: Sequence[Task], timeout: float | None, memory_bytes: int | None
) -> Iterator[FileResult]:
    """Yield one result per task, in the order they finish on the cluster."""
    distributed = _distributed(address)
    try:
        client = distributed.Client(address, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        raise WeightscopeError(
            f"--dask {address}: cannot reach the scheduler ({exc})".rstrip()
        ) from None
    with client:
        batch = uuid.uuid4().hex[:8]
        keys = [f"weightscope-scan-{batch}-{index}" for index in range(len(tasks))]
        futures = client.map(
            scan_in_child,
            tasks,
            timeout=timeout,
            memory_bytes=memory_bytes,
            key=keys,
            pure=False,
        )
        task_of = {future.key: task for future, task in zip(futures, tasks, strict=True)}
        try:
            for future in distributed.as_completed(futures):
                task = task_of[future.key]
                try:
                    result: FileResult = future.result()
                except Exception as exc:  # a worker lost with the task (KilledWorker), ...
                    message = f"{task.path}: the Dask task failed: {type(exc).__name__}: {exc}"
                    result = error_result(task.path, message, "DaskTaskFailed")
                yield result
        finally:
            client.cancel(futures)
