"""FPGA resources per layer and weight width, for the ILP's LUT and BRAM constraints.

On an FPGA dataflow design weight bits do not change a layer's cycles (FINN's cycle model is
(MH/PE)·(MW/SIMD), whatever the bits) but its LUTs and block RAM: the multipliers, adder tree
and accumulator grow with w + a bits, and the weight memory (distributed LUT RAM below 16 Kbit,
RAMB18 pairs above) with w. Each layer is costed as the FPGA backend will build it — one MVAU
(backends/fpga), its resources from the backend's own model (`folding.estimate_resources`,
FINN's LUT/BRAM formulas) at the folding the build will use: with `fps`, the cheapest PE × SIMD
meeting f_clk / fps (bits-independent, as `choose_folding` picks it); without, fully folded
(PE = SIMD = 1), the smallest design, which the backend then unfolds only as far as the part
allows. Every layer but the last ends in thresholds for `act_bits`-bit outputs; the last streams
its accumulator (as the backend builds an MLP). The accumulator is sized for the worst case
(MW · max|x| · max|w|), at least what the build's real weights need, so a design the ILP admits
is never larger than its estimate says on that count.

    >>> costs = fpga_costs(layers, get_target("fpga/xc7z020"), (2, 4, 8))   # doctest: +SKIP
    >>> costs["lut"][0]   # LUTs of layer 0 at 2, 4, 8 bits  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from mlpc.errors import QuantizationError
from mlpc.mixed.layers import LayerInfo

logger = logging.getLogger(__name__)

COSTS = {"lut": "LUT", "bram": "BRAM36"}  # ILP cost name → the backend's resource key


def mvau_shape(layer: LayerInfo) -> tuple[int, int, int]:
    """(MH outputs, MW inputs, vectors per inference) of the MVAU computing `layer`: a Gemm/MatMul
    is MH × MW once per input row; a convolution is FINN's sliding-window MVAU, MH = output
    channels, MW = input channels / groups × kernel size, once per output pixel.

        >>> mvau_shape(LayerInfo("fc", "gemm", 640, 10, 640, {"weight_shape": [10, 64],
        ...                       "attributes": {"transB": 1}}))
        (10, 64, 1)
    """
    shape = [int(d) for d in layer.signature.get("weight_shape") or []]
    if not shape:
        raise QuantizationError(f"layer {layer.name}: no weight shape recorded; re-run the sensitivity")
    if layer.kind in ("conv", "linear") or len(shape) > 2:
        mh, mw = shape[0], int(np.prod(shape[1:]))
    elif layer.kind == "gemm" and layer.signature.get("attributes", {}).get("transB", 0):
        mh, mw = shape
    else:
        mw, mh = shape[0], shape[-1]
    vectors = max(1, layer.macs // max(1, mh * mw))
    return mh, mw, vectors


def _mvau(layer: LayerInfo, w_bits: int, act_bits: int, last: bool) -> Any:
    """A stand-in MvauLayer of `layer`'s shape at `w_bits` (narrow symmetric weights, as the
    quantize pass stores them), unsigned `act_bits`-bit inputs and outputs, worst-case accumulator."""
    from mlpc.backends.fpga.network import MvauLayer

    mh, mw, vectors = mvau_shape(layer)
    w_max = 2 ** (w_bits - 1) - 1
    x_max = 2**act_bits - 1
    acc = mw * x_max * w_max
    return MvauLayer(
        name=layer.name,
        source=layer.name,
        weights=np.zeros((mh, mw), np.int8),
        in_range=(0, x_max),
        w_range=(-w_max, w_max),
        out_range=(0, x_max) if not last else (-acc, acc),
        acc_range=(-acc, acc),
        vectors=vectors,
        thresholds=None if last else np.zeros((mh, x_max), np.int64),
    )


def fpga_costs(
    layers: list[LayerInfo], target: Any, bits: tuple[int, ...], act_bits: int = 8, fps: float | None = None
) -> dict[str, list[list[float]]]:
    """{"lut": [[LUTs of layer i at bits[j]]], "bram": [[BRAM36 …]]} for an `fpga/*` target (see
    the module doc). QuantizationError for a width the streaming units do not take (> 8 bits)."""
    from mlpc.backends.fpga.folding import Folding, cheapest_folding, estimate_resources
    from mlpc.backends.fpga.network import MAX_BITS
    from mlpc.targets.fpga import fpga_part

    if max(bits) > MAX_BITS or act_bits > MAX_BITS:
        raise QuantizationError(f"FPGA streaming units take at most {MAX_BITS}-bit weights and activations")
    part = fpga_part(target)
    cycles = math.floor(part.clock_mhz * 1e6 / fps) if fps else None
    out: dict[str, list[list[float]]] = {name: [] for name in COSTS}
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        rows: dict[str, list[float]] = {name: [] for name in COSTS}
        for b in bits:
            unit = _mvau(layer, b, act_bits, last)
            fold = cheapest_folding(unit, cycles) if cycles is not None else Folding(1, 1)
            res = estimate_resources(unit, fold, part.yosys_family)
            for name, key in COSTS.items():
                rows[name].append(float(res[key]))
        for name in COSTS:
            out[name].append(rows[name])
    return out


def part_capacity(target: Any) -> dict[str, float]:
    """{"lut": LUTs, "bram": BRAM36} of the target's part: the default budgets on FPGA targets."""
    from mlpc.targets.fpga import fpga_part

    part = fpga_part(target)
    return {"lut": float(part.lut), "bram": float(part.bram36)}


def parse_resource_budget(value: Any, capacity: float, option: str) -> float | None:
    """A resource budget: a fraction (≤ 1) of the part's `capacity` or an absolute count.
    InputError naming `option` otherwise.

        >>> parse_resource_budget("0.5", 53200, "--lut-budget"), parse_resource_budget(4000, 53200, "--lut-budget")
        (26600.0, 4000.0)
    """
    from mlpc.errors import InputError

    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as e:
        raise InputError(f"{option} {value!r}: give a fraction of the part (e.g. 0.5) or a count") from e
    if not number > 0:
        raise InputError(f"{option} {value!r} must be positive")
    return number * capacity if number <= 1.0 else number
