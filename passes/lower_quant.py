"""lower-quant: the fake-quant Graph → the integer Graph (DESIGN "Quantization semantics").

Each quantized layer (see `quant_patterns`) becomes integer arithmetic:

    Quant(x) → Conv(·, Quant(W)) + b → [Relu|Clip] → Quant(y)
      ⇒  IntegerConv(x_q, W_q, bias = round(b / (s_x·s_w[c])) as int32) → int32
         → Requantize(m[c], shift[c] = dyadic(s_x·s_w[c] / s_y), zp_y, [qmin, qmax] ∩ the clip)

(Gemm/MatMul likewise with IntegerMatMul and an int32 bias Add; a MatMul of two quantized
activations too; Add of two quantized tensors → IntegerAdd with two dyadic multipliers;
MaxPool, Reshape, Flatten, Transpose, Squeeze, Unsqueeze between two equal per-tensor
quantizers run on the integers. A quantizer after such an op whose input is a float tensor is
first copied in front of it — Q(f(x)) = Q(f(Q(x))), max-pooling being monotone — so the layer
before it can end in integers too. Conversely a quantized activation reaching a layer only
through such ops — Brevitas' exports put QuantReLU before MaxPool/Flatten — gets a copy of its
quantizer after them: f(Q(x)) is already on Q's grid, so Q(f(Q(x))) = f(Q(x)).)
Integer tensors flow straight from layer to layer. Where a float tensor enters an integer
region its Quant becomes QuantizeLinear (+ an integer Clip when the range is narrower than
int8/uint8); wherever an integer tensor reaches a float op or a graph output a
DequantizeLinear restores the fake-quant value exactly. Quant nodes outside a recognized
pattern, and ops with no integer form, stay as they are.

Weight-only quantization (a MatMul/Gemm of a float tensor and a Quant'd constant weight, as
"w4a16" produces) becomes `mlpc::DequantMatMul(x, W_q, scale, zp)` (+ a float bias Add): the
weight is kept as integers — packed in the compiled model and dequantized inside the kernel —
and the product equals the fake-quant MatMul's (the same float32 weight values).

When one accumulator step s_x·s_w[c] exceeds 1/16 of an output step (coarse 2–4-bit weights),
a bias in accumulator steps would be too coarse: the accumulator is then multiplied by 2^k
(an int32 Mul, k bounded by the static accumulator range) and the bias quantized at
s_x·s_w[c]/2^k.

Agreement with the fake-quant Graph: weights, entry quantization and exit dequantization are
exact. A layer's output can differ by one quantization step where the fake-quant value
y/s_y lies within rounding noise of a half-integer: the fake-quant Graph rounds a float32
sum half-to-even, the integer one rounds acc·m·2^−shift half-up with m kept to 31 bits and the
bias rounded to (fractions of) accumulator steps. Measured on the tests' single-layer models
(7 layer kinds × weight bits 2/3/4/8 × activation bits 4/8 × signed/unsigned × per tensor/
channel, 43,136 outputs): at most 1 step, at 0.4 % of the outputs. QuantizeLinear adds an odd
zero point after rounding where QONNX adds it before, which differs on exact ties only.

    >>> from mlpc.passes.lower_quant import LowerQuantPass
    >>> LowerQuantPass()(model.graph).modified
    True
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import onnx_ir as ir

from mlpc.ir import MLPC_DOMAIN, MLPC_OPSET_VERSION, QuantParams, dyadic, set_quant
from mlpc.pass_infra import Pass, PassContext, PassResult
from mlpc.passes.quant_patterns import (
    AddMatch,
    LayerMatch,
    MOVEMENT_OPS,
    MovementMatch,
    WeightOnlyMatch,
    activation_quant,
    is_quant,
    match_float_layer,
    match_output,
    match_weight_only,
    movement_source,
)

logger = logging.getLogger(__name__)

_INT32 = (-(2**31), 2**31 - 1)
_CONV_ATTRS = ("auto_pad", "dilations", "group", "kernel_shape", "pads", "strides")
# QuantizeLinear/Clip on int8 need ONNX opset 13.
_MIN_OPSET = 13


def _int_dtype(qp: QuantParams) -> np.dtype:
    return np.dtype(np.int8 if qp.signed else np.uint8)


def _full_range(qp: QuantParams) -> tuple[int, int]:
    info = np.iinfo(_int_dtype(qp))
    return int(info.min), int(info.max)


def _dyadic_channels(multipliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int32 (m, shift) per channel; scalars when every channel shares one."""
    pairs = np.array([dyadic(float(v)) for v in multipliers], dtype=np.int64)
    if np.all(pairs == pairs[0]):
        pairs = pairs[:1].reshape(2)
        return np.array(pairs[0], np.int32), np.array(pairs[1], np.int32)
    return pairs[:, 0].astype(np.int32), pairs[:, 1].astype(np.int32)


