"""The int16-pair integer kernels (vpmaddwd on AVX2): chosen for conv/matmul with whole 8-lane
output groups, scheduled (never left as naive loops), bit-exact with the reference evaluator
on awkward shapes, and really emitting vpmaddwd for an AVX2 target."""
from __future__ import annotations

import logging
import re

import numpy as np
import pytest
from onnx import TensorProto, helper
from test_ops_integer import _integer_model, _tvm_vs_reference

from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.int_pairs import PAIRS, UQUADS, fold_columns, folds_columns, pair_weight
from mlpc.backends.tvm.lower import lower_graph
from mlpc.ir import QuantParams, ReferenceEvaluator, verify
from mlpc.targets import get_target

CONV_CASES = {  # name: (x shape, channels out, attributes)
    "3x3-uint8-zp": ((1, 5, 9, 9), 16, {"pads": [1, 1, 1, 1]}),
    "strided-dilated-asym-pads": ((2, 3, 11, 10), 8, {"pads": [2, 0, 1, 3], "strides": [2, 1], "dilations": [1, 2]}),
    "1x1": ((1, 32, 6, 6), 24, {}),
    "conv1d": ((2, 7, 20), 16, {"pads": [2, 1], "strides": [2]}),
}


def _conv_model(x_shape, cout, attrs, rng):
    x = rng.integers(0, 256, x_shape, dtype=np.uint8)
    kernel = (3,) * (len(x_shape) - 2) if attrs else (1,) * (len(x_shape) - 2)
    w = rng.integers(-128, 128, (cout, x_shape[1], *kernel), dtype=np.int8)
    inits = {"w": w, "xzp": np.array(93, np.uint8), "wzp": rng.integers(-3, 4, cout).astype(np.int8),
             "bias": rng.integers(-9000, 9000, cout).astype(np.int32)}
    node = helper.make_node("IntegerConv", ["x", "w", "xzp", "wzp", "bias"], ["y"], domain="mlpc", **attrs)
    qp = QuantParams(bits=8, scale=np.ones(cout), zero_point=inits["wzp"], axis=0)
    model = _integer_model([node], {"x": x}, inits, {"y": (TensorProto.INT32, None)}, {"w": qp})
    return model, {"x": x}


def _matmul_model(a_shape, n, rng):
    a = rng.integers(0, 256, a_shape, dtype=np.uint8)
    b = rng.integers(-128, 128, (a_shape[-1], n), dtype=np.int8)
    inits = {"b": b, "azp": np.array(128, np.uint8), "bzp": rng.integers(-2, 3, n).astype(np.int8)}
    node = helper.make_node("IntegerMatMul", ["a", "b", "azp", "bzp"], ["y"], domain="mlpc")
    qp = QuantParams(bits=8, scale=np.ones(n), zero_point=inits["bzp"], axis=1)
    model = _integer_model([node], {"a": a}, inits, {"y": (TensorProto.INT32, [*a_shape[:-1], n])}, {"b": qp})
    return model, {"a": a}


def _unscheduled(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "left unscheduled" in r.getMessage()]


def _kernels(model) -> list[str]:
    return [gv.name_hint for gv in lower_graph(model.graph, 19).functions]


@pytest.mark.parametrize("name", list(CONV_CASES))
def test_pair_conv_bit_exact(name, caplog):
    model, feeds = _conv_model(*CONV_CASES[name], np.random.default_rng(len(name)))
    assert any("pair_conv" in k for k in _kernels(model))
    with caplog.at_level(logging.INFO, logger="mlpc.backends.tvm.cpu_schedule"):
        _tvm_vs_reference(model, feeds)
    assert not _unscheduled(caplog)


@pytest.mark.parametrize("kind", ["conv", "matmul"])
def test_pair_kernels_without_avx2_are_scheduled_and_bit_exact(kind, caplog):
    """The portable x86 target (SSE4.2: no vpmaddwd; ARM takes the same path) vectorizes the
    pair loops instead of tensorizing them; it must still schedule every kernel."""
    rng = np.random.default_rng(7)
    if kind == "conv":
        model, feeds = _conv_model(*CONV_CASES["3x3-uint8-zp"], rng)
    else:
        model, feeds = _matmul_model((3, 40), 16, rng)
    with caplog.at_level(logging.INFO, logger="mlpc.backends.tvm.cpu_schedule"):
        _tvm_vs_reference(model, feeds, target=get_target("x86"))
    assert not _unscheduled(caplog)


