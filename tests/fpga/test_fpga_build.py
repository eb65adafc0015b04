"""End to end: a w2a2 MLP trained here on sklearn digits → Verilog, simulated with Verilator
bit-exactly against the reference interpreter, synthesized with yosys; and bad input refused."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mlpc
from mlpc.cli import main
from mlpc.errors import InputError, UnsupportedOpError

needs_tools = pytest.mark.skipif(shutil.which("verilator") is None or shutil.which("yosys") is None,
                                 reason="verilator and yosys are installed by `make setup`")


def _train_mlp(hidden=16, relu=True):
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target
    torch.manual_seed(0)
    act = torch.nn.ReLU() if relu else torch.nn.Identity()
    net = torch.nn.Sequential(torch.nn.Linear(64, hidden), act, torch.nn.Linear(hidden, 10))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    xt, yt = torch.from_numpy(x[:1200]), torch.from_numpy(y[:1200]).long()
    for _ in range(15):
        for idx in torch.randperm(len(xt), generator=torch.Generator().manual_seed(0)).split(100):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    p = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu1"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], name="fc2", transB=1)]
    if not relu:  # the hidden activations stay signed (an asymmetric signed quantizer)
        nodes = [nodes[0], helper.make_node("Gemm", ["h", "w2", "b2"], ["logits"], name="fc2", transB=1)]
    inits = {"w1": p["0.weight"], "b1": p["0.bias"], "w2": p["2.weight"], "b2": p["2.bias"]}
    graph = helper.make_graph(nodes, "digits_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return model, x[1200:1232], x[:64]


@pytest.fixture(scope="module")
def digits_mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlp")
    model, test_x, calib_x = _train_mlp()
    onnx.save(model, d / "mlp.onnx")
    np.savez(d / "calib.npz", x=calib_x)
    np.savez(d / "test.npz", x=test_x)
    return d


@pytest.fixture(scope="module")
def built_mlp(digits_mlp, tmp_path_factory):
    """The w2a2 MLP built, simulated and synthesized for the xc7z020 at 400k FPS: (artifact, out dir)."""
    out = tmp_path_factory.mktemp("built") / "ids_fpga"
    art = mlpc.compile(digits_mlp / "mlp.onnx", target="fpga/xc7z020", output_dir=out, quantize="w2a2",
                       calibration=digits_mlp / "calib.npz", fps=400_000)
    return art, out


@needs_tools  # ~80 s (two Verilator builds ~25 s each, yosys ~30 s): the one MLP hardware build CI runs
def test_w2a2_mlp_simulates_bit_exactly_and_synthesizes(built_mlp):
    art, out = built_mlp
    report = json.loads((out / "report.json").read_text())
    sim = report["simulation"]
    assert sim["passed"] and sim["mismatches"] == 0 and sim["stalled"]["mismatches"] == 0
    assert sim["outputs_checked"] == sim["outputs_expected"] == 32 * report["design"]["output"]["beats_per_inference"]
    # the measured initiation interval is the analytic model's: the slowest layer's cycles
    assert sim["ii_cycles"] == report["performance"]["ii_cycles"] == max(la["cycles"] for la in report["layers"])
    assert report["performance"]["ii_cycles"] <= 100e6 / 400_000
    # the resources are yosys' counts, read from its log
    log = (out / "rtl" / "yosys.log").read_text()
    synth = report["synthesis"]
    assert "synth_xilinx -family xc7" in (out / "rtl" / "synth.ys").read_text()
    assert synth["LUT"] > 0 and synth["FF"] > 0
    assert f"LUT6 {synth['cells']['LUT6']}".split()[1] in log
    comparison = report["resources"]["comparison"]["LUT"]
    assert comparison["measured"] == synth["LUT"]
    assert comparison["error"] == pytest.approx(comparison["estimate"] / synth["LUT"] - 1, abs=1e-4)
    assert (out / "report.html").read_text().count("<tr>") >= 6
    assert (out / "model.qonnx.onnx").exists()
    qonnx = onnx.load(out / "model.qonnx.onnx")
    assert any(n.op_type == "Quant" for n in qonnx.graph.node)
    assert art.manifest["backend"]["simulation_passed"] is True
    # the FIFOs are sized from the schedule: each at the depth the throttled deep-FIFO run needed
    # (at least 2), the sized design repeats that run cycle for cycle and keeps the model's II
    sizing = report["fifo_sizing"]
    assert sizing["method"].startswith("simulated") and sizing["schedule_preserved"] is True
    depths = report["design"]["fifo_depths"]
    assert [f["depth"] for f in sizing["fifos"]] == [d for d in depths if d]
    for f in sizing["fifos"]:
        assert f["depth"] == max(2, f["needed"]) and f["needed"] <= f["peak_occupancy"] + 1
        assert f["bits"] == f["depth"] * f["width_bits"]
    assert sim["throttled"]["same_schedule_as_deep_fifos"] and not any(sim["throttled"]["fifo_blocked"].values())
    assert sim["throttled"]["ii_cycles"] == report["performance"]["ii_cycles"]
    assert sizing["sizing_run"]["done_cycles"][1] - sizing["sizing_run"]["done_cycles"][0] == report["performance"]["ii_cycles"]
    assert sizing["bits"] < sizing["rule_bits"] and sizing["bits_saved"] == sizing["rule_bits"] - sizing["bits"]
    top = (out / "rtl" / "mlpc_top.v").read_text()
    for f in sizing["fifos"]:
        assert re.search(rf"mlpc_fifo #\(\.W\({f['width_bits']}\), \.DEPTH\({f['depth']}\)\) {f['name']} ", top)


@needs_tools
@pytest.mark.slow  # reason: one more Verilator build (~25 s) on top of the module's MLP build
def test_a_fifo_one_below_its_sized_depth_loses_throughput(built_mlp, tmp_path):
    """The sizing is tight: the FIFO in front of the slowest layer one entry shallower than sized
    refuses beats and the II grows (so depths above the need would be waste, below it a loss)."""
    from mlpc.backends.fpga.sim import simulate

    _, out = built_mlp
    report = json.loads((out / "report.json").read_text())
    ii = report["performance"]["ii_cycles"]
    slowest = report["performance"]["slowest_layer"]
    fifo = next(f for f in report["fifo_sizing"]["fifos"] if f["feeds"] == slowest)
    assert fifo["depth"] > 2  # sized by the schedule, not by the minimum
    work = tmp_path / "rtl"
    shutil.copytree(out / "rtl", work)
    top = (work / "mlpc_top.v").read_text()
    pattern = rf"(\.DEPTH\(){fifo['depth']}(\)\) {fifo['name']} )"
    assert re.search(pattern, top)
    (work / "mlpc_top.v").write_text(re.sub(pattern, rf"\g<1>{fifo['depth'] - 1}\2", top))
    sources = [s.split("/")[-1] for s in report["design"]["sources"]]
    throttled = simulate(work, sources, period=ii)
    full = simulate(work, sources)
    assert throttled["passed"] and full["passed"]  # still bit-exact: the handshakes hold the data
    assert throttled["fifo_blocked"][fifo["name"]] > 0
    assert full["ii_cycles"] > ii and throttled["ii_cycles"] > ii


@needs_tools
@pytest.mark.slow  # reason: Verilator builds the testbench (~20 s)
def test_folding_file_and_brams(digits_mlp, tmp_path):
    folding = tmp_path / "f.json"
    folding.write_text(json.dumps({"mvau0": {"PE": 4, "SIMD": 16, "ram_style": "block"}, "mvau1": {"PE": 2, "SIMD": 4}}))
    out = tmp_path / "out"
    mlpc.compile(digits_mlp / "mlp.onnx", target="fpga/xczu7ev", output_dir=out, quantize="w2a2",
                 calibration=digits_mlp / "calib.npz", folding=folding)
    report = json.loads((out / "report.json").read_text())
    assert [(la["pe"], la["simd"]) for la in report["layers"]] == [(4, 16), (2, 4)]
    assert report["layers"][0]["cycles"] == (16 // 4) * (64 // 16)
    assert report["simulation"]["ii_cycles"] == max(la["cycles"] for la in report["layers"])
    assert report["synthesis"]["BRAM36"] > 0  # the weight memory marked block became block RAM


@needs_tools
@pytest.mark.slow  # reason: trains, quantizes and builds the Verilator testbench (~30 s)
def test_signed_hidden_activations_with_a_zero_point(tmp_path):
    model, _, calib_x = _train_mlp(relu=False)
    for init in model.graph.initializer:  # skew the hidden values: an asymmetric quantizer gets zp ≠ 0
        if init.name == "b1":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) + 4.0, "b1"))
    onnx.save(model, tmp_path / "mlp.onnx")
    np.savez(tmp_path / "calib.npz", x=calib_x)
    out = tmp_path / "out"
    mlpc.compile(tmp_path / "mlp.onnx", target="fpga/xczu7ev", output_dir=out, quantize="w2a3",
                 calibration=tmp_path / "calib.npz", quant_config={"activation": {"symmetric": False}},
                 fps=200_000, fpga_options={"synthesize_design": False})
    qonnx = onnx.load(out / "model.qonnx.onnx")
    inits = {i.name: numpy_helper.to_array(i) for i in qonnx.graph.initializer}
    hidden = next(n for n in qonnx.graph.node if n.op_type == "Quant" and n.input[0] == "h")
    assert inits[hidden.input[2]] != 0  # the thresholds carry the input zero point's offset
    report = json.loads((out / "report.json").read_text())
    assert report["simulation"]["passed"] and report["simulation"]["stalled"]["passed"]
    assert "synthesis" not in report and report["resources"]["measured"] is None


def test_float_model_is_refused_naming_the_node(digits_mlp, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(UnsupportedOpError, match=r"node 'fc1' \(Gemm\): it has no integer form"):
        mlpc.compile(digits_mlp / "mlp.onnx", target="fpga/xczu7ev", output_dir=out, fps=1000)
    assert not out.exists()


def test_fps_on_a_cpu_target_is_refused(digits_mlp, tmp_path):
    with pytest.raises(InputError, match="--fps/--folding apply to FPGA targets"):
        mlpc.compile(digits_mlp / "mlp.onnx", target="host", output_dir=tmp_path / "o", fps=1000)


@pytest.mark.parametrize("args,match", [
    (["--fps", "1e12"], "--fps 1e\\+12 cannot be met .* layer mvau0"),
    (["--folding", "{folding}"], "unknown layer 'fc7'"),
])
def test_cli_bad_fpga_options_exit_2_and_write_nothing(digits_mlp, tmp_path, capsys, args, match):
    folding = tmp_path / "bad.json"
    folding.write_text(json.dumps({"fc7": {"PE": 1, "SIMD": 1}}))
    out = tmp_path / "out"
    args = [a.replace("{folding}", str(folding)) for a in args]
    code = main(["compile", str(digits_mlp / "mlp.onnx"), "--target", "fpga/xc7z020", "--quantize", "w2a2",
                 "--calib", str(digits_mlp / "calib.npz"), "-o", str(out), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert not out.exists()
    assert err.startswith("error:") and "Traceback" not in err
    assert re.search(match, " ".join(err.split()))
