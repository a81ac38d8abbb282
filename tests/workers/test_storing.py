"""workers/storing.py: what a computed map becomes in its row."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from workers import batch, storing


def _awkward_values(dtype: type[np.floating]) -> np.ndarray:
    """Values across float16's whole range and beyond it: subnormals, underflow, overflow, inf and nan."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal((64, 96)) * np.logspace(-12, 6, 96)[None, :]
    values[0, :6] = [np.inf, -np.inf, np.nan, 65520.0, -1e-45, 0.0]
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_to_float16_is_numpys_conversion_bit_for_bit(dtype: type[np.floating]):
    values = _awkward_values(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy warns of the overflow it rounds to inf
        expected = values.astype(np.float32).astype(np.float16)
    converted = storing.to_float16(values)
    assert converted.dtype == np.float16 and converted.shape == values.shape
    assert np.array_equal(converted.view(np.uint16), expected.view(np.uint16))


def test_a_heatmap_row_holds_the_float16_bytes_and_the_float32_range():
    values = np.linspace(-3e-6, 2e-5, 40 * 30, dtype=np.float32).reshape(40, 30)  # mostly float16 subnormals
    stored = batch.StoredMap("gradient", values, {"input_size": [28, 28]}, {"convergence_delta": 0.0}, 0.01)
    row = storing.heatmap_row(stored, target=2)
    assert (row.method, row.target_class, row.shape, row.dtype) == ("gradient", 2, [40, 30], "float16")
    assert row.data == values.astype(np.float16).tobytes()
    assert (row.value_min, row.value_max) == (float(values.min()), float(values.max()))
