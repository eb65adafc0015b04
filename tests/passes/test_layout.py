"""layout: per-conv NCHW/NHWC choice, transposes cancelled across chains, numerics unchanged
(reference evaluator, onnxruntime, the TVM build), idempotent, and visible in --dump-ir."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import mlpc
from mlpc import zoo
from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.lower import lower_graph
from mlpc.errors import PassError
from mlpc.frontend import load_model
from mlpc.ir import ReferenceEvaluator, verify
from mlpc.pass_infra import PassContext, PassManager
from mlpc.passes.layout import LAYOUT_KEY, LayoutPass
from mlpc.pipeline import default_pipeline
from mlpc.targets import get_target


@pytest.mark.parametrize("name", ["resnet", "mobilenet"])
def test_zoo_convs_go_channels_last_with_two_transposes(name, tmp_path):
    path = zoo.export_onnx(name, tmp_path / f"{name}.onnx")
    loaded = load_model(path)
    PassManager(default_pipeline()).run(
        loaded.model, PassContext(target=get_target("host"), verify_each=True)
    )
    graph = loaded.model.graph
    ops = [n.op_type for n in graph]
    assert "Conv" not in ops and ops.count("ConvNHWC") == {"resnet": 9, "mobilenet": 16}[name]
    assert all(n.metadata_props[LAYOUT_KEY] == "NHWC" for n in graph if n.op_type == "ConvNHWC")
    assert ops.count("Transpose") == 2, ops  # the input image and the pooling head; none between convs
    x = zoo.example_inputs(name, seed=1)[0].numpy()
    want = ort.InferenceSession(str(path)).run(None, {"x": x})[0]
    np.testing.assert_allclose(
        ReferenceEvaluator(loaded.model).run({"x": x})["logits"], want, rtol=1e-4, atol=1e-5
    )
    got = run(build(lower_graph(graph, 18), get_target("host")), [x])[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conv1d_and_forced_nchw_stay_channels_first(tmp_path):
    path = zoo.export_onnx("conv1d", tmp_path / "c.onnx")
    loaded = load_model(path)
    PassManager(default_pipeline()).run(loaded.model, PassContext())
    assert "ConvNHWC" not in [n.op_type for n in loaded.model.graph]
    path = zoo.export_onnx("resnet", tmp_path / "r.onnx")
    loaded = load_model(path)
    PassManager(default_pipeline()).run(loaded.model, PassContext(options={"layout": "NCHW"}))
    convs = [n for n in loaded.model.graph if n.op_type.startswith("Conv")]
    assert {n.op_type for n in convs} == {"Conv"} and all(
        n.metadata_props[LAYOUT_KEY] == "NCHW" for n in convs
    )


def test_bad_layout_option():
    graph = ir.serde.deserialize_model(_chain([("conv", 8)], 8)[0]).graph
    with pytest.raises(PassError, match="layout='NWHC'"):
        LayoutPass()(graph, PassContext(options={"layout": "NWHC"}))


def _chain(steps, channels):
    """A [1, C, 6, 6] chain of the given steps; returns (model proto, input)."""
    rng = np.random.default_rng(len(steps) * 7 + channels)
    nodes, inits, cur, skip = [], [], "x", "x"
    height, skip_height = 6, 6
    for i, (kind, arg) in enumerate(steps):
        if kind == "residual" and skip_height != height:
            kind = "relu"  # a strided conv since: the shapes no longer match
        out = f"v{i}"
        if kind == "conv":  # arg: output channels (residual steps need them equal to the input's)
            inits += [
                numpy_helper.from_array(
                    rng.standard_normal((channels, channels, 3, 3)).astype(np.float32), f"w{i}"
                ),
                numpy_helper.from_array(rng.standard_normal(channels).astype(np.float32), f"b{i}"),
            ]
            nodes.append(
                helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [out], pads=[1, 1, 1, 1], name=f"conv{i}")
            )
        elif kind == "dwconv":
            inits.append(
                numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), f"w{i}")
            )
            nodes.append(
                helper.make_node(
                    "Conv",
                    [cur, f"w{i}"],
                    [out],
                    group=channels,
                    pads=[0, 1, 2, 1],
                    strides=[arg, 1],
                    name=f"dw{i}",
                )
            )
            height = (height + 2 - 3) // arg + 1
        elif kind == "relu":
            nodes.append(helper.make_node("Relu", [cur], [out]))
        elif kind == "clip":
            inits += [
                numpy_helper.from_array(np.float32(0), f"lo{i}"),
                numpy_helper.from_array(np.float32(arg), f"hi{i}"),
            ]
            nodes.append(helper.make_node("Clip", [cur, f"lo{i}", f"hi{i}"], [out]))
        elif kind == "scale":  # a per-channel constant [C, 1, 1]
            inits.append(
                numpy_helper.from_array(rng.uniform(0.5, 2, (channels, 1, 1)).astype(np.float32), f"s{i}")
            )
            nodes.append(helper.make_node("Mul", [cur, f"s{i}"], [out]))
        elif kind == "residual":
            nodes.append(helper.make_node("Add", [skip, cur], [out]))
        elif kind == "sigmoid_branch":  # an NCHW consumer the transposes cannot pass: ReduceMean over W
            nodes += [
                helper.make_node("ReduceMean", [cur], [f"m{i}"], axes=[3], keepdims=1),
                helper.make_node("Add", [cur, f"m{i}"], [out]),
            ]
        cur = out
        if kind in ("conv", "residual"):
            skip, skip_height = cur, height
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    return proto, rng.standard_normal((1, channels, 6, 6)).astype(np.float32)


STEP = st.sampled_from(
    [
        ("conv", 0),
        ("dwconv", 1),
        ("dwconv", 2),
        ("relu", 0),
        ("clip", 6.0),
        ("scale", 0),
        ("residual", 0),
        ("sigmoid_branch", 0),
    ]
)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    steps=st.lists(STEP, min_size=1, max_size=7),
    channels=st.sampled_from([4, 8]),
    forced=st.sampled_from([None, "NHWC"]),
)
def test_random_chains_keep_numerics_and_are_idempotent(steps, channels, forced):
    proto, x = _chain(steps, channels)
    model = ir.serde.deserialize_model(proto)
    mlpc.pass_registry.get_pass("canonicalize").factory()(model.graph)
    before = ReferenceEvaluator(ir.serde.serialize_model(model)).run({"x": x})["y"]
    ctx = PassContext(options={"layout": forced} if forced else {})
    result = LayoutPass()(model.graph, ctx)
    verify(model)
    convs = [n for n in model.graph if n.op_type in ("Conv", "ConvNHWC")]
    nhwc = [n for n in convs if n.op_type == "ConvNHWC"]
    if forced == "NHWC" or channels == 8:
        assert len(nhwc) == len(convs)
        # Between two channels-last convs joined by elementwise ops, no transpose is left.
        transposes = sum(n.op_type == "Transpose" for n in model.graph)
        assert transposes <= 2 + 2 * sum(k == "sigmoid_branch" for k, _ in steps)
    else:
        assert not nhwc and all(n.metadata_props[LAYOUT_KEY] == "NCHW" for n in convs)
    assert result.modified == bool(convs)
    after = ReferenceEvaluator(ir.serde.serialize_model(model)).run({"x": x})["y"]
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(before).max())))
    assert not LayoutPass()(model.graph, ctx).modified


def test_dump_ir_shows_the_layout_and_groups(tmp_path):
    proto, x = _chain(
        [("conv", 8), ("relu", 0), ("dwconv", 1), ("clip", 6.0), ("conv", 8), ("residual", 0)], 8
    )
    art = mlpc.compile(
        proto,
        output_dir=tmp_path / "out",
        dump_ir=tmp_path / "ir",
        verify=True,
        input_shapes={"x": [1, 8, 6, 6]},
    )
    assert art.verification["passed"]
    dumps = {p.name: p.read_text() for p in (tmp_path / "ir").iterdir()}
    layout = next(text for name, text in dumps.items() if name.endswith("-layout.txt"))
    assert layout.count("layout=NHWC") == 3 and "ConvNHWC" in layout
    fused = next(text for name, text in dumps.items() if name.endswith("-fuse.txt"))
    assert "fusion_group=" in fused and "fusion_pattern=ConvNHWC+Add" in fused


def test_quantized_compile_runs_layout_and_fusion_after_quantization(tmp_path):
    proto, x = _chain([("conv", 8), ("relu", 0), ("conv", 8), ("relu", 0)], 8)
    calib = {"x": np.random.default_rng(5).standard_normal((8, 8, 6, 6)).astype(np.float32)}
    art = mlpc.compile(
        proto,
        output_dir=tmp_path / "q",
        quantize="w8a8",
        calibration=calib,
        verify=True,
        input_shapes={"x": [1, 8, 6, 6]},
    )
    names = [p["name"] for p in art.manifest["passes"]]
    assert names.index("quantize") < names.index("layout") < names.index("fuse")
    ops = art.manifest["stats"]["ops"]
    assert ops.get("mlpc::IntegerConv", 0) >= 1, ops  # the quantizer saw the convs (not ConvNHWC)
    assert art.verification["passed"]
