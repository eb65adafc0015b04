"""canonicalize: shape computations folded, shapes static, numerics kept, idempotent."""
from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import torch

from mlpc.frontend import load_model
from mlpc.pass_infra import PassContext
from mlpc.passes.canonicalize import CanonicalizePass


class ReshapeAndPad(torch.nn.Module):
    """Uses x.shape in reshape and F.pad: the legacy exporter emits Shape→Gather→Concat chains."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, x):
        b, t, c = x.shape
        y = self.proj(x).reshape(b, t, 4, 4).transpose(1, 2)
        return torch.nn.functional.pad(y.reshape(b, -1), (1, 2))


def _legacy_export(tmp_path):
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(ReshapeAndPad().eval(), (torch.randn(2, 8, 16),), buf, dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}}, opset_version=17)
    path = tmp_path / "legacy.onnx"
    path.write_bytes(buf.getvalue())
    return path


def test_shape_computations_fold_to_constants(tmp_path):
    path = _legacy_export(tmp_path)
    before = [n.op_type for n in onnx.load(path).graph.node]
    assert {"Shape", "Gather", "Concat", "ConstantOfShape"} <= set(before)
    loaded = load_model(path, input_shapes={"x": (3, 8, 16)})
    result = CanonicalizePass()(loaded.model.graph, PassContext())
    after = [n.op_type for n in result.graph]
    assert result.modified
    assert not {"Shape", "Gather", "Concat", "ConstantOfShape", "Constant"} & set(after), after
    for node in result.graph:
        for value in node.outputs:
            assert all(isinstance(d, int) for d in value.shape.dims), value
    pad = next(n for n in result.graph if n.op_type == "Pad")
    assert pad.inputs[1].const_value is not None
    x = np.random.default_rng(0).standard_normal((3, 8, 16)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    folded = ir.serde.serialize_model(loaded.model).SerializeToString()
    got = ort.InferenceSession(folded, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_idempotent(tmp_path):
    loaded = load_model(_legacy_export(tmp_path), input_shapes={"x": (1, 8, 16)})
    assert CanonicalizePass()(loaded.model.graph, PassContext()).modified
    assert not CanonicalizePass()(loaded.model.graph, PassContext()).modified


def test_castlike_keeps_saturate_when_it_becomes_a_cast():
    # Found by the ONNX node conformance sweep: onnxscript's folder rewrote CastLike(saturate=0)
    # into a Cast without `saturate`, i.e. a saturating cast: 1e6 became 448 instead of NaN.
    import ml_dtypes
    from onnx import TensorProto, helper

    from mlpc.ir import ReferenceEvaluator

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    like = helper.make_tensor_value_info("like", TensorProto.FLOAT8E4M3FN, [0])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT8E4M3FN, [3])
    node = helper.make_node("CastLike", ["x", "like"], ["y"], saturate=0)
    graph = helper.make_graph([node], "g", [x, like], [y])
    model = load_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)).model
    assert CanonicalizePass()(model.graph, PassContext()).modified
    (cast,) = list(model.graph)
    assert cast.op_type == "Cast" and cast.attributes.get_int("saturate") == 0
    assert [v.name for v in model.graph.outputs] == ["y"]
    feeds = {"x": np.array([0.5, 1e6, -1e6], np.float32), "like": np.zeros(0, ml_dtypes.float8_e4m3fn)}
    got = ReferenceEvaluator(model).run(feeds)["y"].astype(np.float32)
    assert got[0] == 0.5 and np.isnan(got[1:]).all()
