"""The ``weightscope`` command line: ``app`` parses and dispatches, ``options`` holds the options
shared by commands, ``commands/`` one module per command."""

from weightscope.cli.app import build_parser, main, run

__all__ = ["build_parser", "main", "run"]
