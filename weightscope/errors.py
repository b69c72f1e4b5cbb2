"""Exceptions raised by weightscope. Each carries one line that names the file and the problem."""

from __future__ import annotations

from pathlib import Path


class WeightscopeError(Exception):
    """Base class: the message is one line, fit to print after ``weightscope:``."""


class UnsupportedFormatError(WeightscopeError):
    """The file is not in any format weightscope reads."""


class CorruptFileError(WeightscopeError):
    """The file looks like a supported format but its content is damaged or inconsistent."""


def printable(text: str) -> str:
    """``text`` with control characters (terminal escape sequences from a hostile file's names)
    shown as ``\\xNN`` instead of acted on by the terminal."""
    return "".join(c if c.isprintable() or c == " " else f"\\x{ord(c):02x}" for c in text)


def file_error(cls: type[WeightscopeError], path: Path | str, problem: str) -> WeightscopeError:
    """Build an error whose single line reads ``<file>: <problem>``."""
    one_line = " ".join(str(problem).split())
    return cls(printable(f"{path}: {one_line}"))


class UnsafeFileError(WeightscopeError):
    """The file asks to run code (a pickle calling ``os.system``, say): refused, nothing run."""
