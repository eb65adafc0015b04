"""The `mlpc` op domain: integer and fused ops with an onnx schema, shape/dtype inference
and a NumPy reference kernel each. Importing this package registers them with onnx.

    >>> from mlpc.ir.ops import get_op, list_ops
    >>> list_ops()
    ['Attention', 'ConvNHWC', 'DequantMatMul', 'IntegerAdd', 'IntegerConv', 'IntegerMatMul', 'Requantize', 'SiLU']
    >>> get_op("Requantize").infer(node)      # [(shape, dtype)] of the node's outputs
"""

from __future__ import annotations

from mlpc.ir.ops import attention, conv_nhwc, dequant_matmul, integer_add, integer_conv, integer_matmul, requantize, silu  # noqa: F401  (registers the ops)
from mlpc.ir.ops._registry import (
    MLPC_DOMAIN,
    MLPC_OPSET_VERSION,
    OpDef,
    TensorSig,
    describe_node,
    get_op,
    infer,
    kernels,
    list_ops,
    mlpc_op,
)

__all__ = [
    "MLPC_DOMAIN",
    "MLPC_OPSET_VERSION",
    "OpDef",
    "TensorSig",
    "describe_node",
    "get_op",
    "infer",
    "kernels",
    "list_ops",
    "mlpc_op",
]
