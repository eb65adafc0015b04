"""--verify picks the right reference: onnxruntime, PyTorch, or mlpc's interpreter for QONNX models."""
from __future__ import annotations

import numpy as np
import pytest

import mlpc
from fake_quant_graphs import case
from mlpc.verify import compare


def test_qonnx_model_is_verified_against_the_reference_interpreter():
    model, _ = case("conv2d", 8, 8, True, True)
    artifact = mlpc.compile(model, verify=True, tolerance=0.1)
    report = artifact.verification
    assert report["reference"] == "mlpc reference interpreter" and report["passed"]
    assert "mlpc::IntegerConv" in artifact.manifest["stats"]["ops"]  # lowered to integer kernels


def test_failed_verification_raises_after_writing(tmp_path):
    model, _ = case("gemm", 2, 4, False, False)
    with pytest.raises(mlpc.VerificationError, match="beyond tolerance 1e-09"):
        mlpc.compile(model, output_dir=tmp_path / "out", verify=True, tolerance=1e-9)
    assert mlpc.load(tmp_path / "out").verification["passed"] is False


def test_compare_metrics():
    ref = np.array([[1.0, 3.0, 2.0], [0.5, 0.1, 0.2]])
    got = ref + np.array([[0.0, 0.3, 0.0], [0.0, 0.6, 0.0]])
    result = compare("y", ref, got)
    assert result.max_abs_err == pytest.approx(0.6) and result.rel_err == pytest.approx(0.2)
    assert result.top1_agreement == 0.5 and 0.9 < result.cosine < 1.0
    with pytest.raises(mlpc.VerificationError, match="shape"):
        compare("y", ref, ref[:1])
