"""The `mlpc` command line.

    mlpc compile model.onnx --target host -o out/ --verify [--tuning-db tuning-db]
    mlpc compile model.onnx --quantize mixed --calib c.npz --size-budget 0.15 [--latency-budget 2ms] -o out/
    mlpc sensitivity model.onnx --calib c.npz -o sens.json [--method hessian]
    mlpc tune model.onnx --target host --trials 64 [--time 10m] --db tuning-db
    mlpc tune model.onnx --target cuda/sm_80 --rpc-tracker HOST:9190 --rpc-key KEY --db tuning.json
    mlpc run out/ --inputs in.npz -o out.npz
    mlpc inspect model.onnx | out/ [--json]
    mlpc targets [--json]

Exit codes: 0 done, 1 verification failed, 2 bad input or usage. Errors print one line;
`--debug` shows the traceback.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from mlpc.errors import InputError, MlpcError

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="mlpc",
    help="Hardware-aware compiler and quantization toolkit: ONNX/PyTorch models to fast, verified builds.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and debug logs."),
) -> None:
    _state["debug"] = debug
    level = "debug" if debug else os.environ.get("MLPC_LOG", "warning")
    logging.basicConfig(level=getattr(logging, level.upper(), logging.WARNING),
                        format="%(levelname)s %(name)s: %(message)s")
    if not debug:  # libraries log recoverable failures with tracebacks; mlpc reports what matters
        for name in ("onnx_ir", "onnxscript"):
            logging.getLogger(name).setLevel(logging.ERROR)


@app.command("compile")
def compile_cmd(
    model: Path = typer.Argument(..., help="The model: an .onnx file."),
    target: str = typer.Option("host", "--target", "-t", help="Target tag (see `mlpc targets`)."),
    output: Path = typer.Option(..., "--output", "-o", help="The artifact directory to write."),
    verify: bool = typer.Option(False, "--verify", help="Check the build against onnxruntime; exit 1 beyond tolerance."),
    input_shape: list[str] = typer.Option([], "--input-shape", help="NAME=DIMS, e.g. x=1x3x224x224 (repeatable)."),
    tolerance: float = typer.Option(1e-4, "--tolerance", help="Max error relative to max|reference| for --verify."),
    passes: Optional[str] = typer.Option(None, "--passes", help="Run exactly these passes, comma-separated."),
    disable_pass: list[str] = typer.Option([], "--disable-pass", help="Skip this pass (repeatable)."),
    pass_plugin: list[Path] = typer.Option([], "--pass-plugin", help="A Python file registering passes (repeatable)."),
    dump_ir: Optional[Path] = typer.Option(None, "--dump-ir", help="Write the IR as text before and after each pass."),
    bundle: Optional[Path] = typer.Option(None, "--bundle", help="Also write a deployment bundle (.tar.gz) for the board."),
    dtype: str = typer.Option("fp32", "--dtype", help="Compute precision: fp32, or fp16/bf16 (CUDA targets)."),
    tuning_db: Optional[Path] = typer.Option(None, "--tuning-db", help="Apply tuned schedules from this `mlpc tune` database."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="Quantization scheme, e.g. w8a8, w4a8, w2a8."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration data: .npz keyed by input name or a directory of .npy."),
    quant_config: Optional[Path] = typer.Option(None, "--quant-config", help="Per-layer quantization config (YAML or JSON)."),
    size_budget: Optional[str] = typer.Option(
        None, "--size-budget", help="--quantize mixed: model size, a fraction of fp32 (0.15), bytes or 40KiB."),
    latency_budget: Optional[str] = typer.Option(
        None, "--latency-budget", help="--quantize mixed: latency, e.g. 2ms (x86: measured here; arm/cuda: analytic)."),
    bops_budget: Optional[str] = typer.Option(
        None, "--bops-budget", help="--quantize mixed: bit operations, a fraction of w8a8's or a count."),
    bits: Optional[str] = typer.Option(None, "--bits", help="--quantize mixed: candidate weight bits (default 2,3,4,8)."),
    sensitivity: Optional[Path] = typer.Option(
        None, "--sensitivity", help="--quantize mixed: a sensitivity JSON from `mlpc sensitivity` (else measured)."),
    mixed_report: Optional[Path] = typer.Option(
        None, "--mixed-report", help="--quantize mixed: write an HTML report with the Pareto frontier."),
    mixed_candidates: int = typer.Option(
        1, "--mixed-candidates",
        help="--quantize mixed: measure the ILP's N best allocations end to end on held-out calibration samples."),
    lut_budget: Optional[str] = typer.Option(
        None, "--lut-budget", help="--quantize mixed on fpga/*: LUTs, a fraction of the part (0.5) or a count."),
    bram_budget: Optional[str] = typer.Option(
        None, "--bram-budget", help="--quantize mixed on fpga/*: BRAM36, a fraction of the part or a count."),
    fps: Optional[float] = typer.Option(None, "--fps", help="FPGA targets: inferences per second the folding must meet."),
    folding: Optional[Path] = typer.Option(None, "--folding", help="FPGA targets: JSON of PE/SIMD per layer (FINN style)."),
    synth: bool = typer.Option(True, "--synth/--no-synth", help="FPGA targets: synthesize with yosys for measured resources."),
) -> None:
    """Compile MODEL for TARGET into an artifact directory."""
    from mlpc.driver import compile as compile_model
    from mlpc.frontend import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in input_shape)
    try:
        with err.status(f"compiling {model.name} for {target}..."):
            artifact = compile_model(
                model, target=target, output_dir=output, input_shapes=shapes, verify=verify,
                tolerance=tolerance, passes=_split(passes), disabled_passes=disable_pass,
                pass_plugins=pass_plugin, dump_ir=dump_ir, bundle=bundle, dtype=dtype, tuning_db=tuning_db,
                **_quant_args(quantize, calib, quant_config), **_fpga_args(fps, folding, synth),
                size_budget=size_budget, latency_budget=latency_budget, bops_budget=bops_budget,
                mixed_bits=_bits(bits), sensitivity=sensitivity, mixed_report=mixed_report,
                mixed_candidates=mixed_candidates, lut_budget=lut_budget, bram_budget=bram_budget,
            )
    except MlpcError as e:
        if type(e).__name__ == "VerificationError" and (output / "manifest.json").exists():
            _print_verification(json.loads((output / "manifest.json").read_text()).get("verification"))
        raise
    m = artifact.manifest
    out.print(f"[green]compiled[/] {model} → {artifact.path} ({m['target']['name']}, "
              f"{m['stats']['nodes']} nodes, {m['compile_seconds']:.1f}s)")
    if "mixed_precision" in m:
        mp = m["mixed_precision"]
        alloc = mp["allocation"]
        out.print("mixed precision: " + ", ".join(f"{k}={v}" for k, v in alloc["bits"].items()) +
                  f" (weights {100 * mp['size_fraction']:.1f}% of fp32, {alloc['size'] / 1024:.1f} KiB"
                  + (f", latency {alloc['latency'] * 1e3:.3g} ms" if "latency" in alloc else "") + ")")
    if m["target"]["kind"] == "fpga":
        _print_fpga(artifact.path)
    elif verify:
        _print_verification(artifact.verification)
    if bundle is not None:
        out.print(f"[green]bundled[/] → {bundle} ({bundle.stat().st_size / 1e6:.1f} MB)")


def _bits(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(b) for b in text.split(",") if b.strip()]
    except ValueError as e:
        raise InputError(f"--bits {text!r}: give comma-separated integers, e.g. 2,4,8") from e


@app.command("sensitivity")
def sensitivity_cmd(
    model: Path = typer.Argument(..., help="The float model: an .onnx file."),
    calib: Path = typer.Option(..., "--calib", help="Calibration data: .npz keyed by input name or a directory of .npy."),
    output: Path = typer.Option(..., "--output", "-o", help="The sensitivity JSON file to write."),
    method: str = typer.Option("data", "--method", help="data (output perturbation) or hessian (Hutchinson trace)."),
    metric: str = typer.Option("mse", "--metric", help="data method: mse (relative output noise) or kl (logits)."),
    rounding: str = typer.Option(
        "pass", "--rounding", help="data method: pass (the quantize pass's GPTQ/bias-corrected weights) or nearest (faster)."),
    bits: str = typer.Option("2,3,4,8", "--bits", help="Candidate weight bits."),
    samples: int = typer.Option(64, "--samples", help="Calibration samples to use."),
    labels: Optional[Path] = typer.Option(
        None, "--labels", help="hessian: .npy of integer labels (default: the float model's predictions)."),
    input_shape: list[str] = typer.Option([], "--input-shape", help="NAME=DIMS, e.g. x=1x3x224x224 (repeatable)."),
) -> None:
    """Measure each layer's sensitivity to weight quantization at each candidate width."""
    import numpy as np

    from mlpc.frontend import parse_input_shape
    from mlpc.mixed.api import compute_sensitivity

    shapes = dict(parse_input_shape(s) for s in input_shape)
    label_array = None
    if labels is not None:
        try:
            label_array = np.load(labels, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"--labels {labels}: not a readable .npy ({e})") from e
    sens = compute_sensitivity(model, calib, method=method, metric=metric, rounding=rounding, bits=_bits(bits),
                               labels=label_array,
                               samples=samples, input_shapes=shapes)
    sens.save(output)
    table = Table(title=f"sensitivity Ω ({sens.method}, {sens.metric}, {sens.samples} samples)")
    table.add_column("layer")
    table.add_column("params", justify="right")
    for b in sens.bits:
        table.add_column(f"{b}-bit", justify="right")
    for layer in sens.layers:
        table.add_row(layer.name, str(layer.params), *(f"{sens.omega[layer.name][b]:.3g}" for b in sens.bits))
    out.print(table)
    out.print(f"[green]wrote[/] {output}")


