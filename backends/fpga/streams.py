"""Golden models of the streaming units' beat order, in NumPy: what `mlpc_swg` and `mlpc_pool`
emit for a channels-last feature map. The tests run the Verilog against them (beat for beat,
with stalls), and check that the MVAU's weight layout times these windows is the Graph's
IntegerConv, so the three agree.

    >>> w = ConvWindow(channels=1, in_h=2, in_w=2, k_h=2, k_w=2, stride_h=1, stride_w=1,
    ...                pads=(1, 1, 0, 0), pad_value=9, out_h=2, out_w=2)
    >>> window_vectors(np.array([[[1, 2], [3, 4]]]), w)[0].tolist()   # top-left window: 3 pads
    [9, 9, 9, 1]
"""
from __future__ import annotations

import logging

import numpy as np

from mlpc.backends.fpga.network import ConvWindow, PoolLayer

logger = logging.getLogger(__name__)


def window_vectors(fmap: np.ndarray, window: ConvWindow) -> np.ndarray:
    """The windows a sliding-window generator emits for one C × H × W map: (OH·OW, KH·KW·C), one
    row per output pixel (row-major), columns in (ky, kx, c) order, `pad_value` outside the map."""
    c, h, w = fmap.shape
    top, left, bottom, right = window.pads
    padded = np.full((c, h + top + bottom, w + left + right), window.pad_value, dtype=np.int64)
    padded[:, top:top + h, left:left + w] = fmap
    rows = []
    for oy in range(window.out_h):
        for ox in range(window.out_w):
            y0, x0 = oy * window.stride_h, ox * window.stride_w
            patch = padded[:, y0:y0 + window.k_h, x0:x0 + window.k_w]  # C × KH × KW
            rows.append(patch.transpose(1, 2, 0).reshape(-1))
    return np.array(rows, dtype=np.int64)


def maxpool_map(fmap: np.ndarray, pool: PoolLayer) -> np.ndarray:
    """A max pool's output map (C × OH × OW) for one C × H × W input, floor mode."""
    c = fmap.shape[0]
    oh, ow, kh, kw = pool.out_h, pool.out_w, pool.k_h, pool.k_w
    cut = fmap[:, :oh * kh, :ow * kw].reshape(c, oh, kh, ow, kw)
    return cut.max(axis=(2, 4))


def channels_last(fmap: np.ndarray) -> np.ndarray:
    """A C × H × W map as its channels-last stream (H·W·C elements)."""
    return np.asarray(fmap).transpose(1, 2, 0).reshape(-1)
