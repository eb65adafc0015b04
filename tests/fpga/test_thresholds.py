"""Multi-thresholds against mlpc's Requantize (the integer Graph's rounding), ties included."""
from __future__ import annotations

import numpy as np
import pytest

from mlpc.backends.fpga.thresholds import apply_thresholds, clip_thresholds, thresholds_for
from mlpc.ir import dyadic
from mlpc.ir.quant_params import requantize


def _reference(acc, m, shift, zp, qmin, qmax, bias=0, k=0):
    return requantize(acc * (1 << k) + bias, m, shift, zp, qmin, qmax)


@pytest.mark.parametrize("multiplier", [0.5, 0.25, 1.5, 0.1234, 3.0, 0.013])
@pytest.mark.parametrize("zp,qmin,qmax", [(0, 0, 3), (0, -2, 1), (0, -8, 7), (3, 0, 15), (-1, -128, 127)])
@pytest.mark.parametrize("bias,k", [(0, 0), (7, 0), (-13, 2)])
def test_thresholds_equal_requantize_on_every_accumulator(multiplier, zp, qmin, qmax, bias, k):
    m, shift = dyadic(multiplier)
    acc = np.arange(-3000, 3001, dtype=np.int64)
    want = _reference(acc, m, shift, zp, qmin, qmax, bias, k)
    thr = clip_thresholds(thresholds_for(m, shift, zp, qmin, qmax, bias, k), int(acc.min()), int(acc.max()))
    got = apply_thresholds(acc[:, None], np.array([thr]), qmin)[:, 0]
    assert np.array_equal(got, want)


def test_ties_round_half_up_like_the_integer_graph():
    # multiplier 1/2: odd accumulators are exact .5 ties; half-up gives 1, 2, 3 for acc 1, 3, 5,
    # where QONNX's half-to-even would give 0, 2, 2.
    m, shift = dyadic(0.5)
    acc = np.array([1, 3, 5, -1, -3])
    thr = thresholds_for(m, shift, 0, -4, 3)
    got = apply_thresholds(acc[:, None], np.array([clip_thresholds(thr, -10, 10)]), -4)[:, 0]
    assert got.tolist() == [1, 2, 3, 0, -1]
    assert got.tolist() == _reference(acc, m, shift, 0, -4, 3).tolist()
    assert np.round(acc / 2).tolist() != got.tolist()  # numpy rounds half to even: the other convention


def test_input_zero_point_offset_shifts_thresholds():
    m, shift = dyadic(0.5)
    assert thresholds_for(m, shift, 0, 0, 3, offset=10) == [t + 10 for t in thresholds_for(m, shift, 0, 0, 3)]
