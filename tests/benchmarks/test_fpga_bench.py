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
    assert "LUT estimate +25 %" in text


def test_tfc_data_is_784_wide_and_the_folding_divides_it():
    sizes, x, y, binary = fpga._data("tfc-w2a2")
    assert sizes == [784, 64, 64, 64, 10] and x.shape[1] == 784 and not binary
    assert np.isclose(x.max(), 1.0) and set(np.unique(y)) == set(range(10))
    for i, spec in enumerate(fpga.TFC_FOLDING.values()):
        assert sizes[i + 1] % spec["PE"] == 0 and sizes[i] % spec["SIMD"] == 0


@pytest.mark.slow  # reason: trains, builds and synthesizes TFC with yosys (several minutes)
def test_tfc_build_meets_finns_cycle_count(tmp_path):
    r = fpga.bench_network("tfc-w2a2", tmp_path)
    assert r["ii_cycles"] == r["ii_cycles_measured"] == 64
    assert r["simulation"]["mismatches"] == 0 and r["resources"]["BRAM36"]["measured"] > 0
