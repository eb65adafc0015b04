"""Convolution and pooling units: the sliding window's order and padding, the Flatten/Transpose
permutation, pooling and the folding of conv layers — against the reference interpreter and
IntegerConv, and the Verilog units against their golden models under Verilator."""
from __future__ import annotations

import shutil

import numpy as np
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper, numpy_helper

from mlpc.backends.fpga.backend import to_stream
from mlpc.backends.fpga.folding import Folding, choose_folding, layer_cycles, load_folding, window_cycles
from mlpc.backends.fpga.network import ConvWindow, MvauLayer, PoolLayer, channels_last_order, extract_network
from mlpc.backends.fpga.rtl import HDL_DIR, StreamPorts
from mlpc.backends.fpga.sim import simulate, write_testbench
from mlpc.backends.fpga.streams import channels_last, maxpool_map, window_vectors
from mlpc.errors import InputError, UnsupportedOpError
from mlpc.ir import MLPC_DOMAIN, MLPC_OPSET_VERSION
from mlpc.ir.evaluator import ReferenceEvaluator
from mlpc.ir.ops.integer_conv import integer_conv
from mlpc.targets.fpga import XCZU7EV

needs_verilator = pytest.mark.skipif(shutil.which("verilator") is None, reason="`make setup` installs verilator")
RNG = np.random.default_rng(0)


def _integer_model(nodes, inits, x_shape, out_name="y"):
    """An integer Graph (uint8 input) with every intermediate shape filled in by running it once."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, x_shape)],
                              [helper.make_tensor_value_info(out_name, TensorProto.UNDEFINED, None)],
                              initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid(MLPC_DOMAIN, MLPC_OPSET_VERSION)])
    names = [o for n in nodes for o in n.output]
    x = RNG.integers(0, 4, size=x_shape).astype(np.uint8)
    values = dict(zip(names, ReferenceEvaluator(proto).run({"x": x}, names).values()))
    model = ir.serde.deserialize_model(proto)
    for node in model.graph:
        for out in node.outputs:
            out.shape = ir.Shape(values[out.name].shape)
            out.dtype = ir.DataType.from_numpy(values[out.name].dtype)
    return model


def _requant(name, src, dst, channels, zp=0, qmax=3):
    return ([helper.make_node("Requantize", [src, f"{name}_m", f"{name}_s", f"{name}_zp"], [dst], name=name,
                              domain=MLPC_DOMAIN, qmin=0, qmax=qmax)],
            {f"{name}_m": RNG.integers(1 << 28, 1 << 30, size=channels).astype(np.int32),
             f"{name}_s": np.full(channels, 36, np.int32), f"{name}_zp": np.array(zp, np.uint8)})


def _conv_graph(stride=(2, 1), pads=(1, 0, 0, 1), kernel=(3, 2), tail="flatten"):
    """IntegerConv (x_zp = 1, a bias, asymmetric pads, 2-D stride) → Requantize → [MaxPool] →
    Flatten | Transpose+Reshape → IntegerMatMul: the logits accumulator."""
    c_in, c_out = 4, 6
    w = RNG.integers(-2, 2, size=(c_out, c_in, *kernel)).astype(np.int8)
    inits = {"w": w, "xzp": np.array(1, np.uint8), "b": RNG.integers(-20, 20, size=c_out).astype(np.int32)}
    nodes = [helper.make_node("IntegerConv", ["x", "w", "xzp", "", "b"], ["acc"], name="conv", domain=MLPC_DOMAIN,
                              kernel_shape=list(kernel), strides=list(stride), pads=list(pads))]
    rq, more = _requant("rq", "acc", "a", c_out)
    nodes += rq
    inits.update(more)
    x_shape = [1, c_in, 7, 6]
    oh = (7 + pads[0] + pads[2] - kernel[0]) // stride[0] + 1
    ow = (6 + pads[1] + pads[3] - kernel[1]) // stride[1] + 1
    src = "a"
    if tail == "transpose":
        nodes += [helper.make_node("Transpose", ["a"], ["t"], name="nhwc", perm=[0, 2, 3, 1]),
                  helper.make_node("Reshape", ["t", "shape"], ["f"], name="flat")]
        inits["shape"] = np.array([1, -1], np.int64)
    else:
        nodes.append(helper.make_node("Flatten", [src], ["f"], name="flatten"))
    inits["w2"] = RNG.integers(-2, 2, size=(c_out * oh * ow, 5)).astype(np.int8)
    nodes.append(helper.make_node("IntegerMatMul", ["f", "w2"], ["y"], name="fc", domain=MLPC_DOMAIN))
    return _integer_model(nodes, inits, x_shape)


@pytest.mark.parametrize("tail", ["flatten", "transpose"])
def test_weights_times_windows_is_the_graph(tail):
    """Window order × the MVAU's weight layout (+ offset, pads = x_zp) = IntegerConv, and the
    permuted fc weights on the channels-last stream = the Graph's Flatten/Transpose + MatMul."""
    model = _conv_graph(tail=tail)
    net = extract_network(model.graph)
    conv, fc = net.layers
    assert conv.window == ConvWindow(channels=4, in_h=7, in_w=6, k_h=3, k_w=2, stride_h=2, stride_w=1,
                                     pads=(1, 0, 0, 1), pad_value=1, out_h=3, out_w=6)
    assert conv.mw == 3 * 2 * 4 and conv.vectors == 18 and conv.simd_limit == 4
    ev = ReferenceEvaluator(model)
    for _ in range(3):
        x = RNG.integers(0, 4, size=(1, 4, 7, 6)).astype(np.uint8)
        acc, a, y = (ev.run({"x": x}, ["acc", "a", "y"])[k] for k in ("acc", "a", "y"))
        windows = window_vectors(x[0].astype(np.int64), conv.window)
        hw_acc = windows @ conv.weights.T  # (pixels, channels): what the MVAU accumulates
        graph_acc = acc[0].transpose(1, 2, 0).reshape(18, 6) - conv_bias(model)
        assert np.array_equal(hw_acc + conv_offset(conv), graph_acc)
        # the thresholds turn it into the Requantize output, channels-last
        levels = (hw_acc[:, :, None] >= conv.thresholds[None]).sum(-1)
        assert np.array_equal(levels.reshape(-1), channels_last(a[0]))
        # the fc layer reads the channels-last stream with permuted weights
        stream = to_stream(a, channels_last_order(a.shape))
        assert np.array_equal(fc.weights @ stream + fc.offset, y.reshape(-1))
    assert np.array_equal(net.out_order, np.arange(5))


