"""Integer convolution and matmul in the int16-pair and int8-quad layouts, and their CPU schedule.

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

On ARM cores with the dot-product extension (Neoverse N1, Cortex-A55/A76…) the same kernels
take the int8-quad layout for `sdot` (four int8 products summed into each of four int32 lanes):
weights int8 [N/8, …reduction/4, 8, 4], activations kept in int8 — an int8 input as is, a uint8
input minus 128 — and the constant Σ_k w[n, k] · (offset − zero point) added per output, which
makes Σ (a − zp) · w exact in int32 (padding takes the value zp − offset, so it adds nothing). The
8 × 4 update is tensorized with `llvm.aarch64.neon.sdot` (two instructions); without it LLVM
vectorizes the loops.

On AVX2 the same quad shape serves `vpmaddubsw` when the weights are small: uint8 activations
(an int8 input plus 128, a uint8 input as is) times int8 weights, adjacent products summed into
int16 — exact only while |a·w + a'·w'| ≤ 32767, i.e. |w| ≤ 64 (weights of 7 bits or fewer, all
of mlpc's 2–4-bit weights) — then `vpmaddwd` with ones sums the int16 pairs into the eight int32
lanes: 32 products per instruction pair instead of vpmaddwd's 16, and activations half as wide.
The offset correction is the same as for sdot.

A convolution with fewer input channels than the layout's group (a first layer on one-channel
images or signals) would pad every kernel tap's channels to a whole group — 2 or 4 times the
work. Its kernel columns are folded into the channel axis instead when that takes fewer groups
(`folds_columns`): the widened input holds, for each output column, the KW input columns it reads
(channel kx·C + c), the weight is re-laid out to match (`fold_columns`), and the convolution runs
with a one-column kernel.

The result equals the plain int32 reduction bit for bit.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from tvm import s_tir, te, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

from mlpc.backends.tvm.packing import slot_bits

logger = logging.getLogger(__name__)

LANES = 8  # int32 lanes of one AVX2 accumulator (two NEON registers)
PAIR_INTRINSIC = "mlpc_avx2_pmaddwd_8x2"
QUAD_INTRINSIC = "mlpc_neon_sdot_8x4"
UQUAD_INTRINSIC = "mlpc_avx2_pmaddubsw_8x4"
# |w| bound that keeps vpmaddubsw's int16 pair sums exact: 2 · 255 · 64 = 32640 ≤ 32767.
UQUAD_WEIGHT_LIMIT = 64


@dataclass(frozen=True)
class Layout:
    """An integer kernel layout: `group` reduction steps per output lane in one load, the
    activation operand's `dtype` and the weight's `weight_dtype`, the block-name `prefix` the
    scheduler recognizes, the TensorIntrin and the CPU feature it `needs` ("avx2", "dotprod")."""

    name: str
    group: int
    dtype: str
    weight_dtype: str
    prefix: str
    intrinsic: str
    needs: str


PAIRS = Layout("pairs", 2, "int16", "int16", "mlpc_pair_", PAIR_INTRINSIC, "avx2")
QUADS = Layout("quads", 4, "int8", "int8", "mlpc_quad_", QUAD_INTRINSIC, "dotprod")
UQUADS = Layout("uquads", 4, "uint8", "int8", "mlpc_uquad_", UQUAD_INTRINSIC, "avx2")
LAYOUTS = {layout.name: layout for layout in (PAIRS, QUADS, UQUADS)}
BLOCK_PREFIX = PAIRS.prefix


# -- the AVX2 intrinsic ------------------------------------------------------------------------


def _update_desc(a_dtype: str, b_dtype: str, group: int) -> tirx.PrimFunc:
    """What every intrinsic here computes: eight int32 lanes each accumulating `group` products
    of a broadcast activation group (`a_dtype`) and that lane's weights (`b_dtype`)."""

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((group,), a_dtype, offset_factor=1),
        B: T.Buffer((8, group), b_dtype, offset_factor=1),
        C: T.Buffer((8,), "int32", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:8], A[0:group], B[0:8, 0:group])
            T.writes(C[0:8])
            for i in T.serial(0, 8):
                for k in T.serial(0, group):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return desc


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


