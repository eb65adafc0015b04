"""Converters for the float ops of the `mlpc` domain (the integer ones live in ops_integer.py)."""

from __future__ import annotations

import logging
import math

from tvm import relax, s_tir, te, tirx, topi

from mlpc.backends.tvm.context import dtype_of, shape_of
from mlpc.backends.tvm.cpu_schedule import ACCUMULATOR_SCOPE, PARALLEL_MIN_WORK
from mlpc.backends.tvm.ops_elementwise import sigmoid
from mlpc.backends.tvm.registry import converter
from mlpc.ir.ops import MLPC_DOMAIN

logger = logging.getLogger(__name__)


@converter("SiLU", domain=MLPC_DOMAIN)
def _silu(ctx, node, inputs):
    x = inputs[0]
    return [relax.op.multiply(x, sigmoid(ctx, x))]


def attention_compute(
    q: te.Tensor, kt: te.Tensor, v: te.Tensor, mask: te.Tensor | None, scale: float
) -> te.Tensor:
    """softmax(Q·KT·scale + mask)·V as TE stages: scores, logits, row max, exp, row sum, the
    weighted sum of V and the normalized output (blocks named after the stages)."""
    *batch, rows, depth = (int(d) for d in q.shape)
    keys, width = int(kt.shape[-1]), int(v.shape[-1])
    dtype = q.dtype
    d = te.reduce_axis((0, depth), "d")
    scores = te.compute(
        (*batch, rows, keys),
        lambda *i: te.sum(q[(*i[:-1], d)] * kt[(*i[:-2], d, i[-1])], axis=d),
        name="scores",
    )

    def logit(*i):
        x = scores[i] * tirx.const(scale, dtype)
        if mask is None:
            return x
        offset = len(i) - len(mask.shape)
        index = [0 if int(mask.shape[k]) == 1 else i[offset + k] for k in range(len(mask.shape))]
        return x + mask[tuple(index)]

    logits = te.compute(scores.shape, logit, name="logits")
    j = te.reduce_axis((0, keys), "j")
    row_max = te.compute((*batch, rows), lambda *i: te.max(logits[(*i, j)], axis=j), name="row_max")
    if dtype == "float32":  # topi's polynomial exp (see ops_elementwise.fast_math; inputs ≤ 0 here)
        shifted = te.compute(scores.shape, lambda *i: logits[i] - row_max[i[:-1]], name="shifted")
        exp = topi.fast_exp(shifted)
    else:
        exp = te.compute(scores.shape, lambda *i: te.exp(logits[i] - row_max[i[:-1]]), name="exp")
    j2 = te.reduce_axis((0, keys), "j2")
    row_sum = te.compute((*batch, rows), lambda *i: te.sum(exp[(*i, j2)], axis=j2), name="row_sum")
    j3 = te.reduce_axis((0, keys), "j3")
    acc = te.compute(
        (*batch, rows, width),
        lambda *i: te.sum(exp[(*i[:-1], j3)] * v[(*i[:-2], j3, i[-1])], axis=j3),
        name="acc",
    )
    return te.compute(acc.shape, lambda *i: acc[i] / row_sum[i[:-1]], name="out")


def _best_effort(fn, *args) -> None:
    try:
        fn(*args)
    except s_tir.ScheduleError as e:
        logger.debug("attention schedule step skipped: %s", str(e).splitlines()[-1])


QUERY_TILE = 4  # query rows sharing each loaded key/value row (a register tile)
VECTOR = 16  # accumulator columns per register tile row (two AVX2 vectors of float32)


def _has_block(sch: s_tir.Schedule, name: str) -> bool:
    return any(sch.get(b).name_hint == name for b in sch.get_child_blocks(sch.get_sblock("root")))


