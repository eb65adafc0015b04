"""Shared fixtures: small ONNX models written to disk, and the verifier on in every compile."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

# The IR verifier runs after every pass in every compile the tests make.
os.environ.setdefault("MLPC_VERIFY_PASSES", "1")


def make_tiny_cnn(batch: int | str = "N", opset: int = 17) -> onnx.ModelProto:
    """Conv → Relu → GlobalAveragePool → Flatten → Gemm, with deterministic weights."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    b = rng.standard_normal(8).astype(np.float32) * 0.1
    fc = rng.standard_normal((4, 8)).astype(np.float32) * 0.5
    fcb = rng.standard_normal(4).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 4])],
        initializer=[onnx.numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fc, "fc"), (fcb, "fcb"))],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)


@pytest.fixture
def tiny_cnn_path(tmp_path):
    """A tiny CNN with a symbolic batch dimension 'N', saved as tiny.onnx."""
    path = tmp_path / "tiny.onnx"
    onnx.save(make_tiny_cnn(), path)
    return path


@pytest.fixture
def tiny_cnn_static_path(tmp_path):
    """The tiny CNN with batch fixed at 2."""
    path = tmp_path / "tiny_static.onnx"
    onnx.save(make_tiny_cnn(batch=2), path)
    return path
