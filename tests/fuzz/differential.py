"""Differential checks of a compiled FuzzGraph against onnxruntime and the reference evaluator.

Float graphs: every output of `mlpc.compile(model, target="host")` must match onnxruntime within
1e-4·max|ref| + 1e-5.

Graphs with QONNX Quant: onnxruntime cannot run them, the oracle is `mlpc.ir.ReferenceEvaluator`.
A whole-graph comparison would be unsound there: Quant computes round(x / scale + zp), and
whenever x / scale lands on (or within an ulp of) a rounding boundary — a .5 tie for ROUND, an
integer for FLOOR, which is common when a Quant consumes the grid values of an earlier Quant —
a last-bit difference between TVM's float arithmetic (fused, vectorized, possibly reassociated
by LLVM) and NumPy's moves the result by one whole quantization step, and later nodes amplify
that step arbitrarily. So Quant graphs are checked node by node: every value is made a graph
output, and each node's compiled output is compared with the reference evaluator run on that
node alone, fed the *compiled* values of its inputs. Float nodes must then agree within the
float tolerance, Quant nodes within one quantization step (|Δ| ≤ scale) plus that tolerance.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

import mlpc
from mlpc.ir import ReferenceEvaluator

logger = logging.getLogger(__name__)


def tolerance(ref: np.ndarray) -> float:
    """Return the absolute tolerance for a float output: 1e-4·max|ref| + 1e-5."""
    return 1e-4 * float(np.max(np.abs(ref), initial=0.0)) + 1e-5


def _check_close(name: str, got: np.ndarray, ref: np.ndarray, extra: Any = 0.0) -> None:
    assert got.shape == ref.shape, f"{name}: shape {got.shape}, reference {ref.shape}"
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    bound = tolerance(ref) + np.broadcast_to(np.asarray(extra, np.float64), ref.shape)
    bad = err > bound
    assert not bad.any(), (
        f"{name}: {int(bad.sum())} of {ref.size} elements differ; max error {float(err.max()):.3g} "
        f"(bound {float(bound.max()):.3g}); first at {np.argwhere(bad)[0].tolist()}: "
        f"got {got[tuple(np.argwhere(bad)[0])]}, reference {ref[tuple(np.argwhere(bad)[0])]}"
    )


def check_against_onnxruntime(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Compile `model` with mlpc and assert every output matches onnxruntime's."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in model.graph.output]
    expected = dict(zip(names, sess.run(names, feeds)))
    got = mlpc.compile(model, target="host").run(feeds)
    for name in names:
        _check_close(name, got[name], expected[name])


def _with_all_values_as_outputs(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    present = {o.name for o in copy.graph.output}
    for node in copy.graph.node:
        for out in node.output:
            if out not in present:  # every fuzz value is float32; mlpc infers the shape
                copy.graph.output.append(helper.make_tensor_value_info(out, onnx.TensorProto.FLOAT, None))
    return copy


def _one_node_model(model: onnx.ModelProto, node: onnx.NodeProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(values[n].dtype), values[n].shape)
              for n in node.input if n]
    outputs = [helper.make_tensor_value_info(n, onnx.TensorProto.UNDEFINED, None) for n in node.output]
    graph = helper.make_graph([node], "one_node", inputs, outputs)
    return helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)


def check_node_by_node(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> None:
    """Compile `model` with every value exposed; assert each node's compiled output matches the
    reference evaluator on the compiled inputs (Quant nodes: within one quantization step)."""
    full = _with_all_values_as_outputs(model)
    got = mlpc.compile(full, target="host").run(feeds)
    values: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    values.update(feeds)
    values.update(got)
    for node in model.graph.node:
        single = _one_node_model(model, node, values)
        ref = ReferenceEvaluator(single).run({n: values[n] for n in node.input if n})
        step = np.abs(values[node.input[1]]) if node.op_type == "Quant" else 0.0
        for out in node.output:
            _check_close(f"{node.name} output {out}", got[out], ref[out], extra=step)