def schedule_attention(func: tirx.PrimFunc) -> tirx.PrimFunc:
    """Row-fused schedule: tiles of QUERY_TILE query rows (over batch × heads × queries) run in
    parallel and every stage of a tile (scores, max, exp, sum, V product) is computed inside the
    tile loop, so the scores stay in cache; each key/value row loaded serves the whole tile, and
    the key axis of the scores and the output width are vectorized."""
    sch = s_tir.Schedule(func)
    out = sch.get_sblock("out")
    *batch, query, column = sch.get_loops(out)
    queries = int(sch.get(query).extent)
    tile = next((t for t in (QUERY_TILE, 2) if queries % t == 0 and queries > t), 1)
    query_outer, _ = sch.split(query, [None, tile])
    # compute_at on the unfused loops (fusing first makes TVM over-approximate the regions).
    fast = _has_block(sch, "shifted")
    exp_name = "T_fast_exp" if fast else "exp"
    for name in ("acc", "row_sum", exp_name, *(("shifted",) if fast else ()), "row_max", "logits", "scores"):
        sch.compute_at(sch.get_sblock(name), query_outer)
    sch.compute_inline(sch.get_sblock("logits"))
    if fast:
        sch.compute_inline(sch.get_sblock("shifted"))
        _best_effort(sch.vectorize, sch.get_loops(sch.get_sblock(exp_name))[-1])
    tiles = sch.fuse(*batch, query_outer) if batch else query_outer
    extent = int(sch.get(tiles).extent)
    keys = int(sch.get(sch.get_loops(sch.get_sblock("row_sum"))[-1]).extent)
    work = extent * tile * keys * int(sch.get(column).extent)
    if work >= PARALLEL_MIN_WORK and extent > 1:
        sch.parallel(tiles)
    for name in ("scores", "acc"):  # loops under the tile: row, column, reduction
        block = sch.get_sblock(name)
        row, column, reduction = sch.get_loops(block)[1:]
        width = int(sch.get(column).extent)
        lanes = next((v for v in (VECTOR, VECTOR // 2) if width % v == 0), width)
        chunk, lane = sch.split(column, [None, lanes])
        sch.reorder(chunk, reduction, row, lane)  # accumulators: tile rows × lanes, in registers
        write_back = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
        sch.reverse_compute_at(write_back, chunk)
        _best_effort(sch.vectorize, lane)
        _best_effort(sch.decompose_reduction, block, reduction)
        _best_effort(sch.unroll, row)
        _best_effort(sch.vectorize, sch.get_loops(write_back)[-1])
    _best_effort(sch.vectorize, sch.get_loops(out)[-1])
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).without_attr("global_symbol")


@converter("Attention", domain=MLPC_DOMAIN)
def _attention(ctx, node, inputs):
    q, kt, v = inputs[:3]
    mask = inputs[3] if len(inputs) > 3 else None
    scale = node.attributes.get_float("scale", 1.0)
    dtype = dtype_of(q)
    placeholders = [
        te.placeholder(shape_of(x), dtype_of(x), name)
        for x, name in ((q, "Q"), (kt, "KT"), (v, "V"), (mask, "mask"))
        if x is not None
    ]
    mask_ph = placeholders[3] if mask is not None else None
    out = attention_compute(*placeholders[:3], mask_ph, scale)
    func = te.create_prim_func([*placeholders, out])
    func = schedule_attention(func)
    gvar = ctx.bb.add_func(func, "mlpc_attention")
    args = [x for x in (q, kt, v, mask) if x is not None]
    shape = [int(d) for d in out.shape]
    logger.debug("attention %s: %s rows", node.name, math.prod(shape[:-1]))
    return [relax.call_tir(gvar, relax.Tuple(args), relax.TensorType(shape, dtype))]


@converter("ConvNHWC", domain=MLPC_DOMAIN)
def _conv_nhwc(ctx, node, inputs):
    x, w = inputs[0], inputs[1]
    attrs = node.attributes
    # OIHW → HWIO: a transpose of a constant, folded at compile time (no run-time transpose).
    y = relax.op.nn.conv2d(
        x,
        relax.op.permute_dims(w, [2, 3, 1, 0]),
        strides=list(attrs.get_ints("strides", [1, 1])),
        padding=list(attrs.get_ints("pads", [0, 0, 0, 0])),
        dilation=list(attrs.get_ints("dilations", [1, 1])),
        groups=attrs.get_int("group", 1),
        data_layout="NHWC",
        kernel_layout="HWIO",
    )
    if len(inputs) > 2 and inputs[2] is not None:
        y = relax.op.add(y, inputs[2])  # [O] broadcasts over the last (channel) axis
    return [y]
