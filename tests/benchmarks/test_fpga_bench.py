"""The FPGA benchmark: its README section, its data, and one real (slow) build."""
from __future__ import annotations

import numpy as np
import pytest

from benchmarks import fpga


def _res(est, meas):
    return {"estimate": est, "measured": meas, "error": None if not meas else est / meas - 1}


def test_render_lists_every_network_with_its_figures():
    r = {"part": "xc7z020clg400-1", "folding": "finn-examples",
         "layers": [{"pe": 16, "simd": 49}, {"pe": 8, "simd": 8}], "ii_cycles": 64, "ii_cycles_measured": 64.0,
         "throughput_fps": 1562500.0, "latency_us_measured": 2.5,
         "resources": {"LUT": _res(5000, 4000), "FF": _res(100, 200), "BRAM36": _res(22, 22.5), "DSP": _res(0, 0)},
         "simulation": {"mismatches": 0}, "accuracy_fake_quant": 91.25, "yosys_seconds": 300.0}
    data = {"machine": {"cpu": "cpu", "cores": 2, "versions": {"mlpc": "0"}, "date": "d"}, "networks": {"tfc-w2a2": r}}
    text = fpga.render(data)
    assert ("| tfc-w2a2 | xc7z020clg400-1 | finn-examples | 16/49, 8/8 | 64 | 64 | 1,562,500 | 2.50 | "
            "4,000 (5,000) | 200 (100) | 22.5 (22) | 0 | 0 | 91.2 | 300 |") in text
    assert "estimate error against yosys LUT +25 %, FF -50 %; pipeline latency 2.50 µs on chip" in text


def test_tfc_data_is_784_wide_and_the_folding_divides_it():
    sizes, x, y, binary = fpga._data("tfc-w2a2")
    assert sizes == [784, 64, 64, 64, 10] and x.shape[1] == 784 and not binary
    assert np.isclose(x.max(), 1.0) and set(np.unique(y)) == set(range(10))
    for i, spec in enumerate(fpga.TFC_FOLDING.values()):
        assert sizes[i + 1] % spec["PE"] == 0 and sizes[i] % spec["SIMD"] == 0


@pytest.mark.slow  # reason: trains, builds and synthesizes TFC with yosys (about 10 minutes)
@pytest.mark.timeout(3600)
def test_tfc_build_meets_finns_cycle_count(tmp_path):
    r = fpga.bench_network("tfc-w2a2", tmp_path)
    assert r["ii_cycles"] == r["ii_cycles_measured"] == 64
    assert r["simulation"]["mismatches"] == 0 and r["resources"]["BRAM36"]["measured"] > 0


def test_calibration_fit_recovers_a_linear_law_and_keeps_a_formula_it_cannot_improve():
    from benchmarks import fpga_calibrate

    rows = [{"x": x, "y": 0.5 * x + 100} for x in (200, 400, 800, 1600)]
    got = fpga_calibrate.fit(rows, "x", "y")
    assert (got["a"], got["b"]) == (0.5, 100.0) and got["mean_abs_rel_error_fitted"] == 0
    exact = [{"x": x, "y": x} for x in (10, 20, 40)]
    assert fpga_calibrate.fit(exact, "x", "y")["a"] == 1.0


def test_the_calibration_data_cover_the_sweep_on_both_families():
    import json

    from benchmarks import fpga_calibrate

    data = json.loads(fpga_calibrate.OUTPUT.read_text())["families"]
    assert set(data) == {"xc7", "xcup"}
    for family in data.values():
        assert len(family["samples"]) == len(fpga_calibrate.SWEEP)
        assert all(r["LUT"] > 0 and r["FF"] > 0 for r in family["samples"])
        # FINN's LUT formula overestimates these small single-MVAU designs (module doc of fpga_calibrate)
        assert family["LUT"]["raw_ratio_range"][1] > 1.5
