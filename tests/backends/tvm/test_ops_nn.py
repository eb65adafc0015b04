"""Conv, ConvTranspose, Gemm, MatMul, pooling, normalization and softmax against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from ort_harness import check_ort, rand

CONV_CASES = [
    # (input shape, weight shape, attributes, with bias)
    ((1, 4, 9, 9), (6, 4, 3, 3), {"pads": [1, 1, 1, 1]}, True),
    ((2, 4, 10, 8), (8, 2, 3, 2), {"group": 2, "strides": [2, 1], "dilations": [1, 2]}, False),
    ((1, 6, 8, 8), (6, 1, 3, 3), {"group": 6, "auto_pad": "SAME_UPPER", "strides": [2, 2]}, True),
    ((1, 3, 7, 7), (5, 3, 4, 4), {"auto_pad": "SAME_LOWER"}, True),
    ((1, 3, 7, 7), (5, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}, False),
    ((1, 3, 8, 8), (4, 3, 3, 3), {"pads": [0, 1, 2, 1]}, True),
    ((2, 4, 20), (6, 4, 5), {"pads": [2, 1], "strides": [2], "dilations": [2]}, True),
    ((1, 4, 16), (4, 1, 3), {"group": 4, "auto_pad": "SAME_UPPER"}, False),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs,bias", CONV_CASES)
def test_conv(x_shape, w_shape, attrs, bias):
    inits = {"w": rand(*w_shape, seed=1)}
    ins = ["x", "w"]
    if bias:
        inits["b"] = rand(w_shape[0], seed=2)
        ins.append("b")
    check_ort([helper.make_node("Conv", ins, ["y"], **attrs)], {"x": rand(*x_shape, seed=3)}, ["y"], inits, 13)


CONV_T_CASES = [
    ((1, 4, 5, 5), (4, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 1]}, True),
    ((1, 4, 6, 5), (4, 2, 2, 3), {"group": 2, "strides": [2, 1]}, False),
    ((2, 3, 7), (3, 5, 4), {"strides": [3], "pads": [1, 2]}, True),
    ((1, 2, 4, 4), (2, 3, 3, 3), {"strides": [2, 2], "output_shape": [9, 9]}, False),
    ((1, 2, 4, 5), (2, 3, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, True),
    ((1, 2, 4, 5), (2, 3, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, False),
]


@pytest.mark.parametrize("x_shape,w_shape,attrs,bias", CONV_T_CASES)
def test_conv_transpose(x_shape, w_shape, attrs, bias):
    inits = {"w": rand(*w_shape, seed=4)}
    ins = ["x", "w"]
    if bias:
        inits["b"] = rand(w_shape[1] * attrs.get("group", 1), seed=5)
        ins.append("b")
    check_ort([helper.make_node("ConvTranspose", ins, ["y"], **attrs)], {"x": rand(*x_shape, seed=6)},
              ["y"], inits, 13)


def test_gemm_and_matmul_variants():
    nodes = [
        helper.make_node("Gemm", ["a", "b", "c"], ["g1"], alpha=0.5, beta=2.0),
        helper.make_node("Gemm", ["at", "bt", "c1"], ["g2"], transA=1, transB=1),
        helper.make_node("Gemm", ["a", "b"], ["g3"]),
        helper.make_node("MatMul", ["m3", "m2"], ["mm_batched"]),
        helper.make_node("MatMul", ["m4", "m3"], ["mm_broadcast"]),
        helper.make_node("MatMul", ["v", "m2"], ["mm_vec_left"]),
        helper.make_node("MatMul", ["m3", "v2"], ["mm_vec_right"]),
    ]
    inputs = {"a": rand(3, 5, seed=1), "at": rand(5, 3, seed=2), "m3": rand(2, 4, 5, seed=3),
              "m4": rand(3, 1, 6, 4, seed=4), "v": rand(5, seed=5)}
    inits = {"b": rand(5, 4, seed=6), "bt": rand(4, 5, seed=7), "c": rand(4, seed=8), "c1": rand(3, 1, seed=9),
             "m2": rand(5, 7, seed=10), "v2": rand(5, seed=11)}
    outs = ["g1", "g2", "g3", "mm_batched", "mm_broadcast", "mm_vec_left", "mm_vec_right"]
    check_ort(nodes, inputs, outs, inits, 13)


POOL_CASES = [
    ("MaxPool", (1, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("MaxPool", (1, 2, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("MaxPool", (1, 2, 11, 11), {"kernel_shape": [2, 2], "dilations": [2, 2], "pads": [1, 0, 1, 1]}),
    ("MaxPool", (1, 2, 11, 11), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    ("MaxPool", (2, 3, 15), {"kernel_shape": [4], "strides": [3], "pads": [1, 2]}),
    ("AveragePool", (1, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ("AveragePool", (1, 3, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                   "count_include_pad": 1}),
    ("AveragePool", (1, 2, 10, 10), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ("AveragePool", (1, 2, 7, 7), {"kernel_shape": [2, 2], "auto_pad": "SAME_LOWER"}),
    ("AveragePool", (2, 3, 12), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
]


@pytest.mark.parametrize("op,shape,attrs", POOL_CASES)
def test_pool(op, shape, attrs):
    check_ort([helper.make_node(op, ["x"], ["y"], **attrs)], {"x": rand(*shape, seed=7)}, ["y"], opset=13)


@pytest.mark.parametrize("opset", [13, 18])
def test_global_pools_softmax_norms(opset):
    x = rand(2, 4, 5, 6, seed=8)
    c = 4
    nodes = [
        helper.make_node("GlobalAveragePool", ["x"], ["gap"]),
        helper.make_node("GlobalMaxPool", ["x"], ["gmp"]),
        helper.make_node("Softmax", ["x"], ["sm_last"]),
        helper.make_node("Softmax", ["x"], ["sm_1"], axis=1),
        helper.make_node("LogSoftmax", ["x"], ["lsm"], axis=-2),
        helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["bn"], epsilon=1e-3),
        helper.make_node("InstanceNormalization", ["x", "s", "b"], ["in"], epsilon=1e-4),
        helper.make_node("LayerNormalization", ["x", "g2", "b2"], ["ln2"], axis=2),
        helper.make_node("LayerNormalization", ["x", "g1"], ["ln1"], epsilon=1e-3),
    ]
    inits = {"s": rand(c, seed=9), "b": rand(c, seed=10), "m": rand(c, seed=11),
             "v": rand(c, seed=12, low=0.5, high=2), "g2": rand(5, 6, seed=13), "b2": rand(5, 6, seed=14),
             "g1": rand(6, seed=15)}
    outs = ["gap", "gmp", "sm_last", "sm_1", "lsm", "bn", "in", "ln2", "ln1"]
    check_ort(nodes, {"x": x}, outs, inits, opset)


def test_batchnorm_with_runtime_statistics():
    x = rand(2, 3, 4, seed=16)
    stats = {"s": rand(3, seed=17), "b": rand(3, seed=18), "m": rand(3, seed=19), "v": rand(3, seed=20, low=0.5)}
    check_ort([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"])], {"x": x, **stats},
              ["y"], opset=15)


def test_small_cnn_end_to_end():
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p1"], ["f"]),
        helper.make_node("Gemm", ["f", "w2", "b2"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["prob"]),
    ]
    inits = {"w1": rand(8, 3, 3, 3, seed=21), "b1": rand(8, seed=22), "w2": rand(10, 8 * 4 * 4, seed=23),
             "b2": rand(10, seed=24)}
    check_ort(nodes, {"x": rand(2, 3, 8, 8, seed=25)}, ["prob", "logits"], inits, 17)


def test_softmax_large_values_stable():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -999.0, -1001.0]], np.float32)
    check_ort([helper.make_node("Softmax", ["x"], ["y"])], {"x": x}, ["y"], opset=13)


# -- regressions found by the ONNX node conformance sweep (tests/conformance) ----------------


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_layer_norm_mean_and_inv_std_dev_outputs(axis):
    # The statistics outputs were only refused when another node used them; returned as graph
    # outputs they slipped through and lowering failed ("produced 1 outputs, need 3").
    x = rand(2, 3, 5, seed=11)
    scale, bias = rand(*x.shape[axis % 3:], seed=12), rand(*x.shape[axis % 3:], seed=13)
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y", "mean", "inv_std"], axis=axis, epsilon=1e-3)
    check_ort([node], {"x": x}, ["y", "mean", "inv_std"], {"s": scale, "b": bias}, opset=17)


def test_maxpool_indices_as_graph_output_is_refused():
    from ort_harness import make_model, mlpc_run

    from mlpc.errors import UnsupportedOpError

    node = helper.make_node("MaxPool", ["x"], ["y", "idx"], name="pool_with_indices", kernel_shape=[2, 2])
    model = make_model([node], {"x": rand(1, 1, 4, 4, seed=14)}, ["y", "idx"])
    with pytest.raises(UnsupportedOpError, match="pool_with_indices.*Indices"):
        mlpc_run(model, {"x": rand(1, 1, 4, 4, seed=14)})


@pytest.mark.parametrize("output_shape", [[10, 8], [9, 7], [8, 6], [7, 5]])
def test_conv_transpose_explicit_output_shape(output_shape):
    # An output_shape larger than the full result (negative total padding: zeros at the end)
    # gave wrong numbers; an odd total must put the larger half of the padding at the beginning.
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[3, 2], output_shape=output_shape)
    check_ort([node], {"x": rand(1, 1, 3, 3, seed=15), "w": rand(1, 2, 3, 3, seed=16)}, ["y"])
