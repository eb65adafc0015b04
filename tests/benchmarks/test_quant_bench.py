"""The quantization benchmark: its report and one real (slow) run on the digits CNN."""
from __future__ import annotations

import pytest

import numpy as np
from onnx import TensorProto, helper

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
    assert "batch 64" not in text

    data["batch"] = 64
    data["batched"] = {"digits": {"mlpc fp32": {**_result(97.5, 2.0, 1.0), "per_sample_us": 31.25},
                                  "mlpc w8a8": {**_result(97.25, 1.0, 2.0), "per_sample_us": 15.625}}}
    text = quant.render(data)
    assert "batch 64 (one call per 64 samples" in text
    assert "| mlpc w8a8 | 97.25 | 1.00 | 15.6 | 2.00 |" in text


def test_with_batch_sets_the_batch_axis_of_inputs_and_outputs():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        value_info=[helper.make_tensor_value_info("t", TensorProto.FLOAT, [1, 3])])
    model = helper.make_model(graph)
    batched = quant.with_batch(model, 8)
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in (*batched.graph.input, *batched.graph.output)]
    assert dims == [[8, 3], [8, 3]] and not batched.graph.value_info
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1  # the original is untouched


def test_batched_accuracy_counts_every_sample_once_with_a_padded_last_batch():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.array([0, 1] * 5)
    calls = []

    def run(chunk):  # predicts class 1 for odd values; the padding rows (zeros) must not be counted
        calls.append(len(chunk))
        odd = chunk[:, 0] % 2
        return np.stack([1 - odd, odd], axis=1)

    assert quant._accuracy(run, x, y, batch=4) == 100.0 and calls == [4, 4, 4]
    assert quant._accuracy(run, x, 1 - y, batch=4) == 0.0


@pytest.mark.slow  # trains, quantizes and compiles: about a minute
def test_digits_run_measures_mlpc_and_onnxruntime(tmp_path):
    case = quant._case("digits")
    results = quant.bench_model("digits", case, tmp_path, threads=2, repeat=20, schemes=("w8a8",))
    assert set(results) == {"mlpc fp32", "mlpc w8a8", "onnxruntime fp32", "onnxruntime int8",
                            "onnxruntime int8 reduce_range"}
    assert results["mlpc w8a8"]["accuracy"] >= results["mlpc fp32"]["accuracy"] - 0.5
    assert all(r["median_ms"] > 0 and r["size_bytes"] > 0 for r in results.values())


@pytest.mark.slow  # trains, quantizes and compiles at batch 16: about a minute
def test_digits_batched_run_keeps_accuracy_and_times_every_variant(tmp_path):
    case = quant._case("digits")
    results = quant.bench_batch("digits", case, 16, tmp_path, threads=2, repeat=20, schemes=("w8a8",))
    assert set(results) == {"mlpc fp32", "mlpc w8a8", "onnxruntime fp32", "onnxruntime int8"}
    assert results["mlpc fp32"]["accuracy"] > 95 and results["mlpc w8a8"]["accuracy"] >= results["mlpc fp32"]["accuracy"] - 0.5
    # the batch-16 ONNX model itself, in onnxruntime, classifies as the batch-1 one does
    assert results["onnxruntime fp32"]["accuracy"] == results["mlpc fp32"]["accuracy"]
    assert all(r["median_ms"] > 0 for r in results.values())
