"""QDQ/QONNX export (run by onnxruntime) and import of QDQ (onnxruntime), QCDQ and QONNX (Brevitas) models."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import batched
from mlpc.errors import QuantizationError
from mlpc.ir import ReferenceEvaluator, get_quant, verify
from mlpc.quant import import_quantized, quantize, to_qdq, to_qonnx


def ort_run(proto: onnx.ModelProto, x: np.ndarray, optimize: bool = True) -> np.ndarray:
    options = ort.SessionOptions()
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


@pytest.fixture(scope="module", params=["w4a8", "w2a8"])
def fake_quant(request, digits):
    return request.param, quantize(digits.model, request.param, {"x": digits.x_train[:32]}, engine="reference")


def test_qdq_export_runs_in_onnxruntime(fake_quant, digits):
    scheme, model = fake_quant
    x = digits.x_test[:100]
    ref = ReferenceEvaluator(batched(model)).run({"x": x})["logits"]
    proto = to_qdq(model)
    assert not any(n.op_type == "Quant" for n in proto.graph.node)
    wbits = int(scheme[1])
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    clips = [n for n in proto.graph.node if n.op_type == "Clip"]  # QCDQ: the sub-8-bit weights are clipped
    assert len(clips) == 4 and all(inits[c.input[2]] == 2 ** (wbits - 1) - 1 for c in clips)
    assert all(inits[c.input[0]].dtype == np.int8 and np.abs(inits[c.input[0]]).max() <= 2 ** (wbits - 1) - 1 for c in clips)
    bias_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.name.endswith("_bias_dq")]
    assert len(bias_dq) == 4
    int32 = {i.name for i in proto.graph.initializer if i.data_type == TensorProto.INT32}
    assert all(n.input[0] in int32 for n in bias_dq)
    step = np.abs(ref).max() / 127  # one 8-bit step of the logits
    got = ort_run(batched(proto), x)
    assert np.abs(got - ref).max() <= step
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.99
    # with float biases and no graph optimization, onnxruntime's Q/DQ ops compute exactly our Quant
    exact = ort_run(batched(to_qdq(model, quantize_bias=False)), x, optimize=False)
    np.testing.assert_allclose(exact, ref, rtol=1e-5, atol=1e-5)


def test_qonnx_round_trip_is_exact(fake_quant, digits):
    _, model = fake_quant
    proto = to_qonnx(model)
    assert {o.domain: o.version for o in proto.opset_import}["qonnx.custom_op.general"] == 1
    back = import_quantized(proto)
    verify(back)
    x = digits.x_test[:50]
    np.testing.assert_array_equal(ReferenceEvaluator(batched(back)).run({"x": x})["logits"],
                                  ReferenceEvaluator(batched(model)).run({"x": x})["logits"])


def test_qdq_import_matches_the_exported_qdq(fake_quant, digits):
    _, model = fake_quant
    proto = to_qdq(model)
    back = import_quantized(proto)
    verify(back)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear", "Clip") for n in back.graph)
    x = digits.x_test[:50]
    np.testing.assert_allclose(ReferenceEvaluator(batched(back)).run({"x": x})["logits"],
                               ort_run(batched(proto), x, optimize=False), rtol=1e-5, atol=1e-5)
    bits = sorted({get_quant(n.outputs[0]).bits for n in back.graph if n.op_type == "Quant"})
    assert bits == sorted({get_quant(n.outputs[0]).bits for n in model.graph if n.op_type == "Quant"})


def test_onnxruntime_quantize_static_model_imports(digits, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": digits.x_train[i : i + 1]} for i in range(32)])

        def get_next(self):
            return next(self.it, None)

    src, dst = tmp_path / "fp32.onnx", tmp_path / "qdq.onnx"
    onnx.save(digits.model, src)
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    proto = onnx.load(dst)
    proto.ir_version = min(proto.ir_version, 10)
    back = import_quantized(proto)
    verify(back)
    assert sum(n.op_type == "Quant" for n in back.graph) >= 8
    x = digits.x_test[:50]
    ours = ReferenceEvaluator(batched(back)).run({"x": x})["logits"]
    # exact against onnxruntime's own Q/DQ semantics (its fused u8·s8 kernels saturate on AVX2
    # machines without VNNI for full-range int8 weights, so the optimized run is not a reference)
    np.testing.assert_allclose(ours, ort_run(batched(proto), x, optimize=False), rtol=1e-5, atol=1e-5)


def _brevitas_net():
    torch = pytest.importorskip("torch")
    qnn = pytest.importorskip("brevitas.nn")
    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)
            self.conv = qnn.QuantConv2d(1, 4, 3, weight_bit_width=4, return_quant_tensor=True)
            self.relu = qnn.QuantReLU(bit_width=4, return_quant_tensor=True)
            self.fc = qnn.QuantLinear(4 * 6 * 6, 10, bias=True, weight_bit_width=2)

        def forward(self, x):
            return self.fc(self.relu(self.conv(self.inp(x))).flatten(1))

    net = Net().eval()
    with torch.no_grad():
        net(torch.rand(8, 1, 8, 8))
    return net


@pytest.mark.parametrize("exporter", ["export_qonnx", "export_onnx_qcdq"])
def test_brevitas_exports_import_exactly(exporter, tmp_path, digits):
    import torch
    from brevitas import export

    net = _brevitas_net()
    x = digits.x_test[:1]
    path = tmp_path / "brevitas.onnx"
    getattr(export, exporter)(net, torch.from_numpy(x), str(path), dynamo=False)
    back = import_quantized(onnx.load(path))
    verify(back)
    quants = [n for n in back.graph if n.op_type == "Quant"]
    assert sorted(get_quant(n.outputs[0]).bits for n in quants) == [2, 4, 4, 8]
    with torch.no_grad():
        expected = net(torch.from_numpy(digits.x_test[:20])).numpy()
    got = np.concatenate([ReferenceEvaluator(back).run({back.graph.inputs[0].name: digits.x_test[i : i + 1]})[
        back.graph.outputs[0].name] for i in range(20)])
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)


def _qdq_model(q_scale: float, dq_scale: float, lo: int = -8, hi: int = 7) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(np.array(q_scale, np.float32), "qs"), numpy_helper.from_array(np.array(dq_scale, np.float32), "ds"),
             numpy_helper.from_array(np.array(0, np.int8), "zp"), numpy_helper.from_array(np.array(lo, np.int8), "lo"),
             numpy_helper.from_array(np.array(hi, np.int8), "hi")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "qs", "zp"], ["q"], name="q"),
             helper.make_node("Clip", ["q", "lo", "hi"], ["c"], name="clip"),
             helper.make_node("DequantizeLinear", ["c", "ds", "zp"], ["y"], name="dq")]
    graph = helper.make_graph(nodes, "qcdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_qcdq_import_bits_and_bad_pairs():
    x = np.linspace(-2, 2, 16, dtype=np.float32).reshape(1, 16)
    proto = _qdq_model(0.1, 0.1, -7, 7)
    back = import_quantized(proto)
    (quant,) = [n for n in back.graph if n.op_type == "Quant"]
    qp = get_quant(quant.outputs[0])
    assert (qp.bits, qp.signed, qp.narrow_range) == (4, True, True)
    np.testing.assert_array_equal(ReferenceEvaluator(back).run({"x": x})["y"], ort_run(proto, x, optimize=False))
    with pytest.raises(QuantizationError, match="different scales"):
        import_quantized(_qdq_model(0.1, 0.2))
    with pytest.raises(QuantizationError, match=r"range \[-5, 7\] is not that of a 2..8-bit quantizer"):
        import_quantized(_qdq_model(0.1, 0.1, -5, 7))


def test_bipolar_quant_becomes_one_bit_quant():
    nodes = [helper.make_node("BipolarQuant", ["x", "s"], ["y"], name="bq", domain="onnx.brevitas")]
    graph = helper.make_graph(nodes, "bq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              [numpy_helper.from_array(np.array(0.5, np.float32), "s")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("onnx.brevitas", 1)],
                              ir_version=10)
    back = import_quantized(proto)
    (node,) = list(back.graph)
    assert (node.op_type, node.domain) == ("Quant", "qonnx.custom_op.general")
    assert get_quant(node.outputs[0]).bits == 1
    x = np.array([-1.0, 0.0, 0.2, 3.0], np.float32)
    np.testing.assert_array_equal(ReferenceEvaluator(back).run({"x": x})["y"], [-0.5, 0.5, 0.5, 0.5])
