"""Default CPU schedules: what mlpc compiles with when nothing was tuned.

TVM's CPU pipeline legalizes every op into naive loop nests (dlight has no CPU rules for
matmul or convolution). This rule gives each fused kernel a reasonable schedule analytically:

- a kernel with a reduction (conv, matmul, pooling, reductions): the innermost output axis is
  split into SIMD-width vectors, the axis before it into a small register tile, the reduction
  loops go between the outer output loops and that tile, and the accumulator lives in a local
  buffer written back (with the fused epilogue — bias, activation, residual add) per tile;
  the outer output loops are fused and run in parallel;
- padding and other producers run as their own parallel loop nests;
- injective kernels (elementwise, layout) are flattened, vectorized and run in parallel.

A kernel the rule cannot schedule keeps TVM's loops (correct, slow) and is logged.
"""
from __future__ import annotations

import logging
import math

import tvm
from tvm import s_tir
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

from mlpc.backends.tvm import int_depthwise, int_pairs

logger = logging.getLogger(__name__)

_DATA_PAR, _REDUCE = 0, 2
REGISTER_ROWS = 4  # rows of the register tile (e.g. output channels of a conv)
SMALL_REDUCTION = 16  # reductions this short (depthwise 3x3) get no register tile
# Waking the thread pool costs more than kernels smaller than this (multiply-adds or elements) gain.
PARALLEL_MIN_WORK = 1 << 16
ROWS_TO_PARALLELIZE = 8  # an injective block with fewer outer rows is flattened before going parallel
# Scope of the register tile's accumulator buffer. TVM 0.27 lowers every CPU allocation whose
# scope is not "global" (so "local" too) to a heap workspace call — inside a parallel loop, one
# per task — whose memory LLVM cannot keep in registers; a small "global" one stays a stack
# slot that LLVM promotes to registers.
ACCUMULATOR_SCOPE = "global"


def _reduction_size(sch: s_tir.Schedule, loops: list) -> int:
    return math.prod(int(sch.get(loop).extent) for loop in loops)


def divisor(extent: int, candidates: tuple[int, ...]) -> int | None:
    """The first of `candidates` that divides `extent` (and is not larger), or None."""
    return next((c for c in candidates if extent >= c and extent % c == 0), None)


def _best_effort(sch: s_tir.Schedule, primitive: str, *args: object) -> None:
    """Apply a schedule primitive that only speeds things up; a kernel it does not fit keeps the rest."""
    try:
        getattr(sch, primitive)(*args)
    except s_tir.ScheduleError as e:
        logger.debug("%s skipped: %s", primitive, str(e).splitlines()[-1])


