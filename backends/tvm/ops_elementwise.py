"""Converters for element-wise ONNX ops: arithmetic, comparisons, logic, activations, Cast/Where."""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np
from tvm import relax, te, topi

from mlpc.backends.tvm.context import LowerContext, const, dtype_of, shape_of
from mlpc.backends.tvm.registry import converter

logger = logging.getLogger(__name__)
op = relax.op


def scalar(value: float, like: relax.Expr) -> relax.Expr:
    """Return a 0-d constant holding `value` in the dtype of `like`."""
    return const(np.array(value, dtype=dtype_of(like)))


def _register_binary(op_type: str, fn: Callable[[relax.Expr, relax.Expr], relax.Expr]) -> None:
    @converter(op_type)
    def _convert(ctx: LowerContext, node, inputs):
        return [fn(inputs[0], inputs[1])]


for _name, _fn in {
    "Add": op.add,
    "Sub": op.subtract,
    "Mul": op.multiply,
    "Div": op.divide,
    "Equal": op.equal,
    "Less": op.less,
    "LessOrEqual": op.less_equal,
    "Greater": op.greater,
    "GreaterOrEqual": op.greater_equal,
    "And": op.logical_and,
    "Or": op.logical_or,
    "Xor": op.logical_xor,
    "BitwiseAnd": op.bitwise_and,
    "BitwiseOr": op.bitwise_or,
    "BitwiseXor": op.bitwise_xor,
}.items():
    _register_binary(_name, _fn)


def _register_unary(op_type: str, fn: Callable[[relax.Expr], relax.Expr]) -> None:
    @converter(op_type)
    def _convert(ctx: LowerContext, node, inputs):
        return [fn(inputs[0])]


for _name, _fn in {
    "Neg": op.negative,
    "Abs": op.abs,
    "Sqrt": op.sqrt,
    "Exp": op.exp,
    "Log": op.log,
    "Floor": op.floor,
    "Ceil": op.ceil,
    "Round": op.round,  # lowers to nearbyint: round half to even, as ONNX requires
    "Sign": op.sign,
    "Not": op.logical_not,
    "BitwiseNot": op.bitwise_not,
    "Relu": op.nn.relu,
    "Sin": op.sin,
    "Cos": op.cos,
    "IsNaN": op.isnan,
    "Identity": lambda x: x,
}.items():
    _register_unary(_name, _fn)


def fast_math(ctx: LowerContext, x: relax.Expr) -> bool:
    """Whether `x` takes TVM's polynomial erf/tanh/exp (topi.fast_*): float32 on a CPU. TVM
    otherwise calls libm per element, which blocks vectorization — erf over 32,768 floats took
    340 µs against 11 µs, which were the transformer's GELU kernels' time. The polynomials are
    within 4e-7 of erf and tanh everywhere; fast_exp (used by softmax only, whose inputs are ≤ 0
    after the row maximum is subtracted) within 3e-7, but it overflows from 88.38 on."""
    return ctx.device == "cpu" and dtype_of(x) == "float32"


@converter("Erf")
def _erf(ctx, node, inputs):
    x = inputs[0]
    return [ctx.emit_te(topi.fast_erf, x) if fast_math(ctx, x) else op.erf(x)]


@converter("Tanh")
def _tanh(ctx, node, inputs):
    x = inputs[0]
    return [ctx.emit_te(topi.fast_tanh, x) if fast_math(ctx, x) else op.tanh(x)]


def sigmoid_fast(x: te.Tensor) -> te.Tensor:
    """1 / (1 + exp(−x)) with topi's polynomial exp (see `fast_math`): below −88.38 its exp
    overflows to inf and the result is 0, as float32's is from −88.72."""
    e = topi.fast_exp(te.compute(x.shape, lambda *i: -x[i], name="sigmoid_neg"))
    return te.compute(x.shape, lambda *i: 1.0 / (1.0 + e[i]), name="sigmoid")


def sigmoid(ctx: LowerContext, x: relax.Expr) -> relax.Expr:
    """The logistic function of `x`, fast on CPU float32 (`sigmoid_fast`), else TVM's."""
    return ctx.emit_te(sigmoid_fast, x) if fast_math(ctx, x) else op.sigmoid(x)


@converter("Sigmoid")
def _sigmoid(ctx, node, inputs):
    return [sigmoid(ctx, inputs[0])]


