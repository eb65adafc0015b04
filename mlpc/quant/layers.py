"""The quantizable layers of a Graph (Conv, Gemm, MatMul) and the graph edits quantization makes:
constants, Quant nodes, weight/bias replacement, and the im2col view of a layer's input that
the calibration statistics and the rounding algorithms use.

    >>> for layer in find_layers(graph): print(layer.name, layer.kind, layer.weight_shape)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir
from numpy.lib.stride_tricks import sliding_window_view

from mlpc.ir import QuantParams, set_quant

logger = logging.getLogger(__name__)

QONNX_DOMAIN = "qonnx.custom_op.general"


def const_array(value: ir.Value | None) -> np.ndarray | None:
    """The NumPy value of a constant (initializer or folded) value, else None."""
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


@dataclass
class Layer:
    """A quantizable node: Conv, Gemm or MatMul with a constant float weight ("conv", "gemm",
    "matmul"), a MatMul of two activations ("matmul_act"), or a residual Add of two activations
    ("add", listed by the quantize pass).

    `channel_axis` is the weight's output-channel axis; `groups` the conv groups.
    """

    node: ir.Node
    kind: str
    data: ir.Value
    weight: ir.Value | None
    bias: ir.Value | None
    channel_axis: int
    groups: int = 1

    @property
    def name(self) -> str:
        """The node name (what config globs match)."""
        return self.node.name or f"{self.node.op_type}_{id(self.node)}"

    @property
    def weight_shape(self) -> tuple[int, ...]:
        """The weight's shape."""
        return tuple(const_array(self.weight).shape) if self.weight is not None else ()

    def weight_matrix(self, w: np.ndarray) -> np.ndarray:
        """The weight as an (out_channels, reduction) matrix whose columns follow `patches()`."""
        if self.kind == "conv":
            return w.reshape(w.shape[0], -1)
        return np.moveaxis(w, self.channel_axis, 0).reshape(w.shape[self.channel_axis], -1)

    def weight_from_matrix(self, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of `weight_matrix`."""
        if self.kind == "conv":
            return m.reshape(shape)
        moved = list(shape)
        moved.insert(0, moved.pop(self.channel_axis))
        return np.moveaxis(m.reshape(moved), 0, self.channel_axis)

    def patches(self, x: np.ndarray) -> np.ndarray:
        """The layer input `x` as (groups, rows, reduction) so that output = patches @ W_g.T per group."""
        node = self.node
        if self.kind == "conv":
            return _conv_patches(node, x, self.groups, const_array(self.weight).shape[2:])
        if self.kind == "gemm":
            x2 = x.reshape(-1, x.shape[-1]) if not node.attributes.get_int("transA", 0) else x.T
            return x2[None]
        return x.reshape(-1, x.shape[-1])[None]


def _conv_pads(node: ir.Node, spatial: tuple[int, ...], kernel: tuple[int, ...], strides, dilations) -> list[int]:
    auto_pad = node.attributes.get_string("auto_pad", "NOTSET")
    n = len(spatial)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = [0] * (2 * n)
        for i in range(n):
            out = -(-spatial[i] // strides[i])
            total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - spatial[i])
            small, big = total // 2, total - total // 2
            pads[i], pads[i + n] = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
        return pads
    if auto_pad == "VALID":
        return [0] * (2 * n)
    return list(node.attributes.get_ints("pads", [0] * (2 * n)))


def _conv_patches(node: ir.Node, x: np.ndarray, groups: int, kernel: tuple[int, ...]) -> np.ndarray:
    n = len(kernel)
    strides = list(node.attributes.get_ints("strides", [1] * n))
    dilations = list(node.attributes.get_ints("dilations", [1] * n))
    pads = _conv_pads(node, x.shape[2:], kernel, strides, dilations)
    x = np.pad(x, [(0, 0), (0, 0)] + [(pads[i], pads[i + n]) for i in range(n)])
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    win = sliding_window_view(x, span, axis=tuple(range(2, 2 + n)))  # (N, C, *out_full, *span)
    index = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides)
    index += tuple(slice(None, None, d) for d in dilations)
    win = win[index]  # (N, C, *out, *kernel)
    batch, channels = win.shape[:2]
    out_shape = win.shape[2 : 2 + n]
    # → (N, *out, C, *kernel) → (groups, N·out, C/groups·prod(kernel))
    win = np.moveaxis(win, 1, 1 + n)
    rows = batch * int(np.prod(out_shape))
    win = win.reshape(rows, groups, channels // groups * int(np.prod(kernel)))
    return np.ascontiguousarray(np.moveaxis(win, 1, 0))


def find_layers(graph: ir.Graph) -> list[Layer]:
    """Every Conv/Gemm/MatMul of `graph` with a constant float weight (and MatMuls of two
    activations), in graph order. Layers whose weight is already the output of a Quant node are
    not listed (they are quantized)."""
    layers = []
    for node in graph:
        if node.domain not in ("", "ai.onnx"):
            continue
        ins = list(node.inputs)
        if node.op_type == "Conv" and len(ins) >= 2 and _float_const(ins[1]):
            layers.append(Layer(node, "conv", ins[0], ins[1], ins[2] if len(ins) > 2 else None, 0,
                                node.attributes.get_int("group", 1)))
        elif node.op_type == "Gemm" and len(ins) >= 2 and _float_const(ins[1]):
            bias = ins[2] if len(ins) > 2 and _bias_vector(ins[2]) else None
            if len(ins) > 2 and ins[2] is not None and bias is None:
                continue  # a Gemm with a matrix C: leave it float
            axis = 0 if node.attributes.get_int("transB", 0) else 1
            layers.append(Layer(node, "gemm", ins[0], ins[1], bias, axis))
        elif node.op_type == "MatMul" and len(ins) == 2:
            if _float_const(ins[1]) and ins[1].const_value.numpy().ndim == 2:
                layers.append(Layer(node, "matmul", ins[0], ins[1], None, 1))
            elif not _is_const(ins[0]) and not _is_const(ins[1]) and not _quant_output(ins[1]):
                layers.append(Layer(node, "matmul_act", ins[0], None, None, -1))
    return layers


def _is_const(value: ir.Value | None) -> bool:
    return value is not None and value.const_value is not None


def _quant_output(value: ir.Value | None) -> bool:
    producer = value.producer() if value is not None else None
    return producer is not None and producer.op_type in ("Quant", "IntQuant", "BipolarQuant")


def _float_const(value: ir.Value | None) -> bool:
    return _is_const(value) and value.const_value.dtype in (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE)


def _bias_vector(value: ir.Value | None) -> bool:
    arr = const_array(value)
    return arr is not None and arr.ndim == 1


def add_constant(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register `array` as a new initializer named after `name` (made unique) and return its value."""
    taken = set(graph.initializers)
    unique, i = name, 1
    while unique in taken:
        unique, i = f"{name}_{i}", i + 1
    value = ir.Value(name=unique, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.from_numpy(array.dtype)),
                     const_value=ir.tensor(array, name=unique))
    graph.register_initializer(value)
    return value


