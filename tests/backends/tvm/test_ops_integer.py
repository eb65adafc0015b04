"""The TVM kernels of the mlpc integer ops are bit-exact with the reference evaluator: on
lower-quant'd models (Conv 1-D/2-D, grouped, depthwise, strided, padded; Gemm; MatMul incl.
batched activation × activation; residual IntegerAdd) at weight bits 2/3/4/8 (≤ 4 bits packed
in uint8 and decoded inside the kernel), activation bits 4/8, signed/unsigned, per tensor and
per channel; on hand-built integer graphs with zero points; and on extreme values with long
reductions (no int16 saturation)."""
from __future__ import annotations

import itertools

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from fake_quant_graphs import case, single_layer_case
from onnx import TensorProto, helper
from ort_harness import host
import tvm
from tvm import relax

from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.lower import lower_graph
from mlpc.backends.tvm.ops_integer import ADD_HIGH_WORD_MIN_SHIFT, pack_rows, slot_bits
from mlpc.ir import QuantParams, ReferenceEvaluator, set_quant, verify
from mlpc.targets import Target
from mlpc.passes.lower_quant import LowerQuantPass

INTEGER_OPS = ("QuantizeLinear", "Clip", "Requantize", "IntegerAdd", "IntegerMatMul", "IntegerConv")


def _expose_integers(model: ir.Model) -> None:
    """Make every integer tensor a graph output, so integer results are compared too."""
    for node in model.graph:
        if node.op_type in INTEGER_OPS and not node.outputs[0].is_graph_output():
            model.graph.outputs.append(node.outputs[0])


def _tvm_vs_reference(model: ir.Model, feeds: dict[str, np.ndarray], device: str = "cpu",
                      target: Target | None = None) -> None:
    """Build `model` for `target` (default: this CPU), its integer kernels in `device`'s layout,
    and compare every output with the reference evaluator: integer outputs bit for bit."""
    verify(model)
    ref = ReferenceEvaluator(model).run(feeds)
    got = run(build(lower_graph(model.graph, model.opset_imports.get("", 17), device=device), target or host()),
              [feeds[v.name] for v in model.graph.inputs])
    for value, g in zip(model.graph.outputs, got):
        r = ref[value.name]
        assert g.dtype == r.dtype and g.shape == r.shape, value.name
        producer = value.producer().op_type
        if producer in INTEGER_OPS or producer == "DequantizeLinear":
            mism = int(np.sum(g != r))
            assert mism == 0, f"{value.name} ({producer}): {mism} of {r.size} elements differ"
        else:  # a float op after the integer region (e.g. Softmax): float tolerance
            np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def _lowered(model: ir.Model) -> ir.Model:
    assert LowerQuantPass()(model.graph).modified
    _expose_integers(model)
    return model


BITS = [  # (w_bits, a_bits, signed, per_channel)
    (8, 8, True, True), (4, 8, True, True), (3, 8, False, True),
    (2, 4, False, False), (8, 4, True, False), (2, 8, True, True), (4, 4, False, True),
]
_ID = [f"w{w}a{a}-{'int' if s else 'uint'}-{'pc' if p else 'pt'}" for w, a, s, p in BITS]


@pytest.mark.parametrize("bits", BITS, ids=_ID)
@pytest.mark.parametrize("name", ["conv2d", "conv1d", "depthwise", "gemm", "matmul", "residual"])
def test_lowered_chains_bit_exact(name, bits):
    model, feeds = case(name, *bits)
    _tvm_vs_reference(_lowered(model), feeds)


@pytest.mark.parametrize("kind", ["conv2d", "conv1d", "depthwise", "gemm", "matmul", "attention", "add"])
def test_lowered_single_layers_bit_exact(kind):
    # Every layer kind at the bit widths the chains above do not pair it with.
    for bits in [(3, 4, True, False), (4, 8, False, False)]:
        model, feeds = single_layer_case(kind, *bits)
        _tvm_vs_reference(_lowered(model), feeds)


# -- hand-built integer graphs --------------------------------------------------------------


