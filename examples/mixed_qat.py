"""Hardware-aware mixed precision, then quantization-aware training at those bits, then an
integer build: the whole low-bit flow on a small CNN trained here on scikit-learn's digits.

    python examples/mixed_qat.py [--size-budget 0.1] [--epochs 3]

1. train a float CNN (PyTorch) and export it to ONNX;
2. `mlpc.mixed_precision`: per-layer sensitivity on calibration samples and HAWQ-V3's ILP for the
   weight bits under a size budget (a fraction of the fp32 model), with an HTML report;
3. `mlpc.qat.prepare` at those bits (the ONNX model converted to torch.fx, Brevitas layers),
   a few epochs of `mlpc.qat.train`, `mlpc.qat.export` to QONNX;
4. `mlpc.compile` the QONNX model for this CPU and measure the compiled build's accuracy.
"""
from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-budget", type=float, default=0.1)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()

    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import mlpc
    import mlpc.qat

    torch.set_num_threads(1)
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(x, digits.target, test_size=0.25, random_state=0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(128, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10),
    )
    mlpc.qat.train(net, x_train, y_train, epochs=10, lr=3e-3)
    print(f"fp32 accuracy: {mlpc.qat.accuracy(net, x_test, y_test):.2f} %")
    buf = io.BytesIO()
    torch.onnx.export(net, (torch.from_numpy(x_test[:1]),), buf, input_names=["x"], output_names=["logits"],
                      opset_version=17, dynamo=False)

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "digits.onnx"
        model.write_bytes(buf.getvalue())
        calib = {"x": x_train[:128]}
        result = mlpc.mixed_precision(model, calib, target="host", size_budget=args.size_budget,
                                      report=Path(tmp) / "mixed.html")
        print(f"mixed precision bits: {result.bits} "
              f"({100 * result.allocation.costs['size'] / result.fp32_bytes:.1f} % of fp32)")

        # the ONNX model through torch.fx, Brevitas layers at those bits, activation ranges calibrated
        qnet = mlpc.qat.prepare(model, result, calibration=x_train[:256])
        print(f"before QAT: {mlpc.qat.accuracy(qnet, x_test, y_test):.2f} %")
        mlpc.qat.train(qnet, x_train, y_train, epochs=args.epochs, lr=1e-3)
        print(f"after {args.epochs} QAT epochs: {mlpc.qat.accuracy(qnet, x_test, y_test):.2f} %")

        qonnx = mlpc.qat.export(qnet, Path(tmp) / "digits_qonnx.onnx", x_test[:1])
        art = mlpc.compile(qonnx, target="host", output_dir=Path(tmp) / "out")
        name, out = art.inputs[0]["name"], art.outputs[0]["name"]
        hits = sum(int(np.argmax(art.run({name: x_test[i:i + 1]})[out]) == y_test[i]) for i in range(len(x_test)))
        kernels = sorted(op for op in art.manifest["stats"]["ops"] if op.startswith("mlpc::"))
        print(f"compiled integer build ({', '.join(kernels)}): {100 * hits / len(x_test):.2f} %")


if __name__ == "__main__":
    main()