@pytest.mark.parametrize("bits", [4, 2])
def test_packed_pair_conv_bit_exact_and_scheduled(bits, caplog):
    rng = np.random.default_rng(bits)
    x = rng.integers(0, 256, (1, 6, 7, 7), dtype=np.uint8)
    w = rng.integers(-(2 ** (bits - 1)) + 1, 2 ** (bits - 1), (16, 6, 3, 3), dtype=np.int8)
    inits = {"w": w, "xzp": np.array(11, np.uint8)}
    node = helper.make_node("IntegerConv", ["x", "w", "xzp"], ["y"], domain="mlpc", pads=[1, 1, 1, 1])
    qp = QuantParams(bits=bits, scale=np.ones(16), axis=0)
    model = _integer_model([node], {"x": x}, inits, {"y": (TensorProto.INT32, [1, 16, 7, 7])}, {"w": qp})
    assert any("pair_conv" in k for k in _kernels(model))
    with caplog.at_level(logging.INFO, logger="mlpc.backends.tvm.cpu_schedule"):
        _tvm_vs_reference(model, {"x": x})
    assert not _unscheduled(caplog)


@pytest.mark.parametrize(("a_shape", "n"), [((1, 37), 16), ((3, 5, 33), 24), ((8, 64), 8)])
def test_pair_matmul_bit_exact(a_shape, n, caplog):
    model, feeds = _matmul_model(a_shape, n, np.random.default_rng(n))
    assert any("pair_matmul" in k for k in _kernels(model))
    with caplog.at_level(logging.INFO, logger="mlpc.backends.tvm.cpu_schedule"):
        _tvm_vs_reference(model, feeds)
    assert not _unscheduled(caplog)


def test_pair_weight_layout():
    w = np.arange(16 * 3 * 2 * 2).reshape(16, 3, 2, 2).astype(np.int16)
    p = pair_weight(w)
    assert p.shape == (2, 2, 2, 2, 8, 2) and p.dtype == np.int16
    # output channel 8·g + l, kernel position (i, j), input channel 2·c + k
    assert p[1, 0, 1, 0, 3, 1] == w[11, 1, 0, 1]
    assert p[0, 1, 1, 1, 7, 0] == w[7, 2, 1, 1]
    assert p[0, 1, 1, 1, 7, 1] == 0  # channel 3 is padding


def _assembly(model, target_name: str) -> str:
    """The assembly of `model` built for the target, lowered with the target's int8_dot."""
    target = get_target(target_name)
    executable = build(lower_graph(model.graph, 19, int8_dot=target.capabilities["int8_dot"]), target)
    return "".join(m.inspect_source("s") for m in executable.mod.imports if m.kind == "llvm") or \
        executable.mod.inspect_source("s")


def test_avx2_build_multiplies_with_256_bit_vpmaddwd():
    model, _ = _conv_model(*CONV_CASES["3x3-uint8-zp"], np.random.default_rng(0))
    assert re.search(r"vpmaddwd\s+(\d*\(%\w+[^)]*\)|%ymm\d+), %ymm\d+, %ymm\d+", _assembly(model, "x86/avx2"))


# -- the int8-quad layout (ARM dot product) -------------------------------------------------------
# The layout is plain TIR: built for this x86 host (LLVM vectorizes the loops) it must equal the
# reference bit for bit; built for arm/neoverse-n1 its 8 × 4 update is tensorized with sdot.


def _quads_vs_reference(model, feeds, caplog, int8_dot: str = "sdot", target: str = "host"):
    """Lower with `int8_dot`, build for `target` on this host; assert bit-exact and scheduled;
    return the lowered module."""
    verify(model)
    ref = ReferenceEvaluator(model).run(feeds)
    mod = lower_graph(model.graph, 19, int8_dot=int8_dot)
    with caplog.at_level(logging.INFO, logger="mlpc.backends.tvm.cpu_schedule"):
        got = run(build(mod, get_target(target)), [feeds[v.name] for v in model.graph.inputs])
    assert not _unscheduled(caplog)
    for value, g in zip(model.graph.outputs, got):
        np.testing.assert_array_equal(g, ref[value.name])
    return mod


def _quad_conv_model(x_dtype, xzp, cout, bits, rng, wzp=False):
    lo, hi = (-126, 125) if bits == 8 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)  # w - wzp fits int8
    info = np.iinfo(x_dtype)
    x = rng.integers(info.min, info.max + 1, (1, 5, 7, 7)).astype(x_dtype)
    w = rng.integers(lo, hi + 1, (cout, 5, 3, 3)).astype(np.int8)
    inits = {"w": w, "xzp": np.array(xzp, x_dtype)}
    names = ["x", "w", "xzp"]
    if wzp:
        inits["wzp"] = rng.integers(-2, 3, cout).astype(np.int8)
        names.append("wzp")
    node = helper.make_node("IntegerConv", names, ["y"], domain="mlpc", pads=[1, 0, 2, 1], strides=[1, 2])
    qp = QuantParams(bits=bits, scale=np.ones(cout), zero_point=inits.get("wzp", 0), axis=0)
    return _integer_model([node], {"x": x}, inits, {"y": (TensorProto.INT32, None)}, {"w": qp}), {"x": x}


