"""mlpc::Requantize — int32 accumulators to int8/uint8 with a dyadic multiplier.

    y = clamp(((x · multiplier + 2^(shift−1)) >> shift) + zero_point, qmin, qmax)

computed in int64 (see `mlpc.ir.quant_params.requantize` for the rounding convention).
`multiplier` and `shift` are int32 scalars or 1-D per-channel arrays along `axis` (default 1);
`qmin`/`qmax` default to the output type's range and may be narrower: sub-byte outputs
(e.g. [−8, 7] for int4) or a folded ReLU ([zero_point, 127]).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx.reference.op_run import OpRun

from mlpc.ir.ops._registry import (
    INT8_TYPE_STRS,
    TensorSig,
    attr,
    check_dtype,
    fail,
    formal,
    mlpc_op,
    mlpc_schema,
    same_dim,
)
from mlpc.ir.quant_params import requantize

logger = logging.getLogger(__name__)

_OUT_RANGE = {ir.DataType.INT8: (-128, 127), ir.DataType.UINT8: (0, 255)}

SCHEMA = mlpc_schema(
    "Requantize",
    __doc__ or "",
    inputs=[
        formal("x", "tensor(int32)", "int32 accumulators"),
        formal("multiplier", "tensor(int32)", "fixed-point multiplier m, scalar or per channel"),
        formal("shift", "tensor(int32)", "right shift s, scalar or per channel"),
        formal("zero_point", "T", "output zero point (scalar); its type is the output type"),
    ],
    outputs=[formal("y", "T", "requantized tensor")],
    type_constraints=[("T", INT8_TYPE_STRS, "output integer type")],
    attributes=[
        attr("axis", "channel axis for per-channel multiplier/shift", 1),
        attr("qmin", "lower clamp bound (default: the output type's minimum)"),
        attr("qmax", "upper clamp bound (default: the output type's maximum)"),
    ],
)


def clamp_range(dtype: ir.DataType | None, attrs: dict[str, Any], where: str) -> tuple[int, int]:
    """The [qmin, qmax] a Requantize node clamps to, validated against its output type."""
    lo, hi = _OUT_RANGE.get(dtype, (-128, 255)) if dtype is not None else (-128, 255)
    qmin = attrs.get("qmin", lo if dtype is not None else None)
    qmax = attrs.get("qmax", hi if dtype is not None else None)
    if qmin is not None and qmax is not None:
        if qmin > qmax:
            raise fail(where, f"qmin={qmin} is greater than qmax={qmax}")
        if qmin < lo or qmax > hi:
            raise fail(where, f"clamp range [{qmin}, {qmax}] does not fit the output type range [{lo}, {hi}]")
    return qmin, qmax


def infer_requantize(
    inputs: Sequence[TensorSig | None], attrs: dict[str, Any], where: str
) -> list[TensorSig]:
    """Output = x's shape with zero_point's type; checks types, per-channel sizes and the range."""
    if len(inputs) != 4 or any(s is None for s in inputs):
        raise fail(where, "needs 4 inputs (x, multiplier, shift, zero_point)")
    x, mult, shift, zp = inputs
    check_dtype(where, "input x", x, [ir.DataType.INT32])
    check_dtype(where, "multiplier", mult, [ir.DataType.INT32])
    check_dtype(where, "shift", shift, [ir.DataType.INT32])
    check_dtype(where, "zero_point", zp, list(_OUT_RANGE))
    if zp.shape is not None and len(zp.shape) > 0 and any(d != 1 for d in zp.shape):
        raise fail(where, f"zero_point must be a scalar, got shape {list(zp.shape)}")
    axis = attrs.get("axis", 1)
    for what, sig in (("multiplier", mult), ("shift", shift)):
        if sig.shape is None or len(sig.shape) == 0:
            continue
        if len(sig.shape) > 1:
            raise fail(where, f"{what} must be a scalar or 1-D, got shape {list(sig.shape)}")
        if x.shape is not None:
            if not -len(x.shape) <= axis < len(x.shape):
                raise fail(where, f"axis={axis} is out of range for input x of rank {len(x.shape)}")
            if same_dim(sig.shape[0], x.shape[axis]) is False and sig.shape[0] != 1:
                raise fail(
                    where, f"{what} has {sig.shape[0]} channels but x has {x.shape[axis]} on axis {axis}"
                )
    clamp_range(zp.dtype, attrs, where)
    return [TensorSig(x.shape, zp.dtype)]


@mlpc_op(schema=SCHEMA, infer=infer_requantize)
class Requantize(OpRun):
    """NumPy reference kernel of mlpc::Requantize."""

    def _run(self, x, multiplier, shift, zero_point, axis=1, qmin=None, qmax=None):  # type: ignore[override]
        dtype = ir.DataType.from_numpy(zero_point.dtype)
        lo, hi = clamp_range(
            dtype,
            {k: v for k, v in (("qmin", qmin), ("qmax", qmax)) if v is not None},
            f"Requantize node {self.onnx_node.name!r}",
        )
        per_channel = np.ndim(multiplier) == 1 or np.ndim(shift) == 1
        y = requantize(
            x,
            multiplier,
            shift,
            np.reshape(zero_point, ()),
            lo,
            hi,
            axis=axis if per_channel and x.ndim > 0 else None,
        )
        return (y.astype(zero_point.dtype),)