def gelu_fast(x: te.Tensor, approximate: str) -> te.Tensor:
    """ONNX Gelu of `x` with topi's polynomial erf or tanh (see `fast_math`)."""
    if approximate == "tanh":
        inner = te.compute(x.shape, lambda *i: 0.7978845608028654 * (x[i] + 0.044715 * x[i] * x[i] * x[i]),
                           name="gelu_inner")
        gate = topi.fast_tanh(inner)
    else:
        gate = topi.fast_erf(te.compute(x.shape, lambda *i: x[i] * 0.7071067811865476, name="gelu_inner"))
    return te.compute(x.shape, lambda *i: x[i] * 0.5 * (1.0 + gate[i]), name="gelu")


@converter("IsInf")
def _is_inf(ctx, node, inputs):
    x = inputs[0]
    pos = node.attributes.get_int("detect_positive", 1)
    neg = node.attributes.get_int("detect_negative", 1)
    if pos and neg:
        return [op.isinf(x)]
    if not pos and not neg:
        return [op.zeros(shape_of(x), "bool")]
    inf = scalar(np.inf if pos else -np.inf, x)
    return [op.equal(x, inf)]


@converter("Reciprocal")
def _reciprocal(ctx, node, inputs):
    return [op.divide(scalar(1.0, inputs[0]), inputs[0])]


@converter("Pow")
def _pow(ctx, node, inputs):
    base, exponent = inputs
    dtype = dtype_of(base)
    if not dtype.startswith(("float", "bfloat")):
        # TVM's power is float-only: an integer base is raised in float64, exact while the
        # result stays below 2**53, and truncated back (ONNX casts the result to the base type).
        result = op.power(op.astype(base, "float64"), op.astype(exponent, "float64"))
        return [op.astype(op.trunc(result), dtype)]
    if dtype_of(exponent) != dtype:
        exponent = op.astype(exponent, dtype)
    return [op.power(base, exponent)]


@converter("Mod")
def _mod(ctx, node, inputs):
    a, b = inputs
    fmod = node.attributes.get_int("fmod", 0)
    # fmod=1: C fmod (sign of the dividend, truncated); fmod=0 (integers only): sign of the divisor.
    if fmod:
        return [op.mod(a, b)]
    if not dtype_of(a).startswith(("float", "bfloat")):
        return [op.floor_mod(a, b)]
    # Floats with fmod=0 follow NumPy's mod: TVM's floor_mod (a - floor(a/b)·b) gives NaN for an
    # infinite divisor, where the result is the dividend or ±inf. Correct C fmod's sign instead,
    # and give zeros the divisor's sign.
    r = ctx.emit(op.mod(a, b))
    zero = scalar(0.0, r)
    flip = op.logical_and(op.not_equal(r, zero), op.logical_xor(op.less(r, zero), op.less(b, zero)))
    r = ctx.emit(op.where(flip, op.add(r, b), r))
    signed_zero = op.where(op.less(b, zero), scalar(-0.0, r), zero)
    return [op.where(op.equal(r, zero), signed_zero, r)]


def _variadic(fn: Callable[[relax.Expr, relax.Expr], relax.Expr]):
    def convert(ctx, node, inputs):
        return [functools.reduce(fn, [x for x in inputs if x is not None])]

    return convert


converter("Max")(_variadic(op.maximum))
converter("Min")(_variadic(op.minimum))
converter("Sum")(_variadic(op.add))


@converter("Mean")
def _mean(ctx, node, inputs):
    total = functools.reduce(op.add, inputs)
    return [op.divide(total, scalar(len(inputs), inputs[0]))]


@converter("LeakyRelu")
def _leaky_relu(ctx, node, inputs):
    return [op.nn.leakyrelu(inputs[0], node.attributes.get_float("alpha", 0.01))]


@converter("PRelu")
def _prelu(ctx, node, inputs):
    x, slope = inputs
    return [op.where(op.less(x, scalar(0, x)), op.multiply(x, slope), x)]


@converter("Elu")
def _elu(ctx, node, inputs):
    x = inputs[0]
    alpha = node.attributes.get_float("alpha", 1.0)
    neg = op.multiply(scalar(alpha, x), op.subtract(op.exp(x), scalar(1.0, x)))
    return [op.where(op.greater(x, scalar(0, x)), x, neg)]


