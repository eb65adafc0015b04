"""Foundation benchmark: every zoo model on mlpc (untuned, host CPU), onnxruntime and PyTorch eager.

    python benchmarks/run.py                          # all models, batch 1, all runners
    python benchmarks/run.py --models resnet,mlp --runners ort,torch --repeat 100

Each model is exported to ONNX once, then each runner is built (mlpc compiles, recorded as
compile time), checked against PyTorch, and timed in this one process with the same thread
count. Writes benchmarks/results/foundation.json and the table in benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

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
from benchmarks.runners import RUNNERS, BenchCase, resolve_runner_names

logger = logging.getLogger(__name__)

SECTION = "foundation"
RUNNER_ORDER = ("mlpc", "onnxruntime", "torch")
SHORT_HEADERS = ("model", "mlpc ms", "naive ms", "ORT ms", "torch ms", "mlpc/ORT", "mlpc/torch", "naive/mlpc",
                 "rel err m·o·t", "compile s")
HEADERS = ("Model", "mlpc ms", "mlpc naive ms", "onnxruntime ms", "torch ms", "mlpc / ORT", "mlpc / torch",
           "naive / mlpc", "max rel err (mlpc · ORT · torch)", "mlpc compile s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; see --help."""
    from mlpc import zoo

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(zoo.MODELS), help="comma-separated zoo models (default: all)")
    p.add_argument("--runners", default="mlpc,mlpc-naive,ort,torch",
                   help="comma-separated: mlpc, mlpc-naive (no default schedules), ort, torch")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeat", type=int, default=50, help=f"timed runs per runner (>= {MIN_REPEAT})")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--exporter", choices=("dynamo", "legacy"), default="dynamo")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / f"{SECTION}.json")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the table in benchmarks/README.md")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in zoo.MODELS]
    if unknown:
        p.error(f"unknown model(s) {unknown}; known: {', '.join(zoo.MODELS)}")
    try:
        args.runners = resolve_runner_names(args.runners)
    except ValueError as e:
        p.error(str(e))
    if args.repeat < MIN_REPEAT:
        p.error(f"--repeat must be at least {MIN_REPEAT}")
    return args


