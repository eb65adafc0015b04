"""Hardware-aware mixed precision (HAWQ-style): per-layer sensitivity, per-layer costs on the
target (size, BOPs, latency; LUTs and BRAM on FPGAs), HAWQ-V3's integer linear program for the
bits, an end-to-end check of its best allocations on held-out calibration samples, the Pareto
frontier, and an HTML report.

    >>> import mlpc
    >>> result = mlpc.mixed_precision("model.onnx", "calib.npz", target="x86", size_budget=0.15,
    ...                               report="mixed.html")  # doctest: +SKIP
    >>> result.config()   # the quantize pass's per-layer config  # doctest: +SKIP
"""

from __future__ import annotations

from mlpc.mixed.api import (
    MixedPrecisionResult,
    build_problem,
    compute_sensitivity,
    layer_config,
    mixed_precision,
)
from mlpc.mixed.fpga_cost import fpga_costs
from mlpc.mixed.ilp import Allocation, Problem, pareto, ranked, solve
from mlpc.mixed.layers import LayerInfo, fake_quant_weight
from mlpc.mixed.refine import EndToEndChoice, select_end_to_end
from mlpc.mixed.sensitivity import Sensitivity, data_sensitivity

__all__ = [
    "Allocation",
    "EndToEndChoice",
    "LayerInfo",
    "MixedPrecisionResult",
    "Problem",
    "Sensitivity",
    "build_problem",
    "compute_sensitivity",
    "data_sensitivity",
    "fake_quant_weight",
    "fpga_costs",
    "layer_config",
    "mixed_precision",
    "pareto",
    "ranked",
    "select_end_to_end",
    "solve",
]
