"""mlpc.mixed_precision, `mlpc compile --quantize mixed`, `mlpc sensitivity`, budgets, the report."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import mlpc
from mlpc.cli import main
from mlpc.errors import InputError, QuantizationError
from mlpc.mixed.latency import arm_latency
from mlpc.targets import get_target


@pytest.fixture
def files(tmp_path, digits_mlp):
    model = tmp_path / "mlp.onnx"
    onnx.save(digits_mlp.model, model)
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=digits_mlp.x_train[:32])
    return model, calib


def test_size_budgets_respected_and_monotone(files):
    model, calib = files
    sens = mlpc.mixed.data_sensitivity(model, calib, samples=32)
    fp32 = 4 * sum(layer.params + layer.bias for layer in sens.layers)
    sizes = []
    for fraction in (0.25, 0.2, 0.15, 0.1, 0.08):
        result = mlpc.mixed_precision(model, sensitivity=sens, size_budget=fraction, bops_budget=0.6)
        assert result.allocation.costs["size"] <= fraction * fp32
        assert result.allocation.costs["bops"] <= 0.6 * sum(layer.bops(8) for layer in sens.layers)
        sizes.append(result.allocation.costs["size"])
    assert sizes == sorted(sizes, reverse=True)
    with pytest.raises(QuantizationError, match=r"--size-budget .* smallest feasible value is"):
        mlpc.mixed_precision(model, sensitivity=sens, size_budget=0.02)


def test_arm_latency_budget_uses_the_analytic_model(files, tmp_path):
    model, calib = files
    target = get_target("arm/cortex-a72")
    sens = mlpc.mixed.data_sensitivity(model, calib, samples=16)
    latency = arm_latency(target)
    layer = sens.layers[0]
    assert latency(layer, 2) < latency(layer, 4) < latency(layer, 8)  # weight traffic dominates these layers
    budget = sum(latency(layer, 4) for layer in sens.layers)
    result = mlpc.mixed_precision(
        model, sensitivity=sens, target=target, latency_budget=f"{budget * 1e3}ms", report=tmp_path / "r.html"
    )
    assert result.allocation.costs["latency"] <= budget * (1 + 1e-9)
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 2  # Pareto vs size and vs latency
    assert "fc2" in page


def test_cli_sensitivity(files, tmp_path):
    model, calib = files
    sens_path = tmp_path / "sens.json"
    assert (
        main(
            [
                "sensitivity",
                str(model),
                "--calib",
                str(calib),
                "-o",
                str(sens_path),
                "--bits",
                "2,4,8",
                "--samples",
                "16",
            ]
        )
        == 0
    )
    sens = json.loads(sens_path.read_text())
    assert [row["name"] for row in sens["layers"]] == ["fc1", "fc2", "fc3"] and sens["bits"] == [2, 4, 8]


@pytest.mark.slow  # a quantized build with GPTQ and the SQNR report: 20-30 s on the shared 2-core machine
def test_cli_compile_mixed(files, tmp_path, digits_mlp):
    model, calib = files
    sens_path = tmp_path / "sens.json"
    assert (
        main(
            [
                "sensitivity",
                str(model),
                "--calib",
                str(calib),
                "-o",
                str(sens_path),
                "--bits",
                "2,4,8",
                "--samples",
                "16",
            ]
        )
        == 0
    )
    out = tmp_path / "out"
    assert (
        main(
            [
                "compile",
                str(model),
                "--target",
                "x86",
                "--quantize",
                "mixed",
                "--calib",
                str(calib),
                "--size-budget",
                "0.12",
                "--sensitivity",
                str(sens_path),
                "-o",
                str(out),
                "--mixed-report",
                str(tmp_path / "mixed.html"),
            ]
        )
        == 0
    )
    manifest = json.loads((out / "manifest.json").read_text())
    chosen = manifest["mixed_precision"]["allocation"]["bits"]
    assert manifest["quantization"]["scheme"] == "mixed"
    assert {row["name"]: row["weight_bits"] for row in manifest["quantization"]["layers"]} == chosen
    assert manifest["mixed_precision"]["size_fraction"] <= 0.12
    assert len(set(chosen.values())) > 1  # a real mix at this budget
    art = mlpc.load(out)
    x = digits_mlp.x_test[:100]
    acc = np.mean(
        [np.argmax(art.run({"x": x[i : i + 1]})["logits"]) == digits_mlp.y_test[i] for i in range(len(x))]
    )
    assert acc > 0.85


@pytest.mark.parametrize(
    "args,message",
    [
        (["--quantize", "mixed"], "needs a budget"),
        (["--quantize", "w8a8", "--size-budget", "0.2"], "apply to --quantize mixed"),
        (["--quantize", "mixed", "--size-budget", "lots"], "--size-budget 'lots'"),
        (["--quantize", "mixed", "--size-budget", "0.01"], "smallest feasible value"),
        (["--quantize", "w8a8", "--mixed-candidates", "3"], "apply to --quantize mixed"),
        (["--quantize", "mixed", "--size-budget", "0.2", "--mixed-candidates", "0"], "--mixed-candidates 0"),
        (
            [
                "--quantize",
                "mixed",
                "--size-budget",
                "0.2",
                "--latency-budget",
                "1ms",
                "--target",
                "cuda/sm_80",
                "--bits",
                "2,9",
            ],
            "candidate bits",
        ),
    ],
)
def test_cli_mixed_bad_input_exits_2(files, tmp_path, capsys, args, message):
    model, calib = files
    assert main(["compile", str(model), "--calib", str(calib), "-o", str(tmp_path / "o"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_budget_parsing():
    from mlpc.mixed.api import parse_latency_budget, parse_size_budget

    assert parse_size_budget("40KiB", 10**6) == 40 * 1024
    assert parse_size_budget("0.15", 1000) == 150
    assert parse_latency_budget("500us") == pytest.approx(5e-4)
    with pytest.raises(InputError):
        parse_latency_budget("-2ms")


@pytest.mark.slow  # three TVM builds (layer at 4 and 8 bits, overhead): 10-90 s depending on load
def test_x86_latency_is_measured_and_cached(files, tmp_path, monkeypatch):
    from mlpc.mixed import latency as lat

    monkeypatch.setenv("MLPC_CACHE_DIR", str(tmp_path / "cache"))
    model, calib = files
    sens = mlpc.mixed.data_sensitivity(model, calib, samples=8, bits=(4, 8))
    fn = lat.latency_model(get_target("host"))
    first = {b: fn(sens.layers[0], b) for b in (4, 8)}
    assert all(0 < t < 0.1 for t in first.values())
    assert 0 < fn.fixed(sens.layers) < 0.1  # the call overhead, counted once per model
    monkeypatch.setattr(lat, "measure_layer", lambda *a, **k: pytest.fail("cached latency was re-measured"))
    monkeypatch.setattr(
        lat, "measure_overhead", lambda *a, **k: pytest.fail("cached overhead was re-measured")
    )
    again = lat.latency_model(get_target("host"))
    assert {b: again(sens.layers[0], b) for b in (4, 8)} == first
