"""Import quantized ONNX models into the fake-quant contract form, keeping their quantization exactly.

- ONNX QDQ (QuantizeLinear → DequantizeLinear, e.g. onnxruntime's quantize_static) and Brevitas'
  QCDQ (QuantizeLinear → Clip → DequantizeLinear, the Clip giving the real bit width) become
  QONNX Quant nodes; integer weight initializers → [Clip →] DequantizeLinear become a float
  weight on the grid plus a Quant; int32 biases → DequantizeLinear become float biases.
- QONNX: Quant/BipolarQuant/Trunc from the brevitas/finn domains move to qonnx.custom_op.general;
  BipolarQuant(x, s) becomes the equivalent 1-bit signed Quant; Trunc stays as it is.
- Every Quant output gets its QuantParams (`mlpc.ir.set_quant`).

    >>> model = import_quantized(onnx.load("model_qdq.onnx"))
"""

from __future__ import annotations

import logging

import numpy as np
import onnx
import onnx_ir as ir

from mlpc.errors import QuantizationError
from mlpc.ir import QuantParams, set_quant
from mlpc.ir.qonnx_ops import QONNX_DOMAINS
from mlpc.quant.layers import QONNX_DOMAIN, add_constant, const_array, make_quant

logger = logging.getLogger(__name__)

_BITS_OF = {
    ir.DataType.INT8: (8, True), ir.DataType.UINT8: (8, False),
    ir.DataType.INT4: (4, True), ir.DataType.UINT4: (4, False),
    ir.DataType.INT2: (2, True), ir.DataType.UINT2: (2, False),
}


def _is(node: ir.Node | None, op: str) -> bool:
    return node is not None and node.op_type == op and node.domain in ("", "ai.onnx")


def quant_params_of(node: ir.Node) -> QuantParams:
    """QuantParams of a QONNX Quant node with constant scale/zero point/bitwidth; the channel
    axis is the one dimension where the scale (or zero point) is not 1."""
    arrays = [const_array(v) if v is not None else None for v in node.inputs[1:4]]
    if any(a is None for a in arrays):
        raise QuantizationError(f"Quant node {node.name!r}: scale, zero point and bitwidth must be constants")
    scale, zp, bits = arrays
    bits_f = float(np.asarray(bits).reshape(-1)[0])
    if bits_f != round(bits_f) or np.asarray(bits).size != 1:
        raise QuantizationError(f"Quant node {node.name!r}: bitwidth {bits.tolist()} is not one integer")
    shape = np.broadcast_shapes(np.shape(scale), np.shape(zp))
    axes = [i for i, d in enumerate(shape) if d != 1]
    if len(axes) > 1:
        raise QuantizationError(f"Quant node {node.name!r}: scale of shape {list(shape)} varies along several axes")
    rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else len(shape)
    axis = None if not axes else axes[0] + (rank - len(shape))
    flat = (lambda a: np.broadcast_to(a, shape).reshape(-1)) if axes else (lambda a: np.asarray(a).reshape(-1)[0])
    attrs = node.attributes
    return QuantParams(int(bits_f), bool(attrs.get_int("signed", 1)), flat(scale), flat(zp).astype(np.int64)
                       if axes else int(flat(zp)), axis, bool(attrs.get_int("narrow", 0)))


def _clip_range(clip: ir.Node) -> tuple[int, int]:
    if len(clip.inputs) >= 3 or len(clip.inputs) == 2:
        lo = const_array(clip.inputs[1]) if len(clip.inputs) > 1 and clip.inputs[1] is not None else None
        hi = const_array(clip.inputs[2]) if len(clip.inputs) > 2 and clip.inputs[2] is not None else None
    else:
        lo, hi = clip.attributes.get_float("min", None), clip.attributes.get_float("max", None)
    if lo is None or hi is None:
        raise QuantizationError(f"Clip node {clip.name!r} between QuantizeLinear and DequantizeLinear needs constant bounds")
    return int(np.asarray(lo)), int(np.asarray(hi))


