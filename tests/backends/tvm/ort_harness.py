"""Shared helpers for the TVM lowering tests: build small ONNX models, run them through
mlpc (onnx-ir → Relax → host build) and through onnxruntime, and compare."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common  # noqa: F401  (ShapeInferencePass)
import onnxruntime as ort
from onnx import helper

from mlpc.backends.tvm.build import build, run
from mlpc.backends.tvm.lower import lower_graph
from mlpc.targets import get_target

_HOST = None


def host():
    """Return the host Target (cached: detecting it costs an LLVM query)."""
    global _HOST
    if _HOST is None:
        _HOST = get_target("host")
    return _HOST


def make_model(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    outputs: Sequence[str],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
    output_types: dict[str, tuple[np.dtype, Sequence[int]]] | None = None,
    extra_domains: Sequence[str] = (),
) -> onnx.ModelProto:
    """Return an ONNX model of `nodes` with typed inputs (from the arrays) and outputs typed by
    onnx shape inference (or by `output_types` for custom-domain ops)."""
    vi = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
          for n, a in inputs.items()]
    inits = [onnx.numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()]
    outs = [helper.make_empty_tensor_value_info(n) for n in outputs]
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in extra_domains]
    graph = helper.make_graph(list(nodes), "g", vi, outs, initializer=inits)
    model = helper.make_model(graph, opset_imports=imports, ir_version=10)
    if output_types:
        typed = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(t[0])), t[1])
                 for n, t in output_types.items()]
        model.graph.ClearField("output")
        model.graph.output.extend(typed)
        return model
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    model.graph.ClearField("output")
    model.graph.output.extend([known[n] for n in outputs])
    return model


def mlpc_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Lower `model` with mlpc, build it for the host and run it on `feeds` (graph input order)."""
    ir_model = ir.serde.deserialize_model(model)
    ir_model = ir.passes.common.ShapeInferencePass()(ir_model).model
    opset = ir_model.opset_imports.get("", 17)
    mod = lower_graph(ir_model.graph, opset)
    ex = build(mod, host())
    return run(ex, [feeds[v.name] for v in ir_model.graph.inputs])


def ort_run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Run `model` with onnxruntime (graph optimizations off, to compare op semantics only)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def assert_close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    """Float: max abs error ≤ 1e-4·max|ref| + 1e-6; integers and bools: exact. Dtypes and shapes must match."""
    ref = np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != reference {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != reference {ref.dtype}"
    if ref.dtype.kind == "f":
        err = float(np.max(np.abs(got.astype(np.float64) - ref))) if ref.size else 0.0
        tol = 1e-4 * float(np.max(np.abs(ref))) + 1e-6 if ref.size else 0.0
        assert err <= tol, f"{what}: max abs error {err:.3g} > {tol:.3g}"
    else:
        mism = int(np.sum(got != ref))
        assert mism == 0, f"{what}: {mism} of {ref.size} elements differ"


def check_ort(
    nodes: Sequence[onnx.NodeProto],
    inputs: dict[str, np.ndarray],
    outputs: Sequence[str],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> None:
    """Build the model, run it through mlpc and onnxruntime, and compare every output."""
    model = make_model(nodes, inputs, outputs, initializers, opset)
    ref = ort_run(model, inputs)
    got = mlpc_run(model, inputs)
    assert len(got) == len(ref)
    for name, g, r in zip(outputs, got, ref):
        assert_close(g, r, f"output {name} (opset {opset})")


def rand(*shape: int, seed: int = 0, dtype=np.float32, low: float = -2.0, high: float = 2.0) -> np.ndarray:
    """Return a reproducible random array."""
    return np.random.default_rng(seed).uniform(low, high, size=shape).astype(dtype)