class _Rewriter:
    """Builds the integer nodes of one graph (one instance per pass run)."""

    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.names = {v.name for v in (*graph.inputs, *graph.initializers.values()) if v.name}
        self.names |= {v.name for n in graph for v in n.outputs if v.name}
        # Quant output (fake-quant float) → its integer tensor and quantizer.
        self.ints: dict[ir.Value, tuple[ir.Value, QuantParams]] = {}
        self.pending: list[ir.Node] = []

    def fresh(self, base: str) -> str:
        name, i = base, 0
        while name in self.names:
            i += 1
            name = f"{base}_{i}"
        self.names.add(name)
        return name

    def const(self, base: str, array: np.ndarray, qp: QuantParams | None = None) -> ir.Value:
        arr = np.array(array, order="C")  # (ascontiguousarray would make scalars 1-D)
        name = self.fresh(base)
        value = ir.Value(name=name, type=ir.TensorType(ir.DataType.from_numpy(arr.dtype)),
                         shape=ir.Shape(arr.shape), const_value=ir.tensor(arr, name=name))
        if qp is not None:
            set_quant(value, qp)
        self.graph.register_initializer(value)
        return value

    def node(
        self, op_type: str, inputs: Sequence[ir.Value | None], name: str, dtype: ir.DataType,
        shape: ir.Shape | None, attrs: dict | None = None, domain: str = "",
    ) -> ir.Value:
        while inputs and inputs[-1] is None:
            inputs = inputs[:-1]
        out = ir.Value(name=self.fresh(name), type=ir.TensorType(dtype),
                       shape=ir.Shape(shape) if shape is not None else None)
        attributes = [ir.Attr(k, *_attr(v)) for k, v in (attrs or {}).items()]
        node = ir.Node(domain, op_type, inputs, attributes=attributes, outputs=[out],
                       name=self.fresh(f"{op_type.lower()}_{name}"))
        self.pending.append(node)
        return out

    def flush(self, anchor: ir.Node) -> None:
        self.graph.insert_before(anchor, self.pending)
        self.pending = []

    # -- the three rewrites ------------------------------------------------------------
    def entry(self, quant: ir.Node, qp: QuantParams) -> None:
        """Quant of a float tensor → QuantizeLinear (+ Clip to a sub-byte / narrow range)."""
        out = quant.outputs[0]
        base = out.name or "q"
        dt = _int_dtype(qp)
        scale = self.const(f"{base}_scale", np.array(qp.scale, np.float32))
        zp = self.const(f"{base}_zero_point", np.array(qp.zero_point, dt))
        itype = ir.DataType.from_numpy(dt)
        y = self.node("QuantizeLinear", [quant.inputs[0], scale, zp], f"{base}_int", itype, out.shape)
        if (qp.qmin, qp.qmax) != _full_range(qp):
            y = self.node("Clip", [y, self.const(f"{base}_qmin", np.array(qp.qmin, dt)),
                                   self.const(f"{base}_qmax", np.array(qp.qmax, dt))],
                          f"{base}_int", ir.DataType.from_numpy(dt), out.shape)
        self._bind(out, y, qp)

    def layer(self, m: LayerMatch) -> None:
        """Conv/Gemm/MatMul + bias + act + Quant → IntegerConv/IntegerMatMul (+ Add) + Requantize."""
        out = m.quant.outputs[0]
        base = out.name or "q"
        s_acc = self._s_acc(m)
        mult = s_acc / float(m.out_params.scale)
        k = _bias_headroom(m, s_acc, mult)
        conv = m.layer.op_type == "Conv"
        bias = None
        if m.bias is not None:
            q_bias = np.clip(np.round(m.bias / (s_acc / 2.0**k)), *_INT32).astype(np.int32)
            if conv and k:  # added after the conv: broadcast along the channel axis
                q_bias = q_bias.reshape((-1,) + (1,) * (len(m.layer.outputs[0].shape) - 2))
            bias = self.const(f"{base}_bias", q_bias)
        acc, axis = self._accumulate(m, base, None if k else bias)
        acc_shape = m.layer.outputs[0].shape
        if k:
            acc = self.node("Mul", [acc, self.const(f"{base}_acc_scale", np.array(1 << k, np.int32))],
                            f"{base}_acc_fine", ir.DataType.INT32, acc_shape)
        if bias is not None and (k or not conv):
            acc = self.node("Add", [acc, bias], f"{base}_acc_bias", ir.DataType.INT32, acc_shape)
        m_int, shift = _dyadic_channels(mult / 2.0**k)
        self._requantize(m.quant, acc, m_int, shift, axis, m.out_params, m.clamp)

    def float_layer(self, m: LayerMatch) -> None:
        """A quantized layer whose output stays float (no Quant after it, e.g. the logits):
        IntegerConv/IntegerMatMul, then the int32 accumulator times s_x·s_w[c] plus the float bias."""
        out = m.layer.outputs[0]
        base = out.name or "y"
        acc, axis = self._accumulate(m, base, None)
        shape = [1] * len(out.shape)
        shape[axis] = -1
        y = self.node("Cast", [acc], f"{base}_acc_float", ir.DataType.FLOAT, out.shape, {"to": ir.DataType.FLOAT})
        y = self.node("Mul", [y, self.const(f"{base}_acc_scale", self._s_acc(m).astype(np.float32).reshape(shape))],
                      f"{base}_dq", ir.DataType.FLOAT, out.shape)
        if m.bias is not None:
            y = self.node("Add", [y, self.const(f"{base}_bias", m.bias.astype(np.float32).reshape(shape))],
                          f"{base}_biased", ir.DataType.FLOAT, out.shape)
        if out.is_graph_output():
            name = out.name
            out.name = self.fresh(f"{name}_float")
            y.name = name
        out.replace_all_uses_with(y, replace_graph_outputs=True)

    def _s_acc(self, m: LayerMatch) -> np.ndarray:
        s_w = m.weight.scale if m.weight is not None else np.array([float(m.b_params.scale)])
        return m.alpha * float(m.x_params.scale) * s_w

    def _accumulate(self, m: LayerMatch, base: str, bias: ir.Value | None) -> tuple[ir.Value, int]:
        """The layer's int32 accumulator (IntegerConv with `bias` folded in, or IntegerMatMul)
        and its channel axis."""
        x = self.ints[m.x][0]
        x_zp = self._zero_point(f"{base}_x_zero_point", np.array(m.x_params.zero_point), m.x_params)
        if m.weight is not None:
            w = self.const(f"{base}_weight", m.weight.q, m.weight.params)
            w_zp = self._zero_point(f"{base}_w_zero_point", m.weight.zero_point, m.weight.params)
        else:
            w = self.ints[m.b][0]
            w_zp = self._zero_point(f"{base}_b_zero_point", np.array(m.b_params.zero_point), m.b_params)
        acc_shape = m.layer.outputs[0].shape
        if m.layer.op_type == "Conv":
            attrs = {a: m.layer.attributes[a].value for a in _CONV_ATTRS if a in m.layer.attributes}
            acc = self.node("IntegerConv", [x, w, x_zp, w_zp, bias], f"{base}_acc", ir.DataType.INT32, acc_shape,
                            attrs, MLPC_DOMAIN)
            return acc, 1
        acc = self.node("IntegerMatMul", [x, w, x_zp, w_zp], f"{base}_acc", ir.DataType.INT32, acc_shape,
                        domain=MLPC_DOMAIN)
        return acc, len(acc_shape) - 1 if acc_shape is not None else -1

    def weight_only(self, m: WeightOnlyMatch) -> None:
        """MatMul/Gemm(x, Quant(W)) → DequantMatMul(x, W_q, scale, zp) [+ bias]."""
        out = m.layer.outputs[0]
        base = out.name or "y"
        w = self.const(f"{base}_weight", m.weight.q, m.weight.params)
        scale = self.const(f"{base}_weight_scale", (m.alpha * m.weight.scale).astype(np.float32))
        zp = self._zero_point(f"{base}_weight_zero_point", m.weight.zero_point, m.weight.params)
        y = self.node("DequantMatMul", [m.x, w, scale, zp], f"{base}_dq", ir.DataType.FLOAT, out.shape,
                      domain=MLPC_DOMAIN)
        if m.bias is not None:
            y = self.node("Add", [y, self.const(f"{base}_bias", m.bias.astype(np.float32))], f"{base}_biased",
                          ir.DataType.FLOAT, out.shape)
        if out.is_graph_output():
            name = out.name
            out.name = self.fresh(f"{name}_fake_quant")
            y.name = name
        out.replace_all_uses_with(y, replace_graph_outputs=True)

    def movement(self, m: MovementMatch) -> None:
        """MaxPool/Reshape/… between equal quantizers → the same op on the integer tensor."""
        out = m.quant.outputs[0]
        attrs = {a.name: a.value for a in m.op.attributes.values()}
        y = self.node(m.op.op_type, [self.ints[m.x][0], *m.op.inputs[1:]], f"{out.name or 'q'}_int",
                      ir.DataType.from_numpy(_int_dtype(m.out_params)), out.shape, attrs)
        self._bind(out, y, m.out_params)

    def add(self, m: AddMatch) -> None:
        """Add of two quantized tensors + Quant → IntegerAdd with one shared shift."""
        out = m.quant.outputs[0]
        base = out.name or "q"
        ratios = [float(p.scale) / float(m.out_params.scale) for p in (m.a_params, m.b_params)]
        _, shift = dyadic(max(ratios))
        mults = [round(r * 2.0**shift) for r in ratios]
        inputs = [self.ints[m.a][0], self.ints[m.b][0]]
        for v, p in ((m.a, m.a_params), (m.b, m.b_params)):
            inputs.append(self.const(f"{base}_{v.name}_zero_point", np.array(p.zero_point, _int_dtype(p))))
        inputs += [self.const(f"{base}_{k}", np.array(v, np.int32))
                   for k, v in (("a_multiplier", mults[0]), ("b_multiplier", mults[1]), ("shift", shift))]
        dt = _int_dtype(m.out_params)
        inputs.append(self.const(f"{base}_zero_point", np.array(m.out_params.zero_point, dt)))
        y = self.node("IntegerAdd", inputs, f"{base}_int", ir.DataType.from_numpy(dt), out.shape,
                      {"qmin": m.clamp[0], "qmax": m.clamp[1]}, MLPC_DOMAIN)
        self._bind(out, y, m.out_params)

    # -- helpers -------------------------------------------------------------------------
    def _bind(self, fake: ir.Value, integer: ir.Value, qp: QuantParams) -> None:
        set_quant(integer, qp)
        self.ints[fake] = (integer, qp)

    def _zero_point(self, name: str, zp: np.ndarray, qp: QuantParams) -> ir.Value | None:
        if not np.any(zp):
            return None
        if zp.ndim == 1 and np.all(zp == zp[0]):
            zp = zp[0]
        return self.const(name, zp.astype(_int_dtype(qp)))

    def _requantize(self, quant, acc, mult, shift, axis, qp: QuantParams, clamp) -> None:
        out = quant.outputs[0]
        base = out.name or "q"
        dt = _int_dtype(qp)
        inputs = [acc, self.const(f"{base}_multiplier", mult), self.const(f"{base}_shift", shift),
                  self.const(f"{base}_zero_point", np.array(qp.zero_point, dt))]
        y = self.node("Requantize", inputs, f"{base}_int", ir.DataType.from_numpy(dt), out.shape,
                      {"axis": axis, "qmin": clamp[0], "qmax": clamp[1]}, MLPC_DOMAIN)
        self._bind(out, y, qp)

    def exit(self, quant: ir.Node, removed: set[ir.Node]) -> None:
        """Give the float users of a converted Quant's output a DequantizeLinear of the integers."""
        out = quant.outputs[0]
        users = [u for u in out.uses() if u.node not in removed]
        if not users and not out.is_graph_output():
            return
        integer, qp = self.ints[out]
        scale = self.const(f"{out.name}_dq_scale", np.array(qp.scale, np.float32))
        zp = self.const(f"{out.name}_dq_zero_point", np.array(qp.zero_point, _int_dtype(qp)))
        dq = self.node("DequantizeLinear", [integer, scale, zp],
                       f"{out.name}_dq", out.dtype or ir.DataType.FLOAT, out.shape)
        set_quant(dq, qp)  # still the fake-quant tensor, value for value
        self.flush(quant)
        for use in users:
            use.node.replace_input_with(use.idx, dq)
        if out.is_graph_output():
            name = out.name
            out.name = self.fresh(f"{name}_fake_quant")
            dq.name = name
            self.graph.outputs[:] = [dq if v is out else v for v in self.graph.outputs]