def bits_of_range(lo: int, hi: int, where: str) -> tuple[int, bool, bool]:
    """(bits, signed, narrow) of an integer range in QONNX's convention, e.g. [-7, 7] → (4, True, True)."""
    for bits in range(2, 9):
        for signed in (True, False):
            for narrow in (False, True):
                qmin = (-(1 << (bits - 1)) + int(narrow)) if signed else 0
                qmax = ((1 << (bits - 1)) - 1) if signed else (1 << bits) - 1 - int(narrow)
                if (qmin, qmax) == (lo, hi):
                    return bits, signed, narrow
    raise QuantizationError(f"{where}: the integer range [{lo}, {hi}] is not that of a 2..8-bit quantizer")


def _dq_params(dq: ir.Node, rank: int, bits: int, signed: bool, narrow: bool) -> QuantParams:
    scale = const_array(dq.inputs[1])
    zp = const_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else np.zeros((), np.int64)
    if scale is None or zp is None:
        raise QuantizationError(f"DequantizeLinear {dq.name!r}: scale and zero point must be constants")
    if dq.attributes.get_int("block_size", 0):
        raise QuantizationError(f"DequantizeLinear {dq.name!r}: blocked quantization is not supported")
    if scale.ndim == 0 or scale.size == 1 and zp.size == 1:
        return QuantParams(bits, signed, float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]), None, narrow)
    axis = dq.attributes.get_int("axis", 1) % rank
    zp = np.broadcast_to(zp.reshape(-1), scale.shape)
    return QuantParams(bits, signed, scale.astype(np.float64), zp.astype(np.int64), axis, narrow)


def _same_params(q: ir.Node, dq: ir.Node) -> bool:
    for i in (1, 2):
        a = const_array(q.inputs[i]) if len(q.inputs) > i and q.inputs[i] is not None else None
        b = const_array(dq.inputs[i]) if len(dq.inputs) > i and dq.inputs[i] is not None else None
        if i == 2 and a is None and b is None:
            continue
        if a is None or b is None or a.shape != b.shape or not np.array_equal(a.astype(np.float64), b.astype(np.float64)):
            return False
    return q.attributes.get_int("axis", 1) == dq.attributes.get_int("axis", 1)


def _replace_output(graph: ir.Graph, old: ir.Value, new: ir.Value) -> None:
    new.type = new.type or old.type or ir.TensorType(ir.DataType.FLOAT)
    new.shape = new.shape or old.shape
    if old.is_graph_output():
        new.name, old.name = old.name, f"{old.name}_qdq"
    old.replace_all_uses_with(new, replace_graph_outputs=True)


def _integer_dtype(quant: ir.Node | None, q_out: ir.Value) -> ir.DataType | None:
    """The integer type of an untyped QuantizeLinear output: its zero point's (uint8 without one)."""
    if q_out.const_value is not None:
        return q_out.const_value.dtype
    if quant is None:
        return None
    zp = quant.inputs[2] if len(quant.inputs) > 2 else None
    if zp is None:
        return ir.DataType.UINT8
    return zp.dtype or (zp.const_value.dtype if zp.const_value is not None else None)


