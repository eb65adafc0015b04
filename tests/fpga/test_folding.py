"""The cycle model against finn-examples' foldings, automatic folding, and --folding files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mlpc.backends.fpga.folding import Folding, choose_folding, estimate_resources, load_folding, mvau_cycles
from mlpc.backends.fpga.network import MvauLayer
from mlpc.errors import InputError
from mlpc.targets.fpga import XC7Z020, XCZU7EV

# finn-examples build/bnn-pynq/folding_config/tfc-w2a2_folding_config.json (StreamingFCLayer_Batch_0..3)
# on TFC's 784-64-64-64-10 layers: (MW, MH, vectors, PE, SIMD).
TFC = [(784, 64, 1, 16, 49), (64, 64, 1, 8, 8), (64, 64, 1, 8, 8), (64, 10, 1, 10, 8)]
# finn-examples build/bnn-pynq/folding_config/cnv-w1a1_folding_config.json (MatrixVectorActivation_0..8)
# on CNV's layers: convolutions as MW = k·k·C_in, MH = C_out, vectors = output pixels.
CNV = [(27, 64, 30 * 30, 16, 3), (576, 64, 28 * 28, 32, 32), (576, 128, 12 * 12, 16, 32),
       (1152, 128, 10 * 10, 16, 32), (1152, 256, 3 * 3, 4, 32), (2304, 256, 1, 1, 32),
       (256, 512, 1, 1, 4), (512, 512, 1, 1, 8), (512, 10, 1, 5, 1)]


def test_tfc_w2a2_slowest_layer_is_64_cycles():
    cycles = [mvau_cycles(mh, mw, pe, simd, v) for mw, mh, v, pe, simd in TFC]
    assert cycles == [64, 64, 64, 8]
    assert max(cycles) == 64


def test_cnv_w1a1_slowest_layer_is_32768_cycles():
    cycles = [mvau_cycles(mh, mw, pe, simd, v) for mw, mh, v, pe, simd in CNV]
    assert max(cycles) == 32768
    assert cycles[0] == 32400 and cycles[6] == 32768


def _layer(name, mw, mh, bits=2):
    rng = np.random.default_rng(0)
    w = rng.integers(-1, 2, size=(mh, mw))
    return MvauLayer(name=name, source=f"node_{name}", weights=w, in_range=(0, 2**bits - 1), w_range=(-1, 1),
                     out_range=(0, 3), acc_range=(-mw * 3, mw * 3), vectors=1,
                     thresholds=np.zeros((mh, 3), np.int64))


def test_choose_folding_meets_fps_with_the_cheapest_folding():
    layers = [_layer("mvau0", 784, 64), _layer("mvau1", 64, 64)]
    folds = choose_folding(layers, XCZU7EV, fps=1e6)  # 100 MHz: 100 cycles per inference
    for layer, f in zip(layers, folds):
        assert mvau_cycles(layer.mh, layer.mw, f.pe, f.simd) <= 100
        assert layer.mh % f.pe == 0 and layer.mw % f.simd == 0
    # no cheaper (PE·SIMD) folding meets the budget
    assert folds[0].pe * folds[0].simd == min(
        pe * s for pe in range(1, 65) for s in range(1, 785)
        if 64 % pe == 0 and 784 % s == 0 and (64 // pe) * (784 // s) <= 100)


def test_unreachable_fps_names_the_layer():
    layers = [_layer("mvau0", 16, 8)]
    with pytest.raises(InputError, match=r"--fps 1e\+09 cannot be met.*mvau0"):
        choose_folding(layers, XCZU7EV, fps=1e9)


def test_fps_beyond_the_part_names_the_resource():
    layers = [_layer("mvau0", 2048, 2048, bits=8)]
    with pytest.raises(InputError, match="LUT .* lower --fps"):
        choose_folding(layers, XC7Z020, fps=5e7)


def test_fastest_folding_that_fits_without_fps():
    layers = [_layer("mvau0", 64, 32), _layer("mvau1", 32, 10)]
    folds = choose_folding(layers, XC7Z020, fps=None)
    total = sum(estimate_resources(layer, f)["LUT"] for layer, f in zip(layers, folds))
    assert total <= 0.8 * XC7Z020.lut
    assert max(mvau_cycles(layer.mh, layer.mw, f.pe, f.simd) for layer, f in zip(layers, folds)) < 64 * 32


def test_load_folding_accepts_mlpc_and_finn_names(tmp_path):
    layers = [_layer("mvau0", 784, 64), _layer("mvau1", 64, 64)]
    path = tmp_path / "f.json"
    path.write_text(json.dumps({"Defaults": {}, "MVAU_hls_0": {"PE": 16, "SIMD": 49, "ram_style": "block"},
                                "mvau1": {"PE": 8, "SIMD": 8}}))
    folds = load_folding(path, layers)
    assert folds == {"mvau0": Folding(16, 49, "block"), "mvau1": Folding(8, 8)}


@pytest.mark.parametrize("data,match", [
    ({"fc9": {"PE": 1, "SIMD": 1}}, "unknown layer 'fc9'; the layers are mvau0"),
    ({"mvau0": {"PE": 3, "SIMD": 1}}, r"'mvau0': PE=3 must divide MH=64"),
    ({"mvau0": {"PE": 1, "SIMD": 5}}, r"'mvau0': SIMD=5 must divide MW=784"),
    ({"mvau0": {"PE": 1, "SIMD": 1, "ram_style": "ultra"}}, "ram_style 'ultra'"),
])
def test_bad_folding_files_are_refused(data, match):
    with pytest.raises(InputError, match=match):
        load_folding(data, [_layer("mvau0", 784, 64)])


def test_a_network_too_large_at_any_folding_names_the_layer():
    layers = [_layer("mvau0", 4096, 4096, bits=2), _layer("mvau1", 4096, 4096, bits=2)]
    for layer in layers:
        layer.w_range = (-127, 127)
    with pytest.raises(InputError, match="does not fit xc7z020clg400-1 even fully folded .*BRAM36.*mvau"):
        choose_folding(layers, XC7Z020, fps=None)


def test_lut_estimate_is_finns_formula_with_coefficients_fitted_against_yosys():
    from mlpc.backends.fpga.folding import lut_terms
    from mlpc.backends.fpga.resources import FINN_COEFFICIENTS, coefficients, is_corrected

    layer, fold = _layer("mvau0", 64, 32), Folding(2, 8)
    # FINN's formula by hand (2-bit weights and inputs, 3 thresholds, accumulator 2+2+log2(64) bits):
    # 300 + 1.1·PE·(multipliers 8·1·4 + adder tree 4·15 + accumulator 10 + thresholds 3·10·1 + comparators 3·10)
    # + distributed weights PE·SIMD·WB·⌈(16·8)/64⌉
    assert estimate_resources(layer, fold)["LUT"] == round(300 + 1.1 * 2 * (32 + 60 + 10 + 30 + 30) + 2 * 8 * 2 * 2)
    terms = lut_terms(layer, fold)
    assert round(sum(FINN_COEFFICIENTS[k] * v for k, v in terms.items())) == estimate_resources(layer, fold)["LUT"]
    for family in ("xc7", "xcup"):  # the parts' families have a yosys fit (resource_model.json)
        coef = coefficients(family)
        assert is_corrected(family) and coef != FINN_COEFFICIENTS
        assert estimate_resources(layer, fold, family)["LUT"] == round(sum(coef[k] * v for k, v in terms.items()))
    assert not is_corrected("xcvp") and coefficients("xcvp") == FINN_COEFFICIENTS
