"""FPGA resources in the ILP: LUT/BRAM per layer and bits from the FPGA backend's resource model,
the part's capacity or a --lut-budget as the constraint, and the chosen bits build as a
dataflow design whose estimated resources stay within what the ILP counted."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import onnx
import pytest

import mlpc
from mlpc.backends.fpga.folding import Folding, choose_folding, estimate_resources, total_resources
from mlpc.cli import main
from mlpc.errors import InputError, QuantizationError
from mlpc.mixed.api import build_problem
from mlpc.mixed.fpga_cost import _mvau, fpga_costs, mvau_shape
from mlpc.targets import get_target
from mlpc.targets.fpga import fpga_part

TARGET = "fpga/xc7z020"


@pytest.fixture(scope="module")
def setup(digits_mlp, tmp_path_factory):
    path = tmp_path_factory.mktemp("fpga_cost") / "mlp.onnx"
    onnx.save(digits_mlp.model, path)
    calib = {"x": digits_mlp.x_train[:64]}
    sens = mlpc.mixed.data_sensitivity(path, calib, samples=32)
    return path, calib, sens


def test_costs_grow_with_bits_and_match_the_backend_model(setup):
    _path, _calib, sens = setup
    costs = fpga_costs(sens.layers, get_target(TARGET), (2, 3, 4, 8))
    lut = np.array(costs["lut"])
    bram = np.array(costs["bram"])
    assert [mvau_shape(layer) for layer in sens.layers] == [(64, 64, 1), (64, 64, 1), (10, 64, 1)]
    # 64×64 weights: 2 and 3 bits stay below 16 Kbit (LUT RAM), 4 and 8 bits go to block RAM
    assert costs["bram"][0] == [0.0, 0.0, 1.0, 1.0]
    # wider weights cost more LUTs while the weights stay in the same kind of memory; where they
    # move to block RAM, the yosys-fitted model may trade LUTs for a BRAM, never neither
    same = np.diff(bram, axis=1) == 0
    assert np.all(np.diff(lut, axis=1)[same] > 0)
    assert np.all((np.diff(lut, axis=1) > 0) | (np.diff(bram, axis=1) > 0))


def _allocations_within(problem, budgets):
    for choice in itertools.product(range(len(problem.bits)), repeat=len(problem.layers)):
        totals = problem.totals(list(choice))
        if all(totals[k] <= v + 1e-9 for k, v in budgets.items()):
            yield totals


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_ilp_respects_the_lut_budget_and_is_optimal(setup, fraction):
    path, _calib, sens = setup
    tgt = get_target(TARGET)
    problem = build_problem(sens, fpga=tgt, ideal_size=True)
    lo, hi = problem.costs["lut"].min(1).sum(), problem.costs["lut"].max(1).sum()
    budget = lo + fraction * (hi - lo)
    result = mlpc.mixed_precision(path, sensitivity=sens, target=TARGET, lut_budget=budget)
    assert result.allocation.costs["lut"] <= budget
    assert result.allocation.costs["bram"] <= tgt.capabilities["fpga"]["bram36"]
    best = min(t["omega"] for t in _allocations_within(problem, {"lut": budget}))
    assert result.allocation.omega == pytest.approx(best, rel=1e-9)
    assert set(result.bits.values()) != {8}  # the budget bites: all-8-bit is over it


def test_part_capacity_is_the_default_constraint_and_budgets_are_checked(setup):
    path, _calib, sens = setup
    result = mlpc.mixed_precision(path, sensitivity=sens, target=TARGET)  # the most accurate that fits
    assert set(result.bits.values()) == {8}
    assert result.budgets["lut"] == 53_200 and result.budgets["bram"] == 140
    with pytest.raises(
        QuantizationError, match=r"--lut-budget 100 LUTs cannot be met: the smallest feasible"
    ):
        mlpc.mixed_precision(path, sensitivity=sens, target=TARGET, lut_budget=100)
    with pytest.raises(InputError, match="--lut-budget 'lots'"):
        mlpc.mixed_precision(path, sensitivity=sens, target=TARGET, lut_budget="lots")
    with pytest.raises(InputError, match="apply to FPGA targets"):
        mlpc.mixed_precision(path, sensitivity=sens, target="x86", size_budget=0.2, lut_budget=0.5)


def _check_design(report, alloc, problem, names, budget):
    """Each MVAU has the chosen weight bits; the backend's estimate of every layer is at most
    what the ILP counted for it (worst-case accumulator), so the design is within the budget."""
    assert [r["bits"].split("/")[0] for r in report["layers"]] == [f"w{alloc['bits'][n]}" for n in names]
    j = {b: i for i, b in enumerate(problem.bits)}
    for i, (row, name) in enumerate(zip(report["layers"], names)):
        assert row["estimate"]["LUT"] <= problem.costs["lut"][i, j[alloc["bits"][name]]]
        assert row["estimate"]["BRAM36"] <= problem.costs["bram"][i, j[alloc["bits"][name]]]
    assert report["resources"]["estimate"]["LUT"] <= alloc["lut"] <= budget


def _midway_lut_budget(sens, tgt, fps):
    """The FPGA problem at `fps` and a LUT budget halfway between its cheapest and dearest allocation."""
    problem = build_problem(sens, fpga=tgt, ideal_size=True, fps=fps)
    lo, hi = problem.costs["lut"].min(1).sum(), problem.costs["lut"].max(1).sum()
    return problem, (lo + hi) / 2


def test_chosen_bits_build_within_what_the_ilp_counted(setup, tmp_path):
    """The bits under a LUT budget at --fps, quantized (reference calibration engine, to stay
    fast) and generated by the FPGA backend (RTL only; the CLI test below simulates)."""
    from mlpc.backends.fpga.backend import compile_graph
    from mlpc.pass_infra import PassContext
    from mlpc.passes.lower_quant import LowerQuantPass

    path, calib, sens = setup
    tgt = get_target(TARGET)
    fps = 1e5
    problem, budget = _midway_lut_budget(sens, tgt, fps)
    result = mlpc.mixed_precision(path, sensitivity=sens, target=TARGET, lut_budget=budget, fps=fps)
    assert 2 <= len(set(result.bits.values()))  # a real mix
    qmodel = mlpc.quantize(path, "w8a8", calib, config=result.config(), engine="reference")
    LowerQuantPass()(qmodel.graph, PassContext())
    compile_graph(qmodel, tgt, tmp_path, fps=fps, simulate_design=False, synthesize_design=False)
    report = json.loads((tmp_path / "report.json").read_text())
    _check_design(report, result.allocation.to_json(), problem, [layer.name for layer in sens.layers], budget)


@pytest.mark.slow  # mlpc.compile calibrates on a TVM build: 35 s warm, ~130 s with TVM's first import
def test_compile_mixed_for_fpga_gives_the_design_the_ilp_counted(setup, tmp_path):
    path, calib, sens = setup
    tgt = get_target(TARGET)
    fps = 1e5
    problem, budget = _midway_lut_budget(sens, tgt, fps)
    out = tmp_path / "fpga"
    art = mlpc.compile(
        path,
        target=TARGET,
        output_dir=out,
        quantize="mixed",
        calibration=calib,
        sensitivity=_saved(sens, tmp_path),
        lut_budget=budget,
        fps=fps,
        fpga_options={"simulate_design": False, "synthesize_design": False},
    )
    report = json.loads((out / "report.json").read_text())
    alloc = art.manifest["mixed_precision"]["allocation"]
    _check_design(report, alloc, problem, [layer.name for layer in sens.layers], budget)


def test_lut_budget_caps_the_automatic_folding(setup):
    """Without --fps the backend unfolds up to 80 % of the part; a LUT limit stops it earlier."""
    _path, _calib, sens = setup
    layers = [_mvau(layer, 4, 8, i == 2) for i, layer in enumerate(sens.layers)]
    part = fpga_part(get_target(TARGET))
    family = part.yosys_family  # the folding counts LUTs with the part family's yosys-fitted model
    free = total_resources(layers, choose_folding(layers, part, None), family)
    limit = total_resources(layers, [Folding(1, 1)] * 3, family)["LUT"] + 2000
    capped = choose_folding(layers, part, None, limits={"LUT": limit})
    assert free["LUT"] > limit >= total_resources(layers, capped, family)["LUT"]
    assert estimate_resources(layers[0], capped[0], family)["LUT"] <= limit


@pytest.mark.slow  # TVM calibration build, verilator build, 2 × 32 simulated inferences: ~130 s
@pytest.mark.skipif(shutil.which("verilator") is None, reason="verilator is installed by `make setup`")
def test_cli_mixed_fpga_design_simulates_bit_exactly(setup, tmp_path):
    path, calib, sens = setup
    np.savez(tmp_path / "calib.npz", **calib)
    out = tmp_path / "design"
    args = [
        "compile",
        str(path),
        "--target",
        TARGET,
        "--quantize",
        "mixed",
        "--calib",
        str(tmp_path / "calib.npz"),
        "--sensitivity",
        str(_saved(sens, tmp_path)),
        "--lut-budget",
        "0.45",
        "--no-synth",
        "-o",
        str(out),
    ]
    assert main(args) == 0
    report = json.loads((out / "report.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    assert report["simulation"]["passed"] and report["simulation"]["stalled"]["passed"]
    assert report["resources"]["estimate"]["LUT"] <= 0.45 * 53_200
    assert manifest["mixed_precision"]["allocation"]["lut"] <= 0.45 * 53_200


def _saved(sens, tmp_path):
    target = tmp_path / "sens.json"
    sens.save(target)
    return target
