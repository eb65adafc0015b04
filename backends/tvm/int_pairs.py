"""Integer convolution and matmul in the int16-pair layout, and their CPU schedule.

On AVX2 without VNNI the fastest exact int8 dot product is `vpmaddwd`: sixteen int16 products
summed in adjacent pairs into eight int32 lanes — exact for mlpc's operands (|a| ≤ 255 after the
zero point is subtracted, |w| ≤ 128), unlike the saturating `vpmaddubsw`. The kernels here are
laid out for it:

- activations are widened to int16 with their zero point subtracted, the reduction axis
  innermost (NHWC for convolutions), padded with zeros to an even length;
- weights are int16 constants shaped [N/8, …reduction/2, 8, 2]: one 32-byte load holds two
  reduction steps of eight outputs;
- the schedule keeps an [rows × 8] int32 accumulator tile in registers, and on x86 with AVX2
  tensorizes its inner (8 outputs × 2 steps) update with `llvm.x86.avx2.pmadd.wd`; elsewhere
  LLVM vectorizes the same loops.

The result equals the plain int32 reduction bit for bit.
"""
from __future__ import annotations

import logging
import math

import numpy as np
from tvm import s_tir, te, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from mlpc.backends.tvm.packing import slot_bits

logger = logging.getLogger(__name__)

LANES = 8  # int32 lanes of one AVX2 accumulator
PAIR_INTRINSIC = "mlpc_avx2_pmaddwd_8x2"
BLOCK_PREFIX = "mlpc_pair_"


# -- the AVX2 intrinsic ------------------------------------------------------------------------


