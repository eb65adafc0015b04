"""The FPGA backend's entry point: the integer Graph → a streaming dataflow design in an
artifact directory (FINN's flow as named steps, each leaving its output in the artifact):

    extract   the integer Graph → MVAU (+ sliding window) and max-pool units  (network.py)
    fold      PE × SIMD per layer from --fps or --folding                  (folding.py)
    testbench vectors from the reference interpreter + Verilator harness  (sim.py)
    fifos     FIFO depths from a throttled simulation with deep FIFOs       (fifos.py)
    rtl       Verilog: top module, MVAUs, windows, pools, FIFOs, .mem      (rtl.py)
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
    Folding,
    choose_folding,
    estimate_resources,
    folding_to_json,
    layer_cycles,
    load_folding,
    lut_terms,
    pool_cycles,
    pool_lut_terms,
    pool_resources,
    ram_style,
    window_cycles,
    window_rows,
)
from mlpc.backends.fpga.network import MvauLayer, Network, PoolLayer, Unit, extract_network
from mlpc.backends.fpga.report import report_html, resource_comparison, utilization
from mlpc.backends.fpga.fifos import FIFO_RULE, FIFO_SIZED, rule_depths, size_fifos, sizing_report
from mlpc.backends.fpga.resources import coefficients, is_corrected
from mlpc.backends.fpga.rtl import ports, write_rtl
from mlpc.backends.fpga.sim import simulate, write_testbench
from mlpc.backends.fpga.synth import synthesize
from mlpc.errors import InputError, LoweringError
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
    overrides = load_folding(folding, net.mvaus) if folding is not None else {}
    folds = unit_folds(net.layers, choose_folding(net.mvaus, part, fps, overrides, resource_limits))
    cycles = [unit_cycles(la, f) for la, f in zip(net.layers, folds)]
    if fps is not None and max(cycles) > part.clock_mhz * 1e6 / fps:
        slow = net.layers[cycles.index(max(cycles))]
        raise InputError(f"--fps {fps:g} cannot be met on {part.part} at {part.clock_mhz:g} MHz: {slow.name} "
                         f"({slow.source}) needs {max(cycles)} cycles per inference at the folding of the layer "
                         "before it; lower --fps")
    rtl = out_dir / RTL_DIR
    p = ports(net, folds)
    inputs, expected = _vectors(model, net, samples)
    ii = max(cycles)

    def write_design(depths: list[int], where: Path) -> list[str]:
        names = [f.name for f in write_rtl(net, folds, where, depths)]
        write_testbench(where, p, inputs, expected)
        return names

    if simulate_design:
        with tempfile.TemporaryDirectory(prefix="mlpc-fifo-") as scratch:
            depths, deep_run = size_fifos(net, folds, ii, Path(scratch), write_design,
                                          lambda d, srcs, period: simulate(d, srcs, period=period))
        fifo_sizing = sizing_report(net.layers, folds, depths, FIFO_SIZED, deep_run, ii)
    else:
        depths = rule_depths(net.layers, folds)
        fifo_sizing = sizing_report(net.layers, folds, depths, FIFO_RULE)
    sources = write_design(depths, rtl)
    mfolds = [f for la, f in zip(net.layers, folds) if isinstance(la, MvauLayer)]
    (out_dir / "folding.json").write_text(json.dumps(folding_to_json(net.mvaus, mfolds), indent=2) + "\n")

    clock = part.clock_mhz * 1e6
    latency_model = sum(cycles) + 3 * len(cycles)  # each MVAU: its cycles + a 3-stage pipeline
    family = part.yosys_family
    estimate = {"LUT": 0, "FF": 0, "BRAM36": 0, "DSP": 0}
    finn_lut = 0  # the same estimate with FINN's published coefficients (before the yosys correction)
    for la, f, depth in zip(net.layers, folds, depths):
        for k, v in unit_resources(la, f, family, depth).items():
            estimate[k] += v
        finn_lut += unit_resources(la, f, None, depth)["LUT"]
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
                   "fifo_depths": depths},
        "fifo_sizing": fifo_sizing,
        "layers": [_layer_json(layer, f, c, family, d) for layer, f, c, d in zip(net.layers, folds, cycles, depths)],
        "performance": {"ii_cycles": ii, "slowest_layer": net.layers[cycles.index(ii)].name,
                        "throughput_fps": clock / ii, "latency_cycles_model": latency_model,
                        "latency_us_model": latency_model / clock * 1e6},
    }
    measured = None
    if simulate_design:
        report["simulation"] = _simulate(rtl, sources, inputs.shape[0], ii, deep_run)
        fifo_sizing["schedule_preserved"] = True  # _simulate raised otherwise
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
        "lut_model": {"corrected": is_corrected(family), "family": family, "coefficients": coefficients(family),
                      "finn_coefficients_estimate": finn_lut,
                      "finn_coefficients_error": None if not measured or not measured["LUT"]
                      else round(finn_lut / measured["LUT"] - 1, 4)},
        "note": ("estimates: LUT = Σ coefficient·term over FINN's MVAU formula split into its terms plus mlpc's "
                 "LUT-RAM buffers, sliding windows and max pools (backends/fpga/folding.py lut_terms), with "
                 + (f"coefficients fitted against yosys for {family} (backends/fpga/resource_model.json); "
                    if is_corrected(family) else "FINN's published coefficients (no yosys fit for this family); ")
                 + "BRAM FINN's formula; FF mlpc's register count; measured: yosys synth_xilinx cell counts for the "
                 "whole design (FIFOs and width converters included; width converters are not in the estimate); "
                 "error = estimate / measured − 1"),
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


def unit_folds(layers: list[Unit], mvau_folds: list[Folding]) -> list[Folding]:
    """Per unit: the MVAUs' foldings, and for a max pool PE = the elements per beat of the unit
    before it (all channels of a pixel when it comes first), so no width converter is needed."""
    it = iter(mvau_folds)
    folds: list[Folding] = []
    for la in layers:
        if isinstance(la, PoolLayer):
            pe = folds[-1].pe if folds else la.channels
            folds.append(Folding(pe, pe))
        else:
            folds.append(next(it))
    return folds


def unit_cycles(unit: Unit, fold: Folding) -> int:
    """Cycles per inference of one unit (an MVAU with its sliding window, or a max pool)."""
    return pool_cycles(unit, fold.pe) if isinstance(unit, PoolLayer) else layer_cycles(unit, fold)


def unit_resources(unit: Unit, fold: Folding, family: str | None = None, fifo_depth: int | None = None) -> dict[str, int]:
    """The analytic LUT/FF/BRAM36/DSP of one unit (LUTs corrected for the yosys `family` where
    fitted; an MVAU with its input FIFO at `fifo_depth`, default the fixed rule)."""
    if isinstance(unit, PoolLayer):
        return pool_resources(unit, fold.pe, family)
    return estimate_resources(unit, fold, family, fifo_depth)


def _layer_json(layer: Any, fold: Any, cycles: int, family: str | None, depth: int) -> dict[str, Any]:
    if isinstance(layer, PoolLayer):
        b, _ = layer.in_bits
        return {"name": layer.name, "source": layer.source, "kind": "maxpool", "channels": layer.channels,
                "in_hw": [layer.in_h, layer.in_w], "kernel": [layer.k_h, layer.k_w],
                "out_hw": [layer.out_h, layer.out_w], "pe": fold.pe, "simd": fold.pe, "cycles": cycles,
                "bits": f"a{b}", "estimate": unit_resources(layer, fold, family),
                "lut_terms": {k: round(v, 2) for k, v in pool_lut_terms(layer, fold.pe).items()}}
    wb, _ = layer.w_bits
    ib, _ = layer.in_bits
    ob, _ = layer.out_bits
    out = {"name": layer.name, "source": layer.source, "kind": "mvau" if layer.window is None else "conv",
           "mw": layer.mw, "mh": layer.mh, "vectors": layer.vectors,
            "pe": fold.pe, "simd": fold.simd, "cycles": cycles, "ram_style": ram_style(layer, fold),
            "bits": f"w{wb}/a{ib}/o{ob}", "accumulator_bits": layer.acc_bits,
            "activation": "thresholds" if layer.has_activation else "none (accumulator out)",
            "thresholds_per_channel": 0 if layer.thresholds is None else int(layer.thresholds.shape[1]),
            "estimate": unit_resources(layer, fold, family, depth),
            "lut_terms": {k: round(v, 2) for k, v in lut_terms(layer, fold, depth).items()}}
    if layer.window is not None:
        w = layer.window
        out["window"] = {"channels": w.channels, "in_hw": [w.in_h, w.in_w], "kernel": [w.k_h, w.k_w],
                         "stride": [w.stride_h, w.stride_w], "pads_tlbr": list(w.pads), "pad_value": w.pad_value,
                         "out_hw": [w.out_h, w.out_w], "line_buffer_rows": window_rows(w),
                         "cycles": window_cycles(w, fold.simd)}
    return out


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
        ins.append(to_stream(np.asarray(r[net.input_value]), net.in_order))
        outs.append(to_stream(np.asarray(r[net.output_value]), net.out_order))
    return np.array(ins, np.int64), np.array(outs, np.int64)


def to_stream(value: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """A Graph value's elements in stream order (stream[order] = value.reshape(-1)).

        >>> to_stream(np.arange(8).reshape(1, 2, 2, 2), np.array([0, 2, 4, 6, 1, 3, 5, 7])).tolist()
        [0, 4, 1, 5, 2, 6, 3, 7]
    """
    flat = np.asarray(value).reshape(-1)
    if order is None:
        return flat
    out = np.empty_like(flat)
    out[np.asarray(order).reshape(-1)] = flat
    return out


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


def _simulate(rtl: Path, sources: list[str], inferences: int, period: int, deep_run: dict[str, Any]) -> dict[str, Any]:
    """Build and run the testbench in a scratch copy (the build tree stays out of the artifact),
    at full rate, with random stalls and throttled as in the FIFO sizing run; raise LoweringError
    on any mismatch, and if the sized FIFOs changed the throttled schedule (a refused beat, or an
    inference completing at another cycle than with the deep FIFOs)."""
    with tempfile.TemporaryDirectory(prefix="mlpc-sim-") as scratch:
        work = Path(scratch) / "rtl"
        shutil.copytree(rtl, work)
        full = simulate(work, sources)
        stalled = simulate(work, sources, stall_seed=1)
        throttled = simulate(work, sources, period=period)
    refused = {k: v for k, v in throttled["fifo_blocked"].items() if v}
    if refused or throttled["done"] != deep_run["done"]:
        raise LoweringError(
            f"the sized FIFOs changed the schedule of the sizing run (refused beats: {refused or 'none'}; inferences "
            f"completed at {throttled['done'][:4]}… instead of {deep_run['done'][:4]}…); this is an mlpc bug — please "
            "report it with the model")
    for name, res in (("at full rate", full), ("with random stalls", stalled), ("throttled", throttled)):
        if not res["passed"]:
            raise LoweringError(
                f"the generated design disagrees with the reference interpreter {name}: {res['mismatches']} of "
                f"{res['outputs_expected']} output beats differ (first: beat {res['first_mismatch']}), "
                f"{res['outputs_checked']} arrived; this is an mlpc bug — please report it with the model")
    return {**{k: full[k] for k in ("mismatches", "outputs_checked", "outputs_expected", "cycles",
                                    "latency_cycles", "ii_cycles", "passed", "fifo_peak")},
            "inferences": inferences, "simulator": "verilator",
            "stalled": {k: stalled[k] for k in ("mismatches", "outputs_checked", "cycles", "passed", "fifo_peak")},
            "throttled": {**{k: throttled[k] for k in ("mismatches", "passed", "ii_cycles", "fifo_peak", "fifo_blocked")},
                          "period_cycles": period, "same_schedule_as_deep_fifos": True}}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
