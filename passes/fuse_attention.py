"""fuse-attention: scaled dot-product attention into one mlpc::Attention node.

Matches what torch's exporters (dynamo and legacy) emit for `softmax(q @ k.T * s) @ v`:

    MatMul(Q, KT) → Mul(·, s) | Div(·, 1/s) → [Add(·, mask)] → Softmax(axis=-1) → MatMul(·, V)

(the scale may also be absent) and writes `mlpc::Attention(Q, KT, V[, mask], scale=s)`
(mlpc/ir/ops/attention.py), which the TVM backend lowers as one kernel with the softmax fused.
CPU targets only: for CUDA the ops stay, as dlight schedules them and the fused kernel is a CPU one.
Rules do not fire when the scale is not a constant scalar, the softmax is not over the last
axis, the batch dims of Q, KT and V differ, or an intermediate (scores, probabilities) has
another use.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from onnxscript.rewriter.pattern import MatchResult, RewriteRule

from mlpc.pass_infra import PassContext, PassResult
from mlpc.rewrite import RewritePass

logger = logging.getLogger(__name__)


def _scaled_mul(op, q, kt, s, v):
    return op.MatMul(op.Softmax(op.Mul(op.MatMul(q, kt), s), _allow_other_attributes=True, _outputs=["p"]), v)


def _scaled_div(op, q, kt, s, v):
    return op.MatMul(op.Softmax(op.Div(op.MatMul(q, kt), s), _allow_other_attributes=True, _outputs=["p"]), v)


def _masked_mul(op, q, kt, s, mask, v):
    scores = op.Add(op.Mul(op.MatMul(q, kt), s), mask)
    return op.MatMul(op.Softmax(scores, _allow_other_attributes=True, _outputs=["p"]), v)


def _masked_div(op, q, kt, s, mask, v):
    scores = op.Add(op.Div(op.MatMul(q, kt), s), mask)
    return op.MatMul(op.Softmax(scores, _allow_other_attributes=True, _outputs=["p"]), v)


def _unscaled(op, q, kt, v):
    return op.MatMul(op.Softmax(op.MatMul(q, kt), _allow_other_attributes=True, _outputs=["p"]), v)


def _scalar(value: ir.Value | None) -> float | None:
    if value is None or value.const_value is None:
        return None
    arr = value.const_value.numpy()
    return float(arr.reshape(-1)[0]) if arr.size == 1 else None


def _dims(value: ir.Value) -> tuple | None:
    return None if value.shape is None else tuple(value.shape.dims)


def _check_common(
    q: ir.Value, kt: ir.Value, v: ir.Value, p: ir.Value, mask: ir.Value | None = None
) -> MatchResult:
    result = MatchResult()
    if any(x.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE) for x in (q, kt, v)):
        return result.fail("attention inputs are not float")
    shapes = [_dims(x) for x in (q, kt, v)]
    if any(s is None for s in shapes) or len({len(s) for s in shapes}) != 1 or len(shapes[0]) < 2:
        return result.fail(f"Q, KT, V need known shapes of one rank >= 2, got {shapes}")
    if not shapes[0][:-2] == shapes[1][:-2] == shapes[2][:-2]:
        return result.fail(f"batch dims differ: {shapes}")
    softmax = p.producer()
    axis = softmax.attributes.get_int("axis", -1)
    if axis not in (-1, len(shapes[0]) - 1):
        return result.fail(f"softmax over axis {axis}, not the last")
    if mask is not None and (mask.shape is None or len(mask.shape) > len(shapes[0])):
        return result.fail("mask shape unknown or of higher rank than the scores")
    return result


def _check_scaled(context, q, kt, s, v, p, mask=None, **_):
    if _scalar(s) is None:
        return MatchResult().fail("scale is not a constant scalar")
    if _scalar(s) == 0.0:
        return MatchResult().fail("scale is zero")
    return _check_common(q, kt, v, p, mask)


def _check_unscaled(context, q, kt, v, p, **_):
    return _check_common(q, kt, v, p)


def _attention(op, q, kt, v, scale, mask=None):
    inputs = [q, kt, v] + ([mask] if mask is not None else [])
    return op.Attention(*inputs, scale=float(np.float32(scale)), _domain="mlpc")


RULES = [
    RewriteRule(
        _masked_mul,
        lambda op, q, kt, s, mask, v, **_: _attention(op, q, kt, v, _scalar(s), mask),
        _check_scaled,
        name="AttentionMaskedMul",
    ),
    RewriteRule(
        _masked_div,
        lambda op, q, kt, s, mask, v, **_: _attention(op, q, kt, v, 1.0 / _scalar(s), mask),
        _check_scaled,
        name="AttentionMaskedDiv",
    ),
    RewriteRule(
        _scaled_mul,
        lambda op, q, kt, s, v, **_: _attention(op, q, kt, v, _scalar(s)),
        _check_scaled,
        name="AttentionMul",
    ),
    RewriteRule(
        _scaled_div,
        lambda op, q, kt, s, v, **_: _attention(op, q, kt, v, 1.0 / _scalar(s)),
        _check_scaled,
        name="AttentionDiv",
    ),
    RewriteRule(
        _unscaled, lambda op, q, kt, v, **_: _attention(op, q, kt, v, 1.0), _check_unscaled, name="Attention"
    ),
]


class FuseAttentionPass(RewritePass):
    """Rewrite MatMul → scale → [mask Add] → Softmax → MatMul into mlpc::Attention."""

    name = "fuse-attention"
    description = "scaled dot-product attention (MatMul-scale-Softmax-MatMul) into one mlpc::Attention node"
    opt_level = 1

    def __init__(self) -> None:
        super().__init__(self.name, RULES, commute=True, description=self.description)

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        """Rewrite for CPU targets (or none given); CUDA builds keep the ops, which dlight schedules."""
        target = ctx.target
        if target is not None and getattr(target, "kind", "x86") not in ("x86", "arm"):
            logger.debug("fuse-attention skipped: the %s backend has no fused attention kernel", target.kind)
            return PassResult(graph, False)
        return super().run(graph, ctx)
