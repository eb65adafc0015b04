"""Shared fixtures: a one-layer model small enough to tune with a handful of trials."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def dense_model(path: Path, rows: int = 4, features: int = 128) -> Path:
    """Write y = relu(x @ W + b) (x: rows×features) as an ONNX file; return its path."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((features, features)).astype(np.float32) * 0.1, "W")
    bias = numpy_helper.from_array(rng.standard_normal(features).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["z"]),
         helper.make_node("Relu", ["z"], ["y"])],
        "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, features])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, features])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, path)
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every tuning test uses its own user cache, never ~/.cache."""
    root = tmp_path_factory.mktemp("mlpc-cache")
    monkeypatch.setenv("MLPC_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="module")
def dense_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dense model's ONNX file."""
    return dense_model(tmp_path_factory.mktemp("model") / "dense.onnx")
