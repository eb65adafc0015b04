"""The quantize pass: the exact fake-quant contract form, accuracy on digits, the algorithms, bad input."""
from __future__ import annotations

import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from conftest import batched
from mlpc.errors import QuantizationError
from mlpc.frontend.onnx_loader import proto_to_ir
from mlpc.ir import ReferenceEvaluator, get_quant, verify
from mlpc.pass_infra import PassContext
from mlpc.passes.quantize import QuantizePass
from mlpc.quant import quantize
from mlpc.quant.equalize import equalize, fold_batchnorm
from mlpc.quant.importer import quant_params_of
from mlpc.quant.layers import find_layers
from mlpc.quant.observers import weight_params
from mlpc.quant.rounding import DAMPING, _per_group_error, float_target, gptq, nearest, round_weight
from mlpc.quant.scheme import QuantSpec
from mlpc.quant.stats import LayerStats

QONNX = "qonnx.custom_op.general"


def accuracy(model, digits) -> float:
    logits = ReferenceEvaluator(batched(model)).run({"x": digits.x_test})["logits"]
    return float(np.mean(logits.argmax(axis=1) == digits.y_test)) * 100


def _producer(value):
    node = value.producer()
    assert node is not None and node.op_type == "Quant" and node.domain == QONNX, f"{value.name} is not a Quant output"
    return node


def check_contract(model) -> None:
    """Every Conv/Gemm takes a Quant'd activation and a Quant of a constant float weight (per
    channel, contract-shaped parameters), and every Quant output carries matching QuantParams."""
    verify(model)
    g = model.graph
    assert g.opset_imports[QONNX] == 1
    layers = [n for n in g if n.op_type in ("Conv", "Gemm")]
    assert layers
    for node in layers:
        _producer(node.inputs[0])
        wq = _producer(node.inputs[1])
        w = wq.inputs[0].const_value.numpy()
        assert w.dtype == np.float32
        scale = wq.inputs[1].const_value.numpy()
        expected = (w.shape[0],) + (1,) * (w.ndim - 1)
        assert scale.shape == expected and scale.dtype == np.float32
        assert np.all(wq.inputs[2].const_value.numpy() == 0)
        qp = get_quant(wq.outputs[0])
        assert qp.axis == 0 and qp.signed
        # the weight is already on its grid: quantizing it changes nothing
        np.testing.assert_allclose(qp.dequantize(qp.quantize(w)), w, rtol=1e-6, atol=1e-7)
    for node in g:
        if node.op_type == "Quant":
            assert node.attributes.get_string("rounding_mode") == "ROUND"
            bits = node.inputs[3].const_value.numpy()
            assert bits.shape == () and bits.dtype == np.float32 and 2 <= bits <= 8
            assert get_quant(node.outputs[0]) == quant_params_of(node)
    for v in (*g.inputs, *g.outputs):
        assert v.dtype.name == "FLOAT"


@pytest.fixture(scope="module")
def calib(digits):
    return {"x": digits.x_train[:256]}


@pytest.fixture(scope="module")
def quantized(digits, calib):
    """scheme → the digits CNN quantized with it (each quantized once per module)."""
    cache = {}

    def get(scheme):
        if scheme not in cache:
            cache[scheme] = quantize(digits.model, scheme, calib, engine="reference")
        return cache[scheme]

    return get


def test_contract_form_and_idempotence(quantized, calib):
    model = quantized("w4a8")
    check_contract(model)
    assert sum(n.op_type == "Quant" for n in model.graph) == 8  # 4 weights + 4 layer inputs
    result = QuantizePass("w4a8", calib, engine="reference")(model.graph, PassContext())
    assert result.modified is False


@pytest.mark.parametrize("scheme,max_drop", [("w8a8", 0.5), ("w4a8", 1.5), ("w2a8", 3.0)])
def test_fake_quant_accuracy_on_digits(digits, quantized, scheme, max_drop, record_property):
    fp32 = accuracy(digits.model, digits)
    assert fp32 > 95.0
    model = quantized(scheme)
    check_contract(model)
    acc = accuracy(model, digits)
    record_property(f"{scheme}_accuracy", (fp32, acc))
    logging.getLogger(__name__).warning("digits %s: fp32 %.2f%%, fake-quant %.2f%%", scheme, fp32, acc)
    assert acc >= fp32 - max_drop


