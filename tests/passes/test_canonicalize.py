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
