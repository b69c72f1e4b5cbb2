"""The public names a notebook or script uses: ``weightscope.check_init``, ``check_params`` and
``check_health`` return the analyses' dataclasses, the same as the commands print; the examples
in the package's docstrings run as written."""

from __future__ import annotations

import doctest
import json

import pytest
from cli_runner import run_cli

import weightscope
import weightscope.analysis


@pytest.fixture(scope="module")
def example():
    with weightscope.load(weightscope.example_path()) as model:
        yield model


def test_check_init_is_what_the_init_command_prints(example) -> None:
    result = run_cli("init", "--example", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)["layers"]
    reports = weightscope.check_init(example)
    assert [r.to_dict()["layer"] for r in reports] == [p["layer"] for p in printed]
    assert [r.to_dict()["verdict"] for r in reports] == [p["verdict"] for p in printed]
    assert all(isinstance(r, weightscope.analysis.InitReport) for r in reports)


def test_check_params_is_what_the_params_command_prints(example) -> None:
    result = run_cli("params", "--example", "--json")
    assert result.returncode == 0, result.stderr
    report = weightscope.check_params(example)
    assert isinstance(report, weightscope.analysis.ParamsReport)
    assert report.to_dict() == json.loads(result.stdout)


def test_check_health_is_what_inspect_health_prints(example) -> None:
    result = run_cli("inspect", "--example", "--json", "--health")
    assert result.returncode == 0, result.stderr
    printed = [layer["health"] for layer in json.loads(result.stdout)["layers"]]
    assert [h.to_dict() for h in weightscope.check_health(example)] == printed


@pytest.mark.parametrize("module", [weightscope, weightscope.analysis])
def test_docstring_examples_run(module) -> None:
    failures, tried = doctest.testmod(module)
    assert tried > 0 and failures == 0
