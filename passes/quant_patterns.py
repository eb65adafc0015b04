"""Recognizers for the quantized patterns of the fake-quant Graph (see the quant contract):

    Quant(x) ─► Conv | Gemm | MatMul [─► Add(bias)] [─► Relu | Clip] ─► Quant   (a layer)
                 ▲ Quant(constant weight) or, for MatMul, a second Quant'd activation
    Quant(a), Quant(b) ─► Add [─► Relu | Clip] ─► Quant                         (a residual add)

`match_output(quant_node)` says which pattern ends at a Quant node, or None; everything the
integer rewrite needs (weights as integers, per-channel scales, float bias, the clamp a folded
ReLU/Clip implies) is computed here, so `lower_quant` only builds nodes.

    >>> m = match_output(node)            # LayerMatch | AddMatch | None
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from mlpc.errors import QuantizationError
from mlpc.ir import QuantParams, get_quant
from mlpc.ir.qonnx_ops import QONNX_DOMAINS

logger = logging.getLogger(__name__)

_ROUND_MODES = ("ROUND", "HALF_EVEN")
_LAYERS = ("Conv", "Gemm", "MatMul")
# Ops that commute with a per-tensor quantizer, Q(f(x)) = f(Q(x)): max-pooling (Q is monotone)
# and ops that only move elements. They run on the integers in place of the float values.
MOVEMENT_OPS = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")


def is_quant(node: ir.Node | None) -> bool:
    """True for a QONNX Quant/IntQuant node."""
    return node is not None and node.op_type in ("Quant", "IntQuant") and node.domain in QONNX_DOMAINS


def _std(node: ir.Node | None, *op_types: str) -> bool:
    return node is not None and node.domain in ("", "ai.onnx") and node.op_type in op_types


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def quant_params(node: ir.Node) -> QuantParams | None:
    """The QuantParams of a Quant node's output: the `mlpc.quant` annotation when present,
    else read from the node's constant inputs. None when the node cannot be integer-lowered
    (non-constant parameters, rounding other than half-to-even, 1-bit, or parameters that vary
    along more than one axis)."""
    mode = node.attributes.get_string("rounding_mode", "ROUND").upper()
    if mode not in _ROUND_MODES or len(node.inputs) < 4:
        return None
    try:
        qp = get_quant(node.outputs[0])
    except QuantizationError:
        return None
    if qp is None:
        scale, zp, bits = (_const(v) for v in node.inputs[1:4])
        if scale is None or zp is None or bits is None or bits.size != 1:
            return None
        axis = _channel_axis(scale, zp)
        if axis is False:
            return None
        per_channel = axis is not None
        try:
            qp = QuantParams(
                bits=int(bits.reshape(())), signed=bool(node.attributes.get_int("signed", 1)),
                scale=scale.reshape(-1) if per_channel else float(scale.reshape(())),
                zero_point=zp.reshape(-1) if per_channel and zp.size > 1 else zp.reshape(-1)[0],
                axis=axis, narrow_range=bool(node.attributes.get_int("narrow", 0)),
            )
        except QuantizationError:
            return None
    return qp if qp.bits >= 2 else None


def _channel_axis(scale: np.ndarray, zp: np.ndarray) -> int | None | bool:
    """The one axis along which scale/zero point vary (None per tensor, False if several)."""
    shapes = [s for s in (scale.shape, zp.shape) if int(np.prod(s)) > 1]
    if not shapes:
        return None
    axes = {i for s in shapes for i, d in enumerate(s) if d > 1}
    return axes.pop() if len(axes) == 1 else False


def activation_quant(value: ir.Value | None) -> tuple[ir.Node, QuantParams] | None:
    """(Quant node, params) when `value` is a per-tensor quantized activation (the output of a
    Quant of a non-constant tensor), else None."""
    node = value.producer() if value is not None else None
    if not is_quant(node) or _const(node.inputs[0]) is not None:
        return None
    qp = quant_params(node)
    if qp is None or qp.per_channel:
        return None
    return node, qp


@dataclass
class Weight:
    """A Quant'd constant weight as integers: `q` (int8/uint8, laid out (K, N) for matmuls and
    (M, C/g, k…) for convs), per-output-channel `scale` and `zero_point` (length-N arrays),
    `params` (the quantizer, axis = the output-channel axis of `q`), and the Quant node."""

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    params: QuantParams
    node: ir.Node


def constant_weight(value: ir.Value, out_axis: int, transpose: bool = False) -> Weight | None:
    """The integer form of `value` = Quant(constant float weight) whose parameters are per tensor
    or per channel along `out_axis` (of the float weight); `transpose` swaps a 2-D weight to
    (K, N). Integers are computed exactly as the QONNX Quant kernel does (float32, then
    half-to-even rounding), so (q − zp)·scale equals the fake-quant weight bit for bit."""
    node = value.producer()
    if not is_quant(node):
        return None
    w, scale, zp = (_const(v) for v in node.inputs[:3])
    qp = quant_params(node)
    if w is None or scale is None or zp is None or qp is None or w.dtype != np.float32 or w.ndim <= out_axis:
        return None
    if qp.per_channel and qp.axis % w.ndim != out_axis % w.ndim:
        return None
    n = w.shape[out_axis]
    s_vec, z_vec = (np.moveaxis(np.broadcast_to(a, w.shape), out_axis, 0).reshape(n, -1) for a in (scale, zp))
    if np.any(s_vec != s_vec[:, :1]) or np.any(z_vec != z_vec[:, :1]):
        return None
    y = np.clip(w / scale + zp, qp.qmin, qp.qmax)
    q = np.round(y).astype(np.int8 if qp.signed else np.uint8)
    axis = out_axis % w.ndim
    if transpose:
        q, axis = q.T, 1 - axis
    zpv = z_vec[:, 0].astype(np.int64)
    params = QuantParams(bits=qp.bits, signed=qp.signed, scale=s_vec[:, 0].astype(np.float64),
                         zero_point=zpv, axis=axis, narrow_range=qp.narrow_range)
    return Weight(np.ascontiguousarray(q), s_vec[:, 0].astype(np.float64), zpv, params, node)


def _single_use(value: ir.Value) -> bool:
    return len(value.uses()) == 1 and not value.is_graph_output()


def _output_clamp(act: ir.Node | None, qp: QuantParams) -> tuple[int, int] | None:
    """The [lo, hi] integer clamp of the output Quant after folding a Relu/Clip `act`, computed
    as the fake-quant graph would round the clip bounds (float32, half to even)."""
    lo, hi = qp.qmin, qp.qmax
    if act is None:
        return lo, hi
    zp = int(qp.zero_point)
    if act.op_type == "Relu":
        return max(lo, zp), hi
    bounds = [_const(v) if v is not None else None for v in act.inputs[1:3]]
    bounds += [None] * (2 - len(bounds))
    for i, key in enumerate(("min", "max")):
        if bounds[i] is None and key in act.attributes:
            bounds[i] = np.float32(act.attributes.get_float(key))
    if any(b is not None and b.size != 1 for b in bounds):
        return None
    scale = np.float32(qp.scale)
    qb = [None if b is None else int(np.round(np.float32(b.reshape(())) / scale + np.float32(zp)))
          for b in bounds]
    lo = lo if qb[0] is None else max(lo, qb[0])
    hi = hi if qb[1] is None else min(hi, qb[1])
    return (lo, hi) if lo <= hi else None


@dataclass
class LayerMatch:
    """Conv/Gemm/MatMul between quantized tensors ending at `quant` (the output Quant).

    `x`/`x_params` the quantized data input; `weight` the constant weight (None for a MatMul of
    two activations, whose second operand is `b`/`b_params`); `bias` the float bias per output
    channel (or None); `alpha` Gemm's alpha; `clamp` the output [qmin, qmax] with any folded
    ReLU/Clip; `nodes` every node the integer form replaces (the layer up to, not including,
    the output Quant)."""

    quant: ir.Node
    out_params: QuantParams
    layer: ir.Node
    x: ir.Value
    x_params: QuantParams
    weight: Weight | None
    b: ir.Value | None
    b_params: QuantParams | None
    bias: np.ndarray | None
    alpha: float
    clamp: tuple[int, int]
    nodes: list[ir.Node] = field(default_factory=list)

    @property
    def inputs(self) -> list[ir.Value]:
        """The quantized activations the layer reads."""
        return [self.x] if self.b is None else [self.x, self.b]


@dataclass
class AddMatch:
    """Add of two quantized tensors `a`, `b` ending at the output Quant `quant`."""

    quant: ir.Node
    out_params: QuantParams
    a: ir.Value
    a_params: QuantParams
    b: ir.Value
    b_params: QuantParams
    clamp: tuple[int, int]
    nodes: list[ir.Node] = field(default_factory=list)

    @property
    def inputs(self) -> list[ir.Value]:
        """The quantized activations the add reads."""
        return [self.a, self.b]


@dataclass
class MovementMatch:
    """A MaxPool/Reshape/… (`op`) of the quantized tensor `x`, ending at the output Quant
    `quant` with the same parameters: the op runs on the integers."""

    quant: ir.Node
    out_params: QuantParams
    op: ir.Node
    x: ir.Value
    nodes: list[ir.Node] = field(default_factory=list)

    @property
    def inputs(self) -> list[ir.Value]:
        """The quantized activation the op reads."""
        return [self.x]


def movement_source(quant: ir.Node) -> ir.Node | None:
    """The movement op (`MOVEMENT_OPS`) whose only use is Quant node `quant`, else None."""
    v = quant.inputs[0]
    node = v.producer() if v is not None else None
    if not _std(node, *MOVEMENT_OPS) or len(node.outputs) != 1 or not _single_use(v):
        return None
    return node


def match_movement(quant: ir.Node) -> MovementMatch | None:
    """Quant(f(x)) where x is already quantized with the same per-tensor parameters, else None."""
    out = activation_quant(quant.outputs[0])
    op = movement_source(quant) if out is not None else None
    src = activation_quant(op.inputs[0]) if op is not None else None
    if src is None or src[1] != out[1]:
        return None
    return MovementMatch(quant, out[1], op, op.inputs[0], [op])


def match_output(quant: ir.Node) -> LayerMatch | AddMatch | MovementMatch | None:
    """The layer or residual-add pattern ending at Quant node `quant`, or None.

    Every value between the pattern's inputs and `quant` must have that single use, the inputs
    must be per-tensor quantized activations, and the output quantizer per tensor."""
    out_params = activation_quant(quant.outputs[0])
    if out_params is None:
        return None
    movement = match_movement(quant)
    if movement is not None:
        return movement
    out_params = out_params[1]
    v = quant.inputs[0]
    node = v.producer()
    nodes: list[ir.Node] = []
    act = None
    if _std(node, "Relu", "Clip") and _single_use(v):
        act, nodes = node, [node]
        v = node.inputs[0]
        node = v.producer()
    clamp = _output_clamp(act, out_params)
    if clamp is None or node is None or not _single_use(v):
        return None
    if _std(node, "Add"):
        add = _match_add(quant, out_params, node, clamp, nodes)
        if add is not None:
            return add
        bias_add, node, v = _bias_add(node)
        if bias_add is None or not _single_use(v):
            return None
        nodes.append(bias_add)
    else:
        bias_add = None
    if not _std(node, *_LAYERS) or (bias_add is not None and node.op_type != "MatMul"):
        return None
    nodes.append(node)
    return _match_layer(quant, out_params, node, bias_add, clamp, nodes)


def match_float_layer(node: ir.Node) -> LayerMatch | None:
    """A Conv/Gemm/MatMul of quantized operands whose output is not quantized (e.g. the logits
    layer): a LayerMatch without output quantizer (`quant`, `out_params`, `clamp` None), else None."""
    if not _std(node, *_LAYERS) or len(node.outputs) != 1:
        return None
    out = node.outputs[0]
    if any(is_quant(use.node) for use in out.uses()):
        return None  # the Quant-ended pattern decides
    return _match_layer(None, None, node, None, None, [node])


@dataclass
class WeightOnlyMatch:
    """A MatMul/Gemm of a float activation `x` and a Quant'd constant weight (weight-only
    quantization): `weight` laid out (K, N), `alpha` Gemm's alpha, `bias` the float bias
    (Gemm's C times beta, per column, or None), `nodes` the layer node."""

    layer: ir.Node
    x: ir.Value
    weight: Weight
    alpha: float
    bias: np.ndarray | None
    nodes: list[ir.Node] = field(default_factory=list)

    @property
    def inputs(self) -> list[ir.Value]:
        """No quantized activations: the layer reads a float tensor."""
        return []


def match_weight_only(node: ir.Node) -> WeightOnlyMatch | None:
    """A MatMul/Gemm whose data input is a float tensor (not quantized) and whose weight is a 2-D
    Quant'd constant, else None."""
    if not _std(node, "MatMul", "Gemm") or len(node.inputs) < 2 or len(node.outputs) != 1:
        return None
    x = node.inputs[0]
    if x is None or activation_quant(x) is not None or x.dtype != ir.DataType.FLOAT or x.shape is None \
            or len(x.shape) < 2 or node.outputs[0].shape is None:
        return None
    alpha, bias = 1.0, None
    if node.op_type == "Gemm":
        if node.attributes.get_int("transA", 0):
            return None
        alpha = node.attributes.get_float("alpha", 1.0)
        trans_b = bool(node.attributes.get_int("transB", 0))
        weight = constant_weight(node.inputs[1], 0 if trans_b else 1, transpose=trans_b)
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            c = _const(node.inputs[2])
            bias = _per_channel_bias(c, weight.q.shape[1]) if weight is not None and c is not None else False
            if bias is None or bias is False:
                return None
            bias = bias * node.attributes.get_float("beta", 1.0)
    else:
        weight = constant_weight(node.inputs[1], 1)
    if weight is None or weight.q.ndim != 2:
        return None
    return WeightOnlyMatch(node, x, weight, alpha, bias, [node])


def _match_add(quant, out_params, add: ir.Node, clamp, nodes) -> AddMatch | None:
    a, b = (activation_quant(v) for v in add.inputs)
    if a is None or b is None:
        return None
    return AddMatch(quant, out_params, add.inputs[0], a[1], add.inputs[1], b[1], clamp, [*nodes, add])


def _bias_add(add: ir.Node) -> tuple[ir.Node | None, ir.Node | None, ir.Value | None]:
    """(Add, MatMul, MatMul output) when `add` adds a constant to a MatMul's output."""
    for i in (0, 1):
        other = add.inputs[1 - i]
        if _const(add.inputs[i]) is not None and _std(other.producer(), "MatMul"):
            return add, other.producer(), other
    return None, None, None


def _per_channel_bias(bias: np.ndarray | None, n: int) -> np.ndarray | None | bool:
    """A float bias broadcast to (n,), None when absent, False when it is not per channel."""
    if bias is None:
        return None
    if bias.size not in (1, n) or (bias.size == n and bias.shape[-1] != n):
        return False
    return np.broadcast_to(bias.reshape(-1).astype(np.float64), (n,)).copy()


def _match_layer(quant, out_params, layer: ir.Node, bias_add, clamp, nodes) -> LayerMatch | None:
    x = activation_quant(layer.inputs[0])
    if x is None or len(layer.inputs) < 2 or layer.inputs[1] is None:
        return None
    alpha, beta = 1.0, 1.0
    b = b_params = weight = None
    if layer.op_type == "Conv":
        weight = constant_weight(layer.inputs[1], 0)
        bias = _const(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2] is not None else None
        if len(layer.inputs) > 2 and layer.inputs[2] is not None and bias is None:
            return None
    elif layer.op_type == "Gemm":
        if layer.attributes.get_int("transA", 0):
            return None
        alpha = layer.attributes.get_float("alpha", 1.0)
        beta = layer.attributes.get_float("beta", 1.0)
        trans_b = bool(layer.attributes.get_int("transB", 0))
        weight = constant_weight(layer.inputs[1], 0 if trans_b else 1, transpose=trans_b)
        bias = _const(layer.inputs[2]) if len(layer.inputs) > 2 and layer.inputs[2] is not None else None
        if (len(layer.inputs) > 2 and layer.inputs[2] is not None and bias is None) or alpha <= 0:
            return None
    else:
        second = activation_quant(layer.inputs[1])
        if second is not None:
            b, b_params = layer.inputs[1], second[1]
        else:
            weight = constant_weight(layer.inputs[1], 1)
            if weight is not None and weight.q.ndim != 2:
                return None
        bias = None
        if bias_add is not None:
            bias = next(_const(v) for v in bias_add.inputs if _const(v) is not None)
    if weight is None and b is None:
        return None
    if layer.inputs[0].shape is None or len(layer.inputs[0].shape) < 2 or layer.outputs[0].shape is None:
        return None
    n = int(weight.q.shape[0 if layer.op_type == "Conv" else 1]) if weight is not None else None
    if bias is not None:
        if n is None:
            n = layer.outputs[0].shape[-1] if layer.outputs[0].shape is not None else None
            if not isinstance(n, int):
                return None
        bias = _per_channel_bias(bias, n)
        if bias is False:
            return None
        bias = bias * beta
    return LayerMatch(quant, out_params, layer, layer.inputs[0], x[1], weight, b, b_params, bias, alpha,
                      clamp, nodes)
