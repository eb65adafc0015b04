"""Converters for the ONNX Reduce* ops (axes as attribute or input, keepdims, noop_with_empty_axes)
and ArgMax/ArgMin."""
from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from tvm import relax

from mlpc.backends.tvm.context import LowerContext, const, dtype_of, shape_of
from mlpc.backends.tvm.ops_tensor import _axes_operand
from mlpc.backends.tvm.registry import converter

logger = logging.getLogger(__name__)
op = relax.op


def _square(x: relax.Expr) -> relax.Expr:
    return op.multiply(x, x)


# op_type -> (opset from which axes is an input, pre-map, reduction, post-map)
_REDUCE: dict[str, tuple[int, Callable | None, Callable, Callable | None]] = {
    "ReduceSum": (13, None, op.sum, None),
    "ReduceMean": (18, None, op.mean, None),
    "ReduceMax": (18, None, op.max, None),
    "ReduceMin": (18, None, op.min, None),
    "ReduceProd": (18, None, op.prod, None),
    "ReduceSumSquare": (18, _square, op.sum, None),
    "ReduceL1": (18, op.abs, op.sum, None),
    "ReduceL2": (18, _square, op.sum, op.sqrt),
    "ReduceLogSum": (18, None, op.sum, op.log),
    "ReduceLogSumExp": (18, op.exp, op.sum, op.log),
}


def _register_reduce(op_type: str) -> None:
    since, pre, reduce, post = _REDUCE[op_type]

    @converter(op_type)
    def _convert(ctx: LowerContext, node, inputs):
        x = inputs[0]
        ndim = len(shape_of(x))
        axes = _axes_operand(ctx, node, since)
        keepdims = bool(node.attributes.get_int("keepdims", 1))
        y = pre(x) if pre else x
        if not axes and node.attributes.get_int("noop_with_empty_axes", 0):
            # No reduction, but the element-wise parts still apply (as in the ONNX reference).
            return [post(y) if post else y]
        axes = sorted(a % ndim for a in axes) if axes else list(range(ndim))
        if op_type in ("ReduceMax", "ReduceMin"):
            return [_min_max(x, axes, keepdims, op_type == "ReduceMax")]
        y = reduce(y, axis=axes, keepdims=keepdims)
        return [post(y) if post else y]


def _min_max(x: relax.Expr, axes: list[int], keepdims: bool, is_max: bool) -> relax.Expr:
    """ReduceMax/ReduceMin, including the cases TVM cannot build or gets wrong: bool inputs
    (reduced as uint8) and an empty reduced axis (the identity: -inf/+inf or the integer limits)."""
    shape, dtype = shape_of(x), dtype_of(x)
    if any(shape[a] == 0 for a in axes):
        out = [1 if i in axes else d for i, d in enumerate(shape)] if keepdims else \
            [d for i, d in enumerate(shape) if i not in axes]
        if dtype == "bool":
            fill = np.array(not is_max)
        elif np.dtype(dtype).kind == "f":
            fill = np.array(-np.inf if is_max else np.inf, dtype)
        else:
            info = np.iinfo(dtype)
            fill = np.array(info.min if is_max else info.max, dtype)
        return const(np.full(out, fill, dtype=fill.dtype))
    fn = op.max if is_max else op.min
    if dtype == "bool":
        return op.astype(fn(op.astype(x, "uint8"), axis=axes, keepdims=keepdims), "bool")
    return fn(x, axis=axes, keepdims=keepdims)


for _op_type in _REDUCE:
    _register_reduce(_op_type)


def _register_arg(op_type: str, fn: Callable) -> None:
    @converter(op_type)
    def _convert(ctx: LowerContext, node, inputs):
        x = inputs[0]
        ndim = len(shape_of(x))
        axis = node.attributes.get_int("axis", 0) % ndim
        keepdims = bool(node.attributes.get_int("keepdims", 1))
        if node.attributes.get_int("select_last_index", 0):
            # Index of the last extreme value: search the flipped tensor, then mirror the index.
            last = relax.const(shape_of(x)[axis] - 1, "int64")
            idx = fn(op.flip(x, axis), axis=axis, keepdims=keepdims)
            return [op.subtract(last, op.astype(idx, "int64"))]
        return [op.astype(fn(x, axis=axis, keepdims=keepdims), "int64")]


_register_arg("ArgMax", op.argmax)
_register_arg("ArgMin", op.argmin)
