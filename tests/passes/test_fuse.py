"""The `fuse` pass decides the kernels: its groups are exactly the PrimFuncs TVM builds, a custom
edit of the groups changes the kernels, and numerics stay those of the reference evaluator."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import tvm
from onnx import TensorProto, helper

from mlpc import zoo
from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.cpu_schedule import fusion_passes
from mlpc.backends.tvm.grouping import lowering_units
from mlpc.backends.tvm.lower import lower_graph
from mlpc.errors import LoweringError
from mlpc.frontend import load_model
from mlpc.ir import ReferenceEvaluator
from mlpc.pass_infra import PassContext, PassManager
from mlpc.passes.fuse import GROUP_KEY, FusePass, fusion_groups, set_group
from mlpc.pipeline import default_pipeline
from mlpc.targets import get_target


def _prepared(name, tmp_path, disabled=()):
    loaded = load_model(zoo.export_onnx(name, tmp_path / f"{name}.onnx"))
    PassManager(default_pipeline()).run(loaded.model, PassContext(disabled_passes=set(disabled)))
    return loaded.model


def _kernel_calls(mod):
    """The PrimFuncs main calls after TVM's fusion passes, in call order (reshape views excluded)."""
    target = get_target("host").tvm_target()
    with target:
        fused = tvm.transform.Sequential(fusion_passes(target))(mod)
    calls = []

    def visit(expr):
        if (
            isinstance(expr, tvm.relax.Call)
            and isinstance(expr.op, tvm.ir.Op)
            and expr.op.name == "relax.call_tir"
        ):
            calls.append(expr.args[0].name_hint)

    tvm.relax.analysis.post_order_visit(fused["main"].body, visit)
    return fused, [c for c in calls if not c.startswith("reshape")]


def _reference(model, x):
    return list(ReferenceEvaluator(model).run({"x": x}).values())[0]


@pytest.mark.parametrize("name", ["resnet", "transformer"])
def test_kernels_are_the_groups(name, tmp_path):
    model = _prepared(name, tmp_path)
    graph = model.graph
    groups = fusion_groups(graph)
    assert groups, f"{name}: the fuse pass marked no group"
    patterns = {"+".join(n.op_type for n in nodes) for nodes in groups.values()}
    expected = {"resnet": {"ConvNHWC+Relu", "ConvNHWC+Add+Relu"}, "transformer": {"MatMul+Add+Add"}}[name]
    assert expected <= patterns, patterns
    mod = lower_graph(graph, 18)
    fused, calls = _kernel_calls(mod)
    units = lowering_units(graph)
    computing = [u for u in units if u.group is not None or u.nodes[0].op_type not in ("Reshape", "Flatten")]
    # One kernel call per group and per computing ungrouped node, nothing fused across them.
    assert len(calls) == len(computing), (calls, [u.name for u in computing])
    assert all(c.startswith("mlpc_") for c in calls), calls
    for gid, nodes in groups.items():
        kernel = f"mlpc_group_{gid}_{nodes[0].op_type.lower()}"
        if kernel not in calls:  # an identical group's kernel is reused (BlockBuilder deduplicates)
            continue
        script = fused[kernel].script()
        for node in nodes:
            marker = {
                "Conv": "conv",
                "ConvNHWC": "conv",
                "MatMul": "matmul",
                "Relu": "T.max",
                "Add": "T_add",
            }.get(node.op_type)
            assert marker is None or marker in script, f"{kernel} lacks {node.op_type}"
    x = zoo.example_inputs(name)[0].numpy()
    np.testing.assert_allclose(
        run(build(mod, get_target("host")), [x])[0], _reference(model, x), rtol=1e-4, atol=1e-5
    )


def test_editing_groups_changes_kernels(tmp_path):
    model = _prepared("resnet", tmp_path)
    graph = model.graph
    _, calls = _kernel_calls(lower_graph(graph, 18))
    gid, nodes = next(
        (g, n)
        for g, n in fusion_groups(graph).items()
        if [x.op_type for x in n] == ["ConvNHWC", "Add", "Relu"]
    )
    relu = nodes[-1]
    del relu.metadata_props[GROUP_KEY]  # a custom pass decides: the ReLU gets its own kernel
    set_group(nodes[:-1], gid)
    fused, split_calls = _kernel_calls(lower_graph(graph, 18))
    assert len(split_calls) == len(calls) + 1
    assert "T.max" not in fused[f"mlpc_group_{gid}_convnhwc"].script()
    x = zoo.example_inputs("resnet")[0].numpy()
    np.testing.assert_allclose(
        run(build(lower_graph(graph, 18), get_target("host")), [x])[0],
        _reference(model, x),
        rtol=1e-4,
        atol=1e-5,
    )


def test_without_fuse_tvm_decides(tmp_path):
    model = _prepared("mobilenet", tmp_path, disabled=("fuse",))
    assert not fusion_groups(model.graph)
    mod = lower_graph(model.graph, 18)
    assert mod.attrs is None or "mlpc.fusion" not in mod.attrs
    _, calls = _kernel_calls(mod)
    assert calls and all(c.startswith("fused_") or not c.startswith("mlpc_") for c in calls)


def _graph(nodes, inits=()):
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializer=list(inits),
    )
    return ir.serde.deserialize_model(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    )


def test_diamond_epilogue_and_escaping_intermediate():
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel())
    # y = gelu-like diamond on MatMul's output: m * sigmoid(m); a second use of m escapes in `e`.
    model = _graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
            helper.make_node("Sigmoid", ["m"], ["s"], name="sig"),
            helper.make_node("Mul", ["m", "s"], ["p"], name="mul"),
            helper.make_node("Relu", ["p"], ["y"], name="relu"),
        ],
        [w],
    )
    assert FusePass()(model.graph).modified
    assert [list(n.op_type for n in g) for g in fusion_groups(model.graph).values()] == [
        ["MatMul", "Sigmoid", "Mul", "Relu"]
    ]
    assert not FusePass()(model.graph).modified


def test_group_never_swallows_a_path_through_an_outside_node():
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel())
    # m feeds both the Add and a MatMul (another anchor) whose result the Add also reads: fusing
    # the Add into m's group would make a cycle through the second MatMul.
    model = _graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
            helper.make_node("MatMul", ["m", "w"], ["m2"], name="mm2"),
            helper.make_node("Add", ["m", "m2"], ["y"], name="add"),
        ],
        [w],
    )
    FusePass()(model.graph)
    groups = [[n.name for n in g] for g in fusion_groups(model.graph).values()]
    assert groups == [["mm2", "add"]]
    lowering_units(model.graph)  # a valid order exists


def test_cyclic_groups_from_a_custom_pass_are_refused():
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, 4], np.eye(4, dtype=np.float32).ravel())
    model = _graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"], name="mm"),
            helper.make_node("MatMul", ["m", "w"], ["m2"], name="mm2"),
            helper.make_node("Add", ["m", "m2"], ["y"], name="add"),
        ],
        [w],
    )
    nodes = list(model.graph)
    set_group([nodes[0], nodes[2]], "bad")
    with pytest.raises(LoweringError, match="cycle"):
        lowering_units(model.graph)
