"""mlpc::IntegerAdd — the sum of two quantized tensors, rescaled in the integer domain.

    y = clamp((((a − a_zero_point)·a_multiplier + (b − b_zero_point)·b_multiplier
                + 2^(shift−1)) >> shift) + zero_point, qmin, qmax)

computed in int64 (numpy broadcasting between a and b). The two dyadic multipliers share one
shift: a_multiplier·2^−shift ≈ s_a/s_y and b_multiplier·2^−shift ≈ s_b/s_y, so the fake-quant
residual add Quant(â + b̂) becomes one integer op. Every parameter is a scalar; `qmin`/`qmax`
default to the output type's range and may be narrower (sub-byte outputs, a folded ReLU).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx.reference.op_run import OpRun

from mlpc.errors import QuantizationError
from mlpc.ir.ops._registry import (
    INT8_TYPE_STRS,
    INT8_TYPES,
    TensorSig,
    attr,
    check_dtype,
    fail,
    formal,
    mlpc_op,
    mlpc_schema,
)
from mlpc.ir.ops.integer_matmul import broadcast_dims
from mlpc.ir.ops.requantize import clamp_range
from mlpc.ir.quant_params import MAX_SHIFT

logger = logging.getLogger(__name__)

SCHEMA = mlpc_schema(
    "IntegerAdd",
    __doc__ or "",
    inputs=[
        formal("a", "T1", "left operand"),
        formal("b", "T2", "right operand"),
        formal("a_zero_point", "T1", "scalar zero point of a"),
        formal("b_zero_point", "T2", "scalar zero point of b"),
        formal("a_multiplier", "tensor(int32)", "scalar fixed-point multiplier of a"),
        formal("b_multiplier", "tensor(int32)", "scalar fixed-point multiplier of b"),
        formal("shift", "tensor(int32)", "scalar right shift shared by both multipliers"),
        formal("zero_point", "T3", "scalar output zero point; its type is the output type"),
    ],
    outputs=[formal("y", "T3", "requantized sum")],
    type_constraints=[
        ("T1", INT8_TYPE_STRS, "type of a"),
        ("T2", INT8_TYPE_STRS, "type of b"),
        ("T3", INT8_TYPE_STRS, "output integer type"),
    ],
    attributes=[
        attr("qmin", "lower clamp bound (default: the output type's minimum)"),
        attr("qmax", "upper clamp bound (default: the output type's maximum)"),
    ],
)


def infer_integer_add(
    inputs: Sequence[TensorSig | None], attrs: dict[str, Any], where: str
) -> list[TensorSig]:
    """Output = broadcast(a, b) shape with zero_point's type; every parameter must be a scalar."""
    if len(inputs) != 8 or any(s is None for s in inputs):
        raise fail(where, "needs 8 inputs (a, b, a_zero_point, b_zero_point, a_multiplier, b_multiplier, "
                          "shift, zero_point)")
    a, b, azp, bzp, am, bm, shift, zp = inputs
    for what, sig, allowed in (
        ("input a", a, INT8_TYPES),
        ("input b", b, INT8_TYPES),
        ("a_zero_point", azp, [a.dtype] if a.dtype is not None else INT8_TYPES),
        ("b_zero_point", bzp, [b.dtype] if b.dtype is not None else INT8_TYPES),
        ("a_multiplier", am, [ir.DataType.INT32]),
        ("b_multiplier", bm, [ir.DataType.INT32]),
        ("shift", shift, [ir.DataType.INT32]),
        ("zero_point", zp, INT8_TYPES),
    ):
        check_dtype(where, what, sig, allowed)
    for what, sig in (("a_zero_point", azp), ("b_zero_point", bzp), ("a_multiplier", am),
                      ("b_multiplier", bm), ("shift", shift), ("zero_point", zp)):
        if sig.shape is not None and any(d != 1 for d in sig.shape):
            raise fail(where, f"{what} must be a scalar, got shape {list(sig.shape)}")
    clamp_range(zp.dtype, attrs, where)
    shape = None if a.shape is None or b.shape is None else broadcast_dims(a.shape, b.shape, where)
    return [TensorSig(shape, zp.dtype)]


def integer_add(
    a: np.ndarray,
    b: np.ndarray,
    a_zero_point: Any,
    b_zero_point: Any,
    a_multiplier: Any,
    b_multiplier: Any,
    shift: Any,
    zero_point: Any,
    qmin: int,
    qmax: int,
) -> np.ndarray:
    """The IntegerAdd formula (module doc) in int64; returns an int64 array.

        >>> integer_add(np.array([10]), np.array([4]), 0, 0, 1 << 30, 1 << 29, 31, 0, -128, 127).tolist()
        [6]
    """
    s = int(np.reshape(shift, ()))
    if not 0 <= s <= MAX_SHIFT:
        raise QuantizationError(f"IntegerAdd shift must be in [0, {MAX_SHIFT}], got {s}")
    terms = [
        (np.asarray(x, dtype=np.int64) - np.int64(np.reshape(z, ()))) * np.int64(np.reshape(m, ()))
        for x, z, m in ((a, a_zero_point, a_multiplier), (b, b_zero_point, b_multiplier))
    ]
    rounding = np.int64(1 << (s - 1)) if s > 0 else np.int64(0)
    y = np.right_shift(terms[0] + terms[1] + rounding, s) + np.int64(np.reshape(zero_point, ()))
    return np.clip(y, qmin, qmax)


@mlpc_op(schema=SCHEMA, infer=infer_integer_add)
class IntegerAdd(OpRun):
    """NumPy reference kernel of mlpc::IntegerAdd."""

    def _run(  # type: ignore[override]
        self, a, b, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift, zero_point,
        qmin=None, qmax=None,
    ):
        lo, hi = clamp_range(
            ir.DataType.from_numpy(zero_point.dtype),
            {k: v for k, v in (("qmin", qmin), ("qmax", qmax)) if v is not None},
            f"IntegerAdd node {self.onnx_node.name!r}",
        )
        y = integer_add(a, b, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift, zero_point,
                        lo, hi)
        return (y.astype(zero_point.dtype),)