def conv_bias(model):
    return model.graph.initializers["b"].const_value.numpy().astype(np.int64)


def conv_offset(conv):
    return -conv.window.pad_value * conv.weights.sum(axis=1)


def test_window_vectors_match_integer_conv_padding_and_stride():
    x = RNG.integers(0, 8, size=(3, 5, 6))
    w = RNG.integers(-3, 3, size=(2, 3, 3, 3))
    win = ConvWindow(channels=3, in_h=5, in_w=6, k_h=3, k_w=3, stride_h=2, stride_w=2, pads=(1, 2, 1, 0),
                     pad_value=2, out_h=3, out_w=3)
    want = integer_conv(x[None].astype(np.uint8), w.astype(np.int8), np.array(2, np.uint8),
                        pads=[1, 2, 1, 0], strides=[2, 2])[0]
    got = (window_vectors(x, win) - 2) @ w.transpose(0, 2, 3, 1).reshape(2, -1).T
    assert np.array_equal(got.T.reshape(2, 3, 3), want)


def test_maxpool_is_a_pool_unit_and_matches_onnx():
    c = 4
    w = RNG.integers(-2, 2, size=(c, 2, 3, 3)).astype(np.int8)
    nodes = [helper.make_node("IntegerConv", ["x", "w"], ["acc"], name="conv", domain=MLPC_DOMAIN, pads=[1, 1, 1, 1])]
    rq, inits = _requant("rq", "acc", "a", c)
    nodes += rq + [helper.make_node("MaxPool", ["a"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
                   helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
                   helper.make_node("IntegerMatMul", ["f", "w2"], ["y"], name="fc", domain=MLPC_DOMAIN)]
    inits.update({"w": w, "w2": RNG.integers(-2, 2, size=(c * 9, 3)).astype(np.int8)})
    model = _integer_model(nodes, inits, [1, 2, 7, 7])
    net = extract_network(model.graph)
    pool = net.layers[1]
    assert isinstance(pool, PoolLayer) and (pool.out_h, pool.out_w, pool.in_range) == (3, 3, (0, 3))
    x = RNG.integers(0, 4, size=(1, 2, 7, 7)).astype(np.uint8)
    a, p = (ReferenceEvaluator(model).run({"x": x}, ["a", "p"])[k] for k in ("a", "p"))
    assert np.array_equal(maxpool_map(a[0], pool), p[0])  # row 7 and column 7 are dropped, as ONNX does


@pytest.mark.parametrize("node,attrs,match", [
    ("IntegerConv", {"group": 2}, r"node 'conv'\): group=2; .*no depthwise/grouped unit"),
    ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2]}, r"node 'pool' \(MaxPool\): kernel \[3, 3\] with strides"),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 0, 0]}, r"node 'pool' .*padding"),
])
def test_unsupported_variants_name_the_node(node, attrs, match):
    w = RNG.integers(-2, 2, size=(4, 2 if node == "IntegerConv" and "group" in attrs else 4, 3, 3)).astype(np.int8)
    conv_attrs = attrs if node == "IntegerConv" else {}
    nodes = [helper.make_node("IntegerConv", ["x", "w"], ["acc"], name="conv", domain=MLPC_DOMAIN, pads=[1, 1, 1, 1],
                              **conv_attrs)]
    rq, inits = _requant("rq", "acc", "a", 4)
    nodes += rq
    inits["w"] = w
    out = "a"
    if node == "MaxPool":
        nodes.append(helper.make_node("MaxPool", ["a"], ["y"], name="pool", **attrs))
        out = "y"
    nodes.append(helper.make_node("Identity", [out], ["z"], name="id"))
    model = _integer_model(nodes, inits, [1, 4, 8, 8], out_name="z")
    with pytest.raises(UnsupportedOpError, match=match):
        extract_network(model.graph)


