"""Every built-in pass keeps numerics, leaves a valid graph and is idempotent — on random small
graphs (hypothesis) built from the patterns the passes target."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from mlpc.ir import ReferenceEvaluator, verify
from mlpc.pass_infra import PassContext
from mlpc.pass_registry import get_pass, list_passes

BUILTINS = [p.name for p in list_passes() if p.builtin]


def _const(name, array):
    return onnx.numpy_helper.from_array(np.asarray(array), name)


@st.composite
def small_graphs(draw):
    """A random chain over a [1, C, 6, 6] tensor mixing Conv/BatchNorm/Gemm, transposes, reshapes,
    identities, casts, dropout, relu/clip chains and duplicated subexpressions."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    channels = draw(st.sampled_from([2, 3, 4]))
    nodes, inits = [], []
    cur = "x"
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["conv_bn", "transpose_pair", "reshape_pair", "identity", "cast_pair",
                                     "dropout", "relu_relu", "clip_relu", "dup", "gemm_bn"]))
        out = f"v{i}"
        if kind == "conv_bn":
            inits += [_const(f"w{i}", rng.standard_normal((channels, channels, 3, 3)).astype(np.float32)),
                      _const(f"b{i}", rng.standard_normal(channels).astype(np.float32))]
            inits += [_const(f"{p}{i}", rng.uniform(lo, hi, channels).astype(np.float32))
                      for p, lo, hi in (("g", 0.5, 2), ("be", -1, 1), ("m", -1, 1), ("var", 0.5, 2))]
            nodes += [helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                      helper.make_node("BatchNormalization", [f"c{i}", f"g{i}", f"be{i}", f"m{i}", f"var{i}"], [out])]
        elif kind == "gemm_bn":  # per-pixel Gemm over channels, then BatchNorm on [pixels, C]
            inits += [_const(f"sh{i}", np.array([36, channels], np.int64)),
                      _const(f"shb{i}", np.array([1, 6, 6, channels], np.int64)),
                      _const(f"gw{i}", rng.standard_normal((channels, channels)).astype(np.float32))]
            inits += [_const(f"{p}{i}", rng.uniform(lo, hi, channels).astype(np.float32))
                      for p, lo, hi in (("g", 0.5, 2), ("be", -1, 1), ("m", -1, 1), ("var", 0.5, 2))]
            nodes += [helper.make_node("Transpose", [cur], [f"t{i}"], perm=[0, 2, 3, 1]),
                      helper.make_node("Reshape", [f"t{i}", f"sh{i}"], [f"r{i}"]),
                      helper.make_node("Gemm", [f"r{i}", f"gw{i}"], [f"gm{i}"]),
                      helper.make_node("BatchNormalization", [f"gm{i}", f"g{i}", f"be{i}", f"m{i}", f"var{i}"],
                                       [f"bn{i}"]),
                      helper.make_node("Reshape", [f"bn{i}", f"shb{i}"], [f"rb{i}"]),
                      helper.make_node("Transpose", [f"rb{i}"], [out], perm=[0, 3, 1, 2])]
        elif kind == "transpose_pair":
            nodes += [helper.make_node("Transpose", [cur], [f"t{i}"], perm=[0, 2, 3, 1]),
                      helper.make_node("Transpose", [f"t{i}"], [out], perm=[0, 3, 1, 2])]
        elif kind == "reshape_pair":
            inits += [_const(f"s{i}", np.array([1, -1], np.int64)),
                      _const(f"s2{i}", np.array([1, channels, 6, 6], np.int64))]
            nodes += [helper.make_node("Reshape", [cur, f"s{i}"], [f"r{i}"]),
                      helper.make_node("Reshape", [f"r{i}", f"s2{i}"], [out])]
        elif kind == "identity":
            nodes += [helper.make_node("Identity", [cur], [out])]
        elif kind == "cast_pair":
            nodes += [helper.make_node("Cast", [cur], [f"k{i}"], to=TensorProto.DOUBLE),
                      helper.make_node("Cast", [f"k{i}"], [out], to=TensorProto.FLOAT)]
        elif kind == "dropout":
            nodes += [helper.make_node("Dropout", [cur], [out])]
        elif kind == "relu_relu":
            nodes += [helper.make_node("Relu", [cur], [f"u{i}"]), helper.make_node("Relu", [f"u{i}"], [out])]
        elif kind == "clip_relu":
            inits += [_const(f"lo{i}", np.float32(-1.0)), _const(f"hi{i}", np.float32(0.5))]
            nodes += [helper.make_node("Clip", [cur, f"lo{i}", f"hi{i}"], [f"u{i}"]),
                      helper.make_node("Relu", [f"u{i}"], [out])]
        else:  # two identical subexpressions added together
            nodes += [helper.make_node("Sigmoid", [cur], [f"a{i}"]), helper.make_node("Sigmoid", [cur], [f"b{i}"]),
                      helper.make_node("Add", [f"a{i}", f"b{i}"], [out])]
        cur = out
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    for n, node in enumerate(nodes):
        node.name = f"n{n}_{node.op_type}"
    graph = helper.make_graph(nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 6, 6])], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _run(model_proto, x):
    return ReferenceEvaluator(model_proto).run({"x": x})["y"]


@pytest.mark.parametrize("name", BUILTINS)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(proto=small_graphs())
def test_pass_keeps_numerics_and_is_idempotent(name, proto):
    x = np.random.default_rng(0).standard_normal(
        [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    before = _run(proto, x)
    model = ir.serde.deserialize_model(proto)
    get_pass("canonicalize").factory()(model.graph)  # every pass runs after it: static shapes and types
    pass_ = get_pass(name).factory()
    first = pass_(model.graph, PassContext())
    model.graph = first.graph
    verify(model)
    assert [v.name for v in model.graph.outputs] == ["y"]
    after = _run(ir.serde.serialize_model(model), x)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * max(1.0, float(np.max(np.abs(before)))))
    assert not pass_(model.graph, PassContext()).modified, f"{name} is not idempotent"


def test_fold_batchnorm_removes_every_batchnorm():
    rng = np.random.default_rng(1)
    inits = [_const("w", rng.standard_normal((3, 3, 3, 3)).astype(np.float32))]
    inits += [_const(p, rng.uniform(0.5, 2, 3).astype(np.float32)) for p in ("g", "be", "m", "var")]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("BatchNormalization", ["c", "g", "be", "m", "var"], ["y"], name="bn")],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])], initializer=inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    model = ir.serde.deserialize_model(proto)
    assert get_pass("fold-batchnorm").factory()(model.graph).modified
    assert [n.op_type for n in model.graph] == ["Conv"]
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(ir.serde.serialize_model(model), x), _run(proto, x), rtol=1e-4, atol=1e-5)
