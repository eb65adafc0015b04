"""Per-kernel report of a CUDA artifact: resources from ptxas, launch shapes, and a roofline
estimate of each kernel's time on the target GPU (an estimate, not a measurement).

    >>> report = cuda_report(Path("out/"), manifest)                     # doctest: +SKIP
    >>> report["estimated_latency_us"]                                   # doctest: +SKIP
    61.3

The model, per kernel launch: compute time = FLOPs / peak of its math kind (CUDA-core rates,
4× the fp32 rate for dp4a kernels, the tensor-core peak for kernels scheduled onto wmma), memory time = bytes of its arguments and
results / memory bandwidth, both scaled up when the grid has fewer blocks than the GPU has SMs
(idle SMs contribute neither); time = max(compute, memory) + the part's launch overhead.
FLOPs and bytes come from the TIR at build time; registers, shared memory and spills from
`ptxas -v` assembling the artifact's device.ptx into its device.cubin; both are in kernels.json.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mlpc.errors import ArtifactError
from mlpc.targets.cuda import GpuPart

logger = logging.getLogger(__name__)

ESTIMATE_LABEL = "estimate (roofline model, not measured)"
# Which peak of GpuPart.peak_tflops a kernel's math runs at: plain integer kernels at the fp32
# (CUDA-core) rate; dp4a kernels at 4× that (one dp4a does four int8 multiply-adds in an int32
# lane — an assumption of this model, not a datasheet figure); tensor-core (wmma/mma) kernels
# at the part's tensor peak.
_PEAK_OF_MATH = {"fp32": "fp32", "fp16": "fp16", "bf16": "bf16", "int8": "fp32", "fp16_tensor": "fp16_tensor",
                 "bf16_tensor": "bf16_tensor", "int8_tensor": "int8_tensor"}
_DP4A_SPEEDUP = 4.0


def peak_tflops(math: str, part: GpuPart) -> float:
    """The peak rate (TFLOPS/TOPS) a kernel of math kind `math` runs at on `part` in this model."""
    if math == "int8_dp4a":
        return _DP4A_SPEEDUP * part.peak("fp32")
    return part.peak(_PEAK_OF_MATH[math])


def is_cuda_artifact(manifest: dict[str, Any]) -> bool:
    """Return True when the manifest describes an artifact built for a CUDA target."""
    return manifest.get("target", {}).get("kind") == "cuda" and "kernels" in manifest.get("backend", {})


def load_kernels(path: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the kernel table (kernels.json) of the CUDA artifact at `path`."""
    file = path / manifest["backend"]["kernels"]
    try:
        return json.loads(file.read_text())["kernels"]
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"{file}: unreadable kernel table ({e}); recompile the artifact") from e


def kernel_estimate_us(kernel: dict[str, Any], part: GpuPart) -> dict[str, float]:
    """Return {compute_us, memory_us, time_us} for one launch of `kernel` on `part`."""
    blocks = kernel["grid"][0] * kernel["grid"][1] * kernel["grid"][2]
    busy = min(1.0, blocks / part.sm_count)
    compute = kernel["flops"] / (peak_tflops(kernel["math"], part) * 1e12 * busy) * 1e6
    memory = kernel["bytes"] / (part.memory_gbps * 1e9 * busy) * 1e6
    return {"compute_us": compute, "memory_us": memory,
            "time_us": max(compute, memory) + part.launch_overhead_us}


def estimate(kernels: list[dict[str, Any]], part: GpuPart) -> dict[str, Any]:
    """Return the roofline estimate of `kernels` on `part`: per kernel (its launch estimate times
    its calls per inference) and the sum, the model's estimated latency in microseconds."""
    rows = []
    for k in kernels:
        est = kernel_estimate_us(k, part)
        rows.append({**k, **est, "bound": "compute" if est["compute_us"] > est["memory_us"] else "memory",
                     "total_us": est["time_us"] * max(1, k.get("calls", 1))})
    return {"part": part.part, "label": ESTIMATE_LABEL, "kernels": rows,
            "estimated_latency_us": sum(r["total_us"] for r in rows)}


def cuda_report(path: Path, manifest: dict[str, Any], part: GpuPart | None = None) -> dict[str, Any]:
    """Return the CUDA section of `mlpc inspect` for the artifact at `path`: arch, dtype, device
    files, the estimate on `part` (default: the artifact's target part) and resource maxima."""
    from mlpc.targets import Target
    from mlpc.targets.cuda import gpu_part

    kernels = load_kernels(path, manifest)
    part = part or gpu_part(Target.from_json(manifest["target"]))
    report = estimate(kernels, part)
    backend = manifest["backend"]
    report.update(
        arch=backend["arch"], dtype=backend["dtype"], device_files=backend["device_files"],
        max_registers=max((k["registers"] for k in kernels), default=0),
        max_spill_bytes=max((k["spill_stores"] + k["spill_loads"] for k in kernels), default=0),
    )
    return report


def print_cuda_report(console: Any, report: dict[str, Any]) -> None:
    """Print `report` (from `cuda_report`) on a rich Console as a per-kernel table and a total."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"CUDA kernels ({report['arch']}, {report['dtype']}); time: {report['label']} on {report['part']}")
    for col in ("kernel", "schedule", "grid", "block", "regs", "smem B", "spill B", "calls", "MFLOP", "KB",
                "bound", "est. µs"):
        table.add_column(col, justify="left" if col in ("kernel", "schedule", "bound") else "right", no_wrap=True)
    for k in report["kernels"]:
        table.add_row(
            k["name"], k["rule"], "x".join(map(str, k["grid"])), "x".join(map(str, k["block"])),
            str(k["registers"]), str(k["shared_bytes"]), str(k["spill_stores"] + k["spill_loads"]),
            str(k["calls"]), f"{k['flops'] / 1e6:.2f}", f"{k['bytes'] / 1e3:.1f}", k["bound"], f"{k['total_us']:.2f}",
        )
    longest = max((len(k["name"]) for k in report["kernels"]), default=0)
    wide = Console(file=console.file, width=max(console.width, longest + 130), color_system=console.color_system)
    wide.print(table)  # kernel names are long: never squeeze the table into a narrow terminal
    console.print(f"estimated latency on {report['part']}: {report['estimated_latency_us']:.1f} µs "
                  f"({report['label']}; {len(report['kernels'])} kernels, max {report['max_registers']} registers, "
                  f"max spill {report['max_spill_bytes']} B)")
