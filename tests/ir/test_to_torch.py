"""mlpc.ir.to_torch: ONNX graphs as torch.fx modules with the numbers onnxruntime gives."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from mlpc.errors import UnsupportedOpError
from mlpc.ir.to_torch import to_torch
from mlpc.mixed.sensitivity import prepare_graph


def _ort(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _bn_cnn() -> onnx.ModelProto:
    """Conv(asymmetric pads) → BatchNorm → Relu → AveragePool → Conv(group 2) + residual Add →
    GlobalAveragePool → Reshape → MatMul → Softmax, random weights."""
    rng = np.random.default_rng(0)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [
        init("w1", 4, 3, 3, 3),
        init("b1", 4),
        init("g", 4),
        init("be", 4),
        init("m", 4),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "v"),
        init("w2", 4, 2, 3, 3),
        init("wm", 4, 5),
        numpy_helper.from_array(np.array([1, 4], np.int64), "shape"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[0, 1, 1, 2]),
        helper.make_node("BatchNormalization", ["c1", "g", "be", "m", "v"], ["bn"], name="bn1"),
        helper.make_node("Relu", ["bn"], ["r1"], name="relu1"),
        helper.make_node("AveragePool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], group=2),
        helper.make_node("Add", ["c2", "p1"], ["s"], name="add"),
        helper.make_node("GlobalAveragePool", ["s"], ["gap"], name="gap"),
        helper.make_node("Reshape", ["gap", "shape"], ["flat"], name="reshape"),
        helper.make_node("MatMul", ["flat", "wm"], ["mm"], name="head"),
        helper.make_node("Softmax", ["mm"], ["y"], name="softmax", axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "bn_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 9])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_matches_onnxruntime_on_a_cnn_with_batchnorm_pools_and_residual():
    model = _bn_cnn()
    gm = to_torch(model)  # canonicalized, BatchNorm kept
    x = np.random.default_rng(1).standard_normal((1, 3, 9, 9)).astype(np.float32)
    got = gm(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(got, _ort(model, x), rtol=1e-5, atol=1e-6)
    mods = {type(m).__name__ for m in gm.modules()}
    assert {"Conv2d", "BatchNorm2d", "ReLU", "AvgPool2d", "Linear"} <= mods
    assert gm.onnx_names["conv1"] == "conv1" and gm.input_names == ["x"]


def test_matches_onnxruntime_on_the_benchmark_cnns():
    from benchmarks.quant_models import train_digits_cnn

    trained = train_digits_cnn(epochs=1, width=8)
    gm = to_torch(prepare_graph(trained.model))
    x = trained.x_test[:1]
    np.testing.assert_allclose(
        gm(torch.from_numpy(x)).detach().numpy(), _ort(trained.model, x), rtol=1e-5, atol=1e-5
    )
    # batch-1 graphs run on a batch (what Hessian sensitivity and QAT need)
    assert gm(torch.from_numpy(trained.x_test[:7])).shape == (7, 10)


def test_unsupported_ops_are_all_named():
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="ok"),
            helper.make_node("Hardmax", ["a"], ["b"], name="hm"),
            helper.make_node("TopK", ["b", "k"], ["y", "i"], name="topk"),
        ],
        "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])],
        initializer=[numpy_helper.from_array(np.array([2], np.int64), "k")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    import onnx_ir as ir

    with pytest.raises(UnsupportedOpError, match=r"hm \(Hardmax\), topk \(TopK\)"):
        to_torch(ir.serde.deserialize_model(model))
