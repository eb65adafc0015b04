"""QuantizeLinear/DequantizeLinear against onnxruntime; QONNX Quant/BipolarQuant against a NumPy
implementation of the QONNX formula."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper
from ort_harness import assert_close, check_ort, make_model, mlpc_run, ort_run, rand

QONNX = "qonnx.custom_op.general"


def _x_with_ties(scale: float, seed: int, shape=(2, 4, 6)) -> np.ndarray:
    x = rand(*shape, seed=seed, low=-300 * scale, high=300 * scale)
    flat = x.reshape(-1)
    flat[:8] = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 127.5, -128.5], np.float32) * np.float32(scale)
    return x


@pytest.mark.parametrize("opset", [13, 19, 21])
def test_quantize_dequantize_linear(opset):
    scale = 0.05
    x = _x_with_ties(0.05, seed=1)
    ch_scale = np.array([0.02, 0.05, 0.1, 0.5], np.float32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp_u8"], ["q_u8"]),
        helper.make_node("QuantizeLinear", ["x", "s", "zp_i8"], ["q_i8"]),
        helper.make_node("QuantizeLinear", ["x", "s"], ["q_default"]),
        helper.make_node("QuantizeLinear", ["x", "s_ch", "zp_ch"], ["q_axis"], axis=1),
        helper.make_node("DequantizeLinear", ["q_u8", "s", "zp_u8"], ["dq_u8"]),
        helper.make_node("DequantizeLinear", ["q_axis", "s_ch", "zp_ch"], ["dq_axis"], axis=1),
        helper.make_node("DequantizeLinear", ["w_i8", "s_w", "zp_w"], ["dq_w"], axis=0),
        helper.make_node("DequantizeLinear", ["b_i32", "s"], ["dq_i32"]),
    ]
    inits = {"s": np.array(scale, np.float32), "zp_u8": np.array(120, np.uint8), "zp_i8": np.array(-3, np.int8),
             "s_ch": ch_scale, "zp_ch": np.array([0, 5, -5, 100], np.int8),
             "w_i8": np.random.default_rng(2).integers(-128, 128, size=(3, 4)).astype(np.int8),
             "s_w": np.array([0.1, 0.2, 0.3], np.float32), "zp_w": np.array([1, -2, 0], np.int8),
             "b_i32": np.array([-70000, 5, 123456], np.int32)}
    outs = ["q_u8", "q_i8", "q_default", "q_axis", "dq_u8", "dq_axis", "dq_w", "dq_i32"]
    check_ort(nodes, {"x": x}, outs, inits, opset)


@pytest.mark.parametrize("signed", [True, False])
def test_int4_quantize_dequantize_opset21(signed):
    x = _x_with_ties(0.25, seed=3)
    zp_type = TensorProto.INT4 if signed else TensorProto.UINT4
    zp = helper.make_tensor("zp", zp_type, [], [1 if signed else 8])
    w = helper.make_tensor("w", zp_type, [2, 3], [-8, 7, 0, 3, -1, 5] if signed else [0, 15, 3, 8, 9, 1])
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["dq"]),
        helper.make_node("DequantizeLinear", ["w", "s_w", "zp"], ["dq_w"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
        [helper.make_tensor_value_info("dq", TensorProto.FLOAT, x.shape),
         helper.make_tensor_value_info("dq_w", TensorProto.FLOAT, [2, 3])],
        initializer=[zp, w, helper.make_tensor("s", TensorProto.FLOAT, [], [0.25]),
                     helper.make_tensor("s_w", TensorProto.FLOAT, [], [0.5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    ref = ort_run(model, {"x": x})
    got = mlpc_run(model, {"x": x})
    for name, g, r in zip(["dq", "dq_w"], got, ref):
        assert_close(g, r, name)


# -- QONNX -----------------------------------------------------------------------------------


def qonnx_quant_ref(x, scale, zp, bits, signed, narrow, rounding="ROUND"):
    """The QONNX Quant formula, written out in NumPy."""
    if signed:
        lo, hi = -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    else:
        lo, hi = 0, 2**bits - 1 - int(narrow)
    y = x / scale + zp
    rnd = {"ROUND": np.round, "ROUND_TO_ZERO": np.fix, "CEIL": np.ceil, "FLOOR": np.floor}[rounding]
    y = rnd(np.clip(y, lo, hi))
    return ((y - zp) * scale).astype(np.float32)


def _qonnx_case(nodes, inits, outputs, refs, x, domain=QONNX):
    """Run a model of QONNX nodes through mlpc and compare every output with its NumPy reference."""
    out_types = {n: (np.float32, r.shape) for n, r in zip(outputs, refs)}
    model = make_model(nodes, {"x": x}, outputs, inits, 13, out_types, extra_domains=[domain])
    got = mlpc_run(model, {"x": x})
    for name, g, r in zip(outputs, got, refs):
        assert_close(g, r, name)


def test_qonnx_quant_bits_signedness_narrow_scales():
    x = rand(2, 3, 5, seed=4, low=-3, high=3)
    scales = {"tensor": np.array(0.1, np.float32), "channel": np.array([0.05, 0.2, 0.5], np.float32).reshape(1, 3, 1)}
    zps = {"tensor": np.array(0.0, np.float32), "channel": np.array([0.0, 1.0, 2.0], np.float32).reshape(1, 3, 1)}
    nodes, inits, outs, refs = [], {}, [], []
    for kind in scales:
        inits[f"s_{kind}"], inits[f"z_{kind}"] = scales[kind], zps[kind]
    for bits, signed, narrow, kind in itertools.product(range(2, 9), [True, False], [False, True], scales):
        name = f"q{bits}_{'s' if signed else 'u'}_{'n' if narrow else 'w'}_{kind}"
        inits[f"b{bits}"] = np.array(bits, np.float32)
        nodes.append(helper.make_node("Quant", ["x", f"s_{kind}", f"z_{kind}", f"b{bits}"], [name],
                                      domain=QONNX, signed=int(signed), narrow=int(narrow)))
        outs.append(name)
        refs.append(qonnx_quant_ref(x, scales[kind], zps[kind], bits, signed, narrow))
    _qonnx_case(nodes, inits, outs, refs, x)


@pytest.mark.parametrize("domain", ["onnx.brevitas", "finn.custom_op.general"])
def test_qonnx_rounding_modes_bipolar_and_domains(domain):
    x = rand(4, 7, seed=5, low=-2, high=2)
    x[0, :4] = [0.05, 0.15, -0.25, 0.35]  # exact ties at scale 0.1
    inits = {"s": np.array(0.1, np.float32), "z": np.array(0.0, np.float32), "b": np.array(4, np.float32),
             "s2": np.array(0.75, np.float32)}
    nodes, outs, refs = [], [], []
    for mode in ["ROUND", "ROUND_TO_ZERO", "CEIL", "FLOOR"]:
        nodes.append(helper.make_node("Quant", ["x", "s", "z", "b"], [mode], domain=domain, rounding_mode=mode))
        outs.append(mode)
        refs.append(qonnx_quant_ref(x, np.float32(0.1), np.float32(0.0), 4, True, False, mode))
    nodes.append(helper.make_node("BipolarQuant", ["x", "s2"], ["bipolar"], domain=domain))
    outs.append("bipolar")
    refs.append(np.where(x >= 0, 1.0, -1.0).astype(np.float32) * np.float32(0.75))
    _qonnx_case(nodes, inits, outs, refs, x, domain)


def test_qonnx_trunc_v1_v2_and_intquant():
    x = (np.round(rand(3, 8, seed=6, low=-200, high=200)) * np.float32(0.5)).astype(np.float32)
    s, z = np.float32(0.5), np.float32(0.0)
    rnd = {"ROUND": np.round, "FLOOR": np.floor, "CEIL": np.ceil}
    inits = {"s": np.array(s), "z": np.array(z), "in_b": np.array(10, np.float32), "out_b": np.array(4, np.float32),
             "out_s": np.array(8.0, np.float32), "b": np.array(5, np.float32)}
    nodes, outs, refs = [], [], []
    for mode, f in rnd.items():
        nodes.append(helper.make_node("Trunc", ["x", "s", "z", "in_b", "out_b"], [f"v1_{mode}"], domain=QONNX,
                                      rounding_mode=mode))
        outs.append(f"v1_{mode}")
        refs.append(((f(np.round(x / s + z) / 2.0**6) - z) * s).astype(np.float32))
        nodes.append(helper.make_node("Trunc", ["x", "s", "z", "in_b", "out_s", "out_b"], [f"v2_{mode}"],
                                      domain=QONNX, rounding_mode=mode, signed=1))
        outs.append(f"v2_{mode}")
        y = np.clip(np.round(x / s + z) / 16.0, -8, 7)
        refs.append(((f(y) - z / 16.0) * np.float32(8.0)).astype(np.float32))
    nodes.append(helper.make_node("IntQuant", ["x", "s", "z", "b"], ["iq"], domain=QONNX, signed=0, narrow=1))
    outs.append("iq")
    refs.append(qonnx_quant_ref(x, s, z, 5, False, True))
    _qonnx_case(nodes, inits, outs, refs, x)
