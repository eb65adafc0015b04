"""The integer Graph of an MLP → a chain of streaming layers (what the FPGA design computes).

The FPGA backend reads the integer form lower-quant produces:

    x (float) → QuantizeLinear [→ Clip]                                  host: the design's input
    → IntegerMatMul(x_q, W_q) [→ Mul 2^K] [→ Add bias] → Requantize     one MVAU + thresholds
    → … → IntegerMatMul                                                  last MVAU, no activation
    → Cast → Mul → Add | DequantizeLinear …                              host: the float tail

Each layer becomes an `MvauLayer`: the weights as stored in hardware (w − w_zero_point, MH × MW),
the input/output integer ranges and, for a quantized output, the per-channel thresholds that
reproduce its Requantize bit for bit (`thresholds`). Movement ops on 1-D vectors (Flatten,
Reshape, Squeeze, Unsqueeze, Identity) are wires. Anything else between the first and the last
layer — a float layer with no integer form, a convolution, an op with no streaming unit — is
refused with an UnsupportedOpError naming the node.

    >>> net = extract_network(model.graph)              # doctest: +SKIP
    >>> [(l.mw, l.mh) for l in net.layers]             # doctest: +SKIP
    [(64, 32), (32, 32), (32, 10)]
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import onnx_ir as ir

from mlpc.backends.fpga.thresholds import clip_thresholds, thresholds_for
from mlpc.errors import QuantizationError, UnsupportedOpError
from mlpc.ir import MLPC_DOMAIN, get_quant

logger = logging.getLogger(__name__)

MAX_BITS = 8  # the widest weight/activation the streaming units take
_WIRES = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity"}
_HEAD = {"QuantizeLinear", "Clip"}


def int_bits(lo: int, hi: int) -> tuple[int, bool]:
    """(bits, signed) of the narrowest integer type holding [lo, hi].

        >>> int_bits(0, 3), int_bits(-1, 1), int_bits(-5, 40)
        ((2, False), (2, True), (7, True))
    """
    lo, hi = int(lo), int(hi)
    if lo >= 0:
        return max(1, hi.bit_length()), False
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits, True


@dataclass
class MvauLayer:
    """One matrix–vector–activation unit: y = act(W · x) for `vectors` input vectors.

    `weights` (MH × MW, int64) are w − w_zero_point; `in_range`/`out_range` are the integer
    ranges on the streams; `thresholds` (MH × levels) are None for a layer without activation,
    whose output is the accumulator plus `offset` (per channel: − x_zero_point · Σ w).
    """

    name: str
    source: str  # the IntegerMatMul node
    weights: np.ndarray
    in_range: tuple[int, int]
    w_range: tuple[int, int]
    out_range: tuple[int, int]
    acc_range: tuple[int, int]
    vectors: int
    thresholds: np.ndarray | None = None
    offset: np.ndarray | None = None
    in_value: str = ""
    out_value: str = ""

    @property
    def mw(self) -> int:
        """Input vector length (the reduction)."""
        return int(self.weights.shape[1])

    @property
    def mh(self) -> int:
        """Output vector length (neurons)."""
        return int(self.weights.shape[0])

    @property
    def in_bits(self) -> tuple[int, bool]:
        """(bits, signed) of an input element."""
        return int_bits(*self.in_range)

    @property
    def w_bits(self) -> tuple[int, bool]:
        """(bits, signed) of a weight."""
        return int_bits(*self.w_range)

    @property
    def out_bits(self) -> tuple[int, bool]:
        """(bits, signed) of an output element."""
        return int_bits(*self.out_range)

    @property
    def acc_bits(self) -> int:
        """Width of the signed accumulator (and thresholds, which may be one above its maximum)."""
        lo, hi = self.acc_range
        return int_bits(min(lo, -1), hi + 1)[0]

    @property
    def has_activation(self) -> bool:
        """True when the layer ends in thresholds (a quantized output)."""
        return self.thresholds is not None


@dataclass
class Network:
    """The streaming layers in order, plus the value names where the design starts and ends."""

    layers: list[MvauLayer]
    input_value: str
    output_value: str
    host_head: list[str] = field(default_factory=list)  # ops left to the host, before/after
    host_tail: list[str] = field(default_factory=list)


def _const(value: ir.Value | None, what: str, node: ir.Node) -> np.ndarray | None:
    if value is None:
        return None
    if value.const_value is None:
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}): {what} {value.name!r} is not a constant; "
                                 "the FPGA backend needs constant weights and quantization parameters")
    return value.const_value.numpy()


def _range_of(value: ir.Value) -> tuple[int, int]:
    """The integer range of an activation tensor: its QuantParams, else its Clip, else its dtype."""
    qp = get_quant(value)
    if qp is not None:
        return int(qp.qmin), int(qp.qmax)
    node = value.producer()
    if node is not None and node.op_type == "Clip" and len(node.inputs) == 3:
        lo, hi = (_const(v, "bound", node) for v in node.inputs[1:])
        return int(lo), int(hi)
    info = np.iinfo(value.dtype.numpy())
    return int(info.min), int(info.max)


def _only_user(value: ir.Value) -> ir.Node | None:
    users = {u.node for u in value.uses()}
    if len(users) > 1:
        names = ", ".join(sorted(f"{n.name!r} ({n.op_type})" for n in users))
        raise UnsupportedOpError(f"value {value.name!r} feeds {len(users)} nodes ({names}); the FPGA backend "
                                 "streams a chain of layers and has no fork/join units")
    return next(iter(users), None)


def _refuse(node: ir.Node) -> UnsupportedOpError:
    op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
    if node.op_type in ("Gemm", "MatMul", "Conv"):
        why = ("it has no integer form: quantize the model first (e.g. --quantize w2a2 --calib DATA.npz, "
               "or a QONNX/Brevitas model)")
    elif node.op_type == "IntegerConv":
        why = "convolutions have no streaming unit in the FPGA backend yet (MatMul/Gemm layers only)"
    else:
        why = "the FPGA backend has no streaming unit for it (it streams quantized MatMul/Gemm layers)"
    return UnsupportedOpError(f"node {node.name!r} ({op}): {why}")


def extract_network(graph: ir.Graph) -> Network:
    """Read the integer Graph into a Network (module doc). Raises UnsupportedOpError naming the
    first node the design cannot stream, QuantizationError for bits beyond 8."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedOpError(f"the FPGA backend streams one input to one output; graph {graph.name!r} has "
                                 f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs")
    value = graph.inputs[0]
    head: list[str] = []
    node = _only_user(value)
    while node is not None and node.op_type in _HEAD | _WIRES and node.domain in ("", "ai.onnx"):
        head.append(node.name)
        value = node.outputs[0]
        node = _only_user(value)
    layers: list[MvauLayer] = []
    design_in = value.name
    while node is not None:
        if node.op_type in _WIRES and node.domain in ("", "ai.onnx") and layers and layers[-1].has_activation:
            value = node.outputs[0]
            layers[-1].out_value = value.name
            node = _only_user(value)
            continue
        if node.op_type != "IntegerMatMul" or node.domain != MLPC_DOMAIN:
            if not layers:
                raise _refuse(node)
            break
        layer, value = _layer(node, value, len(layers))
        layers.append(layer)
        node = _only_user(value)
        if not layer.has_activation:
            break
    if not layers:
        raise UnsupportedOpError(f"graph {graph.name!r} has no quantized MatMul/Gemm layer to stream; quantize it "
                                 "first (e.g. --quantize w2a2 --calib DATA.npz)")
    tail = []
    seen = set()
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op_type in ("IntegerMatMul", "IntegerConv", "Gemm", "MatMul", "Conv"):
            raise _refuse(n)
        tail.append(n.name)
        stack.extend(u.node for o in n.outputs for u in o.uses())
    for i, layer in enumerate(layers[1:], 1):
        if layer.in_value != layers[i - 1].out_value and layer.mw != layers[i - 1].mh:
            raise UnsupportedOpError(f"layer {layer.name} ({layer.source}) takes {layer.mw} inputs but "
                                     f"{layers[i - 1].name} gives {layers[i - 1].mh}")
    logger.info("fpga: %d streaming layers %s", len(layers), ", ".join(f"{la.mw}x{la.mh}" for la in layers))
    return Network(layers, design_in, layers[-1].out_value, head, tail)


