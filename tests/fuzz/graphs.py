"""Hypothesis strategies for random, valid, small ONNX graphs with static shapes.

`graphs()` draws a `FuzzGraph`: a ModelProto (opset 17) that chains or branches 2–8 nodes taken
from Conv (1-D/2-D, random kernel/stride/pads/dilation/groups), Gemm, MatMul, broadcasting
binary ops, activations, pooling, Reshape, Transpose, Concat, Slice, Softmax,
LayerNormalization and QONNX Quant (random bits, signedness, narrow range, per-tensor or
per-channel scale), plus the input arrays to feed it. Weights come from a NumPy generator
seeded by a drawn integer so that shrinking stays cheap. Every value not consumed by a later
node is a graph output, so every node is live.

    >>> from hypothesis import given
    >>> @given(graphs())
    ... def test(g): ...
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

logger = logging.getLogger(__name__)

OPSET = 17
QONNX_DOMAIN = "qonnx.custom_op.general"


@dataclass
class FuzzGraph:
    """A drawn graph: the model, its feeds, and whether it contains QONNX Quant nodes."""

    model: onnx.ModelProto
    feeds: dict[str, np.ndarray]
    has_quant: bool
    ops: list[str] = field(default_factory=list)

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        return f"FuzzGraph(ops={self.ops}, inputs={ {k: v.shape for k, v in self.feeds.items()} })\n" + \
            helper.printable_graph(self.model.graph)


class _Builder:
    """Accumulates nodes, initializers and the static shapes of every float32 value."""

    def __init__(self, draw: Any, rng: np.random.Generator, quant_graph: bool) -> None:
        self.draw = draw
        self.quant_graph = quant_graph
        self.rng = rng
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.used: set[str] = set()
        self.ops: list[str] = []
        self.has_quant = False

    def name(self, prefix: str) -> str:
        return f"{prefix}{len(self.nodes)}_{len(self.inits)}"

    def const(self, arr: np.ndarray, prefix: str = "w") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def weights(self, shape: tuple[int, ...], scale: float = 0.5) -> str:
        return self.const((self.rng.standard_normal(shape) * scale).astype(np.float32))

    def add(self, op: str, inputs: list[str], shape: tuple[int, ...], domain: str = "", **attrs: Any) -> str:
        out = self.name("t")
        self.nodes.append(helper.make_node(op, inputs, [out], name=f"n{len(self.nodes)}_{op}", domain=domain, **attrs))
        self.used.update(inputs)
        self.shapes[out] = shape
        self.ops.append(op)
        return out


def _conv_out(size: int, k: int, s: int, pb: int, pe: int, d: int) -> int:
    return (size + pb + pe - d * (k - 1) - 1) // s + 1


def _conv(b: _Builder, x: str) -> str | None:
    shape = b.shapes[x]
    if len(shape) not in (3, 4):
        return None
    draw, nsp = b.draw, len(shape) - 2
    c = shape[1]
    groups = draw(st.sampled_from([g for g in (1, 2, 3, c) if c % g == 0]))
    m = groups * draw(st.integers(1, 3))
    ks = [draw(st.integers(1, 3)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 2)) for _ in range(nsp)]
    dil = [draw(st.integers(1, 2)) for _ in range(nsp)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * nsp)]
    out = [_conv_out(shape[2 + i], ks[i], strides[i], pads[i], pads[i + nsp], dil[i]) for i in range(nsp)]
    if min(out) < 1:
        return None
    inputs = [x, b.weights((m, c // groups, *ks))]
    if draw(st.booleans()):
        inputs.append(b.weights((m,), 0.1))
    return b.add("Conv", inputs, (shape[0], m, *out), kernel_shape=ks, strides=strides, pads=pads,
                 dilations=dil, group=groups)


def _pool(b: _Builder, x: str) -> str | None:
    shape = b.shapes[x]
    if len(shape) not in (3, 4):
        return None
    draw, nsp = b.draw, len(shape) - 2
    kinds = ["MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"]
    if b.quant_graph and len(shape) != 4:
        # onnx's reference GlobalMaxPool (the oracle of Quant graphs) reduces the wrong axes
        # unless the input is 4-D; float graphs are checked against onnxruntime instead.
        kinds.remove("GlobalMaxPool")
    kind = draw(st.sampled_from(kinds))
    if kind.startswith("Global"):
        return b.add(kind, [x], (*shape[:2], *[1] * nsp))
    ks = [draw(st.integers(1, 3)) for _ in range(nsp)]
    strides = [draw(st.integers(1, 2)) for _ in range(nsp)]
    pads = [draw(st.integers(0, k - 1)) for k in ks] * 2
    out = [_conv_out(shape[2 + i], ks[i], strides[i], pads[i], pads[i + nsp], 1) for i in range(nsp)]
    if min(out) < 1:
        return None
    attrs: dict[str, Any] = {"kernel_shape": ks, "strides": strides, "pads": pads}
    if kind == "AveragePool":
        attrs["count_include_pad"] = int(draw(st.booleans()))
    return b.add(kind, [x], (*shape[:2], *out), **attrs)


def _gemm(b: _Builder, x: str) -> str | None:
    shape = b.shapes[x]
    draw = b.draw
    n_out = draw(st.integers(1, 8))
    if len(shape) == 2 and draw(st.booleans()):
        trans_b = int(draw(st.booleans()))
        w = b.weights((n_out, shape[1]) if trans_b else (shape[1], n_out))
        bias_shape = draw(st.sampled_from([(n_out,), (1, n_out), (shape[0], n_out)]))
        return b.add("Gemm", [x, w, b.weights(bias_shape, 0.1)], (shape[0], n_out), transB=trans_b,
                     alpha=draw(st.sampled_from([1.0, 0.5])), beta=draw(st.sampled_from([1.0, 2.0])))
    if len(shape) < 2:
        return None
    return b.add("MatMul", [x, b.weights((shape[-1], n_out))], (*shape[:-1], n_out))


def _binary(b: _Builder, x: str) -> str:
    shape = b.shapes[x]
    draw = b.draw
    op = draw(st.sampled_from(["Add", "Sub", "Mul", "Div", "Max", "Min"]))
    others = [n for n, s in b.shapes.items() if n != x and s == shape]
    if others and draw(st.booleans()):  # a DAG edge: combine with another value of the same shape
        other = draw(st.sampled_from(sorted(others)))
        if op == "Div":
            op = "Mul"
    else:  # a broadcast constant: some dims 1, maybe fewer leading dims
        rank = draw(st.integers(0, len(shape)))
        bshape = tuple(d if draw(st.booleans()) else 1 for d in shape[len(shape) - rank:])
        vals = b.rng.uniform(0.5, 2.0, bshape) * b.rng.choice([-1.0, 1.0], bshape)
        other = b.const(vals.astype(np.float32), "c")
    ins = [x, other] if draw(st.booleans()) or op == "Div" else [other, x]
    return b.add(op, ins, shape)


def _activation(b: _Builder, x: str) -> str:
    draw = b.draw
    op = draw(st.sampled_from(["Relu", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "HardSigmoid",
                               "Softplus", "Clip", "Abs", "Neg", "Exp"]))
    shape = b.shapes[x]
    if op == "Exp":
        x = b.add("Tanh", [x], shape)
    if op == "LeakyRelu":
        return b.add(op, [x], shape, alpha=draw(st.sampled_from([0.01, 0.2])))
    if op == "Clip":
        lo = np.float32(draw(st.sampled_from([-1.0, 0.0, -0.5])))
        return b.add(op, [x, b.const(np.array(lo), "c"), b.const(np.array(lo + 1.5, np.float32), "c")], shape)
    return b.add(op, [x], shape)


def _reshape(b: _Builder, x: str) -> str:
    shape = b.shapes[x]
    draw = b.draw
    total = int(np.prod(shape))
    choice = draw(st.sampled_from(["flatten", "split", "merge"]))
    if choice == "flatten" or len(shape) < 2:
        new, spec = (shape[0], total // shape[0]), [shape[0], -1]
    elif choice == "split" and shape[-1] % 2 == 0:
        new = (*shape[:-1], 2, shape[-1] // 2)
        spec = [0] * (len(shape) - 1) + [2, -1]
    else:
        new = (*shape[:-2], shape[-2] * shape[-1])
        spec = list(new)
    return b.add("Reshape", [x, b.const(np.array(spec, np.int64), "s")], tuple(new))


def _transpose(b: _Builder, x: str) -> str:
    shape = b.shapes[x]
    perm = list(b.draw(st.permutations(range(len(shape)))))
    return b.add("Transpose", [x], tuple(shape[p] for p in perm), perm=perm)


def _concat(b: _Builder, x: str) -> str:
    shape = b.shapes[x]
    draw = b.draw
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    ax = axis % len(shape)
    same = sorted(n for n, s in b.shapes.items()
                  if len(s) == len(shape) and all(s[i] == shape[i] for i in range(len(s)) if i != ax))
    other = draw(st.sampled_from(same))
    out = list(shape)
    out[ax] += b.shapes[other][ax]
    return b.add("Concat", [x, other], tuple(out), axis=axis)


def _slice(b: _Builder, x: str) -> str | None:
    shape = b.shapes[x]
    draw = b.draw
    axis = draw(st.integers(0, len(shape) - 1))
    size = shape[axis]
    step = draw(st.sampled_from([1, 1, 2, -1]))
    if step > 0:
        start = draw(st.integers(0, size - 1))
        end = draw(st.integers(start + 1, size + 2))  # past the end is clamped
        n = len(range(start, min(end, size), step))
    else:
        start = draw(st.integers(0, size - 1))
        end = draw(st.integers(-size - 2, start - 1)) if start > 0 else -size - 2
        stop = end if end >= 0 else max(end + size, -1)
        n = len(range(start, stop, step))
    if n < 1:
        return None
    out = list(shape)
    out[axis] = n
    ints = [b.const(np.array([v], np.int64), "s") for v in (start, end, axis, step)]
    return b.add("Slice", [x, *ints], tuple(out))


def _softmax(b: _Builder, x: str) -> str:
    shape = b.shapes[x]
    axis = b.draw(st.integers(-len(shape), len(shape) - 1))
    return b.add(b.draw(st.sampled_from(["Softmax", "LogSoftmax"])), [x], shape, axis=axis)


def _layernorm(b: _Builder, x: str) -> str:
    shape = b.shapes[x]
    axis = b.draw(st.integers(-len(shape), len(shape) - 1))
    norm = shape[axis % len(shape):]
    scale = b.const((1.0 + 0.2 * b.rng.standard_normal(norm)).astype(np.float32))
    bias = b.weights(norm, 0.1)
    return b.add("LayerNormalization", [x, scale, bias], shape, axis=axis,
                 epsilon=b.draw(st.sampled_from([1e-5, 1e-3])))


def _quant(b: _Builder, x: str) -> str:
    shape = b.shapes[x]
    draw = b.draw
    bits = draw(st.integers(2, 8))
    signed = int(draw(st.booleans()))
    narrow = int(draw(st.booleans()))
    per_channel = len(shape) >= 2 and draw(st.booleans())
    scale_shape = (1, shape[1], *[1] * (len(shape) - 2)) if per_channel else ()
    scale = b.const((b.rng.uniform(0.02, 0.5, scale_shape)).astype(np.float32), "q")
    zp_val = 0.0 if signed or draw(st.booleans()) else float(draw(st.integers(0, 3)))
    zp = b.const(np.array(zp_val, np.float32), "q")
    bw = b.const(np.array(float(bits), np.float32), "q")
    b.has_quant = True
    return b.add("Quant", [x, scale, zp, bw], shape, domain=QONNX_DOMAIN, signed=signed, narrow=narrow,
                 rounding_mode=draw(st.sampled_from(["ROUND", "FLOOR"])))


_OPS = {
    "conv": _conv, "pool": _pool, "gemm": _gemm, "binary": _binary, "act": _activation,
    "reshape": _reshape, "transpose": _transpose, "concat": _concat, "slice": _slice,
    "softmax": _softmax, "layernorm": _layernorm, "quant": _quant,
}


@st.composite
def graphs(draw: Any, quant: bool | None = None) -> FuzzGraph:
    """Draw a FuzzGraph of 2–8 nodes. `quant`: True forces a Quant node, False forbids one."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    b = _Builder(draw, rng, bool(quant))
    rank = draw(st.sampled_from([2, 3, 4]))
    shape = (draw(st.integers(1, 2)), *[draw(st.integers(1, 6)) for _ in range(rank - 1)])
    if rank >= 3:
        shape = (shape[0], draw(st.integers(1, 4)), *[draw(st.integers(3, 8)) for _ in range(rank - 2)])
    b.shapes["x"] = shape
    n_nodes = draw(st.integers(2, 8))
    kinds = sorted(k for k in _OPS if quant is not False or k != "quant")
    while len(b.nodes) < n_nodes:
        kind = draw(st.sampled_from(kinds))
        if quant and not b.has_quant and len(b.nodes) == n_nodes - 1:
            kind = "quant"
        # Grow from small values only, so that graphs stay cheap to build and run.
        src = draw(st.sampled_from(sorted(k for k, v in b.shapes.items() if int(np.prod(v)) <= 4096)))
        _OPS[kind](b, src)
    outputs = [n for n in b.shapes if n != "x" and n not in b.used]
    graph = helper.make_graph(
        b.nodes, "fuzz",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, b.shapes[o]) for o in outputs],
        initializer=b.inits,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    if b.has_quant:
        opsets.append(helper.make_opsetid(QONNX_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32)}
    return FuzzGraph(model, feeds, b.has_quant, b.ops)