def test_gptq_beats_nearest_on_layer_error():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 32)).astype(np.float32)
    x = rng.standard_normal((512, 32)) @ rng.standard_normal((32, 32))  # correlated inputs
    node = helper.make_node("Gemm", ["a", "w"], ["y"], name="fc", transB=1)
    model = proto_to_ir(helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [512, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, 16])], [numpy_helper.from_array(w, "w")]),
        ir_version=10))
    layer = find_layers(model.graph)[0]
    stats = LayerStats(layer, hessian=True)
    stats.update(x)
    qp = weight_params(w, QuantSpec(bits=3, granularity="per_channel", observer="minmax"), 0)
    scale = np.asarray(qp.scale)
    plain = nearest(w.astype(np.float64), scale, np.zeros(16), qp)
    err_plain = sum(_per_group_error(w.astype(np.float64), plain, stats))
    w_hat, _, method = round_weight(layer, w, [qp], stats, "gptq")
    err_gptq = sum(_per_group_error(w.astype(np.float64), w_hat, stats))
    # measured directly on the data as well
    def direct(wh: np.ndarray) -> float:
        return float(np.mean(np.sum((x @ (wh - w).T) ** 2, axis=1)))

    assert err_gptq < 0.8 * err_plain
    assert direct(w_hat) == pytest.approx(err_gptq, rel=1e-6)
    assert np.all(np.abs(w_hat / scale[:, None] - np.round(w_hat / scale[:, None])) < 1e-6)
    chosen, _, how = round_weight(layer, w, [qp], stats, "auto")
    assert how == "gptq" and direct(chosen) <= err_gptq * (1 + 1e-9)


def test_auto_rounding_judges_fits_on_held_out_samples():
    """A Gemm whose inputs carry earlier layers' quantization error, seeing about as many
    calibration samples as inputs: a lightly dampened fit (least-squares target + GPTQ) learns
    those samples; 'auto' must judge its candidates on samples it did not fit on and end up far
    better than that fit on fresh data from the same distribution."""
    rng = np.random.default_rng(0)
    k, n_out, samples = 96, 24, 96
    mix = rng.standard_normal((k, k)) * (0.8 ** np.arange(k) / 3 + 0.05)[:, None]

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:  # (float inputs, quantized-model inputs)
        x_f = rng.standard_normal((n, k)) @ mix
        return x_f, x_f + 0.3 * rng.standard_normal((n, k)) * np.std(x_f, axis=0)

    w = rng.standard_normal((n_out, k))
    node = helper.make_node("Gemm", ["a", "w"], ["y"], name="fc", transB=1)
    model = proto_to_ir(helper.make_model(helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n_out])],
        [numpy_helper.from_array(w.astype(np.float32), "w")]), ir_version=10))
    layer = find_layers(model.graph)[0]
    stats = LayerStats(layer, hessian=True)
    for x_f, x_q in zip(*draw(samples)):
        stats.update(x_q[None], x_f[None])
    qp = weight_params(w, QuantSpec(bits=4, granularity="per_channel", observer="minmax"), 0)
    fresh_f, fresh_q = draw(4000)
    def error(w_hat: np.ndarray) -> float:
        return float(np.mean(np.sum((fresh_f @ w.T - fresh_q @ w_hat.T) ** 2, axis=1)))

    h = stats.hessian[0]
    light = gptq(float_target(w, h, stats.cross[0], DAMPING), h, np.asarray(qp.scale), np.zeros(n_out), qp, DAMPING)
    chosen, _, _ = round_weight(layer, w, [qp], stats, "auto")
    assert error(chosen) < 0.7 * error(light)