@pytest.mark.parametrize("x_dtype,xzp,bits,wzp", [
    (np.uint8, 0, 8, False),  # post-ReLU activations: uint8 - 128 and the correction
    (np.uint8, 201, 8, True),  # padding takes zp - 128
    (np.int8, 0, 8, False),  # no correction at all
    (np.int8, -37, 4, True),  # packed 4-bit weights with a zero point
    (np.uint8, 3, 2, False),  # packed 2-bit
])
def test_quad_conv_bit_exact_on_host(x_dtype, xzp, bits, wzp, caplog):
    model, feeds = _quad_conv_model(x_dtype, xzp, 16, bits, np.random.default_rng(bits + abs(xzp)), wzp)
    kernels = [gv.name_hint for gv in _quads_vs_reference(model, feeds, caplog).functions]
    assert any("pair_conv" in k for k in kernels)
    block_names = str(lower_graph(model.graph, 19, int8_dot="sdot"))
    assert "mlpc_quad_conv" in block_names and "mlpc_pair_conv" not in block_names


@pytest.mark.parametrize("bits", [8, 4])
def test_quad_matmul_bit_exact_on_host(bits, caplog):
    rng = np.random.default_rng(bits)
    a = rng.integers(0, 256, (3, 37), dtype=np.uint8)
    lo, hi = (-128, 127) if bits == 8 else (-8, 7)
    b = rng.integers(lo, hi + 1, (37, 24)).astype(np.int8)
    inits = {"b": b, "azp": np.array(131, np.uint8)}
    node = helper.make_node("IntegerMatMul", ["a", "b", "azp"], ["y"], domain="mlpc")
    qp = QuantParams(bits=bits, scale=np.ones(24), axis=1)
    model = _integer_model([node], {"a": a}, inits, {"y": (TensorProto.INT32, [3, 24])}, {"b": qp})
    _quads_vs_reference(model, {"a": a}, caplog)
    assert "mlpc_quad_matmul" in str(lower_graph(model.graph, 19, int8_dot="sdot"))


def test_int16_weights_keep_the_pair_layout_on_dotprod_targets():
    """A weight whose zero point pushes it out of int8 cannot use sdot: pairs, still exact."""
    model, _ = _conv_model(*CONV_CASES["3x3-uint8-zp"], np.random.default_rng(0))  # w in [-128, 127], wzp ≠ 0
    text = str(lower_graph(model.graph, 19, int8_dot="sdot"))
    assert "mlpc_pair_conv" in text and "mlpc_quad_conv" not in text


def test_neoverse_n1_build_multiplies_with_sdot():
    model, _ = _quad_conv_model(np.uint8, 0, 16, 8, np.random.default_rng(0))
    executable = build(lower_graph(model.graph, 19, int8_dot="sdot"), get_target("arm/neoverse-n1"))
    assembly = "".join(m.inspect_source("s") for m in executable.mod.imports if m.kind == "llvm") or \
        executable.mod.inspect_source("s")
    assert re.search(r"\bsdot\s+v\d+\.4s, v\d+\.16b, v\d+\.(16b|4b\[\d\])", assembly)
    assert "pmaddwd" not in assembly


@pytest.mark.parametrize(("int8_dot", "bits"), [(None, 8), ("sdot", 8), ("pmaddubsw", 4)])
def test_kernels_without_a_tensor_intrinsic_are_scheduled_and_exact(int8_dot, bits, caplog):
    """Without vpmaddwd, vpmaddubsw or sdot (the baseline x86 tag, 128-bit) the same loops are
    vectorized: a regression test for pair kernels that every non-AVX2 build (all of ARM) left
    unscheduled."""
    model, feeds = _quad_conv_model(np.uint8, 7, 16, bits, np.random.default_rng(5))
    ref = ReferenceEvaluator(model).run(feeds)["y"]
    with caplog.at_level(logging.INFO, logger="mlpc.backends.tvm.cpu_schedule"):
        got = run(build(lower_graph(model.graph, 19, int8_dot=int8_dot), get_target("x86")), [feeds["x"]])[0]
        build(lower_graph(model.graph, 19, int8_dot=int8_dot), get_target("arm/cortex-a72"))
    assert not _unscheduled(caplog)
    np.testing.assert_array_equal(got, ref)


