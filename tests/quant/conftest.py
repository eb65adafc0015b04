"""Fixtures for the quantization tests: a small CNN trained on scikit-learn's digits (8×8)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@dataclass
class Digits:
    """The trained digits CNN as ONNX, and the data split."""

    model: onnx.ModelProto
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def train_digits_cnn(seed: int = 0, epochs: int = 10, width: int = 32) -> Digits:
    """Train Conv(1→w)→ReLU→MaxPool→Conv(w→2w)→ReLU→MaxPool→Flatten→Gemm(8w→64)→ReLU→Gemm(64→10)
    (w = `width`) on digits with torch (seeded) and write it as ONNX by hand (batch 1, opset 17)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(width, 2 * width, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8 * width, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    p = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["h"], name="fc1", transB=1),
        helper.make_node("Relu", ["h"], ["rh"], name="relu3"),
        helper.make_node("Gemm", ["rh", "w4", "b4"], ["logits"], name="fc2", transB=1),
    ]
    inits = {"w1": p["0.weight"], "b1": p["0.bias"], "w2": p["3.weight"], "b2": p["3.bias"],
             "w3": p["7.weight"], "b3": p["7.bias"], "w4": p["9.weight"], "b4": p["9.bias"]}
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return Digits(model, x_train, y_train, x_test, y_test)


def batched(model) -> onnx.ModelProto:
    """A copy of a batch-1 model (ModelProto or onnx_ir.Model) whose batch dimension is symbolic,
    so the reference evaluator runs a whole test set at once."""
    import onnx_ir as ir

    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else onnx.ModelProto.FromString(model.SerializeToString())
    del proto.graph.value_info[:]
    for vi in (*proto.graph.input, *proto.graph.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "N"
    return proto


@pytest.fixture(scope="session")
def digits() -> Digits:
    """The trained digits CNN (session-wide: trained once)."""
    return train_digits_cnn()