TensorIntrin.register(PAIR_INTRINSIC, _update_desc("int16", "int16", 2), _pair_avx2, override=True)


# -- the NEON dot-product intrinsic ------------------------------------------------------------


@T.prim_func(s_tir=True)
def _quad_sdot(
    A: T.Buffer((4,), "int8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        # The broadcast quad is written out twice rather than named: see _pair_avx2.
        C[T.ramp(T.int32(0), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            C.vload([0], dtype="int32x4"), B.vload([0, 0], dtype="int8x16"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16"),
            dtype="int32x4",
        )
        C[T.ramp(T.int32(4), 1, 4)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
            C.vload([4], dtype="int32x4"), B.vload([4, 0], dtype="int8x16"),
            T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4), dtype="int8x16"),
            dtype="int32x4",
        )


TensorIntrin.register(QUAD_INTRINSIC, _update_desc("int8", "int8", 4), _quad_sdot, override=True)


# -- the AVX2 byte intrinsic -------------------------------------------------------------------


@T.prim_func(s_tir=True)
def _uquad_avx2(
    A: T.Buffer((4,), "uint8", offset_factor=1),
    B: T.Buffer((8, 4), "int8", offset_factor=1),
    C: T.Buffer((8,), "int32", offset_factor=1),
) -> None:
    with T.sblock("root"):
        T.reads(C[0:8], A[0:4], B[0:8, 0:4])
        T.writes(C[0:8])
        # One expression, no named temporaries: see _pair_avx2.
        C[T.ramp(T.int32(0), 1, 8)] += T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
            T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                T.reinterpret(T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8), dtype="uint8x32"),
                B.vload([0, 0], dtype="int8x32"),
                dtype="int16x16",
            ),
            T.broadcast(T.int16(1), 16),
            dtype="int32x8",
        )


TensorIntrin.register(UQUAD_INTRINSIC, _update_desc("uint8", "int8", 4), _uquad_avx2, override=True)


# -- weights -----------------------------------------------------------------------------------


def fits(out_channels: int) -> bool:
    """Whether a layer with this many outputs takes the pair layout (whole 8-lane groups)."""
    return out_channels % LANES == 0


