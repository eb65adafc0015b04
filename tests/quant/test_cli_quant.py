"""`mlpc quantize` and `mlpc compile --quantize`: results, and bad input (exit 2, nothing written)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mlpc.cli import main


@pytest.fixture
def files(tmp_path, digits):
    model = tmp_path / "digits.onnx"
    onnx.save(digits.model, model)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=digits.x_train[:32])
    return model, calib


def test_quantize_command_writes_qdq_and_qonnx(files, tmp_path, digits):
    model, calib = files
    out = tmp_path / "q.onnx"
    assert main(["quantize", str(model), "--quantize", "w4a8", "--calib", str(calib), "--format", "qdq",
                 "-o", str(out), "--engine", "reference"]) == 0
    sess = ort.InferenceSession(out.read_bytes(), providers=["CPUExecutionProvider"])
    logits = np.concatenate([sess.run(None, {"x": digits.x_test[i : i + 1]})[0] for i in range(100)])
    assert np.mean(logits.argmax(1) == digits.y_test[:100]) > 0.9
    qonnx = tmp_path / "q_qonnx.onnx"
    assert main(["quantize", str(model), "-q", "w8a8", "--calib", str(calib), "--format", "qonnx",
                 "-o", str(qonnx), "--engine", "reference"]) == 0
    assert any(n.op_type == "Quant" for n in onnx.load(qonnx).graph.node)


@pytest.mark.parametrize(
    "args,message",
    [
        (["-q", "w9a8"], "outside 2..8"),
        (["-q", "w4a8", "--format", "tflite"], "use qdq or qonnx"),
        (["-q", "w4a8", "--calib-override-empty"], "is empty"),
        (["-q", "w4a8", "--calib-override-shape"], "input 'x' expects samples of shape"),
    ],
)
def test_quantize_command_bad_input(files, tmp_path, capsys, args, message):
    model, calib = files
    if "--calib-override-empty" in args:
        np.savez(calib, x=np.zeros((0, 1, 8, 8), np.float32))
        args = args[:-1]
    if "--calib-override-shape" in args:
        np.savez(calib, x=np.zeros((4, 3, 8, 8), np.float32))
        args = args[:-1]
    out = tmp_path / "q.onnx"
    code = main(["quantize", str(model), "--calib", str(calib), "-o", str(out), "--engine", "reference", *args])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_compile_with_quantization_verifies(files, tmp_path, capsys):
    model, calib = files
    out = tmp_path / "art"
    assert main(["compile", str(model), "--target", "host", "--quantize", "w8a8", "--calib", str(calib),
                 "-o", str(out), "--verify"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["verification"]["passed"]
    assert manifest["verification"]["reference"].startswith("mlpc reference evaluator")
    assert "quantize" in [p["name"] for p in manifest["passes"]]
    bad = tmp_path / "bad"
    assert main(["compile", str(model), "--quantize", "w8a8", "-o", str(bad)]) == 2
    assert "needs calibration data" in capsys.readouterr().err
    assert not bad.exists()
