"""mlpc::DequantMatMul — a float activation times an integer weight dequantized on the fly
(weight-only quantization, e.g. w4a16).

    y = a @ ((b − zero_point) · scale)        computed in a's float type

`b` is a constant int8/uint8 [K, N] weight holding `bits`-bit values (its QuantParams say how
many; ≤ 4-bit weights are stored packed in a compiled model and unpacked in the kernel);
`scale` (float) and `zero_point` (optional, b's type) are scalars or per column of `b` (1-D,
size N). `a` is [..., M, K]. (b − zero_point) · scale is exactly the fake-quant weight of QONNX
`Quant`, so the op equals the fake-quant MatMul it replaces.
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
    INT8_TYPES,
    TensorSig,
    check_dtype,
    fail,
    formal,
    mlpc_op,
    mlpc_schema,
    same_dim,
)
from mlpc.ir.ops.integer_matmul import matmul_shape

logger = logging.getLogger(__name__)

FLOAT_TYPES = [ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16]

SCHEMA = mlpc_schema(
    "DequantMatMul",
    __doc__ or "",
    inputs=[
        formal("a", "T", "float activation [..., M, K]"),
        formal("b", "Q", "integer weight [K, N]"),
        formal("scale", "T", "weight scale: scalar or per column"),
        formal("zero_point", "Q", "weight zero point: scalar or per column", optional=True),
    ],
    outputs=[formal("y", "T", "float product [..., M, N]")],
    type_constraints=[
        ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)"], "float type"),
        ("Q", INT8_TYPE_STRS, "integer weight type"),
    ],
)


def infer_dequant_matmul(
    inputs: Sequence[TensorSig | None], attrs: dict[str, Any], where: str
) -> list[TensorSig]:
    """Output shape by matmul rules with a 2-D weight, element type of `a`."""
    if len(inputs) < 3 or any(s is None for s in inputs[:3]):
        raise fail(where, "needs inputs a, b and scale")
    a, b, scale = inputs[0], inputs[1], inputs[2]
    zp = inputs[3] if len(inputs) > 3 else None
    check_dtype(where, "input a", a, FLOAT_TYPES)
    check_dtype(where, "input b", b, INT8_TYPES)
    check_dtype(where, "scale", scale, FLOAT_TYPES)
    check_dtype(where, "zero_point", zp, INT8_TYPES)
    if scale.dtype is not None and a.dtype is not None and scale.dtype != a.dtype:
        raise fail(where, f"scale type {scale.dtype.name} differs from a's {a.dtype.name}")
    if b.shape is not None and len(b.shape) != 2:
        raise fail(where, f"b must be a 2-D [K, N] weight, got shape {list(b.shape)}")
    if a.shape is not None and len(a.shape) < 2:
        raise fail(where, "a must have rank ≥ 2")
    for what, sig in (("scale", scale), ("zero_point", zp)):
        if sig is None or sig.shape is None or len(sig.shape) == 0:
            continue
        n = b.shape[1] if b.shape is not None else None
        if len(sig.shape) > 1 or (sig.shape[0] != 1 and same_dim(sig.shape[0], n) is False):
            raise fail(
                where,
                f"{what} must be a scalar or have one entry per column of b ({n}), got {list(sig.shape)}",
            )
    return [TensorSig(matmul_shape(a.shape, b.shape, where), a.dtype)]


def dequant_matmul(a: np.ndarray, b: np.ndarray, scale: np.ndarray, zero_point: Any = None) -> np.ndarray:
    """a @ ((b − zero_point) · scale) in a's float type."""
    w = b.astype(np.float32)
    if zero_point is not None:
        w = w - np.asarray(zero_point).astype(np.float32)
    w = (w * np.asarray(scale, np.float32)).astype(a.dtype)
    return np.matmul(a, w).astype(a.dtype)


@mlpc_op(schema=SCHEMA, infer=infer_dequant_matmul)
class DequantMatMul(OpRun):
    """NumPy reference kernel of mlpc::DequantMatMul."""

    def _run(self, a, b, scale, zero_point=None):  # type: ignore[override]
        return (dequant_matmul(a, b, scale, zero_point),)
