"""mlpc::IntegerMatMul — int8/uint8 matrix product with int32 accumulation.

    y = (a − a_zero_point) @ (b − b_zero_point)          (numpy matmul rules, incl. batching)

Zero points are optional; as in ONNX MatMulInteger, a_zero_point is a scalar or per row of
`a` (1-D, size M) and b_zero_point a scalar or per column of `b` (1-D, size N). Sums wrap
modulo 2^32 exactly as an int32 accumulator would.
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
    Dim,
    TensorSig,
    check_dtype,
    fail,
    formal,
    mlpc_op,
    mlpc_schema,
    same_dim,
)

logger = logging.getLogger(__name__)

SCHEMA = mlpc_schema(
    "IntegerMatMul",
    __doc__ or "",
    inputs=[
        formal("a", "T1", "left operand"),
        formal("b", "T2", "right operand"),
        formal("a_zero_point", "T1", "zero point of a: scalar or per row", optional=True),
        formal("b_zero_point", "T2", "zero point of b: scalar or per column", optional=True),
    ],
    outputs=[formal("y", "tensor(int32)", "int32 product")],
    type_constraints=[
        ("T1", INT8_TYPE_STRS, "type of a"),
        ("T2", INT8_TYPE_STRS, "type of b"),
    ],
)


def broadcast_dims(a: Sequence[Dim], b: Sequence[Dim], where: str) -> tuple[Dim, ...]:
    """Numpy broadcast of two dim lists (known, symbolic or None dims)."""
    out: list[Dim] = []
    n = max(len(a), len(b))
    a = [1] * (n - len(a)) + list(a)
    b = [1] * (n - len(b)) + list(b)
    for da, db in zip(a, b):
        if da == 1:
            out.append(db)
        elif db == 1 or da == db:
            out.append(da)
        elif isinstance(da, int) and isinstance(db, int):
            raise fail(where, f"batch dimensions {da} and {db} do not broadcast")
        else:
            out.append(da if isinstance(da, int) else db if isinstance(db, int) else None)
    return tuple(out)


def matmul_shape(a: tuple[Dim, ...] | None, b: tuple[Dim, ...] | None, where: str) -> tuple[Dim, ...] | None:
    """Output shape of numpy matmul(a, b); None when either rank is unknown."""
    if a is None or b is None:
        return None
    if len(a) == 0 or len(b) == 0:
        raise fail(where, "matmul operands must have rank ≥ 1")
    a2 = (1, *a) if len(a) == 1 else a
    b2 = (*b, 1) if len(b) == 1 else b
    if same_dim(a2[-1], b2[-2]) is False:
        raise fail(where, f"inner dimensions differ: a has K={a2[-1]}, b has K={b2[-2]}")
    shape = (*broadcast_dims(a2[:-2], b2[:-2], where), a2[-2], b2[-1])
    if len(a) == 1:
        shape = shape[:-2] + shape[-1:]
    if len(b) == 1:
        shape = shape[:-1]
    return shape


def _check_zero_point(where: str, what: str, zp: TensorSig | None, size: Dim) -> None:
    if zp is None or zp.shape is None or len(zp.shape) == 0:
        return
    if len(zp.shape) > 1:
        raise fail(where, f"{what} must be a scalar or 1-D, got shape {list(zp.shape)}")
    if zp.shape[0] != 1 and same_dim(zp.shape[0], size) is False:
        raise fail(where, f"{what} has {zp.shape[0]} entries, expected 1 or {size}")


def infer_integer_matmul(
    inputs: Sequence[TensorSig | None], attrs: dict[str, Any], where: str
) -> list[TensorSig]:
    """Output shape by numpy matmul rules, element type int32."""
    if len(inputs) < 2 or inputs[0] is None or inputs[1] is None:
        raise fail(where, "needs inputs a and b")
    a, b = inputs[0], inputs[1]
    azp = inputs[2] if len(inputs) > 2 else None
    bzp = inputs[3] if len(inputs) > 3 else None
    for what, sig in (("input a", a), ("input b", b), ("a_zero_point", azp), ("b_zero_point", bzp)):
        check_dtype(where, what, sig, INT8_TYPES)
    if azp is not None and a.dtype is not None and azp.dtype is not None and azp.dtype != a.dtype:
        raise fail(where, f"a_zero_point type {azp.dtype.name} differs from a's {a.dtype.name}")
    if bzp is not None and b.dtype is not None and bzp.dtype is not None and bzp.dtype != b.dtype:
        raise fail(where, f"b_zero_point type {bzp.dtype.name} differs from b's {b.dtype.name}")
    shape = matmul_shape(a.shape, b.shape, where)
    if a.shape is not None:
        _check_zero_point(where, "a_zero_point", azp, a.shape[-2] if len(a.shape) > 1 else 1)
    if b.shape is not None:
        _check_zero_point(where, "b_zero_point", bzp, b.shape[-1] if len(b.shape) > 1 else 1)
    return [TensorSig(shape, ir.DataType.INT32)]


def integer_matmul(
    a: np.ndarray, b: np.ndarray, a_zero_point: Any = None, b_zero_point: Any = None
) -> np.ndarray:
    """(a − a_zero_point) @ (b − b_zero_point) with int32 wrap-around accumulation."""
    a64 = a.astype(np.int64)
    b64 = b.astype(np.int64)
    if a_zero_point is not None:
        azp = np.asarray(a_zero_point, dtype=np.int64)
        a64 = a64 - (azp.reshape(-1, 1) if azp.ndim == 1 and a.ndim > 1 else azp)
    if b_zero_point is not None:
        b64 = b64 - np.asarray(b_zero_point, dtype=np.int64)
    return np.matmul(a64, b64).astype(np.int32)


@mlpc_op(schema=SCHEMA, infer=infer_integer_matmul)
class IntegerMatMul(OpRun):
    """NumPy reference kernel of mlpc::IntegerMatMul."""

    def _run(self, a, b, a_zero_point=None, b_zero_point=None):  # type: ignore[override]
        return (integer_matmul(a, b, a_zero_point, b_zero_point),)
