"""FIFO depths between the streaming units, sized from the schedule as FINN's
InsertAndSetFIFODepths does:

    1. every FIFO deep: two inferences' worth of the beats it carries, so nothing upstream waits;
    2. Verilator runs the design with the input throttled to one inference per II cycles (the
       steady state of the slowest unit; a full-rate source would pile up in front of it and
       measure the run's length, not the schedule's need);
    3. each FIFO's depth = the depth that run needed (`fifo_need`: one more than its occupancy
       before its fullest push), at least MIN_DEPTH.

With those depths no FIFO ever refuses a beat of the throttled run, so the sized design repeats
the deep one cycle for cycle; `compile_graph` checks that (same completion cycles, no refused
beat) and that the full-rate and stalled runs stay bit-exact at the model's II. FINN rounds
depths ≤ 32 up to 32 because its Q_srl FIFOs are SRL32 shift registers that cost the same at
any depth up to 32; mlpc's FIFO is a LUT-RAM/register ring whose pointers grow with the depth,
so only FINN's minimum of 2 (a register stage that decouples the handshakes) is kept.

The old rule (one input vector's beats + 2) remains the depth of a design that is not simulated,
and the report compares the two (`fifo_sizing`).

    >>> rule_depths(net.layers, folds)          # doctest: +SKIP
    [6, 10, 0, 34]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlpc.backends.fpga.folding import Folding
from mlpc.backends.fpga.network import MvauLayer, Network, Unit
from mlpc.errors import LoweringError

logger = logging.getLogger(__name__)

MIN_DEPTH = 2  # FINN's: a two-entry FIFO still decouples producer and consumer
DEEP_INFERENCES = 2  # the deep FIFOs of the sizing run hold this many inferences of their stream
SIZING_ROUNDS = 3  # deepen a FIFO that still refused beats this many times before giving up
FIFO_SIZED = (
    "simulated (FINN's InsertAndSetFIFODepths): deep FIFOs, Verilator with the input throttled to one "
    "inference per II cycles, each depth = what that run needed (at least 2)"
)
FIFO_RULE = (
    "the fixed rule (one input vector's beats + 2): the design was not simulated, so nothing was measured"
)


def fifo_name(index: int) -> str:
    """The instance name of the FIFO in front of unit `index` (as in the top module and the
    testbench's `fifo_peak`)."""
    return f"fifo{index}"


def rule_depths(layers: list[Unit], folds: list[Folding]) -> list[int]:
    """The fixed rule: the FIFO in front of each MVAU holds one input vector's beats (MW/SIMD)
    plus two (0: a max pool, which has no FIFO)."""
    return [
        layer.mw // fold.simd + 2 if isinstance(layer, MvauLayer) else 0 for layer, fold in zip(layers, folds)
    ]


def stream_beats(layer: MvauLayer, fold: Folding) -> int:
    """Beats per inference into an MVAU's FIFO: (MW/SIMD)·vectors (a convolution's windows)."""
    return layer.mw // fold.simd * layer.vectors


def fifo_width(layer: MvauLayer, fold: Folding) -> int:
    """Bits of one FIFO word: SIMD input elements."""
    return fold.simd * layer.in_bits[0]


def deep_depths(layers: list[Unit], folds: list[Folding], inferences: int = DEEP_INFERENCES) -> list[int]:
    """The sizing run's depths: `inferences` inferences of each FIFO's stream (+ MIN_DEPTH), and
    never less than the rule's."""
    rule = rule_depths(layers, folds)
    return [
        max(r, inferences * stream_beats(la, f) + MIN_DEPTH) if isinstance(la, MvauLayer) else 0
        for la, f, r in zip(layers, folds, rule)
    ]


def sized_depths(layers: list[Unit], need: dict[str, int]) -> list[int]:
    """Each MVAU's FIFO at the depth the sizing run needed, at least MIN_DEPTH (0: no FIFO).

    >>> from mlpc.backends.fpga.network import PoolLayer
    >>> pool = PoolLayer("pool0", "p", 1, 2, 2, 2, 2, (0, 3))
    >>> sized_depths([pool, MvauLayer("mvau1", "m", None, (0, 3), (-1, 1), (0, 3), (0, 3), 1)],
    ...              {"fifo1": 1})
    [0, 2]
    """
    out = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, MvauLayer):
            out.append(0)
            continue
        name = fifo_name(i)
        if name not in need:
            raise LoweringError(
                f"FIFO sizing: the simulation reported no occupancy for {name} (in front of "
                f"{layer.name}); this is an mlpc bug — please report it with the model"
            )
        out.append(max(MIN_DEPTH, int(need[name])))
    return out


