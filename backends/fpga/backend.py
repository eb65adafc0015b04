"""The FPGA backend's entry point: the integer Graph → a streaming dataflow design in an
artifact directory (FINN's flow as named steps, each leaving its output in the artifact):

    extract   the integer Graph → MVAU layers with exact thresholds      (network.py)
    fold      PE × SIMD per layer from --fps or --folding                  (folding.py)
    rtl       Verilog: top module, MVAUs, FIFOs, width converters, .mem    (rtl.py)
    testbench vectors from the reference interpreter + Verilator harness  (sim.py)
    simulate  Verilator: every output bit-exact, measured cycles           (sim.py)
    synth     yosys synth_xilinx: measured LUT/FF/BRAM36/DSP                (synth.py)
    report    report.json + report.html; the QONNX model for FINN          (report.py)

    >>> import mlpc
    >>> mlpc.compile("mlp_w2a2.onnx", target="fpga/xczu7ev", fps=1e6, output_dir="ids_fpga/")  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from mlpc.backends.fpga.folding import (
    choose_folding,
    estimate_resources,
    folding_to_json,
    load_folding,
    mvau_cycles,
    ram_style,
    total_resources,
)
from mlpc.backends.fpga.network import Network, extract_network
from mlpc.backends.fpga.report import report_html, resource_comparison, utilization
from mlpc.backends.fpga.rtl import fifo_depths, ports, write_rtl
from mlpc.backends.fpga.sim import simulate, write_testbench
from mlpc.backends.fpga.synth import synthesize
from mlpc.errors import LoweringError
from mlpc.targets import Target
from mlpc.targets.fpga import fpga_part

logger = logging.getLogger(__name__)

RTL_DIR = "rtl"
ROUNDING = ("the design is bit-exact with mlpc's integer Graph: Requantize rounds acc·m/2^s half up "
            "(toward +inf) and the thresholds are derived from it in exact integer arithmetic; QONNX Quant "
            "(the fake-quant Graph) rounds half to even, so the two can differ by one step where "
            "acc·m/2^s is exactly k + 1/2 with k even")
DEFAULT_INFERENCES = 32


def compile_graph(
    model: ir.Model, target: Target, out_dir: Path, schedules: bool = True, fps: float | None = None,
    folding: Any = None, simulate_design: bool = True, synthesize_design: bool = True,
    samples: np.ndarray | None = None, fake_quant_model: Any = None,
    synth_timeout_s: float | None = None, resource_limits: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Generate, simulate and synthesize the streaming design for `model`'s integer Graph.

    `fps` is the throughput to meet at the part's clock (None: the fastest folding that fits);
    `folding` a FINN-style JSON file or dict overriding PE/SIMD per layer; `samples` float inputs
    for the testbench (else inputs spanning the input quantizer's range); `fake_quant_model` the
    serialized fake-quant model, written as QONNX (`model.qonnx.onnx`); `resource_limits`
    ({"LUT": n, "BRAM36": m}) caps how far the automatic folding unfolds. Returns the manifest's
    "backend" section. Raises UnsupportedOpError/QuantizationError/InputError (bad model or
    options, before anything is written) and LoweringError (a tool failed, or the simulation
    disagreed with the reference interpreter).
    """
    net = extract_network(model.graph)
    part = fpga_part(target)
    overrides = load_folding(folding, net.layers) if folding is not None else {}
    folds = choose_folding(net.layers, part, fps, overrides, resource_limits)
    rtl = out_dir / RTL_DIR
    sources = [p.name for p in write_rtl(net, folds, rtl)]
    p = ports(net, folds)
    inputs, expected = _vectors(model, net, samples)
    write_testbench(rtl, p, inputs, expected)
    (out_dir / "folding.json").write_text(json.dumps(folding_to_json(net.layers, folds), indent=2) + "\n")

    cycles = [mvau_cycles(layer.mh, layer.mw, f.pe, f.simd, layer.vectors) for layer, f in zip(net.layers, folds)]
    ii = max(cycles)
    clock = part.clock_mhz * 1e6
    latency_model = sum(cycles) + 3 * len(cycles)  # each MVAU: its cycles + a 3-stage pipeline
    estimate = total_resources(net.layers, folds)
    report: dict[str, Any] = {
        "part": {**part.to_json(), "resources": part.resources()},
        "clock_mhz": part.clock_mhz,
        "fps_requested": fps,
        "rounding": ROUNDING,
        "design": {"top": "mlpc_top", "sources": [f"{RTL_DIR}/{s}" for s in sources],
                   "input": {"value": net.input_value, "elements_per_beat": p.in_elems, "bits": p.in_bits,
                             "signed": p.in_signed, "beats_per_inference": p.in_beats},
                   "output": {"value": net.output_value, "elements_per_beat": p.out_elems, "bits": p.out_bits,
                              "signed": p.out_signed, "beats_per_inference": p.out_beats},
                   "host_head": net.host_head, "host_tail": net.host_tail,
                   "fifo_depths": fifo_depths(net.layers, folds)},
        "layers": [_layer_json(layer, f, c) for layer, f, c in zip(net.layers, folds, cycles)],
        "performance": {"ii_cycles": ii, "slowest_layer": net.layers[cycles.index(ii)].name,
                        "throughput_fps": clock / ii, "latency_cycles_model": latency_model,
                        "latency_us_model": latency_model / clock * 1e6},
    }
    measured = None
    if simulate_design:
        report["simulation"] = _simulate(rtl, sources, inputs.shape[0])
        sim = report["simulation"]
        report["performance"]["ii_cycles_measured"] = sim["ii_cycles"]
        report["performance"]["latency_cycles_measured"] = sim["latency_cycles"]
        report["performance"]["latency_us_measured"] = sim["latency_cycles"] / clock * 1e6
    if synthesize_design:
        synth = synthesize(rtl, sources, part.yosys_family, timeout_s=synth_timeout_s)
        report["synthesis"] = {k: v for k, v in synth.items()}
        measured = {k: synth[k] for k in ("LUT", "FF", "BRAM36", "DSP")}
    report["resources"] = {
        "estimate": estimate, "measured": measured,
        "comparison": resource_comparison(estimate, measured),
        "note": ("estimates: FINN's MVAU formulas (LUT, BRAM) and mlpc's register count (FF) for the MVAUs "
                 "only; measured: yosys synth_xilinx cell counts for the whole design (FIFOs and width "
                 "converters included); error = estimate / measured − 1"),
    }
    report["utilization"] = utilization(measured or estimate, part.to_json())
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (out_dir / "report.html").write_text(report_html(report))
    if fake_quant_model is not None:
        from mlpc.quant.export import export_qonnx

        export_qonnx(ir.serde.deserialize_model(_onnx_proto(fake_quant_model)), out_dir / "model.qonnx.onnx")
    hashes = {f"{RTL_DIR}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest()
              for f in sorted(rtl.iterdir()) if f.is_file()}
    return {"kind": "fpga", "report": "report.json", "rtl_files": hashes,
            "ii_cycles": ii, "throughput_fps": clock / ii,
            "simulation_passed": report.get("simulation", {}).get("passed"),
            "resources_measured": measured, "resources_estimate": estimate}


