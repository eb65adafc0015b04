"""Multi-threshold activations, derived exactly from the integer Graph's requantization.

A quantized layer of the integer Graph ends in

    acc2 = acc · 2^K + bias                                   (int32 Mul / Add, both optional)
    y    = clamp(floor((acc2 · m + r) / 2^s) + zp, qmin, qmax),   r = 2^(s−1) (0 when s = 0)

(`mlpc::Requantize`). With m > 0, y is a non-decreasing step function of the accumulator, so
it equals `qmin + #{t : acc ≥ T_t}` for the thresholds

    T_q = ceil((ceil(((q − zp) · 2^s − r) / m) − bias) / 2^K),   q = qmin+1 … qmax

computed here in Python integers (no floats anywhere), which is what the hardware compares.

Rounding convention. The integer Graph — and therefore the FPGA design — rounds
`acc2 · m / 2^s` half *up* (toward +∞: floor(v + ½)); QONNX `Quant` in the fake-quant
Graph rounds half to *even*. They differ only where `acc2 · m / 2^s` is exactly k + ½ with k
even (lower-quant documents the one-step difference). The thresholds reproduce the integer
Graph bit for bit, ties included (tests/fpga/test_thresholds.py checks every accumulator
value, among them the exact .5 ties).

    >>> thresholds_for(m=1 << 30, shift=31, zp=0, qmin=0, qmax=3)   # y = round_half_up(acc / 2)
    [1, 3, 5]
"""
from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def _ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


def thresholds_for(m: int, shift: int, zp: int, qmin: int, qmax: int, bias: int = 0, k: int = 0,
                   offset: int = 0) -> list[int | None]:
    """The qmax − qmin thresholds of one output channel, ascending: entry i is the smallest
    accumulator with y ≥ qmin + 1 + i. `offset` is added to every threshold (the hardware
    accumulates x·(w − w_zp) without the input zero point: acc_hw = acc + x_zp · Σw).
    None means the level is reached by every accumulator (−∞); a level no accumulator reaches
    gets a threshold above any reachable value only once clipped (`clip_thresholds`).

        >>> thresholds_for(m=1 << 30, shift=31, zp=0, qmin=0, qmax=3, offset=10)
        [11, 13, 15]
    """
    m, shift, zp, bias = int(m), int(shift), int(zp), int(bias)
    r = (1 << (shift - 1)) if shift > 0 else 0
    out: list[int | None] = []
    for q in range(qmin + 1, qmax + 1):
        if m <= 0:  # y is the constant clamp(floor(r / 2^s) + zp): every level at or below it is free
            const = (r >> shift) + zp
            out.append(None if q <= const else np.iinfo(np.int64).max)
            continue
        c = _ceil_div((q - zp) * (1 << shift) - r, m)  # smallest acc2 with y ≥ q
        out.append(_ceil_div(c - bias, 1 << k) + offset)
    return out


def clip_thresholds(thr: list[int | None], lo: int, hi: int) -> list[int]:
    """Clip thresholds into [lo, hi + 1] (lo/hi: the reachable accumulator range), so they fit
    the accumulator's width: below lo a level is always on, above hi never. Order is kept."""
    return [lo if t is None else int(min(max(t, lo), hi + 1)) for t in thr]


def apply_thresholds(acc: np.ndarray, thr: np.ndarray, qmin: int) -> np.ndarray:
    """What the hardware computes: qmin + the number of thresholds ≤ acc, per channel.
    `acc` is (..., channels), `thr` is (channels, levels).

        >>> apply_thresholds(np.array([[0, 3]]), np.array([[1, 3, 5], [1, 3, 5]]), 0).tolist()
        [[0, 2]]
    """
    return qmin + (acc[..., :, None] >= thr).sum(axis=-1)
