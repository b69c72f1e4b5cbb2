"""``run_cli`` (in this process) gives what ``python -m weightscope`` gives, and leaves nothing
behind: the other tests of the command line rely on it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import warnings

import pytest
from cli_runner import run_cli, run_cli_subprocess

# one of each: help (argparse's width), a usage error, a table (rich, not a terminal), JSON, a
# one-line error and its exit status
SAME_AS_A_PROCESS = [
    ("--help",),
    ("inspect", "--help"),
    ("--version",),
    ("inspect",),
    ("inspect", "--example"),
    ("inspect", "--example", "--layer", "bn1", "--json"),
    ("inspect", "--example", "--layer", "nope"),
]


@pytest.mark.slow
def test_in_process_output_equals_a_real_process() -> None:
    for args in SAME_AS_A_PROCESS:
        real = run_cli_subprocess(*args)
        mine = run_cli(*args)
        assert (mine.returncode, mine.stdout, mine.stderr) == (
            real.returncode,
            real.stdout,
            real.stderr,
        ), args


def test_exit_status_of_help_usage_errors_and_failures() -> None:
    assert run_cli("--help").returncode == 0
    usage = run_cli("inspect")
    assert usage.returncode == 2 and usage.stderr.startswith("usage: weightscope ")
    assert "error: FILE is required" in usage.stderr
    assert usage.stdout == ""
    missing = run_cli("inspect", "/no/such/file.h5")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1


def test_nothing_leaks_into_the_test_process(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """A command that changes the process's state (here a patched one) changes it for itself
    only, as in a process of its own."""
    import weightscope.cli.commands.inspect as inspect_command

    original = inspect_command.run

    def meddling(args, model):  # type: ignore[no-untyped-def]
        os.environ["WEIGHTSCOPE_TEST_LEAK"] = "1"
        os.chdir(tmp_path)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        warnings.simplefilter("error")
        sys.argv.append("extra")
        print("to stdout")
        print("to stderr", file=sys.stderr)
        assert not sys.stdout.isatty() and not sys.stderr.isatty()
        original(args, model)

    monkeypatch.setattr(inspect_command, "run", meddling)
    streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    argv, cwd, filters = list(sys.argv), os.getcwd(), list(warnings.filters)
    handler = signal.getsignal(signal.SIGTERM)
    result = run_cli("inspect", "--example", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("to stdout\n{") and result.stderr == "to stderr\n"
    assert "WEIGHTSCOPE_TEST_LEAK" not in os.environ
    assert os.getcwd() == cwd and sys.argv == argv and warnings.filters == filters
    assert signal.getsignal(signal.SIGTERM) == handler
    assert (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__) == streams


def test_warnings_are_printed_as_a_fresh_interpreter_prints_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import weightscope.cli.commands.inspect as inspect_command

    original = inspect_command.run

    def warning(args, model):  # type: ignore[no-untyped-def]
        for _ in range(2):  # the "default" action: once per place
            warnings.warn("shown once", UserWarning, stacklevel=1)
        warnings.warn("hidden outside __main__", DeprecationWarning, stacklevel=1)
        original(args, model)

    monkeypatch.setattr(inspect_command, "run", warning)
    for _ in range(2):  # the second call shows it again: a new process would
        with warnings.catch_warnings(record=True) as caught:
            result = run_cli("inspect", "--example", "--no-stats")
        assert result.returncode == 0
        assert result.stderr.count("UserWarning: shown once") == 1, result.stderr
        assert "hidden" not in result.stderr and caught == []


def test_uncaught_exceptions_and_sys_exit_become_the_exit_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(argv=None):  # type: ignore[no-untyped-def]
        raise MemoryError("no more")

    monkeypatch.setattr("weightscope.cli.main", crash)
    result = run_cli("inspect", "--example")
    assert result.returncode == 1 and result.stderr.endswith("MemoryError: no more\n")

    for code, status, stderr in ((None, 0, ""), (3, 3, ""), ("bye", 1, "bye\n")):

        def leave(argv=None, code=code):  # type: ignore[no-untyped-def]
            sys.exit(code)

        monkeypatch.setattr("weightscope.cli.main", leave)
        result = run_cli("inspect")
        assert (result.returncode, result.stderr) == (status, stderr)

    def interrupted(argv=None):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt  # Ctrl-C before any command's guard: app.run() says so

    monkeypatch.setattr("weightscope.cli.main", interrupted)
    result = run_cli("inspect")
    assert (result.returncode, result.stderr) == (130, "weightscope: interrupted\n")


def test_a_command_past_its_timeout_raises_like_subprocess(monkeypatch: pytest.MonkeyPatch):
    import time

    def slow(argv=None):  # type: ignore[no-untyped-def]
        try:
            time.sleep(5)
        except Exception:  # a command's own handler does not swallow the deadline
            return 0
        return 0

    monkeypatch.setattr("weightscope.cli.main", slow)
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli("inspect", timeout=0.2)
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