def _onnx_proto(data: Any) -> Any:
    import onnx

    return onnx.load_from_string(data) if isinstance(data, bytes) else data


def _layer_json(layer: Any, fold: Any, cycles: int) -> dict[str, Any]:
    wb, _ = layer.w_bits
    ib, _ = layer.in_bits
    ob, _ = layer.out_bits
    return {"name": layer.name, "source": layer.source, "mw": layer.mw, "mh": layer.mh, "vectors": layer.vectors,
            "pe": fold.pe, "simd": fold.simd, "cycles": cycles, "ram_style": ram_style(layer, fold),
            "bits": f"w{wb}/a{ib}/o{ob}", "accumulator_bits": layer.acc_bits,
            "activation": "thresholds" if layer.has_activation else "none (accumulator out)",
            "thresholds_per_channel": 0 if layer.thresholds is None else int(layer.thresholds.shape[1]),
            "estimate": estimate_resources(layer, fold)}


def _vectors(model: ir.Model, net: Network, samples: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The design's input and expected output for each test inference, from the reference
    interpreter run on `samples` (or on float inputs that quantize to values spread over the
    whole input range)."""
    from mlpc.ir.evaluator import ReferenceEvaluator

    graph = model.graph
    x = graph.inputs[0]
    shape = [int(d) for d in x.shape.dims]
    if samples is None:
        samples = _spanning_inputs(graph, shape, *net.layers[0].in_range)
    ev = ReferenceEvaluator(model)
    ins, outs = [], []
    for sample in samples:
        r = ev.run({x.name: np.asarray(sample, np.float32).reshape(shape)}, [net.input_value, net.output_value])
        ins.append(np.asarray(r[net.input_value]).reshape(-1))
        outs.append(np.asarray(r[net.output_value]).reshape(-1))
    return np.array(ins, np.int64), np.array(outs, np.int64)


def _spanning_inputs(graph: ir.Graph, shape: list[int], lo: int, hi: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = graph.inputs[0]
    quant = next((u.node for u in x.uses() if u.node.op_type == "QuantizeLinear"), None)
    if quant is None:
        return rng.standard_normal((DEFAULT_INFERENCES, *shape)).astype(np.float32)
    scale = float(np.reshape(quant.inputs[1].const_value.numpy(), -1)[0])
    zp = int(np.reshape(quant.inputs[2].const_value.numpy(), -1)[0]) if len(quant.inputs) > 2 else 0
    q = rng.integers(lo - 1, hi + 2, size=(DEFAULT_INFERENCES, *shape))  # one step beyond: the Clip too
    return ((q - zp) * scale).astype(np.float32)


def _simulate(rtl: Path, sources: list[str], inferences: int) -> dict[str, Any]:
    """Build and run the testbench in a scratch copy (the build tree stays out of the artifact),
    at full rate and with random stalls; raise LoweringError on any mismatch."""
    with tempfile.TemporaryDirectory(prefix="mlpc-sim-") as scratch:
        work = Path(scratch) / "rtl"
        shutil.copytree(rtl, work)
        full = simulate(work, sources)
        stalled = simulate(work, sources, stall_seed=1)
    for name, res in (("at full rate", full), ("with random stalls", stalled)):
        if not res["passed"]:
            raise LoweringError(
                f"the generated design disagrees with the reference interpreter {name}: {res['mismatches']} of "
                f"{res['outputs_expected']} output beats differ (first: beat {res['first_mismatch']}), "
                f"{res['outputs_checked']} arrived; this is an mlpc bug — please report it with the model")
    return {**{k: full[k] for k in ("mismatches", "outputs_checked", "outputs_expected", "cycles",
                                    "latency_cycles", "ii_cycles", "passed")},
            "inferences": inferences, "simulator": "verilator",
            "stalled": {k: stalled[k] for k in ("mismatches", "outputs_checked", "cycles", "passed")}}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
