"""Calibration data loading and checking, and the TVM calibration run against the reference evaluator."""
from __future__ import annotations

import numpy as np
import pytest

from mlpc.errors import QuantizationError
from mlpc.frontend.onnx_loader import proto_to_ir
from mlpc.quant.calibration import CalibrationSet, run_calibration


@pytest.fixture
def graph(digits):
    return proto_to_ir(digits.model).graph


def test_npz_and_directory_give_the_same_samples(tmp_path, graph, digits):
    x = digits.x_train[:5]
    np.savez(tmp_path / "calib.npz", x=x)
    from_npz = CalibrationSet.load(tmp_path / "calib.npz", graph)
    keyed = tmp_path / "keyed"
    keyed.mkdir()
    np.save(keyed / "x.npy", x)
    per_sample = tmp_path / "samples"
    per_sample.mkdir()
    for i in range(5):
        np.save(per_sample / f"s{i:03d}.npy", x[i])  # one (1, 8, 8) sample per file
    for data in (from_npz, CalibrationSet.load(keyed, graph), CalibrationSet.load(per_sample, graph),
                 CalibrationSet.load({"x": x}, graph)):
        assert len(data) == 5
        assert data.samples[3]["x"].shape == (1, 1, 8, 8)
        assert np.array_equal(data.samples[3]["x"][0], x[3])
    assert len(CalibrationSet.load(tmp_path / "calib.npz", graph, limit=2)) == 2


@pytest.mark.parametrize(
    "arrays,message",
    [
        ({"x": np.zeros((0, 1, 8, 8), np.float32)}, "is empty"),
        ({"x": np.zeros((4, 1, 7, 8), np.float32)}, r"input 'x' expects samples of shape \[1, 1, 8, 8\].*got an array of shape \[4, 1, 7, 8\]"),
        ({"x": np.zeros((4, 1, 8, 8), np.float64)}, "input 'x' has dtype float64, the model expects float32"),
        ({"x": np.full((4, 1, 8, 8), np.nan, np.float32)}, "input 'x' holds NaN or Inf"),
        ({"y": np.zeros((4, 1, 8, 8), np.float32)}, r"no data for inputs \['x'\]; unknown inputs \['y'\]"),
    ],
)
def test_bad_calibration_data(graph, arrays, message):
    with pytest.raises(QuantizationError, match=message):
        CalibrationSet.load(arrays, graph)


def test_bad_calibration_paths(tmp_path, graph):
    with pytest.raises(QuantizationError, match="no such file"):
        CalibrationSet.load(tmp_path / "none.npz", graph)
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuantizationError, match="holds no .npy files"):
        CalibrationSet.load(tmp_path / "empty", graph)
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(QuantizationError, match="not a readable"):
        CalibrationSet.load(tmp_path / "junk.npz", graph)


def test_tvm_calibration_matches_reference(graph, digits):
    data = CalibrationSet.load({"x": digits.x_train[:3]}, graph)
    names = ["x", "p1", "rh"]
    got = {"tvm": [], "reference": []}
    for engine in got:
        run_calibration(graph, data, names, got[engine].append, engine=engine, progress=True)
    for a, b in zip(got["tvm"], got["reference"]):
        for name in names:
            np.testing.assert_allclose(a[name], b[name], rtol=1e-4, atol=1e-5)
    with pytest.raises(QuantizationError, match="engine 'gpu'"):
        run_calibration(graph, data, names, print, engine="gpu")
