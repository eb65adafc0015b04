"""Tuning benchmark: per zoo model, mlpc's default schedules vs MetaSchedule-tuned vs onnxruntime.

    python benchmarks/tune.py                              # all models, 64 trials each
    python benchmarks/tune.py --models mlp --trials 16     # a short run

Each model is exported to ONNX, compiled with the default schedules, tuned with `mlpc tune`'s
machinery (`--trials` measurements spread over its kernels, the tuning time recorded), compiled
again with the tuning database, and timed beside onnxruntime in this one process with the same
thread count. Tuning runs in a subprocess (`mlpc tune`): MetaSchedule's cost model leaves thread
pools behind that slowed later timings in the same process several-fold. A private, empty tuning cache is used so earlier tuning runs cannot leak in.
Writes benchmarks/results/tuning.json and the "tuning" section of benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console

from benchmarks.common import (
    MIN_REPEAT,
    README,
    RESULTS_DIR,
    configure_threads,
    fmt,
    machine_info,
    machine_line,
    markdown_table,
    max_rel_err,
    time_runs,
    update_readme_section,
    write_json,
)
from benchmarks.run import measure
from benchmarks.runners import BenchCase

logger = logging.getLogger(__name__)

SECTION = "tuning"
HEADERS = ("Model", "default ms", "tuned ms", "onnxruntime ms", "default / tuned", "tuned / ORT",
           "kernels tuned", "trials", "tuning s", "max rel err (tuned)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; see --help."""
    from mlpc import zoo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(zoo.MODELS), help="comma-separated zoo models (default: all)")
    p.add_argument("--trials", type=int, default=64, help="tuning trials per model")
    p.add_argument("--repeat", type=int, default=50, help=f"timed runs per build (>= {MIN_REPEAT})")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", type=Path, default=RESULTS_DIR / f"{SECTION}.json")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the section in benchmarks/README.md")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in zoo.MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; known: {', '.join(zoo.MODELS)}")
    if args.repeat < MIN_REPEAT:
        p.error(f"--repeat must be at least {MIN_REPEAT}")
    return args


def measure_tuned(case: BenchCase, db: Path, feeds: dict, ref: Any, repeat: int, warmup: int) -> dict:
    """Compile `case` with the tuning database `db`, check it against `ref` and time it."""
    import mlpc

    start = time.perf_counter()
    artifact = mlpc.compile(str(case.onnx_path), target="host", output_dir=case.workdir / "tuned", tuning_db=db)
    compile_s = time.perf_counter() - start

    def run() -> Any:
        outputs = artifact.run(feeds)
        return outputs.get(case.output_name, next(iter(outputs.values())))

    timing = time_runs(run, repeat=repeat, warmup=warmup)
    return {"median_ms": timing.median_ms, "p90_ms": timing.p90_ms, "min_ms": timing.min_ms, "runs": timing.runs,
            "max_rel_err": max_rel_err(run(), ref), "compile_s": compile_s,
            "tuned_kernels": artifact.manifest["backend"]["tuned_kernels"]}


