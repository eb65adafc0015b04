"""The CUDA build: Relax → reduced precision → GPU-scheduled TIR → device code in the artifact.

    >>> section = build_cuda(relax_mod, get_target("cuda/sm_80"), out_dir, dtype="float16")  # doctest: +SKIP
    >>> section["kernels"]                                                                    # doctest: +SKIP
    'kernels.json'

Stages, in order:
1. `convert_precision`: fp16 with `relax.transform.ToMixedPrecision` (matmul/conv accumulate in
   fp32, elementwise ops follow their inputs, softmax/norms keep fp32 where TVM's policy says);
   bf16 is the same plan with every fp16 cast turned into a bf16 cast. Inputs and outputs stay
   float32 for the user.
2. `schedule_for_gpu`: legalize, fuse (`fuse_for_gpu`, also what `mlpc tune` extracts its
   tasks from), then per PrimFunc the first schedule that applies: mlpc's dp4a rule, a tuned
   schedule from `mlpc tune`'s database or the user cache ("MetaSchedule"), dlight's GPU rules
   (Matmul, GEMV, Reduction, GeneralReduction, Fallback; Fallback binds convolutions and other
   spatial kernels), recording which one scheduled it; every PrimFunc must end with thread bindings.
3. `analyze_kernels`: per PrimFunc the launch shape (from its thread bindings), FLOPs and bytes
   of its buffers (what the roofline estimate in `mlpc inspect` reads).
4. `tvm.compile` with TVM's CUDA codegen; the CUDA C goes through nvcc/ptxas/fatbinary
   (`cuda_toolchain`), the fatbin (SASS for the arch + PTX) is embedded in the library, and
   device.cu, device.ptx, device.cubin and kernels.json are written beside it.

Integer kernels: convs and matmuls in the dp4a layout get mlpc's own schedule (`int_cuda`,
the "dp4a" rule, tried first); weight-only kernels (`ops_dequant`) and the other integer ones take
dlight's rules. MetaSchedule tuning for CUDA (candidates built here, measured on a GPU through
RPC) is in `tuning_cuda`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tvm
from tvm import relax, s_tir, tirx

from mlpc.backends.tvm.backend import LIBRARY
from mlpc.backends.tvm.cuda_toolchain import DeviceCode, compile_device_code, ensure_cuda_runtime
from mlpc.errors import ExportError, LoweringError, TargetError
from mlpc.targets import Target

logger = logging.getLogger(__name__)

KERNELS = "kernels.json"
DEVICE_FILES = {"source": "device.cu", "ptx": "device.ptx", "cubin": "device.cubin"}

# User spellings → TVM dtype names.
DTYPES = {"fp32": "float32", "float32": "float32", "fp16": "float16", "float16": "float16",
          "bf16": "bfloat16", "bfloat16": "bfloat16"}


def normalize_dtype(dtype: str) -> str:
    """Return the TVM dtype for a user spelling ("fp16" → "float16"); raise TargetError otherwise."""
    try:
        return DTYPES[dtype.lower()]
    except KeyError:
        raise TargetError(f"unknown compute dtype {dtype!r}; use one of fp32, fp16, bf16") from None


# --------------------------------------------------------------------------------------------
# 1. precision


# Relax ops whose legalization supports float32/float16 but not bfloat16: run them in float32.
_NO_BF16_OPS = ("relax.nn.layer_norm", "relax.nn.group_norm", "relax.nn.rms_norm")


@relax.expr_functor.mutator
class _Fp16CastsToBf16(relax.PyExprMutator):
    """Turn every cast to float16 into a cast to bfloat16 (ops after it follow by inference);
    ops without a bfloat16 kernel get float32 inputs and a cast of their result."""

    _astype = tvm.ir.Op.get("relax.astype")
    _no_bf16 = [tvm.ir.Op.get(name) for name in _NO_BF16_OPS]

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102 - visitor hook
        call = super().visit_call_(call)
        if call.op.same_as(self._astype) and str(call.attrs.dtype) == "float16":
            return relax.op.astype(call.args[0], "bfloat16")
        if any(call.op.same_as(op) for op in self._no_bf16) and _dtype_of(call.args[0]) == "bfloat16":
            args = [self.builder_.emit(relax.op.astype(a, "float32")) if _dtype_of(a) == "bfloat16" else a
                    for a in call.args]
            result = self.builder_.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
            return relax.op.astype(result, "bfloat16")
        return call


def _dtype_of(expr: relax.Expr) -> str | None:
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


_HIDDEN = "mlpc_hidden_call_tir."


@relax.expr_functor.mutator
class _CallTirHider(relax.PyExprMutator):
    """ToMixedPrecision (TVM 0.27) fails on any call_tir (the callee's type is not a tensor):
    `hide` turns each call_tir into a call_packed of a named extern function (which it treats
    as an fp32 op), `unhide` turns them back. mlpc's own TE kernels (integer, weight-only)
    choose their precision themselves."""

    _call_tir = tvm.ir.Op.get("relax.call_tir")

    def __init__(self, mod: tvm.IRModule, hide: bool) -> None:
        super().__init__(mod)
        self.hide = hide
        self.gvars = {gv.name_hint: gv for gv in mod.get_global_vars()}

    def visit_call_(self, call: relax.Call) -> relax.Expr:  # noqa: D102 - visitor hook
        call = super().visit_call_(call)
        if self.hide and call.op.same_as(self._call_tir) and len(call.args) == 2:
            return relax.Call(relax.ExternFunc(_HIDDEN + call.args[0].name_hint), list(call.args[1].fields), None,
                              [call.ty_args[0]])
        if not self.hide and isinstance(call.op, relax.ExternFunc) and str(call.op.global_symbol).startswith(_HIDDEN):
            gvar = self.gvars[str(call.op.global_symbol)[len(_HIDDEN):]]
            return relax.call_tir(gvar, relax.Tuple(list(call.args)), call.ty_args[0])
        return call


def _rewrite_functions(mod: tvm.IRModule, mutator: relax.PyExprMutator) -> tvm.IRModule:
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mutator.builder_.update_func(gvar, mutator.visit_expr(func))
    return mutator.builder_.get()


def convert_precision(mod: tvm.IRModule, dtype: str) -> tvm.IRModule:
    """Return `mod` computing in `dtype` ("float32", "float16", "bfloat16"); the signature of
    "main" (float32 inputs and outputs) does not change."""
    if dtype == "float32":
        return mod
    mod = _rewrite_functions(mod, _CallTirHider(mod, hide=True))
    mod = relax.transform.ToMixedPrecision(out_dtype="float32")(mod)
    mod = _rewrite_functions(mod, _CallTirHider(mod, hide=False))
    if dtype == "bfloat16":
        mod = _rewrite_functions(mod, _Fp16CastsToBf16(mod))
    return relax.transform.FoldConstant()(mod)  # cast weights once, at build time


# --------------------------------------------------------------------------------------------
# 2. schedules


class _Dp4aRule:
    """mlpc's rule for the integer kernels in the dp4a layout (`int_cuda.schedule_quad`)."""

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, tunable: bool) -> s_tir.Schedule | None:
        """The dp4a schedule of `func`, or None when it holds no dp4a-layout kernel."""
        from mlpc.backends.tvm.int_cuda import schedule_quad

        return schedule_quad(func)


