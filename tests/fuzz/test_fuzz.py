"""Every reader against mutants of valid files: the Python API and the command line must end
with a correct result or one error line, within 5 s and 1 GB, leaving the input untouched.
Failures are saved to ``found/`` and replayed on every run (see ``campaign.py``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from .campaign import Campaign, Case, replay, saved_cases
from .runner import Files, Pool
from .seeds import SEEDS, SeedCache


def seed_files(seeds: Mapping[str, Files], fmt: str) -> Files:
    try:
        return seeds[fmt]
    except ImportError as exc:  # the framework that writes this format is not installed
        pytest.skip(f"cannot build the {fmt} seed: {exc}")


@pytest.mark.frameworks  # the seeds are saved by the frameworks (or taken from their cache)
@pytest.mark.parametrize("fmt", list(SEEDS))
def test_seed_reads_cleanly(fmt: str, seeds: SeedCache, pool: Pool) -> None:
    """The unmutated seed passes every check: a failure below is the mutation's doing."""
    outcome = pool.workers[0].run(seed_files(seeds, fmt), SEEDS[fmt].filename)
    assert outcome.status == "ok", (outcome.failures, outcome.steps)


@pytest.mark.slow
@pytest.mark.frameworks
@pytest.mark.parametrize("fmt", list(SEEDS))
def test_mutants(fmt: str, campaign: Campaign) -> None:
    if fmt not in campaign.settings.formats:
        pytest.skip("not in WEIGHTSCOPE_FUZZ_FORMATS")
    seed_files(campaign.seed_files, fmt)
    campaign.run([fmt])
    problems = campaign.problems(fmt)
    assert not problems, problems


NOT_FIXED: dict[str, str] = {}
"""Saved failures known to still fail, with why: each must keep failing (strict), so a fix is
noticed and the entry removed."""


def _expected(case: Case) -> Case | object:
    reason = NOT_FIXED.get(case.name)
    if reason is None:
        return case
    return pytest.param(case, marks=pytest.mark.xfail(reason=reason, strict=True), id=case.name)


@pytest.mark.parametrize(
    "case", [_expected(case) for case in saved_cases()], ids=lambda case: case.name
)
def test_saved_failure(case: Case, pool: Pool) -> None:
    """A mutant that once failed: it must now be read, or refused with one error line."""
    outcome = replay(pool, case)
    assert outcome.status != "fail", "\n".join(f"{s}: {d}" for s, d in outcome.failures)


def test_a_relative_pythonpath_reaches_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workers run in folders of their own: ``PYTHONPATH=.`` from the checkout must still
    give them this checkout's weightscope (not nothing, nor an installed copy elsewhere)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    monkeypatch.setenv("PYTHONPATH", ".")
    with Pool(1) as pool:  # starting checks which weightscope the worker imported
        assert pool.workers[0].process is not None
