"""`mlpc.mixed_precision`: sensitivity → costs on the target → the ILP → a per-layer config.

>>> import mlpc
>>> result = mlpc.mixed_precision("model.onnx", "calib.npz", target="x86", size_budget=0.15)  # doctest: +SKIP
>>> result.bits                       # {"conv1": 8, "conv2": 4, "fc1": 2, "fc2": 4}  # doctest: +SKIP
>>> mlpc.compile("model.onnx", quantize="w8a8", calibration="calib.npz",
...              quant_config=result.config())  # doctest: +SKIP
"""

from __future__ import annotations

import glob
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpc.errors import InputError, QuantizationError
from mlpc.mixed.ilp import Allocation, Problem, pareto, solve
from mlpc.mixed.layers import DEFAULT_BITS, STORAGE_SLOTS, check_bits, fp32_bytes, target_bits
from mlpc.mixed.sensitivity import Sensitivity

logger = logging.getLogger(__name__)

METHODS = ("data", "hessian")
_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3, "gib": 1024**3}
_TIME = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_size_budget(value: Any, fp32_size: int) -> float | None:
    """Bytes from a size budget: a fraction of the fp32 model (≤ 1, e.g. 0.15), a byte count, or
    a string with a unit ("40KiB", "1.5MB"). InputError otherwise.

        >>> parse_size_budget("2KiB", 10_000), parse_size_budget(0.5, 10_000)
        (2048.0, 5000.0)
    """
    if value is None:
        return None
    number, unit = _quantity(value, r"[a-z]*")
    if not number > 0 or (unit and unit not in _UNITS):
        raise InputError(
            f"--size-budget {value!r}: give a fraction of the fp32 size (e.g. 0.15), bytes, "
            "or a size with a unit (e.g. 40KiB, 1.5MB)"
        )
    if not unit and number <= 1.0:
        return number * fp32_size
    return number * _UNITS.get(unit, 1)


def _quantity(value: Any, units: str) -> tuple[float, str]:
    """(number, unit) of a budget such as "40KiB" or "2ms" (lower-cased unit matching the
    regular expression `units`, "" when absent); the number is NaN when `value` does not parse."""
    m = re.fullmatch(rf"([0-9.eE+-]+)\s*({units})", str(value).strip().lower())
    try:
        return (float(m.group(1)), m.group(2) or "") if m else (float("nan"), "")
    except ValueError:
        return float("nan"), ""


def parse_latency_budget(value: Any) -> float | None:
    """Seconds from a latency budget: "2ms", "500us", "0.01s" or a number of milliseconds.

    >>> parse_latency_budget("2ms"), parse_latency_budget(0.5)
    (0.002, 0.0005)
    """
    if value is None:
        return None
    number, unit = _quantity(value, r"(?:s|ms|us|µs|ns)?")
    if not number > 0:
        raise InputError(f"--latency-budget {value!r}: give a time such as 2ms, 500us or 0.01s")
    return number * _TIME[unit or "ms"]