class _TunedRule:
    """Tuned schedules from `mlpc tune` databases (`tuning_db.tuned_primfunc`)."""

    def __init__(self, dbs: list[Any]) -> None:
        self.dbs = dbs

    def apply(self, func: tirx.PrimFunc, target: tvm.target.Target, tunable: bool) -> s_tir.Schedule | None:
        """The tuned schedule of `func`, or None when no database holds one."""
        from mlpc.backends.tvm.tuning_db import tuned_primfunc

        tuned = tuned_primfunc(self.dbs, func, target, str(func.attrs.get("global_symbol", "kernel"))
                               if func.attrs else "kernel")
        return None if tuned is None else s_tir.Schedule(tvm.IRModule({"main": tuned}))


TUNED_RULE = "MetaSchedule"


def _gpu_rules(dbs: list[Any] = ()) -> list[tuple[str, Any]]:
    from tvm.s_tir import dlight as dl

    tuned = [(TUNED_RULE, _TunedRule(list(dbs)))] if dbs else []
    return [("dp4a", _Dp4aRule()), *tuned, ("Matmul", dl.gpu.Matmul()), ("GEMV", dl.gpu.GEMV()),
            ("Reduction", dl.gpu.Reduction()), ("GeneralReduction", dl.gpu.GeneralReduction()),
            ("Fallback", dl.gpu.Fallback())]


