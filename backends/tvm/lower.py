"""Lower an onnx-ir Graph to a Relax IRModule with mlpc's own converters.

    >>> mod = lower_graph(graph, opset=17)          # IRModule with one function "main"
    >>> ex = build(mod, get_target("host")); run(ex, [x])

`main` takes the graph inputs in order and returns a tuple of the graph outputs in order;
initializers become relax constants (weights are constants at build time).
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
import tvm
from tvm import relax

from mlpc.backends.tvm import (  # noqa: F401  (importing registers the converters)
    ops_dequant,
    ops_elementwise,
    ops_integer,
    ops_mlpc,
    ops_nn,
    ops_quant,
    ops_reduce,
    ops_resize,
    ops_tensor,
)
from mlpc.backends.tvm.context import LowerContext, const, node_label, relax_name
from mlpc.backends.tvm.grouping import FUSION_ATTR, has_groups, lower_unit, lowering_units
from mlpc.backends.tvm.registry import lookup
from mlpc.errors import LoweringError, MlpcError, UnsupportedOpError

logger = logging.getLogger(__name__)


# Element types the TVM backend cannot compute with correctly: TVM's float8 casts follow neither
# ONNX's saturation nor its NaN/FNUZ encodings, float4/float6/e8m0 and 2-bit tensors do not build
# or run, and strings have no Relax type. Refused wherever they appear.
_UNSUPPORTED_DTYPES = frozenset({
    ir.DataType.FLOAT8E4M3FN, ir.DataType.FLOAT8E4M3FNUZ, ir.DataType.FLOAT8E5M2,
    ir.DataType.FLOAT8E5M2FNUZ, ir.DataType.FLOAT8E8M0, ir.DataType.FLOAT4E2M1,
    ir.DataType.FLOAT6E2M3, ir.DataType.FLOAT6E3M2, ir.DataType.INT2, ir.DataType.UINT2,
    ir.DataType.STRING, ir.DataType.COMPLEX64, ir.DataType.COMPLEX128,
})
# 4-bit integers are carried in int8/uint8 inside a compiled model (packed weights feeding
# DequantizeLinear); a 4-bit graph input or output, or a Cast to or from 4 bits (which must wrap
# and saturate at 4 bits), is refused.
_SUB_BYTE = frozenset({ir.DataType.INT4, ir.DataType.UINT4})


def _dtype_reason(node: ir.Node) -> str | None:
    for kind, values in (("input", node.inputs), ("output", node.outputs)):
        for v in values:
            if v is None or v.dtype is None:
                continue
            if v.dtype == ir.DataType.FLOAT8E8M0 and node.op_type == "Cast" and kind == "input":
                continue  # decoding e8m0 (a power of two) is exact in TVM; encoding it rounds differently
            if v.dtype in _UNSUPPORTED_DTYPES:
                return f"{kind} {v.name!r} has element type {v.dtype.name}, which the TVM backend does not support"
            if v.dtype in _SUB_BYTE and (v.is_graph_input() or v.is_graph_output()
                                         or node.op_type in ("Cast", "CastLike")):
                where = f"{node.op_type} to or from" if node.op_type in ("Cast", "CastLike") else "a graph input/output of"
                return (f"{where} {v.dtype.name} ({kind} {v.name!r}) is not supported by the TVM backend "
                        "(4-bit values are only carried inside the model, as quantized weights)")
    return None


def _unsupported_reason(node: ir.Node, opset: int) -> str | None:
    conv = lookup(node.domain, node.op_type)
    if conv is None:
        return "no converter"
    why = _dtype_reason(node)
    if why is not None:
        return why
    return conv.check(node, opset) if conv.check is not None else None


def unsupported_nodes(graph: ir.Graph, opset: int) -> list[ir.Node]:
    """Return every node of `graph` that cannot be lowered: its (domain, op_type) has no converter,
    or its converter declares its attributes/inputs unsupported (e.g. Resize mode "cubic")."""
    return [node for node in graph if _unsupported_reason(node, opset) is not None]


def _raise_unsupported(graph: ir.Graph, opset: int) -> None:
    problems = [(n, _unsupported_reason(n, opset)) for n in graph]
    problems = [(n, why) for n, why in problems if why is not None]
    if problems:
        lines = "; ".join(f"{node_label(n)}: {why}" for n, why in problems)
        raise UnsupportedOpError(
            f"{len(problems)} node(s) cannot be lowered to TVM: {lines}. Replace these ops "
            "(e.g. with a custom pass) or run them outside the compiled model"
        )


def _input_exprs(ctx: LowerContext, env: dict[ir.Value, relax.Expr], node: ir.Node) -> list[relax.Expr | None]:
    exprs: list[relax.Expr | None] = []
    for i, value in enumerate(node.inputs):
        if value is None:  # an omitted optional input
            exprs.append(None)
            continue
        if value not in env:
            arr = ctx.const_of(value)
            if arr is None:
                raise LoweringError(
                    f"node {node_label(node)}: input {i} ({value.name!r}) is neither computed, "
                    "a graph input nor an initializer; the graph is not in topological order"
                )
            env[value] = _const_or_none(arr)
        exprs.append(env[value])
    return exprs


def _const_or_none(arr: np.ndarray) -> relax.Expr | None:
    # Sub-byte (ml_dtypes int4/uint4) constants have no relax constant form; converters that
    # accept them read the NumPy value through ctx.const_input instead.
    if arr.dtype.kind not in "biufc":
        return None
    return const(arr)


def lower_graph(graph: ir.Graph, opset: int, groups: bool = True, device: str = "cpu",
                float_dtype: str = "float32", int8_dot: str | None = None) -> tvm.IRModule:
    """Return a Relax IRModule whose function "main" computes `graph` (ONNX default domain at `opset`).

    Parameters are graph.inputs in order (named after the sanitized value names); the result is
    always a relax Tuple of graph.outputs. When the graph carries fusion groups (the `fuse` pass),
    each group and each other computing node becomes one primitive function, i.e. one kernel
    (see grouping.py), and the module is marked so that TVM's FuseOps does not regroup them;
    `groups=False` ignores the groups (CUDA builds: TVM's ToMixedPrecision and FuseOps work on
    the plain module there). `device` ("cpu" or "cuda") picks the layout of the integer
    kernels: the int16-pair layout for CPUs (`int_pairs`), the dp4a layout for CUDA (`int_cuda`);
    `float_dtype` is the precision weight-only kernels compute in (float16 for fp16 CUDA builds).
    `int8_dot` is the target's int8 dot-product instruction ("sdot", "pmaddubsw": CPU integer kernels in the
    int8-quad layout, see int_pairs.py).
    Raises UnsupportedOpError listing every unsupported node,
    LoweringError naming the node for any other failure.
    """
    _raise_unsupported(graph, opset)
    bb = relax.BlockBuilder()
    ctx = LowerContext(bb, opset, device, float_dtype, int8_dot)
    env: dict[ir.Value, relax.Expr] = {}
    params = []
    for value in graph.inputs:
        var = relax.Var(relax_name(value.name), relax.TensorType(ctx.shape(value), ctx.dtype(value)))
        params.append(var)
        env[value] = var
    grouped = groups and has_groups(graph)
    graph_outputs = set(graph.outputs)
    with bb.function("main", params):
        with bb.dataflow():
            if grouped:
                for unit in lowering_units(graph):
                    if not lower_unit(ctx, env, unit, graph_outputs, _lower_node):
                        for node in unit.nodes:
                            _lower_node(ctx, env, node)
            else:
                for node in graph:
                    _lower_node(ctx, env, node)
            outs = []
            for value in graph.outputs:
                if value not in env:
                    arr = ctx.const_of(value)
                    if arr is None:
                        raise LoweringError(f"graph output {value.name!r} is never computed")
                    env[value] = const(arr)
                outs.append(env[value])
            result = bb.emit_output(relax.Tuple(outs))
        bb.emit_func_output(result)
    mod = bb.get()
    if grouped:
        mod = mod.with_attr(FUSION_ATTR, "groups")
    logger.debug("lowered %d nodes to Relax", len(graph))
    return mod


def _lower_node(ctx: LowerContext, env: dict[ir.Value, relax.Expr], node: ir.Node) -> None:
    conv = lookup(node.domain, node.op_type)
    assert conv is not None  # checked by _raise_unsupported
    inputs = _input_exprs(ctx, env, node)
    try:
        outs = conv.fn(ctx, node, inputs)
    except MlpcError:
        raise
    except Exception as e:  # TVM raises plain Python/TVMError types for bad op arguments
        raise LoweringError(f"lowering node {node_label(node)} failed: {e}") from e
    live = [v for v in node.outputs if v is not None and v.name]
    if len(outs) < len(live):
        raise LoweringError(f"converter for {node_label(node)} produced {len(outs)} outputs, need {len(live)}")
    for value, expr in zip(node.outputs, outs):
        if value is None or expr is None:
            continue
        if not isinstance(expr, relax.Var):
            expr = ctx.emit(expr)
        env[value] = expr
