"""The IR verifier: checks a graph's invariants and raises IRVerificationError listing every
problem, each naming the node or value at fault. Run after every pass in tests.

Checked: SSA (each value name defined once), inputs defined before use (dangling inputs named),
no cycles (the nodes on the cycle named), every graph output produced, types on graph inputs
and outputs, mlpc-op shapes/types against their inference, QuantParams consistency.

    >>> verify(model)          # returns None or raises IRVerificationError
"""

from __future__ import annotations

import logging

import networkx as nx
import numpy as np
import onnx_ir as ir

from mlpc.errors import IRVerificationError, MlpcError
from mlpc.ir.networkx_view import _graph, to_networkx
from mlpc.ir.ops import MLPC_DOMAIN, describe_node, get_op
from mlpc.ir.quant_params import QUANT_METADATA_KEY, get_quant

logger = logging.getLogger(__name__)

_INT_RANGES = {
    ir.DataType.INT8: (-128, 127),
    ir.DataType.UINT8: (0, 255),
    ir.DataType.INT4: (-8, 7),
    ir.DataType.UINT4: (0, 15),
    ir.DataType.INT32: (-(2**31), 2**31 - 1),
}


def _value_label(v: ir.Value) -> str:
    if v.name:
        return f"value {v.name!r}"
    producer = v.producer()
    if producer is not None:
        return f"unnamed output {v.index()} of {describe_node(producer)}"
    return "an unnamed value"


def find_cycle(graph: ir.Graph | ir.Model) -> list[ir.Node] | None:
    """The nodes of one cycle in the graph's data flow, in order, or None if it is acyclic."""
    g = to_networkx(graph)
    try:
        edges = nx.find_cycle(g)
    except nx.NetworkXNoCycle:
        return None
    return [g.nodes[edge[0]]["node"] for edge in edges]


def _check_ssa(g: ir.Graph, problems: list[str]) -> None:
    defined: dict[str, str] = {}

    def define(name: str | None, where: str) -> None:
        if not name:
            return
        if name in defined:
            problems.append(f"value {name!r} is defined twice: by {defined[name]} and by {where}")
        else:
            defined[name] = where

    for v in g.inputs:
        define(v.name, "a graph input")
    for name, v in g.initializers.items():
        if v not in g.inputs:
            define(name, "an initializer")
    for node in g:
        for out in node.outputs:
            define(out.name, describe_node(node))


def _check_uses(g: ir.Graph, outer: set[int], problems: list[str]) -> None:
    """Every node input is a graph input, initializer, outer-scope value or an earlier output."""
    available = set(outer) | {id(v) for v in g.inputs} | {id(v) for v in g.initializers.values()}
    in_graph = {id(n) for n in g}
    for node in g:
        for i, v in enumerate(node.inputs):
            if v is None or id(v) in available:
                continue
            producer = v.producer()
            if producer is not None and id(producer) in in_graph:
                problems.append(
                    f"{describe_node(node)} uses {_value_label(v)} (input {i}) before {describe_node(producer)} defines it"
                )
            else:
                problems.append(
                    f"{describe_node(node)} input {i} is dangling: {_value_label(v)} is not a graph input, "
                    "initializer or output of a node in this graph"
                )
        for attr in node.attributes.values():
            subgraphs = (
                [attr.value]
                if attr.type == ir.AttributeType.GRAPH
                else (list(attr.value) if attr.type == ir.AttributeType.GRAPHS else [])
            )
            for sub in subgraphs:
                _check_uses(sub, available, problems)
        available.update(id(o) for o in node.outputs)


def _check_outputs_and_types(g: ir.Graph, problems: list[str]) -> None:
    in_graph = {id(n) for n in g}
    sources = {id(v) for v in g.inputs} | {id(v) for v in g.initializers.values()}
    for v in g.outputs:
        producer = v.producer()
        if id(v) not in sources and (producer is None or id(producer) not in in_graph):
            problems.append(f"graph output {_value_label(v)} is not produced by any node in the graph")
    for kind, values in (("input", g.inputs), ("output", g.outputs)):
        for v in values:
            if v.type is None or v.dtype is None:
                problems.append(f"graph {kind} {_value_label(v)} has no type; give it an element type")