# -- the uint8-quad layout (AVX2 vpmaddubsw, weights of at most 7 bits) ----------------------------


@pytest.mark.parametrize("x_dtype,xzp,bits,wzp", [
    (np.uint8, 0, 4, False),  # post-ReLU activations as they are
    (np.uint8, 201, 4, True),  # padding takes the zero point
    (np.int8, 0, 2, False),  # int8 + 128 and the correction
    (np.int8, -37, 4, True),  # packed 4-bit weights with a zero point
    (np.uint8, 3, 2, False),  # packed 2-bit
])
def test_uquad_conv_bit_exact(x_dtype, xzp, bits, wzp, caplog):
    model, feeds = _quad_conv_model(x_dtype, xzp, 16, bits, np.random.default_rng(bits + abs(xzp)), wzp)
    text = str(_quads_vs_reference(model, feeds, caplog, "pmaddubsw", "x86/avx2"))
    assert "mlpc_uquad_conv" in text and "mlpc_pair_conv" not in text


@pytest.mark.parametrize("sign", [1, -1])
def test_uquad_matmul_exact_at_the_saturation_limit(sign, caplog):
    """7-bit weights at ±64 against activations of 255: every int16 pair sum of vpmaddubsw is
    ±32640, one step below saturation; a long reduction must still be exact."""
    rng = np.random.default_rng(7)
    a = np.full((2, 515), 255, np.uint8)
    a[1, ::3] = 0
    b = np.full((515, 16), sign * 64, np.int8)
    b[::5] = rng.integers(-64, 65, (103, 16))
    inits = {"b": b, "azp": np.array(0, np.uint8)}
    node = helper.make_node("IntegerMatMul", ["a", "b", "azp"], ["y"], domain="mlpc")
    qp = QuantParams(bits=8, scale=np.ones(16), axis=1)
    model = _integer_model([node], {"a": a}, inits, {"y": (TensorProto.INT32, [2, 16])}, {"b": qp})
    assert "mlpc_uquad_matmul" in str(_quads_vs_reference(model, {"a": a}, caplog, "pmaddubsw", "x86/avx2"))


def test_eight_bit_weights_keep_the_pair_layout_on_avx2():
    """Weights beyond ±64 would saturate vpmaddubsw's int16 sums: they keep the exact pairs."""
    model, _ = _quad_conv_model(np.uint8, 0, 16, 8, np.random.default_rng(0))
    text = str(lower_graph(model.graph, 19, int8_dot="pmaddubsw"))
    assert "mlpc_pair_conv" in text and "mlpc_uquad_conv" not in text


def test_avx2_build_multiplies_with_vpmaddubsw():
    model, _ = _quad_conv_model(np.uint8, 0, 16, 4, np.random.default_rng(0))
    assembly = _assembly(model, "x86/avx2")
    assert re.search(r"vpmaddubsw\s+(\d*\(%\w+[^)]*\)|%ymm\d+), %ymm\d+, %ymm\d+", assembly)


# -- convolutions with fewer input channels than a group: kernel columns folded into the channels ---


def _few_channel_conv(x_shape, attrs, x_dtype, xzp, bits, rng, wzp=False):
    """An IntegerConv of 16 outputs with a kernel of 3 (3×2 in 2-D) over x_shape's few channels."""
    info = np.iinfo(x_dtype)
    x = rng.integers(info.min, info.max + 1, x_shape).astype(x_dtype)
    kernel = (3,) if len(x_shape) == 3 else (3, 2)
    lo, hi = (-60, 60) if bits == 8 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    w = rng.integers(lo, hi + 1, (16, x_shape[1], *kernel)).astype(np.int8)
    inits = {"w": w, "xzp": np.array(xzp, x_dtype)}
    names = ["x", "w", "xzp"]
    if wzp:
        inits["wzp"] = rng.integers(-1, 2, 16).astype(np.int8)  # within 2-bit range
        names.append("wzp")
    node = helper.make_node("IntegerConv", names, ["y"], domain="mlpc", **attrs)
    qp = QuantParams(bits=bits, scale=np.ones(16), zero_point=inits.get("wzp", 0), axis=0)
    return _integer_model([node], {"x": x}, inits, {"y": (TensorProto.INT32, None)}, {"w": qp}), {"x": x}


