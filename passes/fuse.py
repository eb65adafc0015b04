"""fuse: decide the fusion groups — which nodes the backend compiles as one kernel.

A group is written on its nodes as metadata (ONNX `NodeProto.metadata_props`, kept by onnx-ir
and the ONNX round trip):

    node.metadata_props["mlpc.fusion_group"] = "7"                    # the group id
    node.metadata_props["mlpc.fusion_pattern"] = "Conv+Add+Relu"      # what the group holds

Nodes of one group are convex (no path leaves the group and comes back) and the group has one
output value. The TVM backend lowers each group as one Relax function marked primitive, i.e.
exactly one compiled kernel, and no longer lets TVM's FuseOps decide; a node without a group is
its own kernel (shape-only nodes such as Reshape compile to no kernel). A user or a custom pass
changes fusion by editing these two keys (`set_group`, `clear_groups`) after this pass runs.

Groups, in order of precedence:
- an anchor (Conv, ConvTranspose, MatMul, Gemm, the integer conv/matmul of the mlpc domain, and
  the reductions Softmax, LayerNormalization, pooling, Reduce*) followed by elementwise ops of its
  output's shape: bias, scale, activation, requantization, residual Add (another computed
  tensor), including diamonds such as x·½(1+erf(x/√2));
- chains of elementwise and layout ops (Add, Mul, Relu, Transpose, Reshape, Cast, ...) not taken
  by an anchor.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import onnx_ir as ir

from mlpc.pass_infra import Pass, PassContext, PassResult

logger = logging.getLogger(__name__)

GROUP_KEY = "mlpc.fusion_group"
PATTERN_KEY = "mlpc.fusion_pattern"

# Ops computing a reduction the backend schedules as the core of a kernel.
ANCHORS = {
    ("", "Conv"),
    ("", "ConvTranspose"),
    ("", "MatMul"),
    ("", "Gemm"),
    ("mlpc", "IntegerConv"),
    ("mlpc", "ConvNHWC"),
    ("mlpc", "IntegerMatMul"),
}
REDUCTION_ANCHORS = {
    ("", "Softmax"),
    ("", "LogSoftmax"),
    ("", "LayerNormalization"),
    ("", "MaxPool"),
    ("", "AveragePool"),
    ("", "GlobalAveragePool"),
    ("", "GlobalMaxPool"),
    ("", "ReduceMean"),
    ("", "ReduceSum"),
    ("", "ReduceMax"),
    ("", "ReduceMin"),
}
# One output element from the same element of each input (numpy broadcasting allowed).
ELEMENTWISE = {
    ("", op)
    for op in (
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Relu",
        "Clip",
        "Sigmoid",
        "Tanh",
        "LeakyRelu",
        "HardSigmoid",
        "HardSwish",
        "Gelu",
        "Elu",
        "Selu",
        "Softplus",
        "Softsign",
        "Erf",
        "Exp",
        "Log",
        "Sqrt",
        "Neg",
        "Abs",
        "Reciprocal",
        "Pow",
        "Max",
        "Min",
        "Where",
        "Cast",
        "PRelu",
        "Floor",
        "Ceil",
        "Round",
        "Sign",
        "QuantizeLinear",
        "DequantizeLinear",
        "Equal",
        "Less",
        "Greater",
        "Not",
    )
} | {("mlpc", "SiLU"), ("mlpc", "Requantize"), ("mlpc", "IntegerAdd")}
# Injective layout ops that may join elementwise chains (each output element reads one input element).
LAYOUT = {("", op) for op in ("Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Expand")}
VIEWS = {("", op) for op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze")}  # no kernel of their own
MAX_GROUP = 24  # nodes; bounds the convexity checks on very long chains


def _key(node: ir.Node) -> tuple[str, str]:
    return ("" if node.domain in ("", "ai.onnx") else node.domain, node.op_type)


def _is_const(value: ir.Value | None) -> bool:
    return value is None or value.const_value is not None


class _Grouper:
    """Greedy grouping over the graph's topological order."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.nodes = list(graph)
        self.index = {node: i for i, node in enumerate(self.nodes)}
        self.outputs = set(graph.outputs)
        self.group_of: dict[ir.Node, int] = {}

    def _depends_on(self, value: ir.Value, members: set[ir.Node], first: int) -> bool:
        """Whether `value` is computed from any node in `members` (all at index >= first)."""
        stack, seen = [value.producer()], set()
        while stack:
            node = stack.pop()
            if node is None or node in seen or self.index.get(node, -1) < first:
                continue
            if node in members:
                return True
            seen.add(node)
            stack.extend(v.producer() for v in node.inputs if v is not None)
        return False

    def _can_join(self, node: ir.Node, members: set[ir.Node], first: int, shape: ir.Shape | None) -> bool:
        if node in self.group_of or node in members or len(node.outputs) != 1:
            return False
        if shape is not None and node.outputs[0].shape != shape:  # epilogues keep the anchor's shape
            return False
        for value in node.inputs:
            if _is_const(value) or value.producer() in members:
                continue
            if self._depends_on(value, members, first):
                return False  # joining would make a cycle through an outside node
        return any(v is not None and v.producer() in members for v in node.inputs)

    def grow(self, seed: ir.Node, allowed: set[tuple[str, str]], keep_shape: bool) -> list[ir.Node]:
        """The largest single-output group starting at `seed` and absorbing `allowed` consumers."""
        members, order = {seed}, [seed]
        first = self.index[seed]
        shape = seed.outputs[0].shape if keep_shape else None
        frontier = self._consumers(order)
        while frontier and len(order) < MAX_GROUP:
            node = min(frontier, key=self.index.__getitem__)
            frontier.discard(node)
            if _key(node) in allowed and self._can_join(node, members, first, shape):
                members.add(node)
                order.append(node)
                frontier |= self._consumers([node]) - members
        # Keep the longest prefix (in topological order) whose only escaping value is its last output.
        order.sort(key=self.index.__getitem__)
        for end in range(len(order), 0, -1):
            if len(self._escaping(order[:end])) <= 1:
                return order[:end]
        return [seed]

    @staticmethod
    def _consumers(nodes: Iterable[ir.Node]) -> set[ir.Node]:
        return {c for node in nodes for v in node.outputs for c in v.consumers()}

    def _escaping(self, nodes: list[ir.Node]) -> set[ir.Value]:
        members = set(nodes)
        return {
            v
            for node in nodes
            for v in node.outputs
            if v in self.outputs or any(c not in members for c in v.consumers())
        }

    def assign(self) -> list[list[ir.Node]]:
        """Return the groups (lists of nodes in topological order, two or more nodes each)."""
        groups: list[list[ir.Node]] = []
        epilogue = ELEMENTWISE
        for seeds, allowed, keep_shape in (
            (ANCHORS, epilogue, True),
            (REDUCTION_ANCHORS, epilogue, True),
            (ELEMENTWISE | LAYOUT, ELEMENTWISE | LAYOUT, False),
        ):
            for node in self.nodes:
                if node in self.group_of or _key(node) not in seeds or len(node.outputs) != 1:
                    continue
                members = self.grow(node, allowed, keep_shape)
                if len(members) < 2 or all(_key(n) in VIEWS for n in members):
                    continue  # a lone node is its own kernel anyway; pure reshapes need none
                for member in members:
                    self.group_of[member] = len(groups)
                groups.append(members)
        return groups


