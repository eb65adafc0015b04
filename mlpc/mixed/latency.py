"""Per-layer latency at each weight width, for the ILP's latency budget.

- x86 (and the host): measured. Each layer becomes a one-node ONNX graph (its op, attributes,
  input and weight shapes; random weights), compiled through mlpc's TVM backend quantized at
  w<b>a8 (integer kernels, packed sub-byte weights), and timed on this machine (median of
  `repeat` calls), minus the call overhead of a trivial build with the same input (counted once
  per model instead). Results are cached per user (`$MLPC_CACHE_DIR` or ~/.cache/mlpc,
  `mixed-latency.json`) keyed by the target, the layer's signature and the bits.
- ARM and CUDA: an analytic roofline. Compute runs at the int8 rate (mlpc's sub-byte kernels
  unpack weights to int8 inside the reduction), memory traffic is the packed weights plus int8
  activations: t = max(MACs / MAC rate, bytes / bandwidth) + per-kernel overhead, from the part's
  data below (ARM cores) or the target's GPU description (CUDA).

    >>> model = latency_model(get_target("arm/cortex-a72"))   # doctest: +SKIP
    >>> model(layer, 4)   # seconds  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpc.errors import QuantizationError
from mlpc.mixed.layers import LayerInfo

logger = logging.getLogger(__name__)

CACHE_FILE = "mixed-latency.json"


@dataclass(frozen=True)
class CpuPart:
    """What the analytic CPU latency model needs: clock (GHz), int8 MACs per cycle per core with
    NEON (SMLAL: 8 per 128-bit op, SDOT: 16), sustained DRAM bandwidth (GB/s), per-kernel overhead (µs)."""

    clock_ghz: float
    int8_macs_per_cycle: int
    memory_gbps: float
    overhead_us: float = 2.0


# Published clocks of the boards each tag names and their measured STREAM-like bandwidths
# (Raspberry Pi 3B+: 1.4 GHz, ~2 GB/s; Pi 4: 1.5 GHz, ~4 GB/s; Graviton2: 2.5 GHz, ~20 GB/s per
# 4 cores; Cortex-A7 boards: 0.9 GHz, ~1 GB/s).
ARM_PARTS = {
    "cortex-a53": CpuPart(1.4, 8, 2.0),
    "cortex-a72": CpuPart(1.5, 8, 4.0),
    "neoverse-n1": CpuPart(2.5, 16, 20.0),
    "generic": CpuPart(0.9, 8, 1.0, overhead_us=4.0),
}


def _layer_bytes(layer: LayerInfo, bits: int) -> float:
    sig = layer.signature
    acts = 0
    if sig.get("input_shape"):
        acts += int(np.prod([d if isinstance(d, int) else 1 for d in sig["input_shape"]]))
    out_elems = layer.macs // max(1, layer.params // max(1, _out_channels(layer)))
    return layer.size_bytes(bits) + acts + out_elems


def _out_channels(layer: LayerInfo) -> int:
    shape = layer.signature.get("weight_shape") or [1]
    if layer.kind in ("conv", "linear"):
        return int(shape[0])
    if layer.kind == "gemm":
        return int(shape[0] if layer.signature.get("attributes", {}).get("transB", 0) else shape[-1])
    return int(shape[-1])


def arm_latency(target: Any) -> Callable[[LayerInfo, int], float]:
    """The analytic latency (seconds) of a layer at a weight width on an ARM target."""
    mcpu = target.tvm.get("mcpu", "generic")
    part = ARM_PARTS.get(mcpu, ARM_PARTS["generic"])
    cores = int(target.capabilities.get("cores", 1))
    rate = part.clock_ghz * 1e9 * part.int8_macs_per_cycle * cores

    def latency(layer: LayerInfo, bits: int) -> float:
        return (
            max(layer.macs / rate, _layer_bytes(layer, bits) / (part.memory_gbps * 1e9))
            + part.overhead_us * 1e-6
        )

    return latency


def cuda_latency(target: Any) -> Callable[[LayerInfo, int], float]:
    """The analytic latency (seconds) of a layer at a weight width on a CUDA target (int8 tensor cores)."""
    gpu = target.capabilities.get("gpu")
    if not gpu:
        raise QuantizationError(f"target {target.name!r} has no GPU description for the latency model")
    peaks = gpu["peak_tflops"]
    tops = peaks.get("int8_tensor") or peaks.get("fp16_tensor") or peaks["fp32"]
    bandwidth = gpu["memory_gbps"] * 1e9
    overhead = gpu.get("launch_overhead_us", 2.0) * 1e-6

    def latency(layer: LayerInfo, bits: int) -> float:
        return max(2.0 * layer.macs / (tops * 1e12), _layer_bytes(layer, bits) / bandwidth) + overhead

    return latency


def _cache_path() -> Path:
    base = os.environ.get("MLPC_CACHE_DIR") or str(Path.home() / ".cache" / "mlpc")
    return Path(base) / CACHE_FILE


def single_layer_model(layer: LayerInfo, seed: int = 0) -> Any:
    """A one-node ONNX model ("x" → layer → "y") with the layer's op, attributes and shapes and
    random weights; QuantizationError when the layer has no static signature."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sig = layer.signature
    shape = sig.get("input_shape")
    if not shape or any(not isinstance(d, int) for d in shape):
        raise QuantizationError(
            f"layer {layer.name!r}: no static input shape; give --input-shape to measure its latency"
        )
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(sig["weight_shape"]) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w")]
    inputs = ["x", "w"]
    if sig.get("bias"):
        n = _out_channels(layer)
        inits.append(numpy_helper.from_array((rng.standard_normal(n) * 0.1).astype(np.float32), "b"))
        inputs.append("b")
    node = helper.make_node(sig["op"], inputs, ["y"], name=layer.name or "layer", **sig.get("attributes", {}))
    graph = helper.make_graph(
        [node],
        "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def _time_model(target: Any, model: Any, shape: list[int], quantize: str | None, repeat: int) -> float:
    """Compile `model` (input "x" of `shape`) for `target`, quantized as `quantize` (None: float,
    calibrated on 4 random non-negative samples), and return its median latency (s) here."""
    from mlpc.driver import compile as compile_model

    rng = np.random.default_rng(1)
    calib = {"x": np.abs(rng.standard_normal([4, *shape])).astype(np.float32)} if quantize else None
    with tempfile.TemporaryDirectory(prefix="mlpc-lat-") as tmp:
        art = compile_model(
            model, target=target, output_dir=Path(tmp) / "a", quantize=quantize, calibration=calib
        )
        x = {"x": np.abs(rng.standard_normal(shape)).astype(np.float32)}
        for _ in range(3):
            art.run(x)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            art.run(x)
            times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_layer(target: Any, layer: LayerInfo, bits: int, act_bits: int = 8, repeat: int = 30) -> float:
    """Compile `layer` alone at w<bits>a<act_bits> for `target` and return its median latency (s)
    here, one call of the compiled model (the call overhead included; see `measure_overhead`)."""
    model = single_layer_model(layer)
    return _time_model(target, model, list(layer.signature["input_shape"]), f"w{bits}a{act_bits}", repeat)


def measure_overhead(target: Any, shape: list[int], repeat: int = 30) -> float:
    """The median latency (s) of a compiled one-Relu model with input `shape`: what one call of a
    compiled model costs besides its layers (runtime dispatch, argument passing)."""
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "overhead",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return _time_model(target, model, shape, None, repeat)


class MeasuredLatency:
    """Per-layer latency (s) measured on this host (see the module doc), cached per user: a
    layer's latency is its single-layer build's time minus the call overhead of a trivial build of
    the same input shape; `fixed(layers)` is that overhead once (one call of the whole model)."""

    def __init__(self, target: Any, act_bits: int = 8, repeat: int = 30, cache: bool = True) -> None:
        self.target, self.act_bits, self.repeat, self.cache = target, act_bits, repeat, cache
        self.path = _cache_path()
        try:
            self.table: dict[str, float] = (
                json.loads(self.path.read_text()) if cache and self.path.exists() else {}
            )
        except (OSError, ValueError):
            self.table = {}

    def _cached(self, key_data: Any, measure: Callable[[], float], what: str) -> float:
        import mlpc

        blob = json.dumps(
            {"target": self.target.to_json(), "what": key_data, "mlpc": mlpc.__version__},
            sort_keys=True,
            default=str,
        )
        key = hashlib.sha256(blob.encode()).hexdigest()
        if key not in self.table:
            self.table[key] = measure()
            logger.info("latency of %s on %s: %.4g ms", what, self.target.name, self.table[key] * 1e3)
            if self.cache:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(self.table))
                tmp.replace(self.path)
        return self.table[key]

    def overhead(self, shape: list[int]) -> float:
        """The call overhead for an input of `shape` (see `measure_overhead`)."""
        return self._cached(
            {"overhead": list(shape)},
            lambda: measure_overhead(self.target, shape, self.repeat),
            f"an empty build {shape}",
        )

    def __call__(self, layer: LayerInfo, bits: int) -> float:
        shape = layer.signature.get("input_shape")
        if not shape or any(not isinstance(d, int) for d in shape):
            raise QuantizationError(
                f"layer {layer.name!r}: no static input shape; give --input-shape to measure its latency"
            )
        total = self._cached(
            {"signature": layer.signature, "bits": bits, "act_bits": self.act_bits},
            lambda: measure_layer(self.target, layer, bits, self.act_bits, self.repeat),
            f"{layer.name} at w{bits}a{self.act_bits}",
        )
        return max(total - self.overhead(shape), 1e-7)

    def fixed(self, layers: list[LayerInfo]) -> float:
        """One call's overhead, with the first layer's input shape."""
        shape = layers[0].signature.get("input_shape") if layers else None
        return self.overhead(shape) if shape else 0.0


def latency_model(target: Any, act_bits: int = 8, repeat: int = 30) -> Callable[[LayerInfo, int], float]:
    """The per-layer latency function for `target`: measured here for x86 (the host must be able
    to run the target's code), analytic for ARM and CUDA; QuantizationError for other kinds."""
    if target.kind == "x86":
        missing = target.missing_on_host()
        if missing:
            raise QuantizationError(f"cannot measure latencies for {target.name} here: {'; '.join(missing)}")
        return MeasuredLatency(target, act_bits, repeat)
    if target.kind == "arm":
        return arm_latency(target)
    if target.kind == "cuda":
        return cuda_latency(target)
    raise QuantizationError(
        f"no latency model for target kind {target.kind!r} ({target.name}); "
        "drop --latency-budget or pick an x86, arm or cuda target"
    )
