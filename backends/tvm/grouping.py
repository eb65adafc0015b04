"""Lower mlpc's fusion groups (passes/fuse.py) as exactly one kernel each.

When the graph carries fusion groups, `lower_graph` lowers it unit by unit: a unit is a fusion
group, or one node outside any group. Each unit becomes a private Relax function with the
attribute `Primitive` — TVM's FuseTIR turns such a function into one PrimFunc named after it
(`mlpc_group_<id>_<op>` or `mlpc_<op>_<node index>`) — and `main` calls it. The module gets the
attribute `mlpc.fusion = "groups"`, which makes `cpu_schedule.fusion_passes` leave out TVM's
FuseOps, so the kernels are exactly mlpc's decision. Inside a unit, computations on constants
only (weight transposes, folded reshapes) are folded at compile time, and the remaining
constants become parameters (FuseTIR accepts no constants in primitive functions).

A unit stays inline in `main` (no function) when it computes nothing at run time (Reshape,
Identity, shape arithmetic), uses an op that does not legalize to TIR (sort, scan), which TVM
dispatches itself, or calls a kernel its converter scheduled already (mlpc::Attention): that
kernel is one PrimFunc of its own.
"""

from __future__ import annotations

import heapq
import logging
import re
from dataclasses import dataclass

import onnx_ir as ir
import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator, mutator

from mlpc.backends.tvm.context import LowerContext, relax_name

logger = logging.getLogger(__name__)

GROUP_KEY = "mlpc.fusion_group"  # the key passes/fuse.py writes (the backend never imports a pass)
FUSION_ATTR = "mlpc.fusion"
# Relax ops that cost no kernel at run time (RewriteDataflowReshape turns them into views).
VIEW_OPS = {"relax.reshape", "relax.squeeze", "relax.expand_dims", "relax.flatten"}


@dataclass
class Unit:
    """Nodes lowered together: a fusion group (`group` is its id) or a single node."""

    nodes: list[ir.Node]
    group: str | None
    index: int  # of the unit's first node in the graph

    @property
    def name(self) -> str:
        """The Relax function (and kernel) name: `mlpc_group_<id>_<first op>` (e.g.
        mlpc_group_3_conv) or `mlpc_<op>_<node index>`."""
        op = re.sub(r"[^0-9A-Za-z_]", "_", self.nodes[0].op_type).lower()
        if self.group is not None:
            return f"mlpc_group_{re.sub(r'[^0-9A-Za-z_]', '_', self.group)}_{op}"
        return f"mlpc_{op}_{self.index}"


def has_groups(graph: ir.Graph) -> bool:
    """Whether any node of `graph` carries a fusion group."""
    return any(GROUP_KEY in node.metadata_props for node in graph)


def lowering_units(graph: ir.Graph) -> list[Unit]:
    """The units of `graph` in an order where every unit follows the units it reads from."""
    nodes = list(graph)
    index = {node: i for i, node in enumerate(nodes)}
    units: list[Unit] = []
    unit_of: dict[ir.Node, int] = {}
    by_group: dict[str, int] = {}
    for node in nodes:
        gid = node.metadata_props.get(GROUP_KEY)
        if gid is not None and gid in by_group:
            units[by_group[gid]].nodes.append(node)
        else:
            if gid is not None:
                by_group[gid] = len(units)
            units.append(Unit([node], gid, index[node]))
        unit_of[node] = by_group[gid] if gid is not None else len(units) - 1
    deps: list[set[int]] = [set() for _ in units]
    for u, unit in enumerate(units):
        for node in unit.nodes:
            for value in node.inputs:
                producer = value.producer() if value is not None else None
                if producer is not None and producer in unit_of and unit_of[producer] != u:
                    deps[u].add(unit_of[producer])
    users: list[list[int]] = [[] for _ in units]
    for u, ds in enumerate(deps):
        for d in ds:
            users[d].append(u)
    waiting = [len(ds) for ds in deps]
    ready = [(index[units[u].nodes[0]], u) for u in range(len(units)) if not waiting[u]]
    heapq.heapify(ready)
    order: list[Unit] = []
    while ready:
        _, u = heapq.heappop(ready)
        order.append(units[u])
        for user in users[u]:
            waiting[user] -= 1
            if not waiting[user]:
                heapq.heappush(ready, (index[units[user].nodes[0]], user))
    if len(order) != len(units):
        from mlpc.errors import LoweringError

        cyclic = [units[u].name for u in range(len(units)) if waiting[u]]
        raise LoweringError(
            f"fusion groups form a cycle ({', '.join(cyclic[:5])}): a group must not read a value "
            "computed from its own output; fix the pass that set mlpc.fusion_group"
        )
    return order


@mutator
class _Relink(PyExprMutator):
    """Replace every constant of a function body by a new parameter, and the global vars of the
    unit's builder (PrimFuncs a converter emitted with emit_te) by their copies in `main`'s module."""

    def __init__(self, gvars: dict[str, relax.GlobalVar]) -> None:
        super().__init__()
        self.gvars = gvars
        self.constants: list[relax.Expr] = []
        self.params: list[relax.Var] = []

    def visit_generic_const_(self, op: relax.Expr) -> relax.Expr:  # noqa: N802 - TVM's visitor name
        for const, param in zip(self.constants, self.params):
            if const.same_as(op):
                return param
        param = relax.Var(f"w{len(self.params)}", op.ty)
        self.constants.append(op)
        self.params.append(param)
        return param

    def visit_global_var_(self, op: relax.GlobalVar) -> relax.Expr:  # noqa: N802
        return self.gvars.get(op.name_hint, op)


