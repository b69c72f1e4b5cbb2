"""Exceptions raised by weightscope. Each carries one line that names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class WeightscopeError(Exception):
    """Base class: the message is one line, fit to print after ``weightscope:``."""

    file: str | None = None
    """The file the error is about, when it is about one."""
    problem: str | None = None
    """The line without the file, when built by :func:`file_error`."""
    looked_like: str | None = None
    """The format the file seemed to be in (``ONNX model``), once the line names it."""


class UnsupportedFormatError(WeightscopeError):
    """The file is not in any format weightscope reads."""


class CorruptFileError(WeightscopeError):
    """The file looks like a supported format but its content is damaged or inconsistent."""


class RemoteError(WeightscopeError):
    """A file read by URL could not be fetched: the network, the server (not found, denied, no
    Range support) or a missing package for the URL's scheme."""


class UnsafeFileError(WeightscopeError):
    """The file asks to run code (a pickle calling ``os.system``, say): refused, nothing run."""


class LimitError(WeightscopeError):
    """The file asks for more than a resource limit allows (see :mod:`weightscope.limits`): the
    line names the limit and a value that would let the file through."""

    limit: str = ""
    """The limit's name, a field of :class:`weightscope.limits.Limits`."""
    value: int = 0
    """The limit in force."""
    needed: int = 0
    """What the file asked for (at least; some limits stop counting when hit)."""


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape sequences from a hostile file's names)
    shown as ``\\xNN`` instead of acted on by the terminal."""
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in text)


def printable_lines(text: str) -> str:
    """:func:`printable` for text of several lines: line breaks kept, other controls shown."""
    return "\n".join(printable(line) for line in text.split("\n"))


def short(name: object, width: int = 80) -> str:
    """A name from a file, quoted and cut to ``width`` characters in the middle (both ends
    kept: a path's file name is at its end), for an error line."""
    text = str(name)
    if len(text) <= width:
        return repr(text)
    head = (width - 3) // 2
    return repr(text[:head] + "..." + text[len(text) - (width - 3 - head) :])


def file_error(
    cls: type[WeightscopeError],
    path: Path | str,
    problem: str,
    looked_like: str | None = None,
) -> WeightscopeError:
    """Build an error whose single line reads ``<file>: <problem>``, or, for damage found in a
    file that looked like ``looked_like`` (``ONNX model``), ``<file>: damaged ONNX model:
    <problem>``. Errors raised while a file is loaded without ``looked_like`` get it from the
    loader (see :func:`with_format`)."""
    one_line = " ".join(str(problem).split())
    line = f"damaged {looked_like}: {one_line}" if looked_like else one_line
    error = cls(printable(f"{path}: {line}"))
    error.file = str(path)
    error.problem = one_line
    error.looked_like = looked_like
    return error


def with_format(error: WeightscopeError, looked_like: str) -> WeightscopeError:
    """``error`` naming the format the file looked like: a damaged-file error built by
    :func:`file_error` that does not name it yet is rebuilt as ``damaged <format>: ...``; any other
    error is returned as it is (its line already says what the file is or asks)."""
    if (
        type(error) is not CorruptFileError
        or error.looked_like
        or error.file is None
        or error.problem is None
    ):
        return error
    labelled = file_error(CorruptFileError, error.file, error.problem, looked_like)
    labelled.__cause__ = error.__cause__
    return labelled
