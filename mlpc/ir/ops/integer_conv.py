"""mlpc::IntegerConv — int8/uint8 convolution with int32 accumulation.

    y = conv(x − x_zero_point, w − w_zero_point) + bias

with ONNX Conv's attributes (auto_pad, dilations, group, kernel_shape, pads, strides) over
any number of spatial dims (1-D and 2-D are the common cases). Padding contributes zeros
after the zero point is subtracted (the padded x equals x_zero_point), as in ConvInteger.
x_zero_point is a scalar; w_zero_point a scalar or one per output channel; bias an optional
int32 vector of one entry per output channel.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx.defs
import onnx_ir as ir
from onnx.reference.op_run import OpRun

from mlpc.ir.ops._registry import (
    INT8_TYPE_STRS,
    INT8_TYPES,
    Dim,
    TensorSig,
    attr,
    check_dtype,
    fail,
    formal,
    mlpc_op,
    mlpc_schema,
    same_dim,
)

logger = logging.getLogger(__name__)

_ints = onnx.defs.OpSchema.AttrType.INTS
SCHEMA = mlpc_schema(
    "IntegerConv",
    __doc__ or "",
    inputs=[
        formal("x", "T1", "input (N, C, D1, ...)"),
        formal("w", "T2", "weights (M, C/group, k1, ...)"),
        formal("x_zero_point", "T1", "scalar zero point of x", optional=True),
        formal("w_zero_point", "T2", "zero point of w: scalar or per output channel", optional=True),
        formal("bias", "tensor(int32)", "int32 bias, one per output channel", optional=True),
    ],
    outputs=[formal("y", "tensor(int32)", "int32 accumulators (N, M, O1, ...)")],
    type_constraints=[
        ("T1", INT8_TYPE_STRS, "type of x"),
        ("T2", INT8_TYPE_STRS, "type of w"),
    ],
    attributes=[
        attr("auto_pad", "NOTSET, SAME_UPPER, SAME_LOWER or VALID", "NOTSET"),
        attr("dilations", "dilation per spatial axis", kind=_ints),
        attr("group", "number of groups", 1),
        attr("kernel_shape", "kernel size per spatial axis", kind=_ints),
        attr("pads", "begin pads then end pads", kind=_ints),
        attr("strides", "stride per spatial axis", kind=_ints),
    ],
)


def conv_geometry(
    spatial: Sequence[Dim], kernel: Sequence[int], attrs: dict[str, Any], where: str
) -> tuple[list[int], list[int], list[int] | None, list[Dim]]:
    """Resolve strides, dilations, pads (begin + end, None if undecidable) and output dims
    of a convolution over `spatial` input dims with `kernel` sizes."""
    n = len(spatial)
    strides = list(attrs.get("strides") or [1] * n)
    dilations = list(attrs.get("dilations") or [1] * n)
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if len(strides) != n or len(dilations) != n:
        raise fail(where, f"strides {strides} / dilations {dilations} need {n} entries")
    if any(s < 1 for s in strides) or any(d < 1 for d in dilations):
        raise fail(where, f"strides {strides} and dilations {dilations} must be ≥ 1")
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto_pad in ("NOTSET", "VALID"):
        pads = list(attrs.get("pads") or [0] * (2 * n)) if auto_pad == "NOTSET" else [0] * (2 * n)
        if len(pads) != 2 * n or any(p < 0 for p in pads):
            raise fail(where, f"pads {pads} must be {2 * n} non-negative integers")
        out: list[Dim] = []
        for i, s in enumerate(spatial):
            if not isinstance(s, int):
                out.append(None)
                continue
            size = s + pads[i] + pads[i + n] - eff[i]
            if size < 0:
                raise fail(
                    where,
                    f"kernel {eff[i]} (dilated) is larger than padded input {s + pads[i] + pads[i + n]}",
                )
            out.append(size // strides[i] + 1)
        return strides, dilations, pads, out
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise fail(where, f"unknown auto_pad {auto_pad!r}; use NOTSET, VALID, SAME_UPPER or SAME_LOWER")
    if not all(isinstance(s, int) for s in spatial):
        return (
            strides,
            dilations,
            None,
            [math.ceil(s / st) if isinstance(s, int) else None for s, st in zip(spatial, strides)],
        )
    begins, ends, out = [], [], []
    for s, st, e in zip(spatial, strides, eff):
        o = math.ceil(s / st)
        total = max(0, (o - 1) * st + e - s)
        small, big = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else big)
        ends.append(big if auto_pad == "SAME_UPPER" else small)
        out.append(o)
    return strides, dilations, begins + ends, out


def _kernel_dims(w: TensorSig, attrs: dict[str, Any], where: str, n: int) -> list[int] | None:
    ks = attrs.get("kernel_shape")
    if ks is not None:
        if len(ks) != n:
            raise fail(where, f"kernel_shape {list(ks)} needs {n} entries")
        if w.shape is not None and any(same_dim(a, b) is False for a, b in zip(ks, w.shape[2:])):
            raise fail(where, f"kernel_shape {list(ks)} differs from the weight's {list(w.shape[2:])}")
        return list(ks)
    if w.shape is None or not all(isinstance(d, int) for d in w.shape[2:]):
        return None
    return list(w.shape[2:])


def infer_integer_conv(
    inputs: Sequence[TensorSig | None], attrs: dict[str, Any], where: str
) -> list[TensorSig]:
    """Output (N, M, O1, ...) int32; checks ranks, channels vs group, zero points and bias."""
    if len(inputs) < 2 or inputs[0] is None or inputs[1] is None:
        raise fail(where, "needs inputs x and w")
    x, w = inputs[0], inputs[1]
    xzp, wzp, bias = (inputs[i] if len(inputs) > i else None for i in (2, 3, 4))
    for what, sig in (("input x", x), ("weight w", w), ("x_zero_point", xzp), ("w_zero_point", wzp)):
        check_dtype(where, what, sig, INT8_TYPES)
    check_dtype(where, "bias", bias, [ir.DataType.INT32])
    group = attrs.get("group", 1)
    if group < 1:
        raise fail(where, f"group={group} must be ≥ 1")
    if x.shape is None or w.shape is None:
        return [TensorSig(None, ir.DataType.INT32)]
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise fail(where, f"x (rank {len(x.shape)}) and w (rank {len(w.shape)}) must share a rank ≥ 3")
    m = w.shape[0]
    if same_dim(x.shape[1], w.shape[1] * group if isinstance(w.shape[1], int) else None) is False:
        raise fail(where, f"x has {x.shape[1]} channels but w expects {w.shape[1]} × group {group}")
    if isinstance(m, int) and m % group:
        raise fail(where, f"{m} output channels are not divisible by group {group}")
    if xzp is not None and xzp.shape is not None and any(d != 1 for d in xzp.shape):
        raise fail(where, f"x_zero_point must be a scalar, got shape {list(xzp.shape)}")
    for what, sig in (("w_zero_point", wzp), ("bias", bias)):
        if sig is None or sig.shape is None or (what == "w_zero_point" and len(sig.shape) == 0):
            continue
        if len(sig.shape) != 1 or (
            same_dim(sig.shape[0], m) is False and not (what == "w_zero_point" and sig.shape[0] == 1)
        ):
            raise fail(where, f"{what} must have shape [{m}], got {list(sig.shape)}")
    n = len(x.shape) - 2
    kernel = _kernel_dims(w, attrs, where, n)
    if kernel is None:
        return [TensorSig((x.shape[0], m, *([None] * n)), ir.DataType.INT32)]
    _, _, _, out = conv_geometry(x.shape[2:], kernel, attrs, where)
    return [TensorSig((x.shape[0], m, *out), ir.DataType.INT32)]


def integer_conv(
    x: np.ndarray,
    w: np.ndarray,
    x_zero_point: Any = None,
    w_zero_point: Any = None,
    bias: Any = None,
    **attrs: Any,
) -> np.ndarray:
    """Reference integer convolution (see module doc); int64 sums wrapped to int32."""
    n_sp = x.ndim - 2
    group = attrs.get("group", 1)
    kernel = list(w.shape[2:])
    strides, dilations, pads, out = conv_geometry(list(x.shape[2:]), kernel, attrs, "IntegerConv")
    x64 = x.astype(np.int64) - (0 if x_zero_point is None else np.int64(np.reshape(x_zero_point, ())))
    w64 = w.astype(np.int64)
    if w_zero_point is not None:
        w64 = w64 - np.asarray(w_zero_point, dtype=np.int64).reshape((-1,) + (1,) * (w.ndim - 1))
    xp = np.pad(x64, [(0, 0), (0, 0)] + [(pads[i], pads[i + n_sp]) for i in range(n_sp)])
    batch, channels = x.shape[:2]
    m = w.shape[0]
    xg = xp.reshape(batch, group, channels // group, *xp.shape[2:])
    wg = w64.reshape(group, m // group, channels // group, *kernel)
    y = np.zeros((batch, group, m // group, *out), dtype=np.int64)
    for k in itertools.product(*(range(kk) for kk in kernel)):
        window = tuple(
            slice(k[i] * dilations[i], k[i] * dilations[i] + strides[i] * (out[i] - 1) + 1, strides[i])
            for i in range(n_sp)
        )
        patch = xg[(slice(None), slice(None), slice(None), *window)]  # (N, g, C/g, O...)
        y += np.einsum("ngc...,gmc->ngm...", patch, wg[(..., *k)])
    y = y.reshape(batch, m, *out)
    if bias is not None:
        y += np.asarray(bias, dtype=np.int64).reshape((1, m) + (1,) * n_sp)
    return y.astype(np.int32)


@mlpc_op(schema=SCHEMA, infer=infer_integer_conv)
class IntegerConv(OpRun):
    """NumPy reference kernel of mlpc::IntegerConv."""

    def _run(
        self,
        x,
        w,
        x_zero_point=None,
        w_zero_point=None,
        bias=None,  # type: ignore[override]
        auto_pad=None,
        dilations=None,
        group=None,
        kernel_shape=None,
        pads=None,
        strides=None,
    ):
        attrs = {
            "auto_pad": auto_pad or "NOTSET",
            "dilations": dilations,
            "group": group or 1,
            "pads": pads,
            "strides": strides,
        }
        return (integer_conv(x, w, x_zero_point, w_zero_point, bias, **attrs),)