def default_gpu_schedule(func: tirx.PrimFunc, target: tvm.target.Target) -> tuple[str, tirx.PrimFunc] | None:
    """The schedule `mlpc compile` gives kernel `func` without a tuning database: (rule, PrimFunc),
    or None when no rule binds it to threads."""
    return _apply_first_rule(func, target, _gpu_rules())


def _apply_first_rule(func: tirx.PrimFunc, target: tvm.target.Target, rules: list[tuple[str, Any]]
                      ) -> tuple[str, tirx.PrimFunc] | None:
    for name, rule in rules:
        try:
            space = rule.apply(func, target, False)
        except Exception as e:  # a rule that crashes on a pattern it half-matches: try the next
            logger.debug("dlight rule %s raised %s", name, e)
            continue
        if space is None:
            continue
        sch = space[0] if isinstance(space, list) else space
        return name, sch.mod["main"].with_attr("tirx.is_scheduled", True)
    return None


def _thread_binding(node: Any) -> tuple[str, Any] | None:
    if isinstance(node, tirx.For) and node.kind == tirx.ForKind.THREAD_BINDING:
        return str(node.thread_binding.thread_tag), node.extent
    if isinstance(node, tirx.AttrStmt) and node.attr_key == "thread_extent":
        return str(node.node.thread_tag), node.value
    return None


def _children(node: Any) -> list[Any]:
    if isinstance(node, tirx.SeqStmt):
        return list(node.seq)
    if isinstance(node, tirx.IfThenElse):
        return [c for c in (node.then_case, node.else_case) if c is not None]
    if isinstance(node, s_tir.SBlockRealize):
        return [node.block]
    return [c for c in (getattr(node, "body", None), getattr(node, "init", None)) if isinstance(c, tirx.Stmt)]


def _thread_extents(stmt: tirx.Stmt) -> list[dict[str, int]]:
    """Return one {thread tag: extent} per kernel launch in `stmt`: each outermost thread-bound
    loop (or `thread_extent` attribute) with the bindings nested in it is one launch."""
    def tags_within(node: Any, tags: dict[str, int]) -> dict[str, int]:
        found = _thread_binding(node)
        if found is not None and isinstance(found[1], tirx.IntImm):
            tags[found[0]] = max(tags.get(found[0], 1), int(found[1]))
        for child in _children(node):
            tags_within(child, tags)
        return tags

    def launches(node: Any) -> list[dict[str, int]]:
        if _thread_binding(node) is not None:
            return [tags_within(node, {})]
        return [launch for child in _children(node) for launch in launches(child)]

    return launches(stmt)


def _tensor_infos(sinfo: Any) -> list[Any]:
    if isinstance(sinfo, relax.TupleType):
        return [t for field in sinfo.fields for t in _tensor_infos(field)]
    return [sinfo] if isinstance(sinfo, relax.TensorType) else []


