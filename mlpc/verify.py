"""Verification: the compiled model against the original, on the same inputs.

The reference is onnxruntime for ONNX input, PyTorch for module input, and mlpc's reference
interpreter for models with QONNX or mlpc ops (which onnxruntime cannot run). The report gives, per
output, max abs error, the error relative to max|reference|, cosine similarity and (for class
scores) top-1 agreement; it passes when every relative error is within tolerance.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlpc.errors import InputError, VerificationError
from mlpc.frontend import LoadedModel

logger = logging.getLogger(__name__)

DEFAULT_TOLERANCE = 1e-4
ORT_MAX_IR_VERSION = 13


@dataclass
class OutputComparison:
    """How one output of the compiled model compares with the reference."""

    name: str
    max_abs_err: float
    max_abs_ref: float
    rel_err: float
    cosine: float
    top1_agreement: float | None


@dataclass
class VerificationReport:
    """The verification result: per-output comparisons, the tolerance and the verdict."""

    reference: str
    tolerance: float
    samples: int
    outputs: list[OutputComparison]

    @property
    def passed(self) -> bool:
        """True when every output's relative error is within tolerance."""
        return all(o.rel_err <= self.tolerance for o in self.outputs)

    def to_json(self) -> dict[str, Any]:
        """Return the report as a JSON-serialisable dict."""
        return {"reference": self.reference, "tolerance": self.tolerance, "samples": self.samples,
                "passed": self.passed, "outputs": [asdict(o) for o in self.outputs]}

    def raise_if_failed(self) -> None:
        """Raise VerificationError naming the outputs beyond tolerance."""
        if not self.passed:
            bad = [f"{o.name}: rel err {o.rel_err:.2e}" for o in self.outputs if o.rel_err > self.tolerance]
            raise VerificationError(
                f"compiled outputs differ from {self.reference} beyond tolerance {self.tolerance:g}: {'; '.join(bad)}"
            )


def random_inputs(specs: list[dict[str, Any]], loaded: LoadedModel, seed: int = 0) -> dict[str, np.ndarray]:
    """Make seeded random inputs for input specs ({name, shape, dtype}).

    Floats are standard normal; integer inputs feeding a Gather stay within the indexed axis.
    """
    rng = np.random.default_rng(seed)
    bounds = _gather_bounds(loaded)
    inputs = {}
    for spec in specs:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        if dtype.kind == "f":
            inputs[spec["name"]] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            inputs[spec["name"]] = rng.integers(0, bounds.get(spec["name"], 2), size=shape).astype(dtype)
        elif dtype.kind == "b":
            inputs[spec["name"]] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            raise InputError(f"cannot make random data for input {spec['name']!r} of dtype {dtype}")
    return inputs


def _gather_bounds(loaded: LoadedModel) -> dict[str, int]:
    bounds: dict[str, int] = {}
    for value in loaded.model.graph.inputs:
        for node, index in value.uses():
            if node.op_type == "Gather" and index == 1 and node.inputs[0].shape is not None:
                axis = node.attributes.get_int("axis", 0)
                dim = node.inputs[0].shape.dims[axis]
                if isinstance(dim, int):
                    bounds[value.name] = min(bounds.get(value.name, dim), dim)
    return bounds


# Reference kinds run by mlpc's reference evaluator, and how reports name them.
_EVALUATED = {"fake-quant": "fake-quant", "integer": "integer graph"}


def reference_outputs(loaded: LoadedModel, inputs: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
    """Run the original model (onnxruntime or PyTorch) and return its outputs in `output_names` order."""
    if loaded.reference_kind in _EVALUATED:  # a quantized model: mlpc's reference evaluator
        from mlpc.ir import ReferenceEvaluator

        results = ReferenceEvaluator(loaded.reference).run(inputs, output_names)
        return [results[n] for n in output_names]
    if loaded.reference_kind == "torch":
        import torch

        with torch.inference_mode():
            result = loaded.reference(*[torch.from_numpy(a) for a in inputs.values()])
        flat = list(result) if isinstance(result, (list, tuple)) else [result]
        return [t.detach().numpy() for t in flat]
    if not runs_in_onnxruntime(loaded.reference):
        from mlpc.ir import ReferenceEvaluator

        result = ReferenceEvaluator(loaded.reference).run(inputs)
        return [result[name] for name in output_names]
    import onnxruntime as ort

    proto = loaded.reference
    if proto.ir_version > ORT_MAX_IR_VERSION:  # onnx 1.23 writes IR 14 by default; ORT 1.31 reads up to 13
        proto = type(proto)()
        proto.CopyFrom(loaded.reference)
        proto.ir_version = ORT_MAX_IR_VERSION
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {i.name: inputs[i.name] for i in session.get_inputs()}
    return session.run(output_names, feeds)


ORT_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}


def runs_in_onnxruntime(proto: Any) -> bool:
    """True when every node of the ModelProto is in a domain onnxruntime implements (QONNX and
    mlpc ops are not: those models are checked against mlpc's reference interpreter)."""
    return all(node.domain in ORT_DOMAINS for node in proto.graph.node)


def reference_name(loaded: LoadedModel) -> str:
    """The name of what `reference_outputs` runs for this model."""
    if loaded.reference_kind == "torch":
        return "pytorch"
    return "onnxruntime" if runs_in_onnxruntime(loaded.reference) else "mlpc reference interpreter"


def compare(name: str, reference: np.ndarray, actual: np.ndarray) -> OutputComparison:
    """Compare one output with its reference."""
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(actual, dtype=np.float64)
    if ref.shape != got.shape:
        raise VerificationError(f"output {name!r}: shape {got.shape} differs from the reference's {ref.shape}")
    err = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    norms = np.linalg.norm(ref) * np.linalg.norm(got)
    cosine = float(np.dot(ref.ravel(), got.ravel()) / norms) if norms > 0 else float(err == 0.0)
    top1 = None
    if ref.ndim >= 2 and ref.shape[-1] > 1:
        top1 = float(np.mean(np.argmax(ref, axis=-1) == np.argmax(got, axis=-1)))
    rel = err / scale if scale > 0 else err
    return OutputComparison(name, err, scale, rel, cosine, top1)


def verify(
    loaded: LoadedModel,
    run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    input_specs: list[dict[str, Any]],
    output_names: list[str],
    tolerance: float = DEFAULT_TOLERANCE,
    samples: int = 3,
    inputs: list[dict[str, np.ndarray]] | None = None,
) -> VerificationReport:
    """Run the compiled model (`run`) and the reference on the same inputs and compare them.

    Uses `inputs` if given, else `samples` seeded random input sets. Returns the worst case per output.
    """
    batches = inputs or [random_inputs(input_specs, loaded, seed) for seed in range(samples)]
    worst: dict[str, OutputComparison] = {}
    for batch in batches:
        got = run(batch)
        refs = reference_outputs(loaded, batch, output_names)
        if len(refs) != len(output_names):
            raise VerificationError(
                f"the reference returns {len(refs)} outputs, the compiled model {len(output_names)}"
            )
        for name, ref in zip(output_names, refs):
            result = compare(name, ref, got[name])
            if name not in worst or result.rel_err > worst[name].rel_err:
                worst[name] = result
    reference = (f"mlpc reference evaluator ({_EVALUATED[loaded.reference_kind]})"
                 if loaded.reference_kind in _EVALUATED else reference_name(loaded))
    report = VerificationReport(reference, tolerance, len(batches), [worst[n] for n in output_names])
    logger.info("verification against %s: %s", reference, "passed" if report.passed else "FAILED")
    return report