def _integer_model(nodes, inputs: dict[str, np.ndarray], inits: dict[str, np.ndarray], outputs: dict,
                   quant: dict[str, QuantParams] | None = None) -> ir.Model:
    graph = helper.make_graph(
        nodes, "int",
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, t, s) for k, (t, s) in outputs.items()],
        initializer=[onnx.numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = ir.serde.deserialize_model(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("mlpc", 1)], ir_version=10))
    for name, qp in (quant or {}).items():
        set_quant(model.graph.initializers[name], qp)
    return model


@pytest.mark.parametrize("w_bits", [8, 4, 2])
def test_matmul_with_zero_points(w_bits):
    rng = np.random.default_rng(0)
    lo, hi = (0, 2**w_bits - 1)
    a = rng.integers(0, 256, (3, 5, 33), dtype=np.uint8)
    b = rng.integers(lo, hi + 1, (33, 7), dtype=np.uint8)
    act_b = rng.integers(0, 256, (3, 33, 4), dtype=np.uint8)
    inits = {"b": b, "azp": np.array(131, np.uint8), "bzp": rng.integers(lo, hi + 1, 7, dtype=np.uint8),
             "row_zp": rng.integers(0, 256, 5, dtype=np.uint8)}
    nodes = [helper.make_node("IntegerMatMul", ["a", "b", "azp", "bzp"], ["y"], domain="mlpc"),
             helper.make_node("IntegerMatMul", ["a", "act_b", "row_zp", "azp"], ["y2"], domain="mlpc")]
    qp = QuantParams(bits=w_bits, signed=False, scale=np.ones(7), zero_point=inits["bzp"], axis=1)
    model = _integer_model(nodes, {"a": a, "act_b": act_b}, inits,
                           {"y": (TensorProto.INT32, [3, 5, 7]), "y2": (TensorProto.INT32, [3, 5, 4])}, {"b": qp})
    _tvm_vs_reference(model, {"a": a, "act_b": act_b})


@pytest.mark.parametrize("w_bits", [8, 3])
def test_conv_with_zero_points(w_bits):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (2, 6, 7, 7), dtype=np.uint8)
    w = rng.integers(-(2 ** (w_bits - 1)), 2 ** (w_bits - 1), (9, 2, 3, 3), dtype=np.int8)
    inits = {"w": w, "xzp": np.array(77, np.uint8), "wzp": rng.integers(-2, 3, 9).astype(np.int8),
             "bias": rng.integers(-5000, 5000, 9).astype(np.int32)}
    node = helper.make_node("IntegerConv", ["x", "w", "xzp", "wzp", "bias"], ["y"], domain="mlpc", group=3,
                            pads=[2, 1, 0, 1], strides=[2, 1], dilations=[1, 2])
    qp = QuantParams(bits=w_bits, scale=np.ones(9), zero_point=inits["wzp"], axis=0)
    model = _integer_model([node], {"x": x}, inits, {"y": (TensorProto.INT32, [2, 9, 4, 5])}, {"w": qp})
    _tvm_vs_reference(model, {"x": x})


def test_requantize_and_integer_add():
    rng = np.random.default_rng(2)
    acc = rng.integers(-(2**31), 2**31 - 1, (2, 4, 5), dtype=np.int64).astype(np.int32)
    acc[0, 0, :3] = [2**31 - 1, -(2**31), 0]
    a = rng.integers(-128, 128, (2, 4, 5), dtype=np.int8)
    b = rng.integers(0, 256, (4, 1), dtype=np.uint8)
    inits = {"m": np.array([2**31 - 1, 1, 123456789, 2**30], np.int32), "s": np.array([31, 0, 40, 62], np.int32),
             "zp": np.array(-3, np.int8), "uzp": np.array(200, np.uint8), "azp": np.array(5, np.int8),
             "bzp": np.array(128, np.uint8), "am": np.array(1518500250, np.int32),
             "bm": np.array(858993459, np.int32), "shift": np.array(33, np.int32)}
    nodes = [
        helper.make_node("Requantize", ["acc", "m", "s", "zp"], ["r"], domain="mlpc", qmin=-8, qmax=7),
        helper.make_node("Requantize", ["acc", "m", "s", "uzp"], ["ru"], domain="mlpc"),
        helper.make_node("IntegerAdd", ["a", "b", "azp", "bzp", "am", "bm", "shift", "uzp"], ["y"], domain="mlpc",
                         qmin=10),
    ]
    model = _integer_model(nodes, {"acc": acc, "a": a, "b": b}, inits, {
        "r": (TensorProto.INT8, [2, 4, 5]), "ru": (TensorProto.UINT8, [2, 4, 5]), "y": (TensorProto.UINT8, [2, 4, 5])})
    _tvm_vs_reference(model, {"acc": acc, "a": a, "b": b})