def _convert_dq(graph: ir.Graph, dq: ir.Node) -> bool:
    """Rewrite one DequantizeLinear (and the QuantizeLinear/Clip before it) into contract form."""
    src = dq.inputs[0]
    clip = src.producer() if _is(src.producer(), "Clip") else None
    q_out = clip.inputs[0] if clip is not None else src
    quant = q_out.producer() if _is(q_out.producer(), "QuantizeLinear") else None
    dtype = q_out.dtype or _integer_dtype(quant, q_out)
    if dtype == ir.DataType.INT32 and quant is None and clip is None and src.const_value is not None:
        bias = const_array(src).astype(np.int64)  # an int32 bias: back to a float constant
        scale = const_array(dq.inputs[1])
        zp = const_array(dq.inputs[2]) if len(dq.inputs) > 2 and dq.inputs[2] is not None else 0
        value = add_constant(graph, f"{dq.name or src.name}_float", ((bias - zp) * scale).astype(np.float32))
        _replace_output(graph, dq.outputs[0], value)
        graph.remove(dq, safe=True)
        return True
    if dtype not in _BITS_OF:
        raise QuantizationError(f"DequantizeLinear {dq.name!r}: {dtype} quantization is not supported (2..8 bits only)")
    bits, signed = _BITS_OF[dtype]
    narrow = False
    if clip is not None:
        bits, signed, narrow = bits_of_range(*_clip_range(clip), where=f"Clip node {clip.name!r}")
    if quant is None and q_out.const_value is None:
        raise QuantizationError(f"DequantizeLinear {dq.name!r} takes a computed integer tensor; only QDQ pairs can be imported")
    rank = len(dq.outputs[0].shape) if dq.outputs[0].shape is not None else np.ndim(const_array(q_out))
    qp = _dq_params(dq, max(rank, 1), bits, signed, narrow)
    if quant is not None and not _same_params(quant, dq):
        raise QuantizationError(
            f"QuantizeLinear {quant.name!r} and DequantizeLinear {dq.name!r} use different scales or zero points; "
            "only matching QDQ pairs describe fake quantization"
        )
    if quant is not None:
        x = quant.inputs[0]
    else:  # an integer weight: store it as float values on the grid
        ints = const_array(q_out)
        if clip is not None:
            ints = np.clip(ints.astype(np.int64), qp.qmin, qp.qmax)
        x = add_constant(graph, f"{q_out.name}_float", qp.dequantize(ints, np.float32))
    node = make_quant(graph, x, qp, f"{dq.name or q_out.name}_quant", max(rank, 1 if qp.axis is None else rank))
    graph.insert_before(dq, node)
    _replace_output(graph, dq.outputs[0], node.outputs[0])
    graph.remove(dq, safe=True)
    for producer in (clip, quant):
        if producer is not None and not producer.outputs[0].uses() and not producer.outputs[0].is_graph_output():
            graph.remove(producer, safe=True)
    return True


def _normalize_qonnx(graph: ir.Graph) -> int:
    changed = 0
    for node in list(graph):
        if node.domain not in QONNX_DOMAINS:
            continue
        if node.domain != QONNX_DOMAIN:
            node.domain = QONNX_DOMAIN
            changed += 1
        if node.op_type == "IntQuant":
            node.op_type = "Quant"
        if node.op_type == "BipolarQuant":
            zero = add_constant(graph, f"{node.name}_zero_point", np.zeros((), np.float32))
            one = add_constant(graph, f"{node.name}_bitwidth", np.ones((), np.float32))
            quant = ir.Node(QONNX_DOMAIN, "Quant", [node.inputs[0], node.inputs[1], zero, one],
                            [ir.AttrInt64("signed", 1), ir.AttrInt64("narrow", 0), ir.AttrString("rounding_mode", "ROUND")],
                            num_outputs=1, name=node.name)
            quant.outputs[0].shape, quant.outputs[0].type = node.outputs[0].shape, node.outputs[0].type
            graph.insert_before(node, quant)
            _replace_output(graph, node.outputs[0], quant.outputs[0])
            graph.remove(node, safe=True)
            changed += 1
    for node in graph:
        if node.domain == QONNX_DOMAIN and node.op_type == "Quant":
            set_quant(node.outputs[0], quant_params_of(node))
    for domain in [d for d in QONNX_DOMAINS if d != QONNX_DOMAIN]:
        graph.opset_imports.pop(domain, None)
    if any(n.domain == QONNX_DOMAIN for n in graph):
        graph.opset_imports.setdefault(QONNX_DOMAIN, 1)
    return changed


def import_quantized(model: ir.Model | onnx.ModelProto) -> ir.Model:
    """Bring a QDQ, QCDQ or QONNX model into the fake-quant contract form (see the module doc).

    Returns a new onnx_ir.Model (the input is not changed). Raises QuantizationError naming the
    node for QDQ pairs whose parameters differ, non-constant parameters, ranges wider than 8 bits.
    """
    from mlpc.frontend.onnx_loader import proto_to_ir

    proto = model if isinstance(model, onnx.ModelProto) else ir.serde.serialize_model(model)
    m = proto_to_ir(proto)
    g = m.graph
    for dq in [n for n in g if _is(n, "DequantizeLinear")]:
        _convert_dq(g, dq)
    _normalize_qonnx(g)
    for name, value in list(g.initializers.items()):
        if not value.uses() and not value.is_graph_output() and value not in g.inputs:
            del g.initializers[name]
    g.sort()
    return m
