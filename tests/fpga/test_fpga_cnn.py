"""End to end: a w2a2 CNN trained here on sklearn digits (conv3x3 pad 1 → ReLU → MaxPool 2 →
conv3x3 → ReLU → Flatten → Gemm) → a streaming design with sliding windows, a max pool and
MVAUs, simulated with Verilator bit-exactly on real test images, synthesized with yosys."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest

import mlpc
from benchmarks.fpga_models import train_digits_cnn
from mlpc.cli import main

needs_tools = pytest.mark.skipif(shutil.which("verilator") is None or shutil.which("yosys") is None,
                                 reason="verilator and yosys are installed by `make setup`")


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    model, data = train_digits_cnn()
    onnx.save(model, d / "cnn.onnx")
    np.savez(d / "calib.npz", x=data["x_train"][:64])
    return d, data


@needs_tools  # ~100 s (training 5 s, Verilator ~40 s, yosys ~35 s): the CNN build the issue asks make test for
def test_w2a2_cnn_simulates_bit_exactly_and_synthesizes(digits_cnn, tmp_path):
    d, data = digits_cnn
    out = tmp_path / "cnn_fpga"
    images = data["x_test"][:32]  # real held-out digits, not calibration samples
    mlpc.compile(d / "cnn.onnx", target="fpga/xczu7ev", output_dir=out, quantize="w2a2",
                 calibration=d / "calib.npz", fps=150_000, fpga_options={"samples": images})
    report = json.loads((out / "report.json").read_text())
    layers = report["layers"]
    assert [la["kind"] for la in layers] == ["conv", "maxpool", "conv", "mvau"]
    conv1, pool, conv2, fc = layers
    assert conv1["window"]["pads_tlbr"] == [1, 1, 1, 1] and conv1["window"]["out_hw"] == [8, 8]
    assert conv1["mw"] == 9 and conv1["vectors"] == 64 and conv2["mw"] == 72 and conv2["vectors"] == 4
    assert pool["out_hw"] == [4, 4] and pool["cycles"] == 8 * 8 * 8 // pool["pe"]
    assert fc["mw"] == 64  # the Flatten: its weight rows permuted to the channels-last stream
    for la in (conv1, conv2):  # FINN's model: (MH/PE)·(MW/SIMD)·OH·OW
        assert la["cycles"] == (la["mh"] // la["pe"]) * (la["mw"] // la["simd"]) * la["vectors"]
        assert 8 % la["simd"] == 0 or la is conv1
    sim = report["simulation"]
    assert sim["passed"] and sim["mismatches"] == 0 and sim["stalled"]["mismatches"] == 0
    assert sim["inferences"] == 32
    assert sim["outputs_checked"] == sim["outputs_expected"] == 32 * report["design"]["output"]["beats_per_inference"]
    assert report["design"]["input"]["beats_per_inference"] == 64  # 8 × 8 pixels, one channel
    # every FIFO (one in front of each MVAU) reports its highest occupancy, within its depth
    depths = report["design"]["fifo_depths"]
    assert {name: d for name, (_, d) in sim["fifo_peak"].items()} == {f"fifo{i}": d for i, d in enumerate(depths) if d}
    assert all(0 < peak <= d for peak, d in sim["stalled"]["fifo_peak"].values())
    sizing = report["fifo_sizing"]  # sized from the schedule, which the sized design keeps
    assert sizing["schedule_preserved"] and sim["throttled"]["passed"]
    assert [f["depth"] for f in sizing["fifos"]] == [max(2, f["needed"]) for f in sizing["fifos"]]
    assert [f["name"] for f in sizing["fifos"]] == ["fifo0", "fifo2", "fifo3"]  # none in front of the pool
    perf = report["performance"]
    assert sim["throttled"]["ii_cycles"] == perf["ii_cycles"]
    assert sim["ii_cycles"] == perf["ii_cycles"] == max(la["cycles"] for la in layers) <= 100e6 / 150_000
    synth = report["synthesis"]
    assert "synth_xilinx -family xcup" in (out / "rtl" / "synth.ys").read_text()
    log = (out / "rtl" / "yosys.log").read_text()
    stat = log[log.rfind("Number of cells:"):]
    assert re.search(rf"\bLUT6\s+{synth['cells']['LUT6']}\b", stat)
    assert synth["LUT"] > 0 and synth["FF"] > 0
    assert report["resources"]["comparison"]["LUT"]["measured"] == synth["LUT"]
    assert "mlpc_swg" in (out / "rtl" / "mlpc_top.v").read_text() and "mlpc_pool" in (out / "rtl" / "mlpc_top.v").read_text()
    assert "maxpool 2×2 on 8×8×8" in (out / "report.html").read_text()


@needs_tools
@pytest.mark.slow  # reason: quantizes and builds the Verilator testbench again (~60 s)
def test_w4a4_cnn_with_a_folding_file(digits_cnn, tmp_path):
    d, data = digits_cnn
    folding = {"mvau0": {"PE": 2, "SIMD": 1}, "mvau2": {"PE": 4, "SIMD": 4}, "mvau3": {"PE": 5, "SIMD": 16}}
    out = tmp_path / "out"
    mlpc.compile(d / "cnn.onnx", target="fpga/xczu7ev", output_dir=out, quantize="w4a4", calibration=d / "calib.npz",
                 folding=folding, fpga_options={"synthesize_design": False, "samples": data["x_test"][32:48]})
    report = json.loads((out / "report.json").read_text())
    assert [(la["pe"], la["simd"]) for la in report["layers"]] == [(2, 1), (2, 2), (4, 4), (5, 16)]
    assert report["layers"][0]["bits"].startswith("w4/a4")
    assert "mlpc_dwc" in (out / "rtl" / "mlpc_top.v").read_text()  # pool PE 2 → conv SIMD 4
    sim = report["simulation"]
    assert sim["passed"] and sim["stalled"]["passed"]
    assert sim["ii_cycles"] == report["performance"]["ii_cycles"] == 2304


def test_cli_conv_simd_not_dividing_channels_exits_2_and_writes_nothing(digits_cnn, tmp_path, capsys):
    d, _ = digits_cnn
    folding = tmp_path / "f.json"
    folding.write_text(json.dumps({"mvau2": {"PE": 1, "SIMD": 9}}))  # MW = 72 but C_in = 8
    out = tmp_path / "out"
    code = main(["compile", str(d / "cnn.onnx"), "--target", "fpga/xczu7ev", "--quantize", "w2a2",
                 "--calib", str(d / "calib.npz"), "--folding", str(folding), "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.startswith("error:") and "Traceback" not in err
    assert "layer 'mvau2': SIMD=9 must divide C_in=8" in " ".join(err.split())
