"""The lowering driver's contract: Relax signature, constants, and the errors it raises."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper
from ort_harness import host, make_model, mlpc_run, ort_run, rand
from tvm import relax

from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.lower import lower_graph, unsupported_nodes
from mlpc.errors import LoweringError, UnsupportedOpError
from mlpc.targets import Target


def _ir(model):
    return ir.serde.deserialize_model(model)


def test_signature_names_tuple_output_and_constant_weights():
    x = rand(2, 3, seed=1)
    nodes = [helper.make_node("MatMul", ["input.1", "weight"], ["out:0"])]
    model = make_model(nodes, {"input.1": x}, ["out:0"], {"weight": rand(3, 4, seed=2)}, 17)
    mod = lower_graph(_ir(model).graph, 17)
    main = mod["main"]
    assert [p.name for p in main.params] == ["input_1"]
    assert isinstance(main.body.body, relax.Var) and isinstance(main.ret_ty, relax.TupleType)
    assert len(main.ret_ty.fields) == 1
    (got,) = run(build(mod, host()), [x])
    np.testing.assert_allclose(got, ort_run(model, {"input.1": x})[0], rtol=1e-5, atol=1e-6)


def test_outputs_in_order_including_passthrough_input_and_initializer():
    x = rand(3, seed=3)
    nodes = [helper.make_node("Neg", ["x"], ["n"]), helper.make_node("Identity", ["c"], ["c_out"])]
    model = make_model(nodes, {"x": x}, ["n", "c_out"], {"c": rand(2, seed=4)}, 17)
    model.graph.output.extend([model.graph.input[0]])
    got = mlpc_run(model, {"x": x})
    ref = ort_run(model, {"x": x})
    assert len(got) == 3
    for g, r in zip(got, ref):
        np.testing.assert_array_equal(g, r)


def test_unsupported_nodes_are_all_listed():
    x = rand(1, 2, 4, 4, seed=5)
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="ok_relu"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="nms_a"),
        helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel2"], name="nms_b"),
        helper.make_node("MyOp", ["r"], ["m"], name="custom_one", domain="com.example"),
        helper.make_node("Resize", ["x", "", "scales"], ["up"], name="cubic_up", mode="cubic"),
    ]
    inits = {"boxes": rand(1, 3, 4, seed=6), "scores": rand(1, 1, 3, seed=7),
             "scales": np.array([1, 1, 2, 2], np.float32)}
    out_types = {"sel": (np.int64, [3, 3]), "sel2": (np.int64, [3, 3]), "m": (np.float32, [1, 2, 4, 4]),
                 "up": (np.float32, [1, 2, 8, 8])}
    model = make_model(nodes, {"x": x}, list(out_types), inits, 17, out_types, extra_domains=["com.example"])
    graph = _ir(model).graph
    names = [n.name for n in unsupported_nodes(graph, 17)]
    assert names == ["nms_a", "nms_b", "custom_one", "cubic_up"]
    with pytest.raises(UnsupportedOpError) as info:
        lower_graph(graph, 17)
    message = str(info.value)
    for name in ("nms_a (NonMaxSuppression)", "nms_b (NonMaxSuppression)", "custom_one (com.example::MyOp)",
                 "cubic_up (Resize)", "cubic"):
        assert name in message
    assert "ok_relu" not in message


def test_non_constant_reshape_shape_raises_lowering_error_naming_node():
    x = rand(2, 6, seed=8)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"], name="dyn_reshape")]
    model = make_model(nodes, {"x": x, "shape": np.array([3, 4], np.int64)}, ["y"], opset=17,
                       output_types={"y": (np.float32, [3, 4])})
    with pytest.raises(LoweringError, match=r"dyn_reshape \(Reshape\).*must be a constant"):
        lower_graph(_ir(model).graph, 17)


def test_build_wraps_tvm_errors():
    model = make_model([helper.make_node("Relu", ["x"], ["y"])], {"x": rand(2, seed=9)}, ["y"], opset=17)
    mod = lower_graph(_ir(model).graph, 17)
    bad = Target(name="bogus", kind="x86", description="bad", tvm={"kind": "no-such-kind"})
    with pytest.raises(LoweringError, match="bogus"):
        build(mod, bad)
