"""QAT with Brevitas: 2-bit weights recover to within 2 points of fp32 in a bounded number of
epochs; the QONNX export compiles for x86 (giving the QAT model's predictions) and for an FPGA
(its design simulating bit-exactly)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import mlpc
import mlpc.qat as qat
from mlpc.errors import InputError

EPOCHS = 8


@pytest.fixture(scope="module")
def trained_2bit(digits_mlp, tmp_path_factory):
    """(the QAT-trained 2-bit MLP, its QONNX export, fp32 accuracy, accuracy before training, history)."""
    fp32 = qat.accuracy(digits_mlp.net, digits_mlp.x_test, digits_mlp.y_test)
    qnet = qat.prepare(digits_mlp.net, bits=2, calibration=digits_mlp.x_train[:256])
    before = qat.accuracy(qnet, digits_mlp.x_test, digits_mlp.y_test)
    history = qat.train(qnet, digits_mlp.x_train, digits_mlp.y_train, epochs=EPOCHS, lr=2e-3)
    path = qat.export(qnet, tmp_path_factory.mktemp("qat") / "mlp_qonnx.onnx", digits_mlp.x_test[:1])
    return qnet, path, fp32, before, history


def test_qat_2bit_recovers_within_2_points_and_exports_to_x86(digits_mlp, trained_2bit, tmp_path):
    qnet, path, fp32, before, history = trained_2bit
    calibrated8 = qat.prepare(digits_mlp.net, bits=8, calibration=digits_mlp.x_train[:256])
    assert qat.accuracy(calibrated8, digits_mlp.x_test, digits_mlp.y_test) >= fp32 - 1.0
    assert qnet.layer_bits == {"0": 2, "2": 2, "4": 2}
    after = qat.accuracy(qnet, digits_mlp.x_test, digits_mlp.y_test)
    assert len(history) == EPOCHS and history[-1]["loss"] < history[0]["loss"]
    assert after >= fp32 - 2.0, (fp32, before, after)
    assert after > before
    # the original float module is untouched
    assert qat.accuracy(digits_mlp.net, digits_mlp.x_test, digits_mlp.y_test) == fp32

    art = mlpc.compile(path, target="x86", output_dir=tmp_path / "out")
    ops = art.manifest["stats"]["ops"]
    assert any(op.startswith("mlpc::Integer") for op in ops), ops
    name = art.inputs[0]["name"]
    x = digits_mlp.x_test[:200]
    compiled = np.array(
        [np.argmax(art.run({name: x[i : i + 1]})[art.outputs[0]["name"]]) for i in range(len(x))]
    )
    import torch

    with torch.no_grad():
        reference = qnet(torch.from_numpy(x)).argmax(1).numpy()
    assert np.mean(compiled == reference) >= 0.99


@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is installed by `make setup`")
def test_qat_export_compiles_for_an_fpga_and_simulates_bit_exactly(trained_2bit, tmp_path):
    _qnet, path, *_ = trained_2bit
    mlpc.compile(path, target="fpga/xczu7ev", output_dir=tmp_path / "fpga", fpga_options={"synthesize_design": False})
    report = json.loads((tmp_path / "fpga" / "report.json").read_text())
    assert len(report["layers"]) == 3
    assert report["simulation"]["passed"] and report["simulation"]["mismatches"] == 0


def test_prepare_takes_per_layer_bits_onnx_models_and_refuses_unknown_layers(digits_mlp):
    qnet = qat.prepare(digits_mlp.net, {"0": 8, "*": 2})
    assert qnet.layer_bits == {"0": 8, "2": 2, "4": 2}
    from_onnx = qat.prepare(digits_mlp.model, {"fc2": 4})  # ONNX node names, the others 8-bit
    assert from_onnx.layer_bits == {"fc1": 8, "fc2": 4, "fc3": 8}
    import torch

    x = torch.from_numpy(digits_mlp.x_test[:50])
    with torch.no_grad():
        agree = (from_onnx(x).argmax(1) == digits_mlp.net(x).argmax(1)).float().mean()
    assert agree >= 0.95
    with pytest.raises(InputError, match="match no Conv/Linear layer"):
        qat.prepare(digits_mlp.net, {"conv9": 4})
