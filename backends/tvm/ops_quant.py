"""Converters for quantization ops: ONNX QuantizeLinear/DequantizeLinear (per tensor and per
axis, int8/uint8/int16/int32 and, from opset 21, int4/uint4 carried in int8/uint8 storage) and
QONNX Quant/BipolarQuant.

Quantization is q = saturate(round_half_even(x / scale) + zero_point), dequantization
x = (q - zero_point) * scale, both computed in the scale's float type.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from tvm import relax

from mlpc.backends.tvm.context import LowerContext, const, dtype_of, require, shape_of
from mlpc.backends.tvm.ops_elementwise import scalar
from mlpc.backends.tvm.registry import QONNX_DOMAINS, converter

logger = logging.getLogger(__name__)
op = relax.op

_INT_RANGE = {
    "int4": (-8, 7), "uint4": (0, 15), "int8": (-128, 127), "uint8": (0, 255),
    "int16": (-32768, 32767), "uint16": (0, 65535), "int32": (-(2**31), 2**31 - 1),
}


def _operand(ctx: LowerContext, node: ir.Node, index: int, expr: relax.Expr | None) -> relax.Expr | None:
    """Return input `index` as a Relax expression; sub-byte constants are widened to 8 bits."""
    if expr is not None or index >= len(node.inputs) or node.inputs[index] is None:
        return expr
    arr = ctx.const_input(node, index, "quantization parameter")
    wide = np.int8 if node.inputs[index].dtype == ir.DataType.INT4 else np.uint8
    return const(np.asarray(arr).astype(wide))


def _per_axis(param: relax.Expr, x_shape: tuple[int, ...], axis: int) -> relax.Expr:
    """Reshape a 1-D per-axis parameter so it broadcasts along `axis` of a tensor of `x_shape`."""
    if len(shape_of(param)) != 1 or len(x_shape) <= 1:
        return param
    bshape = [1] * len(x_shape)
    bshape[axis % len(x_shape)] = shape_of(param)[0]
    return op.reshape(param, bshape)


def _qdq_check(node: ir.Node, opset: int) -> str | None:
    if node.attributes.get_int("block_size", 0):
        return f"blocked {node.op_type} (block_size > 0) is not supported"
    dtypes = [v.dtype for v in node.inputs[:1] + node.outputs[:1] + node.inputs[2:3] if v is not None]
    if any(d is not None and d.name.startswith("FLOAT8") for d in dtypes):
        return f"float8 {node.op_type} is not supported"
    return None


@converter("QuantizeLinear", check=_qdq_check)
def _quantize_linear(ctx: LowerContext, node, inputs):
    x, scale = inputs[0], inputs[1]
    zp = _operand(ctx, node, 2, inputs[2] if len(inputs) > 2 else None)
    out_dtype = ctx.dtype(node.outputs[0])  # int4/uint4 are stored in int8/uint8
    lo, hi = _INT_RANGE[node.outputs[0].dtype.name.lower()]
    axis = node.attributes.get_int("axis", 1)
    xs = shape_of(x)
    scale = _per_axis(scale, xs, axis)
    if dtype_of(x) != dtype_of(scale):
        x = op.astype(x, dtype_of(scale))
    q = op.round(op.divide(x, scale))
    if zp is not None:
        q = op.add(q, op.astype(_per_axis(zp, xs, axis), dtype_of(scale)))
    q = op.minimum(op.maximum(q, scalar(lo, scale)), scalar(hi, scale))
    return [op.astype(q, out_dtype)]


@converter("DequantizeLinear", check=_qdq_check)
def _dequantize_linear(ctx: LowerContext, node, inputs):
    x = _operand(ctx, node, 0, inputs[0])
    scale = inputs[1]
    zp = _operand(ctx, node, 2, inputs[2] if len(inputs) > 2 else None)
    axis = node.attributes.get_int("axis", 1)
    xs = shape_of(x)
    scale = _per_axis(scale, xs, axis)
    fdtype = dtype_of(scale)
    if zp is not None and dtype_of(x) == "int32":
        # int32 (bias) values: subtract in int32 before converting, as onnxruntime does.
        x = op.subtract(x, _per_axis(zp, xs, axis))
        zp = None
    y = op.astype(x, fdtype)
    if zp is not None:
        y = op.subtract(y, op.astype(_per_axis(zp, xs, axis), fdtype))
    return [op.multiply(y, scale)]


# -- QONNX ------------------------------------------------------------------------------

_ROUNDING = {
    "ROUND": op.round,  # half to even, like np.round
    "ROUND_TO_ZERO": op.trunc,
    "CEIL": op.ceil,
    "FLOOR": op.floor,
}


def qonnx_int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """Return QONNX's (min, max) integer for a bit width, signedness and narrow range."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


