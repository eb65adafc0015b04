"""Fixtures for the mixed-precision and QAT tests: an MLP trained on scikit-learn's digits, as a
torch module and as ONNX (Gemm nodes fc1, fc2, fc3), and a copy whose fc2 is made fragile."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


@dataclass
class DigitsMLP:
    """The trained MLP: `net` (torch, input (N, 64)), `model` (ONNX, input "x" (1, 64)) and the data."""

    net: object
    model: onnx.ModelProto
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def mlp_onnx(weights: list[tuple[np.ndarray, np.ndarray]]) -> onnx.ModelProto:
    """Gemm(transB)→Relu→…→Gemm as ONNX, layers named fc1, fc2, ..., input x (1, 64), output logits."""
    nodes, inits, x = [], [], "x"
    for i, (w, b) in enumerate(weights, 1):
        out = "logits" if i == len(weights) else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [out], name=f"fc{i}", transB=1))
        inits += [
            numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
            numpy_helper.from_array(b.astype(np.float32), f"b{i}"),
        ]
        if i < len(weights):
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            x = f"r{i}"
    graph = helper.make_graph(
        nodes,
        "digits_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def layer_weights(net) -> list[tuple[np.ndarray, np.ndarray]]:
    """(weight, bias) of each Linear of a Sequential MLP as NumPy arrays."""
    import torch

    return [
        (m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
        for m in net
        if isinstance(m, torch.nn.Linear)
    ]


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """Tiny models train 20-30x slower with torch's 2 threads on a loaded 2-core machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def digits_mlp() -> DigitsMLP:
    """64→64→64→10 ReLU MLP trained on digits (seeded, 30 epochs, about 2 s)."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from benchmarks.quant_models import _fit

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(-1, 64)
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )
    _fit(net, x_train, y_train, epochs=30, batch=64, seed=0, lr=3e-3)
    net.eval()
    return DigitsMLP(net, mlp_onnx(layer_weights(net)), x_train, y_train, x_test, y_test)


def make_fragile(weights: list[tuple[np.ndarray, np.ndarray]], alpha: float = 0.01, outlier: float = 1.0):
    """The same function with fc2 fragile: hidden unit 0 of fc1 is made dead (ReLU of −1), fc2's
    weights and bias are scaled by `alpha` (fc3's weights by 1/alpha: ReLU is positively
    homogeneous) and every output channel of fc2 gets one `outlier` weight on the dead unit —
    a tiny weight range with one outlier, and the same outputs."""
    (w1, b1), (w2, b2), (w3, b3) = [(w.copy(), b.copy()) for w, b in weights]
    w1[0], b1[0] = 0.0, -1.0
    w2, b2 = w2 * alpha, b2 * alpha
    w3 = w3 / alpha
    w2[:, 0] = outlier
    return [(w1, b1), (w2, b2), (w3, b3)]
