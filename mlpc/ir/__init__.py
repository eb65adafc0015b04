"""mlpc's additions to the onnx-ir graph IR (onnx_ir is the IR itself; mlpc has no graph class):

- `int_types`: INT2…INT8, UINT2…UINT8, BIPOLAR, TERNARY;
- `quant_params`: QuantParams carried on values (`set_quant`/`get_quant`), dyadic requantization;
- `ops`: the `mlpc` op domain (schemas, inference, NumPy kernels);
- `evaluator`: the reference evaluator (onnx.reference + mlpc + QONNX ops);
- `verifier`: `verify(model)`; `networkx_view`: `to_networkx(graph)`.

    >>> from mlpc.ir import QuantParams, ReferenceEvaluator, verify
"""

from __future__ import annotations

from mlpc.ir.evaluator import ReferenceEvaluator
from mlpc.ir.int_types import (
    BIPOLAR,
    INT2,
    INT3,
    INT4,
    INT5,
    INT6,
    INT7,
    INT8,
    INT_TYPES,
    TERNARY,
    UINT2,
    UINT3,
    UINT4,
    UINT5,
    UINT6,
    UINT7,
    UINT8,
    IntType,
    int_type,
    int_type_for,
)
from mlpc.ir.networkx_view import to_networkx
from mlpc.ir.ops import MLPC_DOMAIN, MLPC_OPSET_VERSION, OpDef, TensorSig, get_op, infer, list_ops, mlpc_op
from mlpc.ir.quant_params import QUANT_METADATA_KEY, QuantParams, dyadic, get_quant, requantize, set_quant
from mlpc.ir.verifier import find_cycle, verify

__all__ = [
    "BIPOLAR",
    "INT2",
    "INT3",
    "INT4",
    "INT5",
    "INT6",
    "INT7",
    "INT8",
    "INT_TYPES",
    "MLPC_DOMAIN",
    "MLPC_OPSET_VERSION",
    "QUANT_METADATA_KEY",
    "TERNARY",
    "UINT2",
    "UINT3",
    "UINT4",
    "UINT5",
    "UINT6",
    "UINT7",
    "UINT8",
    "IntType",
    "OpDef",
    "QuantParams",
    "ReferenceEvaluator",
    "TensorSig",
    "dyadic",
    "find_cycle",
    "get_op",
    "get_quant",
    "infer",
    "int_type",
    "int_type_for",
    "list_ops",
    "mlpc_op",
    "requantize",
    "set_quant",
    "to_networkx",
    "verify",
]
