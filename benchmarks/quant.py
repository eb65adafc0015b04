"""Quantization on real data: accuracy, size and speed of mlpc's integer builds against
onnxruntime's static quantizer.

    python benchmarks/quant.py                       # digits CNN, mnist1d CNN, zoo ResNet (speed only)
    python benchmarks/quant.py --models digits --repeat 100

For each model (trained here on packaged data; the ResNet keeps its random weights and is
measured for speed and size only), in one process with 2 threads:

- mlpc fp32 and mlpc w8a8 / w4a8 / w2a8 (`mlpc.compile(..., quantize=scheme, calibration=...)`,
  the integer build for the host), on the same calibration samples, and w2a8 with the first and
  last layer's weights at 8 bits (a per-layer config, the usual low-bit recipe);
- onnxruntime fp32 (all graph optimizations) and onnxruntime `quantize_static` (QDQ, per-channel
  int8 weights, uint8 activations, MinMax calibration on the same samples), with and without
  `reduce_range` (on AVX2 without VNNI its default U8S8 kernels saturate; see DESIGN.md).

Reports test accuracy (every test sample, batch 1), the model file's size (mlpc: the compiled
library; onnxruntime: the .onnx file), median latency of one batch-1 call and mlpc's fp32 / int
latency ratio. For the trained models the same variants are also built for a batch of
`--batch` samples (default 64; the model's batch axis set to it, calibrated on the same samples
in batches) and timed per batch, with their accuracy over the test set in batches: at batch 1 a
model as small as the digits CNN spends most of its time in per-call and per-kernel costs that
integer arithmetic does not change. Writes benchmarks/results/quant.json and the `quant` section
of benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import onnx

from benchmarks import common

logger = logging.getLogger("benchmarks.quant")

SCHEMES = ("w8a8", "w4a8", "w2a8")
MODELS = ("digits", "mnist1d", "resnet")
CALIBRATION_SAMPLES = 256


def _trained(name: str):
    from benchmarks.quant_models import train_digits_cnn, train_mnist1d_cnn

    return train_digits_cnn() if name == "digits" else train_mnist1d_cnn()


def _zoo_case(name: str, samples: int):
    """(model, calibration inputs, None, None) for a zoo model with random weights."""
    from mlpc import zoo

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.onnx"
        zoo.export_onnx(name, path)
        model = onnx.load(path)
    calib = np.concatenate([zoo.example_inputs(name, batch=1, seed=s)[0].numpy() for s in range(samples)])
    return model, calib, None, None


def _accuracy(run, x: np.ndarray | None, y: np.ndarray | None, batch: int = 1) -> float | None:
    """Test accuracy in % of `run` over every sample of `x`, `batch` samples per call (the last
    call padded with zeros)."""
    if x is None:
        return None
    hits = 0
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *x.shape[1:]), x.dtype)])
        predicted = np.argmax(np.asarray(run(chunk)).reshape(batch, -1), axis=1)[:len(x) - start]
        hits += int((predicted == y[start:start + batch]).sum())
    return 100.0 * hits / len(x)


def with_batch(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy of `model` whose inputs' and outputs' first axis is `batch` (inferred shapes dropped)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for value in (*out.graph.input, *out.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_value = batch
    del out.graph.value_info[:]
    return out


def _ort_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _ort_quantize(model_path: Path, out: Path, input_name: str, calib: np.ndarray, reduce_range: bool,
                  batch: int = 1) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{input_name: calib[i:i + batch]} for i in range(0, len(calib) - batch + 1, batch)])

        def get_next(self):
            return next(self.items, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(model_path), str(pre))
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range)
    return out


def _variants(model: onnx.ModelProto, schemes: tuple[str, ...]) -> list[tuple[str, str | None, dict | None]]:
    """(variant name, scheme or None for fp32, per-layer config or None) for every mlpc build."""
    layers = [n.name for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    edge8 = {"layers": {layers[0]: {"weight": {"bits": 8}}, layers[-1]: {"weight": {"bits": 8}}}}
    variants = [(None, None)] + [(s, None) for s in schemes]
    if "w2a8" in schemes and len(layers) > 2:
        variants.append(("w2a8", edge8))
    return [(f"mlpc {scheme or 'fp32'}" + (" (first, last layer 8-bit)" if config else ""), scheme, config)
            for scheme, config in variants]


def _compile(model_path: Path, out: Path, input_name: str, calib: np.ndarray, scheme: str | None,
             config: dict | None):
    """(artifact, seconds) of one mlpc build; `calib` holds calibration samples of the model's input shape."""
    import mlpc

    start = time.perf_counter()
    art = mlpc.compile(model_path, target="host", output_dir=out, quantize=scheme,
                       calibration={input_name: calib} if scheme else None, quant_config=config)
    return art, time.perf_counter() - start


