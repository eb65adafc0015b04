"""Observers: from observed values to a clipping range, and from a range to QuantParams.

Activation observers see one calibration sample at a time (`update(x)`) and then give
`params(spec)`: min-max (the running range), percentile, MSE-optimal clipping (the clip that
minimises the fake-quant error) and entropy (the clip minimising the KL divergence between the
value histogram and its quantized form, as TensorRT calibrates). Weights are observed all at
once, per tensor or per channel, by `weight_params`.

    >>> obs = make_observer("percentile"); obs.update(x); qp = obs.params(QuantSpec(bits=8, signed=None))
"""

from __future__ import annotations

import logging
import math

import numpy as np

from mlpc.errors import QuantizationError
from mlpc.ir import QuantParams
from mlpc.quant.scheme import QuantSpec

logger = logging.getLogger(__name__)

# Values kept per tensor by the sampling observers (percentile, mse, entropy).
MAX_SAMPLES = 1 << 18
MSE_GRID = np.linspace(0.2, 1.0, 81)
ENTROPY_BINS = 2048


def qrange(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """(qmin, qmax) of a bits-wide integer type, QONNX's narrow-range convention."""
    if signed:
        return -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(narrow)


def _po2(scale: np.ndarray) -> np.ndarray:
    return np.exp2(np.ceil(np.log2(scale)))


def range_to_params(
    lo: np.ndarray | float, hi: np.ndarray | float, spec: QuantSpec, signed: bool, axis: int | None = None
) -> QuantParams:
    """QuantParams covering [lo, hi] (scalars, or 1-D per-channel arrays with `axis`).

    Symmetric: zero point 0 and scale = max(|lo|, |hi|) / qmax (unsigned: hi / qmax).
    Asymmetric: the range is widened to include 0 and mapped onto [qmin, qmax] with an integer
    zero point. "po2" scales are rounded up to a power of two. A zero range gets scale 1.
    """
    lo = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, np.float64), 0.0)
    qmin, qmax = qrange(spec.bits, signed, spec.narrow_range)
    if spec.symmetric:
        bound = np.maximum(-lo, hi) if signed else hi
        scale = bound / qmax
        zp = np.zeros_like(scale)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zp = None
    scale = np.where(scale > 0, scale, 1.0)
    if spec.scale_kind == "po2":
        scale = _po2(scale)
    if zp is None:
        zp = np.clip(np.round(qmin - lo / scale), qmin, qmax)
    scale = scale.astype(np.float32).astype(np.float64)  # the Quant node stores float32 scales
    if axis is None:
        return QuantParams(spec.bits, signed, float(scale), int(zp), None, spec.narrow_range,
                           "po2" if spec.scale_kind == "po2" else "float")
    return QuantParams(spec.bits, signed, scale.reshape(-1), zp.reshape(-1).astype(np.int64), axis,
                       spec.narrow_range, "po2" if spec.scale_kind == "po2" else "float")


def fake_quant(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, spec: QuantSpec, signed: bool) -> np.ndarray:
    """Quantize-dequantize `x` with the range [lo, hi] broadcast against it (for range search)."""
    lo = np.minimum(lo, 0.0)
    hi = np.maximum(hi, 0.0)
    qmin, qmax = qrange(spec.bits, signed, spec.narrow_range)
    if spec.symmetric:
        scale = (np.maximum(-lo, hi) if signed else hi) / qmax
        zp = 0.0
    else:
        scale = (hi - lo) / (qmax - qmin)
    scale = np.where(scale > 0, scale, 1.0)
    if spec.scale_kind == "po2":
        scale = _po2(scale)
    if not spec.symmetric:
        zp = np.clip(np.round(qmin - lo / scale), qmin, qmax)
    return (np.clip(np.round(x / scale) + zp, qmin, qmax) - zp) * scale


def mse_range(values: np.ndarray, lo: float, hi: float, spec: QuantSpec, signed: bool) -> tuple[float, float]:
    """The clip [α·lo, α·hi] (α on a grid in [0.2, 1]) whose fake-quant has the least squared error."""
    x = values.astype(np.float64).reshape(1, -1)
    alphas = MSE_GRID.reshape(-1, 1)
    err = np.mean((fake_quant(x, alphas * lo, alphas * hi, spec, signed) - x) ** 2, axis=1)
    best = float(MSE_GRID[int(np.argmin(err))])
    return best * lo, best * hi


