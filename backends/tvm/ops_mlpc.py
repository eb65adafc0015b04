"""Converters for the float ops of the `mlpc` domain (the integer ones live in ops_integer.py)."""
from __future__ import annotations

from tvm import relax

from mlpc.backends.tvm.registry import converter
from mlpc.ir.ops import MLPC_DOMAIN


@converter("SiLU", domain=MLPC_DOMAIN)
def _silu(ctx, node, inputs):
    x = inputs[0]
    return [relax.op.multiply(x, relax.op.sigmoid(x))]