def _call_sites(mod: tvm.IRModule) -> dict[str, dict[str, Any]]:
    """Per PrimFunc called with call_tir: how often, the bytes of its arguments and results per
    call (static shapes), and their dtypes."""
    call_tir = tvm.ir.Op.get("relax.call_tir")
    sites: dict[str, dict[str, Any]] = {}

    def visit(expr: Any) -> None:
        if not (isinstance(expr, relax.Call) and expr.op.same_as(call_tir)):
            return
        infos = [t for arg in expr.args[1].fields for t in _tensor_infos(arg.ty)]
        infos += _tensor_infos(expr.ty_args[0])
        nbytes = 0
        for info in infos:
            dims = [int(d) for d in info.shape.values] if info.shape is not None else []
            nbytes += int(np.prod(dims, dtype=np.int64)) * max(1, tvm.DataType(info.dtype).bits // 8)
        site = sites.setdefault(expr.args[0].name_hint, {"calls": 0, "bytes": nbytes, "dtypes": set()})
        site["calls"] += 1
        site["dtypes"].update(str(info.dtype) for info in infos)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sites


def _math_kind(dtypes: set[str]) -> str:
    """The math class of a kernel, from the dtypes it reads and writes: the narrowest float, or
    int8 for a purely integer kernel."""
    if "float16" in dtypes:
        return "fp16"
    if "bfloat16" in dtypes:
        return "bf16"
    if dtypes & {"int8", "uint8"} and not any(d.startswith("float") for d in dtypes):
        return "int8"
    return "fp32"


def _kernel_math(rule: str, func: tirx.PrimFunc, scheduled: tirx.PrimFunc, dtypes: set[str]) -> str:
    """The math class of a scheduled kernel: `_math_kind` of its arguments, or of its
    intermediate buffers when it computes in float16 inside (weight-only kernels), "int8_dp4a"
    for mlpc's dp4a kernels, "<kind>_tensor" when the schedule uses tensor cores (wmma)."""
    if rule == "dp4a":
        return "int8_dp4a"
    inner = set(re.findall(r'sblock_alloc_buffer\(\(.*?\)\), "(\w+)"', func.script()))
    kind = _math_kind(dtypes | inner)
    if "wmma." in scheduled.script():
        return {"fp16": "fp16_tensor", "bf16": "bf16_tensor", "int8": "int8_tensor"}.get(kind, kind)
    return kind


def fuse_for_gpu(mod: tvm.IRModule, target: tvm.target.Target) -> tvm.IRModule:
    """Legalize and fuse Relax `mod` into PrimFunc kernels as the CUDA build does (a new module)."""
    with target:
        return tvm.transform.Sequential([
            relax.transform.LegalizeOps(), relax.transform.AnnotateTIROpPattern(),
            relax.transform.FoldConstant(), relax.transform.FuseOps(), relax.transform.FuseTIR(),
        ])(mod.clone())


def schedule_for_gpu(mod: tvm.IRModule, target: tvm.target.Target, tuning_dbs: list[Any] = ()
                     ) -> tuple[tvm.IRModule, list[dict[str, Any]]]:
    """Legalize and fuse `mod`, then schedule every PrimFunc: mlpc's dp4a rule, a tuned schedule
    from `tuning_dbs` (`tuning_db.TuningDatabase`s, rule "MetaSchedule"), dlight's GPU rules.

    Returns the scheduled module (a new one: `mod` is not modified) and, per PrimFunc, a dict
    {function, rule, launches: [{grid, block}], calls, flops, bytes, math}: FLOPs and bytes (of
    its arguments and results) per call. Raises LoweringError naming
    every PrimFunc that no rule could give thread bindings.
    """
    from tvm.s_tir.analysis import estimate_tir_flops

    mod = fuse_for_gpu(mod, target)
    rules = _gpu_rules(tuning_dbs)
    sites = _call_sites(mod)
    plans, unscheduled = [], []
    for gvar, func in list(mod.functions_items()):
        if not isinstance(func, tirx.PrimFunc):
            continue
        name = gvar.name_hint
        applied = _apply_first_rule(func, target, rules)
        launches = _thread_extents(applied[1].body) if applied else []
        if not launches:
            unscheduled.append(name)
            continue
        mod[gvar] = applied[1]
        site = sites.get(name, {"calls": 0, "bytes": 0, "dtypes": set()})
        plans.append({
            "function": name,
            "rule": applied[0],
            "launches": [_launch_shape(t) for t in launches],
            "calls": site["calls"],
            "flops": float(estimate_tir_flops(tvm.IRModule({"main": func}))),
            "bytes": site["bytes"],
            "math": _kernel_math(applied[0], func, applied[1], site["dtypes"]),
        })
    if unscheduled:
        raise LoweringError(
            f"no GPU schedule for {len(unscheduled)} kernel(s) ({', '.join(unscheduled)}): none of dlight's "
            "rules bound them to threads. Report the model; compile for a CPU target meanwhile"
        )
    logger.info("scheduled %d kernels: %s", len(plans),
                ", ".join(f"{r}×{sum(p['rule'] == r for p in plans)}" for r in sorted({p['rule'] for p in plans})))
    return mod, plans


def _launch_shape(tags: dict[str, int]) -> dict[str, list[int]]:
    return {"grid": [tags.get(f"blockIdx.{a}", 1) for a in "xyz"],
            "block": [tags.get(f"threadIdx.{a}", 1) for a in "xyz"]}


# --------------------------------------------------------------------------------------------
# 3./4. device code and the artifact


def _lowering_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """TVM's CUDA Relax pipeline after scheduling (dataflow lowering, memory planning, VM)."""
    from tvm.relax.backend.cuda import pipeline as cuda_pipeline

    return tvm.transform.Sequential(
        cuda_pipeline.dataflow_lower_passes(target) + cuda_pipeline.finalize_passes(target)
    )


@contextlib.contextmanager
def _device_compiler(arch: str, workdir: Path) -> Iterator[list[DeviceCode]]:
    """While active, TVM's CUDA codegen compiles its CUDA C with `compile_device_code`."""
    import tvm.support.nvcc as tvm_nvcc
    import tvm_ffi

    results: list[DeviceCode] = []
    errors: list[BaseException] = []

    def compile_cb(code: str) -> bytearray:
        try:
            results.append(compile_device_code(code, arch, workdir))
        except BaseException as e:
            errors.append(e)
            raise
        return bytearray(results[-1].fatbin)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_cb, override=True)
    try:
        yield results
    except Exception:
        if errors:
            raise errors[0] from None
        raise
    finally:
        tvm_ffi.register_global_func("tvm_callback_cuda_compile", tvm_nvcc.tvm_callback_cuda_compile, override=True)