def _fpga_args(fps: Optional[float], folding: Optional[Path], synth: bool) -> dict[str, Any]:
    args: dict[str, Any] = {}
    if fps is not None:
        args["fps"] = fps
    if folding is not None:
        args["folding"] = folding
    if not synth:
        args["fpga_options"] = {"synthesize_design": False}
    return args


def _print_fpga(path: Path) -> None:
    report = json.loads((path / "report.json").read_text())
    perf = report["performance"]
    table = Table(title=f"{report['part']['part']} at {report['clock_mhz']:g} MHz (stated clock, not an Fmax)")
    for col in ("layer", "MW x MH", "PE", "SIMD", "bits", "cycles"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for layer in report["layers"]:
        shape = f"{layer['mw']}x{layer['mh']}" if "mw" in layer else f"pool {layer['kernel'][0]}x{layer['kernel'][1]}"
        table.add_row(layer["name"], shape, str(layer["pe"]), str(layer["simd"]), layer["bits"], f"{layer['cycles']:,}")
    out.print(table)
    sim = report.get("simulation")
    measured = perf.get("ii_cycles_measured")
    out.print(f"II {perf['ii_cycles']:,} cycles (simulated: {measured if measured is not None else '-'}) -> "
              f"{perf['throughput_fps']:,.0f} FPS; latency {perf.get('latency_us_measured', perf['latency_us_model']):.3f} us")
    if sim:
        out.print(f"simulation: {sim['outputs_checked']} output beats, {sim['mismatches']} mismatches "
                  f"({sim['inferences']} inferences, also with random stalls)")
    fs = report.get("fifo_sizing")
    if fs:
        depths = ", ".join(f"{f['name']} {f['depth']}" for f in fs["fifos"])
        out.print(f"FIFO depths ({'from the schedule' if fs['method'].startswith('simulated') else 'fixed rule'}): "
                  f"{depths}; {fs['bits']:,} bits ({fs['rule_bits']:,} by the old rule)")
    for k, row in report["resources"]["comparison"].items():
        err = "" if row["error"] is None else f" (estimate error {100 * row['error']:+.0f} %)"
        out.print(f"  {k}: estimate {row['estimate']}, yosys {row['measured'] if row['measured'] is not None else '-'}{err}")


def _quant_args(scheme: Optional[str], calib: Optional[Path], config: Optional[Path]) -> dict[str, Any]:
    if scheme is None and config is None:
        if calib is not None:
            raise InputError("--calib needs --quantize SCHEME (e.g. --quantize w8a8)")
        return {}
    if calib is None:
        raise InputError("--quantize needs calibration data: --calib FILE.npz (keyed by input name) or a directory of .npy")
    return {"quantize": scheme or "w8a8", "calibration": calib, "quant_config": config}


@app.command("quantize")
def quantize_cmd(
    model: Path = typer.Argument(..., help="The float model: an .onnx file."),
    scheme: str = typer.Option("w8a8", "--quantize", "-q", help="Quantization scheme, e.g. w8a8, w4a8, w2a8."),
    calib: Path = typer.Option(..., "--calib", help="Calibration data: .npz keyed by input name or a directory of .npy."),
    output: Path = typer.Option(..., "--output", "-o", help="The quantized .onnx file to write."),
    fmt: str = typer.Option("qdq", "--format", help="qdq (onnxruntime; QCDQ below 8 bits) or qonnx."),
    quant_config: Optional[Path] = typer.Option(None, "--quant-config", help="Per-layer quantization config (YAML or JSON)."),
    input_shape: list[str] = typer.Option([], "--input-shape", help="NAME=DIMS, e.g. x=1x3x224x224 (repeatable)."),
    engine: str = typer.Option("tvm", "--engine", help="Calibrate on a TVM build (tvm) or the NumPy interpreter (reference)."),
) -> None:
    """Quantize MODEL after calibrating it on CALIB and write it as QDQ or QONNX ONNX."""
    from mlpc.frontend import parse_input_shape
    from mlpc.quant.api import quantize
    from mlpc.quant.export import export_qdq, export_qonnx

    exporters = {"qdq": export_qdq, "qonnx": export_qonnx}
    if fmt not in exporters:
        raise InputError(f"--format {fmt!r}: use qdq or qonnx")
    if output.is_dir():
        raise InputError(f"--output {output}: is a directory, give an .onnx file path")
    shapes = dict(parse_input_shape(s) for s in input_shape)
    qmodel = quantize(model, scheme, calib, config=quant_config, input_shapes=shapes, engine=engine,
                      progress=sys.stderr.isatty())
    exporters[fmt](qmodel, output)
    out.print(f"[green]quantized[/] {model} ({scheme}) → {output} ({fmt})")


def _split(names: Optional[str]) -> Optional[list[str]]:
    return None if names is None else [n.strip() for n in names.split(",") if n.strip()]


def _print_verification(report: dict[str, Any] | None) -> None:
    if not report:
        return
    table = Table(title=f"verification against {report['reference']} ({report['samples']} input sets)")
    for col in ("output", "max abs err", "rel err", "cosine", "top-1 agree"):
        table.add_column(col, justify="right" if col != "output" else "left")
    for o in report["outputs"]:
        top1 = "-" if o["top1_agreement"] is None else f"{100 * o['top1_agreement']:.1f}%"
        table.add_row(o["name"], f"{o['max_abs_err']:.3g}", f"{o['rel_err']:.3g}", f"{o['cosine']:.6f}", top1)
    out.print(table)
    verdict = "[green]passed[/]" if report["passed"] else "[red]FAILED[/]"
    out.print(f"verification {verdict} (tolerance {report['tolerance']:g} of max|reference|)")


@app.command("tune")
def tune_cmd(
    model: Path = typer.Argument(..., help="The model: an .onnx file."),
    target: str = typer.Option("host", "--target", "-t", help="Target tag (a CPU or cuda/...: see `mlpc targets`)."),
    trials: int = typer.Option(64, "--trials", help="Measurements in all, spread over the kernels by their share of time."),
    dtype: str = typer.Option("fp32", "--dtype", help="CUDA targets: the compute precision of the build to tune (fp32, fp16, bf16)."),
    time_limit: Optional[str] = typer.Option(None, "--time", help="Stop after this long, e.g. 90s, 10m, 1h."),
    db: Path = typer.Option(Path("tuning-db"), "--db", help="The tuning database directory (created or resumed)."),
    input_shape: list[str] = typer.Option([], "--input-shape", help="NAME=DIMS, e.g. x=1x3x224x224 (repeatable)."),
    rpc_tracker: Optional[str] = typer.Option(None, "--rpc-tracker", help="Measure on a remote device: tracker HOST:PORT."),
    rpc_key: Optional[str] = typer.Option(None, "--rpc-key", help="The device key registered with the RPC tracker."),
) -> None:
    """Auto-tune MODEL's kernels for TARGET with MetaSchedule; later compiles use the results."""
    from mlpc.backends.tvm.tuning import tune
    from mlpc.backends.tvm.tuning_progress import TuneDisplay, parse_duration
    from mlpc.frontend import parse_input_shape

    shapes = dict(parse_input_shape(s) for s in input_shape)
    limit = parse_duration(time_limit) if time_limit else None
    with TuneDisplay(err, f"extracting and timing the kernels of {model.name}...") as display:
        result = tune(model, target, db, trials, time_limit_s=limit, input_shapes=shapes, dtype=dtype,
                      rpc_tracker=rpc_tracker, rpc_key=rpc_key, on_progress=display.update)
    display.print_summary(result, out)
    if result.stopped and result.stopped.startswith("interrupted"):
        raise KeyboardInterrupt  # main() reports it and exits 130; the records are kept


@app.command("run")
def run_cmd(
    artifact: Path = typer.Argument(..., help="An artifact directory or a bundle (.tar.gz) written by `mlpc compile`."),
    inputs: Path = typer.Option(..., "--inputs", "-i", help=".npz keyed by input name, or one .npy for a single input."),
    output: Path = typer.Option(..., "--output", "-o", help="The .npz to write, keyed by output name."),
) -> None:
    """Run ARTIFACT on the inputs in an .npz (or .npy) and write the outputs to an .npz.

    A bundle, or a build for another architecture, runs in its native runner (under qemu-user).
    """
    import contextlib

    import numpy as np

    from mlpc.artifact import load
    from mlpc.bundle import needs_runner, open_bundle

    with open_bundle(artifact) if needs_runner(artifact) else contextlib.nullcontext(load(artifact)) as art:
        feeds = _read_inputs(inputs, art.inputs)
        results = art.run(feeds)
    tmp = output.with_name(output.name + ".tmp.npz")
    try:
        np.savez(tmp, **results)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    out.print(f"wrote {', '.join(results)} to {output}")


def _read_inputs(path: Path, specs: list[dict[str, Any]]) -> dict[str, Any]:
    import numpy as np

    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        if path.suffix == ".npy":
            if len(specs) != 1:
                raise InputError(f"{path}: a single .npy only fits a model with one input; "
                                 f"this one takes {', '.join(s['name'] for s in specs)}: use an .npz")
            return {specs[0]["name"]: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npz/.npy file ({e})") from e


@app.command("inspect")
def inspect_cmd(
    model: Path = typer.Argument(..., help="An .onnx model or an artifact directory."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    input_shape: list[str] = typer.Option([], "--input-shape", help="NAME=DIMS for symbolic inputs."),
    float_model: Optional[Path] = typer.Option(
        None, "--float-model", help="For a quantized .onnx: the float model it came from (per-layer SQNR)."),
    calib: Optional[Path] = typer.Option(
        None, "--calib", help="With --float-model: inputs (.npz keyed by input name, or a directory of .npy)."),
    engine: str = typer.Option("reference", "--engine", help="Run the models for SQNR with: reference or tvm."),
    samples: int = typer.Option(32, "--samples", help="With --calib: measure SQNR on at most this many samples."),
) -> None:
    """Show ops, parameters, FLOPs/MACs and shapes of a model or an artifact; for a quantized one,
    per-layer bits, scales and SQNR against the float model."""
    from mlpc.artifact import is_artifact, load

    if model.is_dir() and is_artifact(model):
        if float_model is not None or calib is not None:
            raise InputError("--float-model/--calib apply to a quantized .onnx model; an artifact's "
                             "per-layer SQNR was measured at compile time and is in its manifest")
        manifest = load(model, check_target=False).manifest
        info = {"kind": "artifact", "path": str(model), "target": manifest["target"]["name"],
                **manifest["stats"], "passes": manifest["passes"], "verification": manifest.get("verification")}
        if manifest.get("quantization"):
            info["quantization"] = manifest["quantization"]
        info.update(_cuda_info(model, manifest))
    else:
        info = {"kind": "model", "path": str(model), **_model_info(model, input_shape)}
        quant = _quant_model_info(model, input_shape, float_model, calib, engine, samples)
        if quant is not None:
            info["quantization"] = quant
    if as_json:
        print(json.dumps(info, indent=2))
        return
    _print_info(info)


def _cuda_info(path: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    from mlpc.inspect_cuda import cuda_report, is_cuda_artifact

    return {"cuda": cuda_report(path, manifest)} if is_cuda_artifact(manifest) else {}


def _model_info(path: Path, input_shape: list[str]) -> dict[str, Any]:
    from mlpc.analysis import model_stats
    from mlpc.frontend import load_model, parse_input_shape
    from mlpc.pass_infra import PassContext
    from mlpc.passes.canonicalize import CanonicalizePass

    shapes = dict(parse_input_shape(s) for s in input_shape)
    loaded = load_model(path, input_shapes=shapes)
    CanonicalizePass()(loaded.model.graph, PassContext())
    return model_stats(loaded.model.graph)


def _quant_model_info(path: Path, input_shape: list[str], float_model: Optional[Path], calib: Optional[Path],
                     engine: str, samples: int) -> dict[str, Any] | None:
    from mlpc.frontend import parse_input_shape
    from mlpc.quant.report import ENGINE_NAMES, model_report

    if engine not in ENGINE_NAMES:
        raise InputError(f"--engine {engine!r}: use {' or '.join(ENGINE_NAMES)}")
    if samples < 1:
        raise InputError(f"--samples {samples}: give at least 1")
    shapes = dict(parse_input_shape(s) for s in input_shape)
    report = model_report(path, float_model, calib, engine=engine, samples=samples, input_shapes=shapes)
    if report is None and float_model is not None:
        raise InputError(f"{path}: holds no quantization (no Quant/QuantizeLinear/DequantizeLinear node); "
                         "--float-model applies to a quantized model")
    return report


def _fmt_db(row: dict[str, Any]) -> str:
    if row.get("exact"):
        return "exact"
    return "-" if row.get("sqnr_db") is None else f"{row['sqnr_db']:.1f}"


def _print_quantization(q: dict[str, Any]) -> None:
    scheme = f" ({q['scheme']})" if q.get("scheme") else ""
    if q.get("measured"):
        title = f"quantized layers{scheme}: SQNR of each layer's output vs the float model, {q['samples']} samples"
        caption = q["measured"]
    else:
        title = f"quantized layers{scheme}"
        caption = "SQNR: give --float-model MODEL.onnx --calib DATA to measure it"
    table = Table(title=title, caption=caption)
    for col, right in (("layer", False), ("op", False), ("bits W/A", True), ("weights", False),
                       ("W scales min..max", True), ("A scale", True), ("SQNR dB", True)):
        table.add_column(col, justify="right" if right else "left")
    for r in q["layers"]:
        bits = "/".join("f" if r[k] is None else str(r[k]) for k in ("weight_bits", "activation_bits"))
        gran = {"per_channel": "per channel", "per_tensor": "per tensor"}.get(r["granularity"], "-")
        scales = "-" if r["weight_scale_min"] is None else f"{r['weight_scale_min']:.3g}..{r['weight_scale_max']:.3g}"
        act = "-" if r.get("activation_scale") is None else f"{r['activation_scale']:.3g}"
        table.add_row(r["name"], r["op"], bits, gran, scales, act, _fmt_db(r))
    out.print(table)


def _print_info(info: dict[str, Any]) -> None:
    out.print(f"[bold]{info['path']}[/] ({info['kind']}{', target ' + info['target'] if 'target' in info else ''})")
    io_table = Table(title="inputs and outputs")
    for col in ("", "name", "shape", "dtype"):
        io_table.add_column(col)
    for kind in ("inputs", "outputs"):
        for v in info[kind]:
            io_table.add_row(kind[:-1], v["name"], "x".join(map(str, v["shape"] or [])), str(v["dtype"]))
    out.print(io_table)
    out.print(f"nodes {info['nodes']}, parameters {info['parameters']:,} ({info['parameter_bytes'] / 1e6:.2f} MB), "
              f"MACs {info['macs']:,}, FLOPs {info['flops']:,}")
    ops = Table(title="ops")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    ops.add_column("MACs", justify="right")
    for op, count in info["ops"].items():
        ops.add_row(op, str(count), f"{info['macs_by_op'].get(op, 0):,}")
    out.print(ops)
    if info.get("quantization"):
        _print_quantization(info["quantization"])
    if info.get("verification"):
        _print_verification(info["verification"])
    if info.get("cuda"):
        from mlpc.inspect_cuda import print_cuda_report

        print_cuda_report(out, info["cuda"])


@app.command("targets")
def targets_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List the targets mlpc compiles for."""
    from mlpc.targets import list_targets

    targets = list_targets()
    if as_json:
        print(json.dumps([t.to_json() for t in targets], indent=2))
        return
    table = Table(title="targets")
    for col in ("name", "kind", "backend", "runs here", "description"):
        table.add_column(col)
    for t in targets:
        table.add_row(t.name, t.kind, t.backend, "no" if t.missing_on_host() else "yes", t.description)
    out.print(table)


@app.command("passes")
def passes_cmd(
    pass_plugin: list[Path] = typer.Option([], "--pass-plugin", help="Also load passes from this file."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List every registered pass, in default pipeline order, with a line of description."""
    from mlpc.pass_registry import get_pass
    from mlpc.pipeline import default_pipeline, load_entry_point_passes, load_plugin

    load_entry_point_passes()
    for plugin in pass_plugin:
        load_plugin(plugin)
    rows = []
    for p in default_pipeline():
        info = get_pass(p.name)
        rows.append({"name": info.name, "builtin": info.builtin, "opt_level": info.opt_level,
                     "description": info.description, "origin": info.origin})
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table(title="passes (default pipeline order)")
    for col in ("name", "opt level", "from", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["opt_level"]), "built-in" if r["builtin"] else r["origin"], r["description"])
    out.print(table)


@app.command("demo")
def demo_cmd(
    model: str = typer.Option("resnet", "--model", help="A model of mlpc.zoo."),
    output: Path = typer.Option(Path("demo-out"), "--output", "-o", help="Where to write the artifact."),
    repeat: int = typer.Option(50, "--repeat", help="Timed runs per runtime."),
) -> None:
    """Compile, verify and benchmark an example model for this machine."""
    from mlpc.demo import run_demo

    run_demo(model, output, repeat, out)


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI; return the exit code (0 done, 1 verification failed, 2 bad input)."""
    try:
        app(args=argv, standalone_mode=False)
    except MlpcError as e:
        if _state["debug"]:
            raise
        err.print(f"[red]error:[/] {e}", highlight=False, soft_wrap=True)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        err.print("aborted")
        return 130
    except typer.TyperException as e:  # usage errors (typer vendors click's exceptions)
        e.show()
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as e:  # an mlpc bug: keep the process alive and say how to report it
        if _state["debug"]:
            raise
        err.print(f"[red]internal error:[/] {type(e).__name__}: {e} (run with --debug for the traceback)",
                  highlight=False, soft_wrap=True)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
