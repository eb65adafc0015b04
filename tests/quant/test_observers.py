"""Observers and range → QuantParams, against hand computations."""
from __future__ import annotations

import numpy as np
import pytest

from mlpc.errors import QuantizationError
from mlpc.quant.observers import MSE_GRID, Observer, fake_quant, range_to_params, weight_params
from mlpc.quant.scheme import QuantSpec


def test_range_to_params_by_hand():
    # symmetric signed 8-bit: scale = max|x| / 127
    qp = range_to_params(-2.0, 1.0, QuantSpec(bits=8), signed=True)
    assert qp.scale == pytest.approx(2.0 / 127) and qp.zero_point == 0 and (qp.qmin, qp.qmax) == (-128, 127)
    # unsigned 4-bit: scale = max / 15
    qp = range_to_params(0.0, 3.0, QuantSpec(bits=4, signed=None), signed=False)
    assert qp.scale == pytest.approx(0.2) and not qp.signed and qp.qmax == 15
    # asymmetric unsigned 8-bit over [-1, 3]: scale 4/255, zero point round(1/scale) = 64
    qp = range_to_params(-1.0, 3.0, QuantSpec(bits=8, symmetric=False), signed=False)
    assert qp.scale == pytest.approx(4 / 255, rel=1e-6) and qp.zero_point == 64
    # power-of-two scales round up: 1/127 → 2^-6
    qp = range_to_params(-1.0, 1.0, QuantSpec(bits=8, scale_kind="po2"), signed=True)
    assert qp.scale == 2.0**-6 and qp.scale_kind == "po2"
    # narrow range 2-bit signed: {-1, 0, 1}, scale = max|x|
    qp = range_to_params(-0.5, 0.25, QuantSpec(bits=2, narrow_range=True), signed=True)
    assert (qp.qmin, qp.qmax) == (-1, 1) and qp.scale == pytest.approx(0.5)


def test_minmax_observer_over_samples():
    obs = Observer("t", "minmax")
    obs.update(np.array([0.5, 1.0, 2.0]))
    obs.update(np.array([[0.1, 3.0]]))
    qp = obs.params(QuantSpec(bits=8, signed=None))
    assert (obs.lo, obs.hi) == (pytest.approx(0.1), 3.0)
    assert not qp.signed and qp.scale == pytest.approx(3.0 / 255)
    obs.update(np.array([-1.5]))
    qp = obs.params(QuantSpec(bits=8, signed=None))
    assert qp.signed and qp.scale == pytest.approx(3.0 / 127)


def test_percentile_observer_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(20000).astype(np.float32)
    obs = Observer("t", "percentile")
    for chunk in np.split(x, 4):
        obs.update(chunk)
    qp = obs.params(QuantSpec(bits=8, signed=None, observer="percentile", percentile=99.0))
    expected = np.percentile(np.abs(x), 99.0) / 127
    assert qp.scale == pytest.approx(expected, rel=1e-5)


def test_mse_observer_is_grid_optimal():
    rng = np.random.default_rng(1)
    x = rng.laplace(size=5000).astype(np.float32)
    spec = QuantSpec(bits=4, signed=True, observer="mse")
    obs = Observer("t", "mse")
    obs.update(x)
    qp = obs.params(spec)
    # brute force over the same grid by hand
    amax = np.abs(x).max()
    errors = []
    for a in MSE_GRID:
        s = a * amax / 7
        errors.append(np.mean((np.clip(np.round(x / s), -8, 7) * s - x) ** 2))
    best = MSE_GRID[int(np.argmin(errors))] * amax / 7
    assert qp.scale == pytest.approx(best, rel=1e-6)
    assert qp.scale < amax / 7  # a heavy-tailed distribution is clipped


def test_entropy_observer_clips_outliers_not_uniform():
    rng = np.random.default_rng(2)
    heavy = np.concatenate([rng.standard_normal(50000), [40.0]]).astype(np.float32)
    obs = Observer("t", "entropy")
    obs.update(heavy)
    qp = obs.params(QuantSpec(bits=8, signed=None, observer="entropy"))
    assert qp.scale * 127 < 10.0  # the outlier at 40 is clipped away
    flat = rng.uniform(0, 1, 50000).astype(np.float32)
    obs = Observer("u", "entropy")
    obs.update(flat)
    qp = obs.params(QuantSpec(bits=8, signed=None, observer="entropy"))
    assert qp.scale * 255 > 0.9  # nothing to clip in a uniform distribution


def test_observer_rejects_nan_and_unobserved():
    obs = Observer("act", "minmax")
    with pytest.raises(QuantizationError, match="'act' holds NaN or Inf"):
        obs.update(np.array([1.0, np.inf]))
    with pytest.raises(QuantizationError, match="never observed"):
        Observer("b").params(QuantSpec())


def test_weight_params_per_channel_by_hand():
    w = np.array([[[[1.0, -2.0]]], [[[0.5, 0.25]]]], np.float32)  # (2, 1, 1, 2)
    qp = weight_params(w, QuantSpec(bits=8, granularity="per_channel", observer="minmax"), channel_axis=0)
    assert qp.axis == 0 and np.allclose(qp.scale, [2.0 / 127, 0.5 / 127])
    qp = weight_params(w, QuantSpec(bits=8, granularity="per_tensor", observer="minmax"), channel_axis=0)
    assert qp.axis is None and qp.scale == pytest.approx(2.0 / 127)
    with pytest.raises(QuantizationError, match="per-channel axis 5 does not exist"):
        weight_params(w, QuantSpec(granularity="per_channel", axis=5), channel_axis=0)
    with pytest.raises(QuantizationError, match="NaN or Inf"):
        weight_params(np.array([np.nan]), QuantSpec(), channel_axis=0)


def test_fake_quant_matches_quant_params():
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1000)
    spec = QuantSpec(bits=3, symmetric=False)
    qp = range_to_params(-1.0, 2.0, spec, signed=False)
    expected = qp.dequantize(qp.quantize(x), np.float64)
    assert np.allclose(fake_quant(x, -1.0, 2.0, spec, False), expected, atol=1e-6)
