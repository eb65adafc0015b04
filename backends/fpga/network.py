"""The integer Graph of an MLP or CNN → a chain of streaming units (what the FPGA design computes).

The FPGA backend reads the integer form lower-quant produces:

    x (float) → QuantizeLinear [→ Clip]                                  host: the design's input
    → IntegerConv(x_q, W_q) [→ Mul 2^K] [→ Add bias] → Requantize       sliding window + MVAU
    → MaxPool (on the integers)                                          streaming max pool
    → Flatten | Reshape | Transpose                                      wires (a permutation)
    → IntegerMatMul(x_q, W_q) [→ Mul 2^K] [→ Add bias] → Requantize     one MVAU + thresholds
    → … → IntegerMatMul                                                  last MVAU, no activation
    → Cast → Mul → Add | DequantizeLinear …                              host: the float tail

Each matrix layer becomes an `MvauLayer`: the weights as stored in hardware (w − w_zero_point,
MH × MW), the input/output integer ranges and, for a quantized output, the per-channel thresholds
that reproduce its Requantize bit for bit (`thresholds`). A convolution is an MVAU fed by a
`ConvWindow` (FINN's ConvolutionInputGenerator with the padding inside): its MW = KH·KW·C_in
columns in the order the window streams them, (ky, kx, c), and one input vector per output pixel.
MaxPool becomes a `PoolLayer` (FINN's StreamingMaxPool).

Streams are channels-last (NHWC): a feature map arrives pixel by pixel, the channels of a pixel
together, while the Graph is NCHW. Every stream carries an `order` — for each element of the
Graph value (in its NCHW shape), its position in the stream — and the movement ops between units
(Flatten, Reshape, Transpose, Squeeze, Unsqueeze, Identity) only change that order, never the
stream: an MVAU after them gets its weight columns permuted so it is bit-exact (Flatten after a
conv stack: the Graph flattens c·H·W + y·W + x, the stream delivers (y·W + x)·C + c). Anything
else between the first and the last layer — a float layer with no integer form, a grouped or
dilated convolution, an op with no streaming unit — is refused with an UnsupportedOpError naming
the node.

    >>> net = extract_network(model.graph)              # doctest: +SKIP
    >>> [(l.mw, l.mh) for l in net.layers]             # doctest: +SKIP
    [(64, 32), (32, 32), (32, 10)]
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx_ir as ir

from mlpc.backends.fpga.thresholds import clip_thresholds, thresholds_for
from mlpc.errors import QuantizationError, UnsupportedOpError
from mlpc.ir import MLPC_DOMAIN, get_quant
from mlpc.ir.ops.integer_conv import conv_geometry

logger = logging.getLogger(__name__)

MAX_BITS = 8  # the widest weight/activation the streaming units take
_WIRES = {"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Transpose"}
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


@dataclass(frozen=True)
class ConvWindow:
    """The sliding window in front of a convolution's MVAU: a C × H × W feature map in, for each
    of the OH × OW output pixels the KH × KW × C window (ky, kx, c order), padded with `pad_value`
    (the input zero point, which the MVAU's offset cancels) `pads` = (top, left, bottom, right)."""

    channels: int
    in_h: int
    in_w: int
    k_h: int
    k_w: int
    stride_h: int
    stride_w: int
    pads: tuple[int, int, int, int]
    pad_value: int
    out_h: int
    out_w: int

    @property
    def window_elems(self) -> int:
        """KH·KW·C: the MVAU's MW."""
        return self.k_h * self.k_w * self.channels


@dataclass
class PoolLayer:
    """A streaming max pool (kernel = stride, no padding) over a C × H × W integer feature map."""

    name: str
    source: str  # the MaxPool node
    channels: int
    in_h: int
    in_w: int
    k_h: int
    k_w: int
    in_range: tuple[int, int]
    in_value: str = ""
    out_value: str = ""

    @property
    def out_h(self) -> int:
        """Output rows (rows past the last full window are dropped, as MaxPool's floor mode does)."""
        return self.in_h // self.k_h

    @property
    def out_w(self) -> int:
        """Output columns."""
        return self.in_w // self.k_w

    @property
    def out_range(self) -> tuple[int, int]:
        """The output range: the input's (a max of inputs)."""
        return self.in_range

    @property
    def in_bits(self) -> tuple[int, bool]:
        """(bits, signed) of an element, in and out."""
        return int_bits(*self.in_range)

    @property
    def out_bits(self) -> tuple[int, bool]:
        """(bits, signed) of an output element."""
        return self.in_bits

    @property
    def in_elems(self) -> int:
        """Elements per inference in."""
        return self.channels * self.in_h * self.in_w

    @property
    def out_elems(self) -> int:
        """Elements per inference out."""
        return self.channels * self.out_h * self.out_w


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
    window: ConvWindow | None = None  # a convolution: the sliding window feeding this MVAU

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

    @property
    def simd_limit(self) -> int:
        """SIMD must divide this: MW, or C_in for a convolution (its window streams SIMD channels
        of one pixel per beat, as FINN's ConvolutionInputGenerator does)."""
        return self.window.channels if self.window is not None else self.mw

    @property
    def in_elems(self) -> int:
        """Elements per inference in (the feature map for a convolution)."""
        if self.window is not None:
            return self.window.channels * self.window.in_h * self.window.in_w
        return self.mw * self.vectors

    @property
    def out_elems(self) -> int:
        """Elements per inference out."""
        return self.mh * self.vectors


Unit = MvauLayer | PoolLayer


@dataclass
class Network:
    """The streaming units in order, the value names where the design starts and ends, and the
    stream position of each element of those two values (`in_order`, `out_order`, flat, in the
    Graph's element order: stream[order] = value.reshape(-1))."""

    layers: list[Unit]
    input_value: str
    output_value: str
    host_head: list[str] = field(default_factory=list)  # ops left to the host, before/after
    host_tail: list[str] = field(default_factory=list)
    in_order: np.ndarray | None = None
    out_order: np.ndarray | None = None

    @property
    def mvaus(self) -> list[MvauLayer]:
        """The MVAU layers (what folding chooses PE/SIMD for)."""
        return [la for la in self.layers if isinstance(la, MvauLayer)]


def channels_last_order(shape: tuple[int, ...]) -> np.ndarray:
    """For a tensor of `shape` (N, C, *spatial), the position of each element in the channels-last
    stream (N, *spatial, C); an identity for rank < 3.

        >>> channels_last_order((1, 2, 2, 2)).reshape(-1).tolist()   # c0: pixels 0..3, c1 after each
        [0, 2, 4, 6, 1, 3, 5, 7]
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) < 3:
        return np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    n, c, *sp = shape
    return np.moveaxis(np.arange(int(np.prod(shape)), dtype=np.int64).reshape(n, *sp, c), -1, 1)


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
    else:
        why = ("the FPGA backend has no streaming unit for it (it streams quantized MatMul/Gemm and Conv "
               "layers, MaxPool and the movement ops Flatten/Reshape/Transpose between them)")
    return UnsupportedOpError(f"node {node.name!r} ({op}): {why}")


def _attrs(node: ir.Node) -> dict[str, Any]:
    return {a.name: a.value for a in node.attributes.values()}


def _static_shape(value: ir.Value, node: ir.Node) -> tuple[int, ...]:
    shape = value.shape
    if shape is None or not all(isinstance(d, int) for d in shape.dims):
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}): value {value.name!r} has no static shape "
                                 f"({shape}); fix the input shape (--input-shape NAME=DIMS)")
    return tuple(int(d) for d in shape.dims)


def _is_wire(node: ir.Node) -> bool:
    return node.op_type in _WIRES and node.domain in ("", "ai.onnx")


def _wire_order(node: ir.Node, order: np.ndarray) -> np.ndarray:
    """A movement op applied to the stream order: the data stay, their Graph positions move."""
    out_shape = _static_shape(node.outputs[0], node)
    if node.op_type == "Transpose":
        perm = _attrs(node).get("perm")
        moved = np.transpose(order, None if perm is None else list(perm))
        if moved.shape != out_shape:
            raise UnsupportedOpError(f"node {node.name!r} (Transpose): output shape {list(out_shape)} differs from "
                                     f"the transposed input {list(moved.shape)}")
        return moved
    if int(np.prod(out_shape)) != order.size:
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}): {order.size} elements in, "
                                 f"{int(np.prod(out_shape))} out")
    return order.reshape(out_shape)


def extract_network(graph: ir.Graph) -> Network:
    """Read the integer Graph into a Network (module doc). Raises UnsupportedOpError naming the
    first node the design cannot stream, QuantizationError for bits beyond 8."""
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise UnsupportedOpError(f"the FPGA backend streams one input to one output; graph {graph.name!r} has "
                                 f"{len(graph.inputs)} inputs and {len(graph.outputs)} outputs")
    value = graph.inputs[0]
    head: list[str] = []
    node = _only_user(value)
    while node is not None and node.op_type in _HEAD and node.domain in ("", "ai.onnx"):
        head.append(node.name)
        value = node.outputs[0]
        node = _only_user(value)
    layers: list[Unit] = []
    design_in = value
    in_order = channels_last_order(_static_shape(value, node) if node is not None else (1,))
    order = in_order
    rng: tuple[int, int] | None = None
    while node is not None:
        if _is_wire(node):
            order = _wire_order(node, order)
            value = node.outputs[0]
            if layers:
                layers[-1].out_value = value.name
            node = _only_user(value)
            continue
        index = len(layers)
        if node.op_type == "IntegerMatMul" and node.domain == MLPC_DOMAIN:
            layer, value = _layer(node, value, index, rng, order)
        elif node.op_type == "IntegerConv" and node.domain == MLPC_DOMAIN:
            _check_channels_last(node, value, order)
            layer, value = _layer(node, value, index, rng, order)
        elif node.op_type == "MaxPool" and node.domain in ("", "ai.onnx"):
            _check_channels_last(node, value, order)
            layer, value = _pool(node, value, index, rng if rng is not None else _range_of(value))
        else:
            if not layers:
                raise _refuse(node)
            break
        layers.append(layer)
        rng = layer.out_range
        order = channels_last_order(_static_shape(value, node))
        node = _only_user(value)
        if isinstance(layer, MvauLayer) and not layer.has_activation:
            break
    if not any(isinstance(la, MvauLayer) for la in layers):
        raise UnsupportedOpError(f"graph {graph.name!r} has no quantized MatMul/Gemm/Conv layer to stream; quantize "
                                 "it first (e.g. --quantize w2a2 --calib DATA.npz)")
    tail = []
    seen = set()
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op_type in ("IntegerMatMul", "IntegerConv", "Gemm", "MatMul", "Conv", "MaxPool"):
            raise _refuse(n)
        tail.append(n.name)
        stack.extend(u.node for o in n.outputs for u in o.uses())
    logger.info("fpga: %d streaming units %s", len(layers), ", ".join(_describe(la) for la in layers))
    return Network(layers, design_in.name, layers[-1].out_value, head, tail,
                   in_order=np.asarray(in_order).reshape(-1), out_order=np.asarray(order).reshape(-1))


def _describe(unit: Unit) -> str:
    if isinstance(unit, PoolLayer):
        return f"maxpool{unit.k_h}x{unit.k_w}({unit.channels}x{unit.in_h}x{unit.in_w})"
    if unit.window is not None:
        w = unit.window
        return f"conv{w.k_h}x{w.k_w}({w.channels}->{unit.mh}, {w.out_h}x{w.out_w})"
    return f"{unit.mw}x{unit.mh}"


def _check_channels_last(node: ir.Node, x: ir.Value, order: np.ndarray) -> None:
    shape = _static_shape(x, node)
    if len(shape) not in (3, 4) or shape[0] != 1:
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}): input {x.name!r} has shape {list(shape)}; "
                                 "the streaming units take one (1, C, H, W) or (1, C, L) feature map")
    if not np.array_equal(order, channels_last_order(shape)):
        raise UnsupportedOpError(f"node {node.name!r} ({node.op_type}): its input {x.name!r} arrives reordered (a "
                                 "Transpose/Reshape in front of it); the sliding window reads a channels-last "
                                 "feature map — remove the reordering before the layer")


def _spatial(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(C, H, W) of a (1, C, H, W) or (1, C, L) shape (a 1-D map is one row)."""
    return (shape[1], shape[2], shape[3]) if len(shape) == 4 else (shape[1], 1, shape[2])


def _pool(node: ir.Node, x: ir.Value, index: int, rng: tuple[int, int]) -> tuple[PoolLayer, ir.Value]:
    """MaxPool (kernel = stride, no padding or dilation) → a PoolLayer."""
    where = f"node {node.name!r} (MaxPool)"
    shape = _static_shape(x, node)
    c, h, w = _spatial(shape)
    a = _attrs(node)
    kernel = list(a.get("kernel_shape") or [])
    kernel2 = kernel if len(kernel) == 2 else [1, *kernel]
    strides = list(a.get("strides") or [1] * len(kernel))
    strides2 = strides if len(strides) == 2 else [1, *strides]
    if kernel2 != strides2:
        raise UnsupportedOpError(f"{where}: kernel {kernel} with strides {strides}; the streaming max pool takes "
                                 "non-overlapping windows (strides = kernel_shape)")
    if any(p != 0 for p in a.get("pads") or []) or a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise UnsupportedOpError(f"{where}: padding {list(a.get('pads') or [])} / auto_pad; the streaming max pool "
                                 "takes unpadded pooling")
    if any(d != 1 for d in a.get("dilations") or []):
        raise UnsupportedOpError(f"{where}: dilations {list(a['dilations'])}; the streaming max pool takes none")
    if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
        raise UnsupportedOpError(f"{where}: its indices output is used; the streaming max pool gives values only")
    layer = PoolLayer(name=f"pool{index}", source=node.name, channels=c, in_h=h, in_w=w, k_h=kernel2[0],
                      k_w=kernel2[1], in_range=rng, in_value=x.name)
    out = node.outputs[0]
    out_shape = _spatial(_static_shape(out, node))
    if out_shape != (c, layer.out_h, layer.out_w):
        raise UnsupportedOpError(f"{where}: output {list(out_shape)} is not the floor-mode {[c, layer.out_h, layer.out_w]} "
                                 "(ceil_mode pools a partial window); use ceil_mode=0 or a divisible size")
    layer.out_value = out.name
    return layer, out


def _conv_window(conv: ir.Node, x: ir.Value, w: np.ndarray, xzp: int, where: str) -> ConvWindow:
    a = _attrs(conv)
    if int(a.get("group", 1)) != 1:
        raise UnsupportedOpError(f"{where}: group={a['group']}; the sliding window + MVAU stream dense "
                                 "convolutions only (no depthwise/grouped unit)")
    shape = _static_shape(x, conv)
    c, h, wd = _spatial(shape)
    kernel = list(w.shape[2:])
    strides, dilations, pads, out = conv_geometry(list(shape[2:]), kernel, a, where)
    if any(d != 1 for d in dilations):
        raise UnsupportedOpError(f"{where}: dilations {dilations}; the sliding window takes undilated kernels")
    n = len(kernel)
    if n == 1:
        kernel, strides, out = [1, *kernel], [1, *strides], [1, *out]
        pads = [0, pads[0], 0, pads[1]]
    top, left, bottom, right = pads[0], pads[1], pads[2], pads[3]
    if top >= kernel[0] or bottom >= kernel[0] or left >= kernel[1] or right >= kernel[1]:
        raise UnsupportedOpError(f"{where}: pads {pads} reach a whole kernel {kernel}; the sliding window pads "
                                 "less than one kernel on each side")
    return ConvWindow(channels=c, in_h=h, in_w=wd, k_h=kernel[0], k_w=kernel[1], stride_h=strides[0],
                      stride_w=strides[1], pads=(top, left, bottom, right), pad_value=xzp,
                      out_h=int(out[0]), out_w=int(out[1]))


def _layer(mm: ir.Node, x: ir.Value, index: int, rng: tuple[int, int] | None,
           order: np.ndarray) -> tuple[MvauLayer, ir.Value]:
    """One IntegerMatMul/IntegerConv [+ Mul 2^K] [+ Add bias] [+ Requantize] → an MvauLayer and its
    output value. `rng` is the incoming stream's integer range (None: read it from `x`), `order`
    its element order (the weight columns are permuted to it)."""
    where = f"layer mvau{index} (node {mm.name!r})"
    conv = mm.op_type == "IntegerConv"
    w = _const(mm.inputs[1], "weight", mm)
    if w.ndim != (w.ndim if conv else 2) or (conv and w.ndim not in (3, 4)):
        raise UnsupportedOpError(f"{where}: weight {mm.inputs[1].name!r} has shape {list(w.shape)}; "
                                 "a streaming MVAU needs a 2-D weight (or a 1-D/2-D convolution's)")
    x_zp = _const(mm.inputs[2], "input zero point", mm) if len(mm.inputs) > 2 else None
    w_zp = _const(mm.inputs[3], "weight zero point", mm) if len(mm.inputs) > 3 else None
    if x_zp is not None and np.ndim(x_zp) > 0 and np.unique(x_zp).size > 1:
        raise UnsupportedOpError(f"{where}: a per-row input zero point has no streaming form")
    xzp = int(np.reshape(x_zp, -1)[0]) if x_zp is not None else 0
    if conv:
        wzp = np.asarray(w_zp, np.int64).reshape((-1,) + (1,) * (w.ndim - 1)) if w_zp is not None else 0
        wq = w.astype(np.int64) - wzp  # (M, C, [KH,] KW)
        w4 = wq if wq.ndim == 4 else wq[:, :, None, :]
        weights = w4.transpose(0, 2, 3, 1).reshape(w4.shape[0], -1).copy()  # MH × (ky, kx, c)
        window = _conv_window(mm, x, w4, xzp, where)
        vectors = window.out_h * window.out_w
    else:
        wq = w.astype(np.int64) - (np.asarray(w_zp, np.int64) if w_zp is not None else 0)
        weights = wq.T.copy()  # MH × MW, columns in the Graph's order
        window = None
        vectors = max(1, order.size // weights.shape[1])
        rows = order.reshape(vectors, weights.shape[1])
        perm = rows[0]
        if not (np.array_equal(np.sort(perm), np.arange(perm.size))
                and np.array_equal(rows, np.arange(vectors)[:, None] * perm.size + perm[None, :])):
            raise UnsupportedOpError(f"{where}: its input {x.name!r} arrives reordered across vectors; the MVAU "
                                     "takes each input vector as one block of the stream")
        hw = np.empty_like(weights)
        hw[:, perm] = weights  # stream position perm[k] carries the Graph's element k
        weights = hw
    in_range = rng if rng is not None else _range_of(x)
    qp_w = get_quant(mm.inputs[1])
    if qp_w is not None and np.all(np.asarray(qp_w.zero_point) == 0):
        w_range = (int(qp_w.qmin), int(qp_w.qmax))
    else:
        w_range = (int(min(wq.min(), 0)), int(max(wq.max(), 0)))
    for what, r in (("input", in_range), ("weights", w_range)):
        bits = int_bits(*r)[0]
        if bits > MAX_BITS:
            raise QuantizationError(f"{where}: {what} need {bits} bits (range {list(r)}); the FPGA backend "
                                    f"takes at most {MAX_BITS}-bit weights and activations — requantize the "
                                    "model at fewer bits (e.g. --quantize w4a4)")
    lo_x, hi_x = in_range
    lo_n = np.minimum(lo_x * weights, hi_x * weights).sum(axis=1)
    hi_n = np.maximum(lo_x * weights, hi_x * weights).sum(axis=1)
    acc_range = (int(min(lo_n.min(), 0)), int(max(hi_n.max(), 0)))
    offset = -xzp * weights.sum(axis=1)  # acc (the graph's) = acc_hw + offset
    acc = mm.outputs[0]
    layer = MvauLayer(name=f"mvau{index}", source=mm.name, weights=weights, in_range=in_range, w_range=w_range,
                      out_range=acc_range, acc_range=acc_range, vectors=vectors, in_value=x.name,
                      out_value=acc.name, window=window)
    # the integer epilogue: [conv bias] [Mul 2^K] [Add bias] Requantize
    k, bias, value = 0, np.zeros(layer.mh, np.int64), acc
    if conv and len(mm.inputs) > 4 and mm.inputs[4] is not None:  # IntegerConv adds it to its accumulator
        bias = bias + np.broadcast_to(_const(mm.inputs[4], "bias", mm).astype(np.int64).reshape(-1), (layer.mh,))
    acc_bias = bias.copy()
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
            bias = bias << k
        else:
            bias = bias + np.broadcast_to(c.reshape(-1), (layer.mh,))
        chain.append(node)
        value = node.outputs[0]
        node = _only_user(value)
    if node is None or node.op_type != "Requantize" or node.domain != MLPC_DOMAIN:
        # no requantization (the logits): the output is the graph's accumulator; an integer
        # epilogue after it stays on the host
        offset = offset + acc_bias
        layer.offset = offset
        layer.out_range = (int(min((lo_n + offset).min(), 0)), int(max((hi_n + offset).max(), 0)))
        return layer, acc
    rq = node
    mult, shift, zp = (_const(v, n, rq) for v, n in zip(rq.inputs[1:4], ("multiplier", "shift", "zero point")))
    attrs = _attrs(rq)
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
