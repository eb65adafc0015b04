"""Build small fake-quant Graphs by hand, following the quant contract: QONNX Quant nodes on
activations and constant weights, QuantParams attached with set_quant, static shapes.

    b = FakeQuantGraph(seed=0)
    x = b.input("x", (1, 4, 8, 8))
    xq = b.act(x, bits=8, signed=True)
    y = b.node("Conv", [xq, b.weight((8, 4, 3, 3), bits=4), b.bias(8)], pads=[1, 1, 1, 1])
    model = b.build([b.act(y, bits=8, signed=False)], {"x": data})

Activation scales are calibrated on the feeds given to `build` (min/max of the float graph).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnx
import onnx.reference
import onnx_ir as ir
from onnx import TensorProto, helper, numpy_helper

from mlpc.ir import QuantParams, set_quant

QONNX = "qonnx.custom_op.general"


class FakeQuantGraph:
    """Accumulates nodes and initializers of one fake-quant graph."""

    def __init__(self, seed: int = 0, opset: int = 17) -> None:
        self.rng = np.random.default_rng(seed)
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.inputs: list[onnx.ValueInfoProto] = []
        self.quants: dict[str, dict] = {}  # Quant output → its parameters (scale None = calibrate)
        self.count = 0

    def _name(self, base: str) -> str:
        self.count += 1
        return f"{base}{self.count}"

    def const(self, array: np.ndarray, base: str = "c") -> str:
        """Add an initializer; return its name."""
        name = self._name(base)
        self.inits[name] = np.asarray(array)
        return name

    def input(self, name: str, shape: Sequence[int]) -> str:
        """Declare a float32 graph input."""
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def node(self, op_type: str, inputs: Sequence[str], **attrs) -> str:
        """Add a standard ONNX node with one output; return the output name."""
        out = self._name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out + "_node", **attrs))
        return out

    def quant(self, x: str, bits: int, signed: bool, scale, zero_point, narrow: bool = False,
              axis: int | None = None) -> str:
        """A QONNX Quant of `x`; `scale` None means "calibrate on build's feeds"."""
        out = self._name("q")
        self.quants[out] = dict(x=x, bits=bits, signed=signed, scale=scale, zero_point=zero_point,
                                narrow=narrow, axis=axis)
        return out

    def act(self, x: str, bits: int = 8, signed: bool = True, narrow: bool = False) -> str:
        """A calibrated per-tensor activation Quant (symmetric if signed, asymmetric if not)."""
        return self.quant(x, bits, signed, None, None, narrow)

    def weight(self, shape: Sequence[int], bits: int, signed: bool = True, axis: int | None = 0,
               narrow: bool = False, zero_point: int | np.ndarray = 0) -> str:
        """A random float weight under a Quant, per channel along `axis` (None: per tensor),
        scaled so the values fill the integer range."""
        w = self.rng.standard_normal(shape).astype(np.float32) * 0.5
        qmax = 2 ** (bits - 1) - 1 if signed else 2**bits - 1 - int(narrow)
        half = qmax if signed else np.minimum(zero_point, qmax - np.asarray(zero_point))
        red = tuple(i for i in range(w.ndim) if i != axis) if axis is not None else None
        scale = (np.abs(w).max(axis=red, keepdims=axis is not None) / half).astype(np.float32)
        return self.quant(self.const(w, "w"), bits, signed, scale, zero_point, narrow, axis)

    def bias(self, n: int) -> str:
        """A random float bias of n entries."""
        return self.const(self.rng.standard_normal(n).astype(np.float32) * 0.3, "b")

    # -- building --------------------------------------------------------------------------
    def _proto(self, outputs: Sequence[str], quant_as_identity: bool, params: dict) -> onnx.ModelProto:
        nodes = list(self.nodes)
        inits = dict(self.inits)
        for out, p in self.quants.items():
            if quant_as_identity:
                nodes.append(helper.make_node("Identity", [p["x"]], [out]))
                continue
            scale, zp = params[out]
            names = []
            for suffix, arr in (("scale", scale), ("zp", zp), ("bits", np.float32(p["bits"]))):
                inits[f"{out}_{suffix}"] = np.asarray(arr, np.float32)
                names.append(f"{out}_{suffix}")
            nodes.append(helper.make_node("Quant", [p["x"], *names], [out], name=out + "_node", domain=QONNX,
                                          signed=int(p["signed"]), narrow=int(p["narrow"]),
                                          rounding_mode="ROUND"))
        nodes = _toposort(nodes, set(inits) | {i.name for i in self.inputs})
        graph = helper.make_graph(nodes, "fake_quant", self.inputs,
                                  [helper.make_empty_tensor_value_info(o) for o in outputs],
                                  initializer=[numpy_helper.from_array(a, n) for n, a in inits.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset),
                                                       helper.make_opsetid(QONNX, 1)], ir_version=10)

    def build(self, outputs: Sequence[str], feeds: dict[str, np.ndarray]) -> ir.Model:
        """The fake-quant onnx-ir Model: activation scales calibrated on `feeds`, static shapes
        from onnx shape inference, QuantParams on every Quant output."""
        identity = self._proto(outputs, True, {})
        inferred = onnx.shape_inference.infer_shapes(identity, strict_mode=True)
        infos = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}
        names = [p["x"] for p in self.quants.values() if p["scale"] is None]
        ref = onnx.reference.ReferenceEvaluator(identity)
        ranges = dict(zip(names, ref.run(names, feeds))) if names else {}
        params = {}
        for out, p in self.quants.items():
            if p["scale"] is not None:
                params[out] = (np.asarray(p["scale"], np.float32), np.asarray(p["zero_point"], np.float32))
                continue
            t = ranges[p["x"]]
            if p["signed"]:
                qmax = 2 ** (p["bits"] - 1) - 1
                params[out] = (np.float32(max(np.abs(t).max(), 1e-3) / qmax), np.float32(0))
            else:
                lo, hi = min(float(t.min()), 0.0), max(float(t.max()), 1e-3)
                scale = np.float32((hi - lo) / (2 ** p["bits"] - 1 - int(p["narrow"])))
                params[out] = (scale, np.float32(np.round(-lo / scale)))
        proto = self._proto(outputs, False, params)
        proto.graph.value_info.extend(v for k, v in infos.items() if k not in {o for o in outputs})
        proto.graph.ClearField("output")
        proto.graph.output.extend(infos[o] for o in outputs)
        model = ir.serde.deserialize_model(proto)
        values = {v.name: v for n in model.graph for v in n.outputs}
        for out, p in self.quants.items():
            scale, zp = params[out]
            axis = p["axis"] if np.ndim(scale) else None
            set_quant(values[out], QuantParams(
                bits=p["bits"], signed=p["signed"], scale=np.reshape(scale, -1).astype(np.float64) if axis is not None
                else float(scale), zero_point=np.reshape(zp, -1) if np.ndim(zp) and axis is not None else
                int(np.reshape(zp, -1)[0]), axis=axis, narrow_range=p["narrow"]))
        return model


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    done, out, pending = set(available), [], list(nodes)
    while pending:
        ready = [n for n in pending if all(i in done or not i for i in n.input)]
        assert ready, "cycle or undefined input in the test graph"
        for n in ready:
            out.append(n)
            done.update(n.output)
            pending.remove(n)
    return out


# -- the model zoo of the lower-quant and integer-kernel tests ---------------------------------
# Each case builds a small fake-quant model: (b, feeds, outputs) from (w_bits, a_bits, signed,
# per_channel). `signed=False` quantizes activations asymmetrically to uint with zero points
# and uses unsigned weights with a mid-range zero point.


def _w(b: FakeQuantGraph, shape, w_bits, signed, per_channel, axis=0):
    zp = 0 if signed else 2 ** (w_bits - 1)
    return b.weight(shape, w_bits, signed, axis if per_channel else None, zero_point=zp)


def _feeds(**shapes) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


def conv2d_case(w_bits, a_bits, signed, per_channel):
    """Conv 3×3 pad 1 stride 2 + bias → Relu → Quant → grouped Conv (g=2) → Clip → Quant."""
    b = FakeQuantGraph(1, opset=19)
    x = b.act(b.input("x", (2, 4, 9, 9)), a_bits, signed)
    c = b.node("Conv", [x, _w(b, (8, 4, 3, 3), w_bits, signed, per_channel), b.bias(8)],
               pads=[1, 1, 1, 1], strides=[2, 2])
    y = b.act(b.node("Relu", [c]), a_bits, signed)
    c = b.node("Conv", [y, _w(b, (6, 4, 3, 2), w_bits, signed, per_channel), b.bias(6)], group=2,
               pads=[0, 1, 1, 0])
    clip = b.node("Clip", [c, b.const(np.float32(-0.5)), b.const(np.float32(1.0))])
    return b, _feeds(x=(2, 4, 9, 9)), [b.act(clip, a_bits, signed)]


def conv1d_case(w_bits, a_bits, signed, per_channel):
    """Conv1d dilation 2 pad 2 → Quant → depthwise Conv1d stride 2 → Quant."""
    b = FakeQuantGraph(2, opset=19)
    x = b.act(b.input("x", (1, 3, 20)), a_bits, signed)
    c = b.node("Conv", [x, _w(b, (6, 3, 3), w_bits, signed, per_channel), b.bias(6)], dilations=[2], pads=[2, 2])
    y = b.act(c, a_bits, signed)
    c = b.node("Conv", [y, _w(b, (6, 1, 5), w_bits, signed, per_channel)], group=6, strides=[2], pads=[2, 1])
    return b, _feeds(x=(1, 3, 20)), [b.act(c, a_bits, signed)]


def depthwise_case(w_bits, a_bits, signed, per_channel):
    """Depthwise 3×3 conv → Relu → Quant → pointwise conv → Quant."""
    b = FakeQuantGraph(3, opset=19)
    x = b.act(b.input("x", (1, 8, 7, 7)), a_bits, signed)
    c = b.node("Conv", [x, _w(b, (8, 1, 3, 3), w_bits, signed, per_channel), b.bias(8)], group=8, pads=[1, 1, 1, 1])
    y = b.act(b.node("Relu", [c]), a_bits, signed)
    c = b.node("Conv", [y, _w(b, (5, 8, 1, 1), w_bits, signed, per_channel), b.bias(5)])
    return b, _feeds(x=(1, 8, 7, 7)), [b.act(c, a_bits, signed)]


def gemm_case(w_bits, a_bits, signed, per_channel):
    """Gemm transB=1 + bias → Relu → Quant → Gemm (alpha 0.5, beta 2) → Quant."""
    b = FakeQuantGraph(4, opset=19)
    x = b.act(b.input("x", (3, 40)), a_bits, signed)
    g = b.node("Gemm", [x, _w(b, (16, 40), w_bits, signed, per_channel, axis=0), b.bias(16)], transB=1)
    y = b.act(b.node("Relu", [g]), a_bits, signed)
    g = b.node("Gemm", [y, _w(b, (16, 10), w_bits, signed, per_channel, axis=1), b.bias(10)], alpha=0.5, beta=2.0)
    return b, _feeds(x=(3, 40)), [b.act(g, a_bits, signed)]


def matmul_case(w_bits, a_bits, signed, per_channel):
    """3-D MatMul by a weight + bias Add → Quant; batched MatMul of two activations → Quant."""
    b = FakeQuantGraph(5, opset=19)
    x = b.act(b.input("x", (2, 5, 24)), a_bits, signed)
    mm = b.node("MatMul", [x, _w(b, (24, 12), w_bits, signed, per_channel, axis=1)])
    y = b.act(b.node("Add", [mm, b.bias(12)]), a_bits, signed)
    k = b.act(b.input("k", (2, 12, 7)), a_bits, signed)
    att = b.node("MatMul", [y, k])
    return b, _feeds(x=(2, 5, 24), k=(2, 12, 7)), [b.act(att, a_bits, signed)]


def residual_case(w_bits, a_bits, signed, per_channel):
    """Conv → Quant (skip) → Conv → Quant; Add(skip, branch) → Relu → Quant → Softmax (float) → out."""
    b = FakeQuantGraph(6, opset=19)
    x = b.act(b.input("x", (1, 4, 6, 6)), a_bits, signed)
    skip = b.act(b.node("Conv", [x, _w(b, (4, 4, 1, 1), w_bits, signed, per_channel), b.bias(4)]), a_bits, signed)
    branch = b.node("Conv", [skip, _w(b, (4, 4, 3, 3), w_bits, signed, per_channel), b.bias(4)], pads=[1, 1, 1, 1])
    branch = b.act(branch, a_bits, signed)
    s = b.act(b.node("Relu", [b.node("Add", [skip, branch])]), a_bits, signed)
    return b, _feeds(x=(1, 4, 6, 6)), [b.node("Softmax", [s], axis=1), s]


CASES = {
    "conv2d": conv2d_case,
    "conv1d": conv1d_case,
    "depthwise": depthwise_case,
    "gemm": gemm_case,
    "matmul": matmul_case,
    "residual": residual_case,
}


def case(name: str, w_bits: int, a_bits: int, signed: bool, per_channel: bool) -> tuple[ir.Model, dict]:
    """The fake-quant model of case `name` and its feeds."""
    b, feeds, outputs = CASES[name](w_bits, a_bits, signed, per_channel)
    return b.build(outputs, feeds), feeds


def single_layer_case(kind: str, w_bits: int, a_bits: int, signed: bool, per_channel: bool):
    """One quantized layer between an entry Quant (exact) and an output Quant, so the integer
    and fake-quant graphs see the same inputs: (model, feeds)."""
    b = FakeQuantGraph(11, opset=19)
    shapes = {"conv2d": (2, 6, 8, 8), "conv1d": (2, 6, 17), "depthwise": (1, 6, 8, 8), "gemm": (4, 64),
              "matmul": (2, 3, 48), "attention": (2, 3, 4, 16), "add": (2, 6, 5)}
    x = b.act(b.input("x", shapes[kind]), a_bits, signed)
    feeds = _feeds(x=shapes[kind])
    if kind == "conv2d":
        y = b.node("Conv", [x, _w(b, (10, 6, 3, 3), w_bits, signed, per_channel), b.bias(10)],
                   pads=[1, 0, 2, 1], strides=[1, 2])
        y = b.node("Relu", [y])
    elif kind == "conv1d":
        y = b.node("Conv", [x, _w(b, (4, 3, 5), w_bits, signed, per_channel), b.bias(4)], group=2, pads=[2, 2],
                   dilations=[2])
    elif kind == "depthwise":
        y = b.node("Conv", [x, _w(b, (6, 1, 3, 3), w_bits, signed, per_channel), b.bias(6)], group=6,
                   strides=[2, 2], pads=[1, 1, 1, 1])
    elif kind == "gemm":
        y = b.node("Gemm", [x, _w(b, (32, 64), w_bits, signed, per_channel), b.bias(32)], transB=1)
        y = b.node("Clip", [y, b.const(np.float32(-1.0)), b.const(np.float32(2.0))])
    elif kind == "matmul":
        y = b.node("Add", [b.node("MatMul", [x, _w(b, (48, 20), w_bits, signed, per_channel, axis=1)]), b.bias(20)])
    elif kind == "attention":
        k = b.act(b.input("k", (2, 3, 16, 5)), a_bits, signed)
        feeds.update(_feeds(k=(2, 3, 16, 5)))
        y = b.node("MatMul", [x, k])
    else:
        r = b.act(b.input("r", shapes[kind]), a_bits, signed)
        feeds["r"] = _feeds(r=shapes[kind])["r"] * 3
        y = b.node("Add", [x, r])
    return b.build([b.act(y, a_bits, signed)], feeds), feeds
