"""The version of weightscope (``weightscope.__version__``), kept apart so that any module can
name it without importing the package root."""

__version__ = "0.1.0"
