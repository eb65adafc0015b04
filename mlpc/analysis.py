"""Model statistics for `mlpc inspect`: ops, parameters, MACs and FLOPs, input/output shapes."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)


def value_info(value: ir.Value) -> dict[str, Any]:
    """Return {name, shape, dtype} of a value (symbolic dims as strings)."""
    shape = None
    if value.shape is not None:
        shape = [d if isinstance(d, int) else str(getattr(d, "value", None) or "?") for d in value.shape.dims]
    dtype = value.dtype.name.lower() if value.dtype is not None else None
    return {"name": value.name, "shape": shape, "dtype": _numpy_dtype_name(value.dtype) or dtype}


def _numpy_dtype_name(dtype: ir.DataType | None) -> str | None:
    if dtype is None:
        return None
    try:
        return np.dtype(dtype.numpy()).name
    except (TypeError, ValueError):
        return None


def node_macs(node: ir.Node) -> int:
    """Multiply-accumulates of a Conv, ConvTranspose, Gemm, MatMul, mlpc::ConvNHWC, mlpc::Attention,
    mlpc::IntegerConv or mlpc::IntegerMatMul node (0 for other ops or unknown shapes)."""
    out = node.outputs[0] if node.outputs else None
    shapes = [_static(v) for v in node.inputs]
    out_shape = _static(out) if out is not None else None
    op = node.op_type
    if op in ("Conv", "ConvNHWC", "IntegerConv") and out_shape and shapes[1]:  # (all three: Conv's weight layout)
        return int(np.prod(out_shape)) * int(np.prod(shapes[1][1:]))
    if op == "Attention" and out_shape and shapes[0] and shapes[1]:  # mlpc::Attention: Q·KT, then P·V
        return int(np.prod(out_shape[:-1])) * shapes[1][-1] * (shapes[0][-1] + out_shape[-1])
    if op == "ConvTranspose" and shapes[0] and shapes[1]:
        # weight is (C_in, C_out/group, *kernel): each input element feeds C_out/group · |kernel| outputs
        return int(np.prod(shapes[0])) * int(np.prod(shapes[1][1:]))
    if op in ("Gemm", "MatMul", "IntegerMatMul") and out_shape and shapes[0]:
        k = shapes[0][0] if op == "Gemm" and node.attributes.get_int("transA", 0) else shapes[0][-1]
        return int(np.prod(out_shape)) * int(k)
    return 0


def model_stats(graph: ir.Graph) -> dict[str, Any]:
    """Return counts of ops, parameters (elements and bytes), MACs/FLOPs and the input/output shapes."""
    ops = Counter(
        node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}" for node in graph
    )
    params = 0
    param_bytes = 0
    for value in graph.initializers.values():
        if value.const_value is not None:
            params += int(np.prod(value.const_value.shape.numpy()))
            param_bytes += value.const_value.nbytes
    macs_by_op: Counter[str] = Counter()
    for node in graph:
        macs = node_macs(node)
        if macs:
            macs_by_op[node.op_type] += macs
    total = sum(macs_by_op.values())
    return {
        "nodes": len(graph),
        "ops": dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        "parameters": params,
        "parameter_bytes": param_bytes,
        "macs": total,
        "flops": 2 * total,
        "macs_by_op": dict(macs_by_op),
        "inputs": [value_info(v) for v in graph.inputs],
        "outputs": [value_info(v) for v in graph.outputs],
    }


def _static(value: ir.Value | None) -> tuple[int, ...] | None:
    if value is None or value.shape is None:
        return None
    dims = value.shape.dims
    return tuple(dims) if all(isinstance(d, int) for d in dims) else None
