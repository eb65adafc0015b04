"""mlpc::ConvNHWC — a 2-D convolution over channels-last data:

    Y[n, oh, ow, o] = Conv(X transposed to NCHW, W, B) transposed back to NHWC

`X` is [N, H, W, C]; the weight `W` keeps ONNX's [O, C/group, kH, kW] (the backend re-lays it out
at compile time), `B` is [O]; `Y` is [N, oH, oW, O]. Attributes are ONNX Conv's `dilations`,
`group`, `pads` (begin then end, explicit) and `strides`. Written by the `layout` pass for the
convolutions it runs channels-last (see passes/layout.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx.defs
import onnx_ir as ir
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_conv import _conv_implementation

from mlpc.ir.ops._registry import TensorSig, attr, check_dtype, fail, formal, mlpc_op, mlpc_schema, same_dim
from mlpc.ir.ops.integer_conv import conv_geometry

FLOAT_TYPES = [ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE]
_INTS = onnx.defs.OpSchema.AttrType.INTS

SCHEMA = mlpc_schema(
    "ConvNHWC",
    __doc__ or "",
    inputs=[
        formal("X", "T", "input [N, H, W, C]"),
        formal("W", "T", "weight [O, C/group, kH, kW]"),
        formal("B", "T", "bias [O]", optional=True),
    ],
    outputs=[formal("Y", "T", "output [N, oH, oW, O]")],
    type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(double)"], "float types")],
    attributes=[
        attr("dilations", "dilation per spatial axis", kind=_INTS),
        attr("group", "number of groups", 1),
        attr("pads", "begin pads then end pads", kind=_INTS),
        attr("strides", "stride per spatial axis", kind=_INTS),
    ],
)


def infer_conv_nhwc(inputs: Sequence[TensorSig | None], attrs: dict[str, Any], where: str) -> list[TensorSig]:
    """Y = [N, oH, oW, O] from X [N, H, W, C] and W [O, C/group, kH, kW]."""
    if len(inputs) < 2 or inputs[0] is None or inputs[1] is None:
        raise fail(where, "needs inputs X and W")
    x, w = inputs[0], inputs[1]
    for name, sig in (("X", x), ("W", w), ("B", inputs[2] if len(inputs) > 2 else None)):
        check_dtype(where, f"input {name}", sig, FLOAT_TYPES)
    if x.shape is None or w.shape is None:
        return [TensorSig(None, x.dtype)]
    if len(x.shape) != 4 or len(w.shape) != 4:
        raise fail(where, f"X and W must be 4-D, got {x.shape} and {w.shape}")
    group = int(attrs.get("group", 1))
    if isinstance(w.shape[1], int) and same_dim(x.shape[3], w.shape[1] * group) is False:
        raise fail(where, f"X has {x.shape[3]} channels, W expects {w.shape[1]} × group {group}")
    if not all(isinstance(k, int) for k in w.shape[2:]):
        raise fail(where, f"kernel dims {w.shape[2:]} must be static")
    _, _, _, out = conv_geometry(x.shape[1:3], list(w.shape[2:]), {**attrs, "auto_pad": "NOTSET"}, where)
    return [TensorSig((x.shape[0], out[0], out[1], w.shape[0]), x.dtype)]


@mlpc_op(schema=SCHEMA, infer=infer_conv_nhwc)
class ConvNHWC(OpRun):
    """NumPy reference kernel of mlpc::ConvNHWC (onnx's reference Conv on transposed data)."""

    def _run(self, x, w, b=None, dilations=None, group=1, pads=None, strides=None):  # type: ignore[override]
        y = _conv_implementation(
            np.transpose(x, (0, 3, 1, 2)), w, b, "NOTSET", dilations, group, list(w.shape[2:]), pads, strides
        )
        return (np.ascontiguousarray(np.transpose(y, (0, 2, 3, 1))).astype(x.dtype),)
