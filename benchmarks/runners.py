"""The things a benchmark times: one small class per engine, each running one ONNX/zoo model.

A runner is built from a `BenchCase` (which does any compilation, recording `compile_s`) and
then `run(feeds)` maps input name → NumPy array to the model's first output as a NumPy array.

    case = BenchCase("resnet", onnx_path, ("x",), "logits", workdir, threads=2)
    runner = OrtRunner(case)
    logits = runner.run({"x": x})
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchCase:
    """One model to benchmark: its zoo name, exported ONNX file, I/O names and a scratch directory."""

    model: str
    onnx_path: Path
    input_names: tuple[str, ...]
    output_name: str
    workdir: Path
    threads: int = 2


def _pick_output(outputs: dict[str, Any], name: str) -> np.ndarray:
    """Return output `name`, or the only output when the engine named it differently."""
    if name in outputs:
        return np.asarray(outputs[name])
    if len(outputs) == 1:
        return np.asarray(next(iter(outputs.values())))
    raise KeyError(f"output {name!r} not among the outputs {sorted(outputs)}")


class MlpcRunner:
    """mlpc's compiled artifact for the host CPU: `mlpc.compile(...)` then `artifact.run(feeds)`.

    Thread count comes from TVM_NUM_THREADS, which `common.configure_threads` sets before tvm loads.
    """

    name: ClassVar[str] = "mlpc"
    schedules: ClassVar[bool] = True

    def __init__(self, case: BenchCase) -> None:
        import mlpc

        self.output_name = case.output_name
        start = time.perf_counter()
        self.artifact = mlpc.compile(str(case.onnx_path), target="host", output_dir=case.workdir / self.name,
                                     schedules=self.schedules)
        self.compile_s: float | None = time.perf_counter() - start

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the artifact once; return its first output."""
        return _pick_output(self.artifact.run(feeds), self.output_name)


class MlpcNaiveRunner(MlpcRunner):
    """The same mlpc build without its default CPU schedules: TVM's naive loops, for comparison."""

    name: ClassVar[str] = "mlpc-naive"
    schedules: ClassVar[bool] = False


class OrtRunner:
    """onnxruntime's CPU provider with all graph optimizations, `threads` intra-op threads, 1 inter-op."""

    name: ClassVar[str] = "onnxruntime"

    def __init__(self, case: BenchCase) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.intra_op_num_threads = case.threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        start = time.perf_counter()
        self.session = ort.InferenceSession(str(case.onnx_path), opts, providers=["CPUExecutionProvider"])
        self.compile_s: float | None = time.perf_counter() - start
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.output_name = case.output_name

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the session once; return its first output."""
        outputs = self.session.run(None, feeds)
        return _pick_output(dict(zip(self.output_names, outputs)), self.output_name)


class TorchRunner:
    """PyTorch eager on the zoo module, `torch.set_num_threads(threads)`, under inference_mode."""

    name: ClassVar[str] = "torch"

    def __init__(self, case: BenchCase) -> None:
        import torch

        from mlpc import zoo

        torch.set_num_threads(case.threads)
        self._torch = torch
        self.model = zoo.build(case.model)
        self.input_names = case.input_names
        self.compile_s: float | None = None

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run the module once on the feeds (shared memory, no copy); return its output."""
        torch = self._torch
        with torch.inference_mode():
            out = self.model(*(torch.from_numpy(feeds[n]) for n in self.input_names))
        return out.numpy()


RUNNERS: dict[str, type[MlpcRunner] | type[OrtRunner] | type[TorchRunner]] = {
    r.name: r for r in (MlpcRunner, MlpcNaiveRunner, OrtRunner, TorchRunner)
}
ALIASES = {"ort": "onnxruntime", "pytorch": "torch"}


def resolve_runner_names(spec: str) -> list[str]:
    """Turn "mlpc,ort,torch" into runner names in RUNNERS (aliases allowed); raise ValueError if unknown.

    >>> resolve_runner_names("ort, torch")
    ['onnxruntime', 'torch']
    """
    names = [ALIASES.get(s.strip(), s.strip()) for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in RUNNERS]
    if unknown or not names:
        raise ValueError(f"unknown runner(s) {unknown or spec!r}; choose from {', '.join(RUNNERS)} (or 'ort')")
    return list(dict.fromkeys(names))