def parse_bops_budget(value: Any, w8a8_bops: int) -> float | None:
    """BOPs from a budget: a fraction (≤ 1) of the model's BOPs at w8a8, or an absolute count."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise InputError(
            f"--bops-budget {value!r}: give a fraction of the w8a8 BOPs (e.g. 0.5) or a count"
        ) from e
    if not number > 0:
        raise InputError(f"--bops-budget {value!r} must be positive")
    return number * w8a8_bops if number <= 1.0 else number


def layer_config(bits: dict[str, int], act_bits: int = 8) -> dict[str, Any]:
    """The quantize pass's per-layer config for an allocation: scheme w8a<act> with each layer's
    weight bits set by an exact-name rule (glob characters in names escaped).

        >>> layer_config({"fc1": 4})
        {'scheme': 'w8a8', 'layers': {'fc1': {'weight': {'bits': 4}}}}
    """
    return {
        "scheme": f"w8a{act_bits}",
        "layers": {glob.escape(name): {"weight": {"bits": int(b)}} for name, b in bits.items()},
    }


@dataclass
class MixedPrecisionResult:
    """The chosen allocation, the problem it solved and the Pareto frontier (Ω against size and,
    with a latency model, latency). `config()` is what the quantize pass takes."""

    allocation: Allocation
    sensitivity: Sensitivity
    budgets: dict[str, float]
    fp32_bytes: int
    target: str
    act_bits: int = 8
    pareto_size: list[Allocation] = field(default_factory=list)
    pareto_latency: list[Allocation] = field(default_factory=list)
    uniform: dict[int, dict[str, float]] = field(default_factory=dict)
    end_to_end: Any = None  # mlpc.mixed.refine.EndToEndChoice when candidates were measured

    @property
    def bits(self) -> dict[str, int]:
        """Weight bits per layer."""
        return self.allocation.bits

    def config(self) -> dict[str, Any]:
        """The per-layer quantization config (see `layer_config`)."""
        return layer_config(self.bits, self.act_bits)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready summary (stored in a mixed-precision artifact's manifest)."""
        return {
            "target": self.target,
            "budgets": self.budgets,
            "fp32_bytes": self.fp32_bytes,
            "method": self.sensitivity.method,
            "metric": self.sensitivity.metric,
            "candidate_bits": list(self.sensitivity.bits),
            "allocation": self.allocation.to_json(),
            "size_fraction": self.allocation.costs["size"] / self.fp32_bytes,
            "uniform": {str(b): v for b, v in self.uniform.items()},
            "pareto_size": [a.to_json() for a in self.pareto_size],
            "pareto_latency": [a.to_json() for a in self.pareto_latency],
            **({"end_to_end": self.end_to_end.to_json()} if self.end_to_end is not None else {}),
        }


def build_problem(
    sens: Sensitivity,
    latency: Any = None,
    act_bits: int = 8,
    bits: Any = None,
    ideal_size: bool = False,
    fpga: Any = None,
    fps: float | None = None,
) -> Problem:
    """The ILP of a sensitivity result: size, BOPs and (with a `latency(layer, bits)` function)
    latency per (layer, bits); `bits` restricts the candidates (default: the sensitivity's).
    Sizes count weights as mlpc stores them (3-bit in 4-bit slots), or at exactly b bits with
    `ideal_size` (HAWQ's convention). With an `fpga/*` target as `fpga`, also LUTs and BRAM36 per
    (layer, bits) from the FPGA backend's resource model at the folding `fps` implies
    (`mlpc.mixed.fpga_cost`)."""
    candidates = check_bits(bits) if bits is not None else sens.bits
    missing = sorted(set(candidates) - set(sens.bits))
    if missing:
        raise QuantizationError(f"no sensitivity measured at bits {missing}; measured: {list(sens.bits)}")
    layers = sens.layers
    costs = {
        "size": [
            [layer.size_bytes(b, None if ideal_size else STORAGE_SLOTS) for b in candidates]
            for layer in layers
        ],
        "bops": [[layer.bops(b, act_bits) for b in candidates] for layer in layers],
    }
    if latency is not None:
        costs["latency"] = [[latency(layer, b) for b in candidates] for layer in layers]
    if fpga is not None:
        from mlpc.mixed.fpga_cost import fpga_costs

        costs.update(fpga_costs(layers, fpga, candidates, act_bits, fps))
    omega = [[sens.omega[layer.name][b] for b in candidates] for layer in layers]
    fixed_latency = latency.fixed(layers) if hasattr(latency, "fixed") else 0.0
    return Problem(
        [layer.name for layer in layers],
        candidates,
        omega,
        costs,
        {"size": 4.0 * sens.other_params, "bops": 0.0, "latency": fixed_latency, "lut": 0.0, "bram": 0.0},
    )


