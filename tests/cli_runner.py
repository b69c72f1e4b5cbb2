"""Run the weightscope command line the way a user does, with its output piped.

``run_cli`` calls ``weightscope.cli.main(argv)`` in this process, as ``python -m weightscope``
would, with what a fresh process has: stdout and stderr are pipes (not terminals, so ``rich``
writes plain text, and argparse wraps help at 80 columns), Python's default warning filters
print warnings on stderr, and ``SystemExit`` or an uncaught exception becomes the exit status.
Whatever the command changes in the process (environment, working directory, signal handlers,
``sys.argv``) is put back afterwards, so one call cannot leak into the next. It takes ~0.05 s
where starting an interpreter takes 1-2.5 s.

``run_cli_subprocess`` really starts ``python -m weightscope``: for the few tests where the
process is the point (the entry point, modules a fresh interpreter imports, signals, workers).
``tests/test_cli_runner.py`` checks that both give the same results.
"""

from __future__ import annotations

import io
import locale
import os
import signal
import subprocess
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import weightscope

MAIN = str(Path(weightscope.__file__).with_name("__main__.py"))
"""``sys.argv[0]`` under ``python -m weightscope``."""

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGALRM, signal.SIGPIPE)


def run_cli(*args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``python -m weightscope ARGS`` with stdout and stderr piped, run in this process.

    Raises ``subprocess.TimeoutExpired`` past ``timeout`` seconds, as ``subprocess.run`` does
    (only from the main thread, where Python handles signals)."""
    from weightscope.cli import app, main

    argv = [str(arg) for arg in args]
    stdout, stderr = _Pipe("strict"), _Pipe("backslashreplace")
    with _fresh_process_state(argv, stdout, stderr), _deadline(argv, timeout):
        try:
            try:
                status = main(argv)
            except KeyboardInterrupt:  # before any command's guard: what app.run() does
                status = app._interrupted()
            code = _exit_status(status, stderr)
        except SystemExit as exc:  # argparse: --help, --version, usage errors
            code = _exit_status(exc.code, stderr)
        except _Timeout:
            raise
        except BaseException:  # what the interpreter does with an uncaught exception
            traceback.print_exc(file=stderr)
            code = 1
    return subprocess.CompletedProcess(["weightscope", *argv], code, stdout.text(), stderr.text())


def run_cli_subprocess(
    *args: str | Path, timeout: float = 60, **options: object
) -> subprocess.CompletedProcess[str]:
    """``python -m weightscope ARGS`` in a new process (``options`` go to ``subprocess.run``):
    for tests of the process itself."""
    return subprocess.run(
        [sys.executable, "-m", "weightscope", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        **options,  # type: ignore[call-overload]
    )


class _Pipe(io.TextIOWrapper):
    """What ``sys.stdout``/``sys.stderr`` are in a process whose output is piped: text encoded
    in the locale's encoding onto a byte stream that is no terminal and has no file number.
    ``text()`` decodes it as ``subprocess.run(..., text=True)`` does (universal newlines)."""

    def __init__(self, errors: str) -> None:
        self._bytes = _Bytes()
        super().__init__(self._bytes, encoding=_ENCODING, errors=errors)

    def text(self) -> str:
        if not self.closed:
            self.flush()
        data = self._bytes.final if self._bytes.closed else self._bytes.getvalue()
        return data.decode(_ENCODING).replace("\r\n", "\n").replace("\r", "\n")


class _Bytes(io.BytesIO):
    """Keeps what was written when closed (the command closes stderr on a broken pipe)."""

    final = b""

    def close(self) -> None:
        if not self.closed:
            self.final = self.getvalue()
        super().close()


_ENCODING = locale.getpreferredencoding(False)


def _exit_status(code: object, stderr: io.TextIOBase) -> int:
    """The exit status ``sys.exit(code)`` gives: None is 0, an int itself (mod 256, as the
    system reports it), anything else is printed on stderr and is 1."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=stderr)
    return 1


class _Timeout(BaseException):
    """Raised by the alarm in the command's frames; BaseException, so that the command's own
    ``except Exception`` does not turn it into an error line."""


@contextmanager
def _deadline(argv: list[str], timeout: float) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: object) -> None:
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        yield
    except _Timeout:
        raise subprocess.TimeoutExpired(["weightscope", *argv], timeout) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _fresh_process_state(argv: list[str], stdout: _Pipe, stderr: _Pipe) -> Iterator[None]:
    saved_streams = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    saved_argv = sys.argv
    saved_environ = dict(os.environ)
    saved_cwd = os.getcwd()
    saved_handlers = {number: signal.getsignal(number) for number in HANDLED_SIGNALS}
    with warnings.catch_warnings():
        _default_warning_filters()
        warnings.showwarning = _show_warning
        # sys.__stdout__ too: shutil.get_terminal_size (argparse's help width) asks it
        sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = stdout, stderr, stdout, stderr
        sys.argv = [MAIN, *argv]
        try:
            yield
        finally:
            for stream in (stdout, stderr):
                if not stream.closed:
                    stream.flush()
            sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__ = saved_streams
            sys.argv = saved_argv
            if dict(os.environ) != saved_environ:
                os.environ.clear()
                os.environ.update(saved_environ)
            if os.getcwd() != saved_cwd:
                os.chdir(saved_cwd)
            for number, handler in saved_handlers.items():
                if signal.getsignal(number) is not handler and handler is not None:
                    signal.signal(number, handler)


def _default_warning_filters() -> None:
    """The filters of a fresh interpreter (Python's defaults, then ``PYTHONWARNINGS``), not
    pytest's, which record warnings instead of printing them."""
    warnings.resetwarnings()
    for action, category, module in reversed(
        [
            ("default", DeprecationWarning, "__main__"),
            ("ignore", DeprecationWarning, ""),
            ("ignore", PendingDeprecationWarning, ""),
            ("ignore", ImportWarning, ""),
            ("ignore", ResourceWarning, ""),
        ]
    ):
        warnings.filterwarnings(action, category=category, module=module)  # type: ignore[arg-type]
    options = [o for o in os.environ.get("PYTHONWARNINGS", "").split(",") if o]
    if options:
        warnings._processoptions(options)  # type: ignore[attr-defined]


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: object = None,
    line: str | None = None,
) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def interruptible(command: list[str]) -> subprocess.Popen[str]:
    """``command`` started as a terminal starts it, with SIGINT at its default and unblocked
    (Python then turns it into KeyboardInterrupt): a child inherits SIGINT ignored or blocked
    from the process that starts it (a shell's background job, a test worker), and a Ctrl-C
    test could then never pass. Output piped, as text."""
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,  # in the child, before it runs Python
    )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def interrupt_while_stopped(process: subprocess.Popen[str]) -> None:
    """Ctrl-C to ``process`` as it works: stopped first (SIGSTOP), then SIGINT, then SIGCONT,
    so the interrupt is pending before it can run another instruction (sent plainly, a fast
    machine could finish the work between the test seeing it start and the signal)."""
    process.send_signal(signal.SIGSTOP)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGCONT)
