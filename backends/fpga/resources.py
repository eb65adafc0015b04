"""The LUT model's coefficients: FINN's published ones, and those fitted against yosys.

An estimate is Σ coefficient·term over the terms `folding.lut_terms`/`pool_lut_terms` give
(FINN's MVAU formula split into its parts, plus mlpc's LUT-RAM buffers, sliding windows and
pools). `FINN_COEFFICIENTS` reproduce FINN's formula (and mlpc's own counts for the units FINN's
formula does not cover); `resource_model.json`, beside this module, holds coefficients per yosys
family fitted by `benchmarks/fpga_calibrate.py` to yosys' counts of small single-unit designs,
with its provenance (yosys version, commit, samples, errors). A family without a fit uses FINN's.

    >>> lut_from_terms({"mvau": 1.0, "compute": 100.0}, None)
    400
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from mlpc.errors import TargetError

logger = logging.getLogger(__name__)

MODEL_FILE = Path(__file__).parent / "resource_model.json"

# FINN's formula (300 + 1.1·PE·(…) + the distributed weights; the 1.1·PE is inside the terms) and
# mlpc's counts for what it leaves out: mlpc's accumulator-wide adder chain and LUT-RAM buffers were
# not counted, a window is 300 + its
# LUT-RAM line buffer, a pool 40 + comparators and row buffer.
FINN_COEFFICIENTS: dict[str, float] = {
    "mvau": 300.0,
    "compute": 1.0,
    "thresholds": 1.0,
    "weights": 1.0,
    "adders": 0.0,
    "buffers": 0.0,
    "window": 300.0,
    "window_buffer": 1.0,
    "pool": 40.0,
    "pool_logic": 1.0,
}


@functools.lru_cache(maxsize=None)
def fitted_model() -> dict[str, Any]:
    """The fitted model file's content ({"families": {family: {"coefficients": …}}, provenance}),
    or {} when the package has none."""
    if not MODEL_FILE.exists():
        logger.warning("%s is missing: LUT estimates use FINN's uncorrected coefficients", MODEL_FILE)
        return {}
    try:
        return json.loads(MODEL_FILE.read_text())
    except (OSError, ValueError) as e:
        raise TargetError(f"{MODEL_FILE}: unreadable resource model ({e}); reinstall mlpc or regenerate it "
                          "with benchmarks/fpga_calibrate.py --refit") from e


def coefficients(family: str | None) -> dict[str, float]:
    """The LUT coefficients for a yosys family: the fitted ones, else FINN's (family None: FINN's)."""
    fit = fitted_model().get("families", {}).get(family or "", {}).get("coefficients")
    return {**FINN_COEFFICIENTS, **fit} if fit else dict(FINN_COEFFICIENTS)


def lut_from_terms(terms: dict[str, float], family: str | None) -> int:
    """Σ coefficient·term, rounded: the LUT estimate of one unit."""
    coef = coefficients(family)
    return int(round(sum(coef[k] * v for k, v in terms.items())))


def is_corrected(family: str | None) -> bool:
    """True when `family` has coefficients fitted against yosys."""
    return bool(fitted_model().get("families", {}).get(family or "", {}).get("coefficients"))