REQUANT_CASES = {  # name: (multiplier, shift): per tensor, per channel with any shift, with shifts ≥ 32
    "uniform": ([2**31 - 1], [45]),
    "per-channel": ([2**31 - 1, 1, 0, 123456789, 2**30, 77], [31, 0, 5, 62, 40, 1]),
    "per-channel-high-word": ([2**31 - 1, 1, 0, 123456789, 2**30, 77], [32, 62, 32, 33, 40, 50]),
}


@pytest.mark.parametrize("name", list(REQUANT_CASES))
def test_requantize_multiplier_and_shift_extremes(name):
    """Requantization against the reference at the edges: the largest and smallest accumulators
    times multipliers up to 2^31 − 1, shifts from 0 to 62, per channel along the last axis (a
    matmul's) and per tensor. Shifts all ≥ 32 take the high-word kernel (`requantize_high_word`),
    others the int64 expression."""
    rng = np.random.default_rng(3)
    acc = rng.integers(-(2**31), 2**31 - 1, (3, 5, 6), dtype=np.int64).astype(np.int32)
    acc[0, 0] = [2**31 - 1, -(2**31), 0, 1, -1, 2**30]
    m, s = (np.array(v, np.int32) for v in REQUANT_CASES[name])
    inits = {"m": m, "s": s, "zp": np.array(-3, np.int8), "uzp": np.array(200, np.uint8)}
    nodes = [helper.make_node("Requantize", ["acc", "m", "s", "zp"], ["r"], domain="mlpc", axis=-1),
             helper.make_node("Requantize", ["acc", "m", "s", "uzp"], ["ru"], domain="mlpc", axis=2, qmin=3)]
    model = _integer_model(nodes, {"acc": acc}, inits, {"r": (TensorProto.INT8, [3, 5, 6]),
                                                        "ru": (TensorProto.UINT8, [3, 5, 6])})
    kernels = [gv.name_hint for gv in lower_graph(model.graph, 19).functions]
    assert any("requantize" in k for k in kernels) == bool(np.all(s >= 32)), kernels
    _tvm_vs_reference(model, {"acc": acc})


@pytest.mark.parametrize("shift", [9, 10, 31, 32, 45, 62])
def test_integer_add_shift_and_multiplier_extremes(shift):
    """IntegerAdd against the reference with broadcasting (a per-channel operand against a full
    one), uint8 + int8 operands at their extremes, multipliers ±(2^31 − 1) and −2^31, shifts on
    both sides of 32 and the high-word kernel's lower limit (`ADD_HIGH_WORD_MIN_SHIFT`, below it
    the int64 expression)."""
    rng = np.random.default_rng(shift)
    a = rng.integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
    b = rng.integers(-128, 128, (3, 1, 1), dtype=np.int8)
    a[0, 0, 0, :2], b[0, 0, 0] = [0, 255], -128
    feeds = {"a": a, "b": b}
    for am, bm in ((2**31 - 1, 2**31 - 1), (-(2**31), 2**31 - 1), (1518500250, -858993459)):
        inits = {"azp": np.array(255, np.uint8), "bzp": np.array(127, np.int8), "am": np.array(am, np.int32),
                 "bm": np.array(bm, np.int32), "shift": np.array(shift, np.int32), "zp": np.array(7, np.int8)}
        nodes = [helper.make_node("IntegerAdd", ["a", "b", "azp", "bzp", "am", "bm", "shift", "zp"], ["y"],
                                  domain="mlpc", qmin=-100)]
        model = _integer_model(nodes, feeds, inits, {"y": (TensorProto.INT8, [2, 3, 4, 5])})
        kernels = [gv.name_hint for gv in lower_graph(model.graph, 19).functions]
        assert any("integer_add" in k for k in kernels) == (shift >= ADD_HIGH_WORD_MIN_SHIFT), kernels
        _tvm_vs_reference(model, feeds)