def _span(qp: QuantParams) -> int:
    """Largest |q − zero_point| a per-tensor quantizer produces."""
    return max(abs(qp.qmin - int(qp.zero_point)), abs(qp.qmax - int(qp.zero_point)))


def _bias_headroom(m: LayerMatch, s_acc: np.ndarray, mult: np.ndarray) -> int:
    """Extra bits k for the bias: 0 when one accumulator step is ≤ 1/16 of an output step
    (the usual case: the bias is int32 at scale s_x·s_w[c]). With coarse weights (2-bit ones
    often give s_x·s_w > s_y) the bias rounded to accumulator steps would shift outputs by
    whole steps, so the accumulator is multiplied by 2^k and the bias kept at s_x·s_w/2^k —
    as far as the statically known accumulator bound leaves int32 headroom."""
    if m.bias is None or float(np.max(mult)) <= 1 / 16:
        return 0
    want = int(np.ceil(np.log2(float(np.max(mult)) * 16)))
    if m.weight is None:
        w_span, reduction = _span(m.b_params), int(m.x.shape[-1])
    elif m.layer.op_type == "Conv":
        q = m.weight.q.astype(np.int64)
        w_span = int(np.abs(q - m.weight.zero_point.reshape((-1,) + (1,) * (q.ndim - 1))).max())
        reduction = int(q[0].size)
    else:
        w_span = int(np.abs(m.weight.q.astype(np.int64) - m.weight.zero_point).max())
        reduction = int(m.weight.q.shape[0])
    acc_bound = max(reduction * _span(m.x_params) * w_span, 1)
    bias_steps = float(np.max(np.abs(m.bias) / s_acc))
    for k in range(want, 0, -1):
        if (acc_bound + bias_steps) * 2.0**k < 2**31 - 1:
            return k
    return 0


