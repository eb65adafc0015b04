"""Export the fake-quant Graph: QDQ ONNX for onnxruntime, or QONNX (the Quant form itself).

QDQ: every activation Quant becomes QuantizeLinear (int8/uint8) → DequantizeLinear and every
weight Quant an int8 initializer → DequantizeLinear, with a Clip to the exact integer range
before the DequantizeLinear when the bit width is below 8 or the range is narrow (QCDQ, as
Brevitas writes it: the Clip carries the real bit width); the float bias of a Conv/Gemm whose input and weight are both quantized is
stored as int32 at scale s_x·s_w with its own DequantizeLinear, so onnxruntime's graph
optimizer cannot round low-bit biases away.

    >>> export_qdq(qmodel, "model_q.onnx"); export_qonnx(qmodel, "model_qonnx.onnx")
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir

from mlpc.errors import ExportError
from mlpc.ir import QuantParams, get_quant
from mlpc.quant.importer import quant_params_of
from mlpc.quant.layers import QONNX_DOMAIN, add_constant, const_array

logger = logging.getLogger(__name__)

ORT_IR_VERSION = 10
MIN_QDQ_OPSET = 13
QUANT_OPS = ("Quant", "IntQuant", "BipolarQuant", "Trunc")


def _copy(model: ir.Model) -> ir.Model:
    return ir.serde.deserialize_model(ir.serde.serialize_model(model))


def _params(node: ir.Node) -> QuantParams:
    qp = get_quant(node.outputs[0]) or quant_params_of(node)
    if qp.bits < 2:
        raise ExportError(f"Quant node {node.name!r}: {qp.bits}-bit (bipolar) quantization has no QDQ form; export QONNX")
    return qp


def _axis_args(qp: QuantParams) -> list[ir.Attr]:
    return [ir.AttrInt64("axis", qp.axis)] if qp.axis is not None else []


def _scale_zp(graph: ir.Graph, qp: QuantParams, name: str, zp_dtype: type) -> tuple[ir.Value, ir.Value]:
    scale = add_constant(graph, f"{name}_scale", np.asarray(qp.scale, np.float32))
    zp = add_constant(graph, f"{name}_zero_point", np.asarray(qp.zero_point).astype(zp_dtype))
    return scale, zp


def _dequantize(graph: ir.Graph, q: ir.Value, scale: ir.Value, zp: ir.Value, qp: QuantParams, name: str,
                like: ir.Value) -> ir.Node:
    node = ir.Node("", "DequantizeLinear", [q, scale, zp], _axis_args(qp), num_outputs=1, name=f"{name}_dq")
    node.outputs[0].name = f"{name}_dq_out"
    node.outputs[0].shape = like.shape
    node.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
    return node


def _replace(graph: ir.Graph, old: ir.Node, new_nodes: list[ir.Node]) -> None:
    graph.insert_before(old, new_nodes)
    out, new_out = old.outputs[0], new_nodes[-1].outputs[0]
    if out.is_graph_output():
        new_out.name, out.name = out.name, f"{out.name}_fq"
    out.replace_all_uses_with(new_out, replace_graph_outputs=True)
    graph.remove(old, safe=True)


def _clip(graph: ir.Graph, q: ir.Value, qp: QuantParams, name: str, like: ir.Value) -> list[ir.Node]:
    """A Clip to [qmin, qmax] when that is narrower than the 8-bit storage type (QCDQ), else nothing."""
    if (qp.qmin, qp.qmax) == ((-128, 127) if qp.signed else (0, 255)):
        return []
    storage = np.int8 if qp.signed else np.uint8
    lo = add_constant(graph, f"{name}_qmin", np.asarray(qp.qmin, storage))
    hi = add_constant(graph, f"{name}_qmax", np.asarray(qp.qmax, storage))
    clip = ir.Node("", "Clip", [q, lo, hi], num_outputs=1, name=f"{name}_clip")
    clip.outputs[0].name = f"{name}_clip_out"
    clip.outputs[0].shape = like.shape
    clip.outputs[0].type = ir.TensorType(ir.DataType.INT8 if qp.signed else ir.DataType.UINT8)
    return [clip]


def _weight_qdq(graph: ir.Graph, node: ir.Node, qp: QuantParams) -> None:
    w = node.inputs[0]
    q = qp.quantize(const_array(w).astype(np.float32))
    ints = add_constant(graph, f"{node.name}_int", q)
    nodes = _clip(graph, ints, qp, node.name, w)
    q_value = nodes[-1].outputs[0] if nodes else ints
    scale, zp = _scale_zp(graph, qp, node.name, q.dtype.type)
    _replace(graph, node, [*nodes, _dequantize(graph, q_value, scale, zp, qp, node.name, w)])


def _activation_qdq(graph: ir.Graph, node: ir.Node, qp: QuantParams) -> None:
    storage = np.int8 if qp.signed else np.uint8
    elem = ir.DataType.INT8 if qp.signed else ir.DataType.UINT8
    scale, zp = _scale_zp(graph, qp, node.name, storage)
    x = node.inputs[0]
    quant = ir.Node("", "QuantizeLinear", [x, scale, zp], _axis_args(qp), num_outputs=1, name=f"{node.name}_q")
    quant.outputs[0].name = f"{node.name}_q_out"
    quant.outputs[0].shape = x.shape
    quant.outputs[0].type = ir.TensorType(elem)
    nodes = [quant, *_clip(graph, quant.outputs[0], qp, node.name, x)]
    nodes.append(_dequantize(graph, nodes[-1].outputs[0], scale, zp, qp, node.name, x))
    _replace(graph, node, nodes)


def _quantize_biases(graph: ir.Graph) -> int:
    """int32 biases at scale s_x·s_w for Conv/Gemm whose data and weight inputs are Quant outputs."""
    done = 0
    for node in list(graph):
        if node.op_type not in ("Conv", "Gemm") or len(node.inputs) < 3 or node.inputs[2] is None:
            continue
        bias = const_array(node.inputs[2])
        qx, qw = (get_quant(v) for v in node.inputs[:2])
        if bias is None or qx is None or qw is None or qx.axis is not None or bias.ndim != 1:
            continue
        w_axis_ok = qw.axis is None or qw.axis == (0 if node.op_type == "Conv" or node.attributes.get_int("transB", 0) else 1)
        if not w_axis_ok:
            continue
        scale = np.asarray(qx.scale, np.float64) * np.asarray(qw.scale, np.float64)
        scale32 = np.broadcast_to(scale, bias.shape).astype(np.float32) if qw.axis is not None else np.float32(scale)
        q = np.clip(np.round(bias / scale32), -(2**31), 2**31 - 1).astype(np.int32)
        qv = add_constant(graph, f"{node.name}_bias_int32", q)
        sv = add_constant(graph, f"{node.name}_bias_scale", np.asarray(scale32, np.float32))
        zv = add_constant(graph, f"{node.name}_bias_zero_point", np.zeros(np.shape(scale32), np.int32))
        attrs = [ir.AttrInt64("axis", 0)] if np.ndim(scale32) else []
        dq = ir.Node("", "DequantizeLinear", [qv, sv, zv], attrs, num_outputs=1, name=f"{node.name}_bias_dq")
        dq.outputs[0].name = f"{node.name}_bias_dq_out"
        dq.outputs[0].shape = ir.Shape(bias.shape)
        dq.outputs[0].type = ir.TensorType(ir.DataType.FLOAT)
        graph.insert_before(node, dq)
        node.replace_input_with(2, dq.outputs[0])
        done += 1
    return done


def to_qdq(model: ir.Model, quantize_bias: bool = True) -> onnx.ModelProto:
    """The QDQ ONNX form of a fake-quant model (see the module doc) as a ModelProto that
    onnxruntime loads (IR version 10, opset ≥ 13). Raises ExportError for bipolar or Trunc nodes."""
    m = _copy(model)
    g = m.graph
    if quantize_bias:
        _quantize_biases(g)
    for node in list(g):
        if node.op_type not in QUANT_OPS:
            continue
        if node.op_type in ("BipolarQuant", "Trunc"):
            raise ExportError(f"node {node.name!r} ({node.op_type}) has no QDQ form; export QONNX instead")
        qp = _params(node)
        if node.inputs[0].const_value is not None:
            _weight_qdq(g, node, qp)
        else:
            _activation_qdq(g, node, qp)
    _drop_unused(g)
    for domain in [d for d in g.opset_imports if d != "" and d != "ai.onnx"]:
        if not any(n.domain == domain for n in g):
            del g.opset_imports[domain]
    g.opset_imports[""] = max(int(g.opset_imports.get("", MIN_QDQ_OPSET)), MIN_QDQ_OPSET)
    proto = ir.serde.serialize_model(m)
    proto.ir_version = ORT_IR_VERSION
    return proto


def to_qonnx(model: ir.Model) -> onnx.ModelProto:
    """The QONNX form (Quant nodes as they are, with the qonnx opset import) as a ModelProto."""
    m = _copy(model)
    if any(n.domain == QONNX_DOMAIN for n in m.graph):
        m.graph.opset_imports.setdefault(QONNX_DOMAIN, 1)
    proto = ir.serde.serialize_model(m)
    proto.ir_version = ORT_IR_VERSION
    return proto


def _drop_unused(graph: ir.Graph) -> None:
    keep = {id(v) for v in (*graph.inputs, *graph.outputs)}
    for name, value in list(graph.initializers.items()):
        if not value.uses() and id(value) not in keep:
            del graph.initializers[name]


def _save(proto: onnx.ModelProto, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        onnx.save(proto, tmp)
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"writing {path} failed: {e}") from e
    return path


def export_qdq(model: ir.Model, path: str | Path, quantize_bias: bool = True) -> Path:
    """Write the QDQ ONNX form of a fake-quant model to `path` (atomically); returns the path."""
    return _save(to_qdq(model, quantize_bias), path)


def export_qonnx(model: ir.Model, path: str | Path) -> Path:
    """Write the QONNX form of a fake-quant model to `path` (atomically); returns the path."""
    return _save(to_qonnx(model), path)
