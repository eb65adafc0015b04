"""Schemes and per-layer configs: parsing, validation, rule matching."""
from __future__ import annotations

import json

import pytest

from mlpc.errors import QuantizationError
from mlpc.quant.scheme import QuantSpec, config_from_dict, load_config, parse_scheme


@pytest.mark.parametrize("scheme,wbits,abits", [("w8a8", 8, 8), ("w4a8", 4, 8), ("W2A8", 2, 8), ("w3a6", 3, 6)])
def test_parse_scheme(scheme, wbits, abits):
    cfg = parse_scheme(scheme)
    assert (cfg.weight.bits, cfg.activation.bits) == (wbits, abits)
    assert cfg.weight.granularity == "per_channel" and cfg.weight.symmetric
    assert cfg.activation.granularity == "per_tensor" and cfg.activation.signed is None


@pytest.mark.parametrize("scheme", ["w1a8", "w9a8", "w4a12", "w4a32", "w1a16", "int8", "w4"])  # w4a16 is weight-only
def test_bad_schemes(scheme):
    with pytest.raises(QuantizationError, match="w<bits>a<bits>|outside"):
        parse_scheme(scheme)


def test_quant_spec_validates():
    with pytest.raises(QuantizationError, match="outside the supported range 2..8"):
        QuantSpec(bits=9)
    with pytest.raises(QuantizationError, match="granularity"):
        QuantSpec(granularity="per_row")
    with pytest.raises(QuantizationError, match="observer"):
        QuantSpec(observer="median")
    assert QuantSpec(bits=4).observer_name == "mse" and QuantSpec(bits=8).observer_name == "minmax"


def test_yaml_config_rules(tmp_path):
    path = tmp_path / "q.yaml"
    path.write_text(
        "scheme: w4a8\n"
        "layers:\n"
        "  'conv*': {weight: {bits: 8, observer: minmax}}\n"
        "  conv2: {activation: {bits: 6}}\n"
        "  fc1: 2\n"
        "skip: [fc2]\n"
        "rounding: nearest\n"
    )
    cfg = load_config(path)
    assert cfg.specs_for("conv1")[0].bits == 8 and cfg.specs_for("conv1")[1].bits == 8
    w2, a2 = cfg.specs_for("conv2")
    assert (w2.bits, w2.observer, a2.bits) == (8, "minmax", 6)
    assert cfg.specs_for("fc1")[0].bits == 2
    assert cfg.specs_for("fc2") is None
    assert cfg.specs_for("other")[0].bits == 4 and cfg.rounding == "nearest"
    assert cfg.unmatched_rules(["conv1", "fc1"]) == ["conv2", "fc2"]
    # the command line's scheme overrides the file's
    assert load_config(path, scheme="w8a8").specs_for("other")[0].bits == 8


def test_json_config_errors(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"scheme": "w4a8", "layers": {"fc": {"weight": {"bits": 12}}}}))
    with pytest.raises(QuantizationError, match=r"layers\['fc'\].weight: bits=12 is outside"):
        load_config(path)
    with pytest.raises(QuantizationError, match="unknown keys"):
        config_from_dict({"sheme": "w4a8"})
    with pytest.raises(QuantizationError, match="per_channel is for weights only"):
        config_from_dict({"activation": {"granularity": "per_channel"}})
    path.write_text("{not json")
    with pytest.raises(QuantizationError, match="cannot parse"):
        load_config(path)
    with pytest.raises(QuantizationError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
