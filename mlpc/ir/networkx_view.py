"""A networkx view of an onnx-ir graph, for graph algorithms (partitioning, cycle search,
dataflow FIFO sizing). networkx is a tool over the IR, never its storage: the view is a
snapshot and does not track later edits.

    >>> g = to_networkx(model.graph)
    >>> [g.nodes[k]["op_type"] for k in networkx.topological_sort(g)]
"""

from __future__ import annotations

import logging

import networkx as nx
import onnx_ir as ir

logger = logging.getLogger(__name__)


def _graph(graph_or_model: ir.Graph | ir.Model) -> ir.Graph:
    return graph_or_model.graph if isinstance(graph_or_model, ir.Model) else graph_or_model


def to_networkx(graph: ir.Graph | ir.Model, sources: bool = False) -> nx.MultiDiGraph:
    """A MultiDiGraph with one networkx node per onnx-ir node and one edge per (producer,
    consumer, value) use.

    Node keys are the node's position in graph order (0, 1, …), with attributes `node` (the
    ir.Node), `op_type`, `domain`, `name`. Edges run producer → consumer with key and attribute
    `value` = the value's name and `ir_value` = the ir.Value. With `sources=True`, graph inputs
    and initializers become extra source nodes keyed `"input:<name>"` / `"initializer:<name>"`
    (attribute `kind`), with edges to their consumers. Producers outside the graph are skipped.
    """
    g = _graph(graph)
    out = nx.MultiDiGraph(name=g.name or "")
    index: dict[int, int] = {}
    for i, node in enumerate(g):
        index[id(node)] = i
        out.add_node(
            i, node=node, op_type=node.op_type, domain=node.domain, name=node.name or "", kind="node"
        )
    source_of: dict[int, str] = {}
    if sources:
        for v in g.inputs:
            source_of[id(v)] = f"input:{v.name}"
        for name, v in g.initializers.items():
            source_of.setdefault(id(v), f"initializer:{name}")
        for key in source_of.values():
            out.add_node(
                key,
                kind=key.split(":", 1)[0],
                name=key.split(":", 1)[1],
                op_type=None,
                domain=None,
                node=None,
            )
    for node in g:
        dst = index[id(node)]
        for v in node.inputs:
            if v is None:
                continue
            producer = v.producer()
            if producer is not None and id(producer) in index:
                src: int | str = index[id(producer)]
            elif id(v) in source_of:
                src = source_of[id(v)]
            else:
                continue
            out.add_edge(src, dst, key=v.name, value=v.name, ir_value=v)
    return out