def param_shape(qp: QuantParams, rank: int) -> tuple[int, ...]:
    """The broadcast shape of a Quant node's scale/zero point for a rank-`rank` tensor."""
    if qp.axis is None:
        return ()
    shape = [1] * rank
    shape[qp.axis % rank] = qp.channels
    return tuple(shape)


def make_quant(graph: ir.Graph, x: ir.Value, qp: QuantParams, name: str, rank: int) -> ir.Node:
    """A QONNX Quant node (domain qonnx.custom_op.general) quantizing `x` with `qp`, its
    scale/zero point/bitwidth constants registered as initializers, its output carrying `qp`
    (set_quant). The node is returned, not inserted."""
    shape = param_shape(qp, rank)
    scale = add_constant(graph, f"{name}_scale", np.asarray(qp.scale, np.float32).reshape(shape))
    zp = add_constant(graph, f"{name}_zero_point", np.asarray(qp.zero_point, np.float32).reshape(shape))
    bits = add_constant(graph, f"{name}_bitwidth", np.asarray(qp.bits, np.float32))
    node = ir.Node(
        QONNX_DOMAIN, "Quant", [x, scale, zp, bits],
        [ir.AttrInt64("signed", int(qp.signed)), ir.AttrInt64("narrow", int(qp.narrow_range)),
         ir.AttrString("rounding_mode", "ROUND")],
        num_outputs=1, name=name,
    )
    out = node.outputs[0]
    out.name = f"{name}_out"
    out.shape = x.shape
    out.type = x.type
    set_quant(out, qp)
    graph.opset_imports.setdefault(QONNX_DOMAIN, 1)
    return node


def quantize_activation(graph: ir.Graph, value: ir.Value, qp: QuantParams, consumers: list[tuple[ir.Node, int]]) -> ir.Node:
    """Insert a Quant of `value` right after its producer (first in the graph for graph inputs
    and constants) and rewire the given (node, input index) uses to it."""
    rank = len(value.shape) if value.shape is not None else 0
    node = make_quant(graph, value, qp, f"{value.name}_quant", rank)
    producer = value.producer()
    if producer is not None and producer.graph is graph:
        graph.insert_after(producer, node)
    else:
        graph.insert_before(next(iter(graph)), node)
    for user, index in consumers:
        user.replace_input_with(index, node.outputs[0])
    return node


def quantize_weight(graph: ir.Graph, layer: Layer, w: np.ndarray, qp: QuantParams) -> ir.Node:
    """Give `layer` the float weight `w` (a new initializer) through a Quant node with `qp`."""
    name = layer.name
    weight = add_constant(graph, f"{name}_weight", w.astype(np.float32))
    node = make_quant(graph, weight, qp, f"{name}_weight_quant", w.ndim)
    graph.insert_before(layer.node, node)
    layer.node.replace_input_with(1, node.outputs[0])
    return node


def set_bias(graph: ir.Graph, layer: Layer, bias: np.ndarray) -> None:
    """Give a Conv/Gemm layer the float bias vector `bias` (adding the bias input if it had none)."""
    value = add_constant(graph, f"{layer.name}_bias", bias.astype(np.float32))
    if len(layer.node.inputs) > 2:
        layer.node.replace_input_with(2, value)
    else:
        layer.node.resize_inputs(3)
        layer.node.replace_input_with(2, value)
    layer.bias = value
