"""Per-layer input statistics gathered during calibration: the mean input patch (for bias
correction) and the Gram matrix H = Σ xᵀx of the input patches (for GPTQ and for measuring a
quantized layer's output error), per conv group.

    >>> stats = LayerStats(layer, hessian=True); stats.update(x_batch); stats.mean, stats.hessian
"""

from __future__ import annotations

import logging

import numpy as np

from mlpc.quant.layers import Layer

logger = logging.getLogger(__name__)


class LayerStats:
    """Running statistics of one layer's input patches (see `Layer.patches`)."""

    def __init__(self, layer: Layer, hessian: bool) -> None:
        self.layer = layer
        self.rows = 0
        self._sum: np.ndarray | None = None
        self._gram: np.ndarray | None = None
        self.want_hessian = hessian

    def update(self, x: np.ndarray) -> None:
        """Add one calibration sample of the layer's data input."""
        patches = self.layer.patches(np.asarray(x, dtype=np.float64))  # (groups, rows, K)
        total = patches.sum(axis=1)
        self._sum = total if self._sum is None else self._sum + total
        if self.want_hessian:
            gram = np.einsum("gri,grj->gij", patches, patches)
            self._gram = gram if self._gram is None else self._gram + gram
        self.rows += patches.shape[1]

    @property
    def mean(self) -> np.ndarray:
        """Mean input patch per group, shape (groups, K)."""
        assert self._sum is not None, "no calibration sample was observed"
        return self._sum / max(self.rows, 1)

    @property
    def hessian(self) -> np.ndarray | None:
        """Mean Gram matrix of the input patches per group, shape (groups, K, K), or None."""
        return None if self._gram is None else self._gram / max(self.rows, 1)
