"""The TVM backend's entry point: an IR Model → a compiled library in an artifact directory."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import onnx_ir as ir

from mlpc.errors import ExportError, LoweringError, TargetError, UnsupportedOpError
from mlpc.frontend.onnx_loader import MAX_TENSOR_BYTES, tensor_bytes
from mlpc.targets import Target

logger = logging.getLogger(__name__)

LIBRARY = "model.so"


def default_opset(model: ir.Model) -> int:
    """Return the model's default-domain ONNX opset version."""
    opsets = dict(model.opset_imports)
    opsets.update(model.graph.opset_imports)
    return int(opsets.get("", opsets.get("ai.onnx", 13)))


def check_static_shapes(graph: ir.Graph) -> None:
    """Raise LoweringError listing values whose shape or dtype is not static after canonicalization,
    or whose size is beyond any machine (checked before anything is allocated)."""
    bad = []
    for node in graph:
        for value in node.outputs:
            shape = value.shape
            if value.dtype is None or shape is None or not all(isinstance(d, int) for d in shape.dims):
                bad.append(f"{value.name!r} (output of node {node.name!r}, {node.op_type}): shape {shape}")
            elif tensor_bytes(shape.dims, value.dtype.value) > MAX_TENSOR_BYTES:
                raise LoweringError(
                    f"value {value.name!r} (output of node {node.name!r}, {node.op_type}) would take "
                    f"{tensor_bytes(shape.dims, value.dtype.value) >> 30} GiB; check the input shapes"
                )
    if bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise LoweringError(
            f"shapes must be static to compile, but {len(bad)} values are not: {shown}. "
            "Give every input a fixed shape (--input-shape NAME=DIMS)"
        )


def compile_graph(
    model: ir.Model, target: Target, out_dir: Path, schedules: bool = True, dtype: str = "float32",
    tuning_db: str | Path | None = None,
) -> dict[str, Any]:
    """Lower `model` to Relax, build it for `target` and write the library into `out_dir`.

    `schedules=False` skips mlpc's default CPU schedules; `dtype` is the compute precision
    (float32; float16/bfloat16 for CUDA targets). Builds apply tuned schedules from `tuning_db`
    (a `mlpc tune` database directory) and the user's tuning cache for the target first.
    Returns the manifest's "backend" section (with "tuned_kernels", and for CPU builds
    "kernel_macs": the multiply-accumulates of each conv/matmul kernel by name). Raises UnsupportedOpError listing every node
    that cannot be lowered, LoweringError for build failures, ExportError if writing fails.
    """
    from mlpc.backends.tvm.build import build
    from mlpc.backends.tvm.cross import export_options
    from mlpc.backends.tvm.lower import lower_graph, unsupported_nodes

    graph = model.graph
    opset = default_opset(model)
    missing = unsupported_nodes(graph, opset)
    if missing:
        listed = ", ".join(f"{n.name or '<unnamed>'} ({_op_name(n)})" for n in missing)
        ops = sorted({_op_name(n) for n in missing})
        raise UnsupportedOpError(
            f"{len(missing)} node(s) use ops mlpc cannot compile ({', '.join(ops)}): {listed}"
        )
    check_static_shapes(graph)
    start = time.perf_counter()
    cuda = target.kind == "cuda"
    float_dtype = "float32"
    if cuda:
        from mlpc.backends.tvm.cuda import normalize_dtype

        float_dtype = normalize_dtype(dtype)
    module = lower_graph(graph, opset, groups=not cuda, device="cuda" if cuda else "cpu", float_dtype=float_dtype,
                         int8_dot=target.capabilities.get("int8_dot"))
    if target.kind == "cuda":
        from mlpc.backends.tvm.cuda import build_cuda

        return build_cuda(module, target, out_dir, dtype, tuning_db=tuning_db)
    if dtype not in ("float32", "fp32"):
        raise TargetError(f"--dtype {dtype} needs a CUDA target; {target.name!r} computes in float32")
    tuned: list[str] = []
    apply_tuned = _tuning_pass(target, tuning_db, tuned) if schedules else None
    executable = build(module, target, schedules=schedules, tuned=apply_tuned)
    link_options = export_options(target)
    try:
        executable.export_library(str(out_dir / LIBRARY), **link_options)
    except Exception as e:
        raise ExportError(f"writing {out_dir / LIBRARY} failed: {e}") from e
    seconds = time.perf_counter() - start
    import tvm

    logger.info("built %s for %s in %.2fs", LIBRARY, target.name, seconds)
    return {"name": "tvm", "library": LIBRARY, "tvm_version": tvm.__version__, "build_seconds": round(seconds, 3),
            "default_schedules": schedules, "tuned_kernels": tuned, "kernel_macs": kernel_macs(graph)}


def kernel_macs(graph: ir.Graph) -> dict[str, int]:
    """Multiply-accumulates per CPU kernel of `graph` (a lowering unit — fusion group or lone node —
    is one kernel, named as the build names it), for kernels with a conv or matmul."""
    from mlpc.analysis import node_macs
    from mlpc.backends.tvm.grouping import lowering_units

    macs = {unit.name: sum(node_macs(n) for n in unit.nodes) for unit in lowering_units(graph)}
    return {name: total for name, total in macs.items() if total}


def _tuning_pass(target: Target, tuning_db: str | Path | None, tuned: list[str]) -> Any:
    """The pass applying `tuning_db` and the user cache to a CPU build (None when there are none)."""
    from mlpc.backends.tvm.tuning_db import apply_databases_pass, databases_for_compile

    tvm_target = target.tvm_target()
    dbs = databases_for_compile(tvm_target, tuning_db)
    return apply_databases_pass(dbs, tvm_target, tuned) if dbs else None


def _op_name(node: ir.Node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}::{node.op_type}"
