"""``python -m weightscope`` works like the ``weightscope`` command."""

from weightscope.cli.app import run

run()