def schedule_injective(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """Run a block's loops in parallel and vectorized.

    The innermost axis stays a loop of its own when it is a multiple of `lanes` (split into
    vectors) or shorter than a vector (unrolled), and the outer axes are fused: each element's
    indices then cost a few adds. Flattening everything into one loop instead makes every element
    recompute them with divisions and remainders, which took more time than the copy itself in
    the NCHW→NHWC input transpose and the padding of 3-channel convolutions (4.0 → 0.6 µs and
    16.5 → 11.6 µs for the zoo ResNet's first two kernels, one thread). Other shapes, and big
    blocks with too few outer rows to spread over the cores, are flattened.
    """
    loops = sch.get_loops(block)
    if not loops:  # a 0-d result
        return
    extents = [int(sch.get(loop).extent) for loop in loops]
    inner, rows = extents[-1], math.prod(extents[:-1])
    big = rows * inner >= PARALLEL_MIN_WORK
    if len(loops) > 1 and (inner % lanes == 0 or inner < lanes) and (rows >= ROWS_TO_PARALLELIZE or not big):
        outer = sch.fuse(*loops[:-1])
        if inner % lanes == 0:
            sch.vectorize(sch.split(loops[-1], [None, lanes])[1])
        else:
            sch.unroll(loops[-1])
        if big:
            sch.parallel(outer)
        return
    fused = sch.fuse(*loops)
    extent = int(sch.get(fused).extent)
    outer = fused
    if extent >= 2 * lanes and extent % lanes == 0:
        outer, inner = sch.split(fused, [None, lanes])
        sch.vectorize(inner)
    if extent >= PARALLEL_MIN_WORK:
        sch.parallel(outer)


def fold_epilogue(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> list:
    """Inline the blocks between a reduction `block` and the kernel's last block (bias, GELU,
    residual...) into that last one; return the reduction's producer blocks."""
    producers = sch.get_producers(block)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    position = next(i for i, b in enumerate(blocks) if sch.get(b).same_as(sch.get(block)))
    for epilogue in blocks[position + 1:-1]:
        sch.compute_inline(epilogue)
    return producers


def fold_write_back(sch: s_tir.Schedule, write_back: s_tir.schedule.SBlockRV, tile_loop) -> None:
    """Compute the epilogue (bias, requantize, activation…) straight from the accumulator tile
    as it is written back, so the reduction's full-size output is never stored and reloaded;
    an epilogue that cannot be folded runs per tile under `tile_loop` instead."""
    for epilogue in sch.get_consumers(write_back):
        try:
            sch.reverse_compute_inline(epilogue)
        except s_tir.ScheduleError:
            sch.reverse_compute_at(epilogue, tile_loop)


def schedule_reduction(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV, lanes: int) -> None:
    """Tile a reduction block for registers and SIMD, parallelize its outer loops (see module doc)."""
    producers = fold_epilogue(sch, block)
    kinds = [iv.iter_type for iv in sch.get(block).iter_vars]
    loops = sch.get_loops(block)
    spatial = [loop for loop, kind in zip(loops, kinds) if kind == _DATA_PAR]
    reduce = [loop for loop, kind in zip(loops, kinds) if kind == _REDUCE]
    extents = [int(sch.get(loop).extent) for loop in spatial]
    work = math.prod(extents) * _reduction_size(sch, reduce)
    if _reduction_size(sch, reduce) <= SMALL_REDUCTION:
        # Depthwise 3x3 and the like: LLVM vectorizes TVM's plain loop nest better than a register
        # tile would do (measured); only spread the outer loop over the cores when it pays.
        if work >= PARALLEL_MIN_WORK and extents[0] > 1:
            sch.parallel(spatial[0])
        return
    vector_len = divisor(extents[-1], (2 * lanes, lanes, 4))
    vector = None
    last = spatial[-1]
    if vector_len:
        last, vector = sch.split(spatial[-1], [None, vector_len])
    outer = list(spatial[:-1])
    tile = []
    for index in range(len(outer) - 1, -1, -1):
        rows = divisor(extents[index], (REGISTER_ROWS, 2))
        if rows:
            outer[index], row = sch.split(outer[index], [None, rows])
            tile.append(row)
            break
    sch.reorder(*outer, last, *reduce, *tile, *([vector] if vector is not None else []))
    parallel = sch.fuse(*outer, last)
    if work >= PARALLEL_MIN_WORK:
        sch.parallel(parallel)
    write_back = sch.cache_write(block, 0, ACCUMULATOR_SCOPE)
    sch.reverse_compute_at(write_back, parallel)
    for epilogue in sch.get_consumers(write_back):
        sch.reverse_compute_at(epilogue, parallel)
    for producer in producers:
        schedule_injective(sch, producer, lanes)
    for row in tile:
        sch.unroll(row)
    if vector is not None:
        _best_effort(sch, "vectorize", vector)
    if reduce:
        sch.decompose_reduction(block, reduce[0])
    for stage in (write_back, *sch.get_consumers(write_back)):
        _best_effort(sch, "vectorize", sch.get_loops(stage)[-1])


def _is_reduction(sch: s_tir.Schedule, block: s_tir.schedule.SBlockRV) -> bool:
    return any(iv.iter_type == _REDUCE for iv in sch.get(block).iter_vars)


def inline_elementwise(sch: s_tir.Schedule) -> None:
    """Inline every elementwise stage of a kernel into its consumers, except the last stage and
    those a reduction reads (computed once, read by the reduction and by later stages). A fused
    softmax or layer norm with its QuantizeLinear epilogue otherwise wrote and re-read the whole
    tensor once per stage: 7 extra passes for softmax + quantize (206 → 68 µs at one thread for
    the zoo transformer's batch-8 attention probabilities)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    for block in blocks[:-1]:
        if _is_reduction(sch, block) or any(_is_reduction(sch, c) for c in sch.get_consumers(block)):
            continue
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            pass


def lanes_for(vector_bits: int) -> int:
    """The float32 SIMD lanes the default schedule vectorizes by (at least 4).

    >>> lanes_for(256)
    8
    """
    return max(vector_bits // 32, 4)


def schedule_primfunc(func: tvm.tirx.PrimFunc, lanes: int, avx2: bool = False,
                      dotprod: bool = False) -> tvm.tirx.PrimFunc:
    """Return `func` with the default CPU schedule applied (raises ScheduleError if it does not fit).
    `avx2`: the target has AVX2, so integer pair kernels (`int_pairs`) use vpmaddwd; `dotprod`:
    it has the ARM dot product, so quad kernels use sdot."""
    sch = s_tir.Schedule(func)
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    reductions = [b for b in blocks if any(iv.iter_type == _REDUCE for iv in sch.get(b).iter_vars)]
    if len(reductions) == 1 and int_pairs.is_pair_block(sch, reductions[0]):
        int_pairs.schedule_pair(sch, reductions[0], fold_epilogue(sch, reductions[0]), avx2=avx2, dotprod=dotprod,
                                parallel_min_work=PARALLEL_MIN_WORK,
                                schedule_injective=lambda s, b: schedule_injective(s, b, lanes))
    elif len(reductions) == 1 and int_depthwise.is_depthwise_block(sch, reductions[0]):
        int_depthwise.schedule_depthwise(sch, reductions[0], fold_epilogue(sch, reductions[0]),
                                         parallel_min_work=PARALLEL_MIN_WORK)
    elif len(reductions) > 1:  # softmax, layer norm: rows in parallel, each stage in order
        inline_elementwise(sch)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            loops = sch.get_loops(block)
            big = _reduction_size(sch, loops) >= PARALLEL_MIN_WORK
            if big and sch.get(block).iter_vars[0].iter_type == _DATA_PAR and int(sch.get(loops[0]).extent) > 1:
                sch.parallel(loops[0])
    elif reductions:
        schedule_reduction(sch, reductions[0], lanes)
    else:
        for block in blocks:
            schedule_injective(sch, block, lanes)
    return sch.mod["main"]


def default_schedule_pass(lanes: int, avx2: bool = False, dotprod: bool = False) -> tvm.transform.Pass:
    """A module pass applying `schedule_primfunc` to every PrimFunc, recording the ones it skipped
    in the module attribute "mlpc.unscheduled"."""

    @tvm.transform.module_pass(opt_level=0, name="MlpcDefaultCpuSchedule")
    def _apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = mod.clone()  # never mutate the caller's module (a later pass may need it unscheduled)
        skipped = []
        for gvar, func in list(mod.functions.items()):
            if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
                continue  # tuned kernels (from a tuning database) keep their schedule
            try:
                mod[gvar] = schedule_primfunc(func, lanes, avx2, dotprod)
            except Exception as e:  # a kernel shape the rule does not handle keeps TVM's loops
                skipped.append(gvar.name_hint)
                logger.debug("default schedule skipped %s: %s", gvar.name_hint, str(e).splitlines()[0])
        if skipped:
            logger.info("kernels left unscheduled: %s", ", ".join(skipped))
        return mod.with_attr("mlpc.unscheduled", skipped)

    return _apply


def _fuse_ops_unless_grouped() -> tvm.transform.Pass:
    """TVM's FuseOps, skipped for a module whose fusion mlpc decided (attribute "mlpc.fusion",
    set by lower.py from the `fuse` pass's groups): there every kernel is already a primitive
    function and ungrouped ops stay one kernel each."""
    fuse_ops = tvm.relax.transform.FuseOps()

    @tvm.transform.module_pass(opt_level=0, name="MlpcFuseOpsUnlessGrouped")
    def _apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        if mod.attrs is not None and "mlpc.fusion" in mod.attrs:
            return mod
        return fuse_ops(mod)

    return _apply


def fusion_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """TVM's CPU passes up to fused, legalized PrimFuncs: what scheduling (default or tuned) sees.
    Run them inside `with target:`."""
    passes = cpu_generic.legalize_passes(target)
    passes = [_fuse_ops_unless_grouped() if p.info.name == "FuseOps" else p for p in passes]
    return cpu_generic.library_dispatch_passes(target) + passes


def cpu_pipeline(target: tvm.target.Target, vector_bits: int,
                 tuned: tvm.transform.Pass | None = None, avx2: bool = False,
                 dotprod: bool = False) -> tvm.transform.Pass:
    """TVM's CPU Relax pipeline with mlpc's default schedules between fusion and lowering;
    `tuned` (a pass applying a tuning database) runs first and the default schedule skips
    the kernels it marked "tirx.is_scheduled"; `avx2` enables the vpmaddwd integer kernels,
    `dotprod` the sdot ones."""
    lanes = lanes_for(vector_bits)

    @tvm.transform.module_pass(opt_level=0, name="MlpcCpuPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = (
                fusion_passes(target)
                + ([tuned] if tuned is not None else [])
                + [default_schedule_pass(lanes, avx2, dotprod)]
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


__all__ = ["cpu_pipeline", "default_schedule_pass", "fusion_passes", "lanes_for", "schedule_primfunc"]
