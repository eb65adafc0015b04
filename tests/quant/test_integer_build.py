"""Quantized builds are integer end to end: the compiled digits CNN and the zoo ResNet (residual
blocks) run IntegerConv/IntegerAdd/MaxPool on integers with no float conv or gemm left, match
the integer graph exactly (--verify), and the digits build keeps its accuracy."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import mlpc
from mlpc import zoo

FLOAT_LAYERS = ("Conv", "Gemm", "MatMul", "qonnx.custom_op.general::Quant")


def test_digits_cnn_w8a8_build_is_integer_and_accurate(digits, tmp_path):
    path = tmp_path / "digits.onnx"
    onnx.save(digits.model, path)
    art = mlpc.compile(path, target="host", output_dir=tmp_path / "q", quantize="w8a8",
                       calibration={"x": digits.x_train[:128]}, verify=True)
    ops = art.manifest["stats"]["ops"]
    assert not set(ops) & set(FLOAT_LAYERS), ops
    assert ops["mlpc::IntegerConv"] == 2 and ops["mlpc::IntegerMatMul"] == 2 and ops["MaxPool"] == 2
    # every integer conv/matmul kernel's multiply-accumulates are recorded: the float model's total
    # (conv 1→32 on 8×8, conv 32→64 on 4×4, both 3×3; gemm 256→64, 64→10)
    macs = art.manifest["backend"]["kernel_macs"]
    assert len(macs) == 4 and sum(macs.values()) == 32 * 64 * 9 + 64 * 16 * 32 * 9 + 256 * 64 + 64 * 10
    assert art.verification["passed"] and art.verification["reference"].endswith("(integer graph)")
    hits = sum(int(np.argmax(art.run({"x": digits.x_test[i:i + 1]})["logits"]) == digits.y_test[i])
               for i in range(len(digits.y_test)))
    assert 100.0 * hits / len(digits.y_test) >= 97.78 - 0.5


@pytest.mark.parametrize("scheme", ["w8a8", pytest.param("w4a8", marks=pytest.mark.slow)])  # w4a8: ~2 min
def test_resnet_residual_blocks_run_integer_adds(scheme, tmp_path):
    path = tmp_path / "resnet.onnx"
    zoo.export_onnx("resnet", path)
    name = onnx.load(path).graph.input[0].name
    calib = np.concatenate([zoo.example_inputs("resnet", batch=1, seed=s)[0].numpy() for s in range(8)])
    art = mlpc.compile(path, target="host", output_dir=tmp_path / "q", quantize=scheme,
                       calibration={name: calib}, verify=True)
    ops = art.manifest["stats"]["ops"]
    assert ops.get("mlpc::IntegerAdd", 0) >= 2, ops
    assert ops["mlpc::IntegerConv"] >= 7 and art.verification["passed"]
