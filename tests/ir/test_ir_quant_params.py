"""QuantParams: quantize/dequantize properties, validation, JSON/metadata round trips,
dyadic requantization, and the integer type vocabulary."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlpc.errors import QuantizationError
from mlpc.ir import (
    BIPOLAR,
    INT4,
    INT8,
    TERNARY,
    UINT2,
    UINT8,
    QuantParams,
    dyadic,
    get_quant,
    int_type,
    requantize,
    set_quant,
)

scales = st.floats(min_value=1e-3, max_value=10.0, allow_nan=False, allow_infinity=False)


@st.composite
def quant_params(draw: st.DrawFn) -> QuantParams:
    bits = draw(st.integers(2, 8))
    signed = draw(st.booleans())
    narrow = draw(st.booleans())
    per_channel = draw(st.booleans())
    probe = QuantParams(bits=bits, signed=signed, narrow_range=narrow)
    if per_channel:
        n = draw(st.integers(1, 4))
        scale = np.array(draw(st.lists(scales, min_size=n, max_size=n)))
        zp = np.array(draw(st.lists(st.integers(probe.qmin, probe.qmax), min_size=n, max_size=n)))
        return QuantParams(bits, signed, scale, zp, axis=draw(st.sampled_from([1, -1])), narrow_range=narrow)
    return QuantParams(
        bits, signed, draw(scales), draw(st.integers(probe.qmin, probe.qmax)), narrow_range=narrow
    )


def _shape_for(qp: QuantParams) -> tuple[int, int]:
    return (3, qp.channels or 5)


def _bounds(qp: QuantParams, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    """Float range that quantizes without clamping: [(qmin − zp)·s, (qmax − zp)·s]."""
    scale = np.asarray(qp.scale, dtype=np.float64)
    zp = np.asarray(qp.zero_point, dtype=np.float64)
    lo, hi = (qp.qmin - zp) * scale, (qp.qmax - zp) * scale
    return lo, hi


@settings(max_examples=150, deadline=None)
@given(qp=quant_params(), data=st.data())
def test_quantize_dequantize_round_trip(qp: QuantParams, data: st.DataObject) -> None:
    shape = _shape_for(qp)
    lo, hi = _bounds(qp, 2)
    unit = data.draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
    x = lo + unit * (hi - lo)  # every element inside the representable range
    q = qp.quantize(x)
    assert q.dtype == (np.int8 if qp.signed else np.uint8)
    assert q.min() >= qp.qmin and q.max() <= qp.qmax
    x_hat = qp.dequantize(q, dtype=np.float64)
    half = np.broadcast_to(np.asarray(qp.scale) / 2, shape)
    assert np.all(np.abs(x_hat - x) <= half * (1 + 1e-9))
    # quantize ∘ dequantize is the identity on integers in range
    assert np.array_equal(qp.quantize(x_hat), q)


@settings(max_examples=100, deadline=None)
@given(qp=quant_params(), data=st.data())
def test_quantize_clamps_and_inverts_on_integers(qp: QuantParams, data: st.DataObject) -> None:
    shape = _shape_for(qp)
    q = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(qp.qmin, qp.qmax)))
    assert np.array_equal(qp.quantize(qp.dequantize(q, dtype=np.float64)), q)
    big = np.full(shape, 1e6)
    assert np.all(qp.quantize(big) == qp.qmax) and np.all(qp.quantize(-big) == qp.qmin)


def test_quantize_matches_hand_formula_per_channel() -> None:
    qp = QuantParams(bits=4, signed=True, scale=np.array([0.5, 0.25]), zero_point=np.array([1, -2]), axis=0)
    x = np.array([[0.25, 0.75, -10.0], [0.125, 0.375, 2.0]])
    expected = np.clip(np.rint(x / np.array([[0.5], [0.25]])) + np.array([[1], [-2]]), -8, 7)
    assert np.array_equal(qp.quantize(x), expected)
    assert qp.quantize(x).tolist() == [[1, 3, -8], [-2, 0, 6]]  # ties to even: 0.5 → 0, 1.5 → 2


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bits": 9}, "outside the supported range"),
        ({"bits": 0}, "outside the supported range"),
        ({"bits": 1, "signed": False}, "must be signed"),
        ({"bits": 8, "scale": 0.0}, "positive and finite"),
        ({"bits": 8, "scale": -1.0}, "positive and finite"),
        ({"bits": 8, "scale": float("nan")}, "positive and finite"),
        ({"bits": 8, "scale": float("inf")}, "positive and finite"),
        ({"bits": 4, "zero_point": 8}, "outside [-8, 7]"),
        ({"bits": 8, "signed": False, "zero_point": -1}, "outside [0, 255]"),
        ({"bits": 8, "zero_point": 0.5}, "integer values"),
        ({"bits": 8, "scale": 0.3, "scale_kind": "po2"}, "not a power of two"),
        ({"bits": 8, "scale_kind": "log"}, "scale_kind must be"),
        ({"bits": 8, "axis": 0}, "needs a per-channel"),
        ({"bits": 8, "scale": np.array([0.1, 0.2])}, "need an axis"),
        (
            {"bits": 8, "scale": np.array([0.1, 0.2]), "zero_point": np.array([0, 0, 0]), "axis": 0},
            "3 entries",
        ),
        ({"bits": 8, "scale": np.ones((2, 2)), "axis": 0}, "1-D"),
        ({"bits": 8, "scale": 0.1, "scale_kind": "dyadic"}, "not exactly"),
    ],
)
def test_validation_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(QuantizationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        QuantParams(**kwargs)


def test_valid_special_cases() -> None:
    assert QuantParams(bits=8, scale=0.125, scale_kind="po2").scale == 0.125
    assert QuantParams(bits=8, scale=float(np.float32(0.1)), scale_kind="dyadic").scale_kind == "dyadic"
    bip = QuantParams(bits=1, signed=True, scale=2.0)
    assert (bip.qmin, bip.qmax, bip.int_type) == (-1, 1, BIPOLAR)
    assert bip.quantize(np.array([-0.1, 0.0, 3.0])).tolist() == [-1, 1, 1]
    # QONNX ranges: narrow signed drops −2^(b−1), narrow unsigned drops 2^b − 1
    assert (QuantParams(8, True, narrow_range=True).qmin, QuantParams(8, False, narrow_range=True).qmax) == (
        -127,
        254,
    )


def test_quantize_rejects_channel_mismatch() -> None:
    qp = QuantParams(bits=8, scale=np.array([0.1, 0.2]), axis=1)
    with pytest.raises(QuantizationError, match="3 channels on axis 1"):
        qp.quantize(np.zeros((2, 3)))


@settings(max_examples=50, deadline=None)
@given(qp=quant_params())
def test_json_round_trip(qp: QuantParams) -> None:
    assert QuantParams.from_json(qp.to_json()) == qp


def test_from_json_errors() -> None:
    with pytest.raises(QuantizationError, match="not valid JSON"):
        QuantParams.from_json("{bits")
    with pytest.raises(QuantizationError, match="bad quantization parameter keys"):
        QuantParams.from_json('{"bits": 8, "colour": 1}')


def test_metadata_survives_onnx_round_trip() -> None:
    x = ir.Value(name="x", type=ir.TensorType(ir.DataType.FLOAT), shape=ir.Shape([2, 3]))
    w = ir.Value(
        name="w",
        const_value=ir.tensor(np.ones((2, 3), np.float32)),
        type=ir.TensorType(ir.DataType.FLOAT),
        shape=ir.Shape([2, 3]),
    )
    add = ir.node("Add", [x, w])
    t = add.outputs[0]
    t.name = "t"
    relu = ir.node("Relu", [t])
    y = relu.outputs[0]
    y.name, y.type, y.shape = "y", ir.TensorType(ir.DataType.FLOAT), ir.Shape([2, 3])
    graph = ir.Graph([x], [y], nodes=[add, relu], initializers=[w], opset_imports={"": 21}, name="g")
    params = {
        "x": QuantParams(bits=8, signed=False, scale=0.02, zero_point=128),
        "w": QuantParams(
            bits=4, scale=np.array([0.5, 0.25]), zero_point=np.array([0, 1]), axis=0, narrow_range=True
        ),
        "t": QuantParams(bits=3, scale=0.0625, scale_kind="po2"),
        "y": QuantParams(bits=1, scale=1.5),
    }
    for v in (x, w, t, y):
        set_quant(v, params[v.name])
    proto = ir.serde.serialize_model(ir.Model(graph, ir_version=10))
    onnx.checker.check_model(proto)
    back = ir.serde.deserialize_model(onnx.load_from_string(proto.SerializeToString()))
    g = back.graph
    values = {v.name: v for v in (*g.inputs, *g.outputs, *g.initializers.values(), g.node(0).outputs[0])}
    for name, qp in params.items():
        assert get_quant(values[name]) == qp, name
    set_quant(values["t"], None)
    assert get_quant(values["t"]) is None


def test_get_quant_names_value_with_bad_metadata() -> None:
    v = ir.Value(name="act3")
    v.metadata_props["mlpc.quant"] = '{"bits": 12}'
    with pytest.raises(QuantizationError, match="act3.*bits=12"):
        get_quant(v)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-9, max_value=1e6, allow_nan=False))
def test_dyadic_approximation(multiplier: float) -> None:
    m, shift = dyadic(multiplier)
    assert 0 < m < 2**31 and 0 <= shift <= 62
    assert abs(math.ldexp(m, -shift) - multiplier) <= multiplier * 2.0**-30


def test_dyadic_errors() -> None:
    for bad in (0.0, -1.0, float("nan"), 2.0**32):
        with pytest.raises(QuantizationError):
            dyadic(bad)


@settings(max_examples=100, deadline=None)
@given(
    acc=hnp.arrays(np.int32, (4, 3), elements=st.integers(-(2**20), 2**20)),
    multipliers=st.lists(st.floats(1e-5, 0.5), min_size=3, max_size=3),
    zp=st.integers(-20, 20),
)
def test_requantize_per_channel_matches_float(acc: np.ndarray, multipliers: list[float], zp: int) -> None:
    ms, shifts = zip(*(dyadic(m) for m in multipliers))
    got = requantize(acc, np.array(ms), np.array(shifts), zp, -128, 127, axis=1)
    exact = acc.astype(np.float64) * np.array(multipliers)
    # round-half-up on the exact dyadic value
    dyadic_value = acc.astype(np.float64) * np.array([math.ldexp(m, -s) for m, s in zip(ms, shifts)])
    assert np.array_equal(got, np.clip(np.floor(dyadic_value + 0.5) + zp, -128, 127))
    assert np.all(np.abs(got - np.clip(np.rint(exact) + zp, -128, 127)) <= 1)


def test_requantize_rounding_convention() -> None:
    # 2^-1 multiplier: halves round toward +inf
    got = requantize(np.array([1, 3, -1, -3, 5]), 1, 1, 0, -128, 127)
    assert got.tolist() == [1, 2, 0, -1, 3]
    assert requantize(np.array([7]), 3, 0, 0, -8, 7).tolist() == [7]  # shift 0, clamped


def test_int_types() -> None:
    assert (INT4.min(), INT4.max(), UINT2.max(), INT8.min(), UINT8.max()) == (-8, 7, 3, -128, 255)
    assert (BIPOLAR.min(), BIPOLAR.max(), TERNARY.min(), TERNARY.max(), TERNARY.bits) == (-1, 1, -1, 1, 2)
    assert BIPOLAR.allowed([-1, 1]) and not BIPOLAR.allowed(0)
    assert TERNARY.allowed([-1, 0, 1]) and not TERNARY.allowed(2)
    assert INT4.allowed(np.array([-8.0, 7.0])) and not INT4.allowed(7.5) and not INT4.allowed(8)
    assert int_type("uint3").name == "UINT3" and int_type("INT6").signed
    with pytest.raises(QuantizationError, match="unknown integer type 'INT9'"):
        int_type("INT9")
