"""End-to-end check of the ILP's best allocations on held-out calibration samples.

The ILP minimises Σ_i Ω_i(b_i), a sum of per-layer perturbations measured one layer at a time:
it ignores how the layers' errors interact (two layers whose errors add up, or cancel, or a
layer whose error the next layer's rounding repairs). `select_end_to_end` takes the ILP's
`count` best allocations under the budgets (`ilp.ranked`: re-solved with no-good cuts), quantizes
the whole model at each with mlpc's quantize pass (its GPTQ rounding, clipping search and bias
correction, activations at `act_bits`) calibrated on the calibration samples that are *not* held
out, measures the output perturbation against the float model on the held-out ones (every 4th
calibration sample, at most `held_out`) with the sensitivity's metric, and keeps the allocation
with the smallest measured perturbation. The ILP's own answer is always among the candidates,
so the held-out objective can only improve; the test set is never touched, and every candidate
meets every budget.

    >>> choice = select_end_to_end("m.onnx", "calib.npz", problem, {"size": 20_000}, count=4)  # doctest: +SKIP
    >>> choice.allocation.bits, [c.held_out for c in choice.candidates]  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlpc.errors import QuantizationError
from mlpc.mixed.ilp import Allocation, Problem, ranked

logger = logging.getLogger(__name__)

HELD_OUT_EVERY = 4  # every 4th calibration sample is held out
DEFAULT_HELD_OUT = 64


@dataclass
class Measured:
    """One candidate allocation, its rank in the ILP (0 = the ILP's answer) and its output
    perturbation on the held-out samples (`held_out`, lower is better)."""

    allocation: Allocation
    rank: int
    held_out: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**self.allocation.to_json(), "ilp_rank": self.rank, "held_out": self.held_out}


@dataclass
class EndToEndChoice:
    """The allocation kept (`allocation`, the measured candidate with the smallest held-out
    perturbation; ties go to the better ILP rank), every candidate measured, and the split."""

    allocation: Allocation
    candidates: list[Measured] = field(default_factory=list)
    metric: str = "mse"
    held_out_samples: int = 0
    fit_samples: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (stored in the mixed-precision manifest section)."""
        return {
            "metric": self.metric,
            "held_out_samples": self.held_out_samples,
            "fit_samples": self.fit_samples,
            "candidates": [c.to_json() for c in self.candidates],
        }


def split_calibration(data: Any, held_out: int = DEFAULT_HELD_OUT) -> tuple[Any, Any]:
    """(fit, held-out) CalibrationSets: every HELD_OUT_EVERY-th sample (at most `held_out` of them)
    is held out, the rest fits. QuantizationError when there are fewer than HELD_OUT_EVERY samples.

        >>> from mlpc.quant.calibration import CalibrationSet
        >>> fit, held = split_calibration(CalibrationSet([{"x": i} for i in range(10)]))
        >>> [s["x"] for s in held.samples], len(fit)
        ([3, 7], 8)
    """
    from mlpc.quant.calibration import CalibrationSet

    n = len(data.samples)
    if n < HELD_OUT_EVERY:
        raise QuantizationError(
            f"checking allocations end to end needs at least {HELD_OUT_EVERY} calibration samples "
            f"(one in {HELD_OUT_EVERY} is held out); {data.source} has {n}: give more or measure one candidate"
        )
    held = list(range(HELD_OUT_EVERY - 1, n, HELD_OUT_EVERY))[: max(1, held_out)]
    chosen = set(held)
    fit = [s for i, s in enumerate(data.samples) if i not in chosen]
    return CalibrationSet(fit, data.source), CalibrationSet([data.samples[i] for i in held], data.source)


class _Session:
    """onnxruntime on a float or QDQ model with graph optimizations off (so a QDQ model runs as
    float arithmetic on the dequantized values, not onnxruntime's own int8 kernels)."""

    def __init__(self, proto: Any) -> None:
        from mlpc.mixed.sensitivity import unoptimized_session

        self.session = unoptimized_session(proto)
        self.outputs = [o.name for o in self.session.get_outputs()]

    def run(self, sample: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(self.outputs, {k: np.asarray(v) for k, v in sample.items()})


def held_out_error(
    quantized: Any, reference: list[list[np.ndarray]], held: Any, metric: str = "mse"
) -> float:
    """The output perturbation of a fake-quant onnx-ir model (run through its QDQ form) against
    the float outputs `reference` on the `held` samples: Σ error / Σ normaliser of
    `sensitivity.output_error` (relative noise power for "mse", mean KL for "kl")."""
    from mlpc.mixed.sensitivity import output_error
    from mlpc.quant.export import to_qdq

    session = _Session(to_qdq(quantized))
    err = norm = 0.0
    for sample, ref in zip(held.samples, reference):
        e, n = output_error(metric, ref, session.run(sample))
        err, norm = err + e, norm + n
    return err / norm if norm > 0 else 0.0


def select_end_to_end(
    model: Any,
    calibration: Any,
    problem: Problem,
    budgets: dict[str, float],
    *,
    count: int = 4,
    metric: str = "mse",
    act_bits: int = 8,
    held_out: int = DEFAULT_HELD_OUT,
    engine: str = "reference",
    input_shapes: Any = None,
    example_inputs: Any = None,
    options: dict[str, Any] | None = None,
) -> EndToEndChoice:
    """Measure the ILP's `count` best allocations end to end on held-out calibration samples and
    keep the best (see the module doc). `model` is a float model `mlpc.quantize` takes (path,
    ModelProto, onnx-ir Model); `engine` runs the quantize pass's calibration ("reference" or
    "tvm"); `input_shapes`/`example_inputs` as for `mlpc.compile`; `options` further top-level
    quantize-config keys for every candidate (e.g. {"sequential": False}, as the build will have). Raises QuantizationError for an infeasible budget (as `solve`) or too few samples."""
    if options and "layers" in options:
        raise QuantizationError("select_end_to_end: `options` must not set 'layers' (each candidate's "
                                "allocation sets them)")
    import onnx_ir as ir

    from mlpc.frontend import load_model
    from mlpc.mixed.api import layer_config
    from mlpc.quant.api import quantize
    from mlpc.quant.calibration import CalibrationSet

    if count < 1:
        raise QuantizationError(f"end-to-end candidates {count}: give at least 1")
    loaded = load_model(model, input_shapes=input_shapes, example_inputs=example_inputs)
    float_model = loaded.model
    data = CalibrationSet.load(calibration, float_model.graph)
    fit, held = split_calibration(data, held_out)
    float_session = _Session(ir.serde.serialize_model(float_model))
    reference = [float_session.run(sample) for sample in held.samples]
    measured = []
    for rank, alloc in enumerate(ranked(problem, budgets, count)):
        copy = ir.serde.deserialize_model(ir.serde.serialize_model(float_model))
        qmodel = quantize(
            copy,
            f"w8a{act_bits}",
            fit,
            config={**layer_config(alloc.bits, act_bits), **(options or {})},
            engine=engine,
        )
        error = held_out_error(qmodel, reference, held, metric)
        measured.append(Measured(alloc, rank, error))
        logger.info(
            "end-to-end candidate %d %s: Ω=%.4g, held-out %s %.4g",
            rank,
            alloc.bits,
            alloc.omega,
            metric,
            error,
        )
    best = min(measured, key=lambda m: (m.held_out, m.rank))
    if best.rank:
        logger.info(
            "end-to-end check: ILP candidate %d %s beats the ILP's answer on the held-out samples (%.4g < %.4g)",
            best.rank,
            best.allocation.bits,
            best.held_out,
            measured[0].held_out,
        )
    return EndToEndChoice(best.allocation, measured, metric, len(held), len(fit))
