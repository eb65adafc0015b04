"""lower-quant: the integer Graph agrees with the fake-quant Graph (both run by the reference
evaluator) within one quantization step, keeps integers between layers, leaves unrecognized
Quant nodes alone, is idempotent and passes the verifier."""
from __future__ import annotations

import itertools

import numpy as np
import onnx_ir as ir
import pytest
from fake_quant_graphs import CASES, FakeQuantGraph, case, single_layer_case

from mlpc.ir import ReferenceEvaluator, get_quant, verify
from mlpc.pass_registry import get_pass
from mlpc.passes.lower_quant import LowerQuantPass

KINDS = ["conv2d", "conv1d", "depthwise", "gemm", "matmul", "attention", "add"]


def _lower(model: ir.Model) -> None:
    assert LowerQuantPass()(model.graph).modified
    verify(model)
    assert not LowerQuantPass()(model.graph).modified, "lower-quant is not idempotent"


def _lsb_errors(model: ir.Model, feeds) -> dict[str, np.ndarray]:
    """|fake-quant − integer| per graph output, in steps of the output quantizer."""
    scales = {v.name: get_quant(v).scale if get_quant(v) else None for v in model.graph.outputs}
    ref = ReferenceEvaluator(model).run(feeds)
    _lower(model)
    got = ReferenceEvaluator(model).run(feeds)
    return {k: np.abs(ref[k].astype(np.float64) - got[k]) / (scales[k] or 1.0) for k in ref}


@pytest.mark.parametrize("kind", KINDS)
def test_single_layer_within_one_step(kind):
    differing = total = 0
    for w_bits, a_bits, signed, per_channel in itertools.product([2, 3, 4, 8], [4, 8], [True, False], [True, False]):
        model, feeds = single_layer_case(kind, w_bits, a_bits, signed, per_channel)
        (err,) = _lsb_errors(model, feeds).values()
        assert err.max() <= 1 + 1e-4, f"{kind} w{w_bits}a{a_bits} signed={signed}: {err.max():.3f} steps"
        assert np.all(np.abs(err - np.round(err)) < 1e-4), "differences must be whole quantization steps"
        differing += int(np.sum(err > 0.5))
        total += err.size
    # Rounding noise only: a 1-step difference needs y/s_y within float noise of a half-integer.
    assert differing <= 0.02 * total, f"{differing} of {total} outputs differ by one step"


@pytest.mark.parametrize("bits", [(4, 8, True, True), (2, 4, False, False)], ids=["w4a8", "w2a4-uint"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_chains_stay_integer_and_close(name, bits):
    model, feeds = case(name, *bits)
    scales = {v.name: get_quant(v) for v in model.graph.outputs}
    ref = ReferenceEvaluator(model).run(feeds)
    _lower(model)
    ops = [n.op_type for n in model.graph]
    assert "Quant" not in ops and "Conv" not in ops and "Gemm" not in ops
    # Integer tensors flow layer to layer: each integer op reads integers, never a Dequantize.
    for node in model.graph:
        if node.domain == "mlpc":
            assert all(v.producer() is None or v.producer().op_type != "DequantizeLinear" for v in node.inputs if v)
    assert ops.count("DequantizeLinear") == len(model.graph.outputs) - ops.count("Softmax")
    got = ReferenceEvaluator(model).run(feeds)
    for k, qp in scales.items():
        if qp is None:
            continue
        # Each layer is within one step (test above); a one-step difference entering the next
        # layer can move a few of its outputs by more, so chains are checked on average.
        err = np.abs(ref[k] - got[k]) / qp.scale
        assert err.mean() <= 0.25 and np.mean(err > 0.5) <= 0.2, f"{k}: mean {err.mean():.3f} steps"


@pytest.mark.parametrize(("a_bits", "w_bits", "ops"), [
    (8, 8, ["QuantizeLinear", "IntegerConv", "Requantize", "DequantizeLinear"]),
    # 4-bit entry: Clip to [-8, 7]. Coarse 2-bit weights: s_x·s_w > s_y/16, so the
    # accumulator is scaled by 2^k (Mul) before the finer int32 bias is added.
    (4, 2, ["QuantizeLinear", "Clip", "IntegerConv", "Mul", "Add", "Requantize", "DequantizeLinear"]),
], ids=["a8w8", "a4w2"])
def test_structure_of_a_lowered_conv(a_bits, w_bits, ops):
    b = FakeQuantGraph(0, opset=19)
    x = b.act(b.input("x", (1, 3, 6, 6)), a_bits, True)
    y = b.node("Relu", [b.node("Conv", [x, b.weight((5, 3, 3, 3), w_bits), b.bias(5)], pads=[1, 1, 1, 1])])
    out = b.act(y, 8, False)
    model = b.build([out], {"x": np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)})
    _lower(model)
    assert [n.op_type for n in model.graph] == ops
    nodes = {n.op_type: n for n in model.graph}
    if "Clip" in nodes:
        assert [int(v.const_value.numpy()) for v in nodes["Clip"].inputs[1:]] == [-8, 7]
    conv, rq = nodes["IntegerConv"], nodes["Requantize"]
    w = conv.inputs[1].const_value.numpy()
    assert w.dtype == np.int8 and get_quant(conv.inputs[1]).axis == 0 and get_quant(conv.inputs[1]).bits == w_bits
    bias = conv.inputs[4] if len(conv.inputs) > 4 else nodes["Add"].inputs[1]
    assert bias.dtype == ir.DataType.INT32
    out_qp = get_quant(rq.outputs[0])
    # The ReLU is folded into the clamp: nothing below the zero point.
    assert rq.attributes["qmin"].value == int(out_qp.zero_point) and rq.attributes["qmax"].value == 255
    assert model.graph.outputs[0].name == out and model.graph.outputs[0].dtype == ir.DataType.FLOAT
    assert not any(v.name.startswith("w") for v in model.graph.initializers.values()), "float weights left behind"


def test_unrecognized_quants_stay_fake_quant():
    b = FakeQuantGraph(0, opset=19)
    x = b.act(b.input("x", (2, 8)), 8, True)
    s = b.act(b.node("Softmax", [x]), 8, False)
    # A MatMul by a float (unquantized) weight is not a quantized layer.
    y = b.act(b.node("MatMul", [s, b.const(np.ones((8, 3), np.float32))]), 8, True)
    model = b.build([y], {"x": np.ones((2, 8), np.float32)})
    before = [n.op_type for n in model.graph]
    assert not LowerQuantPass()(model.graph).modified
    assert [n.op_type for n in model.graph] == before


def test_float_op_between_integer_regions():
    b = FakeQuantGraph(0, opset=19)
    x = b.act(b.input("x", (4, 16)), 8, True)
    h = b.act(b.node("Gemm", [x, b.weight((16, 16), 4, axis=0), b.bias(16)], transB=1), 8, True)
    s = b.act(b.node("Sigmoid", [h]), 8, False)  # no integer form: float between DQ and Q
    y = b.act(b.node("Gemm", [s, b.weight((16, 16), 4, axis=1), b.bias(16)]), 8, True)
    feeds = {"x": np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)}
    model = b.build([y], feeds)
    ref = ReferenceEvaluator(model).run(feeds)
    _lower(model)
    ops = [n.op_type for n in model.graph]
    i = ops.index("Sigmoid")
    assert ops[i - 1] == "DequantizeLinear" and ops[i + 1] == "QuantizeLinear"
    got = ReferenceEvaluator(model).run(feeds)
    assert np.mean(np.abs(ref[y] - got[y]) / get_quant(model.graph.outputs[0]).scale) <= 0.25


