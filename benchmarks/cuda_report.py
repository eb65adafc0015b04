"""CUDA report (not a test): per zoo model and build (fp32, fp16, w8a8, w4a16), the CUDA build's
kernels, their worst registers/spills, the dp4a / tensor-core instructions in its PTX, and the
roofline-estimated latency on A100 (sm_80 build) and H100 (sm_90 build).

    .venv/bin/python benchmarks/cuda_report.py [--models mlp,resnet] [--builds fp32,fp16,w8a8,w4a16] [--no-readme]

w8a8 computes in integers (dp4a kernels); w4a16 is weight-only (4-bit packed weights, fp16
compute) and only built for the matmul-heavy models (mlp, transformer). Quantized builds
calibrate on 8 example inputs with round-to-nearest weights (the builds are what is reported,
not accuracy: see benchmarks/quant.py for that).

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
HEADERS = ["model", "build", "kernels", "dp4a / tensor-core kernels", "max regs", "max spill B", "A100 est. µs",
           "H100 est. µs", "compile s (sm_80)"]
# build → (compute dtype, quantization scheme)
BUILDS = {"fp32": ("fp32", None), "fp16": ("fp16", None), "w8a8": ("fp32", "w8a8"), "w4a16": ("fp16", "w4a16")}
WEIGHT_ONLY_MODELS = ("mlp", "transformer")
QUANT_CONFIG = {"rounding": "nearest", "sequential": False}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options: models, dtypes, whether to rewrite the README section."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="mlp,resnet,mobilenet,conv1d,transformer")
    p.add_argument("--builds", default="fp32,fp16,w8a8,w4a16", help=f"comma-separated, of {', '.join(BUILDS)}")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite the section in benchmarks/README.md")
    return p.parse_args(argv)


def report_model(model: str, build: str, tmp: Path) -> dict[str, Any]:
    """Compile `model` as `build` for each part's target; return its kernel summary and estimates."""
    import numpy as np

    import mlpc
    from mlpc import zoo
    from mlpc.inspect_cuda import cuda_report

    onnx_path = tmp / f"{model}.onnx"
    if not onnx_path.exists():
        zoo.export_onnx(model, onnx_path, opset=18)
    dtype, scheme = BUILDS[build]
    options: dict[str, Any] = {}
    if scheme is not None:
        calib = np.concatenate([zoo.example_inputs(model, batch=1, seed=s)[0].numpy() for s in range(8)])
        options = {"quantize": scheme, "calibration": {"x": calib}, "quant_config": QUANT_CONFIG}
    entry: dict[str, Any] = {"estimated_latency_us": {}, "compile_seconds": {}}
    for part, target in PARTS.items():
        start = time.perf_counter()
        art = mlpc.compile(onnx_path, target=target, output_dir=tmp / f"{model}-{build}-{part}", dtype=dtype,
                           **options)
        entry["compile_seconds"][target] = round(time.perf_counter() - start, 2)
        report = cuda_report(art.path, art.manifest)
        ptx = (art.path / "device.ptx").read_text()
        entry.setdefault("ptx", {})[part] = {"dp4a": ptx.count("dp4a."), "mma.sync": ptx.count("mma.sync")}
        entry.setdefault("math", {})[part] = sorted({k["math"] for k in report["kernels"]})
        entry["fast_kernels"] = max(entry.get("fast_kernels", 0), sum(
            k["math"] == "int8_dp4a" or k["math"].endswith("_tensor") for k in report["kernels"]))
        entry["estimated_latency_us"][part] = round(report["estimated_latency_us"], 2)
        entry.setdefault("kernels", len(report["kernels"]))
        entry["max_registers"] = max(entry.get("max_registers", 0), report["max_registers"])
        entry["max_spill_bytes"] = max(entry.get("max_spill_bytes", 0), report["max_spill_bytes"])
        entry.setdefault("rules", {})[part] = sorted({k["rule"] for k in report["kernels"]})
    return entry


def render_markdown(results: dict[str, Any]) -> str:
    """The README section: what the numbers are, the machine line, and the table."""
    rows = [[model, build, str(e["kernels"]), str(e.get("fast_kernels", 0)), str(e["max_registers"]),
             str(e["max_spill_bytes"]), fmt(e["estimated_latency_us"]["A100"]), fmt(e["estimated_latency_us"]["H100"]),
             fmt(e["compile_seconds"]["cuda/sm_80"])]
            for model, by_build in results["models"].items() for build, e in by_build.items()]
    return "\n".join([
        "### CUDA builds (estimates, no GPU)",
        "",
        "Zoo models at batch 1 compiled for `cuda/sm_80` and `cuda/sm_90` with dlight's default GPU "
        "schedules and mlpc's dp4a schedule for integer convs/matmuls (no tuning). Builds: fp32, fp16 "
        "(`--dtype fp16`), w8a8 (integer kernels, `--quantize w8a8`), w4a16 (weight-only: 4-bit packed weights "
        "unpacked in fp16 kernels, `--dtype fp16 --quantize w4a16`; matmul-heavy models only). Registers and "
        "spills are ptxas' figures (worst kernel over both builds); \"dp4a / tensor-core kernels\" counts kernels "
        "whose math is dp4a or wmma. "
        "**Latencies are estimates from mlpc's roofline model, not measurements** (FLOPs and bytes per kernel "
        "against the part's CUDA-core peak — 4× the fp32 rate for dp4a kernels, the tensor peak for wmma "
        "kernels — and memory bandwidth, idle SMs counted, plus 2 µs launch overhead per kernel; at batch 1 "
        "the launch overhead dominates, so the quantized builds' estimates say more about kernel counts than "
        "about arithmetic). Compile time includes calibration and quantization for w8a8/w4a16.",
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
            for build in args.builds.split(","):
                if build not in BUILDS:
                    raise SystemExit(f"unknown build {build!r}; use {', '.join(BUILDS)}")
                if BUILDS[build][1] == "w4a16" and model not in WEIGHT_ONLY_MODELS:
                    continue
                entry = report_model(model, build, Path(tmp))
                results["models"].setdefault(model, {})[build] = entry
                print(f"{model:12s} {build}: {entry['kernels']} kernels, A100 ≈ {entry['estimated_latency_us']['A100']} µs, "
                      f"H100 ≈ {entry['estimated_latency_us']['H100']} µs (estimates)", flush=True)
    path = write_json(RESULTS_DIR / "cuda.json", results)
    print(f"wrote {path}")
    if not args.no_readme:
        update_readme_section(README, "cuda", render_markdown(results))
        print(f"updated the cuda section of {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