def measure(runner_name: str, case: BenchCase, feeds: dict, ref: Any, repeat: int, warmup: int) -> dict:
    """Build, check and time one runner on one case; return its JSON entry (or {"error": ...})."""
    try:
        runner = RUNNERS[runner_name](case)
        err = max_rel_err(runner.run(feeds), ref)
        timing = time_runs(lambda: runner.run(feeds), repeat=repeat, warmup=warmup)
    except Exception as e:  # one engine failing on one model must not stop the others
        logger.debug("%s on %s failed", runner_name, case.model, exc_info=True)
        return {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
    return {"median_ms": timing.median_ms, "p90_ms": timing.p90_ms, "min_ms": timing.min_ms,
            "runs": timing.runs, "max_rel_err": err, "compile_s": runner.compile_s}


def ratios(runners: dict[str, dict]) -> dict[str, float]:
    """mlpc's median latency divided by each baseline's, and the naive build's by mlpc's
    (the speed-up of the default schedules), where both were measured."""
    mlpc = runners.get("mlpc", {}).get("median_ms")
    out = {f"mlpc/{base}": mlpc / runners[base]["median_ms"]
           for base in ("onnxruntime", "torch")
           if mlpc is not None and runners.get(base, {}).get("median_ms")}
    naive = runners.get("mlpc-naive", {}).get("median_ms")
    if mlpc and naive:
        out["mlpc-naive/mlpc"] = naive / mlpc
    return out


def benchmark_model(model: str, args: argparse.Namespace, tmp: Path, progress: Progress, task: Any) -> dict:
    """Export `model`, then measure every requested runner on it; return the model's JSON entry."""
    import torch

    from mlpc import zoo

    spec = zoo.MODELS[model]
    progress.update(task, description=f"{model}: export ({args.exporter}, opset {args.opset})")
    onnx_path = zoo.export_onnx(model, tmp / f"{model}.onnx", batch=args.batch, opset=args.opset,
                                exporter=args.exporter)
    inputs = zoo.example_inputs(model, args.batch)
    feeds = {n: t.numpy() for n, t in zip(spec.input_names, inputs)}
    with torch.inference_mode():
        ref = zoo.build(model)(*inputs).numpy()
    case = BenchCase(model, onnx_path, spec.input_names, spec.output_names[0], tmp / model, args.threads)
    case.workdir.mkdir()
    entry: dict[str, Any] = {"input_shapes": [list(s) for s in spec.input_shapes(args.batch)], "runners": {}}
    for name in args.runners:
        progress.update(task, description=f"{model}: {name}")
        entry["runners"][name] = measure(name, case, feeds, ref, args.repeat, args.warmup)
        progress.advance(task)
    entry["ratios"] = ratios(entry["runners"])
    return entry


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    """One row of formatted cells (HEADERS order) per model of a foundation results dict."""
    rows = []
    for model, entry in results["models"].items():
        r = entry["runners"]

        def latency(name: str) -> str:
            if name not in r:
                return "—"
            if "error" in r[name]:
                return "failed"
            return f"{fmt(r[name]['median_ms'])} / {fmt(r[name]['p90_ms'])}"

        errs = " · ".join(fmt(r.get(n, {}).get("max_rel_err"), 2) for n in RUNNER_ORDER)
        rows.append([model, latency("mlpc"), latency("mlpc-naive"), latency("onnxruntime"), latency("torch"),
                     fmt(entry["ratios"].get("mlpc/onnxruntime")), fmt(entry["ratios"].get("mlpc/torch")),
                     fmt(entry["ratios"].get("mlpc-naive/mlpc")), errs, fmt(r.get("mlpc", {}).get("compile_s"))])
    return rows


def render_markdown(results: dict[str, Any]) -> str:
    """The README section for a foundation results dict: machine line, table, failures if any."""
    cfg = results["config"]
    lines = [machine_line(results["machine"]), "",
             f"batch {cfg['batch']}, {cfg['threads']} threads, median / p90 of {cfg['repeat']} runs "
             f"after {cfg['warmup']} warm-up runs; ONNX from the {cfg['exporter']} exporter, opset {cfg['opset']}.",
             "", markdown_table(HEADERS, table_rows(results))]
    failures = [f"- {m} / {n}: {res['error']}" for m, e in results["models"].items()
                for n, res in e["runners"].items() if "error" in res]
    if failures:
        lines += ["", "Failures:", *failures]
    return "\n".join(lines)


def print_table(console: Console, results: dict[str, Any]) -> None:
    """Print the results table (same cells as the README) with rich."""
    table = Table(title=f"mlpc foundation benchmark (batch {results['config']['batch']}); ms = median / p90",
                  title_justify="left")
    for i, h in enumerate(SHORT_HEADERS):
        table.add_column(h, justify="left" if i == 0 else "right", no_wrap=True)
    for row in table_rows(results):
        table.add_row(*row)
    console.print(table)
    for model, entry in results["models"].items():
        for name, res in entry["runners"].items():
            if "error" in res:
                console.print(f"[red]{model} / {name} failed:[/red] {res['error']}")


def main(argv: list[str] | None = None) -> int:
    """Run the foundation benchmark; return 0, or 1 if a runner failed."""
    args = parse_args(argv)
    configure_threads(args.threads)  # before anything imports tvm
    console = Console()
    if not console.is_terminal:  # piped or logged: do not squeeze the table into 80 columns
        console = Console(width=max(console.width, 140))
    results: dict[str, Any] = {
        "benchmark": SECTION, "machine": machine_info(),
        "config": {k: getattr(args, k) for k in ("batch", "repeat", "warmup", "threads", "opset", "exporter",
                                                   "runners")},
        "models": {},
    }
    with tempfile.TemporaryDirectory(prefix="mlpc-bench-") as tmp, Progress(
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:
        task = progress.add_task("starting", total=len(args.models) * len(args.runners))
        for model in args.models:
            results["models"][model] = benchmark_model(model, args, Path(tmp), progress, task)
            progress.console.print(f"[green]✓[/green] {model}")
    write_json(args.output, results)
    if not args.no_readme:
        update_readme_section(README, SECTION, render_markdown(results))
    print_table(console, results)
    console.print(f"results: {args.output}" + ("" if args.no_readme else f", table: {README}"))
    failed = any("error" in r for e in results["models"].values() for r in e["runners"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
