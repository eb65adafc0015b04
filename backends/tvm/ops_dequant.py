"""The converter for `mlpc::DequantMatMul` (weight-only quantization, e.g. w4a16).

The integer weight is a constant: ≤ 4-bit weights are packed (`packing.pack_rows`, two 4-bit or
four 2-bit values per byte along K), wider ones kept as int8/uint8 rows. One TE function holds

    a16[..., m, k]   = a in the compute dtype                                (activation stage)
    w[n, k]          = ((decode(Wp)[n, k] − zp[n]) · scale[n]) in the compute dtype  (dequantize)
    y[..., m, n]     = Σ_k float32(a16) · float32(w)                          (float32 accumulation)

so the weight is unpacked inside the kernel (GPU schedules inline the dequantize stage into
their weight loads), never materialized, and FoldConstant cannot fold it. The compute dtype is
the build's (`LowerContext.float_dtype`): float16 for `--dtype fp16` CUDA builds (the a16 of
w4a16), float32 otherwise. The result is float32.
"""

from __future__ import annotations

import logging

import numpy as np
from tvm import te

from mlpc.backends.tvm.context import LowerContext, const
from mlpc.backends.tvm.packing import decode, pack_rows
from mlpc.backends.tvm.registry import converter
from mlpc.ir import MLPC_DOMAIN, get_quant

logger = logging.getLogger(__name__)


def dequant_matmul(
    a: te.Tensor,
    wp: te.Tensor,
    scale: te.Tensor,
    *zero_point: te.Tensor,
    depth: int,
    bits: int | None,
    signed: bool,
    dtype: str,
) -> te.Tensor:
    """a [..., M, K] times the weight held in `wp` — `pack_rows` bytes [N, ceil(K/per)] of
    `bits`-bit values, or (bits None) integer rows [N, K] — dequantized with `scale` [N] and the
    optional `zero_point` [N] (int32); products in `dtype`, accumulated in float32."""
    n = wp.shape[0]

    def dequantize(col, r):
        v = decode(wp, col, r, bits, signed) if bits is not None else wp[col, r].astype("int32")
        if zero_point:
            v = v - zero_point[0][col]
        return (v.astype("float32") * scale[col]).astype(dtype)

    w = te.compute((n, depth), dequantize, name="dequantize")
    a16 = te.compute(a.shape, lambda *i: a(*i).astype(dtype), name="activation")
    rk = te.reduce_axis((0, depth), name="k")

    def body(*idx):
        *lead, col = idx
        return te.sum(a16[(*lead, rk)].astype("float32") * w[col, rk].astype("float32"), axis=rk)

    return te.compute((*a.shape[:-1], n), body, name="dequant_matmul")


@converter("DequantMatMul", MLPC_DOMAIN)
def _dequant_matmul(ctx: LowerContext, node, inputs):
    q = ctx.const_input(node, 1, "weight")  # [K, N]
    scale = np.asarray(ctx.const_input(node, 2, "scale"), np.float32).reshape(-1)
    zp = ctx.const_input(node, 3, "zero point") if len(node.inputs) > 3 else None
    k, n = q.shape
    qp = get_quant(node.inputs[1])
    bits = qp.bits if qp is not None and qp.bits <= 4 else None
    rows = np.ascontiguousarray(q.T)
    weight = const(pack_rows(rows, bits)) if bits is not None else const(rows)
    extra = (
        []
        if zp is None or not np.any(zp)
        else [const(np.broadcast_to(np.asarray(zp, np.int32).reshape(-1), (n,)).copy())]
    )
    y = ctx.emit_te(
        dequant_matmul,
        inputs[0],
        weight,
        const(np.broadcast_to(scale, (n,)).copy()),
        *extra,
        depth=k,
        bits=bits,
        signed=bool(q.dtype == np.int8),
        dtype=ctx.float_dtype,
    )
    return [y]
