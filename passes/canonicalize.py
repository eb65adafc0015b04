"""Canonicalization: static shapes everywhere, constants folded, dead code gone.

After this pass every value has a static shape and dtype, shape computations (Shape → Gather →
Concat → Reshape, as the legacy torch exporter emits) are folded to constants, Constant nodes
are initializers, and no node is unused — the form every later pass and backend relies on.
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
import onnx_ir.passes.common as common
import onnxscript.optimizer

from mlpc.ir.qonnx_ops import QONNX_DOMAINS
from mlpc.pass_infra import Pass, PassContext, PassResult

logger = logging.getLogger(__name__)

# Fold weight-sized constant subgraphs too (e.g. a Transpose of a weight), not only small shapes.
_FOLD_SIZE_LIMIT = 1 << 24
# onnxscript never folds ConstantOfShape (to keep models small); small ones feed shape
# computations (e.g. the pad amounts the legacy exporter builds), so fold those.
_SMALL_CONSTANT_OF_SHAPE = 1 << 12
# QONNX quantizers are element-wise: the output has the input's shape and dtype.
_QONNX_ELEMENTWISE = {"Quant", "IntQuant", "BipolarQuant", "Trunc"}


def _infer_qonnx_shapes(graph: ir.Graph) -> bool:
    """Give QONNX quantizer outputs their input's shape and dtype where ONNX shape inference,
    which does not know these ops, left them unknown. Returns whether any value changed."""
    changed = False
    for node in graph:
        if node.domain not in QONNX_DOMAINS or node.op_type not in _QONNX_ELEMENTWISE:
            continue
        x, y = node.inputs[0], node.outputs[0]
        if x is None or x.shape is None or (y.shape is not None and y.dtype is not None):
            continue
        y.shape = y.shape or ir.Shape(x.shape)
        y.dtype = y.dtype or x.dtype
        changed = True
    return changed


def _infer_shapes(model: ir.Model) -> bool:
    """Run ONNX shape inference, completed through QONNX quantizers (repeated until nothing
    changes, since values downstream of a quantizer become known only after it is typed)."""
    modified = common.ShapeInferencePass()(model).modified
    for _ in range(len(model.graph)):
        if not _infer_qonnx_shapes(model.graph):
            break
        common.ShapeInferencePass()(model)
        modified = True
    return modified


def _cast_like_to_cast(graph: ir.Graph) -> bool:
    """Rewrite CastLike(x, like) with a typed `like` into Cast(x, to=like's dtype), keeping
    `saturate`. onnxscript's folder makes the same rewrite but drops `saturate`, which turned a
    CastLike with saturate=0 into a saturating Cast (wrong float8 results). Returns whether any
    node changed."""
    changed = False
    for node in list(graph):
        if node.op_type != "CastLike" or node.domain not in ("", "ai.onnx") or len(node.inputs) != 2:
            continue
        like = node.inputs[1]
        if like is None or like.dtype is None:
            continue
        attrs = {"to": ir.AttrInt64("to", like.dtype.value)}
        if "saturate" in node.attributes:
            attrs["saturate"] = ir.AttrInt64("saturate", node.attributes.get_int("saturate", 1))
        cast = ir.Node("", "Cast", [node.inputs[0]], attributes=list(attrs.values()), name=node.name,
                       num_outputs=1)
        out, new = node.outputs[0], cast.outputs[0]
        new.shape, new.dtype = out.shape, like.dtype
        graph.insert_before(node, cast)
        ir.convenience.replace_all_uses_with(out, new, replace_graph_outputs=True)
        graph.remove(node, safe=True)
        new.name = out.name
        changed = True
    return changed


def _should_fold(node: ir.Node) -> bool | None:
    if node.op_type == "ConstantOfShape" and node.domain in ("", "ai.onnx"):
        shape = node.inputs[0].const_value if node.inputs and node.inputs[0] is not None else None
        if shape is not None and int(np.prod(shape.numpy())) <= _SMALL_CONSTANT_OF_SHAPE:
            return True
    return None


class CanonicalizePass(Pass):
    """Infer shapes, fold constants (shape computations included) and remove dead code."""

    name = "canonicalize"
    description = "shape inference, constant folding (shape computations too), dead-code removal"
    opt_level = 0

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        model = ir.Model(graph, ir_version=10)
        modified = False
        for step in (
            common.RemoveInitializersFromInputsPass(),
            common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
        ):
            modified |= step(model).modified
        modified |= _infer_shapes(model)
        modified |= _cast_like_to_cast(model.graph)
        folded = onnxscript.optimizer.fold_constants(
            model,
            onnx_shape_inference=True,
            input_size_limit=_FOLD_SIZE_LIMIT,
            output_size_limit=_FOLD_SIZE_LIMIT,
            should_fold=_should_fold,
        )
        modified |= bool(folded.modified)
        for step in (
            common.LiftConstantsToInitializersPass(lift_all_constants=True, size_limit=0),
            common.RemoveUnusedNodesPass(),
        ):
            modified |= step(model).modified
        logger.debug("canonicalize: %d nodes, modified=%s", len(model.graph), modified)
        return PassResult(model.graph, modified)
