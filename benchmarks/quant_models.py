"""Small models trained on packaged data sets, for the quantization benchmark and tests:
a CNN on scikit-learn's digits (8×8 images) and a 1-D CNN on mnist1d (40-sample signals, made
by `mnist1d.make_dataset`, no download). Each returns the trained float model as ONNX and the
data split."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


@dataclass
class TrainedModel:
    """A trained model as ONNX (batch 1, input "x", output "logits"), and the data split."""

    model: onnx.ModelProto
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _fit(net, x: np.ndarray, y: np.ndarray, *, epochs: int, batch: int, seed: int, **adam: float) -> None:
    """Train `net` in place: Adam (`adam` its options), cross-entropy, shuffled batches (seeded)."""
    import torch

    opt = torch.optim.Adam(net.parameters(), **adam)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()


def _mnist1d(samples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train [N, 1, 40] float32, y_train int64, x_test, y_test) of `mnist1d.make_dataset` with
    `samples` training signals plus a quarter as many test signals (seeded; no download)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = samples + samples // 4
    args.seed = seed
    data = make_dataset(args)
    x_train = data["x"].astype(np.float32)[:, None]
    x_test = data["x_test"].astype(np.float32)[:, None]
    return x_train, data["y"].astype(np.int64), x_test, data["y_test"].astype(np.int64)


def _export(net, example: np.ndarray) -> onnx.ModelProto:
    """`net` (in eval mode) as ONNX through torch's legacy exporter: input "x", output "logits", opset 17."""
    import io

    import torch

    buf = io.BytesIO()
    torch.onnx.export(net, (torch.from_numpy(example),), buf, input_names=["x"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def train_digits_cnn(seed: int = 0, epochs: int = 10, width: int = 32) -> TrainedModel:
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
    _fit(net, x_train, y_train, epochs=epochs, batch=64, seed=seed, lr=3e-3)
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
    return TrainedModel(model, x_train, y_train, x_test, y_test)


Digits = TrainedModel


def train_mnist1d_cnn(seed: int = 0, epochs: int = 15, width: int = 32, samples: int = 4000) -> TrainedModel:
    """Train Conv1d(1→w,5)→ReLU→MaxPool(2)→Conv1d(w→2w,5)→ReLU→MaxPool(2)→Flatten→Linear(·→128)→ReLU
    →Linear(128→10) on mnist1d (seeded) and export it to ONNX (batch 1, opset 17)."""
    import torch

    x_train, y_train, x_test, y_test = _mnist1d(samples, seed)
    torch.manual_seed(seed)
    length = x_train.shape[-1]
    flat = 2 * width * (((length - 4) // 2 - 4) // 2)
    net = torch.nn.Sequential(
        torch.nn.Conv1d(1, width, 5), torch.nn.ReLU(), torch.nn.MaxPool1d(2),
        torch.nn.Conv1d(width, 2 * width, 5), torch.nn.ReLU(), torch.nn.MaxPool1d(2),
        torch.nn.Flatten(), torch.nn.Linear(flat, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10),
    )
    _fit(net, x_train, y_train, epochs=epochs, batch=100, seed=seed, lr=2e-3, weight_decay=1e-4)
    net.eval()
    return TrainedModel(_export(net, x_test[:1]), x_train, y_train, x_test, y_test)


def train_digits_zoo(name: str, seed: int = 0, epochs: int = 12) -> TrainedModel:
    """Train the zoo's CIFAR-sized `name` ("mobilenet": MobileNet-V2 with depthwise convs and
    ReLU6, "resnet": three residual stages; both with BatchNorm) on digits, each 8×8 image
    bilinearly upsampled to 32×32 and repeated over 3 channels (seeded, Adam, batch 64), and
    export it with torch's legacy exporter (batch 1, opset 17, BatchNorm in eval mode)."""

    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from mlpc import zoo

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32))[:, None]
    x = torch.nn.functional.interpolate(x, size=32, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    x_train, x_test, y_train, y_test = train_test_split(x.numpy(), digits.target, test_size=0.25, random_state=0)
    torch.manual_seed(seed)
    net = {"mobilenet": zoo.MobileNetV2, "resnet": zoo.ResNet}[name]()
    net.train()
    _fit(net, x_train, y_train, epochs=epochs, batch=64, seed=seed, lr=3e-3)
    net.eval()
    return TrainedModel(_export(net, x_test[:1]), x_train, y_train, x_test, y_test)


def train_mnist1d_deep_cnn(
    seed: int = 0, epochs: int = 30, width: int = 8, depth: int = 6, samples: int = 8000
) -> TrainedModel:
    """Train a deep, narrow 1-D CNN on mnist1d (seeded): Conv1d(1→w,5) then `depth`−1
    Conv1d(w→w,3) (padding keeps the length), each with ReLU, a MaxPool(2) after every second of
    them, Flatten, Linear(→10) — few weights per layer, so 4-bit weights cost accuracy (unlike
    the wide CNN of `train_mnist1d_cnn`). `samples` training signals and a quarter as many test
    ones; exported to ONNX (batch 1, opset 17)."""

    import torch

    x_train, y_train, x_test, y_test = _mnist1d(samples, seed)
    torch.manual_seed(seed)
    layers: list = [torch.nn.Conv1d(1, width, 5, padding=2), torch.nn.ReLU()]
    length = x_train.shape[-1]
    for i in range(depth - 1):
        layers += [torch.nn.Conv1d(width, width, 3, padding=1), torch.nn.ReLU()]
        if i % 2 == 1:
            layers.append(torch.nn.MaxPool1d(2))
            length //= 2
    net = torch.nn.Sequential(*layers, torch.nn.Flatten(), torch.nn.Linear(width * length, 10))
    _fit(net, x_train, y_train, epochs=epochs, batch=100, seed=seed, lr=2e-3, weight_decay=1e-4)
    net.eval()
    return TrainedModel(_export(net, x_test[:1]), x_train, y_train, x_test, y_test)


def _patch_transformer(length: int, patch: int, d: int, heads: int, ff: int, depth: int, classes: int):
    """A pre-LayerNorm transformer encoder classifier over non-overlapping patches of a 1-D signal:
    Linear patch embedding + learned positions, `depth` blocks (multi-head self-attention with
    separate q/k/v/o Linear layers, GELU MLP of width `ff`), LayerNorm, mean over tokens, Linear head.
    Written with plain Linear/matmul so the legacy exporter gives MatMul layers mlpc quantizes."""
    import torch

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.q, self.k, self.v, self.o = (torch.nn.Linear(d, d) for _ in range(4))
            self.f1, self.f2 = torch.nn.Linear(d, ff), torch.nn.Linear(ff, d)

        def forward(self, x):
            b, t, _ = x.shape
            h = self.ln1(x)

            def split(z):
                return z.reshape(b, t, heads, d // heads).transpose(1, 2)

            q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
            a = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5, -1) @ v
            x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
            return x + self.f2(torch.nn.functional.gelu(self.f1(self.ln2(x))))

    class PatchTransformer(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Linear(patch, d)
            self.pos = torch.nn.Parameter(torch.randn(1, length // patch, d) * 0.02)
            self.blocks = torch.nn.Sequential(*(Block() for _ in range(depth)))
            self.ln = torch.nn.LayerNorm(d)
            self.head = torch.nn.Linear(d, classes)

        def forward(self, x):
            x = self.embed(x.reshape(x.shape[0], length // patch, patch)) + self.pos
            return self.head(self.ln(self.blocks(x)).mean(1))

    return PatchTransformer()


def train_mnist1d_transformer(
    seed: int = 0, epochs: int = 40, samples: int = 8000, d: int = 32, heads: int = 4, ff: int = 64,
    depth: int = 2, patch: int = 4,
) -> TrainedModel:
    """Train a small transformer encoder on mnist1d (seeded): the 40-sample signal as 40/`patch`
    tokens of `patch` samples, `depth` pre-LN blocks of width `d` (`_patch_transformer`), mean
    pooling, Linear(→10). `samples` training signals and a quarter as many test ones; exported to
    ONNX (batch 1, opset 17)."""
    import torch

    x_train, y_train, x_test, y_test = _mnist1d(samples, seed)
    torch.manual_seed(seed)
    net = _patch_transformer(x_train.shape[-1], patch, d, heads, ff, depth, 10)
    _fit(net, x_train, y_train, epochs=epochs, batch=100, seed=seed, lr=2e-3, weight_decay=1e-4)
    net.eval()
    return TrainedModel(_export(net, x_test[:1]), x_train, y_train, x_test, y_test)


def train_mnist1d_dscnn(
    seed: int = 0, epochs: int = 30, samples: int = 8000, width: int = 32, blocks: int = 4
) -> TrainedModel:
    """Train a depthwise-separable 1-D CNN on mnist1d (seeded): Conv1d(1→w,5)+BN+ReLU, then `blocks`
    × (depthwise Conv1d(w→w,5, groups w)+BN+ReLU, pointwise Conv1d(w→w,1)+BN+ReLU), a MaxPool(2)
    after every second block, Flatten, Linear(→128), ReLU, Linear(128→10): tiny depthwise layers,
    one big dense layer. BatchNorm is folded by the exporter (batch 1, opset 17)."""
    import torch

    x_train, y_train, x_test, y_test = _mnist1d(samples, seed)
    torch.manual_seed(seed)
    layers: list = [torch.nn.Conv1d(1, width, 5, padding=2), torch.nn.BatchNorm1d(width), torch.nn.ReLU()]
    length = x_train.shape[-1]
    for i in range(blocks):
        layers += [
            torch.nn.Conv1d(width, width, 5, padding=2, groups=width), torch.nn.BatchNorm1d(width), torch.nn.ReLU(),
            torch.nn.Conv1d(width, width, 1), torch.nn.BatchNorm1d(width), torch.nn.ReLU(),
        ]
        if i % 2 == 1:
            layers.append(torch.nn.MaxPool1d(2))
            length //= 2
    net = torch.nn.Sequential(
        *layers, torch.nn.Flatten(), torch.nn.Linear(width * length, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)
    )
    net.train()
    _fit(net, x_train, y_train, epochs=epochs, batch=100, seed=seed, lr=2e-3, weight_decay=1e-4)
    net.eval()
    return TrainedModel(_export(net, x_test[:1]), x_train, y_train, x_test, y_test)


def train_mnist1d_wide_head(
    seed: int = 0, epochs: int = 30, samples: int = 8000, widths: tuple[int, ...] = (8, 8, 16, 16),
    batchnorm: bool = False, hidden: int = 512, dropout: float = 0.5, lr: float = 1e-3,
) -> TrainedModel:
    """Train a VGG-style 1-D CNN on mnist1d (seeded): narrow convs of `widths` channels (the first
    kernel 5, the others 3, padding keeps the length, optional BatchNorm, ReLU, a MaxPool(2) after
    every second conv), then a wide classifier head Flatten → Linear(→`hidden`) → ReLU → Dropout →
    Linear(`hidden`→`hidden`) → ReLU → Dropout → Linear(→10): a few thousand fragile conv weights
    and a few hundred thousand dense ones (the AlexNet/VGG shape, where Deep Compression found the
    dense layers tolerate 2-bit weights). Exported to ONNX (batch 1, opset 17; BatchNorm folded)."""
    import torch

    x_train, y_train, x_test, y_test = _mnist1d(samples, seed)
    torch.manual_seed(seed)
    layers: list = []
    length, cin = x_train.shape[-1], 1
    for i, w in enumerate(widths):
        k = 5 if i == 0 else 3
        layers += [torch.nn.Conv1d(cin, w, k, padding=k // 2)]
        layers += [torch.nn.BatchNorm1d(w)] if batchnorm else []
        layers += [torch.nn.ReLU()]
        if i % 2 == 1 and i > 0:
            layers.append(torch.nn.MaxPool1d(2))
            length //= 2
        cin = w
    net = torch.nn.Sequential(
        *layers, torch.nn.Flatten(),
        torch.nn.Linear(cin * length, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Dropout(dropout),
        torch.nn.Linear(hidden, 10),
    )
    net.train()
    _fit(net, x_train, y_train, epochs=epochs, batch=100, seed=seed, lr=lr, weight_decay=1e-4)
    net.eval()
    return TrainedModel(_export(net, x_test[:1]), x_train, y_train, x_test, y_test)
