"""The CPU benchmark (`make bench`): mlpc default / tuned / int8 against onnxruntime and PyTorch.

    python benchmarks/cpu.py                                   # everything: ~30-40 min on 2 cores
    python benchmarks/cpu.py --models resnet --batches 1 --trials 0   # no tuning, one model

For each zoo model (MLP, ResNet, MobileNet, 1-D conv net, transformer encoder) and each batch
size (1 and 8), with the same number of threads (2) for every engine, in this one process:

- **default**: `mlpc.compile` with mlpc's default CPU schedules (no tuning);
- **tuned**: `mlpc tune`'s machinery (MetaSchedule, `mlpc.backends.tvm.tuning.tune`) with `--trials`
  measurements and at most `--tune-time` seconds per model and batch (the limit counts from the
  start of each model's tuning: task extraction and timing its default kernels included), then
  `mlpc.compile(..., tuning_db=...)`. All tuning runs first, in one subprocess (as in
  benchmarks/tune.py: MetaSchedule's cost model leaves thread pools behind that slowed later
  timings in the same process; one subprocess pays TVM's import once); every timing happens
  afterwards in this process. The user's tuning cache is neither read nor written;
- **onnxruntime** fp32 (CPU provider, all graph optimizations) and **PyTorch** eager;
- **int8**: mlpc `quantize="w8a8"` and onnxruntime's `quantize_static` QDQ model (per-channel int8
  weights, uint8 activations, MinMax, with and without `reduce_range`), both calibrated on the same
  `--calib` random inputs (the zoo models have random weights: these are speed figures; the error
  column shows each int8 build's max relative error against PyTorch fp32).

Kernel efficiency (mlpc default, tuned and w8a8 builds): each kernel call of one inference is captured
with the Relax VM's instrument hook (its real arguments) and then timed on its own with TVM's
`time_evaluator` (the fastest of `--kernel-repeat` runs of at least 2 ms each: on a shared machine
the minimum is the least disturbed figure; inputs are warm in cache, so a kernel's in-model time
can be somewhat higher — compare the kernel sum with the end-to-end latency). FLOPs of a conv/matmul kernel are 2 × the multiply-accumulates of
the graph nodes in its fusion group (`mlpc.analysis.node_macs` over the graph the kernels are
built from, recorded in the artifact's manifest as `backend.kernel_macs`); for w8a8 builds these
are integer operations, set against the same float32 peak. The machine's peak is measured in the same run: a 1024³ float32
matmul in PyTorch on the same threads (best of `--peak-repeat`, at the start and at the end).

Every timing is preceded by a one-second pause: TVM's, onnxruntime's and PyTorch's thread pools
spin for a while after their last task, and on 2 cores an engine timed while another's threads
still spin was measured several times slower (TVM's ResNet median 0.47 → 3.0 ms right after a
PyTorch matmul; PyTorch 20-50× slower right after TVM).

Writes benchmarks/results/cpu.json and the "cpu" section of benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

from benchmarks import common
from benchmarks.runners import RUNNERS, BenchCase

logger = logging.getLogger("benchmarks.cpu")

SECTION = "cpu"
MODELS = ("mlp", "resnet", "mobilenet", "conv1d", "transformer")


# --------------------------------------------------------------------------------------------
# Peak and kernel measurements


def measure_peak(threads: int, n: int = 1024, repeat: int = 20) -> dict[str, float]:
    """GFLOP/s of an n×n×n float32 matmul in PyTorch on `threads` threads: best and median of `repeat`."""
    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    for _ in range(3):
        torch.mm(a, b)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        torch.mm(a, b)
        samples.append(time.perf_counter() - start)
    flops = 2.0 * n**3
    return {
        "best_gflops": flops / min(samples) / 1e9,
        "median_gflops": flops / float(np.median(samples)) / 1e9,
        "n": n,
        "runs": repeat,
    }


def kernel_times(library: Path, feeds: list[np.ndarray], repeat: int) -> list[dict[str, Any]]:
    """Time every kernel call of one inference of `library` on its own; return one entry per call
    ({"name", "us"}) in call order (see the module docstring for the method)."""
    import tvm
    from tvm import relax

    lib = tvm.runtime.load_module(str(library))
    vm = relax.VirtualMachine(lib, tvm.cpu())
    captured: list[tuple[str, list[Any]]] = []

    def instrument(_func: Any, symbol: str, before: bool, _ret: Any, *args: Any) -> int:
        if before and not symbol.startswith("vm."):
            captured.append((symbol, [a.numpy() if hasattr(a, "numpy") else a for a in args]))
        return 0

    vm.set_instrument(instrument)
    vm["main"](*(tvm.runtime.tensor(a) for a in feeds))
    kernels = lib.imports[0]
    out = []
    for symbol, args in captured:
        tensors = [tvm.runtime.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
        timer = kernels.time_evaluator(symbol, tvm.cpu(), number=10, repeat=repeat, min_repeat_ms=2)
        out.append({"name": symbol, "us": float(np.min(timer(*tensors).results)) * 1e6})
    return out


def kernel_summary(calls: list[dict[str, Any]], macs: dict[str, int], peak_gflops: float) -> dict[str, Any]:
    """Per-kernel GFLOP/s of the conv/matmul kernels and the totals (see render for the columns)."""
    per_kernel: dict[str, dict[str, Any]] = {}
    for call in calls:
        k = per_kernel.setdefault(call["name"], {"name": call["name"], "calls": 0, "us": 0.0})
        k["calls"] += 1
        k["us"] += call["us"]
    gemm_us = gemm_flops = 0.0
    for k in per_kernel.values():
        if k["name"] in macs:
            k["gflop"] = 2.0 * macs[k["name"]] * k["calls"] / 1e9
            k["gflops"] = k["gflop"] / (k["us"] * 1e-6)
            k["peak_fraction"] = k["gflops"] / peak_gflops
            gemm_us += k["us"]
            gemm_flops += k["gflop"]
    total_us = sum(k["us"] for k in per_kernel.values())
    rates = [k["gflops"] for k in per_kernel.values() if "gflops" in k]
    return {
        "kernels": sorted(per_kernel.values(), key=lambda k: -k["us"]),
        "kernel_sum_us": total_us,
        "gemm_kernels": len(rates),
        "gemm_us": gemm_us,
        "gemm_gflop": gemm_flops,
        "gemm_gflops": gemm_flops / (gemm_us * 1e-6) if gemm_us else None,
        "gemm_peak_fraction": gemm_flops / (gemm_us * 1e-6) / peak_gflops if gemm_us else None,
        "min_gflops": min(rates) if rates else None,
        "max_gflops": max(rates) if rates else None,
    }


# --------------------------------------------------------------------------------------------
# Builds


SETTLE_S = 1.0  # pause before each timing: the previous engine's spinning threads go to sleep


def _timed(run: Any, ref: np.ndarray, repeat: int, warmup: int) -> dict[str, Any]:
    """Check `run()` against `ref`, let other engines' thread pools fall idle, then time it."""
    err = common.max_rel_err(run(), ref)
    time.sleep(SETTLE_S)
    timing = common.time_runs(run, repeat=repeat, warmup=warmup)
    return {**timing.to_dict(), "max_rel_err": err}


