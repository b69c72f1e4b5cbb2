"""Fixtures of the fuzzing suite: the seeds (built by the real frameworks, once per session and
only for the formats asked for), the pool of workers, and the figures printed at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .campaign import Campaign, Settings
from .runner import Pool, Tally
from .seeds import SeedCache

TALLY = Tally()
TALLY_KEY = "weightscope_fuzz_tally"


@pytest.fixture(scope="session")
def fuzz_settings() -> Settings:
    return Settings.from_environment()


@pytest.fixture(scope="session")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> SeedCache:
    return SeedCache(tmp_path_factory.mktemp("fuzz-seeds"))


@pytest.fixture(scope="session")
def pool(fuzz_settings: Settings) -> Iterator[Pool]:
    with Pool(fuzz_settings.workers) as workers:
        yield workers


@pytest.fixture(scope="session")
def campaign(pool: Pool, seeds: SeedCache, fuzz_settings: Settings) -> Campaign:
    return Campaign(pool, seeds, fuzz_settings, TALLY)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a pytest-xdist worker: hand the figures to the controller, which prints them (see
    ``tests/conftest.py``)."""
    output = getattr(session.config, "workeroutput", None)
    if output is not None and TALLY.tried:
        output[TALLY_KEY] = TALLY.to_json()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY.tried:
        terminalreporter.section("weightscope fuzzing")
        terminalreporter.write_line(TALLY.report())
