"""Shared pytest configuration and fixtures. Keep each group under its own heading."""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

# ---------------------------------------------------------------------------------------------
# Framework-backed layout tests (test_keras_layouts.py, test_layouts.py, reference.py)
#
# TensorFlow reads its log level when first imported: set it before any test module imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded generator, so that every test draws the same numbers."""
    return np.random.default_rng(20240611)


# ---------------------------------------------------------------------------------------------
# Markers and parallel workers (pyproject's addopts run the suite on pytest-xdist workers)

FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras", "onnxruntime")
MAX_AUTO_WORKERS = 4
"""Each worker imports TensorFlow and PyTorch (about 1.5 GB): ``-n auto`` uses one per CPU, up
to this many."""


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_AUTO_WORKERS))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``frameworks`` on every test of a module that imports PyTorch, TensorFlow, Keras or
    onnxruntime (to build models, run them, or compare with them)."""
    uses: dict[str, bool] = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        if module.__name__ not in uses:
            uses[module.__name__] = any(
                isinstance(value, types.ModuleType) and value.__name__.split(".")[0] in FRAMEWORKS
                for value in vars(module).values()
            )
        if uses[module.__name__]:
            item.add_marker(pytest.mark.frameworks)


# ---------------------------------------------------------------------------------------------
# The fuzzing campaign's figures (tests/fuzz/conftest.py prints them in a run without workers;
# with pytest-xdist each worker sends its own here, and the controller prints their sum)

_FUZZ_FROM_WORKERS: list[dict[str, object]] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: object, error: object) -> None:
    figures = getattr(node, "workeroutput", {}).get("weightscope_fuzz_tally")
    if figures:
        _FUZZ_FROM_WORKERS.append(figures)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _FUZZ_FROM_WORKERS:
        from fuzz.runner import Tally

        tally = Tally()
        for figures in _FUZZ_FROM_WORKERS:
            tally.merge(figures)  # type: ignore[arg-type]
        terminalreporter.section("weightscope fuzzing")
        terminalreporter.write_line(tally.report())


# ---------------------------------------------------------------------------------------------
# Servers on loopback for the remote tests (tests/remote_servers.py)


@pytest.fixture
def http() -> Iterator[Any]:
    """An HTTP server that honours Range, counts what it sends and answers the Hub's API."""
    from remote_servers import Counting, serving

    server = Counting({})
    with serving(server):
        yield server


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server; its endpoint URL."""
    from remote_servers import moto_s3

    with moto_s3(monkeypatch) as endpoint:
        yield endpoint
