"""Integer convolution and matmul for CUDA in the dp4a layout, and their GPU schedule.

`__dp4a(a, b, c)` (sm_61+) adds the four int8×int8 products of two 32-bit words to an int32:
exact for mlpc's operands. The kernels here are laid out for it:

- activations are staged as int8 with the reduction axis innermost (NHWC for convolutions),
  zero-padded to a multiple of four; uint8 activations are shifted by −128 into int8 (CUDA has
  no mixed u8×s8 dp4a), which only changes their zero point;
- weights are int8 constants shaped [*kernel, ceil(C/4), N, 4]: the four reduction steps of one
  output are one 32-bit word, and consecutive threads (outputs) read consecutive words;
- the activation zero point is not subtracted per product: Σ(a − z)·w = Σ a·w − z·Σw, with Σw
  per output a constant, so the reduction reads raw int8 words (spatial padding holds z, so
  padded taps cancel exactly).

`schedule_quad` gives the reduction block a GPU schedule — outputs over threads, the activation
tile staged in shared memory per thread block, the four-step inner reduction tensorized with
`__dp4a`, the fused epilogue (zero-point correction, bias, requantization) computed from the
register accumulator. The result equals the plain int32 reduction bit for bit.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

import numpy as np
import tvm
from tvm import s_tir, te, tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T

logger = logging.getLogger(__name__)

QUAD = 4  # int8 values per dp4a word
DP4A_INTRINSIC = "mlpc_cuda_dp4a_s8s8s32"
BLOCK_PREFIX = "mlpc_quad_"
INPUT_BLOCK = f"{BLOCK_PREFIX}input"
MAX_THREADS = 256


# -- the dp4a intrinsic ------------------------------------------------------------------------


def _dp4a_desc(index_dtype: str) -> tirx.PrimFunc:
    """The four-step int8 dot product; the loop in `index_dtype` (tensorize matches loop dtypes,
    and Relax's fused PrimFuncs index in int64 where TE computes of Python ints use int32)."""
    four = tirx.IntImm(index_dtype, 4)

    @T.prim_func(s_tir=True)
    def desc(
        A: T.Buffer((4,), "int8", offset_factor=1, align=4, scope="shared"),
        B: T.Buffer((4,), "int8", offset_factor=1, align=4),
        C: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0], A[0:4], B[0:4])
            T.writes(C[0])
            for i in T.serial(four):
                with T.sblock("update"):
                    vi = T.axis.remap("R", [i])
                    C[0] = C[0] + T.cast(A[vi], "int32") * T.cast(B[vi], "int32")

    return desc


@T.prim_func(s_tir=True)
def _dp4a_impl(
    A: T.Buffer((4,), "int8", offset_factor=1, align=4, scope="shared"),
    B: T.Buffer((4,), "int8", offset_factor=1, align=4),
    C: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0], A[0:4], B[0:4])
        T.writes(C[0])
        C[0] += T.call_pure_extern(
            "__dp4a", A.vload([0], "int8x4"), B.vload([0], "int8x4"), T.int32(0), dtype="int32"
        )


@T.prim_func(s_tir=True)
def _dp4a_portable(
    A: T.Buffer((4,), "int8", offset_factor=1, align=4, scope="shared"),
    B: T.Buffer((4,), "int8", offset_factor=1, align=4),
    C: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local"),
) -> None:
    with T.sblock("root"):
        T.reads(C[0], A[0:4], B[0:4])
        T.writes(C[0])
        C[0] = (
            C[0]
            + T.Cast("int32", A[0]) * T.Cast("int32", B[0])
            + T.Cast("int32", A[1]) * T.Cast("int32", B[1])
            + T.Cast("int32", A[2]) * T.Cast("int32", B[2])
            + T.Cast("int32", A[3]) * T.Cast("int32", B[3])
        )


# The same four-step update written out, for running a dp4a schedule on a CPU (`serial_for_cpu`).
PORTABLE_INTRINSIC = "mlpc_dp4a_portable"
for _index in ("int32", "int64"):
    TensorIntrin.register(f"{DP4A_INTRINSIC}_{_index}", _dp4a_desc(_index), _dp4a_impl, override=True)
    TensorIntrin.register(f"{PORTABLE_INTRINSIC}_{_index}", _dp4a_desc(_index), _dp4a_portable, override=True)


# -- weights -----------------------------------------------------------------------------------


def fits(weight: np.ndarray, activation_dtype: str) -> bool:
    """Whether an integer weight [N, C, ...] (zero point already subtracted) and an activation
    of `activation_dtype` take the dp4a layout: int8-valued weights, 8-bit activations."""
    return (
        activation_dtype in ("int8", "uint8")
        and weight.ndim >= 2
        and weight.size > 0
        and int(weight.min()) >= -128
        and int(weight.max()) <= 127
    )