def _layer(mm: ir.Node, x: ir.Value, index: int) -> tuple[MvauLayer, ir.Value]:
    """One IntegerMatMul [+ Mul 2^K] [+ Add bias] [+ Requantize] → an MvauLayer and its output value."""
    where = f"layer mvau{index} (node {mm.name!r})"
    w = _const(mm.inputs[1], "weight", mm)
    if w.ndim != 2:
        raise UnsupportedOpError(f"{where}: weight {mm.inputs[1].name!r} has shape {list(w.shape)}; "
                                 "a streaming MVAU needs a 2-D weight")
    x_zp = _const(mm.inputs[2], "input zero point", mm) if len(mm.inputs) > 2 else None
    w_zp = _const(mm.inputs[3], "weight zero point", mm) if len(mm.inputs) > 3 else None
    if x_zp is not None and np.ndim(x_zp) > 0 and np.unique(x_zp).size > 1:
        raise UnsupportedOpError(f"{where}: a per-row input zero point has no streaming form")
    xzp = int(np.reshape(x_zp, -1)[0]) if x_zp is not None else 0
    wq = w.astype(np.int64) - (np.asarray(w_zp, np.int64) if w_zp is not None else 0)
    weights = wq.T.copy()  # MH × MW
    in_range = _range_of(x)
    qp_w = get_quant(mm.inputs[1])
    if qp_w is not None and np.all(np.asarray(qp_w.zero_point) == 0):
        w_range = (int(qp_w.qmin), int(qp_w.qmax))
    else:
        w_range = (int(min(wq.min(), 0)), int(max(wq.max(), 0)))
    for what, rng in (("input", in_range), ("weights", w_range)):
        bits = int_bits(*rng)[0]
        if bits > MAX_BITS:
            raise QuantizationError(f"{where}: {what} need {bits} bits (range {list(rng)}); the FPGA backend "
                                    f"takes at most {MAX_BITS}-bit weights and activations — requantize the "
                                    "model at fewer bits (e.g. --quantize w4a4)")
    shape = x.shape
    vectors = int(np.prod([int(d) for d in shape.dims[:-1]])) if shape is not None and len(shape) > 1 else 1
    lo_x, hi_x = in_range
    lo_n = np.minimum(lo_x * weights, hi_x * weights).sum(axis=1)
    hi_n = np.maximum(lo_x * weights, hi_x * weights).sum(axis=1)
    acc_range = (int(min(lo_n.min(), 0)), int(max(hi_n.max(), 0)))
    offset = -xzp * weights.sum(axis=1)  # acc (the graph's) = acc_hw + offset
    acc = mm.outputs[0]
    layer = MvauLayer(name=f"mvau{index}", source=mm.name, weights=weights, in_range=in_range, w_range=w_range,
                      out_range=acc_range, acc_range=acc_range, vectors=vectors, in_value=x.name,
                      out_value=acc.name)
    # the integer epilogue: [Mul 2^K] [Add bias] Requantize
    k, bias, value = 0, np.zeros(layer.mh, np.int64), acc
    chain = []
    node = _only_user(value)
    while node is not None and node.op_type in ("Mul", "Add") and node.domain in ("", "ai.onnx") \
            and node.outputs[0].dtype == ir.DataType.INT32:
        other = node.inputs[1] if node.inputs[0] is value else node.inputs[0]
        c = _const(other, "operand", node).astype(np.int64)
        if node.op_type == "Mul":
            if c.size != 1 or int(c.reshape(-1)[0]) <= 0 or int(c.reshape(-1)[0]) & (int(c.reshape(-1)[0]) - 1):
                raise UnsupportedOpError(f"{where}: node {node.name!r} multiplies the accumulator by {c.tolist()}, "
                                         "not a power of two")
            if chain:
                raise UnsupportedOpError(f"{where}: node {node.name!r}: Mul after the bias Add is not a "
                                         "lower-quant epilogue")
            k = int(c.reshape(-1)[0]).bit_length() - 1
        else:
            bias = bias + np.broadcast_to(c.reshape(-1), (layer.mh,))
        chain.append(node)
        value = node.outputs[0]
        node = _only_user(value)
    if node is None or node.op_type != "Requantize" or node.domain != MLPC_DOMAIN:
        # no requantization (the logits): the output is the graph's accumulator; an integer
        # epilogue after it stays on the host
        layer.offset = offset
        layer.out_range = (int(min((lo_n + offset).min(), 0)), int(max((hi_n + offset).max(), 0)))
        return layer, acc
    rq = node
    mult, shift, zp = (_const(v, n, rq) for v, n in zip(rq.inputs[1:4], ("multiplier", "shift", "zero point")))
    attrs = {a.name: a.value for a in rq.attributes.values()}
    info = np.iinfo(zp.dtype)
    qmin, qmax = int(attrs.get("qmin", info.min)), int(attrs.get("qmax", info.max))
    mult = np.broadcast_to(np.reshape(mult, -1), (layer.mh,))
    shift = np.broadcast_to(np.reshape(shift, -1), (layer.mh,))
    zpv = int(np.reshape(zp, -1)[0])
    hw_lo, hw_hi = acc_range  # the hardware accumulator's reachable range (before the offset)
    thr = [clip_thresholds(thresholds_for(int(mult[n]), int(shift[n]), zpv, qmin, qmax, int(bias[n]), k,
                                          offset=-int(offset[n])), hw_lo, hw_hi)
           for n in range(layer.mh)]
    layer.thresholds = np.array(thr, np.int64).reshape(layer.mh, qmax - qmin)
    layer.out_range = (qmin, qmax)
    out = rq.outputs[0]
    if int_bits(qmin, qmax)[0] > MAX_BITS:
        raise QuantizationError(f"{where}: outputs need more than {MAX_BITS} bits")
    layer.out_value = out.name
    return layer, out
