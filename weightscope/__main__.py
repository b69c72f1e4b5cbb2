"""``python -m weightscope`` works like the ``weightscope`` command."""

from weightscope.cli import run

run()
