"""The mlpc op domain: schemas accepted by onnx.checker, inference vs kernel outputs, kernels
vs independent references (numpy float64, onnxruntime), Requantize vs float requantization."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlpc.errors import IRVerificationError, UnsupportedOpError
from mlpc.ir import MLPC_DOMAIN, QuantParams, ReferenceEvaluator, dyadic, get_op, list_ops
from mlpc.ir.ops import infer

RNG = np.random.default_rng(0)
NP2ONNX = {
    np.dtype(np.int8): TensorProto.INT8,
    np.dtype(np.uint8): TensorProto.UINT8,
    np.dtype(np.int32): TensorProto.INT32,
    np.dtype(np.float32): TensorProto.FLOAT,
}


def _model(
    op: str,
    feeds: dict[str, np.ndarray],
    consts: dict[str, np.ndarray | None],
    out_dtype: int,
    out_shape: tuple[int, ...],
    **attrs: object,
) -> onnx.ModelProto:
    """A one-node mlpc model: `feeds` become graph inputs, `consts` initializers (None = absent);
    the output is declared with symbolic dims of out_shape's rank (the checker needs a shape)."""
    names = [*feeds, *consts]
    node = helper.make_node(
        op,
        [n if (n in feeds or consts[n] is not None) else "" for n in names],
        ["y"],
        domain=MLPC_DOMAIN,
        name=f"{op.lower()}0",
        **attrs,
    )
    inputs = [helper.make_tensor_value_info(n, NP2ONNX[a.dtype], a.shape) for n, a in feeds.items()]
    inits = [numpy_helper.from_array(a, n) for n, a in consts.items() if a is not None]
    out = helper.make_tensor_value_info("y", out_dtype, [f"d{i}" for i in range(len(out_shape))])
    graph = helper.make_graph([node], "g", inputs, [out], inits)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MLPC_DOMAIN, 1)]
    )


def _ort_run(graph: onnx.GraphProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0]


def _run_and_check(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Check the model, run it, and assert mlpc's infer() and onnx shape inference agree with
    the kernel's output shape and dtype."""
    onnx.checker.check_model(model)
    y = ReferenceEvaluator(model).run(feeds)["y"]
    graph = ir.serde.deserialize_model(model).graph
    ((shape, dtype),) = infer(graph.node(0))
    assert tuple(shape) == y.shape and dtype.numpy() == y.dtype
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0].type.tensor_type
    assert [d.dim_value for d in inferred.shape.dim] == list(y.shape)
    assert helper.tensor_dtype_to_np_dtype(inferred.elem_type) == y.dtype
    return y


def test_registry() -> None:
    assert list_ops() == ["Attention", "ConvNHWC", "DequantMatMul", "IntegerAdd", "IntegerConv", "IntegerMatMul", "Requantize", "SiLU"]
    for name in list_ops():
        op = get_op(name)
        assert onnx.defs.get_schema(name, 1, MLPC_DOMAIN).name == name
        assert op.kernel.op_domain == MLPC_DOMAIN and op.schema.has_type_and_shape_inference_function
    with pytest.raises(UnsupportedOpError, match="unknown mlpc op 'Nope'"):
        get_op("Nope")


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "a_type", "b_type"),
    [
        ((4, 5), (5, 3), np.int8, np.int8),
        ((2, 1, 4, 5), (3, 5, 6), np.uint8, np.int8),
        ((5,), (5, 3), np.int8, np.uint8),
        ((2, 4, 5), (5,), np.uint8, np.uint8),
    ],
)
@pytest.mark.parametrize("with_zp", [False, True])
def test_integer_matmul(a_shape, b_shape, a_type, b_type, with_zp) -> None:
    a = RNG.integers(np.iinfo(a_type).min, np.iinfo(a_type).max + 1, a_shape).astype(a_type)
    b = RNG.integers(np.iinfo(b_type).min, np.iinfo(b_type).max + 1, b_shape).astype(b_type)
    azp = np.array(RNG.integers(0, 100), a_type) if with_zp else None
    bzp = np.array(RNG.integers(0, 100), b_type) if with_zp else None
    expected = np.matmul(
        a.astype(np.float64) - (azp if with_zp else 0), b.astype(np.float64) - (bzp if with_zp else 0)
    )
    y = _run_and_check(
        _model(
            "IntegerMatMul",
            {"a": a},
            {"b": b, "a_zero_point": azp, "b_zero_point": bzp},
            TensorProto.INT32,
            expected.shape,
        ),
        {"a": a},
    )
    assert y.dtype == np.int32 and np.array_equal(y, expected)


