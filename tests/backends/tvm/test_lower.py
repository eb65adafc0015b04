"""The lowering driver's contract: Relax signature, constants, and the errors it raises."""
from __future__ import annotations

import numpy as np
import onnx
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
        helper.make_node("Resize", ["x", "", "scales"], ["up"], name="crop_up", mode="linear",
                         coordinate_transformation_mode="tf_crop_and_resize"),
    ]
    inits = {"boxes": rand(1, 3, 4, seed=6), "scores": rand(1, 1, 3, seed=7),
             "scales": np.array([1, 1, 2, 2], np.float32)}
    out_types = {"sel": (np.int64, [3, 3]), "sel2": (np.int64, [3, 3]), "m": (np.float32, [1, 2, 4, 4]),
                 "up": (np.float32, [1, 2, 8, 8])}
    model = make_model(nodes, {"x": x}, list(out_types), inits, 17, out_types, extra_domains=["com.example"])
    graph = _ir(model).graph
    names = [n.name for n in unsupported_nodes(graph, 17)]
    assert names == ["nms_a", "nms_b", "custom_one", "crop_up"]
    with pytest.raises(UnsupportedOpError) as info:
        lower_graph(graph, 17)
    message = str(info.value)
    for name in ("nms_a (NonMaxSuppression)", "nms_b (NonMaxSuppression)", "custom_one (com.example::MyOp)",
                 "crop_up (Resize)", "tf_crop_and_resize"):
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


# -- regressions found by the ONNX node conformance sweep (tests/conformance) ----------------


@pytest.mark.parametrize("to,match", [
    (onnx.TensorProto.FLOAT8E4M3FN, "FLOAT8E4M3FN"),
    (onnx.TensorProto.FLOAT8E5M2, "FLOAT8E5M2"),
    (onnx.TensorProto.FLOAT4E2M1, "FLOAT4E2M1"),
    (onnx.TensorProto.INT2, "INT2"),
    (onnx.TensorProto.INT4, "Cast to or from INT4"),
    (onnx.TensorProto.UINT4, "Cast to or from UINT4"),
])
def test_casts_to_element_types_tvm_gets_wrong_are_refused(to, match):
    # These casts built and ran but gave wrong numbers (float8 saturation/NaN rules, int4 values
    # that never wrapped at 4 bits) or crashed the VM: now a clear refusal naming the node.
    node = helper.make_node("Cast", ["x"], ["y"], name="narrow_cast", to=to)
    model = make_model([node], {"x": rand(3, 5, seed=8)}, ["y"], opset=21)
    with pytest.raises(UnsupportedOpError, match=f"narrow_cast \\(Cast\\): .*{match}"):
        lower_graph(_ir(model).graph, 21)


def test_int4_graph_output_is_refused_but_internal_int4_weights_lower():
    w = np.array([[-8, 7], [3, -1]], np.int8)
    int4_w = onnx.helper.make_tensor("w", onnx.TensorProto.INT4, [2, 2], w.flatten().tolist())
    scale = onnx.numpy_helper.from_array(np.array(0.5, np.float32), "s")
    quant = helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="to_int4")
    zp = onnx.helper.make_tensor("zp", onnx.TensorProto.INT4, [], [0])
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 2])
    out = helper.make_tensor_value_info("q", onnx.TensorProto.INT4, [2, 2])
    graph = helper.make_graph([quant], "g", [x], [out], initializer=[scale, zp])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    with pytest.raises(UnsupportedOpError, match="to_int4 .*graph input/output of INT4"):
        lower_graph(_ir(model).graph, 21)
    # The same int4 type inside the model (a packed weight into DequantizeLinear) still lowers.
    deq = helper.make_node("DequantizeLinear", ["w", "s"], ["wf"])
    add = helper.make_node("Add", ["x", "wf"], ["y"])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2, 2])
    graph = helper.make_graph([deq, add], "g", [x], [y], initializer=[int4_w, scale])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    xv = rand(2, 2, seed=9)
    (got,) = mlpc_run(model, {"x": xv})
    np.testing.assert_allclose(got, xv + w.astype(np.float32) * 0.5, rtol=1e-6)


def test_string_values_are_refused():
    x = helper.make_tensor_value_info("x", onnx.TensorProto.STRING, [2])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.BOOL, [2])
    graph = helper.make_graph([helper.make_node("Equal", ["x", "x"], ["y"], name="cmp")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    with pytest.raises(UnsupportedOpError, match="cmp \\(Equal\\): input 'x' has element type STRING"):
        lower_graph(_ir(model).graph, 20)