@converter("Selu")
def _selu(ctx, node, inputs):
    x = inputs[0]
    alpha = node.attributes.get_float("alpha", 1.67326319217681884765625)
    gamma = node.attributes.get_float("gamma", 1.05070102214813232421875)
    neg = op.multiply(scalar(alpha, x), op.subtract(op.exp(x), scalar(1.0, x)))
    return [op.multiply(scalar(gamma, x), op.where(op.greater(x, scalar(0, x)), x, neg))]


@converter("Clip")
def _clip(ctx, node, inputs):
    x = inputs[0]
    if ctx.opset < 11 or len(inputs) == 1:
        lo = node.attributes.get_float("min", None)
        hi = node.attributes.get_float("max", None)
        lo_e = scalar(lo, x) if lo is not None else None
        hi_e = scalar(hi, x) if hi is not None else None
    else:
        lo_e = inputs[1] if len(inputs) > 1 else None
        hi_e = inputs[2] if len(inputs) > 2 else None
    if lo_e is not None:
        x = op.maximum(x, lo_e)
    if hi_e is not None:
        x = op.minimum(x, hi_e)
    return [x]


def _gelu_check(node, opset):
    approx = node.attributes.get_string("approximate", "none")
    return None if approx in ("none", "tanh") else f"approximate={approx!r} is not an ONNX Gelu mode"


@converter("Gelu", check=_gelu_check)
def _gelu(ctx, node, inputs):
    approx = node.attributes.get_string("approximate", "none")
    if fast_math(ctx, inputs[0]):
        return [ctx.emit_te(gelu_fast, inputs[0], approximate=approx)]
    return [op.nn.gelu_tanh(inputs[0]) if approx == "tanh" else op.nn.gelu(inputs[0])]


@converter("HardSigmoid")
def _hard_sigmoid(ctx, node, inputs):
    x = inputs[0]
    alpha = node.attributes.get_float("alpha", 0.2)
    beta = node.attributes.get_float("beta", 0.5)
    y = op.add(op.multiply(x, scalar(alpha, x)), scalar(beta, x))
    return [op.minimum(op.maximum(y, scalar(0.0, x)), scalar(1.0, x))]


@converter("HardSwish")
def _hard_swish(ctx, node, inputs):
    x = inputs[0]
    gate = op.add(op.multiply(x, scalar(1.0 / 6.0, x)), scalar(0.5, x))
    gate = op.minimum(op.maximum(gate, scalar(0.0, x)), scalar(1.0, x))
    return [op.multiply(x, gate)]


@converter("Softplus")
def _softplus(ctx, node, inputs):
    x = inputs[0]
    # log(1 + exp(x)) written stably: max(x, 0) + log(1 + exp(-|x|)).
    tail = op.log(op.add(scalar(1.0, x), op.exp(op.negative(op.abs(x)))))
    return [op.add(op.maximum(x, scalar(0.0, x)), tail)]


@converter("Softsign")
def _softsign(ctx, node, inputs):
    x = inputs[0]
    return [op.divide(x, op.add(scalar(1.0, x), op.abs(x)))]


@converter("Where")
def _where(ctx, node, inputs):
    return [op.where(*inputs)]


@converter("Cast")
def _cast(ctx, node, inputs):
    return [op.astype(inputs[0], ctx.dtype(node.outputs[0]))]


@converter("CastLike")
def _cast_like(ctx, node, inputs):
    return [op.astype(inputs[0], dtype_of(inputs[1]))]


def _dropout_check(node, opset: int) -> str | None:
    mode = node.inputs[2] if len(node.inputs) > 2 else None
    if mode is None:
        return None
    if mode.const_value is None:
        return (f"Dropout's training_mode input {mode.name!r} is only known at run time; mlpc compiles "
                "for inference: make it a constant false or remove the Dropout")
    if bool(mode.const_value.numpy()):
        return "Dropout with training_mode=true (random masks) is not supported: mlpc compiles for inference"
    return None


@converter("Dropout", check=_dropout_check)
def _dropout(ctx, node, inputs):
    # Inference: the output is the input and the mask is all true.
    x = inputs[0]
    outs = [x]
    if len(node.outputs) > 1 and node.outputs[1] is not None:
        outs.append(op.ones(ctx.shape(node.outputs[1]), "bool"))
    return outs
