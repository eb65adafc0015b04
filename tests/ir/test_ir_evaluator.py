"""The reference evaluator: standard ONNX graphs vs onnxruntime, QONNX Quant/BipolarQuant/Trunc
vs hand-written numpy formulas, integer mlpc graphs, and input validation."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlpc.errors import InputError, QuantizationError
from mlpc.ir import ReferenceEvaluator

RNG = np.random.default_rng(1)
QONNX = "qonnx.custom_op.general"


def _cnn() -> onnx.ModelProto:
    inits = [
        numpy_helper.from_array(RNG.normal(size=(4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(RNG.normal(size=(4,)).astype(np.float32), "b"),
        numpy_helper.from_array(RNG.normal(size=(4 * 4 * 4, 10)).astype(np.float32), "fc"),
        numpy_helper.from_array(RNG.normal(size=(10,)).astype(np.float32), "fcb"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["g"]),
        helper.make_node("Softmax", ["g"], ["y"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def test_float_model_matches_onnxruntime_and_accepts_onnx_ir_model() -> None:
    model = _cnn()
    x = RNG.normal(size=(2, 3, 8, 8)).astype(np.float32)
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    for m in (model, ir.serde.deserialize_model(model)):
        out = ReferenceEvaluator(m).run({"x": x})
        assert list(out) == ["y"]
        np.testing.assert_allclose(out["y"], ref, rtol=1e-5, atol=1e-6)
    inter = ReferenceEvaluator(model).run({"x": x}, outputs=["r", "y"])
    assert inter["r"].shape == (2, 4, 8, 8) and inter["r"].min() >= 0


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, r"missing inputs \['x'\]"),
        ({"x": np.zeros((1, 3, 8, 8), np.float32), "z": np.zeros(1)}, r"unknown inputs \['z'\]"),
        ({"x": np.zeros((3, 8, 8), np.float32)}, "input 'x' has rank 3.*expects rank 4"),
        ({"x": np.zeros((1, 3, 8, 9), np.float32)}, "dim 3 must be 8"),
        ({"x": np.zeros((1, 3, 8, 8), np.float64)}, "dtype float64.*float32"),
    ],
)
def test_input_errors(inputs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ReferenceEvaluator(_cnn()).run(inputs)


def test_symbolic_dim_must_agree_across_inputs() -> None:
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "g",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n", 2]) for n in "ab"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])],
    )
    ev = ReferenceEvaluator(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)]))
    with pytest.raises(InputError, match="dim 'n' is 3 in input 'a' but 4 in input 'b'"):
        ev.run({"a": np.zeros((3, 2), np.float32), "b": np.zeros((4, 2), np.float32)})


def _qonnx_model(
    op: str, consts: dict[str, np.ndarray], shape: tuple[int, ...], domain: str = QONNX, **attrs: object
) -> onnx.ModelProto:
    node = helper.make_node(op, ["x", *consts], ["y"], domain=domain, name="q0", **attrs)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in consts.items()],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(domain, 1)]
    )


ROUND = {
    "ROUND": lambda v: np.round(v),
    "ROUND_TO_ZERO": lambda v: np.trunc(v),
    "CEIL": lambda v: np.ceil(v),
    "FLOOR": lambda v: np.floor(v),
}


def _quant_formula(x, scale, zp, bits, signed, narrow, mode):
    """QONNX Quant by hand: scale, shift, clamp to the integer range, round, map back."""
    lo = -(2 ** (bits - 1)) + (1 if narrow else 0) if signed else 0
    hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1 - (1 if narrow else 0)
    v = np.clip(x / scale + zp, lo, hi)
    return ((ROUND[mode](v) - zp) * scale).astype(np.float32)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize(("signed", "narrow"), [(1, 0), (1, 1), (0, 0), (0, 1)])
@pytest.mark.parametrize("mode", list(ROUND))
def test_qonnx_quant_matches_formula(bits, signed, narrow, mode) -> None:
    x = (RNG.normal(size=(2, 3, 5)) * 4).astype(np.float32)
    x[0, 0, :3] = [0.25, 0.75, -0.25]  # exact ties at scale 0.5
    scale = np.array([0.5, 0.25, 0.125], np.float32).reshape(1, 3, 1)  # per channel
    zp = np.float32(1 if not signed else 0)
    model = _qonnx_model(
        "Quant",
        {"s": scale, "z": zp, "b": np.float32(bits)},
        x.shape,
        signed=signed,
        narrow=narrow,
        rounding_mode=mode,
    )
    y = ReferenceEvaluator(model).run({"x": x})["y"]
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, _quant_formula(x, scale, zp, bits, signed, narrow, mode))


def test_qonnx_quant_known_values_and_domains() -> None:
    x = np.array([0.3, -9.0, 0.25, 0.75, 100.0], np.float32)
    for domain in ("qonnx.custom_op.general", "onnx.brevitas", "finn.custom_op.general"):
        model = _qonnx_model(
            "Quant",
            {"s": np.float32(0.5), "z": np.float32(0), "b": np.float32(4)},
            x.shape,
            domain=domain,
            signed=1,
            narrow=0,
            rounding_mode="ROUND",
        )
        # x/s = 0.6, −18, 0.5, 1.5, 200 → clamp [−8, 7] → half-even round → ·0.5
        assert ReferenceEvaluator(model).run({"x": x})["y"].tolist() == [0.5, -4.0, 0.0, 1.0, 3.5]
    bipolar_bits = _qonnx_model(
        "Quant", {"s": np.float32(2), "z": np.float32(0), "b": np.float32(1)}, x.shape, signed=1, narrow=0
    )
    assert ReferenceEvaluator(bipolar_bits).run({"x": x - 0.3})["y"].tolist() == [2, -2, -2, 2, 2]


def test_qonnx_quant_missing_attribute_names_node() -> None:
    model = _qonnx_model(
        "Quant", {"s": np.float32(1), "z": np.float32(0), "b": np.float32(4)}, (3,), signed=1
    )
    with pytest.raises(QuantizationError, match="Quant node 'q0' lacks the required attribute 'narrow'"):
        ReferenceEvaluator(model).run({"x": np.zeros(3, np.float32)})


def test_bipolar_quant_matches_formula() -> None:
    x = np.array([[-1.5, 0.0, 2.0], [0.1, -0.0, -3.0]], np.float32)
    scale = np.array([[0.5], [2.0]], np.float32)
    y = ReferenceEvaluator(_qonnx_model("BipolarQuant", {"s": scale}, x.shape)).run({"x": x})["y"]
    np.testing.assert_array_equal(y, np.where(x >= 0, 1.0, -1.0) * scale)


def test_trunc_both_signatures_match_formula() -> None:
    x = np.arange(-40, 40, 3, dtype=np.float32) * 0.25  # integers −160…152 at scale 0.25
    s, z = np.float32(0.25), np.float32(0)
    v1 = _qonnx_model(
        "Trunc", {"s": s, "z": z, "ib": np.float32(9), "ob": np.float32(6)}, x.shape, rounding_mode="FLOOR"
    )
    y1 = ReferenceEvaluator(v1).run({"x": x})["y"]
    np.testing.assert_array_equal(y1, np.floor(np.round(x / s) / 8) * s)
    # 7 inputs: output scale 4× larger → drop 2 bits, clamp to signed 5 bits, express at output scale
    v2 = _qonnx_model(
        "Trunc",
        {"s": s, "z": z, "ib": np.float32(9), "os": np.float32(1.0), "oz": z, "ob": np.float32(5)},
        x.shape,
        rounding_mode="ROUND",
        signed=1,
        narrow=0,
    )
    y2 = ReferenceEvaluator(v2).run({"x": x})["y"]
    np.testing.assert_array_equal(y2, np.round(np.clip(np.round(x / s) / 4, -16, 15)) * 1.0)


def test_integer_graph_without_declared_mlpc_opset() -> None:
    a = RNG.integers(-128, 128, (3, 6)).astype(np.int8)
    b = RNG.integers(-128, 128, (6, 4)).astype(np.int8)
    nodes = [
        helper.make_node("IntegerMatMul", ["a", "b"], ["acc"], domain="mlpc"),
        helper.make_node("Requantize", ["acc", "m", "s", "zp"], ["y"], domain="mlpc", qmin=0),
    ]
    inits = [
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.array(1 << 30, np.int32), "m"),
        numpy_helper.from_array(np.array(38, np.int32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "zp"),
    ]
    graph = helper.make_graph(
        nodes,
        "int",
        [helper.make_tensor_value_info("a", TensorProto.INT8, [3, 6])],
        [helper.make_tensor_value_info("y", TensorProto.INT8, [3, 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])  # no "mlpc" import
    y = ReferenceEvaluator(model).run({"a": a})["y"]
    acc = a.astype(np.int64) @ b.astype(np.int64)
    np.testing.assert_array_equal(y, np.clip(np.floor(acc / 256 + 0.5), 0, 127))  # 2^30 >> 38 = 1/256, ReLU


@pytest.mark.parametrize("opset", [13, 17, 21])
def test_dequantize_linear_runs_at_every_opset(opset: int) -> None:
    """onnx.reference only has DequantizeLinear from opset 19; lower-quant emits it at any opset."""

    graph = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])], "g",
        [helper.make_tensor_value_info("q", TensorProto.INT8, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[onnx.numpy_helper.from_array(np.float32(0.5), "s"),
                     onnx.numpy_helper.from_array(np.int8(1), "z")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    got = ReferenceEvaluator(model).run({"q": np.array([-128, 0, 1, 127], np.int8)})["y"]
    np.testing.assert_array_equal(got, [-64.5, -0.5, 0.0, 63.0])


@pytest.mark.parametrize("shape", [(), (2, 3)])
def test_loop_stacks_scan_outputs_on_a_new_axis(shape):
    # Found by the ONNX node conformance sweep (the Range function expansions): onnx.reference's
    # Loop joined scan outputs with np.vstack, so 0-d values came out (n, 1) and 2-D ones were
    # concatenated instead of stacked.
    from onnx import TensorProto, helper

    from mlpc.ir import ReferenceEvaluator

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Add", ["prev", "step"], ["next"]),
         helper.make_node("Identity", ["prev"], ["scan"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("prev", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("next", TensorProto.FLOAT, list(shape)),
         helper.make_tensor_value_info("scan", TensorProto.FLOAT, list(shape))],
    )
    loop = helper.make_node("Loop", ["n", "cond", "start"], ["last", "all"], body=body)
    graph = helper.make_graph(
        [loop], "g",
        [helper.make_tensor_value_info("n", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("start", TensorProto.FLOAT, list(shape)),
         helper.make_tensor_value_info("step", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("last", TensorProto.FLOAT, list(shape)),
         helper.make_tensor_value_info("all", TensorProto.FLOAT, [3, *shape])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    start = np.zeros(shape, np.float32)
    step = np.full(shape, 2.0, np.float32)
    out = ReferenceEvaluator(model).run({"n": np.array(3), "cond": np.array(True), "start": start, "step": step})
    np.testing.assert_array_equal(out["all"], np.stack([start, start + 2, start + 4]))
    np.testing.assert_array_equal(out["last"], start + 6)
