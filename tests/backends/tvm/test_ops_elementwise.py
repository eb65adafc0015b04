"""Element-wise converters against onnxruntime: arithmetic, comparisons, logic, activations."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from ort_harness import check_ort, make_model, mlpc_run, rand

UNARY = ["Neg", "Abs", "Exp", "Floor", "Ceil", "Round", "Sign", "Relu", "Sigmoid", "Tanh", "Erf",
         "Identity", "HardSwish", "Softplus"]
POSITIVE_UNARY = ["Sqrt", "Log", "Reciprocal"]


def test_unary_float_ops():
    x = rand(3, 17, seed=1, low=-4, high=4)
    x[0, :6] = [0.5, 1.5, 2.5, -0.5, -1.5, -2.5]  # Round must round half to even
    p = rand(3, 17, seed=2, low=0.1, high=5)
    nodes = [helper.make_node(op, ["x"], [f"y_{op}"]) for op in UNARY]
    nodes += [helper.make_node(op, ["p"], [f"y_{op}"]) for op in POSITIVE_UNARY]
    check_ort(nodes, {"x": x, "p": p}, [f"y_{op}" for op in UNARY + POSITIVE_UNARY], opset=17)


@pytest.mark.parametrize("opset", [13, 17])
def test_activations_with_attributes(opset):
    x = rand(2, 4, 6, seed=3, low=-5, high=5)
    slope = rand(4, 1, seed=4, low=0, high=0.5)
    nodes = [
        helper.make_node("LeakyRelu", ["x"], ["leaky"], alpha=0.1),
        helper.make_node("PRelu", ["x", "slope"], ["prelu"]),
        helper.make_node("Elu", ["x"], ["elu"], alpha=0.7),
        helper.make_node("HardSigmoid", ["x"], ["hsig"], alpha=0.3, beta=0.4),
        helper.make_node("Clip", ["x", "lo", "hi"], ["clip"]),
        helper.make_node("Clip", ["x", "", "hi"], ["clip_hi"]),
        helper.make_node("Clip", ["x"], ["clip_none"]),
    ]
    inits = {"slope": slope, "lo": np.array(-1.5, np.float32), "hi": np.array(2.0, np.float32)}
    check_ort(nodes, {"x": x}, ["leaky", "prelu", "elu", "hsig", "clip", "clip_hi", "clip_none"], inits, opset)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20(approximate):
    check_ort([helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)],
              {"x": rand(4, 9, seed=5, low=-4, high=4)}, ["y"], opset=20)


def test_binary_float_broadcast():
    a = rand(2, 3, 4, seed=6)
    b = rand(3, 1, seed=7, low=0.5, high=2)
    ops = ["Add", "Sub", "Mul", "Div", "Min", "Max"]
    nodes = [helper.make_node(op, ["a", "b"], [f"y_{op}"]) for op in ops]
    nodes.append(helper.make_node("Pow", ["b", "a"], ["y_Pow"]))
    nodes.append(helper.make_node("Max", ["a", "b", "c"], ["y_Max3"]))
    nodes.append(helper.make_node("Mod", ["a", "b"], ["y_fmod"], fmod=1))
    outs = [f"y_{op}" for op in ops] + ["y_Pow", "y_Max3", "y_fmod"]
    check_ort(nodes, {"a": a, "b": b}, outs, {"c": rand(4, seed=8)}, opset=13)


def test_integer_arithmetic_and_mod():
    rng = np.random.default_rng(9)
    a = rng.integers(-50, 50, size=(4, 6)).astype(np.int32)
    b = rng.integers(1, 9, size=(6,)).astype(np.int32) * rng.choice([-1, 1], size=6).astype(np.int32)
    nodes = [
        helper.make_node("Mod", ["a", "b"], ["mod"]),
        helper.make_node("Mod", ["a", "b"], ["fmod"], fmod=1),
        helper.make_node("Div", ["a", "b"], ["div"]),
        helper.make_node("Add", ["a", "b"], ["add"]),
        helper.make_node("Mul", ["a", "b"], ["mul"]),
        helper.make_node("Neg", ["a"], ["neg"]),
        helper.make_node("Abs", ["a"], ["abs"]),
    ]
    check_ort(nodes, {"a": a, "b": b}, ["mod", "fmod", "div", "add", "mul", "neg", "abs"], opset=13)


def test_comparisons_logic_where_cast():
    a = np.round(rand(3, 5, seed=10), 0)
    b = np.round(rand(5, seed=11), 0)
    nodes = [helper.make_node(op, ["a", "b"], [f"c_{op}"])
             for op in ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"]]
    nodes += [
        helper.make_node("Not", ["c_Less"], ["not"]),
        helper.make_node("And", ["c_Less", "c_Equal"], ["and"]),
        helper.make_node("Or", ["c_Less", "c_Equal"], ["or"]),
        helper.make_node("Xor", ["c_Less", "c_Greater"], ["xor"]),
        helper.make_node("Where", ["c_Greater", "a", "b"], ["where"]),
        helper.make_node("Cast", ["a"], ["to_int"], to=6),
        helper.make_node("Cast", ["c_Less"], ["to_float"], to=1),
        helper.make_node("Cast", ["a"], ["to_bool"], to=9),
    ]
    outs = [f"c_{op}" for op in ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"]]
    outs += ["not", "and", "or", "xor", "where", "to_int", "to_float", "to_bool"]
    check_ort(nodes, {"a": a, "b": b}, outs, opset=13)


def test_dropout_inference_is_identity():
    check_ort([helper.make_node("Dropout", ["x"], ["y"])], {"x": rand(2, 5, seed=12)}, ["y"], opset=13)


# -- regressions found by the ONNX node conformance sweep (tests/conformance) ----------------


@pytest.mark.parametrize("pos,neg", [(1, 0), (0, 1), (0, 0), (1, 1)])
def test_isinf_honours_detect_positive_and_negative(pos, neg):
    # The converter ignored the attributes: IsInf(detect_positive=0) also flagged +inf.
    x = np.array([-1.7, np.nan, np.inf, -3.6, -np.inf, np.inf], np.float32)
    check_ort([helper.make_node("IsInf", ["x"], ["y"], detect_positive=pos, detect_negative=neg)],
              {"x": x}, ["y"], opset=20)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_pow_with_integer_base(dtype):
    # TVM's power is float-only: an integer Pow failed to build.
    base = np.array([1, 2, -3, 4, 0, 7], dtype)
    exponent = np.array([3, 5, 3, 0, 2, 1], dtype)
    fexp = np.array([2.0, 3.0, 2.0, 1.0, 0.0, 2.0], np.float32)
    nodes = [helper.make_node("Pow", ["b", "e"], ["y"]), helper.make_node("Pow", ["b", "f"], ["yf"])]
    check_ort(nodes, {"b": base, "e": exponent, "f": fexp}, ["y", "yf"], opset=15)


def test_float_mod_fmod0_with_infinite_and_zero_operands():
    # fmod=0 on floats is NumPy's mod: TVM's floor_mod gave NaN for an infinite divisor and the
    # wrong sign of zero. onnxruntime rejects fmod=0 on floats, so NumPy is the reference.
    x = np.array([0, -0.0, 0, -0.0, -3, 3, -1, 1, np.inf, -np.inf, 1, 1, np.nan, 1, 5.5, -5.5], np.float32)
    y = np.array([-2, 2, 2, -2, np.inf, np.inf, -np.inf, -np.inf, 2, 2, 0, -0.0, 2, np.nan, -2, 2], np.float32)
    model = make_model([helper.make_node("Mod", ["x", "y"], ["z"], fmod=0)], {"x": x, "y": y}, ["z"])
    with np.errstate(all="ignore"):
        expected = np.mod(x, y)
    (got,) = mlpc_run(model, {"x": x, "y": y})
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))


@pytest.mark.parametrize("mode", ["input", "true"])
def test_training_mode_dropout_is_refused(mode):
    # Dropout lowered to the identity whatever training_mode said: a training-mode Dropout fed
    # at run time gave unscaled, unmasked outputs. Only a constant false is inference.
    from mlpc.backends.tvm.lower import lower_graph
    from mlpc.errors import UnsupportedOpError

    x = rand(3, 4, seed=21)
    node = helper.make_node("Dropout", ["x", "ratio", "t"], ["y"], name="drop")
    feeds = {"x": x, "t": np.array(True)} if mode == "input" else {"x": x}
    inits = {"ratio": np.array(0.5, np.float32)}
    if mode == "true":
        inits["t"] = np.array(True)
    import onnx_ir as ir

    model = ir.serde.deserialize_model(make_model([node], feeds, ["y"], inits, opset=13))
    with pytest.raises(UnsupportedOpError, match="drop \\(Dropout\\): .*training_mode"):
        lower_graph(model.graph, 13)


def test_inference_dropout_is_the_identity():
    x = rand(3, 4, seed=22)
    node = helper.make_node("Dropout", ["x", "ratio", "t"], ["y", "mask"])
    check_ort([node], {"x": x}, ["y", "mask"], {"ratio": np.array(0.5, np.float32), "t": np.array(False)}, opset=13)


def test_fast_math_activations_track_float64_over_their_whole_range():
    """CPU float32 Erf, Tanh, Gelu, Sigmoid and Softmax take topi's polynomial erf/tanh/exp
    (`ops_elementwise.fast_math`): within 1e-6 of float64 from −12 to 12 (both tails included),
    and a softmax row whose logits span 100 still sums to 1 with the exact zeros underflowing."""
    from scipy.special import erf

    x = np.linspace(-12, 12, 20001, dtype=np.float32).reshape(1, -1)
    logits = rand(4, 33, seed=5, low=-100, high=0)
    nodes = [helper.make_node("Erf", ["x"], ["erf"]), helper.make_node("Tanh", ["x"], ["tanh"]),
             helper.make_node("Gelu", ["x"], ["gelu"], approximate="none"),
             helper.make_node("Gelu", ["x"], ["gelu_tanh"], approximate="tanh"),
             helper.make_node("Sigmoid", ["x"], ["sigmoid"]),
             helper.make_node("Softmax", ["logits"], ["softmax"], axis=-1)]
    names = ["erf", "tanh", "gelu", "gelu_tanh", "sigmoid", "softmax"]
    model = make_model(nodes, {"x": x, "logits": logits}, names, opset=20)
    got = dict(zip(names, mlpc_run(model, {"x": x, "logits": logits})))
    d = x.astype(np.float64)
    want = {"erf": erf(d), "tanh": np.tanh(d), "gelu": 0.5 * d * (1 + erf(d / np.sqrt(2))),
            "gelu_tanh": 0.5 * d * (1 + np.tanh(np.sqrt(2 / np.pi) * (d + 0.044715 * d**3))),
            "sigmoid": 1 / (1 + np.exp(-d))}
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-6, atol=1e-6, err_msg=name)
    e = np.exp(logits.astype(np.float64) - logits.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(got["softmax"], e / e.sum(axis=-1, keepdims=True), rtol=1e-6, atol=1e-12)