def _check_mlpc_ops(g: ir.Graph, problems: list[str]) -> None:
    for node in g:
        if node.domain != MLPC_DOMAIN:
            continue
        try:
            sigs = get_op(node.op_type).infer(node)
        except MlpcError as e:
            problems.append(str(e) if describe_node(node) in str(e) else f"{describe_node(node)}: {e}")
            continue
        if len(sigs) != len(node.outputs):
            problems.append(
                f"{describe_node(node)} has {len(node.outputs)} outputs; the op defines {len(sigs)}"
            )
            continue
        for v, (shape, dtype) in zip(node.outputs, sigs):
            if v.dtype is not None and dtype is not None and v.dtype != dtype:
                problems.append(
                    f"{describe_node(node)}: output {_value_label(v)} is declared {v.dtype.name}, the op gives {dtype.name}"
                )
            if v.shape is None or shape is None:
                continue
            if len(v.shape) != len(shape):
                problems.append(
                    f"{describe_node(node)}: output {_value_label(v)} is declared rank {len(v.shape)}, the op gives rank {len(shape)}"
                )
                continue
            for i, (declared, inferred) in enumerate(zip(v.shape, shape)):
                if isinstance(declared, int) and isinstance(inferred, int) and declared != inferred:
                    problems.append(
                        f"{describe_node(node)}: output {_value_label(v)} dim {i} is declared {declared}, the op gives {inferred}"
                    )


def _all_values(g: ir.Graph) -> list[ir.Value]:
    seen: dict[int, ir.Value] = {}
    for v in (*g.inputs, *g.initializers.values()):
        seen[id(v)] = v
    for node in g:
        for v in (*node.inputs, *node.outputs):
            if v is not None:
                seen[id(v)] = v
    return list(seen.values())


def _check_quant(g: ir.Graph, problems: list[str]) -> None:
    for v in _all_values(g):
        if QUANT_METADATA_KEY not in v.metadata_props:
            continue
        try:
            qp = get_quant(v)
        except MlpcError as e:
            problems.append(f"{_value_label(v)} has invalid quantization parameters: {e}")
            continue
        assert qp is not None
        if qp.axis is not None and v.shape is not None:
            rank = len(v.shape)
            if not -rank <= qp.axis < rank:
                problems.append(
                    f"{_value_label(v)}: quantization axis {qp.axis} is out of range for rank {rank}"
                )
            else:
                dim = v.shape[qp.axis]
                if isinstance(dim, int) and dim != qp.channels:
                    problems.append(
                        f"{_value_label(v)}: per-channel scale has {qp.channels} entries but axis {qp.axis} has size {dim}"
                    )
        rng = _INT_RANGES.get(v.dtype) if v.dtype is not None else None
        if rng is not None and (qp.qmin < rng[0] or qp.qmax > rng[1]):
            problems.append(
                f"{_value_label(v)} has type {v.dtype.name} but its quantization range "
                f"[{qp.qmin}, {qp.qmax}] does not fit [{rng[0]}, {rng[1]}]"
            )
        const = v.const_value
        if const is not None and rng is not None:
            arr = const.numpy()
            if arr.size and (np.min(arr) < qp.qmin or np.max(arr) > qp.qmax):
                problems.append(
                    f"{_value_label(v)} holds values outside its quantization range [{qp.qmin}, {qp.qmax}]"
                )


def verify(model_or_graph: ir.Model | ir.Graph) -> None:
    """Check the invariants of an onnx-ir Model or Graph (see the module doc).

    Returns None when the graph is valid; otherwise raises IRVerificationError whose message
    lists every problem found, each naming the node or value at fault.
    """
    g = _graph(model_or_graph)
    problems: list[str] = []
    _check_ssa(g, problems)
    cycle = find_cycle(g)
    if cycle is not None:
        names = " -> ".join(describe_node(n) for n in cycle)
        problems.append(f"the graph has a cycle: {names} -> back to the first")
    else:
        _check_uses(g, set(), problems)
    _check_outputs_and_types(g, problems)
    _check_mlpc_ops(g, problems)
    _check_quant(g, problems)
    if problems:
        label = f"graph {g.name!r}" if g.name else "the graph"
        raise IRVerificationError(
            f"{label} fails verification ({len(problems)} problem(s)):\n  - " + "\n  - ".join(problems)
        )
    logger.debug("verified %s: %d nodes", g.name, len(g))
