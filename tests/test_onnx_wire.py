"""weightscope's own decoding of what ONNX files hold, checked against onnx and ml_dtypes: the
8-bit floats ONNX stores, decoded by table."""

from __future__ import annotations

import numpy as np
import pytest

from weightscope.dtypes import FLOAT8_FORMATS, float8_to_float32


@pytest.mark.parametrize("name", sorted(FLOAT8_FORMATS))
def test_float8_tables_match_ml_dtypes(name):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bits = np.arange(256, dtype=np.uint8)
    want = bits.view(getattr(ml_dtypes, name)).astype(np.float32)
    got = float8_to_float32(bits, name)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)
    numbers = ~np.isnan(want)
    assert np.array_equal(np.signbit(got[numbers]), np.signbit(want[numbers]))  # -0.0 too
