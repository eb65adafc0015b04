"""Float rewrites that prepare a CNN for quantization without changing what it computes:
BatchNormalization folded into the preceding Conv, and cross-layer equalization (Nagel et al.
2019): for Conv/Gemm → [Relu] → Conv/Gemm pairs, output channel i of the first layer is divided
by s_i = sqrt(r1_i / r2_i) and input channel i of the second multiplied by it (ReLU is
positively homogeneous), so both weights get equal per-channel ranges and per-tensor
quantization wastes fewer levels.

    >>> fold_batchnorm(graph); equalize(graph)      # both return how many they changed
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from mlpc.quant.layers import Layer, add_constant, const_array, find_layers

logger = logging.getLogger(__name__)

ITERATIONS = 8


def fold_batchnorm(graph: ir.Graph) -> int:
    """Fold every inference BatchNormalization whose input is a Conv's only use (constant
    weight and BN parameters) into that Conv. Returns the number folded."""
    folded = 0
    for bn in [n for n in graph if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx")]:
        conv = bn.inputs[0].producer() if bn.inputs[0] is not None else None
        params = [const_array(v) for v in bn.inputs[1:5]]
        if (conv is None or conv.op_type != "Conv" or len(bn.outputs) != 1 or any(p is None for p in params)
                or len(bn.inputs[0].uses()) != 1 or bn.inputs[0].is_graph_output()):
            continue
        w = const_array(conv.inputs[1])
        if w is None:
            continue
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        factor = gamma / np.sqrt(var + bn.attributes.get_float("epsilon", 1e-5))
        b = const_array(conv.inputs[2]) if len(conv.inputs) > 2 and conv.inputs[2] is not None else np.zeros(w.shape[0])
        new_w = (w * factor.reshape(-1, *[1] * (w.ndim - 1))).astype(np.float32)
        new_b = ((b - mean) * factor + beta).astype(np.float32)
        conv.replace_input_with(1, add_constant(graph, f"{conv.name}_w_bn", new_w))
        if len(conv.inputs) < 3:
            conv.resize_inputs(3)
        conv.replace_input_with(2, add_constant(graph, f"{conv.name}_b_bn", new_b))
        out = conv.outputs[0]
        bn_out = bn.outputs[0]
        if bn_out.is_graph_output():
            out.name, bn_out.name = bn_out.name, f"{bn_out.name}_unfolded"
        bn_out.replace_all_uses_with(out, replace_graph_outputs=True)
        graph.remove(bn, safe=True)
        folded += 1
    if folded:
        logger.info("folded %d BatchNormalization into Conv", folded)
    return folded


def _in_axis(layer: Layer) -> int:
    if layer.kind == "conv":
        return 1
    if layer.kind == "gemm":
        return 1 if layer.node.attributes.get_int("transB", 0) else 0
    return 0


def _pairs(graph: ir.Graph) -> list[tuple[Layer, Layer]]:
    by_node = {id(layer.node): layer for layer in find_layers(graph) if layer.weight is not None}
    pairs = []
    for first in by_node.values():
        if first.groups != 1 or first.node.outputs[0].is_graph_output():
            continue
        value = first.node.outputs[0]
        users = value.uses()
        if len(users) == 1 and users[0][0].op_type == "Relu" and not users[0][0].outputs[0].is_graph_output():
            value = users[0][0].outputs[0]
            users = value.uses()
        if len(users) != 1 or users[0][1] != 0:
            continue
        second = by_node.get(id(users[0][0]))
        if second is None or second.groups != 1 or second.kind == "matmul" and first.kind == "conv":
            continue
        w1, w2 = const_array(first.weight), const_array(second.weight)
        if w1.shape[first.channel_axis] == w2.shape[_in_axis(second)]:
            pairs.append((first, second))
    return pairs


def _ranges(w: np.ndarray, axis: int) -> np.ndarray:
    return np.max(np.abs(np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)), axis=1)


def _shape_along(n: int, ndim: int, axis: int) -> tuple[int, ...]:
    shape = [1] * ndim
    shape[axis] = n
    return tuple(shape)


def equalize(graph: ir.Graph, iterations: int = ITERATIONS) -> int:
    """Cross-layer equalization of every eligible layer pair (see the module doc), repeated
    `iterations` times over chains. Returns the number of pairs equalized; outputs are unchanged
    up to float rounding."""
    pairs = _pairs(graph)
    if not pairs:
        return 0
    weights = {id(layer.node): const_array(layer.weight).astype(np.float64) for pair in pairs for layer in pair}
    biases = {id(first.node): (const_array(first.bias).astype(np.float64) if first.bias is not None else None)
              for first, _ in pairs}
    for _ in range(iterations):
        for first, second in pairs:
            w1, w2 = weights[id(first.node)], weights[id(second.node)]
            r1, r2 = _ranges(w1, first.channel_axis), _ranges(w2, _in_axis(second))
            s = np.where((r1 > 0) & (r2 > 0), np.sqrt(r1 / np.where(r2 > 0, r2, 1.0)), 1.0)
            weights[id(first.node)] = w1 / s.reshape(_shape_along(len(s), w1.ndim, first.channel_axis))
            weights[id(second.node)] = w2 * s.reshape(_shape_along(len(s), w2.ndim, _in_axis(second)))
            if biases[id(first.node)] is not None:
                biases[id(first.node)] = biases[id(first.node)] / s
    for layer in {id(layer.node): layer for pair in pairs for layer in pair}.values():
        layer.node.replace_input_with(1, add_constant(graph, f"{layer.name}_w_eq", weights[id(layer.node)].astype(np.float32)))
        bias = biases.get(id(layer.node))
        if bias is not None:
            layer.node.replace_input_with(2, add_constant(graph, f"{layer.name}_b_eq", bias.astype(np.float32)))
    logger.info("cross-layer equalization of %d layer pairs", len(pairs))
    return len(pairs)