@pytest.mark.parametrize("value", [127, -128])
def test_extreme_values_long_reductions(value):
    """All-extreme operands: products 2^14 summed 4096 times would saturate any int16 pair-add."""
    k = 4096
    a = np.full((4, k), value, np.int8)
    w = np.full((k, 16), value, np.int8)
    x = np.full((1, 512, 5, 5), value, np.int8)
    wc = np.full((8, 512, 3, 3), value, np.int8)
    nodes = [helper.make_node("IntegerMatMul", ["a", "w"], ["y"], domain="mlpc"),
             helper.make_node("IntegerConv", ["x", "wc"], ["c"], domain="mlpc", pads=[1, 1, 1, 1])]
    model = _integer_model(nodes, {"a": a, "x": x}, {"w": w, "wc": wc},
                           {"y": (TensorProto.INT32, [4, 16]), "c": (TensorProto.INT32, [1, 8, 5, 5])})
    got = run(build(lower_graph(model.graph, 19), host()), [a, x])
    assert np.all(got[0] == value * value * k)
    assert got[1][0, 0, 2, 2] == value * value * 512 * 9 and got[1][0, 0, 0, 0] == value * value * 512 * 4
    _tvm_vs_reference(model, {"a": a, "x": x})


# -- packing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("bits", "signed"), [(2, True), (2, False), (3, True), (4, True), (4, False)])
def test_pack_rows_layout(bits, signed):
    rng = np.random.default_rng(bits)
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    q = rng.integers(lo, hi + 1, (3, 11)).astype(np.int8 if signed else np.uint8)
    packed = pack_rows(q, bits)
    slot = slot_bits(bits)
    per = 8 // slot
    assert packed.dtype == np.uint8 and packed.shape == (3, -(-11 // per))
    # Low bits first: value r sits in bits [(r % per)·slot, …) of byte r // per.
    r = np.arange(11)
    v = (packed[:, r // per].astype(np.int64) >> ((r % per) * slot)) & ((1 << slot) - 1)
    if signed:
        v = np.where(v >= 1 << (slot - 1), v - (1 << slot), v)
    assert np.array_equal(v, q.astype(np.int64))


def _constant_bytes(mod) -> dict[str, int]:
    sizes: dict[str, int] = {}

    def visit(e):
        if isinstance(e, tvm.ir.expr.GenericConst):
            arr = e.value.numpy()
            sizes[str(arr.dtype)] = sizes.get(str(arr.dtype), 0) + arr.nbytes

    relax.analysis.post_order_visit(mod["main"], visit)
    return sizes


@pytest.mark.parametrize("w_bits", [2, 4])
def test_packed_weights_are_the_only_weight_bytes(w_bits):
    model, _ = single_layer_case("gemm", w_bits, 8, True, True)  # a 32×64 weight
    assert LowerQuantPass()(model.graph).modified
    sizes = _constant_bytes(lower_graph(model.graph, 19))
    fp32 = 32 * 64 * 4
    per = 8 // slot_bits(w_bits)
    assert sizes.get("uint8", 0) == 32 * 64 // per  # the packed weight
    assert sizes.get("int8", 0) < 64 and sizes.get("int16", 0) == 0  # no unpacked copy
    assert sizes["uint8"] * (32 // slot_bits(w_bits)) == fp32


def test_every_bit_width_combination_is_covered():
    combos = {(w, a, s, p) for w, a, s, p in BITS}
    assert {w for w, *_ in combos} == {2, 3, 4, 8} and {a for _, a, *_ in combos} == {4, 8}
    assert any(itertools.starmap(lambda w, a, s, p: not s, combos)) and any(not p for *_, p in combos)
