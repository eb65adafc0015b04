"""The per-layer quantization report (`mlpc.quant.report`, `mlpc inspect`): bits, scales and SQNR
against the float model, checked against figures computed here independently with onnxruntime."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import mlpc
from mlpc.cli import main
from mlpc.quant.calibration import CalibrationSet
from mlpc.quant.report import layer_report, sqnr_db


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("report")
    model = root / "digits.onnx"
    onnx.save(digits.model, model)
    calib = root / "calib.npz"
    np.savez(calib, x=digits.x_train[:32])
    return model, calib


def _report(model, calib, scheme):
    qmodel = mlpc.quantize(model, scheme, calib, engine="reference")
    float_graph = mlpc.frontend.load_model(model).model.graph
    data = CalibrationSet.load(calib, float_graph)
    return qmodel, layer_report(float_graph, qmodel.graph, data, engine="reference", samples=16)


def test_sqnr_falls_with_weight_bits(files):
    model, calib = files
    sqnr = {}
    for bits in (8, 4, 2):
        _, report = _report(model, calib, f"w{bits}a8")
        assert report["samples"] == 16 and report["engine"] == "reference"
        layers = report["layers"]
        assert [r["name"] for r in layers] == ["conv1", "conv2", "fc1", "fc2"]
        assert all(r["weight_bits"] == bits and r["activation_bits"] == 8 for r in layers)
        assert all(
            r["granularity"] == "per_channel" and 0 < r["weight_scale_min"] <= r["weight_scale_max"]
            for r in layers
        )
        sqnr[bits] = [r["sqnr_db"] for r in layers]
    for layer in range(4):
        assert sqnr[8][layer] > sqnr[4][layer] > sqnr[2][layer], sqnr
    assert min(sqnr[8]) > 35  # 8-bit weights and activations: well under 2 % error everywhere


def _ort_outputs(proto: onnx.ModelProto, names: list[str], x: np.ndarray) -> dict[str, np.ndarray]:
    model = onnx.ModelProto.FromString(proto.SerializeToString())
    have = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep fake-quant float math
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return dict(zip(names, sess.run(names, {"x": x})))


def test_sqnr_of_qdq_model_matches_onnxruntime(files, tmp_path, capsys):
    """`mlpc inspect q.onnx --float-model --calib` against SQNR computed here from onnxruntime
    runs of the float model and of the QDQ export."""
    model, calib = files
    qmodel, _ = _report(model, calib, "w4a8")
    qdq = tmp_path / "q.onnx"
    mlpc.quant.export_qdq(qmodel, qdq)
    assert (
        main(
            [
                "inspect",
                str(qdq),
                "--float-model",
                str(model),
                "--calib",
                str(calib),
                "--samples",
                "8",
                "--json",
            ]
        )
        == 0
    )
    layers = {r["name"]: r for r in json.loads(capsys.readouterr().out)["quantization"]["layers"]}
    x = np.load(calib)["x"][:8]
    float_proto, q_proto = onnx.load(model), onnx.load(qdq)
    for name, output in (("conv2", "c2"), ("fc2", "logits")):
        ref = np.stack([_ort_outputs(float_proto, [output], x[i : i + 1])[output] for i in range(8)])
        got = np.stack([_ort_outputs(q_proto, [output], x[i : i + 1])[output] for i in range(8)])
        expected = 10 * math.log10(
            np.sum(ref.astype(np.float64) ** 2) / np.sum((ref - got).astype(np.float64) ** 2)
        )
        assert layers[name]["output"] == output
        assert layers[name]["sqnr_db"] == pytest.approx(expected, abs=0.05)
        assert 10 < expected < 60


def test_compiled_artifact_keeps_the_table(files, tmp_path, capsys):
    model, calib = files
    out = tmp_path / "art"
    assert main(["compile", str(model), "--quantize", "w4a8", "--calib", str(calib), "-o", str(out)]) == 0
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    q = manifest["quantization"]
    assert q["scheme"] == "w4a8" and q["engine"] == "tvm" and q["samples"] == 32
    assert [r["weight_bits"] for r in q["layers"]] == [4, 4, 4, 4]
    assert all(15 < r["sqnr_db"] < 60 for r in q["layers"])
    # inspect reads it back without data, as JSON and as a table
    assert main(["inspect", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quantization"] == q
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SQNR dB" in text and "conv2" in text and f"{q['layers'][1]['sqnr_db']:.1f}" in text


def test_float_layers_and_bad_options(files, tmp_path, capsys):
    model, calib = files
    assert main(["inspect", str(model), "--float-model", str(model), "--calib", str(calib)]) == 2
    assert "holds no quantization" in capsys.readouterr().err
    qdq = tmp_path / "q.onnx"
    mlpc.quant.export_qdq(mlpc.quantize(model, "w8a8", calib, engine="reference"), qdq)
    assert main(["inspect", str(qdq), "--float-model", str(model)]) == 2
    assert "needs both --float-model" in capsys.readouterr().err
    assert main(["inspect", str(qdq), "--json"]) == 0  # no data: bits and scales, no SQNR
    layers = json.loads(capsys.readouterr().out)["quantization"]["layers"]
    assert [r["weight_bits"] for r in layers] == [8, 8, 8, 8] and all(r["sqnr_db"] is None for r in layers)


def test_sqnr_db_definition():
    ref = np.array([3.0, -4.0])
    assert sqnr_db(ref, ref + np.array([0.3, 0.4])) == pytest.approx(20.0)  # 25 / 0.25 → 100×
    assert sqnr_db(ref, ref) == math.inf
