"""Converters for the `mlpc` integer ops: IntegerMatMul, IntegerConv, Requantize, IntegerAdd.

Products accumulate in int32 and are bit-exact with the NumPy kernels of `mlpc.ir.ops`:
operands are int8 (or int16 once a zero point is subtracted or a uint8 widened), multiplied
after sign extension to int32 — never through a saturating 16-bit pair-add. Requantization
runs in int64: ((acc·m + 2^(s−1)) >> s) + zp, clamped.

Weights of 2–4 bits (the weight value's QuantParams say so) are packed into uint8 constants —
four 2-bit or two 4-bit slots per byte, low bits first, 3-bit values in 4-bit slots — along
the reduction axis, and decoded inside the reduction of a TE compute:
`((Wp[n, r // per] >> (r % per)·slot) & mask)`, sign-extended for signed types. The compiled
library therefore holds the packed bytes only.

The layout of 8-bit kernels depends on the device: on CPUs the int16-pair layout of
`int_pairs` (vpmaddwd), on CUDA the dp4a layout of `int_cuda` (int8 words, Σw zero-point
correction); operands neither fits take plain int32 computes (relax matmul/conv).
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from tvm import relax, te, tirx, topi

from mlpc.backends.tvm import int_cuda, int_depthwise, int_pairs
from mlpc.backends.tvm.packing import decode as _decode
from mlpc.backends.tvm.packing import pack_rows, slot_bits
from mlpc.backends.tvm.context import LowerContext, const, dtype_of, shape_of
from mlpc.backends.tvm.ops_nn import _CONV, _LAYOUT, conv_pads, window_attrs
from mlpc.backends.tvm.registry import converter
from mlpc.ir import MLPC_DOMAIN, get_quant

logger = logging.getLogger(__name__)
op = relax.op


def _packable(ctx: LowerContext, node: ir.Node, index: int) -> tuple[np.ndarray, int] | None:
    """(integer weight, bits) when input `index` is a constant of ≤ 4-bit quantized values."""
    value = node.inputs[index]
    arr = ctx.const_of(value)
    qp = get_quant(value) if value is not None else None
    if arr is None or qp is None or qp.bits > 4 or arr.dtype not in (np.int8, np.uint8):
        return None
    slot = slot_bits(qp.bits)
    lo, hi = (-(1 << (slot - 1)), (1 << (slot - 1)) - 1) if arr.dtype == np.int8 else (0, (1 << slot) - 1)
    if arr.size == 0 or arr.min() < lo or arr.max() > hi:
        return None
    return arr, qp.bits


# -- operands ------------------------------------------------------------------------------


def _centered(x: relax.Expr, zp: relax.Expr | None, per_row: bool = False) -> relax.Expr:
    """x − zp as int8 when that is x itself (signed, no zero point), else as int16."""
    if zp is None and dtype_of(x) == "int8":
        return x
    x = op.astype(x, "int16")
    if zp is None:
        return x
    zp = op.astype(zp, "int16")
    if per_row and len(shape_of(zp)) == 1:
        zp = op.reshape(zp, [-1, 1])
    return op.subtract(x, zp)


def _centered_const(w: np.ndarray, zp: np.ndarray | None, axis: int) -> np.ndarray:
    """A constant weight minus its zero point (per channel along `axis`), int8 when it fits."""
    wide = w.astype(np.int16)
    if zp is not None:
        zp = np.asarray(zp, np.int16)
        if zp.ndim == 1:
            shape = [1] * w.ndim
            shape[axis] = zp.size
            zp = zp.reshape(shape)
        wide = wide - zp
    return wide.astype(np.int8) if wide.min() >= -128 and wide.max() <= 127 else wide


def _optional(ctx: LowerContext, node: ir.Node, index: int) -> np.ndarray | None:
    return ctx.const_input(node, index, "zero point") if len(node.inputs) > index else None


def _scalar_zero_point(ctx: LowerContext, node: ir.Node, index: int) -> int | None:
    """The activation zero point at input `index` as an int (0 when absent); None when it is
    not one value for the whole tensor."""
    if len(node.inputs) <= index or node.inputs[index] is None:
        return 0
    zp = ctx.const_input(node, index, "zero point")
    return int(zp.reshape(())) if zp is not None and zp.size == 1 else None


# -- the kernels' layout ----------------------------------------------------------------------


def _dot_layout(ctx: LowerContext, node: ir.Node, zp_index: int | None, act_dtype: str, act_zp: int,
                w: np.ndarray, out_axis: int) -> tuple[int_pairs.Layout, list[relax.Expr]]:
    """The layout of a pair-kernel IntegerConv/IntegerMatMul and the extra operand it takes: a
    quad layout with its activation-offset correction when the target has a byte dot product
    and the operands fit it exactly — int8 quads for the ARM dot product (`int8_dot` "sdot"),
    uint8 quads for AVX2's vpmaddubsw ("pmaddubsw", weights of at most 7 bits) — else int16
    pairs. `w` is the integer weight (its outputs along `out_axis`); `zp_index` the input holding
    the zero point still to be subtracted from it (None: `w` is already centered); a zero point
    that is not a constant keeps the pairs."""
    layout = {"sdot": int_pairs.QUADS, "pmaddubsw": int_pairs.UQUADS}.get(ctx.int8_dot)
    if layout is None or not int_pairs.quads_fit(act_dtype):
        return int_pairs.PAIRS, []
    if zp_index is not None:
        if len(node.inputs) > zp_index and node.inputs[zp_index] is not None and ctx.const_of(node.inputs[zp_index]) is None:
            return int_pairs.PAIRS, []
        w = _centered_const(w, _optional(ctx, node, zp_index), out_axis)
    if not int_pairs.quads_fit(act_dtype, w, layout):
        return int_pairs.PAIRS, []
    correction = int_pairs.offset_correction(np.moveaxis(w, out_axis, 0), act_dtype, act_zp, layout)
    return layout, [] if correction is None else [const(correction)]


# -- IntegerMatMul ----------------------------------------------------------------------------


def _packed_matmul(a: te.Tensor, wp: te.Tensor, *rest, k: int, bits: int, signed: bool, has_azp: bool,
                   has_bzp: bool):
    """y[..., m, n] = Σ_k (a[..., m, k] − azp) · (decode(wp)[n, k] − bzp[n]) in int32."""
    azp = rest[0] if has_azp else None
    bzp = rest[int(has_azp)] if has_bzp else None
    n = wp.shape[0]
    rk = te.reduce_axis((0, k), name="k")

    def body(*idx):
        *batch, m, col = idx
        x = a[(*batch, m, rk)].astype("int32")
        if azp is not None:
            x = x - (azp[m] if len(azp.shape) == 1 else azp()).astype("int32")
        w = _decode(wp, col, rk, bits, signed)
        if bzp is not None:
            w = w - (bzp[col] if len(bzp.shape) == 1 else bzp()).astype("int32")
        return te.sum(x * w, axis=rk)

    return te.compute((*a.shape[:-1], n), body, name="packed_matmul")


@converter("IntegerMatMul", MLPC_DOMAIN)
def _integer_matmul(ctx: LowerContext, node, inputs):
    a, b = inputs[0], inputs[1]
    azp = inputs[2] if len(inputs) > 2 else None
    bzp = inputs[3] if len(inputs) > 3 else None
    packed = _packable(ctx, node, 1) if len(shape_of(a)) >= 2 else None
    a_zp = _scalar_zero_point(ctx, node, 2)
    if ctx.device == "cuda" and packed is None:
        quad = _cuda_matmul(ctx, node, a, a_zp)
        if quad is not None:
            return [quad]
    if (ctx.device == "cpu" and packed is not None and packed[0].ndim == 2 and int_pairs.fits(packed[0].shape[1])
            and a_zp is not None):
        w, bits = packed
        layout, extra = _dot_layout(ctx, node, 3, dtype_of(a), a_zp, w, 1)
        return [ctx.emit_te(int_pairs.pair_matmul, a, const(int_pairs.pack_pairs(w.T, bits, layout)),
                            *([bzp] if bzp is not None else []), *extra, depth=w.shape[0], a_zero_point=a_zp,
                            packed_bits=bits, signed=bool(w.dtype == np.int8), layout_name=layout.name)]
    if packed is not None and packed[0].ndim == 2:
        w, bits = packed
        wp = pack_rows(np.ascontiguousarray(w.T), bits)
        extra = [e for e in (azp, bzp) if e is not None]
        return [ctx.emit_te(_packed_matmul, a, const(wp), *extra, k=w.shape[0], bits=bits,
                            signed=w.dtype == np.int8, has_azp=azp is not None, has_bzp=bzp is not None)]
    b_const = ctx.const_of(node.inputs[1])
    if (ctx.device == "cpu" and b_const is not None and b_const.ndim == 2 and int_pairs.fits(b_const.shape[1])
            and a_zp is not None):
        w = _centered_const(b_const, _optional(ctx, node, 3), 1)
        layout, extra = _dot_layout(ctx, node, None, dtype_of(a), a_zp, w, 1)
        return [ctx.emit_te(int_pairs.pair_matmul, a, const(int_pairs.pair_weight(w.T, layout)), *extra,
                            depth=w.shape[0], a_zero_point=a_zp, layout_name=layout.name)]
    if b_const is not None and b_const.ndim >= 1:
        b = const(_centered_const(b_const, _optional(ctx, node, 3), b_const.ndim - 1))
    else:
        b = _centered(b, bzp)
    return [op.matmul(_centered(a, azp, per_row=True), b, out_dtype="int32")]


def _cuda_matmul(ctx: LowerContext, node: ir.Node, a: relax.Expr, a_zp: int | None) -> relax.Expr | None:
    """IntegerMatMul in the dp4a layout (`int_cuda.quad_matmul`), or None when it does not fit."""
    b_const = ctx.const_of(node.inputs[1])
    if b_const is None or b_const.ndim != 2 or a_zp is None or len(shape_of(a)) < 2:
        return None
    w = _centered_const(b_const, _optional(ctx, node, 3), 1).T  # [N, K]
    if not int_cuda.fits(w, dtype_of(a)):
        return None
    zp = int_cuda.staged_zero_point(a_zp, dtype_of(a))
    sums = [const(int_cuda.weight_sums(w))] if zp else []
    return ctx.emit_te(int_cuda.quad_matmul, a, const(int_cuda.quad_weight(w)), *sums, depth=w.shape[1],
                       a_zero_point=a_zp)


# -- IntegerConv ------------------------------------------------------------------------------


def _packed_conv(x: te.Tensor, wp: te.Tensor, *rest, kernel, strides, dilations, pads, group: int,
                 cin_group: int, bits: int, signed: bool, xzp: int, has_wzp: bool):
    """N-D grouped convolution, weight decoded from its packed rows (one per output channel,
    reduction index r = c·∏kernel + flattened kernel position); x is padded with its zero point."""
    wzp = rest[0] if has_wzp else None
    nsp = len(kernel)
    xp = topi.nn.pad(x, [0, 0, *pads[:nsp]], [0, 0, *pads[nsp:]], pad_value=xzp, name="pad")
    m = wp.shape[0]
    m_group = m // group
    out_sp = [
        (x.shape[2 + i] + pads[i] + pads[i + nsp] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1
        for i in range(nsp)
    ]
    rc = te.reduce_axis((0, cin_group), name="rc")
    rk = [te.reduce_axis((0, k), name=f"rk{i}") for i, k in enumerate(kernel)]
    ksize = [int(np.prod(kernel[i + 1:])) for i in range(nsp)]

    def body(b, oc, *o):
        c = tirx.indexdiv(oc, m_group) * cin_group + rc
        pos = [o[i] * strides[i] + rk[i] * dilations[i] for i in range(nsp)]
        v = xp[(b, c, *pos)].astype("int32") - xzp
        r = rc * int(np.prod(kernel)) + sum(rk[i] * ksize[i] for i in range(nsp))
        w = _decode(wp, oc, r, bits, signed)
        if wzp is not None:
            w = w - (wzp[oc] if len(wzp.shape) == 1 else wzp()).astype("int32")
        return te.sum(v * w, axis=[rc, *rk])

    return te.compute((x.shape[0], m, *out_sp), body, name="packed_conv")


def _conv_check(node: ir.Node, opset: int) -> str | None:
    shape = node.inputs[0].shape if node.inputs and node.inputs[0] is not None else None
    if shape is not None and len(shape) not in (3, 4, 5):
        return f"{len(shape) - 2}-D IntegerConv is not supported (1-D, 2-D and 3-D are)"
    return None


@converter("IntegerConv", MLPC_DOMAIN, check=_conv_check)
def _integer_conv(ctx: LowerContext, node, inputs):
    x = inputs[0]
    xzp = inputs[2] if len(inputs) > 2 else None
    wzp = inputs[3] if len(inputs) > 3 else None
    bias = inputs[4] if len(inputs) > 4 else None
    xs = shape_of(x)
    nsp = len(xs) - 2
    w_arr = ctx.const_input(node, 1, "weight")
    kernel, strides, dilations = window_attrs(node, nsp, w_arr.shape[2:])
    pads = conv_pads(node, xs[2:], kernel, strides, dilations)
    group = node.attributes.get_int("group", 1)
    packed = _packable(ctx, node, 1)
    x_zp = _scalar_zero_point(ctx, node, 2)
    cpu = ctx.device == "cpu"
    w_quad = (_centered_const(w_arr, _optional(ctx, node, 3), 0)
              if not cpu and packed is None and group == 1 and x_zp is not None else None)
    if w_quad is not None and int_cuda.fits(w_quad, dtype_of(x)):
        zp = int_cuda.staged_zero_point(x_zp, dtype_of(x))
        sums = [const(int_cuda.weight_sums(w_quad))] if zp else []
        y = ctx.emit_te(int_cuda.quad_conv, x, const(int_cuda.quad_weight(w_quad)), *sums, kernel=list(kernel),
                        strides=strides, dilations=dilations, pads=pads, channels=w_quad.shape[1], x_zero_point=x_zp)
    elif cpu and packed is not None and group == 1 and int_pairs.fits(packed[0].shape[0]) and x_zp is not None:
        w, bits = packed
        layout, extra = _dot_layout(ctx, node, 3, dtype_of(x), x_zp, w, 0)
        fold = int_pairs.folds_columns(w.shape[1], list(kernel), layout)
        y = ctx.emit_te(int_pairs.pair_conv, x,
                        const(int_pairs.pack_pairs(int_pairs.fold_columns(w) if fold else w, bits, layout)),
                        *([wzp] if wzp is not None else []), *extra, kernel=list(kernel), strides=strides,
                        dilations=dilations, pads=pads, channels=w.shape[1], x_zero_point=x_zp,
                        packed_bits=bits, signed=bool(w.dtype == np.int8), layout_name=layout.name, fold=fold)
    elif packed is not None:
        w, bits = packed
        wp = pack_rows(w.reshape(w.shape[0], -1), bits)
        x_zp = _optional(ctx, node, 2)
        y = ctx.emit_te(_packed_conv, x, const(wp), *([wzp] if wzp is not None else []), kernel=list(kernel),
                        strides=strides, dilations=dilations, pads=pads, group=group, cin_group=w.shape[1],
                        bits=bits, signed=w.dtype == np.int8, has_wzp=wzp is not None,
                        xzp=0 if x_zp is None else int(x_zp.reshape(())))
    elif cpu and group == 1 and int_pairs.fits(w_arr.shape[0]) and x_zp is not None:
        w = _centered_const(w_arr, _optional(ctx, node, 3), 0)
        layout, extra = _dot_layout(ctx, node, None, dtype_of(x), x_zp, w, 0)
        fold = int_pairs.folds_columns(w.shape[1], list(kernel), layout)
        y = ctx.emit_te(int_pairs.pair_conv, x,
                        const(int_pairs.pair_weight(int_pairs.fold_columns(w) if fold else w, layout)), *extra,
                        kernel=list(kernel), strides=strides, dilations=dilations, pads=pads, channels=w.shape[1],
                        x_zero_point=x_zp, layout_name=layout.name, fold=fold)
    elif cpu and x_zp is not None and int_depthwise.fits(tuple(xs), w_arr.shape, group, dtype_of(x)):
        w = _centered_const(w_arr, _optional(ctx, node, 3), 0)
        y = ctx.emit_te(int_depthwise.depthwise_conv, x, const(w), kernel=list(kernel), strides=strides,
                        dilations=dilations, pads=pads, x_zero_point=x_zp)
    else:
        w = const(_centered_const(w_arr, _optional(ctx, node, 3), 0))
        data_layout, kernel_layout, _ = _LAYOUT[nsp]
        y = _CONV[nsp](_centered(x, xzp), w, strides=strides, padding=pads, dilation=dilations, groups=group,
                       data_layout=data_layout, kernel_layout=kernel_layout, out_dtype="int32")
    if bias is not None:
        y = op.add(y, op.reshape(bias, [1, -1] + [1] * nsp))
    return [y]


# -- Requantize / IntegerAdd --------------------------------------------------------------


HIGH_WORD = 32  # requantize shifts at least this large take the high-word form (requantize_high_word)


def _int64_along(arr: np.ndarray, ndim: int, axis: int) -> relax.Expr:
    arr = np.asarray(arr, np.int64)
    if arr.ndim == 1 and ndim > 0:
        shape = [1] * ndim
        shape[axis] = arr.size
        arr = arr.reshape(shape)
    return const(arr)


def requantize_high_word(x: te.Tensor, multiplier: te.Tensor, rounding: te.Tensor, low_shift: te.Tensor,
                         zero_point: te.Tensor, *, axis: int | None, qmin: int, qmax: int, out_dtype: str) -> te.Tensor:
    """Requantize an int32 tensor `x`: clamp((((x + 2^31)·m + r − 2^31·m) >> 32 >> s') + zp, qmin, qmax)
    as `out_dtype`, which equals ((x·m + r) >> (s' + 32)) + zp, clamped (floor shifts compose).
    `multiplier` (uint32), `rounding` (int64 r), `low_shift` (int32 s' = shift − 32) and
    `zero_point` (int32) hold one entry per channel along `axis` (one entry when `axis` is None).

    Why this form: AVX2 has no 64 × 64 multiply and no 64-bit arithmetic shift (vpsraq is
    AVX-512), and LLVM emulated both per lane — 65 % of the digits CNN's first w8a8 conv at batch
    64. Here both factors are zero-extended 32-bit values (x + 2^31 as a uint32, m < 2^31), so the
    product is one unsigned widening multiply (vpmuludq; NEON umull), and the shift by 32 takes
    the high words. (A signed x would not do: LLVM rewrites sext(acc + bias) as
    sext(acc) + sext(bias), which no longer fits vpmuldq.) The 2^31·m the offset adds is taken
    out of the rounding term."""

    def body(*i):
        c = i[axis] if axis is not None else 0
        biased = (x[i] ^ tirx.const(-(1 << 31), "int32")).astype("uint32").astype("int64")
        product = biased * multiplier[c].astype("int64") + rounding[c]
        y = tirx.shift_right(tirx.shift_right(product, tirx.const(HIGH_WORD, "int64")).astype("int32"), low_shift[c])
        y = tirx.max(tirx.min(y + zero_point[c], tirx.const(qmax, "int32")), tirx.const(qmin, "int32"))
        return y.astype(out_dtype)

    return te.compute(x.shape, body, name="requantize")


def _clamp_range(node: ir.Node, zp: np.ndarray) -> tuple[int, int]:
    info = np.iinfo(zp.dtype)
    return node.attributes.get_int("qmin", int(info.min)), node.attributes.get_int("qmax", int(info.max))


def _clamp_cast(ctx: LowerContext, node: ir.Node, y: relax.Expr, zp: np.ndarray) -> relax.Expr:
    lo, hi = _clamp_range(node, zp)
    y = op.add(y, const(np.array(zp, np.int64).reshape(())))
    y = op.clip(y, lo, hi)
    return op.astype(y, str(zp.dtype))


def _rounding(shift: np.ndarray) -> np.ndarray:
    shift = np.asarray(shift, np.int64)
    return np.where(shift > 0, np.left_shift(np.int64(1), np.maximum(shift - 1, 0)), 0)


@converter("Requantize", MLPC_DOMAIN)
def _requantize(ctx: LowerContext, node, inputs):
    x = inputs[0]
    ndim = len(shape_of(x))
    axis = node.attributes.get_int("axis", 1) % max(ndim, 1)
    m = ctx.const_input(node, 1, "multiplier")
    shift = ctx.const_input(node, 2, "shift")
    zp = ctx.const_input(node, 3, "zero point")
    shift = np.asarray(shift, np.int64)
    if np.all(shift >= HIGH_WORD) and dtype_of(x) == "int32":
        lo, hi = _clamp_range(node, zp)
        per_channel = max(np.asarray(m).size, np.asarray(shift).size, np.asarray(zp).size) > 1
        channels = shape_of(x)[axis] if per_channel else 1
        vector = lambda a, dtype: const(np.broadcast_to(np.asarray(a, dtype).reshape(-1), (channels,)).copy())  # noqa: E731
        m = np.asarray(m, np.int64)
        rounding = _rounding(shift) - (m << 31)  # the offset's 2^31·m (see requantize_high_word)
        return [ctx.emit_te(requantize_high_word, x, vector(m, np.uint32), vector(rounding, np.int64),
                            vector(shift - HIGH_WORD, np.int32), vector(zp, np.int32),
                            axis=axis if per_channel else None, qmin=lo, qmax=hi, out_dtype=str(zp.dtype))]
    y = op.multiply(op.astype(x, "int64"), _int64_along(m, ndim, axis))
    y = op.add(y, _int64_along(_rounding(shift), ndim, axis))
    y = op.right_shift(y, _int64_along(shift, ndim, axis))
    return [_clamp_cast(ctx, node, y, zp)]


# IntegerAdd shifts from this one up take `integer_add_high_word`: its sum of two 8-bit operands
# (|x − zp| ≤ 255) times int32 multipliers, |Σ| < 2^40 plus the rounding 2^(s−1), shifted left by
# 32 − s stays within int64 for every s ≥ 10.
ADD_HIGH_WORD_MIN_SHIFT = 10


def integer_add_high_word(a: te.Tensor, b: te.Tensor, *, a_zero_point: int, b_zero_point: int, a_multiplier: int,
                          b_multiplier: int, shift: int, zero_point: int, qmin: int, qmax: int,
                          out_dtype: str) -> te.Tensor:
    """IntegerAdd of 8-bit tensors `a` and `b` (NumPy broadcasting) with scalar parameters:
    clamp((((a − azp)·am + (b − bzp)·bm + 2^(s−1)) >> s) + zp, qmin, qmax) as `out_dtype`.

    The parameters are literals and each operand minus its zero point an int32, so each product
    is a widening 32 × 32 multiply (vpmuldq); the shift takes the high word of the int64 sum, after
    a left shift by 32 − s for s < 32 (exact, see ADD_HIGH_WORD_MIN_SHIFT) or followed by an
    int32 shift by s − 32: AVX2 has no 64-bit arithmetic shift, and LLVM's emulation of it and of
    the 64 × 64 multiplies made the residual add cost as much as the zoo ResNet's conv it follows."""
    rank = max(len(a.shape), len(b.shape))
    out_shape = [max(int(d) for d in dims) for dims in zip(*(
        [1] * (rank - len(t.shape)) + [int(d) for d in t.shape] for t in (a, b)))]

    def operand(t: te.Tensor, index: tuple, zp: int, multiplier: int):
        lead = rank - len(t.shape)
        idx = [0 if int(d) == 1 else index[lead + k] for k, d in enumerate(t.shape)]
        centered = t[tuple(idx)].astype("int32") - tirx.const(zp, "int32")
        return centered.astype("int64") * tirx.const(multiplier, "int64")

    def body(*i):
        total = (operand(a, i, a_zero_point, a_multiplier) + operand(b, i, b_zero_point, b_multiplier)
                 + tirx.const(1 << (shift - 1), "int64"))
        if shift < HIGH_WORD:
            total = tirx.shift_left(total, tirx.const(HIGH_WORD - shift, "int64"))
        y = tirx.shift_right(total, tirx.const(HIGH_WORD, "int64")).astype("int32")
        if shift > HIGH_WORD:
            y = tirx.shift_right(y, tirx.const(shift - HIGH_WORD, "int32"))
        y = tirx.max(tirx.min(y + tirx.const(zero_point, "int32"), tirx.const(qmax, "int32")),
                     tirx.const(qmin, "int32"))
        return y.astype(out_dtype)

    return te.compute(out_shape, body, name="integer_add")


@converter("IntegerAdd", MLPC_DOMAIN)
def _integer_add(ctx: LowerContext, node, inputs):
    a, b = inputs[0], inputs[1]
    azp, bzp, am, bm, shift, zp = (ctx.const_input(node, i, "parameter") for i in range(2, 8))
    if int(shift) >= ADD_HIGH_WORD_MIN_SHIFT and {dtype_of(a), dtype_of(b)} <= {"int8", "uint8"}:
        lo, hi = _clamp_range(node, zp)
        return [ctx.emit_te(integer_add_high_word, a, b, a_zero_point=int(azp), b_zero_point=int(bzp),
                            a_multiplier=int(am), b_multiplier=int(bm), shift=int(shift), zero_point=int(zp),
                            qmin=lo, qmax=hi, out_dtype=str(zp.dtype))]
    terms = []
    for x, xzp, mult in ((a, azp, am), (b, bzp, bm)):
        x = op.subtract(op.astype(x, "int64"), const(np.array(xzp, np.int64).reshape(())))
        terms.append(op.multiply(x, const(np.array(mult, np.int64).reshape(()))))
    y = op.add(op.add(terms[0], terms[1]), const(_rounding(shift).reshape(())))
    y = op.right_shift(y, const(np.array(shift, np.int64).reshape(())))
    return [_clamp_cast(ctx, node, y, zp)]
