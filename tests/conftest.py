"""Shared pytest configuration and fixtures. Keep each group under its own heading."""

from __future__ import annotations

import os

import numpy as np
import pytest

# ---------------------------------------------------------------------------------------------
# Framework-backed layout tests (test_keras_layouts.py, test_layouts.py, reference.py)
#
# TensorFlow reads its log level when first imported: set it before any test module imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture
def rng() -> np.random.Generator:
    """A freshly seeded generator, so that every test draws the same numbers."""
    return np.random.default_rng(20240611)
