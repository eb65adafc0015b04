"""The quantization benchmark: its report and one real (slow) run on the digits CNN."""
from __future__ import annotations

import pytest

from benchmarks import quant


def _result(acc, ms, speedup):
    return {"accuracy": acc, "size_bytes": 2048, "median_ms": ms, "speedup_vs_mlpc_fp32": speedup, "compile_s": 1.5}


def test_render_lists_every_variant_with_its_figures():
    data = {"machine": {"cpu": "cpu", "cores": 2, "versions": {"mlpc": "0"}, "date": "d"}, "threads": 2,
            "repeat": 20, "calibration_samples": 256,
            "models": {"digits": {"mlpc fp32": _result(97.5, 0.2, 1.0), "mlpc w8a8": _result(97.25, 0.1, 2.0)},
                       "resnet": {"mlpc fp32": _result(None, 1.0, 1.0)}}}
    text = quant.render(data)
    assert "| mlpc w8a8 | 97.25 | 2.0 | 0.100 | 2.00 | 1.5 |" in text
    assert "| mlpc fp32 | — | 2.0 | 1.00 | 1.00 | 1.5 |" in text
    assert "**digits**" in text and "**resnet**" in text


@pytest.mark.slow  # trains, quantizes and compiles: about a minute
def test_digits_run_measures_mlpc_and_onnxruntime(tmp_path):
    results = quant.bench_model("digits", tmp_path, threads=2, repeat=20, schemes=("w8a8",))
    assert set(results) == {"mlpc fp32", "mlpc w8a8", "onnxruntime fp32", "onnxruntime int8",
                            "onnxruntime int8 reduce_range"}
    assert results["mlpc w8a8"]["accuracy"] >= results["mlpc fp32"]["accuracy"] - 0.5
    assert all(r["median_ms"] > 0 and r["size_bytes"] > 0 for r in results.values())