def test_an_op_with_no_streaming_unit_is_refused_by_name():
    w = RNG.integers(-2, 2, size=(4, 1, 3, 3)).astype(np.int8)
    nodes = [helper.make_node("IntegerConv", ["x", "w"], ["acc"], name="conv", domain=MLPC_DOMAIN),
             helper.make_node("Abs", ["acc"], ["y"], name="abs1")]
    model = _integer_model(nodes, {"w": w}, [1, 1, 6, 6])
    net = extract_network(model.graph)  # the accumulator is the design's output, Abs runs on the host
    assert net.host_tail == ["abs1"]
    nodes = [helper.make_node("Abs", ["x"], ["y"], name="abs0")]
    with pytest.raises(UnsupportedOpError, match=r"node 'abs0' \(Abs\): the FPGA backend has no streaming unit"):
        extract_network(_integer_model(nodes, {}, [1, 1, 6, 6]).graph)


def _conv_layer(c_in=8, c_out=16, hw=8, k=3):
    win = ConvWindow(channels=c_in, in_h=hw, in_w=hw, k_h=k, k_w=k, stride_h=1, stride_w=1, pads=(1, 1, 1, 1),
                     pad_value=0, out_h=hw, out_w=hw)
    return MvauLayer(name="mvau0", source="conv", weights=RNG.integers(-1, 2, size=(c_out, k * k * c_in)),
                     in_range=(0, 3), w_range=(-1, 1), out_range=(0, 3), acc_range=(-500, 500), vectors=hw * hw,
                     thresholds=np.zeros((c_out, 3), np.int64), window=win)