FEW_CHANNEL_CASES = {  # name: (x shape, attributes, the widened input's shape but its channels)
    "image-1ch-pad1": ((1, 1, 8, 8), {"pads": [1, 1, 1, 1]}, (1, 10, 9)),  # kernel 3×2: 9 output columns
    "image-2ch-stride-dilation": ((2, 2, 9, 11), {"pads": [0, 2, 1, 1], "strides": [1, 2], "dilations": [2, 3]},
                                  (2, 10, 6)),
    "signal-1ch-stride2": ((3, 1, 40), {"pads": [2, 1], "strides": [2]}, (3, 21)),
}


def _widened_shape(lowered, layout: str) -> tuple[int, ...]:
    """The shape of the conv's widened input buffer in a lowered module's text."""
    line = next(t for t in str(lowered).splitlines() if f"mlpc_{layout}_input = T.sblock_alloc_buffer(" in t)
    return tuple(int(d) for d in re.findall(r"T.int64\((\d+)\)", line.split('), "')[0]))


@pytest.mark.parametrize("name", list(FEW_CHANNEL_CASES))
@pytest.mark.parametrize(("int8_dot", "target", "x_dtype", "xzp", "bits", "wzp"), [
    ("pmaddubsw", "x86/avx2", np.uint8, 0, 4, False),  # uint8 quads
    ("pmaddubsw", "x86/avx2", np.int8, -37, 2, True),  # packed 2-bit with a zero point, int8 + 128
    ("sdot", "host", np.uint8, 201, 8, False),  # int8 quads, padding at the zero point
])
def test_few_channel_quad_convs_fold_kernel_columns_and_stay_exact(name, int8_dot, target, x_dtype, xzp, bits,
                                                                   wzp, caplog):
    """Fewer channels than a quad of 4: the kernel columns go into the reduction group (channels
    kx·C + c, padded to 4), bit-exact for every stride, dilation and padding."""
    x_shape, attrs, widened = FEW_CHANNEL_CASES[name]
    model, feeds = _few_channel_conv(x_shape, attrs, x_dtype, xzp, bits, np.random.default_rng(bits), wzp)
    lowered = _quads_vs_reference(model, feeds, caplog, int8_dot, target)
    columns = 3 if len(x_shape) == 3 else 2
    layout = "uquad" if int8_dot == "pmaddubsw" else "quad"
    assert _widened_shape(lowered, layout) == (*widened, -(-x_shape[1] * columns // 4) * 4)


def test_one_channel_pair_conv_folds_kernel_columns_and_stays_exact(caplog):
    """Pairs (8-bit weights): a one-channel kernel of two columns fills a pair instead of padding
    every tap's single channel."""
    model, feeds = _few_channel_conv((1, 1, 8, 8), {"pads": [1, 1, 1, 1]}, np.uint8, 93, 8,
                                     np.random.default_rng(3))
    assert _widened_shape(lower_graph(model.graph, 19), "pair") == (1, 10, 9, 2)
    with caplog.at_level(logging.INFO, logger="mlpc.backends.tvm.cpu_schedule"):
        _tvm_vs_reference(model, feeds)
    assert not _unscheduled(caplog)


def test_fold_columns_moves_the_last_kernel_axis_into_the_channels():
    w = np.arange(4 * 2 * 3 * 5).reshape(4, 2, 3, 5)
    folded = fold_columns(w)
    assert folded.shape == (4, 10, 3, 1)
    for kx in range(5):
        for c in range(2):
            np.testing.assert_array_equal(folded[:, kx * 2 + c, :, 0], w[:, c, :, kx])
    assert folds_columns(1, [3, 3], PAIRS) and folds_columns(2, [3], UQUADS) and folds_columns(1, [2], UQUADS)
    assert not folds_columns(2, [3, 3], PAIRS) and not folds_columns(1, [3, 1], UQUADS)
    assert not folds_columns(3, [3, 3], UQUADS)  # three quads per kernel row either way


@pytest.mark.parametrize(("width", "two_groups"), [(4, True), (8, False)])
def test_convs_with_short_rows_tile_two_output_channel_groups(width, two_groups):
    """Rows of at most 4 outputs take two 8-channel groups per register tile (each broadcast
    feeds two multiply-adds); rows of 8 keep one group of 8 rows."""
    from mlpc.backends.tvm.cpu_schedule import cpu_pipeline

    model, _ = _conv_model((1, 16, width, width), 32, {"pads": [1, 1, 1, 1]}, np.random.default_rng(width))
    tvm_target = get_target("x86/avx2").tvm_target()
    with tvm_target:
        scheduled = str(cpu_pipeline(tvm_target, 256, None, True, False)(lower_graph(model.graph, 19)))
    assert bool(re.search(r"for oc_1 in T\.unroll\(T\.int64\(2\)\)", scheduled)) == two_groups
