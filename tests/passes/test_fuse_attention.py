"""fuse-attention: the zoo transformer's attention (both torch exporters) becomes mlpc::Attention,
which the evaluator and the TVM backend compute like onnxruntime computes the original graph."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from mlpc import zoo
from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.lower import lower_graph
from mlpc.errors import IRVerificationError
from mlpc.frontend import load_model
from mlpc.ir import ReferenceEvaluator, verify
from mlpc.ir.ops import get_op
from mlpc.pass_infra import PassContext, PassManager
from mlpc.passes.fuse_attention import FuseAttentionPass
from mlpc.pipeline import default_pipeline
from mlpc.targets import get_target


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_zoo_transformer_attention_is_fused(exporter, tmp_path):
    path = zoo.export_onnx("transformer", tmp_path / "t.onnx", exporter=exporter, opset=17)
    loaded = load_model(path)
    PassManager(default_pipeline()).run(loaded.model, PassContext(verify_each=True))
    ops = [n.op_type for n in loaded.model.graph]
    assert ops.count("Attention") == 2 and "Softmax" not in ops, ops
    attention = next(n for n in loaded.model.graph if n.op_type == "Attention")
    assert attention.attributes.get_float("scale") == pytest.approx(0.25)  # 1/sqrt(d_head=16)
    x = zoo.example_inputs("transformer", seed=3)[0].numpy()
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    got_ref = ReferenceEvaluator(loaded.model).run({"x": x})["logits"]
    got_tvm = run(build(lower_graph(loaded.model.graph, 17), get_target("host")), [x])[0]
    np.testing.assert_allclose(got_ref, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_tvm, want, rtol=1e-4, atol=1e-5)


def _attention_model(scale_op="Div", mask=True, scale_const=True, shape=(2, 3, 12, 8), keys=10):
    b, h, s, d = shape
    nodes = [
        helper.make_node("MatMul", ["q", "kt"], ["scores"], name="qk"),
        helper.make_node(scale_op, ["scores", "c"], ["scaled"], name="scale"),
    ]
    last = "scaled"
    inputs = [("q", [b, h, s, d]), ("kt", [b, h, d, keys]), ("v", [b, h, keys, 5])]
    if mask:
        nodes.append(helper.make_node("Add", ["mask", last], ["masked"], name="mask"))  # mask first: commuted
        inputs.append(("mask", [1, 1, s, keys]))
        last = "masked"
    nodes += [
        helper.make_node("Softmax", [last], ["p"], axis=3, name="softmax"),
        helper.make_node("MatMul", ["p", "v"], ["y"], name="pv"),
    ]
    inits = []
    if scale_const:
        inits.append(helper.make_tensor("c", TensorProto.FLOAT, [], [np.sqrt(d)]))
    else:
        inputs.append(("c", []))
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, sh) for n, sh in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [b, h, s, 5])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal(sh).astype(np.float32) for n, sh in inputs}
    if mask:
        feeds["mask"] = np.triu(np.full((1, 1, s, keys), -1e4, np.float32), 1)
    if not scale_const:
        feeds["c"] = np.float32(2.0)
    return model, feeds


@pytest.mark.parametrize(
    "scale_op,mask,shape,keys",
    [
        ("Div", True, (2, 3, 12, 8), 10),
        ("Mul", False, (2, 3, 12, 8), 10),
        ("Mul", True, (2, 3, 12, 8), 10),
        ("Div", True, (2, 4, 34, 8), 40),
    ],  # big enough to run in parallel; 34 queries: tiles of 2
)
def test_masked_and_scaled_forms_match_onnxruntime(scale_op, mask, shape, keys):
    proto, feeds = _attention_model(scale_op, mask, shape=shape, keys=keys)
    want = ort.InferenceSession(proto.SerializeToString()).run(None, feeds)[0]
    model = ir.serde.deserialize_model(proto)
    result = FuseAttentionPass()(model.graph)
    assert result.modified and [n.op_type for n in model.graph] == ["Attention"]
    verify(model)
    scale = model.graph.node(0).attributes.get_float("scale")
    assert scale == pytest.approx(1 / np.sqrt(8) if scale_op == "Div" else np.sqrt(8))
    assert not FuseAttentionPass()(model.graph).modified
    np.testing.assert_allclose(ReferenceEvaluator(model).run(feeds)["y"], want, rtol=1e-5, atol=1e-6)
    got = run(
        build(lower_graph(model.graph, 17), get_target("host")), [feeds[v.name] for v in model.graph.inputs]
    )[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_runtime_scale_is_not_fused():
    proto, _ = _attention_model(scale_const=False)
    model = ir.serde.deserialize_model(proto)
    assert not FuseAttentionPass()(model.graph).modified


def test_softmax_over_another_axis_is_not_fused():
    proto, _ = _attention_model()
    for node in proto.graph.node:
        if node.op_type == "Softmax":
            node.attribute[0].i = 2
    model = ir.serde.deserialize_model(proto)
    assert not FuseAttentionPass()(model.graph).modified


def test_shape_inference_rejects_mismatched_keys():
    proto, _ = _attention_model(mask=False)
    model = ir.serde.deserialize_model(proto)
    FuseAttentionPass()(model.graph)
    node = model.graph.node(0)
    assert get_op("Attention").infer(node)[0].shape == (2, 3, 12, 5)
    node.inputs[2].shape = ir.Shape([2, 3, 9, 5])  # V has 9 keys, KT 10
    with pytest.raises(IRVerificationError, match="KT's last dim 10"):
        get_op("Attention").infer(node)