def _kernel_table(plans: list[dict[str, Any]], device: DeviceCode) -> list[dict[str, Any]]:
    """One row per device kernel: its PrimFunc's plan joined with ptxas' resources.

    TVM names the kernels of PrimFunc F `F_kernel`, `F_kernel_1`, ... in launch order; the
    PrimFunc's FLOPs and bytes are split over its launches in proportion to their threads.
    """
    rows = []
    for plan in plans:
        names = [plan["function"] + "_kernel" + (f"_{i}" if i else "") for i in range(len(plan["launches"]))]
        threads = [int(np.prod(s["grid"]) * np.prod(s["block"])) for s in plan["launches"]]
        for name, launch, n in zip(names, plan["launches"], threads):
            res = device.resources.get(name)
            if res is None:
                raise LoweringError(f"kernel {name} of {plan['function']} is missing from ptxas' report")
            share = n / sum(threads)
            rows.append({"name": name, "function": plan["function"], "rule": plan["rule"], **launch,
                         "calls": plan["calls"],
                         "flops": plan["flops"] * share, "bytes": int(plan["bytes"] * share),
                         "math": plan["math"], **res.to_json()})
    extra = set(device.resources) - {r["name"] for r in rows}
    if extra:
        raise LoweringError(f"device code has kernels no PrimFunc accounts for: {', '.join(sorted(extra))}")
    return rows


