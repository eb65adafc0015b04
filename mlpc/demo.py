"""`mlpc demo`: compile, verify and benchmark an example model for this machine."""
from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

logger = logging.getLogger(__name__)


def median_ms(fn: Callable[[], Any], repeat: int, warmup: int = 3) -> float:
    """Call `fn` `warmup` times, then `repeat` times; return the median wall time in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def run_demo(model_name: str, output: Path, repeat: int, console: Console) -> None:
    """Export `model_name` from mlpc.zoo, compile it for the host with verification, and time it
    against onnxruntime and PyTorch on the same inputs; print the results."""
    import onnxruntime as ort
    import torch

    import mlpc
    from mlpc import zoo

    threads = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = zoo.export_onnx(model_name, Path(tmp) / f"{model_name}.onnx")
        console.print(f"[bold]1.[/] exported mlpc.zoo model {model_name!r} to ONNX")
        with console.status("compiling for this machine..."):
            artifact = mlpc.compile(onnx_path, target="host", output_dir=output, verify=True)
        report = artifact.verification
        worst = max(o["rel_err"] for o in report["outputs"])
        console.print(f"[bold]2.[/] compiled → {artifact.path} in {artifact.manifest['compile_seconds']:.1f}s "
                      f"({artifact.manifest['target']['description']})")
        console.print(f"[bold]3.[/] verified against onnxruntime: max error {worst:.2e} of max|reference| "
                      f"([green]passed[/])")
        inputs = {spec["name"]: np.asarray(t.numpy()) for spec, t in
                  zip(artifact.inputs, zoo.example_inputs(model_name, batch=artifact.inputs[0]["shape"][0]))}
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        module = zoo.build(model_name)
        tensors = [torch.from_numpy(a) for a in inputs.values()]
        torch.set_num_threads(threads)
        with console.status(f"timing {repeat} runs each..."), torch.inference_mode():
            timings = {
                "mlpc (default schedules)": median_ms(lambda: artifact.run(inputs), repeat),
                "onnxruntime": median_ms(lambda: session.run(None, inputs), repeat),
                "PyTorch eager": median_ms(lambda: module(*tensors), repeat),
            }
    table = Table(title=f"{model_name}, batch {artifact.inputs[0]['shape'][0]}, {threads} threads, "
                        f"median of {repeat} runs")
    table.add_column("runtime")
    table.add_column("latency (ms)", justify="right")
    table.add_column("vs onnxruntime", justify="right")
    for name, ms in timings.items():
        table.add_row(name, f"{ms:.3f}", f"{ms / timings['onnxruntime']:.2f}×")
    console.print("[bold]4.[/] benchmark")
    console.print(table)
    console.print("mlpc ran with its default CPU schedules, without auto-tuning; benchmarks/README.md has all models.")