def group_label(members: list[ir.Node]) -> str:
    """The pattern string of a group, e.g. "Conv+Add+Relu"."""
    return "+".join(n.op_type for n in members)


def set_group(nodes: Iterable[ir.Node], group: int | str) -> None:
    """Put `nodes` into fusion group `group` (for custom passes that change fusion)."""
    nodes = list(nodes)
    label = group_label(nodes)
    for node in nodes:
        node.metadata_props[GROUP_KEY] = str(group)
        node.metadata_props[PATTERN_KEY] = label


def clear_groups(graph: ir.Graph) -> bool:
    """Remove every fusion group from `graph`; return whether there was any."""
    changed = False
    for node in graph:
        for key in (GROUP_KEY, PATTERN_KEY):
            if key in node.metadata_props:
                del node.metadata_props[key]
                changed = True
    return changed


def fusion_groups(graph: ir.Graph) -> dict[str, list[ir.Node]]:
    """The groups marked on `graph`: group id → its nodes in graph order (empty when unmarked)."""
    groups: dict[str, list[ir.Node]] = {}
    for node in graph:
        gid = node.metadata_props.get(GROUP_KEY)
        if gid is not None:
            groups.setdefault(gid, []).append(node)
    return groups


class FusePass(Pass):
    """Mark fusion groups (anchor + epilogue, elementwise chains) as node metadata."""

    name = "fuse"
    description = (
        "fusion groups (conv/matmul + bias + activation + requant + residual add; elementwise chains)"
    )
    opt_level = 1

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        before = {
            node: (node.metadata_props.get(GROUP_KEY), node.metadata_props.get(PATTERN_KEY)) for node in graph
        }
        clear_groups(graph)
        groups = _Grouper(graph).assign()
        for gid, members in enumerate(groups):
            set_group(members, gid)
            logger.debug("fusion group %d: %s", gid, group_label(members))
        after = {
            node: (node.metadata_props.get(GROUP_KEY), node.metadata_props.get(PATTERN_KEY)) for node in graph
        }
        modified = before != after
        if modified:
            fused = sum(len(m) for m in groups)
            logger.info("fuse: %d groups over %d of %d nodes", len(groups), fused, len(graph))
        return PassResult(graph, modified)