def _quant_check(node: ir.Node, opset: int) -> str | None:
    mode = node.attributes.get_string("rounding_mode", "ROUND").upper()
    return None if mode in _ROUNDING else f"Quant rounding_mode {mode!r} is not supported"


def _const_bits(ctx: LowerContext, node: ir.Node, index: int, what: str) -> int:
    bits = float(np.asarray(ctx.const_input(node, index, what)).reshape(-1)[0])
    require(bits == int(bits) and bits >= 1, node, f"{what} {bits} must be a positive integer")
    return int(bits)


def _as_float(expr: relax.Expr, fdtype: str) -> relax.Expr:
    return op.astype(expr, fdtype) if dtype_of(expr) != fdtype else expr


@converter("IntQuant", QONNX_DOMAINS, check=_quant_check)
@converter("Quant", QONNX_DOMAINS, check=_quant_check)
def _qonnx_quant(ctx: LowerContext, node, inputs):
    x, scale, zp = inputs[0], inputs[1], inputs[2]
    bits = _const_bits(ctx, node, 3, "bitwidth")
    signed = bool(node.attributes.get_int("signed", 1))
    narrow = bool(node.attributes.get_int("narrow", 0))
    fdtype = dtype_of(x)
    scale, zp = _as_float(scale, fdtype), _as_float(zp, fdtype)
    y = op.add(op.divide(x, scale), zp)
    if bits == 1 and signed:
        # QONNX treats a signed 1-bit Quant as bipolar: +1 for y >= 0, else -1.
        return [op.multiply(_bipolar(y), scale)]
    lo, hi = qonnx_int_range(bits, signed, narrow)
    y = op.minimum(op.maximum(y, scalar(lo, y)), scalar(hi, y))
    y = _ROUNDING[node.attributes.get_string("rounding_mode", "ROUND").upper()](y)
    return [op.multiply(op.subtract(y, zp), scale)]


def _bipolar(x: relax.Expr) -> relax.Expr:
    return op.where(op.greater_equal(x, scalar(0.0, x)), scalar(1.0, x), scalar(-1.0, x))


@converter("BipolarQuant", QONNX_DOMAINS)
def _bipolar_quant(ctx: LowerContext, node, inputs):
    x, scale = inputs[0], inputs[1]
    return [op.multiply(_bipolar(x), op.astype(scale, dtype_of(x)))]


@converter("Trunc", QONNX_DOMAINS, check=_quant_check)
def _qonnx_trunc(ctx: LowerContext, node, inputs):
    """QONNX Trunc: version 1 has 5 inputs (x, scale, zeropt, in_bits, out_bits), version 2 has 6
    (x, scale, zeropt, in_bits, out_scale, out_bits) and clamps to the output range."""
    x = inputs[0]
    fdtype = dtype_of(x)
    scale, zp = _as_float(inputs[1], fdtype), _as_float(inputs[2], fdtype)
    rnd = _ROUNDING[node.attributes.get_string("rounding_mode", "FLOOR").upper()]
    y = op.round(op.add(op.divide(x, scale), zp))
    if len(inputs) == 5:
        shift = _const_bits(ctx, node, 3, "in_bitwidth") - _const_bits(ctx, node, 4, "out_bitwidth")
        y = rnd(op.divide(y, scalar(2.0**shift, y)))
        return [op.multiply(op.subtract(y, zp), scale)]
    require(len(inputs) == 6, node, f"Trunc takes 5 or 6 inputs, got {len(inputs)}")
    out_scale = _as_float(inputs[4], fdtype)
    bits = _const_bits(ctx, node, 5, "out_bitwidth")
    # The truncation scale is the power of two nearest to out_scale / scale.
    log2_ratio = op.divide(op.log(op.divide(out_scale, scale)), scalar(np.log(2.0), y))
    trunc_scale = op.power(scalar(2.0, y), op.round(log2_ratio))
    y = op.divide(y, trunc_scale)
    signed = bool(node.attributes.get_int("signed", 1))
    lo, hi = qonnx_int_range(bits, signed, bool(node.attributes.get_int("narrow", 0)))
    y = rnd(op.minimum(op.maximum(y, scalar(lo, y)), scalar(hi, y)))
    return [op.multiply(op.subtract(y, op.divide(zp, trunc_scale)), out_scale)]