def _attr(v) -> tuple[ir.AttributeType, object]:
    if isinstance(v, str):
        return ir.AttributeType.STRING, v
    if isinstance(v, (list, tuple)):
        return ir.AttributeType.INTS, [int(i) for i in v]
    return ir.AttributeType.INT, int(v)


class LowerQuantPass(Pass):
    """Rewrite the fake-quant Graph's quantized layers into integer ops (module doc)."""

    name = "lower-quant"
    description = "fake-quant layers → IntegerConv/IntegerMatMul/IntegerAdd + Requantize, int8 end to end"
    opt_level = 0

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        opset = graph.opset_imports.get("", graph.opset_imports.get("ai.onnx", _MIN_OPSET))
        if opset < _MIN_OPSET:
            logger.warning("lower-quant: ONNX opset %d < %d has no int8 Clip; graph left in fake-quant form",
                           opset, _MIN_OPSET)
            return PassResult(graph, False)
        hoisted = _hoist_quantizers(graph) + _sink_quantizers(graph)
        matches: dict[ir.Node, LayerMatch | AddMatch | MovementMatch] = {}
        for node in graph:
            if is_quant(node):
                m = match_output(node)
                if m is not None and all(_integer_ready(v, matches) for v in m.inputs):
                    matches[node] = m
        claimed = {n for m in matches.values() for n in m.nodes}
        for node in graph:
            if node not in claimed:
                m = match_float_layer(node)
                if m is not None and all(_integer_ready(v, matches) for v in m.inputs):
                    matches[node] = m
        claimed |= {n for m in matches.values() for n in m.nodes}
        for node in graph:
            if node not in claimed and node not in matches:
                m = match_weight_only(node)
                if m is not None:
                    matches[node] = m
        if not matches:
            return PassResult(graph, hoisted > 0)
        entries = {v.producer() for m in matches.values() for v in m.inputs} - set(matches)
        rw = _Rewriter(graph)
        converted = []
        for node in list(graph):
            if node in entries:
                rw.entry(node, activation_quant(node.outputs[0])[1])
            elif node in matches:
                m = matches[node]
                if isinstance(m, LayerMatch) and m.quant is None:
                    rw.float_layer(m)
                    rw.flush(node)
                    continue
                if isinstance(m, WeightOnlyMatch):
                    rw.weight_only(m)
                    rw.flush(node)
                    continue
                if isinstance(m, LayerMatch):
                    rw.layer(m)
                elif isinstance(m, AddMatch):
                    rw.add(m)
                else:
                    rw.movement(m)
            else:
                continue
            rw.flush(node)
            converted.append(node)
        removed = set(converted) | {n for m in matches.values() for n in m.nodes}
        weights = {m.weight.node for m in matches.values() if getattr(m, "weight", None) is not None}
        removed |= {w for w in weights if all(u.node in removed for u in w.outputs[0].uses())}
        for quant in converted:
            rw.exit(quant, removed)
        dead_inputs = {v for n in removed for v in n.inputs if v is not None and v.is_initializer()}
        graph.remove(removed, safe=True)
        for v in dead_inputs:
            if not v.uses() and not v.is_graph_output() and not v.is_graph_input():
                graph.initializers.pop(v.name, None)
        graph.opset_imports.setdefault(MLPC_DOMAIN, MLPC_OPSET_VERSION)
        logger.info("lower-quant: %d layers (%d with float output), %d weight-only, %d residual adds, "
                    "%d pooling/reshape ops, %d entry quantizers lowered to integers",
                    sum(isinstance(m, LayerMatch) for m in matches.values()),
                    sum(isinstance(m, LayerMatch) and m.quant is None for m in matches.values()),
                    sum(isinstance(m, WeightOnlyMatch) for m in matches.values()),
                    sum(isinstance(m, AddMatch) for m in matches.values()),
                    sum(isinstance(m, MovementMatch) for m in matches.values()), len(entries))
        return PassResult(graph, True)


