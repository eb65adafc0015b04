"""FPGA dataflow designs of FINN's reference MLP topologies and a small CNN: cycles, throughput,
latency and resources (mlpc's estimate vs yosys), simulated bit-exactly with Verilator.

    python benchmarks/fpga.py                        # every network (yosys takes minutes each)
    python benchmarks/fpga.py --networks cnn-w2a2    # the others' figures are kept from the last run

Networks (trained here with torch, quantized w2a2 by mlpc on 256 calibration samples):

- `tfc-w2a2`: FINN's TFC, 784-64-64-64-10, on sklearn's digits scaled to 28×28 (nearest neighbour;
  MNIST itself is not packaged here), built for `fpga/xc7z020` (PYNQ-Z2; finn-examples builds it for
  the PYNQ-Z1's identical XC7Z020) with finn-examples' own folding
  (build/bnn-pynq/folding_config/tfc-w2a2_folding_config.json: PE/SIMD 16/49, 8/8, 8/8, 10/8).
- `unsw-w2a2`: the 600-64-64-64-1 network-intrusion MLP of FINN's cybersecurity example (UNSW-NB15,
  the closest public analogue of a CAN-IDS), here on a synthetic 600-feature binary task
  (sklearn make_classification; UNSW-NB15 is not packaged here), built for `fpga/xczu7ev` with
  `--fps 1000000` (FINN's example targets 1M FPS at 100 MHz) and mlpc's automatic folding.
- `cnn-w2a2`: conv3x3 (1→8, pad 1) → ReLU → MaxPool 2 → conv3x3 (8→16) → ReLU → Flatten → Gemm (64→10)
  on sklearn's 8×8 digits (benchmarks/fpga_models.py, the model tests/fpga/test_fpga_cnn.py builds),
  for `fpga/xczu7ev` at `--fps 150000`: sliding-window generators, a streaming max pool and MVAUs.

Writes benchmarks/results/fpga.json and the `fpga` section of benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from benchmarks import common

logger = logging.getLogger("benchmarks.fpga")

NETWORKS = ("tfc-w2a2", "unsw-w2a2", "cnn-w2a2", "cnv-w2a2")
# finn-examples build/bnn-pynq/folding_config/cnv-w1a1_folding_config.json, its MVAU entries (the same
# folding as tests/fpga/test_folding.py's cycle-model check), applied to the w2a2 network here.
CNV_FOLDING = {f"MatrixVectorActivation_{i}": {"PE": pe, "SIMD": simd} for i, (pe, simd) in enumerate(
    [(16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32), (1, 4), (1, 8), (5, 1)])}
CNV_SLOWEST_FINN = 32_768  # FINN's cycle model on that folding (the figure)
CALIBRATION_SAMPLES = 256
# finn-examples build/bnn-pynq/folding_config/tfc-w2a2_folding_config.json, its MVAU entries.
TFC_FOLDING = {"StreamingFCLayer_Batch_0": {"PE": 16, "SIMD": 49, "ram_style": "block"},
               "StreamingFCLayer_Batch_1": {"PE": 8, "SIMD": 8},
               "StreamingFCLayer_Batch_2": {"PE": 8, "SIMD": 8},
               "StreamingFCLayer_Batch_3": {"PE": 10, "SIMD": 8, "ram_style": "distributed"}}
CAN_IDS_LATENCY_MS = 0.11  # the Brevitas + FINN CAN-bus IDS on an XCZU7EV (issue 9)


def _mlp_onnx(sizes: list[int], state: dict[str, np.ndarray], name: str) -> Any:
    nodes, inits = [], {}
    prev = "x"
    for i in range(len(sizes) - 1):
        out = f"h{i}" if i < len(sizes) - 2 else "logits"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out], name=f"fc{i}", transB=1))
        inits[f"w{i}"], inits[f"b{i}"] = state[f"{2 * i}.weight"], state[f"{2 * i}.bias"]
        if i < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"], name=f"relu{i}"))
            prev = f"r{i}"
    graph = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, sizes[0]])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, sizes[-1]])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def _train(sizes: list[int], x: np.ndarray, y: np.ndarray, binary: bool, epochs: int = 20) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(0)
    layers: list[Any] = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y).float()[:, None] if binary else torch.from_numpy(y).long()
    loss = torch.nn.functional.binary_cross_entropy_with_logits if binary else torch.nn.functional.cross_entropy
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(64):
            opt.zero_grad()
            loss(net(xt[idx]), yt[idx]).backward()
            opt.step()
    return {k: v.detach().numpy() for k, v in net.state_dict().items()}


def _cnn(work: Path) -> tuple[Path, np.ndarray, np.ndarray, dict[str, Any]]:
    """The digits CNN: (model path, test images, test labels, compile options)."""
    from benchmarks.fpga_models import train_digits_cnn

    model, data = train_digits_cnn()
    path = work / "cnn-w2a2.onnx"
    path.write_bytes(model.SerializeToString())
    return path, data["x_test"], data["y_test"], {"fps": 150_000.0, "calib": data["x_train"][:CALIBRATION_SAMPLES]}


def _data(network: str) -> tuple[list[int], np.ndarray, np.ndarray, bool]:
    if network == "tfc-w2a2":
        from sklearn.datasets import load_digits

        digits = load_digits()
        idx = (np.arange(28) * 8) // 28  # nearest-neighbour 8×8 → 28×28
        x = (digits.images[:, idx][:, :, idx] / 16.0).reshape(len(digits.images), 784).astype(np.float32)
        return [784, 64, 64, 64, 10], x, digits.target, False
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=4000, n_features=600, n_informative=40, n_redundant=40, random_state=0)
    x = ((x - x.min(0)) / (x.max(0) - x.min(0))).astype(np.float32)
    return [600, 64, 64, 64, 1], x, y, True


def _accuracy(qonnx_path: Path, x: np.ndarray, y: np.ndarray, binary: bool) -> float:
    """Test accuracy of the fake-quant (QONNX) model in the reference interpreter."""
    from mlpc.frontend import load_model
    from mlpc.ir.evaluator import ReferenceEvaluator

    ev = ReferenceEvaluator(load_model(qonnx_path).model)
    logits = np.concatenate([ev.run({"x": s[None]})["logits"] for s in x])
    pred = (logits[:, 0] > 0).astype(int) if binary else logits.argmax(1)
    return float(100 * (pred == y).mean())


def bench_network(network: str, work: Path, synth_timeout_s: float | None = None) -> dict[str, Any]:
    """Train, quantize w2a2 and build one network; return its figures."""
    import mlpc

    x_test = y_test = samples = None
    if network == "cnv-w2a2":
        from benchmarks.fpga_models import cnv_model

        model_path = work / "cnv-w2a2.onnx"
        model_path.write_bytes(cnv_model().SerializeToString())
        rng = np.random.default_rng(0)
        calib = work / f"{network}_calib.npz"
        np.savez(calib, x=rng.random((32, 3, 32, 32), dtype=np.float32))
        samples = rng.random((4, 1, 3, 32, 32), dtype=np.float32)  # 4 inferences: ~130k cycles each run
        binary = False
        target, options = "fpga/xczu7ev", {"folding": CNV_FOLDING}
    elif network == "cnn-w2a2":
        model_path, x_test, y_test, spec = _cnn(work)
        binary = False
        calib = work / f"{network}_calib.npz"
        np.savez(calib, x=spec["calib"])
        target, options = "fpga/xczu7ev", {"fps": spec["fps"]}
    else:
        sizes, x, y, binary = _data(network)
        split = int(0.75 * len(x))
        state = _train(sizes, x[:split], y[:split], binary)
        x_test, y_test = x[split:], y[split:]
        model_path = work / f"{network}.onnx"
        model_path.write_bytes(_mlp_onnx(sizes, state, network).SerializeToString())
        calib = work / f"{network}_calib.npz"
        np.savez(calib, x=x[:CALIBRATION_SAMPLES])
        if network == "tfc-w2a2":
            target, options = "fpga/xc7z020", {"folding": TFC_FOLDING}
        else:
            target, options = "fpga/xczu7ev", {"fps": 1e6}
    out = work / f"{network}_fpga"
    start = time.perf_counter()
    fpga_options: dict[str, Any] = {"synth_timeout_s": synth_timeout_s}
    if samples is not None:
        fpga_options["samples"] = samples
    mlpc.compile(model_path, target=target, output_dir=out, quantize="w2a2", calibration=calib,
                 fpga_options=fpga_options, **options)
    seconds = time.perf_counter() - start
    report = json.loads((out / "report.json").read_text())
    perf, sim = report["performance"], report["simulation"]
    return {
        "target": target, "part": report["part"]["part"], "clock_mhz": report["clock_mhz"],
        "folding": "finn-examples" if "folding" in options else f"auto, --fps {options['fps']:g}",
        "inferences_simulated": sim["inferences"],
        "layers": [{k: la[k] for k in ("name", "kind", "mw", "mh", "pe", "simd", "cycles", "ram_style", "bits",
                                       "window", "channels", "in_hw", "kernel", "estimate", "accumulator_bits",
                                       "lut_terms") if k in la}
                   for la in report["layers"]],
        "ii_cycles": perf["ii_cycles"], "ii_cycles_measured": perf["ii_cycles_measured"],
        "throughput_fps": perf["throughput_fps"], "latency_cycles_measured": perf["latency_cycles_measured"],
        "latency_us_measured": perf["latency_us_measured"],
        "simulation": {"inferences": sim["inferences"], "mismatches": sim["mismatches"],
                       "stalled_mismatches": sim["stalled"]["mismatches"]},
        "resources": report["resources"]["comparison"],
        "lut_terms": _sum_terms(report["layers"]), "yosys_family": report["part"]["yosys_family"],
        "fifo_sizing": {k: report["fifo_sizing"][k] for k in ("method", "bits", "rule_bits", "bits_saved")}
        | {"fifos": [{k: f[k] for k in ("name", "feeds", "width_bits", "rule_depth", "needed", "depth")}
                     for f in report["fifo_sizing"]["fifos"]]},
        "yosys_seconds": report["synthesis"]["seconds"], "utilization": report["utilization"],
        "accuracy_fake_quant": None if x_test is None else _accuracy(out / "model.qonnx.onnx", x_test, y_test,
                                                                      binary),
        "compile_seconds": round(seconds, 1),
        "mlpc_commit": common.machine_info().get("mlpc_commit"),
    }


def _sum_terms(layers: list[dict[str, Any]]) -> dict[str, float]:
    """The LUT model's terms summed over a design's units (report.json layers' `lut_terms`)."""
    total: dict[str, float] = {}
    for la in layers:
        terms = dict(la.get("lut_terms", {}))
        if "accumulator_bits" in la and "adders" not in terms:  # a report from before the adder term
            terms["adders"] = la["pe"] * la["simd"] * la["accumulator_bits"]
        for k, v in terms.items():
            total[k] = round(total.get(k, 0.0) + v, 2)
    return total


def lut_estimates(r: dict[str, Any]) -> tuple[int, int] | None:
    """A network's LUT estimate with FINN's coefficients and with the yosys-fitted ones of its
    family (backends/fpga/resource_model.json), from its stored terms; None for older results."""
    from mlpc.backends.fpga.resources import FINN_COEFFICIENTS, lut_from_terms

    if "lut_terms" not in r:
        return None
    finn = round(sum(FINN_COEFFICIENTS[k] * v for k, v in r["lut_terms"].items()))
    return finn, lut_from_terms(r["lut_terms"], r["yosys_family"])


def render(data: dict[str, Any]) -> str:
    """The README section for a results dict."""
    lines = [common.machine_line(data["machine"]), "",
             "Each design simulated (Verilator) on 32 calibration inputs (cnv-w2a2: 4 random images), at full rate "
             "and with random stalls, "
             "against the reference interpreter; resources from yosys `synth_xilinx`; throughput and latency at "
             "the target's stated clock (yosys gives no timing: no Fmax is claimed).", ""]
    rows = []
    for name, r in data["networks"].items():
        res = r["resources"]
        est = lut_estimates(r)  # the current model's LUT estimate from the stored terms
        lut_est = res["LUT"]["estimate"] if est is None else est[1]
        folds = ", ".join(f"{la['pe']}/{la['simd']}" for la in r["layers"])
        rows.append([name, r["part"], r["folding"], folds, f"{r['ii_cycles']:,}", f"{r['ii_cycles_measured']:g}",
                     f"{r['throughput_fps']:,.0f}", f"{r['latency_us_measured']:.2f}",
                     f"{res['LUT']['measured']:,} ({lut_est:,})",
                     f"{res['FF']['measured']:,} ({res['FF']['estimate']:,})",
                     f"{res['BRAM36']['measured']:g} ({res['BRAM36']['estimate']:g})",
                     f"{res['DSP']['measured']:g}", f"{r['simulation']['mismatches']}",
                     "—" if r["accuracy_fake_quant"] is None else f"{r['accuracy_fake_quant']:.1f}",
                     f"{r['yosys_seconds']:.0f}"])
    lines.append(common.markdown_table(
        ["network", "part", "folding", "PE/SIMD per layer", "II model", "II simulated", "FPS @ clock",
         "latency µs", "LUT yosys (est.)", "FF yosys (est.)", "BRAM36 yosys (est.)", "DSP", "mismatches",
         "accuracy % (w2a2)", "yosys s"], rows))
    lines.append("")
    for name, r in data["networks"].items():
        shown = {k: "—" if r["resources"][k]["error"] is None else f"{100 * r['resources'][k]['error']:+.0f} %"
                 for k in ("LUT", "FF")}
        est = lut_estimates(r)
        if est is not None and r["resources"]["LUT"]["measured"]:
            shown["LUT"] = f"{100 * (est[1] / r['resources']['LUT']['measured'] - 1):+.0f} %"
        where = "" if not r.get("mlpc_commit") else f" (measured at mlpc {r['mlpc_commit']})"
        ids = "" if name.startswith("cnn") else f" vs the CAN-IDS {CAN_IDS_LATENCY_MS * 1000:.0f} µs end to end"
        lines.append(f"- {name}{where}: estimate error against yosys LUT {shown['LUT']}, FF {shown['FF']}; pipeline "
                     f"latency {r['latency_us_measured']:.2f} µs on chip (host I/O not included){ids}.")
        est = lut_estimates(r)
        meas = r["resources"]["LUT"]["measured"]
        if est is not None and meas:
            lines.append(f"  LUT estimate (not a calibration design): FINN's coefficients {est[0]:,} ({100 * (est[0] / meas - 1):+.0f} %), "
                         f"fitted against yosys for {r['yosys_family']} {est[1]:,} ({100 * (est[1] / meas - 1):+.0f} %), "
                         f"yosys {meas:,}.")
        fs = r.get("fifo_sizing")
        if fs:
            depths = ", ".join(f"{f['name']}→{f['feeds']} {f['depth']} ({f['rule_depth']})" for f in fs["fifos"])
            saved = fs["bits_saved"]
            lines.append(f"  FIFO depths sized from the schedule (the old rule's in brackets): {depths}; "
                         f"{fs['bits']:,} FIFO bits vs {fs['rule_bits']:,} by the rule "
                         f"({'saves' if saved >= 0 else 'adds'} {abs(saved):,}, {100 * -saved / fs['rule_bits']:+.0f} %).")
    for name, r in data["networks"].items():
        if not any(la.get("kind") in ("conv", "maxpool") for la in r["layers"]):
            continue
        finn = (f" FINN's cycle model on finn-examples' CNV-w1a1 folding: slowest layer {CNV_SLOWEST_FINN:,} cycles."
                if name.startswith("cnv") else "")
        lines += ["", f"{name}, per unit (cycles per inference; the II is the slowest; LUT estimate per unit).{finn}", ""]
        rows = []
        for la in r["layers"]:
            if la.get("kind") == "maxpool":
                shape = f"maxpool {la['kernel'][0]}×{la['kernel'][1]} on {la['channels']}×{la['in_hw'][0]}×{la['in_hw'][1]}"
            elif la.get("kind") == "conv":
                w = la["window"]
                shape = (f"conv {w['kernel'][0]}×{w['kernel'][1]} pad {w['pads_tlbr'][0]} on {w['channels']}×"
                         f"{w['in_hw'][0]}×{w['in_hw'][1]} → {la['mh']}×{w['out_hw'][0]}×{w['out_hw'][1]}")
            else:
                shape = f"fc {la['mw']}→{la['mh']}"
            window = f"{la['window']['cycles']:,}" if la.get("kind") == "conv" else "—"
            unit_lut = la["estimate"]["LUT"]
            if "lut_terms" in la and "yosys_family" in r:
                from mlpc.backends.fpga.resources import lut_from_terms

                unit_lut = lut_from_terms(_sum_terms([la]), r["yosys_family"])
            rows.append([la["name"], shape, f"{la['pe']}/{la['simd']}", f"{la['cycles']:,}", window, f"{unit_lut:,}"])
        lines.append(common.markdown_table(["unit", "shape", "PE/SIMD", "cycles", "window cycles", "LUT est."],
                                           rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--synth-timeout", type=float, default=3600.0)
    parser.add_argument("--output", type=Path, default=common.RESULTS_DIR / "fpga.json")
    parser.add_argument("--no-readme", action="store_true")
    parser.add_argument("--render", action="store_true",
                        help="only re-render the README section from the stored results (e.g. after a new LUT fit)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    networks = [n for n in args.networks.split(",") if n]
    unknown = sorted(set(networks) - set(NETWORKS))
    if unknown:
        parser.error(f"unknown networks {unknown}; choose from {', '.join(NETWORKS)}")
    if args.render:
        stored = json.loads(args.output.read_text())
        common.publish(args.output, stored, "fpga", render(stored), readme=not args.no_readme)
        return 0
    data: dict[str, Any] = {"machine": common.machine_info(), "networks": {}}
    fresh: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in networks:
            fresh[name] = bench_network(name, Path(tmp), args.synth_timeout)
    if args.output.exists():  # networks not rerun keep their last figures (read now: another run may have ended)
        previous = json.loads(args.output.read_text())
        commit = previous.get("machine", {}).get("mlpc_commit")
        for name, r in previous.get("networks", {}).items():
            data["networks"][name] = {"mlpc_commit": commit, **r}
    data["networks"].update(fresh)
    data["networks"] = {n: data["networks"][n] for n in NETWORKS if n in data["networks"]}
    common.publish(args.output, data, "fpga", render(data), readme=not args.no_readme)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
