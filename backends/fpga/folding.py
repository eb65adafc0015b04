"""Folding: how many processing elements (PE) and SIMD lanes each MVAU gets, and what it costs.

Cycle model (FINN's): an MVAU with MH outputs and MW inputs, folded to PE × SIMD, spends

    cycles = (MH / PE) · (MW / SIMD) · vectors

per inference; the pipeline's initiation interval is its slowest node, so
throughput = f_clk / max(cycles). Resources start from FINN's published MVAU formulas
(FINN-R, Blott et al. 2018, as in FINN's `lut_estimation`/`bram_estimation`: LUTs
300 + 1.1·PE·(multipliers + adder tree + accumulator + thresholds + comparators) + the
distributed weight memory; RAMB18 by the weight memory's width and depth) — the report sets
them against yosys' measured counts.

A convolution's sliding window emits SIMD channels of one pixel per beat for each of the
KH·KW window positions of every output pixel, so it needs OH·OW·KH·KW·C/SIMD cycles (and reads
H·W·C/SIMD beats); its MVAU's SIMD must divide C_in (FINN's constraint too). A max pool takes
one beat of PE channels per cycle: H·W·C/PE. Neither is ever slower than the MVAU feeding or fed
by it, so the folding is chosen for the MVAUs; their cycles enter the II all the same.

`choose_folding` picks, per layer, the cheapest PE × SIMD (divisors of MH and MW, or C_in for a
convolution) meeting the cycle budget f_clk / fps; `load_folding` reads a FINN-style JSON override:

    {"mvau0": {"PE": 16, "SIMD": 49, "ram_style": "block"}, "mvau1": {"PE": 8, "SIMD": 8}}

    >>> mvau_cycles(mh=64, mw=784, pe=16, simd=49)       # finn-examples' TFC layer 0
    64
"""
from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlpc.backends.fpga.network import ConvWindow, MvauLayer, PoolLayer
from mlpc.backends.fpga.resources import lut_from_terms
from mlpc.errors import InputError
from mlpc.targets.fpga import FpgaPart

logger = logging.getLogger(__name__)

BRAM_BITS_THRESHOLD = 16384  # weight memories of at least this many bits go to block RAM
UTILIZATION_BUDGET = 0.8  # the share of the part the automatic folding may fill
_FINN_NAME = re.compile(r"^(?:MVAU(?:_hls|_rtl)?|MatrixVectorActivation|StreamingFCLayer_Batch)_(\d+)$")


@dataclass(frozen=True)
class Folding:
    """One layer's folding: PE (outputs in parallel), SIMD (inputs in parallel), weight RAM style."""

    pe: int
    simd: int
    ram_style: str = "auto"  # "block", "distributed" or "auto" (decided by size)


