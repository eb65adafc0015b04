"""Weight rounding: round-to-nearest, GPTQ (Frantar et al. 2023: quantize a layer's weight
column by column, spreading each column's rounding error over the not-yet-quantized columns
through the inverse Hessian of the layer's inputs), and the per-layer choice between them by
the layer's output error on calibration data, ‖(Ŵ − W) X‖² = tr(ΔW H ΔWᵀ).

    >>> w_hat, how = round_weight(layer, w, qp, stats, mode="auto")   # how: "nearest" | "gptq"
"""

from __future__ import annotations

import logging

import numpy as np

from mlpc.ir import QuantParams
from mlpc.quant.layers import Layer
from mlpc.quant.stats import LayerStats

logger = logging.getLogger(__name__)

DAMPING = 0.01  # GPTQ's dampening of a well-sampled Hessian (a fraction of its mean diagonal)
GPTQ_MAX_BITS = 4
GPTQ_BLOCK = 64  # columns per lazy-batch block


def _row_params(layer: Layer, qp: QuantParams, rows: int, ndim: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-row (scale, zero point) of the weight matrix, or None when the quantization axis is
    not the layer's output-channel axis (then rows do not share a grid)."""
    if qp.axis is None:
        return np.full(rows, qp.scale), np.full(rows, float(qp.zero_point))
    if qp.axis % ndim != layer.channel_axis % ndim:
        return None
    return np.asarray(qp.scale, np.float64), np.broadcast_to(np.asarray(qp.zero_point, np.float64), (rows,)).copy()


def _fake_quant(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, qp: QuantParams) -> np.ndarray:
    q = np.clip(np.round(w / scale + zp), qp.qmin, qp.qmax)
    return (q - zp) * scale


def nearest(w_rows: np.ndarray, scale: np.ndarray, zp: np.ndarray, qp: QuantParams) -> np.ndarray:
    """Round-to-nearest of an (rows, K) matrix with per-row scale/zero point; dequantized."""
    return _fake_quant(w_rows, scale[:, None], zp[:, None], qp)


def damping(k: int, rows: int) -> float:
    """The Hessian dampening (fraction of its mean diagonal) for K inputs estimated from `rows`
    input rows: GPTQ's 1 % when rows ≫ K, growing as K/rows — a Gemm seeing one row per
    calibration sample has a rank-deficient Hessian when there are fewer samples than inputs,
    and GPTQ or a least-squares fit on it would learn the calibration set, not the layer."""
    return DAMPING + k / max(rows, 1)


def gptq(w_rows: np.ndarray, hessian: np.ndarray, scale: np.ndarray, zp: np.ndarray, qp: QuantParams,
         damp: float = DAMPING) -> np.ndarray:
    """GPTQ rounding of an (rows, K) matrix given the inputs' (K, K) Hessian, dampened by `damp`
    times its mean diagonal; returns the dequantized matrix (every entry on its row's
    quantization grid). Columns go in order of decreasing Hessian diagonal ("act order"); dead
    inputs (zero diagonal) are zeroed."""
    w = w_rows.astype(np.float64).copy()
    h = hessian.astype(np.float64).copy()
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    order = np.argsort(-np.diag(h), kind="stable")
    w, h = w[:, order], h[np.ix_(order, order)]
    h[np.diag_indices_from(h)] += damp * np.mean(np.diag(h))
    try:
        hinv = np.linalg.cholesky(np.linalg.inv(h)).T  # upper Cholesky factor of H⁻¹
    except np.linalg.LinAlgError:
        logger.debug("GPTQ: Hessian not positive definite; falling back to nearest rounding")
        return nearest(w_rows, scale, zp, qp)
    s, z = scale[:, None], zp[:, None]
    qmin, qmax = qp.qmin, qp.qmax  # (properties: read once, not per column)
    out = np.zeros_like(w)
    k = w.shape[1]
    for start in range(0, k, GPTQ_BLOCK):  # "lazy batch" updates: the same result, far less memory traffic
        stop = min(start + GPTQ_BLOCK, k)
        block = w[:, start:stop].copy()
        errors = np.zeros_like(block)
        for i in range(stop - start):
            col = block[:, i : i + 1]
            q = (np.clip(np.round(col / s + z), qmin, qmax) - z) * s
            out[:, start + i : start + i + 1] = q
            err = (col - q) / hinv[start + i, start + i]
            block[:, i + 1 :] -= err @ hinv[start + i : start + i + 1, start + i + 1 : stop]
            errors[:, i : i + 1] = err
        w[:, stop:] -= errors @ hinv[start:stop, stop:]
    result = np.empty_like(out)
    result[:, order] = out
    return result


def output_error(w_rows: np.ndarray, w_hat: np.ndarray, hessian: np.ndarray, cross: np.ndarray | None = None,
                 float_gram: np.ndarray | None = None) -> float:
    """Mean squared output error E‖W x_f − Ŵ x_q‖² per input row, from H = E[x_q x_qᵀ] and,
    when the inputs differ, C = E[x_f x_qᵀ] and F = E[x_f x_fᵀ] (otherwise tr(ΔW H ΔWᵀ))."""
    def quad(a: np.ndarray, m: np.ndarray, b: np.ndarray) -> float:  # Σ_ikl a_ik m_kl b_il, through BLAS
        return float(np.sum((a @ m) * b))

    if cross is None:
        delta = w_hat - w_rows
        return quad(delta, hessian, delta)
    return quad(w_rows, float_gram, w_rows) - 2 * quad(w_rows, cross, w_hat) + quad(w_hat, hessian, w_hat)


def float_target(w_rows: np.ndarray, hessian: np.ndarray, cross: np.ndarray, damp: float = DAMPING) -> np.ndarray:
    """The unconstrained Ŵ minimising E‖W x_f − Ŵ x_q‖² + λ‖Ŵ − W‖², λ = `damp` × mean diag H:
    (W C + λW)(H + λI)⁻¹ — a ridge fit shrunk towards the float weight, not towards zero."""
    lam = damp * np.mean(np.diag(hessian))
    if lam <= 0:  # no calibration input ever reaches these columns (a dead group): any Ŵ is as good
        return w_rows.copy()
    h = hessian + lam * np.eye(len(hessian))
    return np.linalg.solve(h, (w_rows @ cross + lam * w_rows).T).T


def round_weight(
    layer: Layer, w: np.ndarray, candidates: list[QuantParams], stats: LayerStats | None, mode: str = "auto"
) -> tuple[np.ndarray, QuantParams, str]:
    """Quantize-dequantize `layer`'s weight `w` and return (ŵ on the grid, its QuantParams, the method).

    `candidates` are the grids to consider (e.g. the observer's clipped range and wider ones);
    the first is the default. mode "nearest" rounds to nearest on the first; "gptq" uses GPTQ
    (per conv group) on the first; "auto" — for weights of ≤ 4 bits with calibration Hessians —
    tries round-to-nearest and GPTQ (lightly and strongly dampened, see `damping`) on every grid
    and keeps the one with the lowest output error against the float model on held-out
    calibration samples (fitted without them; the winner is then refitted on all samples), so a
    fit that learned the calibration set loses to one that generalizes. When the layer's inputs
    already carry the error of quantized layers before it, GPTQ quantizes the least-squares
    weight that best reproduces the float outputs from the quantized inputs.
    """
    m = layer.weight_matrix(w.astype(np.float64))
    hessian = stats.hessian if stats is not None else None
    first = candidates[0]
    params = _row_params(layer, first, m.shape[0], w.ndim)
    if params is None:
        return _nearest_any_axis(w, first), first, "nearest"
    if mode == "nearest" or hessian is None or (mode == "auto" and first.bits > GPTQ_MAX_BITS):
        return layer.weight_from_matrix(nearest(m, *params, first), w.shape), first, "nearest"
    strong = damping(m.shape[1], stats.rows)
    if mode == "gptq":
        return layer.weight_from_matrix(_gptq(m, stats, *params, first, strong), w.shape), first, "gptq"
    folds = stats.folds()
    fit, judge = folds if folds is not None else (stats, stats)
    best: tuple[float, QuantParams, str, float] | None = None
    for qp in candidates:
        scale, zp = _row_params(layer, qp, m.shape[0], w.ndim)
        fits = [("nearest", 0.0, nearest(m, scale, zp, qp))]
        fits += [("gptq", d, _gptq(m, fit, scale, zp, qp, d)) for d in dict.fromkeys((DAMPING, strong))]
        for method, damp, w_hat in fits:
            err = sum(_per_group_error(m, w_hat, judge))
            logger.debug("layer %s: %s (damping %.3g) on grid %d: held-out output error %.4g", layer.name, method,
                         damp, candidates.index(qp), err)
            if best is None or err < best[0]:
                best = (err, qp, method, damp)
    assert best is not None
    _err, qp, method, damp = best
    scale, zp = _row_params(layer, qp, m.shape[0], w.ndim)
    w_hat = nearest(m, scale, zp, qp) if method == "nearest" else _gptq(m, stats, scale, zp, qp, damp)
    return layer.weight_from_matrix(w_hat, w.shape), qp, method


def _gptq(m: np.ndarray, stats: LayerStats, scale: np.ndarray, zp: np.ndarray, qp: QuantParams,
          damp: float) -> np.ndarray:
    """GPTQ of the weight matrix `m` per conv group on `stats`, towards the float target."""
    h = stats.hessian
    return _per_group(m, stats, lambda rows, g: gptq(_target(m[rows], stats, g, damp), h[g], scale[rows], zp[rows],
                                                     qp, damp))


def _target(w_rows: np.ndarray, stats: LayerStats, g: int, damp: float) -> np.ndarray:
    cross = stats.cross
    return w_rows if cross is None else float_target(w_rows, stats.hessian[g], cross[g], damp)


def _per_group(m: np.ndarray, stats: LayerStats, fn) -> np.ndarray:
    groups = stats.hessian.shape[0]
    per = m.shape[0] // groups
    out = np.empty_like(m)
    for g in range(groups):
        rows = slice(g * per, (g + 1) * per)
        out[rows] = fn(rows, g)
    return out


def _per_group_error(m: np.ndarray, w_hat: np.ndarray, stats: LayerStats) -> list[float]:
    h, c, f = stats.hessian, stats.cross, stats.float_gram
    per = m.shape[0] // h.shape[0]
    return [output_error(m[g * per : (g + 1) * per], w_hat[g * per : (g + 1) * per], h[g],
                         None if c is None else c[g], None if f is None else f[g]) for g in range(h.shape[0])]


def _nearest_any_axis(w: np.ndarray, qp: QuantParams) -> np.ndarray:
    return qp.dequantize(qp.quantize(w.astype(np.float32)), np.float64)


def bias_correction(layer: Layer, w: np.ndarray, w_hat: np.ndarray, bias: np.ndarray | None,
                    stats: LayerStats) -> np.ndarray:
    """Empirical bias correction: the bias that makes the layer's mean output on calibration
    data equal the float model's, b + W·E[x_float] − Ŵ·E[x_quant] (per conv group), so it also
    cancels the mean shift the quantized layers before it cause. Returns the corrected bias."""
    w_m, w_hat_m = layer.weight_matrix(w), layer.weight_matrix(w_hat)  # (out, K)
    float_mean, quant_mean = stats.float_mean, stats.mean
    groups = float_mean.shape[0]
    per = w_m.shape[0] // groups
    shift = np.concatenate([
        w_m[g * per : (g + 1) * per] @ float_mean[g] - w_hat_m[g * per : (g + 1) * per] @ quant_mean[g]
        for g in range(groups)
    ])
    base = np.zeros(w_m.shape[0]) if bias is None else bias.astype(np.float64)
    return base + shift