def benchmark_model(model: str, args: argparse.Namespace, tmp: Path, console: Console) -> dict:
    """Export, tune and time one zoo model; return its JSON entry."""
    import torch

    from mlpc import zoo
    from mlpc.backends.tvm.tuning_db import META

    spec = zoo.MODELS[model]
    onnx_path = zoo.export_onnx(model, tmp / f"{model}.onnx")
    inputs = zoo.example_inputs(model)
    feeds = {n: t.numpy() for n, t in zip(spec.input_names, inputs)}
    with torch.inference_mode():
        ref = zoo.build(model)(*inputs).numpy()
    case = BenchCase(model, onnx_path, spec.input_names, spec.output_names[0], tmp / model, args.threads)
    case.workdir.mkdir()
    entry: dict[str, Any] = {"runners": {}}
    console.print(f"{model}: default schedules and onnxruntime")
    entry["runners"]["default"] = measure("mlpc", case, feeds, ref, args.repeat, args.warmup)
    entry["runners"]["onnxruntime"] = measure("onnxruntime", case, feeds, ref, args.repeat, args.warmup)
    console.print(f"{model}: tuning with {args.trials} trials")
    db = tmp / f"{model}-tuning-db"
    try:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; from mlpc.cli import main; sys.exit(main(sys.argv[1:]))",
                        "tune", str(onnx_path), "--trials", str(args.trials), "--db", str(db)],
                       check=True, capture_output=True, text=True, timeout=3600,
                       env={**os.environ, "MLPC_CACHE_DIR": str(tmp / f"{model}-cache")})
        tasks = list(json.loads((db / META).read_text())["tasks"].values())
        entry["tuning"] = {"trials": sum(t["trials"] for t in tasks), "seconds": round(time.perf_counter() - start, 1),
                           "tasks": tasks}
        entry["runners"]["tuned"] = measure_tuned(case, db, feeds, ref, args.repeat, args.warmup)
    except subprocess.CalledProcessError as e:
        entry["runners"]["tuned"] = {"error": f"mlpc tune failed: {(e.stderr or '').strip()[-300:]}"}
    except Exception as e:  # one model failing must not stop the others
        logger.debug("tuning %s failed", model, exc_info=True)
        entry["runners"]["tuned"] = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"}
    r = {k: v.get("median_ms") for k, v in entry["runners"].items()}
    entry["ratios"] = {}
    if r["default"] and r.get("tuned"):
        entry["ratios"]["default/tuned"] = r["default"] / r["tuned"]
    if r.get("tuned") and r["onnxruntime"]:
        entry["ratios"]["tuned/onnxruntime"] = r["tuned"] / r["onnxruntime"]
    return entry


def render_markdown(results: dict[str, Any]) -> str:
    """The README section: machine line, budget note, one row per model."""
    cfg = results["config"]
    rows = []
    for model, e in results["models"].items():
        r = e["runners"]

        def ms(name: str) -> str:
            return "failed" if "error" in r.get(name, {"error": 1}) else fmt(r[name]["median_ms"])

        tuning = e.get("tuning", {})
        tasks = tuning.get("tasks", [])
        rows.append([model, ms("default"), ms("tuned"), ms("onnxruntime"), fmt(e["ratios"].get("default/tuned")),
                     fmt(e["ratios"].get("tuned/onnxruntime")),
                     f"{len(r.get('tuned', {}).get('tuned_kernels', []))} of {len(tasks)}",
                     str(tuning.get("trials", "—")), fmt(tuning.get("seconds")),
                     fmt(r.get("tuned", {}).get("max_rel_err"), 2)])
    lines = [machine_line(results["machine"]), "",
             f"MetaSchedule budget: {cfg['trials']} trials per model (population 128, 2 genetic iterations), "
             f"spread over the kernels by their share of the default-schedule time. Batch 1, {cfg['threads']} "
             f"threads, median of {cfg['repeat']} runs. \"kernels tuned\" counts the kernels whose tuned "
             "schedule beat mlpc's default one (the others keep the default). These figures come from a short "
             "budget on a shared machine: more trials (`--trials`) find faster schedules.", "", markdown_table(HEADERS, rows)]
    failures = [f"- {m} / {n}: {res['error']}" for m, e in results["models"].items()
                for n, res in e["runners"].items() if "error" in res]
    if failures:
        lines += ["", "Failures:", *failures]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the tuning benchmark; return 0, or 1 if a build failed."""
    args = parse_args(argv)
    configure_threads(args.threads)  # before anything imports tvm
    console = Console()
    results: dict[str, Any] = {"benchmark": SECTION, "machine": machine_info(),
                               "config": {k: getattr(args, k) for k in ("trials", "repeat", "warmup", "threads")},
                               "models": {}}
    with tempfile.TemporaryDirectory(prefix="mlpc-bench-tune-") as tmp:
        # A private cache: the user's cannot leak into the default builds, ours does not leak out.
        os.environ["MLPC_CACHE_DIR"] = str(Path(tmp) / "cache")
        for model in args.models:
            results["models"][model] = benchmark_model(model, args, Path(tmp), console)
    write_json(args.output, results)
    markdown = render_markdown(results)
    if not args.no_readme:
        update_readme_section(README, SECTION, markdown)
    console.print(markdown)
    failed = any("error" in r for e in results["models"].values() for r in e["runners"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