@T.prim_func(s_tir=True)
def _pair_desc(
    A: T.Buffer((2,), "int16", offset_factor=1),
    B: T.Buffer((8, 2), "int16", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        for i in T.serial(0, 8):
            for k in T.serial(0, 2):
                with T.sblock("update"):
                    vi, vk = T.axis.remap("SR", [i, k])
                    C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")


@T.prim_func(s_tir=True)
def _pair_avx2(
    A: T.Buffer((2,), "int16", offset_factor=1),
    B: T.Buffer((8, 2), "int16", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:2], B[0:8, 0:2])
        T.writes(C[0:8])
        # One expression: a named temporary would become a TIR allocation, which TVM lowers to a
        # heap workspace call inside the parallel loop.
        C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int16x2"), dtype="int32"), 8), dtype="int16x16"),
            B.vload([0, 0], dtype="int16x16"),
            dtype="int32x8",
        )


TensorIntrin.register(PAIR_INTRINSIC, _pair_desc, _pair_avx2, override=True)


# -- weights -----------------------------------------------------------------------------------


def fits(out_channels: int) -> bool:
    """Whether a layer with this many outputs takes the pair layout (whole 8-lane groups)."""
    return out_channels % LANES == 0


def pair_weight(w: np.ndarray) -> np.ndarray:
    """An integer weight [N, R...] (conv OIHW-style, or matmul [N, K]) in the pair layout
    [N/8, R[1:]..., ceil(R[0]/2), 8, 2] int16, the first reduction axis (input channels / K)
    innermost, zero-padded to even length."""
    n, c = w.shape[0], w.shape[1]
    rest = w.shape[2:]
    cp = c + c % 2
    padded = np.zeros((n, cp, *rest), np.int16)
    padded[:, :c] = w
    # [N, Cp, *K] -> [N/8, 8, *K, Cp/2, 2] -> [N/8, *K, Cp/2, 8, 2]
    moved = np.moveaxis(padded, 1, -1).reshape(n // LANES, LANES, *rest, cp // 2, 2)
    order = (0, *range(2, 2 + len(rest) + 1), 1, 2 + len(rest) + 1)
    return np.ascontiguousarray(moved.transpose(order))


# -- computes ----------------------------------------------------------------------------------


def pack_pairs(w: np.ndarray, bits: int) -> np.ndarray:
    """A 2–4-bit integer weight [N, R...] (as for `pair_weight`) packed for in-kernel unpacking:
    uint8 [N/8, R[1:]..., ceil(Cp/2 / q), 8], q = pairs per byte (1 for 3/4-bit, 2 for 2-bit);
    byte (…, b, lane) holds, low bits first, the `per` values of output lane `lane` at reduction
    steps 2·(b·q + i) + j, i < q, j < 2, so that unpacking reads eight consecutive bytes."""
    slot = slot_bits(bits)
    per = 8 // slot
    q = per // 2
    pairs = pair_weight(w).astype(np.int64)  # [G, *K, Cp2, 8, 2]
    cp2 = pairs.shape[-3]
    blocks = -(-cp2 // q)
    padded = np.zeros((*pairs.shape[:-3], blocks * q, LANES, 2), np.int64)
    padded[..., :cp2, :, :] = pairs
    grouped = padded.reshape(*pairs.shape[:-3], blocks, q, LANES, 2)
    grouped = np.moveaxis(grouped, -3, -2).reshape(*pairs.shape[:-3], blocks, LANES, per)  # t = i·2 + j
    lanes = (grouped & ((1 << slot) - 1)) << (np.arange(per) * slot)
    return lanes.sum(axis=-1).astype(np.uint8)


def unpack_pairs(packed: te.Tensor, *zero_point: te.Tensor, shape: tuple[int, ...], channels: int, bits: int,
                 signed: bool) -> te.Tensor:
    """The pair-layout int16 weight of `shape` [N/8, *kernel, Cp/2, 8, 2] unpacked inside the
    kernel from `pack_pairs` bytes, minus the per-output `zero_point` when given; reduction
    steps past `channels` are 0."""
    slot = slot_bits(bits)
    q = 8 // slot // 2

    def body(g, *idx):
        *k, cp2, lane, j = idx
        byte = packed[(g, *k, tirx.indexdiv(cp2, q), lane)].astype("int32")
        shift = (tirx.indexmod(cp2, q) * 2 + j) * slot if q > 1 else j * slot
        v = tirx.bitwise_and(tirx.shift_right(byte, shift.astype("int32")), (1 << slot) - 1)
        if signed:
            half = 1 << (slot - 1)
            v = tirx.bitwise_xor(v, half) - half
        if zero_point:
            zp = zero_point[0]
            v = v - (zp[g * LANES + lane] if len(zp.shape) == 1 else zp()).astype("int32")
        return tirx.if_then_else(cp2 * 2 + j < channels, v.astype("int16"), tirx.const(0, "int16"))

    return te.compute(shape, body, name=f"{BLOCK_PREFIX}input_weight")


def pair_conv(x: te.Tensor, wp: te.Tensor, *rest: te.Tensor, kernel: list[int], strides: list[int],
              dilations: list[int], pads: list[int], channels: int, x_zero_point: int, packed_bits: int | None = None,
              signed: bool = True) -> te.Tensor:
    """N-D convolution (group 1) of x [N, C, *S] (int8/uint8/int16) with a pair-layout weight
    `wp` [OC/8, *kernel, Cp/2, 8, 2], or — with `packed_bits` — `pack_pairs` bytes unpacked
    into that layout in the kernel (`rest`: their zero point); int32 output [N, OC, *O]."""
    nsp = len(kernel)
    cp = channels + channels % 2
    if packed_bits is not None:
        wp = unpack_pairs(wp, *rest, shape=(wp.shape[0], *kernel, cp // 2, LANES, 2), channels=channels,
                          bits=packed_bits, signed=signed)
    spatial = [int(s) for s in x.shape[2:]]
    padded = [spatial[i] + pads[i] + pads[i + nsp] for i in range(nsp)]

    def widen(n, *idx):
        *pos, c = idx
        inside = [tirx.all(pos[i] >= pads[i], pos[i] < spatial[i] + pads[i]) for i in range(nsp)]
        value = x[(n, c, *[pos[i] - pads[i] for i in range(nsp)])].astype("int16") - tirx.const(x_zero_point, "int16")
        return tirx.if_then_else(tirx.all(c < channels, *inside), value, tirx.const(0, "int16"))

    xq = te.compute((x.shape[0], *padded, cp), widen, name=f"{BLOCK_PREFIX}input")
    out_sp = [(padded[i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nsp)]
    rk = [te.reduce_axis((0, k), name=f"rk{i}") for i, k in enumerate(kernel)]
    rco = te.reduce_axis((0, cp // 2), name="rco")
    rci = te.reduce_axis((0, 2), name="rci")

    def body(n, oc, *o):
        pos = [o[i] * strides[i] + rk[i] * dilations[i] for i in range(nsp)]
        a = xq[(n, *pos, rco * 2 + rci)].astype("int32")
        w = wp[(tirx.indexdiv(oc, LANES), *rk, rco, tirx.indexmod(oc, LANES), rci)].astype("int32")
        return te.sum(a * w, axis=[*rk, rco, rci])

    oc = wp.shape[0] * LANES
    return te.compute((x.shape[0], oc, *out_sp), body, name=f"{BLOCK_PREFIX}conv")


def pair_matmul(a: te.Tensor, wp: te.Tensor, *rest: te.Tensor, depth: int, a_zero_point: int,
                packed_bits: int | None = None, signed: bool = True) -> te.Tensor:
    """a [..., M, K] (int8/uint8/int16) times a pair-layout weight `wp` [N/8, Kp/2, 8, 2] (the
    weight's K axis first, i.e. a [K, N] weight transposed), or — with `packed_bits` — `pack_pairs`
    bytes unpacked in the kernel (`rest`: their zero point); int32 output [..., M, N]."""
    kp = depth + depth % 2
    if packed_bits is not None:
        wp = unpack_pairs(wp, *rest, shape=(wp.shape[0], kp // 2, LANES, 2), channels=depth,
                          bits=packed_bits, signed=signed)

    def widen(*idx):
        *lead, k = idx
        value = a[(*lead, k)].astype("int16") - tirx.const(a_zero_point, "int16")
        return tirx.if_then_else(k < depth, value, tirx.const(0, "int16"))

    aq = te.compute((*a.shape[:-1], kp), widen, name=f"{BLOCK_PREFIX}input")
    rko = te.reduce_axis((0, kp // 2), name="rko")
    rki = te.reduce_axis((0, 2), name="rki")

    def body(*idx):
        *lead, n = idx
        v = aq[(*lead, rko * 2 + rki)].astype("int32")
        w = wp[tirx.indexdiv(n, LANES), rko, tirx.indexmod(n, LANES), rki].astype("int32")
        return te.sum(v * w, axis=[rko, rki])

    return te.compute((*a.shape[:-1], wp.shape[0] * LANES), body, name=f"{BLOCK_PREFIX}matmul")


# -- schedule ----------------------------------------------------------------------------------


def is_pair_block(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether `block` is the reduction of `pair_conv` / `pair_matmul`."""
    name = sch.get(block).name_hint
    return name.startswith(BLOCK_PREFIX) and not name.startswith(f"{BLOCK_PREFIX}input")


def _divisor(extent: int, candidates: tuple[int, ...]) -> int:
    return next((c for c in candidates if extent % c == 0), 1)


def _schedule_unpack(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, tile_loop, parallel_min_work: int) -> None:
    """Unpack weights eight lanes per vector: inside each parallel tile when
    `tile_loop` is given (matmul: a tile's weight slice is used by that tile only), else once
    per call over all cores."""
    if tile_loop is not None:
        sch.compute_at(block, tile_loop)
    loops = sch.get_loops(block)
    first = len(loops) - (len(sch.get(block).iter_vars))
    own = loops[first:]
    sch.reorder(own[-1], own[-2])  # eight consecutive bytes per vector, one slot at a time
    sch.vectorize(own[-2])
    sch.unroll(own[-1])
    if tile_loop is None and len(own) > 2:
        work = math.prod(int(sch.get(loop).extent) for loop in own[:-2]) * 2 * LANES
        outer = sch.fuse(*own[:-2])
        if work >= parallel_min_work:
            sch.parallel(outer)


def schedule_pair(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, producers: list, *, avx2: bool,
                  parallel_min_work: int, schedule_injective) -> None:
    """Register-tile a pair reduction block (see the module doc) whose fused epilogue is already
    one block, compute that epilogue at the tile's write-back, run the tiles in parallel when the
    kernel is big enough, and tensorize the 8 × 2 update with vpmaddwd when `avx2`. `producers`:
    the block's producers (activation widening, weight unpacking)."""
    from mlpc.backends.tvm.cpu_schedule import ACCUMULATOR_SCOPE, fold_write_back  # (it imports this module)

    is_conv = sch.get(block).name_hint.endswith("conv")
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
    spatial = [loop for loop, kind in zip(loops, kinds) if kind == 0]
    reduce = [loop for loop, kind in zip(loops, kinds) if kind != 0]
    extents = [int(sch.get(loop).extent) for loop in spatial]
    work = math.prod(extents) * math.prod(int(sch.get(loop).extent) for loop in reduce)
    *outer_reduce, pair_axis = reduce
    if is_conv:
        n, oc, *sp = spatial
        groups, lanes = sch.split(oc, [None, LANES])
        group_tile = None
        row_loop = sp[-1] if sp else None
        rows = _divisor(extents[-1], (8, 4, 2)) if sp else 1
    else:
        *lead, m, col = spatial
        columns = extents[-1]
        rows = _divisor(extents[-2], (4, 2))
        tile_groups = _divisor(columns // LANES, (4, 2)) if rows == 1 else 1
        groups, group_tile, lanes = sch.split(col, [None, tile_groups, LANES])
        row_loop = m
    row_tile = None
    if row_loop is not None and rows > 1:
        row_loop, row_tile = sch.split(row_loop, [None, rows])
    tile = [t for t in (group_tile, row_tile) if t is not None]
    if is_conv:
        outer = [n, groups, *sp[:-1], *([row_loop] if row_loop is not None else [])]
    else:
        outer = [*lead, row_loop, groups]
    inner = [lanes, pair_axis] if avx2 else [pair_axis, lanes]
    sch.reorder(*outer, *outer_reduce, *tile, *inner)
    if is_conv and len(outer_reduce) >= 2:
        # One loop over (kernel column, channel pair): LLVM would otherwise fully unroll both
        # and keep the shared row broadcasts alive across them — spilling half the tile.
        outer_reduce = [*outer_reduce[:-2], sch.fuse(*outer_reduce[-2:])]
    write_back = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
    if is_conv:  # the accumulator tile with the output channels innermost
        sch.transform_layout(block, ("write", 0), lambda n_, c_, *s_: (n_, *s_, c_))
    parallel = sch.fuse(*outer)
    if work >= parallel_min_work:
        sch.parallel(parallel)
    sch.reverse_compute_at(write_back, parallel)
    fold_write_back(sch, write_back, parallel)
    for producer in producers:
        if sch.get(producer).name_hint.endswith("input_weight"):
            _schedule_unpack(sch, producer, parallel if not is_conv else None, parallel_min_work)
        else:
            schedule_injective(sch, producer)
    if not avx2:  # before the reduction is decomposed: vectorize needs the block's init
        sch.unroll(pair_axis)
        sch.vectorize(lanes)
    sch.decompose_reduction(block, outer_reduce[0] if outer_reduce else pair_axis)
    for t in tile:
        sch.unroll(t)
    if avx2:
        sch.tensorize(lanes, PAIR_INTRINSIC)
    for stage in (write_back, *sch.get_consumers(write_back)):
        try:
            sch.vectorize(sch.get_loops(stage)[-1])
        except s_tir.ScheduleError:
            pass


__all__ = ["fits", "is_pair_block", "pack_pairs", "pair_conv", "pair_matmul", "pair_weight", "schedule_pair"]