def pair_weight(w: np.ndarray, layout: Layout = PAIRS) -> np.ndarray:
    """An integer weight [N, R...] (conv OIHW-style, or matmul [N, K]) in the `layout`
    [N/8, R[1:]..., ceil(R[0]/g), 8, g] (g = 2 int16 for pairs, 4 int8 for quads), the first
    reduction axis (input channels / K) innermost, zero-padded to a multiple of g."""
    g = layout.group
    n, c = w.shape[0], w.shape[1]
    rest = w.shape[2:]
    cp = -(-c // g) * g
    padded = np.zeros((n, cp, *rest), layout.weight_dtype)
    padded[:, :c] = w
    # [N, Cp, *K] -> [N/8, 8, *K, Cp/g, g] -> [N/8, *K, Cp/g, 8, g]
    moved = np.moveaxis(padded, 1, -1).reshape(n // LANES, LANES, *rest, cp // g, g)
    order = (0, *range(2, 2 + len(rest) + 1), 1, 2 + len(rest) + 1)
    return np.ascontiguousarray(moved.transpose(order))


def folds_columns(channels: int, kernel: list[int], layout: Layout) -> bool:
    """Whether a convolution over `channels` input channels folds its kernel columns into the
    reduction group in `layout`: when that takes fewer reduction groups per kernel row (1 channel
    × 3 columns: one quad instead of three; 3 channels × 3 columns: three quads either way, and
    the folded input would only be wider)."""
    if channels >= layout.group or not kernel or kernel[-1] < 2:
        return False
    g = layout.group
    return -(-kernel[-1] * channels // g) < kernel[-1] * -(-channels // g)


def fold_columns(w: np.ndarray) -> np.ndarray:
    """A conv weight [OC, C, *K] with its last kernel axis moved into the channels: [OC, KW·C,
    *K[:-1], 1], channel kx·C + c holding w[:, c, ..., kx] (the layout `pair_conv(fold=True)` reads)."""
    oc, c, *kernel = w.shape
    return np.moveaxis(w, -1, 1).reshape(oc, kernel[-1] * c, *kernel[:-1], 1)


def pack_pairs(w: np.ndarray, bits: int, layout: Layout = PAIRS) -> np.ndarray:
    """A 2–4-bit integer weight [N, R...] (as for `pair_weight`) packed for in-kernel unpacking:
    uint8 [N/8, R[1:]..., Cp/g, 8·g/per], per = values per byte (2 for 3/4-bit, 4 for 2-bit).
    The 8·g values of one reduction group (output lane l, step j at e = l·g + j: one vector of
    the layout) are split into `per` runs of 8·g/per; byte i holds, low bits first, value i of
    every run — so unpacking a run is one contiguous load, a shift and a mask."""
    slot = slot_bits(bits)
    per = 8 // slot
    grouped = pair_weight(w, layout).astype(np.int64)  # [G, *K, Cg, 8, g]
    *lead, cg, lanes, g = grouped.shape
    width = lanes * g // per
    values = grouped.reshape(*lead, cg, per, width) & ((1 << slot) - 1)
    shifts = (np.arange(per) * slot).reshape(per, 1)
    return (values << shifts).sum(axis=-2).astype(np.uint8)


def weight_sums(w: np.ndarray) -> np.ndarray:
    """Σ over the reduction axes of an integer weight [N, R...], per output (int64)."""
    return w.astype(np.int64).reshape(w.shape[0], -1).sum(axis=1)


# -- computes ----------------------------------------------------------------------------------


def activation_offset(dtype: str, zero_point: int, layout: Layout) -> int:
    """What is subtracted from an activation before the products: its zero point in the pair
    layout (exact centering in int16); in the quad layouts whatever maps the input type onto the
    operand type — 128 for uint8 and 0 for int8 (int8 operands, sdot), 0 for uint8 and −128 for
    int8 (uint8 operands, vpmaddubsw) — with `offset_correction` adding the difference back."""
    if layout is PAIRS:
        return zero_point
    if layout is UQUADS:
        return -128 if dtype == "int8" else 0
    return 128 if dtype == "uint8" else 0


def quads_fit(dtype: str, weight: np.ndarray | None = None, layout: Layout = QUADS) -> bool:
    """Whether a quad layout holds these operands exactly: int8/uint8 activations and weights
    (zero point subtracted) in [-128, 127] for sdot, within ±UQUAD_WEIGHT_LIMIT for vpmaddubsw."""
    if dtype not in ("int8", "uint8"):
        return False
    if weight is None:
        return True
    lo, hi = (-UQUAD_WEIGHT_LIMIT, UQUAD_WEIGHT_LIMIT) if layout is UQUADS else (-128, 127)
    return weight.size > 0 and weight.min() >= lo and weight.max() <= hi


def offset_correction(w: np.ndarray, dtype: str, zero_point: int, layout: Layout) -> np.ndarray | None:
    """The int32 constant per output that turns Σ (a − offset)·w into Σ (a − zp)·w, for an integer
    weight [N, R...] with its zero point subtracted; None when it is zero."""
    delta = activation_offset(dtype, zero_point, layout) - zero_point
    if delta == 0:
        return None
    corr = weight_sums(w) * delta
    if np.abs(corr).max() >= 2**31:
        raise ValueError("the activation offset correction overflows int32")
    return corr.astype(np.int32)


def unpack_pairs(packed: te.Tensor, *zero_point: te.Tensor, shape: tuple[int, ...], channels: int, bits: int,
                 signed: bool, layout: Layout = PAIRS) -> te.Tensor:
    """The `layout` weight of `shape` [N/8, *kernel, Cp/g, 8, g] unpacked inside the kernel from
    `pack_pairs` bytes, minus the per-output `zero_point` when given; reduction steps past
    `channels` are 0."""
    slot = slot_bits(bits)
    per = 8 // slot
    g = layout.group
    width = LANES * g // per

    def body(grp, *idx):
        *k, cg, lane, j = idx
        e = lane * g + j
        byte = packed[(grp, *k, cg, tirx.indexmod(e, width))].astype("int32")
        v = tirx.bitwise_and(tirx.shift_right(byte, (tirx.indexdiv(e, width) * slot).astype("int32")),
                             (1 << slot) - 1)
        if signed:
            half = 1 << (slot - 1)
            v = tirx.bitwise_xor(v, half) - half
        if zero_point:
            zp = zero_point[0]
            v = v - (zp[grp * LANES + lane] if len(zp.shape) == 1 else zp()).astype("int32")
        return tirx.if_then_else(cg * g + j < channels, v.astype(layout.weight_dtype),
                                 tirx.const(0, layout.weight_dtype))

    return te.compute(shape, body, name=f"{layout.prefix}input_weight")


def _operand(value, offset: int, layout: Layout):
    """An activation minus `offset` in the layout's operand dtype (byte operands are computed in
    int32 first: uint8 − 128 and int8 + 128 do not fit the input type)."""
    if layout is PAIRS:
        return value.astype("int16") - tirx.const(offset, "int16")
    return (value.astype("int32") - offset).astype(layout.dtype)


def _with_correction(acc: te.Tensor, correction: te.Tensor | None, axis: int, layout: Layout) -> te.Tensor:
    if correction is None:
        return acc
    return te.compute(acc.shape, lambda *i: acc[i] + correction[i[axis]], name=f"{layout.prefix}offset")


def pair_conv(x: te.Tensor, wp: te.Tensor, *rest: te.Tensor, kernel: list[int], strides: list[int],
              dilations: list[int], pads: list[int], channels: int, x_zero_point: int, packed_bits: int | None = None,
              signed: bool = True, layout_name: str = "pairs", fold: bool = False) -> te.Tensor:
    """N-D convolution (group 1) of x [N, C, *S] (int8/uint8/int16) with a weight `wp` in the
    layout [OC/8, *kernel, Cp/g, 8, g], or — with `packed_bits` — `pack_pairs` bytes unpacked
    into that layout in the kernel (`rest`: their zero point); for the quad layout the last of
    `rest` is the `offset_correction` (when not None); int32 output [N, OC, *O]. With `fold`, the
    weight is `fold_columns` of the [OC, C, *kernel] one (kernel columns folded into the channels;
    see the module doc)."""
    layout = LAYOUTS[layout_name]
    g = layout.group
    nsp = len(kernel)
    offset = activation_offset(str(x.dtype), x_zero_point, layout)
    rest, correction = _split_correction(rest, x.dtype, x_zero_point, layout)
    spatial = [int(s) for s in x.shape[2:]]
    padded = [spatial[i] + pads[i] + pads[i + nsp] for i in range(nsp)]
    columns, folded = 1, channels
    if fold:  # the widened input's last spatial axis runs over output columns, each with its KW inputs
        columns, folded = kernel[-1], kernel[-1] * channels
        width = (padded[-1] - (kernel[-1] - 1) * dilations[-1] - 1) // strides[-1] + 1
        column_stride, column_step = strides[-1], dilations[-1]
        padded = [*padded[:-1], width]
        kernel, strides, dilations = [*kernel[:-1], 1], [*strides[:-1], 1], [*dilations[:-1], 1]
    cp = -(-folded // g) * g
    if packed_bits is not None:
        wp = unpack_pairs(wp, *rest, shape=(wp.shape[0], *kernel, cp // g, LANES, g), channels=folded,
                          bits=packed_bits, signed=signed, layout=layout)
    pad_value = tirx.const(x_zero_point - offset, layout.dtype)

    def widen(n, *idx):
        *pos, c = idx
        source = c
        if columns > 1:
            source = tirx.indexmod(c, channels)
            pos = [*pos[:-1], pos[-1] * column_stride + tirx.indexdiv(c, channels) * column_step]
        inside = [tirx.all(pos[i] >= pads[i], pos[i] < spatial[i] + pads[i]) for i in range(nsp)]
        value = _operand(x[(n, source, *[pos[i] - pads[i] for i in range(nsp)])], offset, layout)
        return tirx.if_then_else(c < folded, tirx.if_then_else(tirx.all(*inside), value, pad_value),
                                 tirx.const(0, layout.dtype))

    xq = te.compute((x.shape[0], *padded, cp), widen, name=f"{layout.prefix}input")
    out_sp = [(padded[i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nsp)]
    rk = [te.reduce_axis((0, k), name=f"rk{i}") for i, k in enumerate(kernel)]
    rco = te.reduce_axis((0, cp // g), name="rco")
    rci = te.reduce_axis((0, g), name="rci")

    def body(n, oc, *o):
        pos = [o[i] * strides[i] + rk[i] * dilations[i] for i in range(nsp)]
        a = xq[(n, *pos, rco * g + rci)].astype("int32")
        w = wp[(tirx.indexdiv(oc, LANES), *rk, rco, tirx.indexmod(oc, LANES), rci)].astype("int32")
        return te.sum(a * w, axis=[*rk, rco, rci])

    oc = wp.shape[0] * LANES
    acc = te.compute((x.shape[0], oc, *out_sp), body, name=f"{layout.prefix}conv")
    return _with_correction(acc, correction, 1, layout)


def _split_correction(rest: tuple, dtype, zero_point: int, layout: Layout) -> tuple[tuple, te.Tensor | None]:
    """Split the trailing offset-correction tensor off `rest` when the layout needs one."""
    if activation_offset(str(dtype), zero_point, layout) == zero_point:
        return rest, None
    return rest[:-1], rest[-1]


def pair_matmul(a: te.Tensor, wp: te.Tensor, *rest: te.Tensor, depth: int, a_zero_point: int,
                packed_bits: int | None = None, signed: bool = True, layout_name: str = "pairs") -> te.Tensor:
    """a [..., M, K] (int8/uint8/int16) times a weight `wp` in the layout [N/8, Kp/g, 8, g] (the
    weight's K axis first, i.e. a [K, N] weight transposed), or — with `packed_bits` — `pack_pairs`
    bytes unpacked in the kernel (`rest`: their zero point, then the quad layout's
    `offset_correction` when not None); int32 output [..., M, N]."""
    layout = LAYOUTS[layout_name]
    g = layout.group
    offset = activation_offset(str(a.dtype), a_zero_point, layout)
    rest, correction = _split_correction(rest, a.dtype, a_zero_point, layout)
    kp = -(-depth // g) * g
    if packed_bits is not None:
        wp = unpack_pairs(wp, *rest, shape=(wp.shape[0], kp // g, LANES, g), channels=depth,
                          bits=packed_bits, signed=signed, layout=layout)

    def widen(*idx):
        *lead, k = idx
        return tirx.if_then_else(k < depth, _operand(a[(*lead, k)], offset, layout), tirx.const(0, layout.dtype))

    aq = te.compute((*a.shape[:-1], kp), widen, name=f"{layout.prefix}input")
    rko = te.reduce_axis((0, kp // g), name="rko")
    rki = te.reduce_axis((0, g), name="rki")

    def body(*idx):
        *lead, n = idx
        v = aq[(*lead, rko * g + rki)].astype("int32")
        w = wp[tirx.indexdiv(n, LANES), rko, tirx.indexmod(n, LANES), rki].astype("int32")
        return te.sum(v * w, axis=[rko, rki])

    acc = te.compute((*a.shape[:-1], wp.shape[0] * LANES), body, name=f"{layout.prefix}matmul")
    return _with_correction(acc, correction, len(acc.shape) - 1, layout)


# -- schedule ----------------------------------------------------------------------------------


def block_layout(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> Layout | None:
    """The Layout of `block` when it is the reduction of `pair_conv` / `pair_matmul`, else None."""
    name = sch.get(block).name_hint
    for layout in LAYOUTS.values():
        if name in (f"{layout.prefix}conv", f"{layout.prefix}matmul"):
            return layout
    return None


def is_pair_block(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    """Whether `block` is the reduction of `pair_conv` / `pair_matmul` (either layout)."""
    return block_layout(sch, block) is not None


def _schedule_unpack(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, tile_loop, parallel_min_work: int) -> None:
    """Unpack weights one `pack_pairs` run per vector (a contiguous load, shift and mask): inside
    each parallel tile when `tile_loop` is given (matmul: a tile's weight slice is used by that
    tile only), else once per call over all cores."""
    if tile_loop is not None:
        sch.compute_at(block, tile_loop)
    loops = sch.get_loops(block)
    first = len(loops) - (len(sch.get(block).iter_vars))
    *outer, lane, step = loops[first:]
    vector = sch.fuse(lane, step)
    packed = next(r.source for r in sch.get(block).reads if r.source.dtype == "uint8")
    run, offset = sch.split(vector, [None, int(packed.shape[-1])])
    sch.vectorize(offset)
    sch.unroll(run)
    if tile_loop is None and outer:
        work = math.prod(int(sch.get(loop).extent) for loop in (*outer, run, offset))
        fused = sch.fuse(*outer)
        if work >= parallel_min_work:
            sch.parallel(fused)


def schedule_pair(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, producers: list, *, avx2: bool,
                  parallel_min_work: int, schedule_injective, dotprod: bool = False) -> None:
    """Register-tile a pair or quad reduction block (see the module doc) whose fused epilogue is
    already one block, compute that epilogue at the tile's write-back, run the tiles in parallel
    when the kernel is big enough, and tensorize the 8 × g update: pairs with vpmaddwd and uint8
    quads with vpmaddubsw when `avx2`, int8 quads with sdot when `dotprod`. `producers`: the block's producers (activation
    widening, weight unpacking)."""
    layout = block_layout(sch, block)
    intrinsic = layout.intrinsic if {"avx2": avx2, "dotprod": dotprod}[layout.needs] else None
    from mlpc.backends.tvm.cpu_schedule import ACCUMULATOR_SCOPE, divisor, fold_write_back  # (it imports this module)

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
        row_loop = sp[-1] if sp else None
        rows = (divisor(extents[-1], (8, 4, 2)) or 1) if sp else 1
        # Rows of at most 4 outputs: two output-channel groups per tile, so each activation
        # broadcast feeds two multiply-adds and the tile keeps twice the accumulators in flight.
        tile_groups = (divisor(extents[1] // LANES, (2,)) or 1) if rows <= 4 else 1
        groups, group_tile, lanes = sch.split(oc, [None, tile_groups, LANES])
    else:
        *lead, m, col = spatial
        columns = extents[-1]
        rows = divisor(extents[-2], (4, 2)) or 1
        tile_groups = (divisor(columns // LANES, (4, 2)) or 1) if rows == 1 else 1
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
    inner = [lanes, pair_axis] if intrinsic else [pair_axis, lanes]
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
            # A matmul of one row tile unpacks each tile's weight slice in that tile; more rows
            # would unpack it once per row tile, so they share one unpacking per call, as convs do.
            one_row_tile = not is_conv and math.prod(extents[:-1]) <= rows
            _schedule_unpack(sch, producer, parallel if one_row_tile else None, parallel_min_work)
        else:
            schedule_injective(sch, producer)
    if not intrinsic:  # while the block is still a whole reduction (vectorize refuses the bare update)
        sch.unroll(pair_axis)
        sch.vectorize(lanes)
    sch.decompose_reduction(block, outer_reduce[0] if outer_reduce else pair_axis)
    for t in tile:
        sch.unroll(t)
    if intrinsic:
        sch.tensorize(lanes, intrinsic)
    for stage in (write_back, *sch.get_consumers(write_back)):
        try:
            sch.vectorize(sch.get_loops(stage)[-1])
        except s_tir.ScheduleError:
            pass


__all__ = ["LAYOUTS", "PAIRS", "QUADS", "UQUADS", "Layout", "block_layout", "fits", "fold_columns", "folds_columns",
           "is_pair_block", "offset_correction", "pack_pairs", "pair_conv", "pair_matmul", "pair_weight", "quads_fit", "schedule_pair"]
