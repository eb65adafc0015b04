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


def test_calibration_fit_recovers_known_coefficients(monkeypatch):
    """NNLS on the relative error finds the coefficients of synthetic counts made from the model's
    own terms; a term no sample has keeps FINN's coefficient."""
    from benchmarks import fpga_calibrate
    from mlpc.backends.fpga.resources import FINN_COEFFICIENTS

    rng = np.random.default_rng(0)
    truth = {"mvau": 120.0, "compute": 0.6, "thresholds": 0.6, "weights": 0.9, "buffers": 2.0}  # one datapath factor
    table = {}
    samples = []
    for i in range(12):
        t = {"mvau": 1.0, "compute": rng.uniform(50, 3000), "thresholds": rng.uniform(0, 1500),
             "weights": rng.uniform(0, 500), "buffers": rng.uniform(1, 20)}
        table[i] = t
        samples.append({"spec": {"seed": i}, "LUT": sum(truth[k] * v for k, v in t.items())})
    monkeypatch.setattr(fpga_calibrate, "terms", lambda spec: table[spec["seed"]])
    got = fpga_calibrate.fit(samples)
    for k, v in truth.items():
        assert got["coefficients"][k] == pytest.approx(v, rel=1e-3)
    assert got["coefficients"]["window"] == FINN_COEFFICIENTS["window"] and "window+window_buffer" not in got["fitted_groups"]
    assert got["group_factors"]["compute+thresholds"] == pytest.approx(0.6, rel=1e-3)
    assert got["mean_abs_rel_error_fitted"] < 1e-3 < got["mean_abs_rel_error_finn"]


def test_the_fitted_model_is_the_calibration_samples_fit():
    """resource_model.json is what fpga_calibrate.fit gives on the stored samples, for both families,
    and it lowers the error of FINN's coefficients on them."""
    import json

    from benchmarks import fpga_calibrate
    from mlpc.backends.fpga import resources

    samples = json.loads(fpga_calibrate.SAMPLES.read_text())["families"]
    model = json.loads(resources.MODEL_FILE.read_text())
    assert set(samples) == set(model["families"]) == {"xc7", "xcup"}
    for family, d in samples.items():
        kinds = {r["spec"]["kind"] for r in d["samples"]}
        assert kinds == {"mvau", "conv", "pool"} and all(r["LUT"] > 0 for r in d["samples"])
        refit = fpga_calibrate.fit(d["samples"])
        assert refit["coefficients"] == model["families"][family]["coefficients"]
        assert refit["mean_abs_rel_error_fitted"] < refit["mean_abs_rel_error_finn"]
        assert resources.coefficients(family) == refit["coefficients"] and resources.is_corrected(family)
