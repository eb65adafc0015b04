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


class LayerStats:
    """Running statistics of one layer's input patches (see the module doc)."""

    def __init__(self, layer: Layer, hessian: bool) -> None:
        self.layer = layer
        self.want_hessian = hessian
        self.rows = 0
        self.paired = False
        self._sum_q: np.ndarray | None = None
        self._sum_f: np.ndarray | None = None
        self._h: np.ndarray | None = None
        self._c: np.ndarray | None = None
        self._f: np.ndarray | None = None

    def update(self, x_q: np.ndarray, x_f: np.ndarray | None = None) -> None:
        """Add one calibration sample: the layer's input in the (partially) quantized model and,
        when it differs, in the float model."""
        pq = self.layer.patches(np.asarray(x_q, dtype=np.float64))  # (groups, rows, K)
        pf = pq if x_f is None or x_f is x_q else self.layer.patches(np.asarray(x_f, dtype=np.float64))
        self.paired |= pf is not pq
        parts = {"_sum_q": pq.sum(axis=1), "_sum_f": pf.sum(axis=1)}
        if self.want_hessian:
            parts["_h"] = _gram(pq, pq)
            if pf is not pq:
                parts["_c"], parts["_f"] = _gram(pf, pq), _gram(pf, pf)
        for name, value in parts.items():
            current = getattr(self, name)
            setattr(self, name, value if current is None else current + value)
        self.rows += pq.shape[1]

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