def entropy_range(values: np.ndarray, lo: float, hi: float, spec: QuantSpec, signed: bool) -> tuple[float, float]:
    """The clip threshold minimising KL(P‖Q) between the histogram P of |x| (of x when unsigned)
    and its quantization Q to the available levels (TensorRT's entropy calibration)."""
    mags = np.abs(values) if signed else np.maximum(values, 0.0)
    top = float(max(-lo, hi) if signed else hi)
    if top <= 0 or mags.size == 0:
        return lo, hi
    hist, edges = np.histogram(mags, bins=ENTROPY_BINS, range=(0.0, top))
    hist = hist.astype(np.float64)
    levels = (1 << (spec.bits - 1)) if signed else (1 << spec.bits)
    best_kl, best_i = math.inf, ENTROPY_BINS
    for i in range(levels, ENTROPY_BINS + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nonzero = p > 0
        idx = (np.arange(i) * levels) // i  # which quantization level each bin merges into
        mass = np.bincount(idx, weights=hist[:i], minlength=levels)
        used = np.bincount(idx, weights=nonzero, minlength=levels)
        q = np.where(nonzero, mass[idx] / np.maximum(used[idx], 1), 0.0)
        if np.any(nonzero & (q == 0)):
            continue
        ps, qs = p[nonzero] / p.sum(), q[nonzero] / q.sum()
        kl = float(np.sum(ps * np.log(ps / qs)))
        if kl < best_kl:
            best_kl, best_i = kl, i
    threshold = float(edges[best_i])
    return (-threshold if signed else min(lo, 0.0)), threshold


def select_range(values: np.ndarray, lo: float, hi: float, spec: QuantSpec, signed: bool) -> tuple[float, float]:
    """The clipping range the spec's observer chooses for `values` (true range [lo, hi])."""
    name = spec.observer_name
    if name == "minmax" or values.size == 0:
        return lo, hi
    if name == "percentile":
        if signed and spec.symmetric:
            t = float(np.percentile(np.abs(values), spec.percentile))
            return -t, t
        return float(np.percentile(values, 100.0 - spec.percentile)), float(np.percentile(values, spec.percentile))
    if name == "mse":
        return mse_range(values, lo, hi, spec, signed)
    return entropy_range(values, lo, hi, spec, signed)


class Observer:
    """Accumulates a tensor's values over calibration samples and picks its quantization range.

    Keeps the exact running min/max and, for the percentile/mse/entropy observers, a uniform
    random subsample of at most MAX_SAMPLES values. NaN/Inf raise QuantizationError naming the tensor.
    """

    def __init__(self, name: str = "", observer: str = "minmax", seed: int = 0) -> None:
        self.name = name
        self.observer = observer
        self.lo = math.inf
        self.hi = -math.inf
        self.count = 0
        self._keep = observer != "minmax"
        self._chunks: list[np.ndarray] = []
        self._kept = 0
        self._rng = np.random.default_rng(seed)

    def update(self, x: np.ndarray) -> None:
        """Observe one tensor (any shape)."""
        flat = np.asarray(x, dtype=np.float32).ravel()
        if flat.size == 0:
            return
        if not np.all(np.isfinite(flat)):
            raise QuantizationError(
                f"tensor {self.name!r} holds NaN or Inf during calibration; check the calibration data and the model's weights"
            )
        self.lo = min(self.lo, float(flat.min()))
        self.hi = max(self.hi, float(flat.max()))
        self.count += 1
        if not self._keep:
            return
        self._chunks.append(flat if flat.size <= MAX_SAMPLES else self._rng.choice(flat, MAX_SAMPLES, replace=False))
        self._kept += self._chunks[-1].size
        if self._kept > 2 * MAX_SAMPLES:
            merged = np.concatenate(self._chunks)
            self._chunks = [self._rng.choice(merged, MAX_SAMPLES, replace=False)]
            self._kept = MAX_SAMPLES

    @property
    def values(self) -> np.ndarray:
        """The kept subsample of observed values (empty for min-max)."""
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)

    def params(self, spec: QuantSpec) -> QuantParams:
        """Per-tensor QuantParams for the observed values. `spec.signed=None` means unsigned
        when no observed value is negative, signed otherwise."""
        if self.count == 0:
            raise QuantizationError(f"tensor {self.name!r} was never observed during calibration")
        signed = self.lo < 0 if spec.signed is None else bool(spec.signed)
        if spec.observer_name != self.observer:
            raise QuantizationError(
                f"tensor {self.name!r}: observed with {self.observer!r} but the spec asks for {spec.observer_name!r}"
            )
        lo, hi = select_range(self.values, self.lo, self.hi, spec, signed)
        return range_to_params(lo, hi, spec, signed)


def make_observer(observer: str, name: str = "") -> Observer:
    """A new Observer of the named kind (minmax, percentile, mse, entropy)."""
    return Observer(name, observer)


def weight_params(w: np.ndarray, spec: QuantSpec, channel_axis: int, name: str = "", clip: float = 1.0) -> QuantParams:
    """QuantParams for a constant weight: per channel along `spec.axis` (default `channel_axis`)
    or per tensor, with the spec's observer choosing each channel's clipping range (then
    multiplied by `clip`).

    Raises QuantizationError for NaN/Inf weights or an axis the weight does not have.
    """
    w = np.asarray(w, dtype=np.float64)
    if not np.all(np.isfinite(w)):
        raise QuantizationError(f"weight {name!r} holds NaN or Inf; fix the model before quantizing it")
    signed = True if spec.signed is None else bool(spec.signed)
    if spec.granularity == "per_tensor":
        lo, hi = select_range(w.ravel(), float(w.min()), float(w.max()), spec, signed)
        return range_to_params(clip * lo, clip * hi, spec, signed)
    axis = channel_axis if spec.axis is None else spec.axis
    if not -w.ndim <= axis < w.ndim:
        raise QuantizationError(
            f"weight {name!r} has shape {list(w.shape)}: per-channel axis {axis} does not exist (rank {w.ndim})"
        )
    axis %= w.ndim
    rows = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    lo, hi = rows.min(axis=1), rows.max(axis=1)
    if spec.observer_name == "mse":
        lo, hi = _mse_rows(rows, lo, hi, spec, signed)
    elif spec.observer_name != "minmax":
        picked = [select_range(r, float(a), float(b), spec, signed) for r, a, b in zip(rows, lo, hi)]
        lo, hi = np.array([p[0] for p in picked]), np.array([p[1] for p in picked])
    return range_to_params(clip * lo, clip * hi, spec, signed, axis)


def _mse_rows(rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, spec: QuantSpec, signed: bool):
    """Per-row MSE-optimal clip ratios, vectorised over rows and the ratio grid."""
    alphas = MSE_GRID.reshape(-1, 1, 1)
    x = rows[None]
    err = np.mean((fake_quant(x, alphas * lo[None, :, None], alphas * hi[None, :, None], spec, signed) - x) ** 2, axis=2)
    best = MSE_GRID[np.argmin(err, axis=0)]
    return best * lo, best * hi
