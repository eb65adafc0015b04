"""CUDA report (not a test): per zoo model and dtype, the CUDA build's kernels, their worst
registers/spills, and the roofline-estimated latency on A100 (sm_80 build) and H100 (sm_90 build).

    .venv/bin/python benchmarks/cuda_report.py [--models mlp,resnet] [--dtypes fp32,fp16] [--no-readme]

No GPU is needed and none is used: the latencies are estimates from mlpc's roofline model
(`mlpc.inspect_cuda`), not measurements. Writes benchmarks/results/cuda.json and the "cuda"
section of benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import (  # noqa: E402
    README,
    RESULTS_DIR,
    fmt,
    machine_line,
    markdown_table,
    update_readme_section,
    write_json,
)

PARTS = {"A100": "cuda/sm_80", "H100": "cuda/sm_90"}
HEADERS = ["model", "dtype", "kernels", "max regs", "max spill B", "A100 est. µs", "H100 est. µs",
           "compile s (sm_80)"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options: models, dtypes, whether to rewrite the README section."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp,resnet,mobilenet,conv1d,transformer")
    p.add_argument("--dtypes", default="fp32,fp16")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the section in benchmarks/README.md")
    return p.parse_args(argv)


def report_model(model: str, dtype: str, tmp: Path) -> dict[str, Any]:
    """Compile `model` in `dtype` for each part's target; return its kernel summary and estimates."""
    import mlpc
    from mlpc import zoo
    from mlpc.inspect_cuda import cuda_report

    onnx_path = tmp / f"{model}.onnx"
    if not onnx_path.exists():
        zoo.export_onnx(model, onnx_path, opset=18)
    entry: dict[str, Any] = {"estimated_latency_us": {}, "compile_seconds": {}}
    for part, target in PARTS.items():
        start = time.perf_counter()
        art = mlpc.compile(onnx_path, target=target, output_dir=tmp / f"{model}-{dtype}-{part}", dtype=dtype)
        entry["compile_seconds"][target] = round(time.perf_counter() - start, 2)
        report = cuda_report(art.path, art.manifest)
        entry["estimated_latency_us"][part] = round(report["estimated_latency_us"], 2)
        entry.setdefault("kernels", len(report["kernels"]))
        entry["max_registers"] = max(entry.get("max_registers", 0), report["max_registers"])
        entry["max_spill_bytes"] = max(entry.get("max_spill_bytes", 0), report["max_spill_bytes"])
        entry.setdefault("rules", {})[part] = sorted({k["rule"] for k in report["kernels"]})
    return entry


def render_markdown(results: dict[str, Any]) -> str:
    """The README section: what the numbers are, the machine line, and the table."""
    rows = [[model, dtype, str(e["kernels"]), str(e["max_registers"]), str(e["max_spill_bytes"]),
             fmt(e["estimated_latency_us"]["A100"]), fmt(e["estimated_latency_us"]["H100"]),
             fmt(e["compile_seconds"]["cuda/sm_80"])]
            for model, by_dtype in results["models"].items() for dtype, e in by_dtype.items()]
    return "\n".join([
        "### CUDA builds (estimates, no GPU)",
        "",
        "Zoo models at batch 1 compiled for `cuda/sm_80` and `cuda/sm_90` with dlight's default GPU "
        "schedules (no tuning). Registers and spills are ptxas' figures (worst kernel over both builds). "
        "**Latencies are estimates from mlpc's roofline model, not measurements** (FLOPs and bytes per kernel "
        "against the part's CUDA-core peak and memory bandwidth, idle SMs counted, plus 2 µs launch "
        "overhead per kernel; at batch 1 the launch overhead dominates).",
        "",
        machine_line(results["machine"]),
        "",
        markdown_table(HEADERS, rows),
    ])


def main(argv: list[str] | None = None) -> int:
    """Run the report; return 0."""
    from benchmarks.common import machine_info

    args = parse_args(argv)
    results: dict[str, Any] = {"machine": machine_info(), "kind": "estimate (roofline model, not measured)",
                               "parts": PARTS, "models": {}}
    with tempfile.TemporaryDirectory(prefix="mlpc-cuda-bench-") as tmp:
        for model in args.models.split(","):
            for dtype in args.dtypes.split(","):
                entry = report_model(model, dtype, Path(tmp))
                results["models"].setdefault(model, {})[dtype] = entry
                print(f"{model:12s} {dtype}: {entry['kernels']} kernels, A100 ≈ {entry['estimated_latency_us']['A100']} µs, "
                      f"H100 ≈ {entry['estimated_latency_us']['H100']} µs (estimates)", flush=True)
    path = write_json(RESULTS_DIR / "cuda.json", results)
    print(f"wrote {path}")
    if not args.no_readme:
        update_readme_section(README, "cuda", render_markdown(results))
        print(f"updated the cuda section of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