def _error_entry(what: str, e: BaseException) -> dict[str, str]:
    logger.debug("%s failed", what, exc_info=True)
    text = str(e).strip()
    return {"error": f"{type(e).__name__}: {text.splitlines()[-1] if text else ''}"[:400]}


def _mlpc_entry(
    art: Any,
    feeds: dict[str, np.ndarray],
    output: str,
    ref: np.ndarray,
    args: argparse.Namespace,
    compile_s: float,
    peak: float,
) -> dict[str, Any]:
    """Time an mlpc artifact end to end and kernel by kernel (the conv/matmul kernels' MACs are in
    its manifest)."""
    out_name = output if output in [o["name"] for o in art.outputs] else art.outputs[0]["name"]
    entry = {
        **_timed(lambda: art.run(feeds)[out_name], ref, args.repeat, args.warmup),
        "compile_s": compile_s,
    }
    library = art.path / art.manifest["backend"]["library"]
    time.sleep(SETTLE_S)
    calls = kernel_times(library, [feeds[i["name"]] for i in art.inputs], args.kernel_repeat)
    entry["kernel_profile"] = kernel_summary(calls, art.manifest["backend"]["kernel_macs"], peak)
    return entry


def tune_all(cases: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Tune every case ({"key", "onnx", "db"}) in one subprocess (one import of TVM and MetaSchedule
    for all); return what each spent: trials, seconds, tasks, why it stopped."""
    spec = Path(cases[0]["db"]).parent.parent / "tuning-cases.json"
    spec.write_text(json.dumps({"cases": cases, "trials": args.trials, "time_limit_s": args.tune_time}))
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--tune-worker", str(spec)],
        check=True,
        capture_output=True,
        text=True,
        timeout=len(cases) * (args.tune_time * 3 + 300) + 600,
    )
    return json.loads(spec.with_suffix(".out.json").read_text())


def _tune_worker(spec_path: Path) -> int:
    """The tuning subprocess: `tuning.tune` for each case of `spec_path`, results beside it. Nothing
    is read from or written to the user's tuning cache (use_cache=False)."""
    from mlpc.backends.tvm.tuning import tune

    spec = json.loads(spec_path.read_text())
    out: dict[str, dict[str, Any]] = {}
    for case in spec["cases"]:
        try:
            result = tune(
                case["onnx"],
                "host",
                case["db"],
                spec["trials"],
                time_limit_s=spec["time_limit_s"],
                use_cache=False,
            )
            out[case["key"]] = {
                "trials": sum(t.trials for t in result.tasks),
                "seconds": round(result.seconds, 1),
                "tasks": len(result.tasks),
                "stopped": result.stopped,
                "trial_budget": spec["trials"],
                "time_limit_s": spec["time_limit_s"],
                # per kernel: MetaSchedule's best figure and the verdict (tuned vs default re-timed together)
                "kernels": {
                    t.name: {
                        "trials": t.trials,
                        "search_ms": t.best_ms,
                        **{k: (t.verified or {}).get(k) for k in ("default_ms", "tuned_ms", "use_tuned")},
                    }
                    for t in result.tasks
                    if t.trials
                },
            }
        except Exception as e:  # one model failing must not stop the others
            out[case["key"]] = _error_entry(f"tuning {case['key']}", e)
        spec_path.with_suffix(".out.json").write_text(json.dumps(out, indent=1))
    return 0


def _ort_int8(
    onnx_path: Path, out: Path, input_name: str, batches: list[np.ndarray], reduce_range: bool
) -> Path:
    """onnxruntime's static QDQ quantization (per-channel) of `onnx_path`, calibrated on `batches`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{input_name: b} for b in batches])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    pre = out.with_suffix(".pre.onnx")
    quant_pre_process(str(onnx_path), str(pre))
    quantize_static(
        str(pre),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        reduce_range=reduce_range,
    )
    return out


def bench_case(
    model: str, batch: int, args: argparse.Namespace, work: Path, peak: float, tuning: dict[str, Any] | None
) -> dict[str, Any]:
    """Measure every build of one model at one batch size (its ONNX file already exported into
    `work`, its tuning database, if `tuning` says one was made, in work/tuning-db); return its JSON entry."""
    import torch

    import mlpc
    from mlpc import zoo

    spec = zoo.MODELS[model]
    onnx_path = work / f"{model}.onnx"
    inputs = zoo.example_inputs(model, batch)
    feeds = {n: t.numpy() for n, t in zip(spec.input_names, inputs)}
    with torch.inference_mode():
        ref = zoo.build(model)(*inputs).numpy()
    input_name, output = spec.input_names[0], spec.output_names[0]
    case = BenchCase(model, onnx_path, spec.input_names, output, work, args.threads)
    entry: dict[str, Any] = {"input_shapes": [list(s) for s in spec.input_shapes(batch)], "builds": {}}
    builds = entry["builds"]

    logger.info("%s batch %d: default schedules", model, batch)
    try:
        start = time.perf_counter()
        art = mlpc.compile(str(onnx_path), target="host", output_dir=work / "default")
        builds["default"] = _mlpc_entry(
            art, feeds, output, ref, args, time.perf_counter() - start, peak
        )
    except Exception as e:  # one build failing must not stop the others
        builds["default"] = _error_entry(f"{model} default", e)
    for name in ("onnxruntime", "torch"):
        logger.info("%s batch %d: %s", model, batch, name)
        try:
            runner = RUNNERS[name](case)
            builds[name] = {
                **_timed(lambda r=runner: r.run(feeds), ref, args.repeat, args.warmup),
                "compile_s": runner.compile_s,
            }
        except Exception as e:
            builds[name] = _error_entry(f"{model} {name}", e)

    if tuning is not None:
        entry["tuning"] = tuning
        if "error" in tuning:
            builds["tuned"] = {"error": f"mlpc tune failed: {tuning['error']}"}
        else:
            logger.info(
                "%s batch %d: tuned (%d trials in %.0fs)", model, batch, tuning["trials"], tuning["seconds"]
            )
            try:
                start = time.perf_counter()
                art = mlpc.compile(
                    str(onnx_path), target="host", output_dir=work / "tuned", tuning_db=work / "tuning-db"
                )
                builds["tuned"] = _mlpc_entry(
                    art, feeds, output, ref, args, time.perf_counter() - start, peak
                )
                builds["tuned"]["tuned_kernels"] = list(art.manifest["backend"]["tuned_kernels"])
            except Exception as e:
                builds["tuned"] = _error_entry(f"{model} tuned", e)

    if not args.no_int8:
        samples = [zoo.example_inputs(model, 1, seed=1000 + s)[0].numpy() for s in range(args.calib)]
        calib_batches = [
            np.concatenate(samples[i : i + batch]) for i in range(0, len(samples) - batch + 1, batch)
        ]
        logger.info("%s batch %d: mlpc w8a8 (%d calibration samples)", model, batch, args.calib)
        try:
            start = time.perf_counter()
            art = mlpc.compile(
                str(onnx_path),
                target="host",
                output_dir=work / "w8a8",
                quantize="w8a8",
                calibration={input_name: np.stack(calib_batches)},
            )
            builds["mlpc w8a8"] = _mlpc_entry(
                art, feeds, output, ref, args, time.perf_counter() - start, peak
            )
        except Exception as e:
            builds["mlpc w8a8"] = _error_entry(f"{model} w8a8", e)
        for reduce_range in (False, True):
            name = "onnxruntime int8" + (" reduce_range" if reduce_range else "")
            logger.info("%s batch %d: %s", model, batch, name)
            try:
                start = time.perf_counter()
                qpath = _ort_int8(
                    onnx_path,
                    work / f"ort-int8-{int(reduce_range)}.onnx",
                    input_name,
                    calib_batches,
                    reduce_range,
                )
                quantize_s = time.perf_counter() - start
                runner = RUNNERS["onnxruntime"](
                    BenchCase(model, qpath, spec.input_names, output, work, args.threads)
                )
                builds[name] = {
                    **_timed(lambda r=runner: r.run(feeds), ref, args.repeat, args.warmup),
                    "compile_s": quantize_s,
                }
            except Exception as e:
                builds[name] = _error_entry(f"{model} {name}", e)
    entry["ratios"] = ratios(builds)
    return entry


def ratios(builds: dict[str, dict[str, Any]]) -> dict[str, float]:
    """The ratios the goals are stated in (each: median latency / median latency)."""
    ms = {k: v.get("median_ms") for k, v in builds.items()}
    pairs = {
        "default/onnxruntime": ("default", "onnxruntime"),
        "tuned/onnxruntime": ("tuned", "onnxruntime"),
        "best/onnxruntime": ("best", "onnxruntime"),
        "default/torch": ("default", "torch"),
        "w8a8/onnxruntime int8": ("mlpc w8a8", "onnxruntime int8"),
        "w8a8/onnxruntime int8 reduce_range": ("mlpc w8a8", "onnxruntime int8 reduce_range"),
        "w8a8/default": ("mlpc w8a8", "default"),
    }
    # "best": what `mlpc compile --tuning-db` gives per kernel is already the faster of tuned and
    # default; end to end we also take the faster build, since a noisy run can invert them.
    ms["best"] = min((v for k, v in ms.items() if k in ("default", "tuned") and v), default=None)
    return {name: ms[a] / ms[b] for name, (a, b) in pairs.items() if ms.get(a) and ms.get(b)}


# --------------------------------------------------------------------------------------------
# Report


def geomean(values: list[float]) -> float | None:
    """Geometric mean of positive values (None for none).

    >>> round(geomean([1.0, 4.0]), 6)
    2.0
    """
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's three goals, evaluated over every model and batch measured."""
    cases = [
        (f"{m} b{b}", e["ratios"]) for b, models in results["batches"].items() for m, e in models.items()
    ]
    default = {c: r["default/onnxruntime"] for c, r in cases if "default/onnxruntime" in r}
    tuned = [r["tuned/onnxruntime"] for _, r in cases if "tuned/onnxruntime" in r]
    int8 = {c: r["w8a8/onnxruntime int8"] for c, r in cases if "w8a8/onnxruntime int8" in r}
    return {
        "default_within_2x": {
            "met": bool(default) and max(default.values()) <= 2.0,
            "worst": max(default.items(), key=lambda kv: kv[1]) if default else None,
        },
        "tuned_geomean_vs_ort": {"value": geomean(tuned), "met": tuned != [] and geomean(tuned) <= 1.0},
        "int8_vs_ort_int8": {
            "geomean": geomean(list(int8.values())),
            "met_in": sorted(c for c, v in int8.items() if v <= 1.0),
            "missed_in": sorted(c for c, v in int8.items() if v > 1.0),
        },
    }


LATENCY_HEADERS = (
    "model",
    "batch",
    "default ms",
    "tuned ms",
    "ORT ms",
    "torch ms",
    "default / ORT",
    "tuned / ORT",
    "mlpc w8a8 ms",
    "ORT int8 ms",
    "ORT int8 rr ms",
    "w8a8 / ORT int8",
    "rel err w8a8 · ORT int8",
    "tuning: trials, s, kernels tuned",
)
KERNEL_HEADERS = (
    "model",
    "batch",
    "build",
    "conv/matmul kernels",
    "GFLOP/s (all of them)",
    "of peak",
    "slowest – fastest kernel GFLOP/s",
    "conv/matmul share of kernel time",
    "kernel sum / end to end ms",
)


def render(results: dict[str, Any]) -> str:
    """The README section: machine line, settings, the latency table, the kernel table, the goals."""
    cfg, peak = results["config"], results["peak"]
    lines = [
        common.machine_line(results["machine"]),
        "",
        f"{cfg['threads']} threads for every engine, median of {cfg['repeat']} calls after {cfg['warmup']} "
        f"warm-up calls, all timed in one process. Tuning: MetaSchedule, at most {cfg['trials']} trials and "
        f"{cfg['tune_time']} s per model and batch (population 128); the trials and seconds actually spent are "
        f"in the table. int8: {cfg['calib']} random calibration inputs for both mlpc w8a8 and onnxruntime's "
        "quantize_static (QDQ, per-channel; rr = reduce_range). Peak: PyTorch 1024³ sgemm on the same threads, "
        f"{common.fmt(peak['gflops'])} GFLOP/s (best run; start {common.fmt(peak['start']['best_gflops'])}, "
        f"end {common.fmt(peak['end']['best_gflops'])}).",
        "",
    ]

    def ms(b: dict[str, Any], name: str) -> str:
        r = b.get(name)
        return "—" if r is None else "failed" if "error" in r else common.fmt(r["median_ms"])

    rows, krows = [], []
    for batch, models in results["batches"].items():
        for model, e in models.items():
            b, r = e["builds"], e["ratios"]
            t = e.get("tuning")
            tuned_k = len(b.get("tuned", {}).get("tuned_kernels", []))
            tuning = (
                "failed"
                if t and "error" in t
                else (f"{t['trials']}, {common.fmt(t['seconds'])}, {tuned_k} of {t['tasks']}" if t else "—")
            )
            errs = " · ".join(
                common.fmt(b.get(n, {}).get("max_rel_err"), 2) for n in ("mlpc w8a8", "onnxruntime int8")
            )
            rows.append(
                [
                    model,
                    batch,
                    ms(b, "default"),
                    ms(b, "tuned"),
                    ms(b, "onnxruntime"),
                    ms(b, "torch"),
                    common.fmt(r.get("default/onnxruntime")),
                    common.fmt(r.get("tuned/onnxruntime")),
                    ms(b, "mlpc w8a8"),
                    ms(b, "onnxruntime int8"),
                    ms(b, "onnxruntime int8 reduce_range"),
                    common.fmt(r.get("w8a8/onnxruntime int8")),
                    errs,
                    tuning,
                ]
            )
            for build in ("default", "tuned", "mlpc w8a8"):
                p = b.get(build, {}).get("kernel_profile")
                if not p or not p["gemm_kernels"]:
                    continue
                krows.append(
                    [
                        model,
                        batch,
                        build,
                        str(p["gemm_kernels"]),
                        common.fmt(p["gemm_gflops"]),
                        f"{100 * p['gemm_peak_fraction']:.0f} %",
                        f"{common.fmt(p['min_gflops'])} – {common.fmt(p['max_gflops'])}",
                        f"{100 * p['gemm_us'] / p['kernel_sum_us']:.0f} %",
                        f"{common.fmt(p['kernel_sum_us'] / 1e3)} / {common.fmt(b[build]['median_ms'])}",
                    ]
                )
    g = results["goals"]
    worst = g["default_within_2x"]["worst"]
    lines += [
        common.markdown_table(LATENCY_HEADERS, rows),
        "",
        "Kernel efficiency (each kernel timed on its own with its captured arguments; FLOPs from the graph):",
        "",
        common.markdown_table(KERNEL_HEADERS, krows),
        "",
        "Goals:",
        f"- default schedules within 2× of onnxruntime fp32 on every model: "
        f"{'met' if g['default_within_2x']['met'] else 'not met'}"
        + (f" (worst {worst[0]}: {common.fmt(worst[1])}×)" if worst else ""),
        f"- tuned at or below onnxruntime fp32 in geometric mean: "
        f"{'met' if g['tuned_geomean_vs_ort']['met'] else 'not met'} "
        f"({common.fmt(g['tuned_geomean_vs_ort']['value'])}×)",
        f"- mlpc w8a8 at or below onnxruntime's int8 QDQ model: geometric mean "
        f"{common.fmt(g['int8_vs_ort_int8']['geomean'])}×; met in "
        f"{', '.join(g['int8_vs_ort_int8']['met_in']) or 'none'}; missed in "
        f"{', '.join(g['int8_vs_ort_int8']['missed_in']) or 'none'}",
    ]
    failures = [
        f"- {m} b{bt} / {n}: {res['error']}"
        for bt, models in results["batches"].items()
        for m, e in models.items()
        for n, res in e["builds"].items()
        if "error" in res
    ]
    if failures:
        lines += ["", "Failures:", *failures]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; see --help."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo models")
    p.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=50, help=f"timed calls per build (>= {common.MIN_REPEAT})")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--trials", type=int, default=64, help="tuning trials per model and batch (0: no tuning)")
    p.add_argument(
        "--tune-time", type=int, default=150, help="tuning time limit per model and batch, seconds"
    )
    p.add_argument("--calib", type=int, default=64, help="calibration inputs for both int8 builds")
    p.add_argument("--no-int8", action="store_true")
    p.add_argument("--kernel-repeat", type=int, default=5, help="time_evaluator repeats per kernel")
    p.add_argument("--output", type=Path, default=common.RESULTS_DIR / f"{SECTION}.json")
    p.add_argument(
        "--no-readme", action="store_true", help="do not rewrite the section in benchmarks/README.md"
    )
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    if args.repeat < common.MIN_REPEAT:
        p.error(f"--repeat must be at least {common.MIN_REPEAT}")
    if args.calib < max(args.batches):
        p.error(f"--calib {args.calib}: give at least one batch ({max(args.batches)}) of calibration inputs")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the CPU benchmark; return 0, or 1 if a build failed."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--tune-worker"]:
        return _tune_worker(Path(argv[1]))
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    common.configure_threads(args.threads)  # before anything imports tvm
    start = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": SECTION,
        "machine": common.machine_info(),
        "config": {
            k: getattr(args, k)
            for k in (
                "models",
                "batches",
                "threads",
                "repeat",
                "warmup",
                "trials",
                "tune_time",
                "calib",
                "kernel_repeat",
            )
        },
        "peak": {"start": measure_peak(args.threads)},
        "batches": {},
    }
    peak = results["peak"]["start"]["best_gflops"]
    logger.info("peak: %.1f GFLOP/s (PyTorch sgemm, %d threads)", peak, args.threads)
    from mlpc import zoo

    with tempfile.TemporaryDirectory(prefix="mlpc-bench-cpu-") as tmp:
        # Default builds apply the user's tuning cache: an empty private one keeps them default.
        os.environ["MLPC_CACHE_DIR"] = str(Path(tmp) / "cache")
        cases = [
            (model, batch, Path(tmp) / f"{model}-b{batch}") for batch in args.batches for model in args.models
        ]
        for model, batch, work in cases:
            zoo.export_onnx(model, work / f"{model}.onnx", batch=batch)
        tuning: dict[str, Any] = {}
        if args.trials > 0:
            logger.info(
                "tuning %d models × batches (%d trials, at most %ds each) in a subprocess",
                len(cases),
                args.trials,
                args.tune_time,
            )
            try:
                tuning = tune_all(
                    [
                        {"key": work.name, "onnx": str(work / f"{model}.onnx"), "db": str(work / "tuning-db")}
                        for model, batch, work in cases
                    ],
                    args,
                )
            except subprocess.CalledProcessError as e:
                tuning = {work.name: {"error": (e.stderr or "").strip()[-300:]} for _, _, work in cases}
        for model, batch, work in cases:
            results["batches"].setdefault(str(batch), {})[model] = bench_case(
                model, batch, args, work, peak, tuning.get(work.name)
            )
    results["peak"]["end"] = measure_peak(args.threads)
    results["peak"]["gflops"] = max(
        results["peak"]["start"]["best_gflops"], results["peak"]["end"]["best_gflops"]
    )
    # Kernel peak fractions were computed against the start's figure; restate them against the final one.
    for models in results["batches"].values():
        for e in models.values():
            for b in e["builds"].values():
                p = b.get("kernel_profile")
                if p:
                    for k in p["kernels"]:
                        if "gflops" in k:
                            k["peak_fraction"] = k["gflops"] / results["peak"]["gflops"]
                    if p["gemm_gflops"]:
                        p["gemm_peak_fraction"] = p["gemm_gflops"] / results["peak"]["gflops"]
    results["goals"] = goals(results)
    results["seconds"] = round(time.perf_counter() - start, 1)
    common.publish(args.output, results, SECTION, render(results), readme=not args.no_readme)
    failed = any(
        "error" in r
        for models in results["batches"].values()
        for e in models.values()
        for r in e["builds"].values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
