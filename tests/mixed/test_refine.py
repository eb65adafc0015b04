"""The end-to-end check of the ILP's best allocations on held-out calibration samples: it measures
the ILP's own answer and its runners-up, keeps the best, and so can only lower the held-out
objective; every candidate meets the budget; the held-out samples are not used to quantize."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import mlpc
from mlpc.errors import QuantizationError
from mlpc.mixed.api import build_problem, layer_config
from mlpc.mixed.refine import held_out_error, select_end_to_end, split_calibration
from mlpc.quant.calibration import CalibrationSet


@pytest.fixture(scope="module")
def setup(digits_mlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("refine") / "mlp.onnx"
    onnx.save(digits_mlp.model, path)
    calib = {"x": digits_mlp.x_train[:96]}
    sens = mlpc.mixed.data_sensitivity(path, calib, samples=32, bits=(2, 4, 8))
    return path, calib, sens


def test_end_to_end_choice_never_worse_than_the_ilp_answer_on_held_out_samples(setup):
    path, calib, sens = setup
    problem = build_problem(sens)
    budget = {"size": problem.totals([1, 0, 1])["size"]}  # room for one 4-bit and one 2-bit layer or so
    choice = select_end_to_end(path, calib, problem, budget, count=4)
    assert [c.rank for c in choice.candidates] == [0, 1, 2, 3]
    assert choice.candidates[0].allocation.bits == mlpc.mixed.solve(problem, budget).bits
    errors = [c.held_out for c in choice.candidates]
    assert choice.allocation.bits == choice.candidates[int(np.argmin(errors))].allocation.bits
    assert min(errors) <= errors[0]
    assert len({tuple(c.allocation.bits.values()) for c in choice.candidates}) == 4
    for c in choice.candidates:
        assert c.allocation.costs["size"] <= budget["size"] * (1 + 1e-9)
    assert (choice.held_out_samples, choice.fit_samples) == (24, 72)
    # the figure is the quantized model's real held-out error: recompute one independently
    fit, held = split_calibration(CalibrationSet.load(calib, _graph(path)))
    best = choice.candidates[int(np.argmin(errors))]
    qmodel = mlpc.quantize(path, "w8a8", fit, config=layer_config(best.allocation.bits), engine="reference")
    reference = [[_float_logits(path, s)] for s in held.samples]
    assert held_out_error(qmodel, reference, held) == pytest.approx(best.held_out, rel=1e-6)


def test_mixed_precision_with_candidates_keeps_the_measured_best(setup, tmp_path):
    path, calib, sens = setup
    report = tmp_path / "r.html"
    result = mlpc.mixed_precision(path, calib, sensitivity=sens, size_budget=0.1, end_to_end=3, report=report)
    assert "End-to-end check" in report.read_text()
    measured = result.end_to_end.candidates
    assert result.bits == min(measured, key=lambda c: (c.held_out, c.rank)).allocation.bits
    assert result.to_json()["end_to_end"]["candidates"][0]["ilp_rank"] == 0
    with pytest.raises(QuantizationError, match="at least 4 calibration samples"):
        mlpc.mixed_precision(path, {"x": calib["x"][:3]}, sensitivity=sens, size_budget=0.1, end_to_end=2)


def test_split_holds_out_every_fourth_sample_and_fits_on_the_rest():
    data = CalibrationSet([{"x": np.full((1, 2), i, np.float32)} for i in range(20)])
    fit, held = split_calibration(data, held_out=3)
    assert [int(s["x"][0, 0]) for s in held.samples] == [3, 7, 11]
    assert [int(s["x"][0, 0]) for s in fit.samples] == [i for i in range(20) if i not in (3, 7, 11)]


def _graph(path):
    from mlpc.frontend import load_model

    return load_model(path).model.graph


def _float_logits(path, sample):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, sample)[0]


def test_options_cannot_override_the_candidates_layer_bits(setup):
    path, calib, sens = setup
    problem = build_problem(sens)
    budget = {"size": problem.totals([1, 0, 1])["size"]}
    with pytest.raises(QuantizationError, match="must not set 'layers'"):
        select_end_to_end(path, calib, problem, budget, options={"layers": {"*": {"weight": {"bits": 8}}}})
