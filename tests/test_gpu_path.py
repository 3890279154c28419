"""The CuPy path's defects of issue 19, each proven on the CuPy stand-in (tests/cupy_standin.py) or the CPU."""

from __future__ import annotations

import numpy as np
import pytest

import xpnn
from xpnn import Conv2D, Dense, Flatten, MaxPool2D, ReLU, Sequential
from xpnn.backends import numpy_backend
from xpnn.layers import fused
from xpnn.reference import reference_model, reference_optimizer


def _one_channel_model(dtype: str = "float64") -> Sequential:
    layers = [Conv2D(4, 3, padding="valid"), ReLU(), MaxPool2D(2, strides=2), Flatten(), Dense(3)]
    return Sequential(layers, dtype=dtype).build((10, 10, 1), seed=3)


# ---- defect 3: grouped_runs must not trust the strides of a size-1 axis ---------------------------------------
@pytest.mark.parametrize("where", ["standin", "numpy-twin"])
def test_one_channel_input_made_with_a_new_axis(where, request, monkeypatch):
    """x[..., None] has a channel stride of 0 yet counts as contiguous: the fused unit must read it right."""
    rng = np.random.default_rng(0)
    images, y = rng.random((6, 10, 10)), rng.integers(0, 3, 6)
    expected = _one_channel_model().predict(np.ascontiguousarray(images[..., None]))
    expected_cost = _one_channel_model().train_on_batch(images[..., None].copy(), y, reference_optimizer())
    if where == "standin":
        request.getfixturevalue("standin")
        backend = xpnn.set_backend("cupy")
    else:
        monkeypatch.setenv("XPNN_NATIVE", "0")
        backend = xpnn.get_backend()
    x = backend.asarray(images)[..., None]
    assert x.strides[3] == 0 and x.flags.c_contiguous
    assert fused.ConvReluPool in {type(u) for u in fused.plan(_one_channel_model().layers)}
    np.testing.assert_allclose(_one_channel_model().predict(x), expected, rtol=1e-12)
    cost = _one_channel_model().train_on_batch(x, backend.asarray(y), reference_optimizer())
    assert cost == pytest.approx(expected_cost, rel=1e-12)
