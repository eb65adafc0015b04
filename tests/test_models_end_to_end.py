"""The zoo's model families, exported from PyTorch in the test, compiled for the host and verified
against onnxruntime (max abs error ≤ 1e-4 · max|reference|)."""
from __future__ import annotations

import pytest

import mlpc
from mlpc import zoo

CASES = [
    ("mlp", "dynamo", 18),
    ("resnet", "dynamo", 18),
    ("mobilenet", "dynamo", 17),
    ("conv1d", "dynamo", 18),
    ("transformer", "dynamo", 18),
    # The legacy TorchScript exporter with a symbolic batch: shape computations must fold.
    ("transformer", "legacy", 17),
    ("resnet", "legacy", 13),
]


@pytest.mark.parametrize("name, exporter, opset", CASES, ids=[f"{n}-{e}-{o}" for n, e, o in CASES])
def test_zoo_model_compiles_and_verifies(tmp_path, name, exporter, opset):
    dynamic = exporter == "legacy"
    path = zoo.export_onnx(name, tmp_path / f"{name}.onnx", opset=opset, exporter=exporter, dynamic_batch=dynamic)
    shapes = None
    if dynamic:
        spec = zoo.get_spec(name)
        shapes = dict(zip(spec.input_names, spec.input_shapes(2)))
    artifact = mlpc.compile(path, target="host", output_dir=tmp_path / "out", input_shapes=shapes, verify=True)
    report = artifact.verification
    assert report["passed"], report
    assert all(o["rel_err"] <= 1e-4 for o in report["outputs"])
    if report["outputs"][0]["top1_agreement"] is not None:
        assert report["outputs"][0]["top1_agreement"] == 1.0


def test_torch_module_directly():
    module = zoo.build("conv1d")
    inputs = zoo.example_inputs("conv1d", batch=2)
    artifact = mlpc.compile(module, example_inputs=inputs, verify=True)
    assert artifact.verification["reference"] == "pytorch" and artifact.verification["passed"]
