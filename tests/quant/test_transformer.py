"""Quantizing a transformer encoder (a tiny BERT-style block exported by torch's legacy exporter,
as benchmarks/minilm.py does): projections with a constant weight on the right of MatMul and
the attention MatMuls are quantized and lowered to integer matmuls with float outputs; the
token embedding (Gather), LayerNorm, Softmax and GELU stay float."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest
import torch

import mlpc
from mlpc.ir import ReferenceEvaluator, verify
from mlpc.passes.lower_quant import LowerQuantPass

SEQ, HIDDEN, HEADS, VOCAB = 8, 32, 2, 50


class TinyEncoder(torch.nn.Module):
    """Embedding → LayerNorm → one BERT layer (self-attention, GELU MLP, post-LN residuals) → mean pool."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.ln0 = torch.nn.LayerNorm(HIDDEN)
        self.q, self.k, self.v, self.o = (torch.nn.Linear(HIDDEN, HIDDEN) for _ in range(4))
        self.ln1 = torch.nn.LayerNorm(HIDDEN)
        self.up, self.down = torch.nn.Linear(HIDDEN, 4 * HIDDEN), torch.nn.Linear(4 * HIDDEN, HIDDEN)
        self.ln2 = torch.nn.LayerNorm(HIDDEN)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.view(1, SEQ, HEADS, HIDDEN // HEADS).transpose(1, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.ln0(self.embed(input_ids))
        q, k, v = self._heads(self.q(h)), self._heads(self.k(h)), self._heads(self.v(h))
        probs = torch.softmax(q @ k.transpose(-1, -2) / (HIDDEN // HEADS) ** 0.5, dim=-1)
        ctx = (probs @ v).transpose(1, 2).reshape(1, SEQ, HIDDEN)
        h = self.ln1(h + self.o(ctx))
        h = self.ln2(h + self.down(torch.nn.functional.gelu(self.up(h))))
        return h.mean(1)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    root = tmp_path_factory.mktemp("transformer")
    path = root / "tiny_encoder.onnx"
    ids = torch.zeros((1, SEQ), dtype=torch.int64)
    torch.onnx.export(
        TinyEncoder().eval(),
        (ids,),
        str(path),
        input_names=["input_ids"],
        output_names=["y"],
        opset_version=17,
        dynamo=False,
    )
    rng = np.random.default_rng(0)
    calib = root / "calib.npz"
    np.savez(calib, input_ids=rng.integers(0, VOCAB, (16, 1, SEQ)).astype(np.int64))
    feeds = [{"input_ids": rng.integers(0, VOCAB, (1, SEQ)).astype(np.int64)} for _ in range(4)]
    return path, calib, feeds


def _ops(model: ir.Model) -> list[str]:
    return [n.op_type for n in model.graph]


def test_what_is_quantized(encoder):
    path, calib, _ = encoder
    qmodel = mlpc.quantize(path, "w8a8", calib, engine="reference")
    quantized = {}
    for node in qmodel.graph:
        sources = [v.producer() for v in node.inputs if v is not None]
        quantized[node.op_type] = quantized.get(node.op_type, False) or any(
            p is not None and p.op_type == "Quant" for p in sources
        )
    assert quantized["MatMul"]
    assert _ops(qmodel).count("MatMul") == 8  # 6 projections + 2 attention products
    for op in ("Gather", "LayerNormalization", "Softmax", "Erf"):
        assert op in quantized and not quantized[op], f"{op} must stay float"
    weights = [n for n in qmodel.graph if n.op_type == "Quant" and n.inputs[0].const_value is not None]
    assert len(weights) == 6


@pytest.mark.parametrize("scheme", ["w8a8", "w4a8"])
def test_lowered_to_integer_matmuls_with_float_outputs(encoder, scheme):
    path, calib, feeds = encoder
    qmodel = mlpc.quantize(path, scheme, calib, engine="reference")
    fake = [ReferenceEvaluator(qmodel).run(f)["y"] for f in feeds]
    assert LowerQuantPass()(qmodel.graph).modified
    verify(qmodel)
    assert not LowerQuantPass()(qmodel.graph).modified
    ops = _ops(qmodel)
    assert ops.count("IntegerMatMul") == 8 and "MatMul" not in ops and "Quant" not in ops
    weights = [
        v
        for v in qmodel.graph.initializers.values()
        if v.const_value is not None and v.const_value.dtype == ir.DataType.INT8 and len(v.shape) == 2
    ]
    assert len(weights) == 6
    bits = int(scheme[1])
    assert all(np.abs(w.const_value.numpy()).max() <= 2 ** (bits - 1) for w in weights)
    # An int32 accumulator scaled back to float equals the fake-quant float matmul up to float
    # rounding; projections whose output is requantized (the quantizer before the attention
    # matmuls is moved in front of Reshape/Transpose) may differ by one step (see lower-quant).
    for f, ref in zip(feeds, fake):
        got = ReferenceEvaluator(qmodel).run(f)["y"]
        assert np.abs(got - ref).max() <= 5e-3 * np.abs(ref).max()


def test_compiles_and_verifies_against_fake_quant(encoder, tmp_path):
    path, calib, _ = encoder
    art = mlpc.compile(
        path, target="host", output_dir=tmp_path / "art", quantize="w8a8", calibration=calib, verify=True
    )
    assert art.verification["passed"]
    assert art.manifest["stats"]["ops"].get("mlpc::IntegerMatMul") == 8
    layers = art.manifest["quantization"]["layers"]
    assert len(layers) == 8 and all(r["activation_bits"] == 8 for r in layers)
    assert sorted(r["weight_bits"] for r in layers if r["weight_bits"]) == [8] * 6
    assert all(r["sqnr_db"] is not None and r["sqnr_db"] > 25 for r in layers)


def test_float_output_matmul_that_is_a_graph_output(tmp_path):
    """A quantized MatMul whose float output is the graph's output keeps that output's name."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    w = (rng.normal(size=(16, 24)) * 0.1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 24])],
        initializer=[numpy_helper.from_array(w, "w")],
    )
    path = tmp_path / "mm.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = rng.normal(size=(8, 1, 4, 16)).astype(np.float32)
    qmodel = mlpc.quantize(path, "w8a8", {"x": x}, engine="reference")
    fake = ReferenceEvaluator(qmodel).run({"x": x[0]})["y"]
    assert LowerQuantPass()(qmodel.graph).modified
    verify(qmodel)
    assert [v.name for v in qmodel.graph.outputs] == ["y"] and "IntegerMatMul" in _ops(qmodel)
    got = ReferenceEvaluator(qmodel).run({"x": x[0]})["y"]
    assert np.abs(got - fake).max() <= 1e-5 * np.abs(fake).max()
    assert np.abs(got - x[0] @ w).max() <= 0.02 * np.abs(x[0] @ w).max()  # and near the float model