def test_integer_matmul_per_column_zero_point_matches_onnxruntime_matmulinteger() -> None:
    a = RNG.integers(0, 256, (2, 4, 7)).astype(np.uint8)
    b = RNG.integers(-128, 128, (7, 3)).astype(np.int8)
    azp = np.array(131, np.uint8)
    bzp = RNG.integers(-128, 128, (3,)).astype(np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b", "azp", "bzp"], ["y"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, a.shape)],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        [
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(azp, "azp"),
            numpy_helper.from_array(bzp, "bzp"),
        ],
    )
    ref = _ort_run(graph, {"a": a})
    model = _model(
        "IntegerMatMul",
        {"a": a},
        {"b": b, "a_zero_point": azp, "b_zero_point": bzp},
        TensorProto.INT32,
        ref.shape,
    )
    assert np.array_equal(_run_and_check(model, {"a": a}), ref)


def test_integer_matmul_per_row_zero_point() -> None:
    a = RNG.integers(-128, 128, (4, 7)).astype(np.int8)
    b = RNG.integers(0, 256, (7, 3)).astype(np.uint8)
    azp = RNG.integers(-128, 128, (4,)).astype(np.int8)
    expected = (a.astype(np.float64) - azp[:, None].astype(np.float64)) @ b.astype(np.float64)
    model = _model("IntegerMatMul", {"a": a}, {"b": b, "a_zero_point": azp}, TensorProto.INT32, (4, 3))
    assert np.array_equal(_run_and_check(model, {"a": a}), expected)


def test_integer_matmul_inference_names_node_on_mismatch() -> None:
    model = _model(
        "IntegerMatMul",
        {"a": np.zeros((2, 3), np.int8)},
        {"b": np.zeros((4, 5), np.int8)},
        TensorProto.INT32,
        (2, 5),
    )
    node = ir.serde.deserialize_model(model).graph.node(0)
    with pytest.raises(IRVerificationError, match="IntegerMatMul node 'integermatmul0'.*K=3.*K=4"):
        infer(node)
    # onnx's own shape inference leaves the output as declared instead of raising
    inferred = onnx.shape_inference.infer_shapes(model)
    assert inferred.graph.output[0].type.tensor_type.shape.dim[1].dim_param == "d1"


def _ort_float_conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, **attrs: object) -> np.ndarray:
    inputs = ["x", "w"] + (["b"] if bias is not None else [])
    inits = [numpy_helper.from_array(w, "w")] + (
        [numpy_helper.from_array(bias, "b")] if bias is not None else []
    )
    graph = helper.make_graph(
        [helper.make_node("Conv", inputs, ["y"], **attrs)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    return _ort_run(graph, {"x": x})


CONV_CASES = [
    ((1, 4, 9, 8), (6, 4, 3, 3), {}),
    ((2, 4, 9, 8), (6, 2, 3, 2), {"strides": [2, 1], "pads": [1, 0, 2, 1], "group": 2}),
    ((1, 6, 10, 10), (6, 1, 3, 3), {"dilations": [2, 2], "group": 6, "pads": [2, 2, 2, 2]}),
    ((1, 3, 7, 9), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 3, 7, 9), (4, 3, 2, 2), {"auto_pad": "SAME_LOWER"}),
    ((2, 3, 16), (5, 3, 4), {"strides": [3], "pads": [1, 2], "dilations": [2]}),
    ((1, 4, 11), (4, 2, 3), {"group": 2, "auto_pad": "VALID"}),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "attrs"), CONV_CASES)
@pytest.mark.parametrize(("x_type", "w_type"), [(np.uint8, np.int8), (np.int8, np.int8)])
def test_integer_conv_matches_onnxruntime_float_conv(x_shape, w_shape, attrs, x_type, w_type) -> None:
    x = RNG.integers(np.iinfo(x_type).min, np.iinfo(x_type).max + 1, x_shape).astype(x_type)
    w = RNG.integers(-128, 128, w_shape).astype(w_type)
    xzp = np.array(7 if x_type == np.uint8 else -3, x_type)
    wzp = RNG.integers(-5, 5, (w_shape[0],)).astype(w_type)
    bias = RNG.integers(-1000, 1000, (w_shape[0],)).astype(np.int32)
    # float32 is exact here: every partial sum stays below 2^24
    xf = x.astype(np.float32) - np.float32(xzp)
    wf = w.astype(np.float32) - wzp.astype(np.float32).reshape(-1, *([1] * (w.ndim - 1)))
    ref = _ort_float_conv(xf, wf, bias.astype(np.float32), **attrs)
    model = _model(
        "IntegerConv",
        {"x": x},
        {"w": w, "x_zero_point": xzp, "w_zero_point": wzp, "bias": bias},
        TensorProto.INT32,
        ref.shape,
        **attrs,
    )
    y = _run_and_check(model, {"x": x})
    assert y.dtype == np.int32 and np.array_equal(y, ref.astype(np.int64))


