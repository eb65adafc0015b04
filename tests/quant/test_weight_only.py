"""Weight-only quantization ("w4a16", "w8a16"): only weights get Quant nodes, lower-quant turns
the layers into mlpc::DequantMatMul with the integer (packed, for ≤ 4 bits) weight, and the
compiled model — fp32 on this CPU, fp16 as a CUDA build computes it — matches the fake-quant
reference."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import TensorProto, helper

import mlpc
from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.cuda import convert_precision
from mlpc.backends.tvm.lower import lower_graph
from mlpc.errors import QuantizationError
from mlpc.ir.evaluator import ReferenceEvaluator as MlpcEvaluator
from mlpc.quant.scheme import parse_scheme
from mlpc.targets import get_target

K, HIDDEN, CLASSES = 40, 64, 10


def _mlp(path):
    rng = np.random.default_rng(0)
    inits = [
        onnx.numpy_helper.from_array(rng.normal(0, 0.3, (K, HIDDEN)).astype(np.float32), "w1"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.1, HIDDEN).astype(np.float32), "b1"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.3, (CLASSES, HIDDEN)).astype(np.float32), "w2"),
        onnx.numpy_helper.from_array(rng.normal(0, 0.1, CLASSES).astype(np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
        helper.make_node("Add", ["h0", "b1"], ["h1"], name="bias1"),
        helper.make_node("Relu", ["h1"], ["h"], name="relu"),
        helper.make_node("Gemm", ["h", "w2", "b2"], ["logits"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, K])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [4, CLASSES])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path, {"x": rng.normal(0, 1, (16, 4, K)).astype(np.float32)}  # 16 samples


def test_a16_schemes_are_weight_only():
    cfg = parse_scheme("w4a16")
    assert cfg.weight_only and cfg.weight.bits == 4 and cfg.name == "w4a16"
    assert not parse_scheme("w4a8").weight_only
    with pytest.raises(QuantizationError, match="a16 for float activations"):
        parse_scheme("w4a12")


@pytest.mark.parametrize("scheme", ["w4a16", "w8a16"])
def test_weight_only_quantization_compiles_and_matches_fake_quant(scheme, tmp_path):
    path, calib = _mlp(tmp_path / "mlp.onnx")
    fake = mlpc.quantize(path, scheme, calib)
    quants = [n for n in fake.graph if n.op_type == "Quant"]
    assert len(quants) == 2 and all(n.inputs[0].const_value is not None for n in quants)  # weights only
    art = mlpc.compile(
        path, target="host", output_dir=tmp_path / "art", quantize=scheme, calibration=calib, verify=True
    )
    ops = art.manifest["stats"]["ops"]
    assert ops.get("mlpc::DequantMatMul") == 2 and "MatMul" not in ops and "Gemm" not in ops, ops
    assert art.verification["passed"] and art.verification["reference"].endswith("(integer graph)")
    x = np.random.default_rng(5).normal(0, 1, (4, K)).astype(np.float32)
    ref = MlpcEvaluator(fake).run({"x": x})["logits"]  # the fake-quant model
    got = art.run({"x": x})["logits"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5 * float(np.abs(ref).max()))


def test_packed_weights_and_fp16_compute_as_on_cuda(tmp_path):
    """The w4a16 integer graph lowered as a CUDA fp16 build is: weights packed two per byte,
    operands rounded to fp16 (a measurable difference), and within fp16 error of the fake-quant
    model when built for this CPU."""
    path, calib = _mlp(tmp_path / "mlp.onnx")
    fake = mlpc.quantize(path, "w4a16", calib)
    integer = ir.serde.deserialize_model(ir.serde.serialize_model(fake))
    from mlpc.passes.lower_quant import LowerQuantPass

    assert LowerQuantPass()(integer.graph).modified
    x = np.random.default_rng(6).normal(0, 1, (4, K)).astype(np.float32)
    ref = MlpcEvaluator(integer).run({"x": x})["logits"]
    fp32_mod = lower_graph(integer.graph, 18, groups=False, device="cuda")
    kernels = {
        gv.name_hint: f.script() for gv, f in fp32_mod.functions_items() if "dequant_matmul" in gv.name_hint
    }
    # the first layer's weight [K, HIDDEN] as HIDDEN rows of K/2 bytes: two 4-bit values per byte
    assert any(f'T.Buffer((T.int64({HIDDEN}), T.int64({K // 2})), "uint8")' in s for s in kernels.values()), (
        kernels
    )
    fp16_mod = convert_precision(
        lower_graph(integer.graph, 18, groups=False, device="cuda", float_dtype="float16"), "float16"
    )
    assert '"float16"' in fp16_mod.script()
    (got32,) = run(build(fp32_mod, get_target("host")), [x])
    (got16,) = run(build(fp16_mod, get_target("host")), [x])
    scale = float(np.abs(ref).max())
    assert float(np.abs(got32 - ref).max()) <= 1e-5 * scale
    rel16 = float(np.abs(got16 - ref).max()) / scale
    assert 1e-6 < rel16 <= 5e-3
