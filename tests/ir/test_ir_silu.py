"""mlpc::SiLU: schema, inference and kernel against PyTorch."""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper

from mlpc.ir import ReferenceEvaluator


def test_silu_kernel_matches_torch():
    graph = helper.make_graph([helper.make_node("SiLU", ["x"], ["y"], domain="mlpc")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("mlpc", 1)],
                              ir_version=10)
    onnx.checker.check_model(model)
    model.graph.output[0].type.tensor_type.ClearField("shape")
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    assert [d.dim_value for d in inferred.graph.output[0].type.tensor_type.shape.dim] == [3, 5]
    x = np.linspace(-8, 8, 15, dtype=np.float32).reshape(3, 5)
    got = ReferenceEvaluator(model).run({"x": x})["y"]
    np.testing.assert_allclose(got, torch.nn.functional.silu(torch.from_numpy(x)).numpy(), rtol=1e-6, atol=1e-7)
