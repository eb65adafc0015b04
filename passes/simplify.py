"""simplify: common subexpressions, identities, and cancelling casts/transposes/reshapes.

Built from onnx-ir's CSE and identity elimination and onnxscript's basic rewrite rules
(Transpose∘Transpose, Reshape∘Reshape, Cast∘Cast, no-op Cast/Expand/Transpose, Unsqueeze
chains, Dropout at inference, successive Relu/Clip).
"""
from __future__ import annotations

import logging

import onnx_ir as ir
import onnx_ir.passes.common as common
from onnxscript.rewriter.rules import common as rules
from onnxscript.rewriter.rules.common._basic_rules import basic_optimization_rules

from mlpc.pass_infra import Pass, PassContext, PassResult
from mlpc.rewrite import RewritePass

logger = logging.getLogger(__name__)

RULES = [
    # SlicesSplit (Slice pairs → Split) scans every node's consumers quadratically: 60 s on a
    # 10^4-node graph (benchmarks/passes.py), and it only helps onnxruntime, not mlpc's backends.
    *(rule for rule in basic_optimization_rules() if rule.name != "SlicesSplit"),
    rules.dropout_inference_rule,
    rules.dropout_zero_rule,
    rules.successive_relu_rule,
    rules.successive_clip_rule,
    rules.successive_clip_relu_rule,
    rules.successive_relu_clip_rule,
]


class _IdentityEliminationPass(common.IdentityEliminationPass):
    """onnx-ir's identity elimination, except that `b = Identity(a)` stays when `a` and `b` are
    both graph outputs: onnx-ir renames `a` to `b` there, so the graph loses the output `a` and
    returns `b` twice (a model with outputs named after every value then had one of them missing).
    """

    def _try_eliminate_identity_node(self, node: ir.Node) -> bool:
        if node.op_type == "Identity" and node.domain == "" and len(node.inputs) == 1 and len(node.outputs) == 1:
            x, y = node.inputs[0], node.outputs[0]
            if x is not None and x.is_graph_output() and y.is_graph_output():
                return False
        return super()._try_eliminate_identity_node(node)


class SimplifyPass(Pass):
    """Remove redundant computation without changing results."""

    name = "simplify"
    description = "CSE, identity removal, cancelling transposes/reshapes/casts"
    opt_level = 1

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        model = ir.Model(graph, ir_version=10)
        rules = RewritePass(self.name, RULES, commute=False)
        modified = False
        # A rewrite that removes the producer of a graph output leaves an Identity to keep the
        # output's name, which identity elimination then folds: iterate until nothing changes.
        for _ in range(10):
            changed = common.CommonSubexpressionEliminationPass()(model).modified
            changed |= rules(model.graph, ctx).modified
            changed |= _IdentityEliminationPass()(model).modified
            changed |= common.RemoveUnusedNodesPass()(model).modified
            if not changed:
                break
            modified = True
        return PassResult(model.graph, modified)
