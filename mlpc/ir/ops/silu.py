"""mlpc::SiLU — y = x · sigmoid(x) (also called swish), one fused kernel in the backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx_ir as ir
from onnx.reference.op_run import OpRun

from mlpc.ir.ops._registry import TensorSig, check_dtype, fail, formal, mlpc_op, mlpc_schema

FLOAT_TYPES = [ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.BFLOAT16, ir.DataType.DOUBLE]

SCHEMA = mlpc_schema(
    "SiLU",
    __doc__ or "",
    inputs=[formal("x", "T", "input")],
    outputs=[formal("y", "T", "x * sigmoid(x)")],
    type_constraints=[("T", ["tensor(float)", "tensor(float16)", "tensor(bfloat16)", "tensor(double)"],
                       "float types")],
)


def infer_silu(inputs: Sequence[TensorSig | None], attrs: dict[str, Any], where: str) -> list[TensorSig]:
    """Output = input's shape and type."""
    if len(inputs) != 1 or inputs[0] is None:
        raise fail(where, "needs exactly one input")
    check_dtype(where, "input x", inputs[0], FLOAT_TYPES)
    return [inputs[0]]


@mlpc_op(schema=SCHEMA, infer=infer_silu)
class SiLU(OpRun):
    """NumPy reference kernel of mlpc::SiLU."""

    def _run(self, x):  # type: ignore[override]
        return ((x / (1.0 + np.exp(-x))).astype(x.dtype),)