def _referenced_gvars(expr: relax.Expr) -> list[relax.GlobalVar]:
    found: list[relax.GlobalVar] = []

    def visit(e: relax.Expr) -> None:
        if isinstance(e, relax.GlobalVar) and not any(g.same_as(e) for g in found):
            found.append(e)

    relax.analysis.post_order_visit(expr, visit)
    return found


def _calls(expr: relax.Expr) -> list[str]:
    names: list[str] = []

    def visit(e: relax.Expr) -> None:
        if isinstance(e, relax.Call):
            names.append(e.op.name if isinstance(e.op, tvm.ir.Op) else "<call>")

    relax.analysis.post_order_visit(expr, visit)
    return names


def _inline_reason(func: relax.Function, mod: tvm.IRModule) -> str | None:
    calls = _calls(func.body)
    if not [c for c in calls if c not in VIEW_OPS]:
        return "no run-time computation"
    for name in calls:
        if name == "relax.call_tir":
            continue
        if name == "<call>" or tvm.ir.Op.get(name).get_attr("FLegalize") is None:
            return f"{name} does not legalize to TIR"
    for gvar, prim in mod.functions.items():
        if (
            isinstance(prim, tvm.tirx.PrimFunc)
            and prim.attrs is not None
            and prim.attrs.get("tirx.is_scheduled")
        ):
            return f"calls {gvar.name_hint}, a kernel its converter already scheduled"
    return None


def unit_io(unit: Unit, graph_outputs: set[ir.Value]) -> tuple[list[ir.Value], list[ir.Value]]:
    """The unit's computed inputs (not constants) and the outputs used outside it, in order."""
    members = set(unit.nodes)
    inputs: list[ir.Value] = []
    for node in unit.nodes:
        for value in node.inputs:
            if value is None or value.const_value is not None or value in inputs:
                continue
            if value.producer() not in members:
                inputs.append(value)
    outputs = [
        v
        for node in unit.nodes
        for v in node.outputs
        if v is not None and v.name and (v in graph_outputs or any(c not in members for c in v.consumers()))
    ]
    return inputs, outputs


def lower_unit(
    ctx: LowerContext, env: dict[ir.Value, relax.Expr], unit: Unit, graph_outputs: set[ir.Value], lower_node
) -> bool:
    """Lower `unit` as one primitive function called from the current function of `ctx.bb`.

    Returns False (having emitted nothing) when the unit should stay inline instead; `lower_node`
    is lower.py's per-node lowering `(ctx, env, node)`.
    """
    main_bb = ctx.bb
    inputs, outputs = unit_io(unit, graph_outputs)
    known = [v for v in inputs if v in env and isinstance(env[v], relax.Var)]
    params = [relax.Var(relax_name(v.name), env[v].ty) for v in known]
    local: dict[ir.Value, relax.Expr] = {v: p for v, p in zip(known, params)}
    local.update({v: env[v] for v in inputs if v in env and v not in local})
    fbb = relax.BlockBuilder()
    ctx.bb = fbb
    try:
        with fbb.function(unit.name, params, private=True):
            with fbb.dataflow():
                for node in unit.nodes:
                    lower_node(ctx, local, node)
                exprs = [local[v] for v in outputs]
                result = fbb.emit_output(exprs[0] if len(exprs) == 1 else relax.Tuple(exprs))
            fbb.emit_func_output(result)
    finally:
        ctx.bb = main_bb
    folded = relax.transform.FoldConstant()(fbb.get())
    func = folded[unit.name]
    reason = _inline_reason(func, folded) if outputs else "no outputs"
    if reason is not None:
        logger.debug("unit %s stays inline: %s", unit.name, reason)
        return False
    copies = {g.name_hint: main_bb.add_func(folded[g], g.name_hint) for g in _referenced_gvars(func.body)}
    lift = _Relink(copies)
    body = lift.visit_expr(func.body)
    prim = relax.Function(list(func.params) + lift.params, body, func.ret_ty).with_attr("Primitive", True)
    gvar = main_bb.add_func(prim, unit.name)
    call = main_bb.emit(relax.Call(gvar, [env[v] for v in known] + lift.constants))
    if len(outputs) == 1:
        env[outputs[0]] = call
    else:
        for i, value in enumerate(outputs):
            env[value] = main_bb.emit(relax.TupleGetItem(call, i))
    return True


def kernel_calls(mod: tvm.IRModule, target: tvm.target.Target) -> list[str]:
    """The kernels `mod`'s main runs, in call order: the PrimFunc of each call_tir after TVM's
    CPU legalization and fusion (`cpu_schedule.fusion_passes`), reshape views left out.

    >>> kernel_calls(lower_graph(graph, 18), get_target("host").tvm_target())  # doctest: +SKIP
    ['mlpc_group_0_convnhwc', 'mlpc_group_1_convnhwc', ...]
    """
    from mlpc.backends.tvm.cpu_schedule import fusion_passes

    with target:
        fused = tvm.transform.Sequential(fusion_passes(target))(mod)
    calls: list[str] = []

    def visit(expr: relax.Expr) -> None:
        if (
            isinstance(expr, relax.Call)
            and isinstance(expr.op, tvm.ir.Op)
            and expr.op.name == "relax.call_tir"
        ):
            calls.append(expr.args[0].name_hint)

    relax.analysis.post_order_visit(fused["main"].body, visit)
    return [name for name in calls if not name.startswith("reshape")]