def mixed_precision(
    model: Any,
    calibration: Any = None,
    *,
    target: Any = "host",
    bits: Any = None,
    size_budget: Any = None,
    bops_budget: Any = None,
    latency_budget: Any = None,
    lut_budget: Any = None,
    bram_budget: Any = None,
    fps: float | None = None,
    method: str = "data",
    metric: str = "mse",
    rounding: str = "pass",
    sensitivity: Sensitivity | str | Path | None = None,
    labels: Any = None,
    samples: int | None = 64,
    act_bits: int = 8,
    input_shapes: Any = None,
    example_inputs: Any = None,
    report: str | Path | None = None,
    pareto_points: int = 16,
    ideal_size: bool = False,
    end_to_end: int = 1,
    engine: str = "reference",
) -> MixedPrecisionResult:
    """Choose weight bits per layer of `model` for `target` under the budgets (HAWQ-V3's ILP).

    `size_budget`: fraction of the fp32 size (≤ 1), bytes, or "40KiB"; `bops_budget`: fraction of
    the w8a8 BOPs or a count; `latency_budget`: "2ms" etc. (x86: per-layer latencies measured
    here; ARM/CUDA: analytic). On `fpga/*` targets every allocation must fit the part (LUTs and
    BRAM36 from the FPGA backend's resource model, `mlpc.mixed.fpga_cost`, at the folding `fps`
    implies, fully folded without it), and `lut_budget`/`bram_budget` (a fraction of the part or a
    count) tighten that; weights are sized at exactly b bits there. `bits`: candidate widths (default: those of `sensitivity`, else `target_bits` of the target: 2/4/8 on CPUs and GPUs). `method` "data" (output perturbation on
    `calibration`, `metric` "mse"/"kl", `rounding` "pass" — each layer quantized by the quantize
    pass itself (GPTQ, bias correction), the weights a build will have — or "nearest", faster but
    it overrates the 2-bit error of layers GPTQ repairs) or "hessian" (Hutchinson trace; `labels` optional, the
    float model's predictions otherwise); or pass a precomputed `sensitivity` (a Sensitivity or
    a JSON file from `mlpc sensitivity`). Sizes count weights as stored (3-bit ones in 4-bit
    slots), at exactly b bits with `ideal_size`. `report` writes an HTML report with the Pareto frontier.
    `end_to_end` > 1 measures the ILP's that many best allocations end to end (the whole model
    quantized by the quantize pass, calibration `engine` "reference" or "tvm") on held-out
    calibration samples and keeps the best (`mlpc.mixed.refine`): the sum of per-layer Ω ignores
    how layers' errors interact; the ILP's own answer is one of the candidates.
    Raises QuantizationError for an infeasible budget, naming the smallest feasible value.

        >>> r = mixed_precision("m.onnx", {"x": x}, target="x86", size_budget=0.15)  # doctest: +SKIP
        >>> mlpc.compile("m.onnx", quantize="w8a8", calibration={"x": x}, quant_config=r.config())  # doctest: +SKIP
    """
    from mlpc.targets import get_target

    tgt = get_target(target)
    if not isinstance(end_to_end, int) or end_to_end < 1:
        raise InputError(f"--mixed-candidates {end_to_end!r}: give a count ≥ 1 (1: the ILP's answer alone)")
    if isinstance(sensitivity, (str, Path)):
        sensitivity = Sensitivity.load(sensitivity)
    if bits is None:
        bits = sensitivity.bits if sensitivity is not None else target_bits(tgt.kind)
    candidates = check_bits(bits)
    if sensitivity is None:
        if calibration is None:
            raise InputError(
                "mixed precision needs calibration data (--calib FILE.npz) or a sensitivity file"
            )
        sensitivity = compute_sensitivity(
            model,
            calibration,
            method=method,
            metric=metric,
            rounding=rounding,
            bits=candidates,
            labels=labels,
            samples=samples,
            input_shapes=input_shapes,
            example_inputs=example_inputs,
        )
    fp32 = fp32_bytes(sensitivity.layers, sensitivity.other_params)
    w8a8 = sum(layer.bops(8, act_bits) for layer in sensitivity.layers)
    budgets = {
        "size": parse_size_budget(size_budget, fp32),
        "bops": parse_bops_budget(bops_budget, w8a8),
        "latency": parse_latency_budget(latency_budget),
    }
    fpga = None
    if tgt.kind == "fpga":
        from mlpc.mixed.fpga_cost import parse_resource_budget, part_capacity

        fpga, ideal_size = tgt, True
        capacity = part_capacity(tgt)
        for kind, value in (("lut", lut_budget), ("bram", bram_budget)):
            given = parse_resource_budget(value, capacity[kind], f"--{kind}-budget")
            budgets[kind] = capacity[kind] if given is None else min(given, capacity[kind])
    elif lut_budget is not None or bram_budget is not None or fps is not None:
        raise InputError(
            f"--lut-budget/--bram-budget/--fps apply to FPGA targets (fpga/xc7z020, ...), not {tgt.name}"
        )
    budgets = {k: v for k, v in budgets.items() if v is not None}
    latency = None
    if "latency" in budgets or (report is not None and tgt.kind in ("arm", "cuda")):
        from mlpc.mixed.latency import latency_model

        latency = latency_model(tgt, act_bits)
    problem = build_problem(sensitivity, latency, act_bits, candidates, ideal_size, fpga, fps)
    allocation = solve(problem, budgets)
    check = None
    if end_to_end > 1:
        from mlpc.mixed.refine import select_end_to_end

        if calibration is None:
            raise InputError(
                "checking mixed-precision candidates end to end needs calibration data (--calib)"
            )
        check = select_end_to_end(
            model,
            calibration,
            problem,
            budgets,
            count=end_to_end,
            metric=sensitivity.metric if sensitivity.metric in ("mse", "kl") else "mse",
            act_bits=act_bits,
            engine=engine,
            input_shapes=input_shapes,
            example_inputs=example_inputs,
        )
        allocation = check.allocation
    uniform = {b: problem.totals([j] * len(problem.layers)) for j, b in enumerate(problem.bits)}
    result = MixedPrecisionResult(
        allocation,
        sensitivity,
        budgets,
        fp32,
        tgt.name,
        act_bits,
        pareto(problem, "size", pareto_points, budgets),
        pareto(problem, "latency", pareto_points, budgets) if latency else [],
        uniform,
        check,
    )
    logger.info(
        "mixed precision for %s: %s (%.1f%% of fp32, Ω=%.3g)",
        tgt.name,
        allocation.bits,
        100.0 * allocation.costs["size"] / fp32,
        allocation.omega,
    )
    if report is not None:
        from mlpc.mixed.report import write_report

        write_report(result, report)
    return result


def compute_sensitivity(
    model: Any,
    calibration: Any,
    *,
    method: str = "data",
    metric: str = "mse",
    rounding: str = "pass",
    bits: Any = DEFAULT_BITS,
    labels: Any = None,
    samples: int | None = 64,
    input_shapes: Any = None,
    example_inputs: Any = None,
) -> Sensitivity:
    """Per-layer sensitivity of `model` by `method` ("data", with `metric` and `rounding`, or
    "hessian"); see mlpc.mixed.sensitivity and mlpc.mixed.hessian."""
    if method == "data":
        from mlpc.mixed.sensitivity import data_sensitivity

        return data_sensitivity(
            model,
            calibration,
            bits=bits,
            metric=metric,
            rounding=rounding,
            samples=samples,
            input_shapes=input_shapes,
            example_inputs=example_inputs,
        )
    if method == "hessian":
        from mlpc.mixed.hessian import hessian_sensitivity

        return hessian_sensitivity(
            model,
            calibration,
            labels=labels,
            bits=bits,
            samples=samples,
            input_shapes=input_shapes,
            example_inputs=example_inputs,
        )
    raise InputError(f"sensitivity method {method!r} is not one of {', '.join(METHODS)}")