def _conv_chain(imbalance: bool, bn: bool = False) -> onnx.ModelProto:
    rng = np.random.default_rng(1)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((4, 8, 3, 3)).astype(np.float32) * 0.3
    if imbalance:  # as BatchNorm folding often leaves it: the second layer undoes the first's channel scales
        c = np.geomspace(0.01, 10, 8).astype(np.float32)
        w1 *= c[:, None, None, None]
        w2 /= c[None, :, None, None]
    b1 = rng.standard_normal(8).astype(np.float32) * (c if imbalance else 1)
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1])]
    src = "c1"
    if bn:
        stats = [np.abs(rng.standard_normal(8)).astype(np.float32) + 0.5 for _ in range(4)]
        inits += [numpy_helper.from_array(a, n) for a, n in zip(stats, ("g", "beta", "mean", "var"))]
        nodes.append(helper.make_node("BatchNormalization", ["c1", "g", "beta", "mean", "var"], ["bn"], name="bn"))
        src = "bn"
    nodes += [helper.make_node("Relu", [src], ["r1"], name="relu"),
              helper.make_node("Conv", ["r1", "w2"], ["y"], name="conv2", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)


def test_float_target_of_a_dead_group_is_the_float_weight():
    # a group no calibration input reaches (all-zero Hessian, e.g. a depthwise channel after a
    # dead ReLU) has no error to fit: the float weight, not a singular-matrix error
    w = np.arange(6, dtype=np.float64).reshape(2, 3)
    zero = np.zeros((3, 3))
    np.testing.assert_array_equal(float_target(w, zero, zero), w)


def test_batchnorm_folding_and_equalization_keep_outputs():
    proto = _conv_chain(imbalance=True, bn=True)
    x = np.random.default_rng(2).standard_normal((1, 3, 6, 6)).astype(np.float32)
    ref = ReferenceEvaluator(proto).run({"x": x})["y"]
    model = proto_to_ir(proto)
    assert fold_batchnorm(model.graph) == 1
    def spread(w: np.ndarray) -> float:
        r = np.abs(w).reshape(8, -1).max(axis=1)
        return float(r.max() / r.min())

    before = spread(find_layers(model.graph)[0].weight.const_value.numpy())
    assert equalize(model.graph) == 1
    assert not any(n.op_type == "BatchNormalization" for n in model.graph)
    np.testing.assert_allclose(ReferenceEvaluator(model).run({"x": x})["y"], ref, rtol=1e-4, atol=1e-4)
    # after equalization the first conv's per-channel ranges are far more even
    assert spread(find_layers(model.graph)[0].weight.const_value.numpy()) < before / 100


def test_equalization_helps_per_tensor_quantization():
    proto = _conv_chain(imbalance=True)
    rng = np.random.default_rng(3)
    calib = {"x": rng.standard_normal((32, 1, 3, 6, 6)).astype(np.float32)}
    test = [rng.standard_normal((1, 3, 6, 6)).astype(np.float32) for _ in range(8)]
    ref = ReferenceEvaluator(proto)
    errors = {}
    for eq in (False, True):
        cfg = {"scheme": "w4a8", "weight": {"granularity": "per_tensor"}, "equalize": eq, "rounding": "nearest"}
        q = ReferenceEvaluator(quantize(proto, "w4a8", calib, config=cfg, engine="reference"))
        errors[eq] = np.mean([np.mean((q.run({"x": t})["y"] - ref.run({"x": t})["y"]) ** 2) for t in test])
    assert errors[True] < 0.5 * errors[False]


def test_matmul_layers_follow_the_contract():
    rng = np.random.default_rng(4)
    w = rng.standard_normal((6, 5)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["a", "w"], ["h"], name="proj"),
             helper.make_node("Transpose", ["h"], ["ht"], name="t", perm=[1, 0]),
             helper.make_node("MatMul", ["h", "ht"], ["y"], name="scores")]
    graph = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [numpy_helper.from_array(w, "w")])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    calib = {"a": rng.standard_normal((16, 4, 6)).astype(np.float32)}
    model = quantize(proto, "w8a8", calib, engine="reference")
    proj, scores = (next(n for n in model.graph if n.name == name) for name in ("proj", "scores"))
    wq = _producer(proj.inputs[1])
    assert wq.inputs[1].const_value.numpy().shape == (1, 5) and get_quant(wq.outputs[0]).axis == 1
    _producer(scores.inputs[0]), _producer(scores.inputs[1])
    x = calib["a"][0]
    ref = ReferenceEvaluator(proto).run({"a": x})["y"]
    np.testing.assert_allclose(ReferenceEvaluator(model).run({"a": x})["y"], ref, atol=0.05 * np.abs(ref).max())


def test_bad_inputs(digits, calib, caplog):
    proto = onnx.ModelProto()
    proto.CopyFrom(digits.model)
    w = numpy_helper.to_array(proto.graph.initializer[2]).copy()
    w.flat[0] = np.nan
    proto.graph.initializer[2].CopyFrom(numpy_helper.from_array(w, proto.graph.initializer[2].name))
    with pytest.raises(QuantizationError, match="layer 'conv2': weight 'w2' holds NaN or Inf"):
        quantize(proto, "w8a8", calib, engine="reference")
    with pytest.raises(QuantizationError, match="per-channel axis 7 does not exist"):
        quantize(digits.model, "w8a8", calib, config={"weight": {"axis": 7}}, engine="reference")
    with pytest.raises(QuantizationError, match="outside 2..8"):
        quantize(digits.model, "w1a8", calib)
    with pytest.raises(QuantizationError, match="needs calibration data"):
        quantize(digits.model, "w8a8", None)
    with caplog.at_level(logging.WARNING):
        model = quantize(digits.model, "w8a8", {"x": digits.x_train[:8]},
                         config={"layers": {"block*": {"weight": 4}}, "skip": ["fc2"]}, engine="reference")
    assert "block*" in caplog.text and "match no layer" in caplog.text
    fc2 = next(n for n in model.graph if n.name == "fc2")
    assert fc2.inputs[1].const_value is not None  # skipped: its weight stays a plain float constant