def _hoist_quantizers(graph: ir.Graph) -> int:
    """Copy each per-tensor activation quantizer that follows a movement op on a float tensor in
    front of that op (Quant(f(x)) → Quant(f(Quant(x))), the same values); return how many."""
    count = 0
    changed = True
    while changed:
        changed = False
        for quant in list(graph):
            if not is_quant(quant) or activation_quant(quant.outputs[0]) is None:
                continue
            op = movement_source(quant)
            x = op.inputs[0] if op is not None else None
            if x is None or x.dtype != ir.DataType.FLOAT or x.const_value is not None or activation_quant(x):
                continue
            out = ir.Value(name=f"{x.name}_quant_{count}", type=x.type, shape=x.shape)
            copy = ir.Node(quant.domain, quant.op_type, [x, *quant.inputs[1:]],
                           attributes=[ir.Attr(a.name, a.type, a.value) for a in quant.attributes.values()],
                           outputs=[out], name=f"{quant.name}_hoisted_{count}")
            set_quant(out, activation_quant(quant.outputs[0])[1])
            graph.insert_before(op, copy)
            op.replace_input_with(0, out)
            count += 1
            changed = True
    return count


_SINK_TO = ("Conv", "Gemm", "MatMul", *MOVEMENT_OPS)


def _sink_quantizers(graph: ir.Graph) -> int:
    """After each movement op (MaxPool, Flatten, …) of a per-tensor quantized activation whose
    float output feeds only layers or movement ops and no quantizer, insert a copy of that
    quantizer (the same values: a movement op keeps values on the grid); return how many."""
    count = 0
    changed = True
    while changed:
        changed = False
        for op in list(graph):
            if op.op_type not in MOVEMENT_OPS or op.domain not in ("", "ai.onnx") or len(op.outputs) != 1:
                continue
            src = activation_quant(op.inputs[0]) if op.inputs and op.inputs[0] is not None else None
            out = op.outputs[0]
            users = [u.node for u in out.uses()]
            if (src is None or out.dtype != ir.DataType.FLOAT or out.is_graph_output() or not users
                    or any(is_quant(u) or u.op_type not in _SINK_TO or u.domain not in ("", "ai.onnx") for u in users)):
                continue
            quant, qp = src
            uses = list(out.uses())
            new = ir.Value(name=f"{out.name}_quant_{count}", type=out.type, shape=out.shape)
            copy = ir.Node(quant.domain, quant.op_type, [out, *quant.inputs[1:]],
                           attributes=[ir.Attr(a.name, a.type, a.value) for a in quant.attributes.values()],
                           outputs=[new], name=f"{quant.name}_sunk_{count}")
            set_quant(new, qp)
            for use in uses:
                use.node.replace_input_with(use.idx, new)
            graph.insert_after(op, copy)
            count += 1
            changed = True
    return count


def _integer_ready(value: ir.Value, matches: dict) -> bool:
    """A quantized activation is available as integers: produced by a lowered pattern, or a
    float32 tensor that an entry QuantizeLinear can quantize."""
    quant = value.producer()
    if quant in matches:
        return True
    src = quant.inputs[0]
    return src.dtype == ir.DataType.FLOAT
