"""simplify: regression tests for graph outputs that CSE and identity elimination must keep."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnx import TensorProto, helper

import mlpc
from mlpc.pass_infra import PassContext, PassManager
from mlpc.pass_registry import get_pass


def _two_equal_outputs():
    # Found by tests/fuzz (quantized graphs, every value made an output): two identical no-op
    # Transposes, both graph outputs. CSE turns the second into Identity(first); the no-op rule
    # turns the first into Identity(x); onnx-ir's identity elimination then renamed `a` to `b`
    # and the graph returned `b` twice, so `a` went missing from the compiled outputs (KeyError).
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6])
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], perm=[0, 1]),
        helper.make_node("Transpose", ["x"], ["b"], perm=[0, 1]),
        helper.make_node("Relu", ["a"], ["c"]),
    ]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 6]) for n in ("b", "c", "a")]
    graph = helper.make_graph(nodes, "two_equal_outputs", [x], outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_simplify_keeps_every_output_name_when_outputs_coincide():
    model = ir.serde.deserialize_model(_two_equal_outputs())
    log = PassManager([get_pass("simplify").factory()]).run(model, PassContext(verify_each=True))
    assert [r.modified for r in log] == [True]
    assert [v.name for v in model.graph.outputs] == ["b", "c", "a"]


def test_compiled_model_returns_every_output_when_outputs_coincide():
    x = np.arange(-3, 3, dtype=np.float32).reshape(1, 6)
    got = mlpc.compile(_two_equal_outputs(), target="host").run({"x": x})
    assert sorted(got) == ["a", "b", "c"]
    np.testing.assert_array_equal(got["a"], x)
    np.testing.assert_array_equal(got["b"], x)
    np.testing.assert_array_equal(got["c"], np.maximum(x, 0))