def build_cuda(module: tvm.IRModule, target: Target, out_dir: Path, dtype: str = "float32",
               tuning_db: str | Path | None = None) -> dict[str, Any]:
    """Build Relax `module` for CUDA `target` computing in `dtype`; write model.so (host code with
    the fatbin embedded), device.cu/.ptx/.cubin and kernels.json into `out_dir`. Kernels that
    `tuning_db` (a `mlpc tune` database directory) or the user's tuning cache for `target` hold a
    schedule for take it instead of dlight's.

    Returns the manifest's "backend" section (with "tuned_kernels"). Raises LoweringError (scheduling, TVM or CUDA
    toolkit failures) or ExportError (writing files).
    """
    start = time.perf_counter()
    dtype = normalize_dtype(dtype)
    arch = str(target.tvm["arch"])
    ensure_cuda_runtime()
    tvm_target = target.tvm_target()
    from mlpc.backends.tvm.tuning_db import databases_for_compile

    dbs = databases_for_compile(tvm_target, tuning_db)
    try:
        mod = convert_precision(module, dtype)
        scheduled, plans = schedule_for_gpu(mod, tvm_target, dbs)
    except (LoweringError, TargetError):
        raise
    except Exception as e:
        raise LoweringError(f"GPU scheduling for target {target.name!r} failed: {e}") from e
    with tempfile.TemporaryDirectory(prefix="mlpc-cuda-") as tmp:
        try:
            with _device_compiler(arch, Path(tmp)) as device_codes, tvm_target:
                executable = tvm.compile(scheduled, target=tvm_target, relax_pipeline=_lowering_pipeline(tvm_target))
        except LoweringError:
            raise
        except Exception as e:
            raise LoweringError(f"TVM build for target {target.name!r} failed: {e}") from e
    if len(device_codes) != 1:
        raise LoweringError(f"expected one CUDA device module, TVM compiled {len(device_codes)}")
    device = device_codes[0]
    kernels = _kernel_table(plans, device)
    _write_files(executable, target, out_dir, device, kernels)
    seconds = time.perf_counter() - start
    logger.info("built %s for %s (%s, %d kernels) in %.2fs", LIBRARY, target.name, dtype, len(kernels), seconds)
    return {"name": "tvm", "library": LIBRARY, "tvm_version": tvm.__version__, "build_seconds": round(seconds, 3),
            "device": "cuda", "arch": arch, "dtype": dtype, "kernels": KERNELS, "device_files": DEVICE_FILES,
            "tuned_kernels": [p["function"] for p in plans if p["rule"] == TUNED_RULE]}


def _write_files(executable: Any, target: Target, out_dir: Path, device: DeviceCode,
                 kernels: list[dict[str, Any]]) -> None:
    try:
        (out_dir / DEVICE_FILES["source"]).write_text(device.source)
        (out_dir / DEVICE_FILES["ptx"]).write_bytes(device.ptx)
        (out_dir / DEVICE_FILES["cubin"]).write_bytes(device.cubin)
        (out_dir / KERNELS).write_text(json.dumps({"arch": device.arch, "kernels": kernels}, indent=1) + "\n")
        executable.export_library(str(out_dir / LIBRARY), **_export_options(target))
    except (OSError, RuntimeError) as e:
        raise ExportError(f"writing the CUDA build into {out_dir} failed: {e}") from e


def _export_options(target: Target) -> dict[str, Any]:
    """Cross-compile the host side when the target's host CPU is not this machine's (Jetson)."""
    import platform
    import shutil

    if target.arch == platform.machine():
        return {}
    from tvm.support import cc

    compiler = f"{target.arch}-linux-gnu-g++"
    if shutil.which(compiler) is None:
        raise ExportError(f"target {target.name!r} has an {target.arch} host: install {compiler} "
                          f"(Debian: g++-{target.arch.replace('_', '-')}-linux-gnu) to link its library")
    return {"fcompile": cc.cross_compiler(compiler)}
