"""Shape/index manipulation, reductions and Resize against onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from ort_harness import check_ort, rand

I64 = np.int64
BIG = np.iinfo(np.int64).max


def ints(*v: int) -> np.ndarray:
    return np.array(v, dtype=I64)


def test_reshape_flatten_transpose_concat_expand_tile():
    x = rand(2, 3, 4, seed=1)
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["r1"]),
        helper.make_node("Reshape", ["x", "s2"], ["r2"]),
        helper.make_node("Reshape", ["x", "s3"], ["r3"], allowzero=1),
        helper.make_node("Flatten", ["x"], ["f1"]),
        helper.make_node("Flatten", ["x"], ["f0"], axis=0),
        helper.make_node("Flatten", ["x"], ["fneg"], axis=-1),
        helper.make_node("Transpose", ["x"], ["t_default"]),
        helper.make_node("Transpose", ["x"], ["t_perm"], perm=[1, 0, 2]),
        helper.make_node("Concat", ["x", "x2"], ["cat"], axis=-1),
        helper.make_node("Expand", ["e", "eshape"], ["exp"]),
        helper.make_node("Tile", ["x", "reps"], ["tile"]),
        helper.make_node("Identity", ["x"], ["ident"]),
    ]
    inits = {"s1": ints(0, -1), "s2": ints(4, 0, -1), "s3": ints(2, 12), "x2": rand(2, 3, 2, seed=2),
             "e": rand(3, 1, seed=3), "eshape": ints(2, 1, 5), "reps": ints(1, 2, 3)}
    outs = ["r1", "r2", "r3", "f1", "f0", "fneg", "t_default", "t_perm", "cat", "exp", "tile", "ident"]
    check_ort(nodes, {"x": x}, outs, inits, 14)


@pytest.mark.parametrize("opset", [13, 18])
def test_split_squeeze_unsqueeze(opset):
    x = rand(1, 6, 1, 5, seed=4)
    nodes = [helper.make_node("Split", ["x", "sizes"], ["s0", "s1", "s2"], axis=1)]
    if opset >= 18:
        nodes.append(helper.make_node("Split", ["x"], ["n0", "n1"], axis=-1, num_outputs=2))
    else:
        nodes.append(helper.make_node("Split", ["x"], ["n0", "n1"], axis=1))
    nodes += [
        helper.make_node("Squeeze", ["x", "sq_axes"], ["sq"]),
        helper.make_node("Squeeze", ["x"], ["sq_all"]),
        helper.make_node("Unsqueeze", ["x", "unsq_axes"], ["unsq"]),
    ]
    inits = {"sizes": ints(1, 3, 2), "sq_axes": ints(-2), "unsq_axes": ints(0, -1)}
    check_ort(nodes, {"x": x}, ["s0", "s1", "s2", "n0", "n1", "sq", "sq_all", "unsq"], inits, opset)


SLICES = [
    # starts, ends, axes, steps
    ((1, 0), (3, 5), None, None),
    ((-3,), (BIG,), (1,), None),
    ((-1,), (-BIG,), (2,), (-1,)),
    ((4, 1), (0, 100), (2, 0), (-2, 2)),
    ((0, -100), (2, -1), (-1, 1), (3, 1)),
    ((5,), (1,), (2,), (-3,)),
]


def test_slice_variants():
    x = rand(4, 5, 6, seed=5)
    nodes, inits, outs = [], {}, []
    for i, (starts, ends, axes, steps) in enumerate(SLICES):
        ins = [f"st{i}", f"en{i}"]
        inits[f"st{i}"], inits[f"en{i}"] = ints(*starts), ints(*ends)
        if axes is not None:
            ins.append(f"ax{i}")
            inits[f"ax{i}"] = ints(*axes)
        if steps is not None:
            if axes is None:
                ins.append("")
            ins.append(f"sp{i}")
            inits[f"sp{i}"] = ints(*steps)
        nodes.append(helper.make_node("Slice", ["x", *ins], [f"y{i}"]))
        outs.append(f"y{i}")
    check_ort(nodes, {"x": x}, outs, inits, 13)


def test_gather_and_gather_elements():
    x = rand(5, 4, 3, seed=6)
    idx = np.array([[0, -1], [2, -3]], I64)
    rt_idx = np.array([1, -2, 0], I64)
    ge_idx = np.random.default_rng(7).integers(-4, 4, size=(5, 2, 3)).astype(I64)
    nodes = [
        helper.make_node("Gather", ["x", "idx"], ["g0"]),
        helper.make_node("Gather", ["x", "idx"], ["g1"], axis=1),
        helper.make_node("Gather", ["x", "scalar"], ["g_scalar"], axis=-1),
        helper.make_node("Gather", ["x", "rt_idx"], ["g_rt"], axis=2),
        helper.make_node("GatherElements", ["x", "ge_idx"], ["ge"], axis=1),
    ]
    inits = {"idx": idx, "scalar": np.array(-1, I64), "ge_idx": ge_idx}
    check_ort(nodes, {"x": x, "rt_idx": rt_idx}, ["g0", "g1", "g_scalar", "g_rt", "ge"], inits, 13)


@pytest.mark.parametrize("opset", [13, 18, 19])
def test_pad_modes(opset):
    x = rand(1, 2, 4, 5, seed=8)
    modes = ["constant", "reflect", "edge"] + (["wrap"] if opset >= 19 else [])
    nodes, outs = [], []
    for m in modes:
        nodes.append(helper.make_node("Pad", ["x", "pads", "cval"], [f"p_{m}"], mode=m))
        outs.append(f"p_{m}")
    nodes.append(helper.make_node("Pad", ["x", "neg"], ["p_crop"]))
    outs.append("p_crop")
    inits = {"pads": ints(0, 0, 1, 2, 0, 1, 2, 1), "cval": np.array(1.5, np.float32),
             "neg": ints(0, 0, -1, 1, 0, 0, 2, -2)}
    if opset >= 18:
        nodes.append(helper.make_node("Pad", ["x", "apads", "", "axes"], ["p_axes"], mode="reflect"))
        outs.append("p_axes")
        inits.update({"apads": ints(2, 1, 1, 3), "axes": ints(-1, 2)})
    check_ort(nodes, {"x": x}, outs, inits, opset)


REDUCE_OPS = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare"]


@pytest.mark.parametrize("opset", [13, 18])
def test_reductions(opset):
    x = rand(2, 3, 4, seed=9, low=0.5, high=1.5)
    nodes, outs, inits = [], [], {"axes": ints(-1, 1), "empty": np.zeros(0, I64)}
    for op in REDUCE_OPS:
        axes_as_input = opset >= 18 or op == "ReduceSum"
        if axes_as_input:
            nodes.append(helper.make_node(op, ["x", "axes"], [f"{op}_k"]))
            nodes.append(helper.make_node(op, ["x", "axes"], [f"{op}_nk"], keepdims=0))
            nodes.append(helper.make_node(op, ["x", "empty"], [f"{op}_noop"], noop_with_empty_axes=1))
            outs.append(f"{op}_noop")
        else:
            nodes.append(helper.make_node(op, ["x"], [f"{op}_k"], axes=[-1, 1]))
            nodes.append(helper.make_node(op, ["x"], [f"{op}_nk"], axes=[-1, 1], keepdims=0))
        nodes.append(helper.make_node(op, ["x"], [f"{op}_all"], keepdims=0))
        outs += [f"{op}_k", f"{op}_nk", f"{op}_all"]
    nodes.append(helper.make_node("ArgMax", ["x"], ["argmax"], axis=1))
    nodes.append(helper.make_node("ArgMin", ["x"], ["argmin"], axis=-1, keepdims=0))
    outs += ["argmax", "argmin"]
    check_ort(nodes, {"x": x}, outs, inits, opset)


def test_constant_producers_and_cumsum():
    x = rand(2, 3, 3, seed=10)
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Shape", ["x"], ["shape_part"], start=1, end=-1),
        helper.make_node("Size", ["x"], ["size"]),
        helper.make_node("ConstantOfShape", ["shape"], ["zeros"]),
        helper.make_node("ConstantOfShape", ["cshape"], ["sevens"], value=helper.make_tensor("v", 6, [1], [7])),
        helper.make_node("Range", ["start", "limit", "delta"], ["range"]),
        helper.make_node("Concat", ["shape_part", "shape_part", "two"], ["new_shape"], axis=0),
        helper.make_node("Transpose", ["x"], ["xt"]),
        helper.make_node("Reshape", ["xt", "shape"], ["reshaped"]),
        helper.make_node("Constant", [], ["c"], value=helper.make_tensor("c", 1, [2], [1.5, -2.0])),
        helper.make_node("Constant", [], ["c3"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Add", ["x", "c3"], ["plus"]),
        helper.make_node("CumSum", ["x", "axis"], ["cs"]),
        helper.make_node("CumSum", ["x", "axis"], ["cs_rev_ex"], reverse=1, exclusive=1),
    ]
    inits = {"cshape": ints(2, 2), "two": ints(2), "start": np.array(1, I64), "limit": np.array(9, I64),
             "delta": np.array(3, I64), "axis": np.array(-1, I64)}
    outs = ["shape", "shape_part", "size", "zeros", "sevens", "range", "new_shape", "reshaped", "c", "plus", "cs", "cs_rev_ex"]
    check_ort(nodes, {"x": x}, outs, inits, 15)


RESIZE_CASES = [
    # mode, coordinate mode, nearest mode, scales or sizes
    ("nearest", "asymmetric", "floor", {"scales": [1, 1, 2, 2]}),
    ("nearest", "half_pixel", "round_prefer_floor", {"scales": [1, 1, 2, 3]}),
    ("nearest", "pytorch_half_pixel", "round_prefer_ceil", {"sizes": [1, 2, 7, 4]}),
    ("nearest", "align_corners", "ceil", {"sizes": [1, 2, 9, 11]}),
    ("nearest", "half_pixel", "round_prefer_floor", {"scales": [1, 1, 0.5, 0.6]}),
    ("linear", "half_pixel", None, {"scales": [1, 1, 2, 2]}),
    ("linear", "align_corners", None, {"sizes": [1, 2, 9, 7]}),
    ("linear", "asymmetric", None, {"scales": [1, 1, 1.5, 2.5]}),
    ("linear", "pytorch_half_pixel", None, {"sizes": [1, 2, 3, 1]}),
    ("linear", "half_pixel", None, {"scales": [1, 1, 0.5, 0.75]}),
]


@pytest.mark.parametrize("opset", [13, 19])
def test_resize(opset):
    x = rand(1, 2, 4, 5, seed=11)
    nodes, outs, inits = [], [], {}
    for i, (mode, coord, nearest, spec) in enumerate(RESIZE_CASES):
        attrs = {"mode": mode, "coordinate_transformation_mode": coord}
        if nearest:
            attrs["nearest_mode"] = nearest
        if "scales" in spec:
            inits[f"sc{i}"] = np.array(spec["scales"], np.float32)
            ins = ["x", "", f"sc{i}"]
        else:
            inits[f"sz{i}"] = np.array(spec["sizes"], I64)
            ins = ["x", "", "", f"sz{i}"]
        nodes.append(helper.make_node("Resize", ins, [f"y{i}"], **attrs))
        outs.append(f"y{i}")
    if opset >= 19:
        nodes.append(helper.make_node("Resize", ["x", "", "", "sz_axes"], ["y_axes"], mode="linear",
                                      axes=[3, 2], coordinate_transformation_mode="half_pixel_symmetric"))
        nodes.append(helper.make_node("Resize", ["x", "", "", "sz_keep"], ["y_keep"], mode="nearest",
                                      axes=[2, 3], keep_aspect_ratio_policy="not_larger"))
        inits.update({"sz_axes": ints(8, 3), "sz_keep": ints(12, 8)})
        outs += ["y_axes", "y_keep"]
    check_ort(nodes, {"x": x}, outs, inits, opset)


# -- regressions found by the ONNX node conformance sweep (tests/conformance) ----------------


@pytest.mark.parametrize("coord", ["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"])
@pytest.mark.parametrize("a,exclude", [(-0.75, 0), (-0.5, 1)])
@pytest.mark.parametrize("sizes", [(7, 9), (3, 2)])
def test_resize_cubic(coord, a, exclude, sizes):
    # Cubic Resize is lowered (four taps per axis, ONNX's kernel, exclude_outside renormalized).
    x = rand(1, 2, 4, 5, seed=31)
    node = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="cubic", cubic_coeff_a=a,
                            exclude_outside=exclude, coordinate_transformation_mode=coord)
    check_ort([node], {"x": x}, ["y"], {"sz": np.array([1, 2, *sizes], np.int64)}, opset=13)


def test_resize_align_corners_with_fractional_scaled_length_is_refused():
    # 4 × 0.6 = 2.4: ONNX's reference divides by 2.4 − 1, onnxruntime by 2 − 1 (the conformance
    # data and onnxruntime disagree), so mlpc refuses instead of picking one.
    import onnx_ir as ir
    from ort_harness import make_model

    from mlpc.backends.tvm.lower import lower_graph
    from mlpc.errors import UnsupportedOpError

    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], name="ac", mode="linear",
                            coordinate_transformation_mode="align_corners")
    model = make_model([node], {"x": rand(1, 1, 2, 4, seed=32)}, ["y"],
                       {"sc": np.array([1, 1, 0.6, 0.6], np.float32)}, opset=13)
    with pytest.raises(UnsupportedOpError, match="ac \\(Resize\\): .*align_corners.*ambiguous"):
        lower_graph(ir.serde.deserialize_model(model).graph, 13)


def test_reduce_max_min_on_bools_and_empty_axes():
    # Bool ReduceMax/Min did not build; over an empty axis TVM returned garbage instead of the
    # identity (-inf / +inf).
    from ort_harness import make_model, mlpc_run

    b = np.array([[True, False], [False, False]])
    e = np.zeros((2, 0, 3), np.float32)
    nodes = [helper.make_node("ReduceMax", ["b", "ax1"], ["bmax"], keepdims=0),
             helper.make_node("ReduceMin", ["b", "ax1"], ["bmin"], keepdims=0),
             helper.make_node("ReduceMax", ["e", "ax1"], ["emax"], keepdims=1),
             helper.make_node("ReduceMin", ["e", "ax1"], ["emin"], keepdims=0)]
    model = make_model(nodes, {"b": b, "e": e}, ["bmax", "bmin", "emax", "emin"], {"ax1": np.array([1], I64)}, opset=18)
    bmax, bmin, emax, emin = mlpc_run(model, {"b": b, "e": e})
    np.testing.assert_array_equal(bmax, [True, False])
    np.testing.assert_array_equal(bmin, [False, False])
    np.testing.assert_array_equal(emax, np.full((2, 1, 3), -np.inf, np.float32))
    np.testing.assert_array_equal(emin, np.full((2, 3), np.inf, np.float32))


def test_split_with_zero_size_parts():
    # TVM's split needs strictly increasing indices: a zero-size part failed to build.
    x = rand(2, 5, seed=33)
    node = helper.make_node("Split", ["x", "sp"], ["a", "b", "c"], axis=1)
    check_ort([node], {"x": x}, ["a", "b", "c"], {"sp": np.array([2, 0, 3], I64)}, opset=13)


def test_reshape_allowzero_to_zero_size_is_refused():
    import onnx_ir as ir
    from ort_harness import make_model

    from mlpc.backends.tvm.lower import lower_graph
    from mlpc.errors import UnsupportedOpError

    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="rz", allowzero=1)
    model = make_model([node], {"x": np.zeros((0, 3, 4), np.float32)}, ["y"], {"s": np.array([3, 4, 0], I64)}, opset=19)
    with pytest.raises(UnsupportedOpError, match="rz \\(Reshape\\): .*allowzero"):
        lower_graph(ir.serde.deserialize_model(model).graph, 19)
