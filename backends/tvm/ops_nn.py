"""Converters for neural-network ONNX ops: Conv, ConvTranspose, Gemm, MatMul, pooling,
normalization and softmax."""
from __future__ import annotations

import logging
import math

import numpy as np
import onnx_ir as ir
from tvm import relax, topi

from mlpc.backends.tvm.context import LowerContext, const, dtype_of, shape_of
from mlpc.backends.tvm.ops_elementwise import fast_math, scalar
from mlpc.backends.tvm.registry import converter

logger = logging.getLogger(__name__)
op = relax.op


def _spatial_check(node: ir.Node, opset: int) -> str | None:
    shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
    if shape is not None and len(shape) not in (3, 4, 5):
        return f"{len(shape) - 2}-D {node.op_type} is not supported (1-D, 2-D and 3-D are)"
    return None


def conv_pads(node: ir.Node, in_spatial, kernel, strides, dilations) -> list[int]:
    """Return explicit ONNX-order pads [b1..bn, e1..en] for a Conv/pool node, resolving auto_pad."""
    n = len(in_spatial)
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if auto_pad in ("NOTSET", ""):
        return list(node.attributes.get_ints("pads", [0] * (2 * n)))
    if auto_pad == "VALID":
        return [0] * (2 * n)
    begin, end = [], []
    for size, k, s, d in zip(in_spatial, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def _channel_bias(bias: relax.Expr, ndim: int) -> relax.Expr:
    return op.reshape(bias, [1, -1] + [1] * (ndim - 2))


def window_attrs(node: ir.Node, n: int, kernel: tuple[int, ...] | None = None):
    """Return (kernel_shape, strides, dilations) of a conv/pool node with `n` spatial axes."""
    attrs = node.attributes
    return (
        list(attrs.get_ints("kernel_shape", kernel)),
        list(attrs.get_ints("strides", [1] * n)),
        list(attrs.get_ints("dilations", [1] * n)),
    )


_CONV = {1: op.nn.conv1d, 2: op.nn.conv2d, 3: op.nn.conv3d}
_CONV_T = {1: op.nn.conv1d_transpose, 2: op.nn.conv2d_transpose}
_LAYOUT = {1: ("NCW", "OIW", "IOW"), 2: ("NCHW", "OIHW", "IOHW"), 3: ("NCDHW", "OIDHW", "IODHW")}


@converter("Conv", check=_spatial_check)
def _conv(ctx: LowerContext, node, inputs):
    x, w = inputs[0], inputs[1]
    xs = shape_of(x)
    n = len(xs) - 2
    kernel, strides, dilations = window_attrs(node, n, shape_of(w)[2:])
    pads = conv_pads(node, xs[2:], kernel, strides, dilations)
    data_layout, kernel_layout, _ = _LAYOUT[n]
    y = _CONV[n](
        x, w, strides=strides, padding=pads, dilation=dilations,
        groups=node.attributes.get_int("group", 1), data_layout=data_layout, kernel_layout=kernel_layout,
    )
    if len(inputs) > 2 and inputs[2] is not None:
        y = op.add(y, _channel_bias(inputs[2], n + 2))
    return [y]


def _conv_transpose_check(node: ir.Node, opset: int) -> str | None:
    shape = node.inputs[0].shape
    if shape is not None and len(shape) not in (3, 4):
        return f"{len(shape) - 2}-D ConvTranspose is not supported (1-D and 2-D are)"
    return None


@converter("ConvTranspose", check=_conv_transpose_check)
def _conv_transpose(ctx: LowerContext, node, inputs):
    x, w = inputs[0], inputs[1]
    xs = shape_of(x)
    n = len(xs) - 2
    kernel, strides, dilations = window_attrs(node, n, shape_of(w)[2:])
    out_pad = list(node.attributes.get_ints("output_padding", [0] * n))
    pads = list(node.attributes.get_ints("pads", [0] * (2 * n)))
    out_shape = node.attributes.get_ints("output_shape", None)
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    if out_shape is not None or auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        target = list(out_shape)[-n:] if out_shape is not None else [xs[2 + i] * strides[i] for i in range(n)]
        begin, end = [], []
        for i in range(n):
            total = strides[i] * (xs[2 + i] - 1) + out_pad[i] + (kernel[i] - 1) * dilations[i] + 1 - target[i]
            small, large = total // 2, total - total // 2
            # ONNX: SAME_UPPER puts the larger half at the end, SAME_LOWER and an explicit
            # output_shape at the beginning.
            begin.append(small if auto_pad == "SAME_UPPER" else large)
            end.append(large if auto_pad == "SAME_UPPER" else small)
        pads = begin + end
    elif auto_pad == "VALID":
        pads = [0] * (2 * n)
    # A negative pad (output_shape larger than the full transposed convolution) means zeros
    # added to the output on that side: TVM takes non-negative pads only.
    grow = [max(-p, 0) for p in pads]
    pads = [max(p, 0) for p in pads]
    data_layout, _, kernel_layout = _LAYOUT[n]
    y = _CONV_T[n](
        x, w, strides=strides, padding=pads, output_padding=out_pad, dilation=dilations,
        groups=node.attributes.get_int("group", 1), data_layout=data_layout, kernel_layout=kernel_layout,
    )
    if any(grow):
        y = op.nn.pad(y, [0, 0, 0, 0] + [v for i in range(n) for v in (grow[i], grow[n + i])])
    if len(inputs) > 2 and inputs[2] is not None:
        y = op.add(y, _channel_bias(inputs[2], n + 2))
    return [y]


@converter("Gemm")
def _gemm(ctx, node, inputs):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    if node.attributes.get_int("transA", 0):
        a = op.permute_dims(a, [1, 0])
    if node.attributes.get_int("transB", 0):
        b = op.permute_dims(b, [1, 0])
    y = op.matmul(a, b)
    alpha = node.attributes.get_float("alpha", 1.0)
    beta = node.attributes.get_float("beta", 1.0)
    if alpha != 1.0:
        y = op.multiply(y, scalar(alpha, a))
    if c is not None and beta != 0.0:
        y = op.add(y, c if beta == 1.0 else op.multiply(c, scalar(beta, c)))
    return [y]


@converter("MatMul")
def _matmul(ctx, node, inputs):
    return [op.matmul(inputs[0], inputs[1])]


@converter("MatMulInteger")
def _matmul_integer(ctx, node, inputs):
    a, b = inputs[0], inputs[1]
    a = op.astype(a, "int32")
    b = op.astype(b, "int32")
    if len(inputs) > 2 and inputs[2] is not None:
        a = op.subtract(a, op.astype(inputs[2], "int32"))
    if len(inputs) > 3 and inputs[3] is not None:
        b = op.subtract(b, op.astype(inputs[3], "int32"))
    return [op.matmul(a, b, out_dtype="int32")]


# -- pooling ---------------------------------------------------------------------------


def _needed(value: ir.Value | None) -> bool:
    """True when an (optional) output is consumed by a node or returned by the graph."""
    return value is not None and bool(value.uses() or value.is_graph_output())


def _pool_check(node: ir.Node, opset: int) -> str | None:
    if len(node.outputs) > 1 and _needed(node.outputs[1]):
        return "MaxPool's Indices output is not supported"
    return _spatial_check(node, opset)


_POOL = {
    "MaxPool": {1: op.nn.max_pool1d, 2: op.nn.max_pool2d, 3: op.nn.max_pool3d},
    "AveragePool": {1: op.nn.avg_pool1d, 2: op.nn.avg_pool2d, 3: op.nn.avg_pool3d},
}


def _pool(ctx: LowerContext, node, inputs):
    x = inputs[0]
    xs = shape_of(x)
    n = len(xs) - 2
    kernel, strides, dilations = window_attrs(node, n)
    pads = conv_pads(node, xs[2:], kernel, strides, dilations)
    y = _POOL[node.op_type][n](
        x, pool_size=kernel, strides=strides, padding=pads, dilation=dilations,
        ceil_mode=bool(node.attributes.get_int("ceil_mode", 0)),
        count_include_pad=bool(node.attributes.get_int("count_include_pad", 0)),
        layout=_LAYOUT[n][0],
    )
    return [y]


converter("MaxPool", check=_pool_check)(_pool)
converter("AveragePool", check=_spatial_check)(_pool)


@converter("GlobalAveragePool")
def _global_avg_pool(ctx, node, inputs):
    axes = list(range(2, len(shape_of(inputs[0]))))
    return [op.mean(inputs[0], axis=axes, keepdims=True)]


@converter("GlobalMaxPool")
def _global_max_pool(ctx, node, inputs):
    axes = list(range(2, len(shape_of(inputs[0]))))
    return [op.max(inputs[0], axis=axes, keepdims=True)]


# -- softmax and normalization ---------------------------------------------------------


def _softmax_check(node: ir.Node, opset: int) -> str | None:
    return None if opset >= 13 else f"{node.op_type} before opset 13 (2-D flattening semantics) is not supported"


@converter("Softmax", check=_softmax_check)
def _softmax(ctx, node, inputs):
    axis = node.attributes.get_int("axis", -1)
    if fast_math(ctx, inputs[0]):
        return [ctx.emit_te(topi.nn.fast_softmax, inputs[0], axis=axis)]
    return [op.nn.softmax(inputs[0], axis=axis)]


@converter("LogSoftmax", check=_softmax_check)
def _log_softmax(ctx, node, inputs):
    return [op.nn.log_softmax(inputs[0], axis=node.attributes.get_int("axis", -1))]


def _extra_outputs_check(node: ir.Node, opset: int) -> str | None:
    if node.op_type == "LayerNormalization":  # Mean and InvStdDev are computed when needed
        stash = node.attributes.get_int("stash_type", 1)
        if stash != 1 and any(_needed(v) for v in node.outputs[1:]):
            return f"LayerNormalization stash_type={stash} (statistics not in float32) is not supported"
        return None
    if any(_needed(v) for v in node.outputs[1:]):
        return f"{node.op_type}'s statistics outputs (mean/variance) are not supported"
    if node.op_type == "BatchNormalization" and node.attributes.get_int("training_mode", 0):
        return "BatchNormalization with training_mode=1 is not supported (inference only)"
    return None


@converter("LayerNormalization", check=_extra_outputs_check)
def _layer_norm(ctx, node, inputs):
    x, gamma = inputs[0], inputs[1]
    ndim = len(shape_of(x))
    axis = node.attributes.get_int("axis", -1) % ndim
    norm_shape = shape_of(x)[axis:]
    beta = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    gamma = op.broadcast_to(gamma, norm_shape) if shape_of(gamma) != norm_shape else gamma
    if beta is None:
        beta = const(np.zeros(norm_shape, dtype=dtype_of(x)))
    elif shape_of(beta) != norm_shape:
        beta = op.broadcast_to(beta, norm_shape)
    eps = node.attributes.get_float("epsilon", 1e-5)
    axes = list(range(axis, ndim))
    if not any(_needed(v) for v in node.outputs[1:]):
        return [op.nn.layer_norm(x, gamma, beta, axes=axes, epsilon=eps)]
    # Mean and InvStdDev requested: compute the statistics explicitly, in float32 (stash_type 1).
    dtype = dtype_of(x)
    xf = op.astype(x, "float32") if dtype != "float32" else x
    mean = ctx.emit(op.mean(xf, axis=axes, keepdims=True))
    centered = ctx.emit(op.subtract(xf, mean))
    var = op.mean(op.multiply(centered, centered), axis=axes, keepdims=True)
    inv_std = ctx.emit(op.rsqrt(op.add(var, const(np.array(eps, np.float32)))))
    normalized = op.multiply(centered, inv_std)
    if dtype != "float32":
        normalized = op.astype(normalized, dtype)
    y = op.add(op.multiply(normalized, gamma), beta)
    return [y, mean, inv_std][: len(node.outputs)]


@converter("BatchNormalization", check=_extra_outputs_check)
def _batch_norm(ctx: LowerContext, node, inputs):
    x = inputs[0]
    ndim = len(shape_of(x))
    eps = node.attributes.get_float("epsilon", 1e-5)
    params = [ctx.const_of(v) for v in node.inputs[1:5]]
    if all(p is not None for p in params):
        scale, bias, mean, var = (p.astype(np.float64) for p in params)
        a = scale / np.sqrt(var + eps)
        b = bias - mean * a
        mul = const(a.reshape([1, -1] + [1] * (ndim - 2)), dtype_of(x))
        add = const(b.reshape([1, -1] + [1] * (ndim - 2)), dtype_of(x))
    else:
        scale, bias, mean, var = (_channel_bias(e, ndim) for e in inputs[1:5])
        mul = op.multiply(scale, op.rsqrt(op.add(var, scalar(eps, x))))
        add = op.subtract(bias, op.multiply(mean, mul))
    return [op.add(op.multiply(x, mul), add)]


@converter("InstanceNormalization")
def _instance_norm(ctx, node, inputs):
    x, scale, bias = inputs
    ndim = len(shape_of(x))
    axes = list(range(2, ndim))
    eps = node.attributes.get_float("epsilon", 1e-5)
    centered = op.subtract(x, op.mean(x, axis=axes, keepdims=True))
    var = op.mean(op.multiply(centered, centered), axis=axes, keepdims=True)
    y = op.multiply(centered, op.rsqrt(op.add(var, scalar(eps, x))))
    return [op.add(op.multiply(y, _channel_bias(scale, ndim)), _channel_bias(bias, ndim))]

