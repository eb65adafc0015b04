"""Build a Relax IRModule for a Target and run the result on the host CPU."""
from __future__ import annotations

import logging

import numpy as np
import tvm
from tvm import relax

from mlpc.errors import LoweringError
from mlpc.targets import Target

logger = logging.getLogger(__name__)


def build(mod: tvm.IRModule, target: Target) -> tvm.runtime.Executable:
    """Compile `mod` (from `lower_graph`) for `target` with TVM's default Relax pipeline.

    Returns the Relax executable (load it with `relax.VirtualMachine`); TVM failures are raised
    as LoweringError naming the target.
    """
    try:
        tvm_target = target.tvm_target()
        with tvm_target:
            return tvm.compile(mod, target=tvm_target)
    except Exception as e:
        raise LoweringError(f"TVM build for target {target.name!r} failed: {e}") from e


def run(executable: tvm.runtime.Executable, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Run `executable`'s "main" on tvm.cpu() with `inputs` (in order); return the outputs as NumPy arrays."""
    vm = relax.VirtualMachine(executable, tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(np.ascontiguousarray(x)) for x in inputs])
    items = list(result) if not hasattr(result, "numpy") else [result]
    return [item.numpy() for item in items]