def mvau_cycles(mh: int, mw: int, pe: int, simd: int, vectors: int = 1) -> int:
    """Cycles an MVAU needs per inference: (MH/PE)·(MW/SIMD)·vectors."""
    return (mh // pe) * (mw // simd) * vectors


def window_cycles(window: ConvWindow, simd: int) -> int:
    """Cycles of a sliding-window generator per inference: the larger of the beats it emits,
    OH·OW·KH·KW·C/SIMD, and the beats it reads, H·W·C/SIMD (one of each per cycle)."""
    folds = window.channels // simd
    return max(window.out_h * window.out_w * window.k_h * window.k_w, window.in_h * window.in_w) * folds


def pool_cycles(pool: PoolLayer, pe: int) -> int:
    """Cycles of a streaming max pool per inference: H·W·C/PE (one input beat per cycle)."""
    return pool.in_h * pool.in_w * pool.channels // pe


def layer_cycles(layer: MvauLayer, fold: Folding) -> int:
    """Cycles of an MVAU per inference (with its sliding window for a convolution: the slower one)."""
    cycles = mvau_cycles(layer.mh, layer.mw, fold.pe, fold.simd, layer.vectors)
    return max(cycles, window_cycles(layer.window, fold.simd)) if layer.window is not None else cycles


def window_rows(window: ConvWindow) -> int:
    """Rows the sliding window's line buffer holds: a power of two ≥ 2·KH + SH, so the rows of the
    next windows (and of the next image) arrive while the current ones are read."""
    need = 2 * window.k_h + window.stride_h
    return 1 << (need - 1).bit_length()


def window_buffer_bits(window: ConvWindow, simd: int, bits: int) -> int:
    """Bits of the sliding window's line buffer (rows × W × C, W and C/SIMD padded to powers of two
    so the address is a bit concatenation)."""
    wpad = 1 << max(0, (window.in_w - 1).bit_length())
    fpad = 1 << max(0, (window.channels // simd - 1).bit_length())
    return window_rows(window) * wpad * fpad * simd * bits


def divisors(n: int) -> list[int]:
    """The divisors of n, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def ram_style(layer: MvauLayer, fold: Folding) -> str:
    """Where the weights live: FINN-style `block` RAM for large memories, LUTs (`distributed`) else."""
    if fold.ram_style != "auto":
        return fold.ram_style
    bits = layer.mw * layer.mh * layer.w_bits[0]
    return "block" if bits >= BRAM_BITS_THRESHOLD else "distributed"


def lut_terms(layer: MvauLayer, fold: Folding, fifo_depth: int | None = None) -> dict[str, float]:
    """The terms of an MVAU's LUT estimate (with its sliding window for a convolution), each as
    FINN's formula writes it; the estimate is Σ coefficient·term (resources.py: FINN's published
    coefficients, or those fitted against yosys for the part's family).

    - mvau: 1 (FINN's 300-LUT constant per layer)
    - compute: 1.1·PE·(multipliers + adder tree + accumulator)
    - thresholds: 1.1·PE·(threshold memory + comparators)
    - weights: the distributed weight memory, PE·SIMD·WB·⌈WMEM/64⌉ (0 in block RAM)
    - adders: PE·SIMD·AB — mlpc's MVAU sums its SIMD products in a chain of accumulator-wide (AB)
      adders per PE where FINN's formula counts a tree of (WB + IB)-bit ones (not in FINN's formula)
    - buffers: the bits of the input FIFO (`fifo_depth`, default the fixed rule) and of the input
      buffer reread for later neuron folds, / 64 (LUT-RAM; not in FINN's formula)
    - window, window_buffer: a sliding window's 1 and its line buffer bits / 64 (below block RAM)
    """
    p, q = fold.pe, fold.simd
    w, a = layer.w_bits[0], layer.in_bits[0]
    wmem = (layer.mh // p) * (layer.mw // q)
    mult_luts = q * (2 * math.ceil((w + a) / 6) - 1) * (w + a)
    addertree_luts = (w + a) * (2 * q - 1)
    acc_bits = w + a + math.ceil(math.log2(max(layer.mw, 2)))
    thr_luts = comp_luts = 0
    if layer.has_activation:
        b = layer.out_bits[0]
        thr_luts = (2**b - 1) * acc_bits * math.ceil((layer.mh // p) / 64)
        comp_luts = (2**b - 1) * acc_bits
    sf, nf = layer.mw // q, layer.mh // p
    depth = sf + 2 if fifo_depth is None else fifo_depth
    terms = {"mvau": 1.0, "compute": 1.1 * p * (mult_luts + addertree_luts + acc_luts_of(acc_bits)),
             "thresholds": 1.1 * p * (thr_luts + comp_luts),
             "weights": float(p * q * w * math.ceil(wmem / 64)) if ram_style(layer, fold) == "distributed" else 0.0,
             "adders": float(p * q * layer.acc_bits), "buffers": (depth + (sf if nf > 1 else 0)) * q * a / 64}
    if layer.window is not None:
        buf = window_buffer_bits(layer.window, q, a)
        terms.update({"window": 1.0, "window_buffer": 0.0 if buf >= BRAM_BITS_THRESHOLD else buf / 64})
    return terms


def pool_lut_terms(pool: PoolLayer, pe: int) -> dict[str, float]:
    """The terms of a max pool's LUT estimate: pool (1: its control) and pool_logic (PE
    comparators and muxes, one LUT per bit each, and the row of partial maxima as LUT-RAM)."""
    bits = pool.in_bits[0]
    return {"pool": 1.0, "pool_logic": 2 * pe * bits + pool.out_w * pool.channels * bits / 64}


def estimate_resources(layer: MvauLayer, fold: Folding, family: str | None = None,
                       fifo_depth: int | None = None) -> dict[str, int]:
    """Analytic LUT/FF/BRAM36/DSP of one MVAU (with its sliding window; multipliers in LUTs, so DSP 0).

    LUT: Σ coefficient·`lut_terms` — FINN's formula with its published coefficients, corrected
    against yosys for `family` (xc7, xcup) where resources.py has a fit. FF (not in FINN's models)
    counts the registers of mlpc's MVAU and its input FIFO's pointers.
    """
    p, q = fold.pe, fold.simd
    w, a = layer.w_bits[0], layer.in_bits[0]
    wmem = (layer.mh // p) * (layer.mw // q)
    style = ram_style(layer, fold)
    lut = lut_from_terms(lut_terms(layer, fold, fifo_depth), family)
    bram18 = _bram18(p * q * w, wmem) if style == "block" else 0
    sf, nf = layer.mw // q, layer.mh // p
    cb = math.ceil(math.log2(max(sf, nf) + 1)) + 1
    aw = math.ceil(math.log2(wmem + 1)) + 1
    depth = sf + 2 if fifo_depth is None else fifo_depth
    fifo_pointers = 3 * (math.ceil(math.log2(depth)) + 1)
    # counters, pipeline registers, accumulators, output register, the input buffer (reread for
    # NF > 1) and the input FIFO's pointers; the weight ROM's output register is left out (yosys
    # merges it into the ROM logic)
    ff = (4 * cb + aw + 5 + q * a + p * layer.acc_bits + p * layer.out_bits[0]
          + (sf * q * a if nf > 1 else 0) + fifo_pointers)
    res = {"LUT": lut, "FF": ff, "BRAM36": math.ceil(bram18 / 2), "DSP": 0}
    if layer.window is not None:
        for k, v in window_resources(layer.window, fold.simd, a).items():
            if k != "LUT":  # the window's LUTs are lut_terms'
                res[k] += v
    return res


def window_resources(window: ConvWindow, simd: int, bits: int) -> dict[str, int]:
    """mlpc's estimate of a sliding-window generator: FINN's 300-LUT base for the control, the
    line buffer as LUT-RAM (64 bits per LUT) below BRAM_BITS_THRESHOLD and RAMB18s above it, and
    its registers (counters, the output word)."""
    buf = window_buffer_bits(window, simd, bits)
    width = simd * bits
    depth = buf // width
    block = buf >= BRAM_BITS_THRESHOLD
    lut = 300 + (0 if block else math.ceil(buf / 64))
    bram18 = _bram18(width, depth) if block else 0
    cw = max(window.in_h, window.in_w, window.out_h, window.out_w).bit_length() + 2
    ff = 12 * cw + width + 2
    return {"LUT": lut, "FF": ff, "BRAM36": math.ceil(bram18 / 2), "DSP": 0}


def pool_resources(pool: PoolLayer, pe: int, family: str | None = None) -> dict[str, int]:
    """mlpc's estimate of a streaming max pool: LUT from `pool_lut_terms` (40 LUTs of control
    plus the comparators and the row buffer, or the fit for `family`), FF its counters and output word."""
    bits = pool.in_bits[0]
    lut = lut_from_terms(pool_lut_terms(pool, pe), family)
    cw = max(pool.in_h, pool.in_w).bit_length() + 2
    ff = 6 * cw + pe * bits + 1
    return {"LUT": lut, "FF": ff, "BRAM36": 0, "DSP": 0}


def acc_luts_of(acc_bits: int) -> int:
    """FINN's accumulator LUTs: one per accumulator bit."""
    return acc_bits


def _bram18(width: int, depth: int) -> int:
    """RAMB18s for a width × depth memory in simple dual-port mode (FINN's bram_estimation)."""
    if width == 1:
        return math.ceil(depth / 16384)
    if width == 2:
        return math.ceil(depth / 8192)
    if width <= 4:
        return math.ceil(depth / 4096) * math.ceil(width / 4)
    if width <= 9:
        return math.ceil(depth / 2048) * math.ceil(width / 9)
    if width <= 18 or depth > 512:
        return math.ceil(depth / 1024) * math.ceil(width / 18)
    return math.ceil(depth / 512) * math.ceil(width / 36)


def total_resources(layers: list[MvauLayer], folds: list[Folding], family: str | None = None) -> dict[str, int]:
    """The sum of `estimate_resources` over the layers (LUTs corrected for `family` where fitted)."""
    total = {"LUT": 0, "FF": 0, "BRAM36": 0, "DSP": 0}
    for layer, fold in zip(layers, folds):
        for k, v in estimate_resources(layer, fold, family).items():
            total[k] += v
    return total


def _fits(res: dict[str, int], part: FpgaPart, budget: float = UTILIZATION_BUDGET,
          limits: dict[str, float] | None = None) -> str | None:
    """None if `res` fits `budget` of the part and the absolute `limits` ({"LUT": n, ...}), else
    the first resource that does not."""
    for k, cap in part.resources().items():
        if res[k] > budget * cap:
            return f"{k} {res[k]:,} > {budget:.0%} of {cap:,}"
    for k, cap in (limits or {}).items():
        if res[k] > cap:
            return f"{k} {res[k]:,} > the limit {cap:,.0f}"
    return None


def choose_folding(layers: list[MvauLayer], part: FpgaPart, fps: float | None,
                   overrides: dict[str, Folding] | None = None,
                   limits: dict[str, float] | None = None) -> list[Folding]:
    """Fold each layer as little as needed for `fps` at the part's clock (the cheapest
    PE·SIMD meeting the cycle budget; SIMD preferred over PE on ties, as FINN's SetFolding does).
    Without `fps`, the fastest folding that fits the part: layers are unfolded, slowest first,
    while the estimate stays within UTILIZATION_BUDGET and the absolute `limits` ({"LUT": n,
    "BRAM36": m}: e.g. mixed precision's resource budget). `overrides` (by layer name) are kept as given.

    Raises InputError naming the layer when `fps` cannot be met at any folding, and naming the
    resource when the result does not fit the part.
    """
    overrides = overrides or {}
    family = part.yosys_family
    clock = part.clock_mhz * 1e6
    if fps is not None:
        if not fps > 0:
            raise InputError(f"--fps {fps}: give a positive number of inferences per second")
        budget = math.floor(clock / fps)
        folds = []
        for layer in layers:
            if layer.name in overrides:
                folds.append(overrides[layer.name])
                continue
            fastest = layer_cycles(layer, Folding(layer.mh, layer.simd_limit))
            if fastest > budget:
                best = clock / fastest
                raise InputError(
                    f"--fps {fps:g} cannot be met on {part.part} at {part.clock_mhz:g} MHz: layer {layer.name} "
                    f"({layer.source}, {layer.mw}x{layer.mh}) needs at least {fastest} cycle(s) per "
                    f"inference even fully unfolded, i.e. at most {best:,.0f} FPS; lower --fps")
            folds.append(cheapest_folding(layer, budget))
        total = total_resources(layers, folds, family)
        problem = _fits(total, part, 1.0)
        if problem is not None:
            worst = max(range(len(layers)), key=lambda i: estimate_resources(layers[i], folds[i], family)["LUT"])
            raise InputError(
                f"--fps {fps:g} needs more than {part.part} has ({problem}; the largest layer is "
                f"{layers[worst].name}, {layers[worst].mw}x{layers[worst].mh} at PE={folds[worst].pe} "
                f"SIMD={folds[worst].simd}); lower --fps or choose a larger part")
        return folds
    folds = [overrides.get(layer.name, Folding(1, 1)) for layer in layers]
    problem = _fits(total_resources(layers, folds, family), part, 1.0)
    if problem is not None:
        worst = max(range(len(layers)), key=lambda i: sum(estimate_resources(layers[i], folds[i], family).values()))
        raise InputError(
            f"the network does not fit {part.part} even fully folded ({problem}; the largest layer is "
            f"{layers[worst].name}, {layers[worst].mw}x{layers[worst].mh}); use fewer bits, a smaller network "
            "or a larger part")
    while True:
        order = sorted((i for i, layer in enumerate(layers) if layer.name not in overrides),
                       key=lambda i: -layer_cycles(layers[i], folds[i]))
        if not order:
            return folds
        i = order[0]
        nxt = _next_step(layers[i], folds[i])
        if nxt is None:
            return folds
        trial = folds[:i] + [nxt] + folds[i + 1:]
        if _fits(total_resources(layers, trial, family), part, limits=limits) is not None:
            return folds
        folds = trial


def cheapest_folding(layer: MvauLayer, cycles: int) -> Folding:
    """The cheapest PE × SIMD (smallest product; more SIMD on ties, as FINN's SetFolding) with
    which `layer` needs at most `cycles` cycles per inference; fully unfolded when none does."""
    options = [(pe * simd, -simd, pe, simd) for pe in divisors(layer.mh) for simd in divisors(layer.simd_limit)
               if layer_cycles(layer, Folding(pe, simd)) <= cycles]
    if not options:
        return Folding(layer.mh, layer.simd_limit)
    _, _, pe, simd = min(options)
    return Folding(pe, simd)


def _next_step(layer: MvauLayer, fold: Folding) -> Folding | None:
    """The next faster folding: SIMD up to MW first, then PE."""
    bigger = [d for d in divisors(layer.simd_limit) if d > fold.simd]
    if bigger:
        return Folding(fold.pe, bigger[0], fold.ram_style)
    bigger = [d for d in divisors(layer.mh) if d > fold.pe]
    return Folding(bigger[0], fold.simd, fold.ram_style) if bigger else None


def load_folding(source: str | Path | dict[str, Any], layers: list[MvauLayer]) -> dict[str, Folding]:
    """Read a folding override (a JSON file or dict) into {layer name: Folding}.

    Keys are mlpc's layer names (`mvau0`, …), the IntegerMatMul node names, or FINN's
    (`MVAU_hls_0`, `MatrixVectorActivation_0`, `StreamingFCLayer_Batch_0`); "Defaults" is ignored.
    Raises InputError naming the file and the key for unknown layers, and PE/SIMD that do not
    divide MH/MW.
    """
    where = f"--folding {source}" if not isinstance(source, dict) else "folding"
    if isinstance(source, dict):
        data = source
    else:
        try:
            data = json.loads(Path(source).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{where}: cannot read it as JSON ({e})") from e
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a JSON object keyed by layer name")
    by_name = {layer.name: layer for layer in layers}
    by_name.update({layer.source: layer for layer in layers})
    result: dict[str, Folding] = {}
    for key, spec in data.items():
        if key == "Defaults":
            continue
        m = _FINN_NAME.match(key)
        layer = by_name.get(key) or (layers[int(m.group(1))] if m and int(m.group(1)) < len(layers) else None)
        if layer is None:
            known = ", ".join(layer.name for layer in layers)
            raise InputError(f"{where}: unknown layer {key!r}; the layers are {known}")
        if not isinstance(spec, dict):
            raise InputError(f"{where}: layer {key!r}: expected an object like {{\"PE\": 4, \"SIMD\": 8}}")
        pe, simd = spec.get("PE", 1), spec.get("SIMD", 1)
        simd_dim = "MW" if layer.window is None else "C_in"
        for what, v, n, dim in (("PE", pe, layer.mh, "MH"), ("SIMD", simd, layer.simd_limit, simd_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1 or n % v:
                why = "; a convolution's window streams SIMD channels of one pixel per beat" if dim == "C_in" else ""
                raise InputError(f"{where}: layer {key!r}: {what}={v!r} must divide {dim}={n} "
                                 f"(choose one of {divisors(n)}{why})")
        style = spec.get("ram_style", "auto")
        if style not in ("auto", "block", "distributed"):
            raise InputError(f"{where}: layer {key!r}: ram_style {style!r} is not auto, block or distributed")
        result[layer.name] = Folding(pe, simd, style)
    return result


def folding_to_json(layers: list[MvauLayer], folds: list[Folding]) -> dict[str, Any]:
    """The folding as a FINN-style JSON object (what `load_folding` reads back)."""
    return {layer.name: {"PE": f.pe, "SIMD": f.simd, "ram_style": ram_style(layer, f)}
            for layer, f in zip(layers, folds)}


__all__ = ["Folding", "asdict", "cheapest_folding", "choose_folding", "estimate_resources", "layer_cycles",
           "load_folding", "mvau_cycles", "pool_cycles", "pool_resources", "window_cycles"]
