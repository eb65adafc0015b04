"""PyTorch modules compile straight from Python, verified against PyTorch itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import mlpc


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(6)
        self.fc = torch.nn.Linear(6, 5)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean(dim=(2, 3)))


def test_compile_module_verified_against_pytorch(tmp_path):
    module = SmallNet().eval()
    x = torch.randn(2, 3, 10, 10)
    artifact = mlpc.compile(module, example_inputs=(x,), output_dir=tmp_path / "out", verify=True)
    assert artifact.verification["reference"] == "pytorch" and artifact.verification["passed"]
    got = artifact.run({artifact.inputs[0]["name"]: x.numpy()})
    ref = module(x).detach().numpy()
    out = next(iter(got.values()))
    assert np.max(np.abs(out - ref)) <= 1e-4 * np.max(np.abs(ref))


def test_module_from_input_shapes():
    artifact = mlpc.compile(SmallNet(), input_shapes={"x": (1, 3, 8, 8)})
    assert artifact.inputs[0]["shape"] == [1, 3, 8, 8]


def test_module_without_inputs_is_a_clear_error():
    with pytest.raises(mlpc.InputError, match="example_inputs"):
        mlpc.compile(SmallNet())


def test_untraceable_module_is_a_clear_error():
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x * 2
            return x

    with pytest.raises(mlpc.ModelLoadError, match="torch.export"):
        mlpc.compile(DataDependent(), example_inputs=(torch.randn(2, 2),))
