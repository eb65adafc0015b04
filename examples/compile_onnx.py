"""Compile an ONNX model for this machine, verify it, and run it — the whole Python API in one file.

    python examples/compile_onnx.py                 # uses mlpc.zoo's ResNet-style CNN
    python examples/compile_onnx.py model.onnx x=1x3x224x224
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

import mlpc
from mlpc.frontend import parse_input_shape


def main(argv: list[str]) -> None:
    """Compile argv[0] (or a zoo model) with the input shapes in argv[1:]; print what happened."""
    workdir = Path(tempfile.mkdtemp(prefix="mlpc-example-"))
    if argv:
        model_path, shapes = Path(argv[0]), dict(parse_input_shape(s) for s in argv[1:])
    else:
        from mlpc import zoo

        model_path, shapes = zoo.export_onnx("resnet", workdir / "resnet.onnx"), {}
    artifact = mlpc.compile(model_path, target="host", output_dir=workdir / "artifact",
                            input_shapes=shapes, verify=True)
    stats = artifact.manifest["stats"]
    print(f"compiled {model_path.name}: {stats['nodes']} nodes, {stats['macs']:,} MACs → {artifact.path}")
    print("verified against onnxruntime:", artifact.verification["passed"])
    rng = np.random.default_rng(0)
    inputs = {spec["name"]: rng.standard_normal(spec["shape"]).astype(spec["dtype"]) for spec in artifact.inputs}
    for name, value in mlpc.load(artifact.path).run(inputs).items():
        print(f"output {name}: shape {value.shape}, first values {np.round(value.ravel()[:4], 4)}")


if __name__ == "__main__":
    main(sys.argv[1:])
