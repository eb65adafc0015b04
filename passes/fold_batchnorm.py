"""fold-batchnorm: BatchNormalization after Conv, ConvTranspose or Gemm folded into its weights."""
from __future__ import annotations

from onnxscript.rewriter.rules import common as rules

from mlpc.rewrite import RewritePass

RULES = [
    rules.fuse_batchnorm_into_conv_rule,
    rules.fuse_batchnorm_into_conv_transpose_rule,
    rules.fuse_batchnorm_into_gemm_rule,
]


class FoldBatchNormPass(RewritePass):
    """Fold inference-mode BatchNormalization into the preceding Conv/ConvTranspose/Gemm."""

    name = "fold-batchnorm"
    description = "BatchNormalization folded into the weights of the Conv/ConvTranspose/Gemm before it"
    opt_level = 1

    def __init__(self) -> None:
        super().__init__(self.name, RULES, commute=False, description=self.description)