def test_registered_and_verified_in_a_pass_manager():
    from mlpc.pass_infra import PassContext, PassManager

    model, _ = single_layer_case("gemm", 4, 8, True, True)
    log = PassManager([get_pass("lower-quant").factory()]).run(model, PassContext(verify_each=True))
    assert log[0].modified


def test_pooling_and_reshape_run_on_integers_and_the_logits_layer_too():
    """Quant → Conv → Relu → MaxPool → Flatten → Quant → Gemm (float logits): the quantizer after
    Flatten is copied in front of MaxPool, so the conv requantizes straight to integers, MaxPool
    and Flatten run on them, and the last Gemm accumulates in int32 and scales to float."""
    b = FakeQuantGraph(5, opset=19)
    x = b.act(b.input("x", (2, 3, 8, 8)), 8, True)
    y = b.node("Relu", [b.node("Conv", [x, b.weight((8, 3, 3, 3), 8), b.bias(8)], pads=[1, 1, 1, 1])])
    p = b.node("Flatten", [b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])])
    logits = b.node("Gemm", [b.act(p, 8, False), b.weight((5, 128), 4, axis=0), b.bias(5)], transB=1)
    feeds = {"x": np.random.default_rng(4).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    model = b.build([logits], feeds)
    ref = ReferenceEvaluator(model).run(feeds)[logits]
    _lower(model)
    ops = [n.op_type for n in model.graph]
    assert ops == ["QuantizeLinear", "IntegerConv", "Requantize", "MaxPool", "Flatten", "IntegerMatMul", "Cast",
                   "Mul", "Add"]
    pool = next(n for n in model.graph if n.op_type == "MaxPool")
    assert pool.inputs[0].dtype == ir.DataType.UINT8 and pool.outputs[0].dtype == ir.DataType.UINT8
    assert model.graph.outputs[0].name == logits and model.graph.outputs[0].dtype == ir.DataType.FLOAT
    got = ReferenceEvaluator(model).run(feeds)[logits]
    # Only the conv's requantization rounds differently (≤ 1 step, rarely): the logits stay close.
    assert np.max(np.abs(got - ref)) <= 0.05 * np.max(np.abs(ref))


def test_quantizer_before_pooling_is_copied_after_it_as_brevitas_exports():
    """Brevitas' layout, Quant → Conv → Relu → Quant → MaxPool → Flatten → Gemm (no quantizer
    after Flatten): a copy of the ReLU's quantizer after MaxPool and Flatten lets the Gemm run in
    integers too; the values are unchanged (pooled quantized values stay on the grid)."""
    b = FakeQuantGraph(6, opset=19)
    x = b.act(b.input("x", (2, 3, 8, 8)), 8, True)
    y = b.act(b.node("Relu", [b.node("Conv", [x, b.weight((8, 3, 3, 3), 4), b.bias(8)], pads=[1, 1, 1, 1])]), 8, False)
    p = b.node("Flatten", [b.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])])
    logits = b.node("Gemm", [p, b.weight((5, 128), 2, axis=0), b.bias(5)], transB=1)
    feeds = {"x": np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    model = b.build([logits], feeds)
    ref = ReferenceEvaluator(model).run(feeds)[logits]
    _lower(model)
    ops = [n.op_type for n in model.graph]
    assert "IntegerConv" in ops and "IntegerMatMul" in ops and "Quant" not in ops, ops
    got = ReferenceEvaluator(model).run(feeds)[logits]
    assert np.max(np.abs(got - ref)) <= 0.05 * np.max(np.abs(ref))
    again = LowerQuantPass()(model.graph, __import__("mlpc").PassContext())
    assert not again.modified