def quad_weight(w: np.ndarray) -> np.ndarray:
    """An int8-valued weight [N, C, *kernel] (conv OIHW-style, or matmul [N, K]) in the dp4a
    layout [*kernel, ceil(C/4), N, 4] int8, zero-padded along C."""
    n, c = w.shape[0], w.shape[1]
    rest = w.shape[2:]
    cp = -(-c // QUAD) * QUAD
    padded = np.zeros((n, cp, *rest), np.int8)
    padded[:, :c] = w
    moved = np.moveaxis(np.moveaxis(padded, 0, -1), 0, -2)  # [*kernel, Cp, N]
    return np.ascontiguousarray(moved.reshape(*rest, cp // QUAD, QUAD, n).swapaxes(-1, -2))


def weight_sums(w: np.ndarray) -> np.ndarray:
    """Σ over the reduction of each output's weights, int32 [N] (for the zero-point correction)."""
    return w.reshape(w.shape[0], -1).astype(np.int64).sum(axis=1).astype(np.int32)


def staged_zero_point(zero_point: int, dtype: str) -> int:
    """The zero point of an activation of `dtype` once staged as int8 (uint8 values shift by −128)."""
    return zero_point - 128 if dtype == "uint8" else zero_point


def _staged(value: Any, dtype: str) -> Any:
    if dtype == "uint8":
        return (value.astype("int32") - 128).astype("int8")
    return value.astype("int8")


# -- computes ----------------------------------------------------------------------------------


def _corrected(acc: te.Tensor, rest: tuple[te.Tensor, ...], zero_point: int, channel_axis: int) -> te.Tensor:
    if zero_point == 0:
        return acc
    (wsum,) = rest
    return te.compute(
        acc.shape,
        lambda *i: acc(*i) - tirx.const(zero_point, "int32") * wsum[i[channel_axis]],
        name=f"{BLOCK_PREFIX}zero_point",
    )


def quad_matmul(a: te.Tensor, wq: te.Tensor, *rest: te.Tensor, depth: int, a_zero_point: int) -> te.Tensor:
    """a [..., M, K] (int8/uint8, zero point `a_zero_point`) times a `quad_weight` wq
    [ceil(K/4), N, 4] of a [K, N] weight (transposed to [N, K] first); `rest`: the weight sums
    (`weight_sums`) when the staged zero point is not 0. int32 output [..., M, N]."""
    kq, n = int(wq.shape[0]), int(wq.shape[1])
    zp = staged_zero_point(a_zero_point, a.dtype)

    def stage(*idx):
        *lead, k = idx
        return tirx.if_then_else(k < depth, _staged(a[(*lead, k)], a.dtype), tirx.const(0, "int8"))

    lead = [int(d) for d in a.shape[:-1]]  # int32 iteration throughout (tensorize matches int32 loops)
    aq = te.compute((*lead, kq * QUAD), stage, name=INPUT_BLOCK)
    rko = te.reduce_axis((0, kq), name="rko")
    rki = te.reduce_axis((0, QUAD), name="rki")

    def body(*idx):
        *lead, col = idx
        return te.sum(
            aq[(*lead, rko * QUAD + rki)].astype("int32") * wq[rko, col, rki].astype("int32"), axis=[rko, rki]
        )

    acc = te.compute((*lead, n), body, name=f"{BLOCK_PREFIX}matmul")
    return _corrected(acc, rest, zp, len(acc.shape) - 1)


def quad_conv(
    x: te.Tensor,
    wq: te.Tensor,
    *rest: te.Tensor,
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    pads: list[int],
    channels: int,
    x_zero_point: int,
) -> te.Tensor:
    """N-D convolution (group 1) of x [N, C, *S] (int8/uint8, zero point `x_zero_point`) with a
    `quad_weight` wq [*kernel, ceil(C/4), OC, 4]; `rest`: the weight sums when the staged zero
    point is not 0. int32 output [N, OC, *O]."""
    nsp = len(kernel)
    zp = staged_zero_point(x_zero_point, x.dtype)
    cq, oc = int(wq.shape[nsp]), int(wq.shape[nsp + 1])
    spatial = [int(s) for s in x.shape[2:]]
    padded = [spatial[i] + pads[i] + pads[i + nsp] for i in range(nsp)]

    def stage_padded(n, *idx):
        *pos, c = idx
        inside = [tirx.all(pos[i] >= pads[i], pos[i] < spatial[i] + pads[i]) for i in range(nsp)]
        value = _staged(x[(n, c, *[pos[i] - pads[i] for i in range(nsp)])], x.dtype)
        # padded taps hold the zero point (they cancel in the correction), padded channels 0
        return tirx.if_then_else(
            c < channels,
            tirx.if_then_else(tirx.all(*inside), value, tirx.const(zp, "int8")),
            tirx.const(0, "int8"),
        )

    batch = int(x.shape[0])  # int32 iteration throughout (tensorize matches int32 loops)
    xq = te.compute((batch, *padded, cq * QUAD), stage_padded, name=INPUT_BLOCK)
    out_sp = [(padded[i] - (kernel[i] - 1) * dilations[i] - 1) // strides[i] + 1 for i in range(nsp)]
    rk = [te.reduce_axis((0, k), name=f"rk{i}") for i, k in enumerate(kernel)]
    rco = te.reduce_axis((0, cq), name="rco")
    rci = te.reduce_axis((0, QUAD), name="rci")

    def body(n, o_c, *o):
        pos = [o[i] * strides[i] + rk[i] * dilations[i] for i in range(nsp)]
        a = xq[(n, *pos, rco * QUAD + rci)].astype("int32")
        w = wq[(*rk, rco, o_c, rci)].astype("int32")
        return te.sum(a * w, axis=[*rk, rco, rci])

    acc = te.compute((batch, oc, *out_sp), body, name=f"{BLOCK_PREFIX}conv")
    return _corrected(acc, rest, zp, 1)


# -- schedule ----------------------------------------------------------------------------------


def _extent(sch: s_tir.Schedule, loop: Any) -> int:
    return int(sch.get(loop).extent)


def _divisor_at_most(n: int, cap: int) -> int:
    """The largest divisor of n not above cap (splits without a predicate, which tensorize needs)."""
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def _bind_injective(sch: s_tir.Schedule, block: Any, threads: int) -> None:
    loops = sch.get_loops(block)
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    bx, tx = sch.split(fused, [None, min(threads, _extent(sch, fused))])
    sch.bind(bx, "blockIdx.x")
    sch.bind(tx, "threadIdx.x")


def schedule_quad(
    func: tirx.PrimFunc, max_shared_bytes: int = 48 * 1024, intrinsic: str = DP4A_INTRINSIC
) -> s_tir.Schedule | None:
    """A GPU schedule for a PrimFunc holding a `quad_matmul`/`quad_conv` reduction and its fused
    epilogue (see the module doc); None when the PrimFunc has no such block.

    Threads: one output per thread, the output channels over threadIdx.x (coalesced weight words),
    rows (matmul) or output pixels (conv) over threadIdx.y; the activation tile a thread block
    reads is staged in shared memory by all its threads. `intrinsic` tensorizes the four-step
    update (`PORTABLE_INTRINSIC` gives the same schedule without `__dp4a`, see `serial_for_cpu`).
    """
    if not any(name.startswith(BLOCK_PREFIX) for name in _block_names(func)):
        return None
    sch = s_tir.Schedule(func)
    blocks = [b for b in sch.get_child_blocks(sch.get_sblock("root"))]
    names = [sch.get(b).name_hint for b in blocks]
    main = next(
        (b for b, n in zip(blocks, names) if n in (f"{BLOCK_PREFIX}matmul", f"{BLOCK_PREFIX}conv")), None
    )
    staged = next((b for b, n in zip(blocks, names) if n == INPUT_BLOCK), None)
    if main is None or staged is None:
        return None
    is_conv = sch.get(main).name_hint.endswith("conv")
    # everything before the stage (casts, pads of the caller) folds into it
    for block, name in zip(blocks, names):
        if (
            block is not main
            and block is not staged
            and sch.get_consumers(block)
            and any(sch.get(c).name_hint == INPUT_BLOCK for c in sch.get_consumers(block))
        ):
            sch.compute_inline(block)
    write_back = sch.cache_write(main, 0, "local")
    sch.set_scope(staged, 0, "shared")
    loops = sch.get_loops(main)
    kinds = [iv.iter_type for iv in sch.get(main).iter_vars]
    spatial = [lp for lp, k in zip(loops, kinds) if k == 0]
    reduce = [lp for lp, k in zip(loops, kinds) if k != 0]
    *outer_reduce, inner = reduce
    if is_conv:
        n, channels, *sp = spatial
        rows = [n, *sp]
        sch.reorder(*rows, channels)
    else:
        *rows, channels = spatial
    # tensorize before fusing loops: blockize fails on fused int64 loops in TVM 0.27
    index_dtype = str(sch.get(inner).extent.ty)
    update = sch.blockize(inner)
    rows = sch.fuse(*rows) if len(rows) > 1 else rows[0]
    n_channels, n_rows = _extent(sch, channels), _extent(sch, rows)
    tx = _divisor_at_most(n_channels, 64)
    ty = _divisor_at_most(n_rows, max(1, MAX_THREADS // tx // (1 if is_conv else 2)))
    bx, tx_loop = sch.split(channels, [None, tx])
    by, ty_loop = sch.split(rows, [None, ty])
    sch.reorder(by, bx, ty_loop, tx_loop)
    sch.bind(by, "blockIdx.y")
    sch.bind(bx, "blockIdx.x")
    sch.bind(ty_loop, "threadIdx.y")
    sch.bind(tx_loop, "threadIdx.x")
    sch.reverse_compute_at(write_back, tx_loop, preserve_unit_loops=True)
    _inline_epilogue(sch, write_back)
    # the activation tile of this thread block, in shared memory, fetched by all its threads
    sch.compute_at(staged, bx, preserve_unit_loops=True)
    fetch = sch.get_loops(staged)[2:]
    fused = sch.fuse(*fetch)
    _, fy, fx = sch.split(fused, [None, ty, tx])
    sch.bind(fy, "threadIdx.y")
    sch.bind(fx, "threadIdx.x")
    shared = _shared_bytes(sch, staged)
    if shared > max_shared_bytes:
        logger.debug("dp4a schedule: %d bytes of shared memory exceed %d", shared, max_shared_bytes)
        return None
    sch.decompose_reduction(update, outer_reduce[0] if outer_reduce else sch.get_loops(update)[-1])
    sch.tensorize(sch.get_loops(sch.get_child_blocks(update)[0])[-1], f"{intrinsic}_{index_dtype}")
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        if not _is_bound(sch, block):
            _bind_injective(sch, block, MAX_THREADS)
    return sch


def _block_names(func: tirx.PrimFunc) -> list[str]:
    sch = s_tir.Schedule(func)
    return [sch.get(b).name_hint for b in sch.get_child_blocks(sch.get_sblock("root"))]


def _shared_bytes(sch: s_tir.Schedule, block: Any) -> int:
    region = sch.get(block).writes[0].region
    return (
        math.prod(int(r.extent) for r in region)
        if all(isinstance(r.extent, tirx.IntImm) for r in region)
        else 1 << 30
    )


def _inline_epilogue(sch: s_tir.Schedule, write_back: Any) -> None:
    """Inline every elementwise consumer chain of the accumulator into its write-back."""
    from tvm.s_tir.dlight.gpu.matmul import auto_inline_consumer_chain

    auto_inline_consumer_chain(sch, write_back)


def _is_bound(sch: s_tir.Schedule, block: Any) -> bool:
    return any(sch.get(loop).kind == tirx.ForKind.THREAD_BINDING for loop in sch.get_loops(block))


def serial_for_cpu(sch: s_tir.Schedule) -> tirx.PrimFunc:
    """The scheduled PrimFunc of `sch` (made with `PORTABLE_INTRINSIC`) as a CPU program with the
    same loop nest: thread-bound loops become serial loops and shared/local buffers global.

    TIR gives thread-bound loops the meaning of serial loops (the GPU lowering inserts the
    barriers that preserve it), so running this on a CPU checks the schedule's arithmetic — tiling,
    staging, epilogue, tensorized update — bit for bit without a GPU.
    """
    for block in _all_blocks(sch):
        stmt = sch.get(block)
        for i, buf in enumerate(stmt.writes):
            if _scope(buf) in ("shared", "local"):
                sch.set_scope(block, i, "global")
    # TVM 0.27 has no Python TIR mutator: rewrite the loop kinds in TVMScript and parse it back
    text = re.sub(r"T\.thread_binding\((.+?), thread=\"[^\"]+\"\)", r"T.serial(\1)", sch.mod.script())
    return tvm.script.from_source(text)["main"]


def _scope(region: Any) -> str:
    return str(region.source.scope())


def _all_blocks(sch: s_tir.Schedule) -> list[Any]:
    found = []

    def visit(block: Any) -> None:
        for child in sch.get_child_blocks(block):
            found.append(child)
            visit(child)

    visit(sch.get_sblock("root"))
    return found


__all__ = [
    "PORTABLE_INTRINSIC",
    "serial_for_cpu",
    "DP4A_INTRINSIC",
    "fits",
    "quad_conv",
    "quad_matmul",
    "quad_weight",
    "schedule_quad",
    "staged_zero_point",
    "weight_sums",
]
