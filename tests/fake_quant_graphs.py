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