def bench_model(name: str, case: tuple, work: Path, threads: int, repeat: int,
                schemes: tuple[str, ...]) -> dict[str, Any]:
    """Measure every variant of one model (`case` from `_case`) at batch 1; return {variant:
    {accuracy, size_bytes, median_ms, ...}}."""
    model, calib, x_test, y_test = case
    input_name = model.graph.input[0].name
    model_path = work / f"{name}.onnx"
    onnx.save(model, model_path)
    probe = calib[:1]
    results: dict[str, Any] = {}
    mlpc_runs: dict[str, Any] = {}

    def record(variant: str, run, size: int, compile_s: float | None) -> None:
        results[variant] = {"accuracy": _accuracy(run, x_test, y_test), "size_bytes": size, "compile_s": compile_s}
        if variant.startswith("mlpc"):
            mlpc_runs[variant] = run
        else:  # another engine's thread pool: timed alone, after TVM's has gone quiet
            time.sleep(1.0)
            results[variant].update(common.time_runs(lambda: run(probe), repeat=repeat, warmup=10).to_dict())
        logger.info("%s %s: %s", name, variant, results[variant])

    for variant, scheme, config in _variants(model, schemes):
        art, elapsed = _compile(model_path, work / f"{name}-{len(results)}", input_name, calib, scheme, config)
        library = art.path / art.manifest["backend"]["library"]
        out_name = art.outputs[0]["name"]
        record(variant, lambda x, a=art: a.run({input_name: x})[out_name], library.stat().st_size, elapsed)
    # mlpc's builds share TVM's thread pool: timed in alternating blocks, so a slow spell of the
    # machine hits them alike and their ratios hold
    timings = common.time_interleaved({v: (lambda r=run: r(probe)) for v, run in mlpc_runs.items()}, repeat=repeat)
    for variant, timing in timings.items():
        results[variant].update(timing.to_dict())
    record("onnxruntime fp32", _ort_session(model_path, threads), model_path.stat().st_size, None)
    for reduce_range in (False, True):
        variant = "onnxruntime int8" + (" reduce_range" if reduce_range else "")
        start = time.perf_counter()
        qpath = _ort_quantize(model_path, work / f"{name}-ort-{int(reduce_range)}.onnx", input_name, calib, reduce_range)
        record(variant, _ort_session(qpath, threads), qpath.stat().st_size, time.perf_counter() - start)
    _add_speedups(results)
    return results


def bench_batch(name: str, case: tuple, batch: int, work: Path, threads: int, repeat: int,
                schemes: tuple[str, ...]) -> dict[str, Any]:
    """The mlpc variants, onnxruntime fp32 and int8 of a trained model (`case` from `_case`) built
    for `batch` samples per call: {variant: {accuracy, median_ms, per_sample_us,
    speedup_vs_mlpc_fp32, ...}}."""
    model, calib, x_test, y_test = case
    model = with_batch(model, batch)
    input_name = model.graph.input[0].name
    model_path = work / f"{name}-b{batch}.onnx"
    onnx.save(model, model_path)
    groups = len(calib) // batch
    if groups == 0:
        raise ValueError(f"--batch {batch} is larger than the {len(calib)} calibration samples")
    calib = calib[:groups * batch]
    probe = x_test[:batch]
    results: dict[str, Any] = {}
    runs: dict[str, Any] = {}
    for variant, scheme, config in _variants(model, schemes):
        art, _ = _compile(model_path, work / f"{name}-b{batch}-{len(runs)}", input_name,
                          calib.reshape(groups, batch, *calib.shape[1:]), scheme, config)
        out_name = art.outputs[0]["name"]
        runs[variant] = lambda x, a=art: a.run({input_name: x})[out_name]
        results[variant] = {"accuracy": _accuracy(runs[variant], x_test, y_test, batch)}
    for variant, timing in common.time_interleaved({v: (lambda r=r: r(probe)) for v, r in runs.items()},
                                                   repeat=repeat).items():
        results[variant].update(timing.to_dict())
    qpath = _ort_quantize(model_path, work / f"{name}-b{batch}-ort.onnx", input_name, calib, False, batch)
    for variant, path in (("onnxruntime fp32", model_path), ("onnxruntime int8", qpath)):
        run = _ort_session(path, threads)
        results[variant] = {"accuracy": _accuracy(run, x_test, y_test, batch)}
        time.sleep(1.0)
        results[variant].update(common.time_runs(lambda r=run: r(probe), repeat=repeat, warmup=10).to_dict())
    _add_speedups(results)
    for r in results.values():
        r["per_sample_us"] = 1000.0 * r["median_ms"] / batch
    logger.info("%s batch %d: %s", name, batch, results)
    return results


