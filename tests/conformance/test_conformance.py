"""CI guard of the ONNX node conformance baseline: every case that passed stays passing.

`make conformance` sweeps all 1,884 cases (about 8 min with 2 workers, most of it spent on the
refused and failing cases and on worker start-up). The cases that pass are cheap (about 0.17 s each
in one process: small graphs, small TVM builds), so every one of the baseline's passing cases
runs here, each as its own test item: 989 items in 2 min 54 s on one core (measured). A case that passed in
baseline.json and does not pass now fails with the stage and reason; a baseline case that no
longer exists (an onnx upgrade renamed it) fails too, asking to regenerate the baseline. Cases
refused only because a shape-defining input is fed at run time, whose probe with those inputs
frozen as constants passed, are re-checked the same way.
"""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import FROZEN_PASS, PASS, UNSUPPORTED, collect_cases, compare, run_case  # noqa: E402

BASELINE = json.loads((HERE / "baseline.json").read_text())
PASSING = sorted(name for name, status in BASELINE["cases"].items() if status == PASS)
# Refused because shape-defining inputs are fed at run time, but right when they are constants.
FROZEN = sorted(name for name, why in BASELINE["reasons"].items() if f"[{FROZEN_PASS} " in why)


@pytest.fixture(scope="module")
def cases():
    """Every node case, by name (built once: about 8 s)."""
    return {c.name: c for c in collect_cases()}


def test_baseline_names_every_case(cases):
    missing = sorted(set(BASELINE["cases"]) - set(cases))
    new = sorted(set(cases) - set(BASELINE["cases"]))
    assert not missing and not new, (
        f"the onnx node cases changed ({len(missing)} gone, e.g. {missing[:3]}; {len(new)} new, "
        f"e.g. {new[:3]}): run `make conformance` to regenerate tests/conformance/baseline.json"
    )


@pytest.mark.parametrize("name", PASSING)
def test_baseline_pass_still_passes(cases, name):
    if name not in cases:
        pytest.fail(f"{name} passed in baseline.json but no longer exists; run `make conformance`")
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NumPy warnings of the reference kernels on inf/nan cases
            result = run_case(cases[name])
    finally:
        logging.disable(logging.NOTSET)
    assert result.status == PASS, (
        f"{name} ({result.op}) regressed: {result.status} at {result.stage}: {result.message}"
    )


@pytest.mark.parametrize("name", FROZEN)
def test_frozen_input_probe_still_passes(cases, name):
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run_case(cases[name])
    finally:
        logging.disable(logging.NOTSET)
    assert result.status == UNSUPPORTED and f"[{FROZEN_PASS} " in result.message, (
        f"{name} ({result.op}) with its run-time shape inputs frozen regressed: {result.status} at "
        f"{result.stage}: {result.message}"
    )


def test_compare_rejects_wrong_values_dtypes_and_shapes():
    e = [np.array([1.0, 2.0], np.float32), np.array([1, 2], np.int64)]
    assert compare(e, [e[0].copy(), e[1].copy()], 1e-3, 1e-7) is None
    assert "Max absolute difference" in compare(e, [e[0] + 0.1, e[1]], 1e-3, 1e-7)
    assert "1 of 2 elements differ" in compare(e, [e[0], np.array([1, 3], np.int64)], 1e-3, 1e-7)
    assert "dtype float64" in compare(e, [e[0].astype(np.float64), e[1]], 1e-3, 1e-7)
    assert "dtype int32" in compare(e, [e[0], e[1].astype(np.int32)], 1e-3, 1e-7)
    assert "shape (1, 2)" in compare(e, [e[0][None], e[1]], 1e-3, 1e-7)
    assert "1 outputs, expected 2" in compare(e, [e[0]], 1e-3, 1e-7)
    nan = np.array([np.nan], np.float32)
    assert compare([nan], [nan.copy()], 1e-3, 1e-7) is None


def test_compare_handles_ml_dtypes_floats_with_nan():
    import ml_dtypes

    e = np.array([0.5, np.nan, np.inf], ml_dtypes.float8_e4m3fn)
    assert compare([e], [e.copy()], 1e-3, 1e-7) is None
    assert "Max absolute difference" in compare([e], [np.array([0.75, np.nan, np.inf], e.dtype)], 1e-3, 1e-7)
    assert compare([e], [np.array([0.5, 0.5, np.inf], e.dtype)], 1e-3, 1e-7) is not None  # NaN lost
    b = np.array([1.0, np.nan], ml_dtypes.bfloat16)
    assert compare([b], [b.copy()], 1e-3, 1e-7) is None
    assert "dtype float32" in compare([b], [b.astype(np.float32)], 1e-3, 1e-7)


def test_compare_accepts_numpy_scalar_expectations():
    # test_matmul_1d_1d stores its 0-d expected output as np.float32, not as an array.
    assert compare([np.float32(2.5)], [np.array(2.5, np.float32)], 1e-3, 1e-7) is None
    assert compare([np.float32(2.5)], [np.array(3.5, np.float32)], 1e-3, 1e-7) is not None
