"""Build a Relax IRModule for a Target and run the result on the host CPU."""
from __future__ import annotations

import logging

import numpy as np
import tvm
from tvm import relax

from mlpc.backends.tvm.cpu_schedule import cpu_pipeline, lanes_for, schedule_primfunc
from mlpc.errors import LoweringError
from mlpc.targets import Target

logger = logging.getLogger(__name__)


def schedule_flags(target: Target) -> tuple[int, bool, bool]:
    """What mlpc's default CPU schedule is told about `target`: (vector bits, avx2, dotprod) —
    AVX2 for the vpmaddwd integer kernels, the ARM dot product for the sdot ones.

    >>> from mlpc.targets import get_target
    >>> schedule_flags(get_target("x86/avx2"))
    (256, True, False)
    """
    vector_bits = int(target.capabilities.get("vector_bits", 128))
    avx2 = target.kind == "x86" and vector_bits >= 256
    dotprod = target.capabilities.get("int8_dot") == "sdot"
    return vector_bits, avx2, dotprod


def default_kernel(func: tvm.tirx.PrimFunc, target: Target) -> tvm.tirx.PrimFunc:
    """Kernel `func` as a CPU build for `target` schedules it without a tuning database: mlpc's
    default schedule, or TVM's loops when that rule does not fit (as `default_schedule_pass` does)."""
    vector_bits, avx2, dotprod = schedule_flags(target)
    try:
        return schedule_primfunc(func, lanes_for(vector_bits), avx2, dotprod)
    except Exception as e:
        logger.debug("default schedule does not fit %s: %s", func.attrs.get("global_symbol") if func.attrs else "",
                     str(e).splitlines()[0])
        return func


def build(mod: tvm.IRModule, target: Target, schedules: bool = True,
          tuned: tvm.transform.Pass | None = None) -> tvm.runtime.Executable:
    """Compile `mod` (from `lower_graph`) for `target`: TVM's Relax pipeline with, for CPUs,
    mlpc's default schedules (`schedules=False` leaves TVM's naive loops) after `tuned`, a pass
    applying tuning databases (`tuning_db.apply_databases_pass`), if given.

    Returns the Relax executable (load it with `relax.VirtualMachine`); TVM failures are raised
    as LoweringError naming the target.
    """
    try:
        tvm_target = target.tvm_target()
        pipeline = "default"
        if schedules and target.kind in ("x86", "arm"):
            vector_bits, avx2, dotprod = schedule_flags(target)
            pipeline = cpu_pipeline(tvm_target, vector_bits, tuned, avx2, dotprod)
        with tvm_target:
            return tvm.compile(mod, target=tvm_target, relax_pipeline=pipeline)
    except Exception as e:
        raise LoweringError(f"TVM build for target {target.name!r} failed: {e}") from e


def run(executable: tvm.runtime.Executable, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run `executable`'s "main" on tvm.cpu() with `inputs` (in order); return the outputs as NumPy arrays."""
    vm = relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(np.asarray(x, order="C")) for x in inputs])
    items = list(result) if not hasattr(result, "numpy") else [result]
    return [item.numpy() for item in items]