def _case(name: str):
    """(float model, calibration samples, test inputs or None, test labels or None)."""
    if name in ("digits", "mnist1d"):
        trained = _trained(name)
        return trained.model, trained.x_train[:CALIBRATION_SAMPLES], trained.x_test, trained.y_test
    return _zoo_case(name, 32)


def _add_speedups(results: dict[str, Any]) -> None:
    fp32 = results["mlpc fp32"]["median_ms"]
    for r in results.values():
        r["speedup_vs_mlpc_fp32"] = fp32 / r["median_ms"]


def render(data: dict[str, Any]) -> str:
    """The README section for a results dict."""
    lines = [common.machine_line(data["machine"]), "",
             f"batch 1, {data['threads']} threads, median of {data['repeat']} runs (mlpc's builds timed in "
             "alternating blocks of 10 calls, onnxruntime's alone after a 1 s pause); "
             f"{data['calibration_samples']} calibration samples (ResNet: 32 random inputs, speed only); "
             "accuracy on every test sample.", ""]
    for model, results in data["models"].items():
        lines.append(f"**{model}**")
        lines.append("")
        rows = []
        for variant, r in results.items():
            acc = "—" if r["accuracy"] is None else f"{r['accuracy']:.2f}"
            rows.append([variant, acc, f"{r['size_bytes'] / 1024:.1f}", common.fmt(r["median_ms"]),
                         common.fmt(r["speedup_vs_mlpc_fp32"]),
                         "—" if r["compile_s"] is None else f"{r['compile_s']:.1f}"])
        lines.append(common.markdown_table(
            ["variant", "accuracy %", "size KiB", "median ms", "speed-up vs mlpc fp32", "build / quantize s"], rows))
        lines.append("")
        batched = data.get("batched", {}).get(model)
        if batched:
            lines.append(f"batch {data['batch']} (one call per {data['batch']} samples; accuracy of the batch-"
                         f"{data['batch']} build over the test set):")
            lines.append("")
            rows = [[variant, f"{r['accuracy']:.2f}", common.fmt(r["median_ms"]), common.fmt(r["per_sample_us"]),
                     common.fmt(r["speedup_vs_mlpc_fp32"])] for variant, r in batched.items()]
            lines.append(common.markdown_table(
                ["variant", "accuracy %", "median ms per batch", "µs per sample", "speed-up vs mlpc fp32"], rows))
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--schemes", default=",".join(SCHEMES))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64,
                        help="also build and time the trained models for this batch size (0: batch 1 only)")
    parser.add_argument("--output", type=Path, default=common.RESULTS_DIR / "quant.json")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    common.configure_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    if args.batch > CALIBRATION_SAMPLES:
        parser.error(f"--batch {args.batch}: at most the {CALIBRATION_SAMPLES} calibration samples")
    schemes = tuple(s for s in args.schemes.split(",") if s)
    data: dict[str, Any] = {"machine": common.machine_info(), "threads": args.threads, "repeat": args.repeat,
                            "calibration_samples": CALIBRATION_SAMPLES, "batch": args.batch, "models": {},
                            "batched": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            case = _case(name)
            data["models"][name] = bench_model(name, case, Path(tmp), args.threads, args.repeat, schemes)
            if args.batch > 1 and case[2] is not None:
                data["batched"][name] = bench_batch(name, case, args.batch, Path(tmp), args.threads,
                                                    args.repeat, schemes)
    common.publish(args.output, data, "quant", render(data), readme=not args.no_readme)
    return 0


if __name__ == "__main__":
    sys.exit(main())