def test_conv_cycles_and_folding_rules():
    layer = _conv_layer()
    assert layer_cycles(layer, Folding(4, 2)) == (16 // 4) * (72 // 2) * 64
    assert window_cycles(layer.window, 2) == 64 * 9 * 4  # the window emits 9 positions × C/SIMD beats per pixel
    [fold] = choose_folding([layer], XCZU7EV, fps=100e6 / 1200)
    assert 8 % fold.simd == 0 and layer_cycles(layer, fold) <= 1200
    with pytest.raises(InputError, match=r"layer mvau0 \(conv, 72x16\) needs at least 576 cycle"):
        choose_folding([layer], XCZU7EV, fps=1e6)
    [fast] = choose_folding([layer], XCZU7EV, fps=None)
    assert fast.simd <= 8 and layer_cycles(layer, fast) == 576
    with pytest.raises(InputError, match=r"SIMD=9 must divide C_in=8"):
        load_folding({"mvau0": {"PE": 1, "SIMD": 9}}, [layer])


def _unit_top(kind, params, in_n, out_n, bits):
    plist = ", ".join(f".{k}({v})" for k, v in params.items())
    return (f"module mlpc_top (input wire clk, input wire rst, input wire [{in_n * bits - 1}:0] in_data,\n"
            f"  input wire in_valid, output wire in_ready, output wire [{out_n * bits - 1}:0] out_data,\n"
            f"  output wire out_valid, input wire out_ready);\n"
            f"  {kind} #({plist}) u (.clk(clk), .rst(rst), .in_data(in_data), .in_valid(in_valid),\n"
            f"    .in_ready(in_ready), .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready));\n"
            "endmodule\n")


def _run_unit(tmp_path, module, kind, params, in_n, out_n, bits, signed, inputs, expected):
    shutil.copyfile(HDL_DIR / module, tmp_path / module)
    (tmp_path / "mlpc_top.v").write_text(_unit_top(kind, params, in_n, out_n, bits))
    p = StreamPorts(in_n, bits, signed, out_n, bits, signed, inputs.shape[1] // in_n, expected.shape[1] // out_n)
    write_testbench(tmp_path, p, inputs, expected)
    return [simulate(tmp_path, [module, "mlpc_top.v"], stall_seed=s) for s in (None, 3)]


@needs_verilator
@pytest.mark.slow  # reason: a Verilator build, ~25 s; the CNN build in make test runs this unit too
def test_sliding_window_verilog_matches_its_golden_model(tmp_path):
    """Stride 2 × 1, asymmetric pads, a 3 × 2 kernel, SIMD 2 of 6 channels, W = 5 (not a power of
    two): every window beat of 4 images, at full rate and with random stalls."""
    win = ConvWindow(channels=6, in_h=7, in_w=5, k_h=3, k_w=2, stride_h=2, stride_w=1, pads=(1, 1, 1, 0),
                     pad_value=2, out_h=4, out_w=5)
    maps = RNG.integers(0, 4, size=(4, 6, 7, 5))
    inputs = np.array([channels_last(m) for m in maps])
    expected = np.array([window_vectors(m, win).reshape(-1) for m in maps])
    params = {"C": 6, "SIMD": 2, "IB": 2, "H": 7, "W": 5, "KH": 3, "KW": 2, "SH": 2, "SW": 1, "PT": 1, "PL": 1,
              "OH": 4, "OW": 5, "PAD_VALUE": 2, "ROWS": 8, "RAM_BLOCK": 0}
    full, stalled = _run_unit(tmp_path, "mlpc_swg.v", "mlpc_swg", params, 2, 2, 2, False, inputs, expected)
    assert full["passed"] and stalled["passed"], (full, stalled)
    # at full rate one window beat per cycle: 4·5 pixels × 6 positions × 3 channel folds per image
    assert full["ii_cycles"] == window_cycles(win, 2) == 360


@needs_verilator
@pytest.mark.slow  # reason: a Verilator build, ~25 s; the CNN build in make test runs this unit too
def test_max_pool_verilog_matches_its_golden_model(tmp_path):
    """A 3 × 2 pool (stride = kernel) on signed 3-bit 7 × 5 maps, PE 2 of 4 channels: the last row
    and column are dropped; full rate and random stalls."""
    pool = PoolLayer(name="pool0", source="p", channels=4, in_h=7, in_w=5, k_h=3, k_w=2, in_range=(-4, 3))
    maps = RNG.integers(-4, 4, size=(4, 4, 7, 5))
    inputs = np.array([channels_last(m) for m in maps])
    expected = np.array([channels_last(maxpool_map(m, pool)) for m in maps])
    params = {"C": 4, "PE": 2, "B": 3, "SIGNED": 1, "H": 7, "W": 5, "KH": 3, "KW": 2, "OH": 2, "OW": 2}
    full, stalled = _run_unit(tmp_path, "mlpc_pool.v", "mlpc_pool", params, 2, 2, 3, True, inputs, expected)
    assert full["passed"] and stalled["passed"], (full, stalled)
    assert full["ii_cycles"] == 7 * 5 * 4 // 2  # one input beat per cycle
