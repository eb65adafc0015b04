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


# -- torch checkpoints: weights_only=True only -----------------------------------------------


class _Payload:
    """Unpickling this touches a marker file: what a hostile checkpoint's code would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def test_hostile_checkpoint_is_refused_without_running_its_code(tmp_path):
    from mlpc.frontend import load_torch_checkpoint

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.ones(2), "trap": _Payload(str(marker))}, path)
    with pytest.raises(mlpc.ModelLoadError, match="evil.pt: refused.*weights_only=True"):
        load_torch_checkpoint(path)
    with pytest.raises(mlpc.ModelLoadError, match="evil.pt: refused"):
        mlpc.compile(path, target="host")
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is real: a plain load runs it
    assert marker.exists()


def test_state_dict_loads_safely_but_is_not_a_network(tmp_path):
    from mlpc.frontend import load_torch_checkpoint

    module = torch.nn.Linear(3, 2)
    path = tmp_path / "weights.pth"
    torch.save(module.state_dict(), path)
    loaded = load_torch_checkpoint(path)
    assert set(loaded) == {"weight", "bias"} and torch.equal(loaded["weight"], module.weight)
    with pytest.raises(mlpc.ModelLoadError, match="weights only .*load_state_dict"):
        mlpc.compile(path, target="host")


def test_export_archive_and_garbage_checkpoints_are_refused(tmp_path):
    from mlpc.frontend import load_torch_checkpoint

    archive = tmp_path / "model.pt2"
    archive.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(mlpc.ModelLoadError, match="weights_only=False"):
        mlpc.compile(archive, target="host")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x04 definitely not a checkpoint")
    with pytest.raises(mlpc.ModelLoadError, match="garbage.pt"):
        load_torch_checkpoint(garbage)


def test_every_torch_load_in_mlpc_is_weights_only():
    import re
    from pathlib import Path

    root = Path(mlpc.__file__).resolve().parent.parent
    calls = []
    for source in [*root.glob("mlpc/**/*.py"), *root.glob("passes/**/*.py"), *root.glob("backends/**/*.py")]:
        for match in re.finditer(r"torch\.load\(([^)]*)\)", source.read_text()):
            calls.append((source.name, match.group(1)))
    assert calls, "the scan found no torch.load call: the pattern is broken"
    assert all("weights_only=True" in args for _, args in calls), calls
