"""Small networks for the FPGA tests and benchmark: a CNN trained on scikit-learn's digits (8×8),
conv3x3 (pad 1) → ReLU → MaxPool 2 → conv3x3 → ReLU → Flatten → Gemm, written as ONNX by hand."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def train_digits_cnn(c1: int = 8, c2: int = 16, epochs: int = 12, seed: int = 0) -> tuple[onnx.ModelProto, dict]:
    """Train the CNN (torch, seeded) and return (model, data) with data = x_train, y_train, x_test,
    y_test as (N, 1, 8, 8) float32 images in [0, 1] and labels."""
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    split = 1400
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, c1, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(c1, c2, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(c2 * 4, 10))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    xt, yt = torch.from_numpy(x[:split]), torch.from_numpy(y[:split])
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
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("Flatten", ["r2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w3", "b3"], ["logits"], name="fc", transB=1),
    ]
    inits = {"w1": p["0.weight"], "b1": p["0.bias"], "w2": p["3.weight"], "b2": p["3.bias"],
             "w3": p["6.weight"], "b3": p["6.bias"]}
    graph = helper.make_graph(nodes, "digits_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    data = {"x_train": x[:split], "y_train": y[:split], "x_test": x[split:], "y_test": y[split:]}
    return model, data


# FINN's CNV (finn-examples bnn-pynq, after Umuroglu et al. 2017): valid 3×3 convolutions
# 3→64→64, pool, 64→128→128, pool, 128→256→256, then 256→512→512→10 fully connected.
CNV_CHANNELS = (3, 64, 64, 128, 128, 256, 256)
CNV_FC = (256, 512, 512, 10)


def cnv_model(seed: int = 0) -> onnx.ModelProto:
    """FINN's CNV topology on 3×32×32 inputs with torch's default (untrained) initialization, as
    ONNX (batch 1, opset 17): for hardware figures only (CIFAR-10 is not packaged here)."""
    import torch

    torch.manual_seed(seed)
    nodes, inits, prev = [], {}, "x"
    for i in range(6):
        conv = torch.nn.Conv2d(CNV_CHANNELS[i], CNV_CHANNELS[i + 1], 3)
        inits[f"cw{i}"], inits[f"cb{i}"] = conv.weight.detach().numpy(), conv.bias.detach().numpy()
        nodes += [helper.make_node("Conv", [prev, f"cw{i}", f"cb{i}"], [f"c{i}"], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev = f"r{i}"
        if i in (1, 3):
            nodes.append(helper.make_node("MaxPool", [prev], [f"p{i}"], name=f"pool{i}", kernel_shape=[2, 2],
                                          strides=[2, 2]))
            prev = f"p{i}"
    nodes.append(helper.make_node("Flatten", [prev], ["f"], name="flatten"))
    prev = "f"
    for i in range(3):
        fc = torch.nn.Linear(CNV_FC[i], CNV_FC[i + 1])
        inits[f"fw{i}"], inits[f"fb{i}"] = fc.weight.detach().numpy(), fc.bias.detach().numpy()
        out = "logits" if i == 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"fw{i}", f"fb{i}"], [out], name=f"fc{i}", transB=1))
        if i < 2:
            nodes.append(helper.make_node("Relu", [out], [f"hr{i}"], name=f"fc_relu{i}"))
            prev = f"hr{i}"
    graph = helper.make_graph(nodes, "cnv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
