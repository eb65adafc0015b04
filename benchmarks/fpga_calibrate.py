"""Correct mlpc's FPGA LUT model against yosys: synthesize small single-unit designs (an MVAU, a
convolution's sliding window + MVAU, a max pool + MVAU) over a sweep of sizes, bit widths and
foldings, and fit the coefficients of the model's terms to yosys' counts.

    python benchmarks/fpga_calibrate.py                 # synthesizes what is not measured yet, fits
    python benchmarks/fpga_calibrate.py --refit         # refit the stored samples (no synthesis)

The model (backends/fpga/folding.py `lut_terms`, resources.py) is FINN's MVAU LUT formula split into
its terms — 300 per layer, 1.1·PE·(multipliers + adder tree + accumulator), 1.1·PE·(threshold
memory + comparators), the distributed weight memory — plus what it leaves out (mlpc's MVAU adds its
SIMD products in a chain of accumulator-wide adders, PE·SIMD·AB, where FINN's formula counts a tree of
(WB + IB)-bit ones; the LUT-RAM of the input FIFO and input buffer; a sliding window's control and line
buffer; a pool's logic). The adder term was added after a first fit without it (FINN's terms only)
left 20 % mean error on the sweep and −32 % on the UNSW-NB15 MLP; with it the sweep's error is 9 %. FINN's
coefficients are 300, 1, 1, 1 (and mlpc's own counts for the rest); the fit scales them, per yosys
family and per group of terms (GROUPS: FINN's datapath bracket stays one term), by non-negative
least squares on the relative error (scipy.optimize.nnls with each design's row divided by its
yosys count), so small and large designs weigh alike. A group no sample exercises keeps FINN's.

Each design is built by the same RTL generator as `mlpc compile` (random weights and thresholds;
the FIFO at the fixed rule's depth), and yosys `synth_xilinx` counts it. Measured samples are kept
in benchmarks/results/fpga_calibration.json (a rerun only synthesizes new sweep points); the fit,
with its provenance, goes to backends/fpga/resource_model.json, which `mlpc compile` reads. The
designs of benchmarks/fpga.py (TFC, the UNSW-NB15 MLP, the digits CNN) are not in the sweep: they
are the held-out check of the fit.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

logger = logging.getLogger("benchmarks.fpga_calibrate")

ROOT = Path(__file__).resolve().parent.parent
# MVAUs: (MW, MH, weight/activation bits, PE, SIMD); the first eight are session 13's sweep.
MVAU_SWEEP = [(32, 16, 2, 1, 8), (32, 16, 2, 4, 8), (64, 32, 2, 2, 16), (64, 32, 2, 8, 4), (64, 16, 4, 2, 8),
              (32, 32, 4, 4, 4), (128, 16, 2, 1, 32), (16, 16, 2, 16, 16),
              (64, 64, 2, 2, 8), (128, 64, 2, 8, 16), (32, 64, 4, 2, 4), (256, 32, 2, 4, 16)]
# convolutions: (C_in, H=W, K, stride, pad, C_out, bits, PE, SIMD)
CONV_SWEEP = [(4, 8, 3, 1, 1, 8, 2, 2, 4), (8, 6, 3, 1, 0, 16, 2, 4, 2), (2, 12, 3, 1, 1, 4, 4, 1, 2),
              (16, 4, 2, 2, 0, 8, 2, 8, 16)]
# max pool (C, H=W, k) in front of an MVAU reading its output (MH, PE) at SIMD = C
POOL_SWEEP = [(8, 8, 2, 10, 1), (4, 16, 2, 4, 2)]
SAMPLES = Path(__file__).resolve().parent / "results" / "fpga_calibration.json"
MODEL = ROOT / "backends" / "fpga" / "resource_model.json"
FAMILIES = ("xc7", "xcup")


def _mvau(mw: int, mh: int, bits: int, seed: int, name: str = "mvau0") -> Any:
    from mlpc.backends.fpga.network import MvauLayer

    rng = np.random.default_rng(seed)
    wmax = (1 << (bits - 1)) - 1
    w = rng.integers(-wmax, wmax + 1, size=(mh, mw))
    amax = (1 << bits) - 1
    acc = (int(-(np.abs(w).sum(1) * amax).max()), int((np.abs(w).sum(1) * amax).max()))
    thr = np.sort(rng.integers(acc[0], acc[1] + 1, size=(mh, amax)), axis=1)
    return MvauLayer(name=name, source="sweep", weights=w, in_range=(0, amax), w_range=(-wmax, wmax),
                     out_range=(0, amax), acc_range=acc, vectors=1, thresholds=thr)


def specs() -> list[dict[str, Any]]:
    """Every sweep design as a JSON-able spec (kind, sizes, folding, seed)."""
    out = [{"kind": "mvau", "mw": mw, "mh": mh, "bits": b, "pe": pe, "simd": simd, "seed": i}
           for i, (mw, mh, b, pe, simd) in enumerate(MVAU_SWEEP)]
    out += [{"kind": "conv", "c": c, "hw": hw, "k": k, "stride": s, "pad": pad, "m": m, "bits": b, "pe": pe,
             "simd": simd, "seed": 100 + i} for i, (c, hw, k, s, pad, m, b, pe, simd) in enumerate(CONV_SWEEP)]
    out += [{"kind": "pool", "c": c, "hw": hw, "k": k, "mh": mh, "pe": pe, "bits": 2, "seed": 200 + i}
            for i, (c, hw, k, mh, pe) in enumerate(POOL_SWEEP)]
    return out


def design(spec: dict[str, Any]) -> tuple[Any, list[Any]]:
    """The Network and foldings of one sweep design."""
    from mlpc.backends.fpga.folding import Folding
    from mlpc.backends.fpga.network import ConvWindow, Network, PoolLayer

    if spec["kind"] == "mvau":
        layer = _mvau(spec["mw"], spec["mh"], spec["bits"], spec["seed"])
        return Network([layer], "x", "y"), [Folding(spec["pe"], spec["simd"])]
    if spec["kind"] == "conv":
        c, hw, k, s, pad = spec["c"], spec["hw"], spec["k"], spec["stride"], spec["pad"]
        out = (hw + 2 * pad - k) // s + 1
        layer = _mvau(k * k * c, spec["m"], spec["bits"], spec["seed"])
        layer.window = ConvWindow(channels=c, in_h=hw, in_w=hw, k_h=k, k_w=k, stride_h=s, stride_w=s,
                                  pads=(pad, pad, pad, pad), pad_value=0, out_h=out, out_w=out)
        layer.vectors = out * out
        return Network([layer], "x", "y"), [Folding(spec["pe"], spec["simd"])]
    c, hw, k = spec["c"], spec["hw"], spec["k"]
    amax = (1 << spec["bits"]) - 1
    pool = PoolLayer(name="pool0", source="sweep", channels=c, in_h=hw, in_w=hw, k_h=k, k_w=k, in_range=(0, amax))
    layer = _mvau(c * (hw // k) ** 2, spec["mh"], spec["bits"], spec["seed"], name="mvau1")
    return Network([pool, layer], "x", "y"), [Folding(c, c), Folding(spec["pe"], c)]


def terms(spec: dict[str, Any]) -> dict[str, float]:
    """The LUT model's terms summed over the design's units (the current model's)."""
    from mlpc.backends.fpga.folding import lut_terms, pool_lut_terms
    from mlpc.backends.fpga.network import PoolLayer

    net, folds = design(spec)
    total: dict[str, float] = {}
    for unit, fold in zip(net.layers, folds):
        t = pool_lut_terms(unit, fold.pe) if isinstance(unit, PoolLayer) else lut_terms(unit, fold)
        for k, v in t.items():
            total[k] = total.get(k, 0.0) + v
    return total


def _key(spec: dict[str, Any]) -> str:
    return json.dumps(spec, sort_keys=True)


def measure(spec: dict[str, Any], family: str, work: Path) -> dict[str, Any]:
    """Synthesize one sweep design for `family`; its yosys LUT/FF and seconds."""
    from mlpc.backends.fpga.rtl import write_rtl
    from mlpc.backends.fpga.synth import synthesize

    net, folds = design(spec)
    d = work / f"{family}_{spec['kind']}_{spec['seed']}"
    sources = [p.name for p in write_rtl(net, folds, d)]
    synth = synthesize(d, sources, family)
    logger.info("%s %s: LUT %d FF %d (%.0f s)", family, spec, synth["LUT"], synth["FF"], synth["seconds"])
    return {"spec": spec, "LUT": synth["LUT"], "FF": synth["FF"], "seconds": synth["seconds"], "tool": synth["tool"]}


# terms fitted with one shared factor on FINN's (or mlpc's) coefficients: FINN's datapath bracket
# 1.1·PE·(multipliers + adder tree + accumulator + thresholds + comparators) stays one term (fitted
# apart, the sweep's 2-/4-bit thresholds gave them no weight at all, which would make an 8-bit
# activation's 255 comparators free), and a window or pool keeps the shape of mlpc's count.
GROUPS = (("mvau",), ("compute", "thresholds"), ("weights",), ("adders",), ("buffers",),
          ("window", "window_buffer"), ("pool", "pool_logic"))


def fit(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Non-negative least squares of yosys' LUTs on the model's term groups (GROUPS), on the
    relative error: each group's factor scales FINN's coefficients of its terms (`adders` and
    `buffers`, which FINN does not count, start at 1: one LUT per adder bit, per 64 buffer bits). A group no sample exercises keeps factor 1.
    Returns the per-term coefficients, the group factors and the errors of the fit and of FINN's
    coefficients on the samples."""
    from scipy.optimize import nnls

    from mlpc.backends.fpga.resources import FINN_COEFFICIENTS

    start = {**FINN_COEFFICIENTS, "adders": 1.0, "buffers": 1.0}  # terms FINN does not count start at 1
    names = list(FINN_COEFFICIENTS)
    t = np.array([[terms(s["spec"]).get(k, 0.0) for k in names] for s in samples])
    y = np.array([s["LUT"] for s in samples], float)
    cols = np.stack([t[:, [names.index(k) for k in g]] @ np.array([start[k] for k in g]) for g in GROUPS], 1)
    used = [j for j in range(len(GROUPS)) if np.any(cols[:, j] > 0)]
    factors = np.ones(len(GROUPS))
    x, _ = nnls(cols[:, used] / y[:, None], np.ones(len(y)))
    factors[used] = x
    coef = {k: round(float(start[k] * factors[j]), 4) for j, g in enumerate(GROUPS) for k in g}
    fitted = t @ np.array([coef[k] for k in names])
    finn = t @ np.array([FINN_COEFFICIENTS[k] for k in names])
    return {"coefficients": coef,
            "group_factors": {"+".join(g): round(float(f), 4) for g, f in zip(GROUPS, factors)},
            "fitted_groups": ["+".join(GROUPS[j]) for j in used], "samples": len(samples),
            "mean_abs_rel_error_fitted": round(float(np.mean(np.abs(fitted / y - 1))), 4),
            "max_abs_rel_error_fitted": round(float(np.max(np.abs(fitted / y - 1))), 4),
            "mean_abs_rel_error_finn": round(float(np.mean(np.abs(finn / y - 1))), 4),
            "finn_ratio_range": [round(float((finn / y).min()), 3), round(float((finn / y).max()), 3)]}


def _commit() -> str:
    proc = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


def _load_samples() -> dict[str, list[dict[str, Any]]]:
    """Stored samples per family; the old (session-13) format's MVAU rows are converted."""
    if not SAMPLES.exists():
        return {}
    data = json.loads(SAMPLES.read_text())
    out: dict[str, list[dict[str, Any]]] = {}
    for family, d in data.get("families", {}).items():
        rows = []
        for r in d.get("samples", []):
            if "spec" not in r:  # session 13: MVAU rows keyed by their sizes, seed = sweep index
                spec5 = (r["mw"], r["mh"], r["bits"], r["pe"], r["simd"])
                r = {"spec": {"kind": "mvau", "mw": r["mw"], "mh": r["mh"], "bits": r["bits"], "pe": r["pe"],
                              "simd": r["simd"], "seed": MVAU_SWEEP.index(spec5)},
                     "LUT": r["LUT"], "FF": r["FF"], "seconds": r["seconds"], "tool": "yosys 0.23 (session 13)"}
            rows.append(r)
        out[family] = rows
    return out


def _save(family: str, rows: list[dict[str, Any]]) -> None:
    """Store one family's samples (re-reading the file: one process per family may run at once)."""
    data = json.loads(SAMPLES.read_text()) if SAMPLES.exists() else {}
    families = {f: d for f, d in data.get("families", {}).items() if "samples" in d and all("spec" in r for r in d["samples"])}
    families[family] = {"samples": rows}
    SAMPLES.write_text(json.dumps({"source": "benchmarks/fpga_calibrate.py", "families": families}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--refit", action="store_true", help="fit the stored samples only (no synthesis)")
    parser.add_argument("--no-model", action="store_true", help="measure only; leave resource_model.json alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stored = _load_samples()
    families = args.families.split(",")
    for family in families:
        rows = stored.setdefault(family, [])
        have = {_key(r["spec"]) for r in rows}
        todo = [] if args.refit else [s for s in specs() if _key(s) not in have]
        with tempfile.TemporaryDirectory() as tmp:
            for spec in todo:
                rows.append(measure(spec, family, Path(tmp)))
                _save(family, rows)
        _save(family, rows)
    if args.no_model:
        return 0
    model = json.loads(MODEL.read_text()) if MODEL.exists() else {"families": {}}
    for family in families:
        result = fit(stored[family])
        tools = sorted({r.get("tool", "") for r in stored[family]})
        model["families"][family] = {**result, "yosys": tools}
        print(family, json.dumps({k: v for k, v in result.items()}, indent=1))
    model.update({"source": "benchmarks/fpga_calibrate.py (fit), benchmarks/results/fpga_calibration.json (samples)",
                  "commit": _commit(), "date": datetime.date.today().isoformat(),
                  "method": "LUT = Σ coefficient·term (backends/fpga/folding.py lut_terms, pool_lut_terms); "
                            "non-negative least squares on the relative error over single-unit designs "
                            "synthesized by yosys synth_xilinx"})
    MODEL.write_text(json.dumps(model, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
