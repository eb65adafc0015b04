"""mlpc::Attention — scaled dot-product attention as one op:

    Y = softmax(Q · Kᵀ · scale + mask, axis=-1) · V

`Q` is [..., S, D], `KT` the keys already transposed, [..., D, Skv] (what the exporters feed the
first MatMul), `V` [..., Skv, Dv], the optional additive `mask` broadcasts to [..., S, Skv];
the batch dims (...) of Q, KT and V are equal. Y is [..., S, Dv] in Q's type. Written by the
`fuse-attention` pass from MatMul → Mul/Div → (Add mask) → Softmax → MatMul; the backends lower
it as one kernel with the softmax fused, so the S×Skv scores never go to memory as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx.defs
import onnx_ir as ir
from onnx.reference.op_run import OpRun

from mlpc.ir.ops._registry import TensorSig, attr, check_dtype, fail, formal, mlpc_op, mlpc_schema, same_dim

FLOAT_TYPES = [ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE]

SCHEMA = mlpc_schema(
    "Attention",
    __doc__ or "",
    inputs=[
        formal("Q", "T", "queries [..., S, D]"),
        formal("KT", "T", "keys, transposed [..., D, Skv]"),
        formal("V", "T", "values [..., Skv, Dv]"),
        formal("mask", "T", "additive mask broadcasting to [..., S, Skv]", optional=True),
    ],
    outputs=[formal("Y", "T", "softmax(Q·KT·scale + mask)·V, [..., S, Dv]")],
    type_constraints=[
        ("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"], "float types")
    ],
    attributes=[
        attr("scale", "factor applied to Q·KT before the mask", 1.0, onnx.defs.OpSchema.AttrType.FLOAT)
    ],
)


def infer_attention(inputs: Sequence[TensorSig | None], attrs: dict[str, Any], where: str) -> list[TensorSig]:
    """Y = [..., S, Dv] from Q [..., S, D], KT [..., D, Skv], V [..., Skv, Dv]."""
    if len(inputs) < 3 or any(s is None for s in inputs[:3]):
        raise fail(where, "needs inputs Q, KT and V")
    q, kt, v = inputs[:3]
    for name, sig in (("Q", q), ("KT", kt), ("V", v), ("mask", inputs[3] if len(inputs) > 3 else None)):
        check_dtype(where, f"input {name}", sig, FLOAT_TYPES)
    if q.shape is None or kt.shape is None or v.shape is None:
        return [TensorSig(None, q.dtype)]
    if not len(q.shape) == len(kt.shape) == len(v.shape) or len(q.shape) < 2:
        raise fail(where, f"Q, KT and V must have the same rank >= 2, got {q.shape}, {kt.shape}, {v.shape}")
    for axis, (a, b, c) in enumerate(zip(q.shape[:-2], kt.shape[:-2], v.shape[:-2])):
        if same_dim(a, b) is False or same_dim(a, c) is False:
            raise fail(where, f"batch dim {axis} differs: Q {q.shape}, KT {kt.shape}, V {v.shape}")
    if same_dim(q.shape[-1], kt.shape[-2]) is False:
        raise fail(where, f"Q's last dim {q.shape[-1]} != KT's dim -2 {kt.shape[-2]}")
    if same_dim(kt.shape[-1], v.shape[-2]) is False:
        raise fail(where, f"KT's last dim {kt.shape[-1]} != V's dim -2 {v.shape[-2]}")
    return [TensorSig((*q.shape[:-1], v.shape[-1]), q.dtype)]


def attention(
    q: np.ndarray, kt: np.ndarray, v: np.ndarray, mask: np.ndarray | None, scale: float
) -> np.ndarray:
    """The reference computation (softmax with the row maximum subtracted)."""
    scores = np.matmul(q, kt) * np.asarray(scale, q.dtype)
    if mask is not None:
        scores = scores + mask
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return np.matmul(scores / scores.sum(axis=-1, keepdims=True), v).astype(q.dtype)


@mlpc_op(schema=SCHEMA, infer=infer_attention)
class Attention(OpRun):
    """NumPy reference kernel of mlpc::Attention."""

    def _run(self, q, kt, v, mask=None, scale=1.0):  # type: ignore[override]
        return (attention(q, kt, v, mask, scale),)
