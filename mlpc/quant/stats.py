"""Per-layer input statistics gathered during calibration, per conv group, over the im2col
patches of the layer's input (see `Layer.patches`):

- the mean input patch of the quantized model (x_q) and of the float model (x_f), for bias
  correction;
- H = E[x_q x_qᵀ], C = E[x_f x_qᵀ] and F = E[x_f x_fᵀ], for GPTQ and for measuring a quantized
  layer's output error against the float model, E‖W x_f − Ŵ x_q‖².

When the layer's inputs are not yet affected by quantization (x_q = x_f) only H is kept.

    >>> stats = LayerStats(layer, hessian=True); stats.update(x_q, x_f); stats.hessian
"""

from __future__ import annotations

import logging

import numpy as np

from mlpc.quant.layers import Layer

logger = logging.getLogger(__name__)


def _gram(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("gri,grj->gij", a, b)


HOLDOUT_EVERY = 4  # every 4th calibration sample is also kept apart, to validate choices on


class LayerStats:
    """Running statistics of one layer's input patches (see the module doc). Every
    `HOLDOUT_EVERY`-th sample is also summed apart, so that `folds()` can give statistics to fit
    on and held-out ones to judge a fit by."""

    def __init__(self, layer: Layer, hessian: bool) -> None:
        self.layer = layer
        self.want_hessian = hessian
        self.rows = 0
        self.samples = 0
        self.paired = False
        self._sum_q: np.ndarray | None = None
        self._sum_f: np.ndarray | None = None
        self._h: np.ndarray | None = None
        self._c: np.ndarray | None = None
        self._f: np.ndarray | None = None
        self._held: LayerStats | None = None

    def update(self, x_q: np.ndarray, x_f: np.ndarray | None = None) -> None:
        """Add one calibration sample: the layer's input in the (partially) quantized model and,
        when it differs, in the float model."""
        pq = self.layer.patches(np.asarray(x_q, dtype=np.float64))  # (groups, rows, K)
        pf = pq if x_f is None or x_f is x_q else self.layer.patches(np.asarray(x_f, dtype=np.float64))
        parts = self._parts(pq, pf)
        self._add(parts, pq.shape[1], pf is not pq)
        if self.samples % HOLDOUT_EVERY == HOLDOUT_EVERY - 1:
            if self._held is None:
                self._held = LayerStats(self.layer, self.want_hessian)
            self._held._add(parts, pq.shape[1], pf is not pq)
        self.samples += 1

    def _parts(self, pq: np.ndarray, pf: np.ndarray) -> dict[str, np.ndarray]:
        parts = {"_sum_q": pq.sum(axis=1), "_sum_f": pf.sum(axis=1)}
        if self.want_hessian:
            parts["_h"] = _gram(pq, pq)
            if pf is not pq:
                parts["_c"], parts["_f"] = _gram(pf, pq), _gram(pf, pf)
        return parts

    def _add(self, parts: dict[str, np.ndarray], rows: int, paired: bool) -> None:
        for name, value in parts.items():
            current = getattr(self, name)
            setattr(self, name, value if current is None else current + value)
        self.rows += rows
        self.paired |= paired

    def folds(self) -> tuple[LayerStats, LayerStats] | None:
        """(statistics without the held-out samples, statistics of the held-out samples), or None
        when fewer than `HOLDOUT_EVERY` samples were seen."""
        held = self._held
        if held is None:
            return None
        fit = LayerStats(self.layer, self.want_hessian)
        fit.rows, fit.samples, fit.paired = self.rows - held.rows, self.samples - held.samples, self.paired
        for name in ("_sum_q", "_sum_f", "_h", "_c", "_f"):
            total, part = getattr(self, name), getattr(held, name)
            setattr(fit, name, None if total is None else total - (0 if part is None else part))
        return fit, held

    def _avg(self, total: np.ndarray | None) -> np.ndarray | None:
        return None if total is None else total / max(self.rows, 1)

    @property
    def mean(self) -> np.ndarray:
        """Mean input patch of the quantized model per group, (groups, K)."""
        assert self._sum_q is not None, "no calibration sample was observed"
        return self._avg(self._sum_q)

    @property
    def float_mean(self) -> np.ndarray:
        """Mean input patch of the float model per group, (groups, K)."""
        assert self._sum_f is not None, "no calibration sample was observed"
        return self._avg(self._sum_f)

    @property
    def hessian(self) -> np.ndarray | None:
        """H = E[x_q x_qᵀ] per group, (groups, K, K), or None when not gathered."""
        return self._avg(self._h)

    @property
    def cross(self) -> np.ndarray | None:
        """C = E[x_f x_qᵀ] per group, or None when x_q = x_f (then C = H)."""
        return self._avg(self._c)

    @property
    def float_gram(self) -> np.ndarray | None:
        """F = E[x_f x_fᵀ] per group, or None when x_q = x_f (then F = H)."""
        return self._avg(self._f)