def size_fifos(
    net: Network, folds: list[Folding], period: int, work: Path, write_design: Any, run: Any
) -> tuple[list[int], dict[str, Any]]:
    """Size every FIFO from a simulation of the design with deep FIFOs and the input throttled to
    one inference per `period` cycles. `write_design(depths, dir) -> sources` writes the design
    with the given depths and its testbench into `dir`; `run(dir, sources, period) -> result` runs
    it (sim.simulate). Returns the sized depths and the deep run's result. Raises LoweringError
    if a FIFO keeps refusing beats however deep it is (the design is slower than `period`)."""
    deep = deep_depths(net.layers, folds)
    for attempt in range(SIZING_ROUNDS + 1):
        d = work / f"deep{attempt}"
        sources = write_design(deep, d)
        result = run(d, sources, period)
        if not result["passed"]:
            raise LoweringError(
                f"the design with deep FIFOs disagrees with the reference interpreter in the sizing run "
                f"({result['mismatches']} mismatches); this is an mlpc bug — please report it with the model"
            )
        full = [
            i
            for i, layer in enumerate(net.layers)
            if isinstance(layer, MvauLayer) and result["fifo_blocked"].get(fifo_name(i), 0)
        ]
        if not full:
            depths = sized_depths(net.layers, result["fifo_need"])
            logger.info(
                "fpga: FIFO depths from the schedule: %s (rule: %s)", depths, rule_depths(net.layers, folds)
            )
            return depths, {**result, "deep_depths": deep}
        logger.info(
            "fpga: FIFO sizing: %s full at depth %s; deepening",
            [fifo_name(i) for i in full],
            [deep[i] for i in full],
        )
        deep = [2 * dp if i in full else dp for i, dp in enumerate(deep)]
    names = ", ".join(
        f"{fifo_name(i)} (in front of {net.layers[i].name}, depth {deep[i] // 2})" for i in full
    )
    raise LoweringError(
        f"FIFO sizing: {names} still refused beats with the input throttled to one inference per "
        f"{period} cycles (the model's II): the design runs slower than its cycle model; this is an "
        "mlpc bug — please report it with the model"
    )


def sizing_report(
    layers: list[Unit],
    folds: list[Folding],
    depths: list[int],
    method: str,
    deep_run: dict[str, Any] | None = None,
    period: int | None = None,
) -> dict[str, Any]:
    """The report's `fifo_sizing`: per FIFO its width, the rule's depth, the depth the sizing run
    needed and the chosen one, with their bits; the totals and the bits saved against the rule."""
    rule = rule_depths(layers, folds)
    rows = []
    for i, (layer, fold) in enumerate(zip(layers, folds)):
        if not isinstance(layer, MvauLayer):
            continue
        width = fifo_width(layer, fold)
        name = fifo_name(i)
        rows.append(
            {
                "name": name,
                "feeds": layer.name,
                "width_bits": width,
                "rule_depth": rule[i],
                "needed": None if deep_run is None else deep_run["fifo_need"].get(name),
                "peak_occupancy": None if deep_run is None else deep_run["fifo_peak"].get(name, [None])[0],
                "depth": depths[i],
                "bits": depths[i] * width,
                "rule_bits": rule[i] * width,
            }
        )
    bits = sum(r["bits"] for r in rows)
    rule_bits = sum(r["rule_bits"] for r in rows)
    out: dict[str, Any] = {
        "method": method,
        "min_depth": MIN_DEPTH,
        "fifos": rows,
        "bits": bits,
        "rule_bits": rule_bits,
        "bits_saved": rule_bits - bits,
    }
    if deep_run is not None:
        out["sizing_run"] = {
            "throttle_period_cycles": period,
            "inferences": len(deep_run["done"]),
            "deep_depths": [
                dp for dp, la in zip(deep_run["deep_depths"], layers) if isinstance(la, MvauLayer)
            ],
            "done_cycles": deep_run["done"],
            "ii_cycles": deep_run["ii_cycles"],
        }
    return out
