"""Quantized aarch64 bundles (w8a8, w4a8) of the zoo CNN and transformer encoder run under
qemu-user bit-exact with the host's integer build: same integer graph, same int32 accumulation
and fixed-point requantization, whatever instructions each CPU's kernels use."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import onnx
import pytest

from mlpc import zoo
from mlpc.backends.tvm.cross import toolchain
from mlpc.bundle import open_bundle
from mlpc.cli import main
from mlpc.targets import get_target

from .conftest import require_arm

INTEGER_OPS = ("mlpc::IntegerConv", "mlpc::IntegerMatMul")

CASES = [
    ("transformer", "w8a8"),  # ~20 s: quantize, two builds, one qemu run
    pytest.param("resnet", "w8a8", marks=pytest.mark.slow),  # ~35-45 s
    pytest.param("resnet", "w4a8", marks=pytest.mark.slow),  # ~60 s
    pytest.param("transformer", "w4a8", marks=pytest.mark.slow),  # ~40 s
]


@pytest.mark.parametrize("name,scheme", CASES)
def test_quantized_bundle_bit_exact_with_host_integer_build(quant_built, name, scheme):
    built = quant_built(name, scheme)
    ops = built.arm.manifest["stats"]["ops"]
    assert sum(ops.get(o, 0) for o in INTEGER_OPS) >= 2, ops  # really an integer build
    assert not {"Conv", "MatMul", "Gemm"} & set(ops), ops
    if get_target(built.target).capabilities["int8_dot"] == "sdot":  # the kernels multiply with sdot
        chain = toolchain("aarch64")
        listing = subprocess.run([chain.objdump, "-d", str(built.arm.path / "model.so")], capture_output=True,
                                 text=True, check=True).stdout
        assert len(re.findall(r"\tsdot\t", listing)) >= 8, "no sdot in the Neoverse N1 integer kernels"
    expected = built.host.run(built.inputs)
    with open_bundle(built.bundle) as bundle:
        got = bundle.run(built.inputs)
    assert sorted(got) == sorted(expected)
    for key, ref in expected.items():
        assert got[key].dtype == ref.dtype and got[key].shape == ref.shape
        np.testing.assert_array_equal(got[key], ref, err_msg=key)  # bit for bit, not within a tolerance


@pytest.mark.slow  # ~70 s: quantizes twice with the default engine (calibration builds)
def test_cli_quantized_arm_compile_verifies_under_qemu(tmp_path, capsys):
    """The user's command: `mlpc compile --target arm/... --quantize w8a8 --calib c.npz --verify
    --bundle`; --verify runs the cross build under qemu against the integer graph."""
    require_arm()

    path = zoo.export_onnx("transformer", tmp_path / "enc.onnx", exporter="legacy")
    name = onnx.load(path).graph.input[0].name
    np.savez(
        tmp_path / "c.npz",
        **{
            name: np.concatenate(
                [zoo.example_inputs("transformer", batch=1, seed=s)[0].numpy() for s in range(8)]
            )
        },
    )
    code = main(
        [
            "compile",
            str(path),
            "--target",
            "arm/neoverse-n1",
            "-o",
            str(tmp_path / "out"),
            "--quantize",
            "w8a8",
            "--calib",
            str(tmp_path / "c.npz"),
            "--verify",
            "--bundle",
            str(tmp_path / "enc.tar.gz"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    report = manifest["verification"]
    assert report["passed"] and report["reference"].endswith("(integer graph)"), report
    assert (tmp_path / "enc.tar.gz").is_file()
