"""Depthwise integer convolution on CPUs: its compute and its default schedule.

A depthwise IntegerConv (group = input channels = output channels) has a reduction of only
kernel-size steps per output, so neither the pair/quad kernels of `int_pairs` (which vectorize
over output channels and reduce over input channels) nor TVM's grouped conv2d fit it: the latter
left four separate full passes (widen, pad, a scalar 7-deep loop nest, requantize), none of them
vectorized, and took most of MobileNet's int8 time at batch 8.

Here each channel plane is padded and centered once, in int16 (x − zero point, the padding
0 — the zero point centered), with the innermost spatial axis split by its stride into phases
(`xq[n, c, …, phase, q] = x_padded[n, c, …, q·stride + phase]`): the taps of one output row then
read contiguous elements for any stride, and the row's outputs become one int32 vector per
kernel tap (product of int16 operands widened to int32: exact, no saturation). The schedule runs
(batch, channel) planes in parallel, pads each plane inside its task (it stays in cache), keeps
one output row's accumulator in registers, unrolls the kernel taps over it and requantizes the
row straight from the registers (the fused epilogue). The padded plane is vectorized for
stride 1 and unrolled for strided rows (their strided reads vectorize into slow gathers).

    y[n, c, o…] = Σ_k (x[n, c, o·s + k·d − pad] − x_zp) · w[c, k]   (int32)
"""

from __future__ import annotations

import logging
import math

from tvm import s_tir, te, tirx

logger = logging.getLogger(__name__)

INPUT_BLOCK = "mlpc_dw_input"
CONV_BLOCK = "mlpc_dw_conv"


def fits(x_shape: tuple[int, ...], w_shape: tuple[int, ...], group: int, x_dtype: str) -> bool:
    """Whether an IntegerConv is depthwise with one output per channel and byte activations."""
    return (
        len(x_shape) in (3, 4)
        and x_dtype in ("int8", "uint8")
        and group > 1
        and x_shape[1] == group
        and w_shape[0] == group
        and w_shape[1] == 1
    )


def depthwise_conv(
    x: te.Tensor,
    w: te.Tensor,
    *,
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    pads: list[int],
    x_zero_point: int,
) -> te.Tensor:
    """Depthwise convolution of x [N, C, *S] (int8/uint8, zero point `x_zero_point`) with an
    integer weight w [C, 1, *kernel] (its zero point already subtracted); int32 [N, C, *O]."""
    nsp = len(kernel)
    spatial = [int(s) for s in x.shape[2:]]
    padded = [spatial[i] + pads[i] + pads[i + nsp] for i in range(nsp)]
    out_sp = [(padded[i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nsp)]
    stride = strides[-1]
    per_phase = -(-padded[-1] // stride)

    def widen(n, c, *idx):
        *lead, phase, q = idx
        pos = [*lead, q * stride + phase]
        inside = tirx.all(*[tirx.all(pos[i] >= pads[i], pos[i] < spatial[i] + pads[i]) for i in range(nsp)])
        value = x[(n, c, *[pos[i] - pads[i] for i in range(nsp)])].astype("int16") - tirx.const(
            x_zero_point, "int16"
        )
        return tirx.if_then_else(inside, value, tirx.const(0, "int16"))

    xq = te.compute((x.shape[0], x.shape[1], *padded[:-1], stride, per_phase), widen, name=INPUT_BLOCK)
    rk = [te.reduce_axis((0, k), name=f"rk{i}") for i, k in enumerate(kernel)]

    def body(n, c, *o):
        lead = [o[i] * strides[i] + rk[i] * dilations[i] for i in range(nsp - 1)]
        tap = rk[-1] * dilations[-1]
        a = xq[(n, c, *lead, tirx.indexmod(tap, stride), o[-1] + tirx.indexdiv(tap, stride))]
        return te.sum(a.astype("int32") * w[(c, 0, *rk)].astype("int32"), axis=rk)

    return te.compute((x.shape[0], x.shape[1], *out_sp), body, name=CONV_BLOCK)


def is_depthwise_block(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether `block` is the reduction of `depthwise_conv`."""
    return sch.get(block).name_hint == CONV_BLOCK


def schedule_depthwise(
    sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, producers: list, *, parallel_min_work: int
) -> None:
    """Schedule a `depthwise_conv` reduction whose fused epilogue is already one block (see the
    module doc); `producers`: its input block (and any other producer, computed per plane too)."""
    from mlpc.backends.tvm.cpu_schedule import ACCUMULATOR_SCOPE, fold_write_back  # (it imports this module)

    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
    spatial = [loop for loop, kind in zip(loops, kinds) if kind == 0]
    taps = [loop for loop, kind in zip(loops, kinds) if kind != 0]
    work = math.prod(int(sch.get(loop).extent) for loop in loops)
    n, c, *rows, row = spatial
    plane = sch.fuse(n, c)
    if work >= parallel_min_work and int(sch.get(plane).extent) > 1:
        sch.parallel(plane)
    sch.reorder(plane, *rows, *taps, row)
    write_back = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
    tile_loop = rows[-1] if rows else plane
    sch.reverse_compute_at(write_back, tile_loop)
    fold_write_back(sch, write_back, tile_loop)
    for producer in producers:
        sch.compute_at(producer, plane)
        inner = sch.get_loops(producer)[-1]
        block_ = sch.get(producer)
        if block_.name_hint == INPUT_BLOCK and int(block_.iter_vars[-2].dom.extent) > 1:
            # stride phases: each element gathers from a strided row, which LLVM handles better
            # unrolled than as a vector of gathers (measured: 10.3 → 4.4 µs on MobileNet's 96 × 8 × 8)
            sch.unroll(inner)
            continue
        try:
            sch.vectorize(inner)
        except s_tir.ScheduleError as e:
            logger.debug("depthwise input not vectorized: %s", str(e).splitlines()[-1])
    sch.vectorize(row)  # while the block is still a whole reduction (vectorize refuses the bare update)
    init = sch.decompose_reduction(block, taps[0])
    for tap in taps:
        sch.unroll(tap)
    for stage in (init, write_back, *sch.get_consumers(write_back)):
        try:
            sch.vectorize(sch.get_loops(stage)[-1])
        except s_tir.ScheduleError:
            pass


__all__ = ["CONV_BLOCK", "INPUT_BLOCK", "depthwise_conv", "fits", "is_depthwise_block", "schedule_depthwise"]