def test_integer_conv_without_optional_inputs_and_bad_group() -> None:
    x = RNG.integers(-128, 128, (1, 2, 5, 5)).astype(np.int8)
    w = RNG.integers(-128, 128, (3, 2, 3, 3)).astype(np.int8)
    ref = _ort_float_conv(x.astype(np.float32), w.astype(np.float32), None, pads=[1, 1, 1, 1])
    y = _run_and_check(
        _model("IntegerConv", {"x": x}, {"w": w}, TensorProto.INT32, ref.shape, pads=[1, 1, 1, 1]), {"x": x}
    )
    assert np.array_equal(y, ref)
    bad = _model("IntegerConv", {"x": x}, {"w": w}, TensorProto.INT32, (1, 3, 3, 3), group=2)
    with pytest.raises(IRVerificationError, match="IntegerConv node 'integerconv0'.*2 channels"):
        infer(ir.serde.deserialize_model(bad).graph.node(0))


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize(("out_type", "zp"), [(np.int8, -5), (np.uint8, 120)])
def test_requantize_matches_float_requantization(per_channel, out_type, zp) -> None:
    acc = RNG.integers(-40000, 40000, (3, 4, 5)).astype(np.int32)
    s_in, s_out = 0.02, 0.9
    s_w = RNG.uniform(0.001, 0.05, 4) if per_channel else np.float64(0.01)
    real = s_in * s_w / s_out
    pairs = [dyadic(float(r)) for r in np.atleast_1d(real)]
    m = np.array([p[0] for p in pairs], np.int32).reshape(np.shape(real))
    shift = np.array([p[1] for p in pairs], np.int32).reshape(np.shape(real))
    model = _model(
        "Requantize",
        {"x": acc},
        {"multiplier": m, "shift": shift, "zero_point": np.array(zp, out_type)},
        NP2ONNX[np.dtype(out_type)],
        acc.shape,
        axis=1,
    )
    y = _run_and_check(model, {"x": acc})
    # float path: dequantized accumulator requantized with QuantParams
    acc_scale = s_in * np.asarray(s_w)
    x_float = acc.astype(np.float64) * (acc_scale.reshape(1, 4, 1) if per_channel else acc_scale)
    qp = QuantParams(bits=8, signed=out_type == np.int8, scale=s_out, zero_point=zp)
    expected = qp.quantize(x_float)
    assert y.dtype == out_type
    assert np.max(np.abs(y.astype(np.int64) - expected.astype(np.int64))) <= 1
    assert np.mean(y == expected) > 0.95  # ties/rounding differ only rarely


def test_requantize_sub_byte_range_and_folded_relu() -> None:
    acc = np.arange(-300, 300, 7, dtype=np.int32).reshape(1, -1)
    m, s = dyadic(0.05)
    exact = acc * math.ldexp(m, -s)  # the dyadic value, exact in float64
    consts = {
        "multiplier": np.array(m, np.int32),
        "shift": np.array(s, np.int32),
        "zero_point": np.array(2, np.int8),
    }
    int4 = _run_and_check(
        _model("Requantize", {"x": acc}, consts, TensorProto.INT8, acc.shape, qmin=-8, qmax=7), {"x": acc}
    )
    assert np.array_equal(int4, np.clip(np.floor(exact + 0.5) + 2, -8, 7))
    relu = _run_and_check(
        _model("Requantize", {"x": acc}, consts, TensorProto.INT8, acc.shape, qmin=2), {"x": acc}
    )
    assert np.array_equal(relu, np.clip(np.floor(exact + 0.5) + 2, 2, 127))
    bad = _model("Requantize", {"x": acc}, consts, TensorProto.INT8, acc.shape, qmin=-200)
    with pytest.raises(IRVerificationError, match="Requantize node 'requantize0'.*does not fit"):
        infer(ir.serde.deserialize_model(bad).graph.node(0))
    wrong_channels = _model(
        "Requantize",
        {"x": acc},
        {**consts, "multiplier": np.full(3, m, np.int32)},
        TensorProto.INT8,
        acc.shape,
    )
    with pytest.raises(IRVerificationError, match="multiplier has 3 channels"):
        infer(ir.serde.deserialize_model(wrong_channels).graph.node(0))
