"""Per-layer sensitivity: a deliberately fragile layer ranks first (data-driven and Hessian), the
measures grow as bits shrink, and the JSON round trip."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from conftest import layer_weights, make_fragile, mlp_onnx
from mlpc.mixed import Sensitivity, data_sensitivity
from mlpc.mixed.hessian import hessian_sensitivity


@pytest.fixture(scope="module")
def fragile(digits_mlp):
    model = mlp_onnx(make_fragile(layer_weights(digits_mlp.net)))
    # the edit keeps the function: same logits as the trained model
    runs = [
        ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        for m in (digits_mlp.model, model)
    ]
    x = digits_mlp.x_test[:1]
    a, b = (s.run(None, {"x": x})[0] for s in runs)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    return model


@pytest.mark.parametrize("metric", ["mse", "kl"])
def test_data_sensitivity_ranks_the_fragile_layer_first(digits_mlp, fragile, metric):
    calib = {"x": digits_mlp.x_train[:32]}
    normal = data_sensitivity(digits_mlp.model, calib, bits=(2, 4, 8), metric=metric, samples=32)
    sens = data_sensitivity(fragile, calib, bits=(2, 4, 8), metric=metric, samples=32)
    for b in (2, 4, 8):
        assert sens.ranking(b)[0] == "fc2"
        assert sens.omega["fc2"][b] > 10 * normal.omega["fc2"][b]
    for name in ("fc1", "fc2", "fc3"):  # fewer bits, more error
        assert normal.omega[name][2] > normal.omega[name][4] > normal.omega[name][8] >= 0


def test_hessian_sensitivity_ranks_the_fragile_layer_first(digits_mlp, fragile):
    sens = hessian_sensitivity(fragile, {"x": digits_mlp.x_train[:32]}, bits=(2, 4, 8), samples=32, iters=8)
    assert sens.method == "hessian" and set(sens.trace) == {"fc1", "fc2", "fc3"}
    for b in (4, 8):
        assert sens.ranking(b)[0] == "fc2"
    # the torch module path gives traces of the same layers (named by module path)
    torch_sens = hessian_sensitivity(
        digits_mlp.net, digits_mlp.x_train[:32], labels=digits_mlp.y_train[:32], bits=(4,), iters=8
    )
    assert [layer.name for layer in torch_sens.layers] == ["0", "2", "4"]
    assert all(t > 0 for t in torch_sens.trace.values())
    assert [layer.macs for layer in torch_sens.layers] == [64 * 64, 64 * 64, 64 * 10]


def test_sensitivity_json_round_trip(tmp_path, digits_mlp):
    sens = data_sensitivity(digits_mlp.model, {"x": digits_mlp.x_train[:8]}, bits=(3, 8), samples=8)
    path = tmp_path / "sens.json"
    sens.save(path)
    again = Sensitivity.load(path)
    assert again.omega == sens.omega and again.layers == sens.layers and again.bits == (3, 8)


def test_pass_rounding_measures_the_quantize_pass_weights(digits_mlp):
    """rounding="pass" takes the weights (GPTQ, bias correction) mlpc's quantize pass chooses:
    at 2 bits their output error is below round-to-nearest's."""
    calib = {"x": digits_mlp.x_train[:32]}
    nearest = data_sensitivity(digits_mlp.model, calib, bits=(2, 8), samples=32)
    passed = data_sensitivity(digits_mlp.model, calib, bits=(2, 8), samples=32, rounding="pass")
    assert passed.extra["rounding"] == "pass"
    assert sum(passed.omega[n][2] for n in passed.omega) < sum(nearest.omega[n][2] for n in nearest.omega)
    assert all(passed.omega[n][8] < passed.omega[n][2] for n in passed.omega)
