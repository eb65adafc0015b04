"""layout: choose NCHW or NHWC per 2-D convolution, and cancel the transposes between them.

A convolution chosen channels-last becomes `Transpose(NCHW→NHWC) → mlpc::ConvNHWC →
Transpose(NHWC→NCHW)`; the transposes are then sunk through elementwise ops (ReLU, Clip, the
residual Add, bias and scale constants, which are re-laid out at compile time) and cancelled in
pairs, so a chain of channels-last convolutions keeps its activations in NHWC and transposes
only where it meets an op that stays NCHW (typically the network's input and its pooling head).
Every convolution the pass looked at carries `mlpc.layout` = NCHW | NHWC in its metadata
(`--dump-ir` lists it) and the choice is logged.

The cost rule, from measurements of mlpc's default CPU schedules (2 threads, AVX2, 2026-11): a
channels-last convolution vectorizes over output channels, a channels-first one over the output
row. Over the 22 distinct convolutions of the zoo's ResNet and MobileNet, NHWC took 0.15–0.78×
the NCHW time for the ResNet convolutions (strided ones: 0.15–0.38×, as an NCHW row then loads
with a stride) and 0.44–1.1× for the MobileNet ones; it lost (1.02–1.1×) only on three 1×1 or
depthwise convolutions of 16–96 channels at 8–16 pixels a row, within noise. So: NHWC when the
output channels fill whole vectors (`channels % lanes == 0`, lanes = vector bits / 32), else
NCHW. 1-D and 3-D convolutions stay channels-first. `ctx.options["layout"]` = "NCHW" or
"NHWC" forces one layout for every eligible convolution; CUDA targets are left alone.
"""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

from mlpc.errors import PassError
from mlpc.ir.ops.integer_conv import conv_geometry
from mlpc.pass_infra import Pass, PassContext, PassResult
from mlpc.passes.fuse import ELEMENTWISE

logger = logging.getLogger(__name__)

LAYOUT_KEY = "mlpc.layout"
TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)
# The elementwise ops (fuse.ELEMENTWISE) that transposes are moved through, as (domain, op).
# Left out: ops whose parameters follow a channel axis a transpose would move (Quantize/
# DequantizeLinear, mlpc's Requantize and IntegerAdd), and elementwise ops the layout tests do
# not cover yet.
NOT_SUNK = {
    ("", op) for op in ("QuantizeLinear", "DequantizeLinear", "Cast", "Ceil", "Floor", "Round", "Sign", "Gelu",
                        "Log", "Pow", "Reciprocal", "Softsign", "Equal", "Greater", "Less", "Not", "Where")
} | {("mlpc", "Requantize"), ("mlpc", "IntegerAdd")}
SINKABLE = ELEMENTWISE - NOT_SUNK
DEFAULT_LANES = 8


def _perm(node: ir.Node | None) -> tuple[int, ...] | None:
    if node is None or node.op_type != "Transpose" or node.domain not in ("", "ai.onnx"):
        return None
    attr = node.attributes.get("perm")
    return tuple(attr.as_ints()) if attr is not None else None


def _permuted(shape: ir.Shape | None, perm: tuple[int, ...]) -> ir.Shape | None:
    return None if shape is None else ir.Shape([shape.dims[p] for p in perm])


def choose_layout(node: ir.Node, lanes: int, forced: str | None = None) -> tuple[str, str] | None:
    """(layout, reason) for a Conv node, or None when it is not an eligible float 2-D conv with a
    constant weight and static input shape."""
    x, w = node.inputs[0], node.inputs[1] if len(node.inputs) > 1 else None
    if w is None or w.const_value is None or x.shape is None or len(x.shape) != 4:
        return None
    if not all(isinstance(d, int) for d in x.shape.dims) or x.dtype != ir.DataType.FLOAT:
        return None
    if forced is not None:
        return forced, f"forced by the layout option ({forced})"
    channels = int(w.shape[0])
    if channels % lanes == 0:
        return "NHWC", f"{channels} output channels fill {lanes}-lane vectors"
    return "NCHW", f"{channels} output channels do not fill {lanes}-lane vectors"


class _Rewriter:
    def __init__(self, graph: ir.Graph) -> None:
        self.graph = graph
        self.count = 0

    def _name(self, base: str) -> str:
        self.count += 1
        return f"{base}__layout{self.count}"

    def transpose(self, value: ir.Value, perm: tuple[int, ...]) -> ir.Node:
        node = ir.node("Transpose", [value], {"perm": list(perm)}, name=self._name("transpose"))
        out = node.outputs[0]
        out.name, out.dtype, out.shape = (
            self._name(value.name or "v"),
            value.dtype,
            _permuted(value.shape, perm),
        )
        return node

    def replace_output(self, old: ir.Value, new: ir.Value) -> None:
        """Route every use of `old` (graph outputs included, keeping the output's name) to `new`."""
        for i, out in enumerate(self.graph.outputs):
            if out is old:
                name = old.name
                old.name = self._name(name)
                new.name = name
                self.graph.outputs[i] = new
        ir.convenience.replace_all_uses_with(old, new)

    def constant(self, array: np.ndarray, like: ir.Value) -> ir.Value:
        value = ir.Value(
            name=self._name(like.name or "c"),
            shape=ir.Shape(array.shape),
            type=ir.TensorType(like.dtype),
            const_value=ir.tensor(array),
        )
        self.graph.register_initializer(value)
        return value

    def to_nhwc(self, conv: ir.Node, layout_reason: str) -> None:
        x, w = conv.inputs[0], conv.inputs[1]
        kernel = list(w.shape.dims[2:])
        attrs = {a.name: a.value for a in conv.attributes.values()}
        strides, dilations, pads, _ = conv_geometry(
            list(x.shape.dims[2:]), kernel, attrs, conv.name or "Conv"
        )
        t_in = self.transpose(x, TO_NHWC)
        new = ir.node(
            "ConvNHWC",
            [t_in.outputs[0], *conv.inputs[1:]],
            domain="mlpc",
            name=conv.name,
            attributes={
                "strides": strides,
                "dilations": dilations,
                "pads": pads,
                "group": conv.attributes.get_int("group", 1),
            },
        )
        new.metadata_props[LAYOUT_KEY] = "NHWC"
        old_out = conv.outputs[0]
        y = new.outputs[0]
        y.name, y.dtype, y.shape = self._name(old_out.name), old_out.dtype, _permuted(old_out.shape, TO_NHWC)
        t_out = self.transpose(y, TO_NCHW)
        t_out.outputs[0].shape = old_out.shape
        self.graph.insert_before(conv, [t_in, new, t_out])
        self.replace_output(old_out, t_out.outputs[0])
        self.graph.remove(conv, safe=True)
        logger.debug("layout: %s NHWC (%s)", conv.name, layout_reason)

    def sink(self, node: ir.Node) -> bool:
        """Move NHWC→NCHW transposes feeding elementwise `node` to its output."""
        if ("" if node.domain == "ai.onnx" else node.domain, node.op_type) not in SINKABLE:
            return False
        out = node.outputs[0]
        if len(node.outputs) != 1 or out.shape is None or len(out.shape) != 4:
            return False
        if not any(v is not None and _perm(v.producer()) == TO_NCHW for v in node.inputs):
            return False
        inputs: list[ir.Value | None] = []
        for value in node.inputs:
            if value is None:
                inputs.append(None)
            elif _perm(value.producer()) == TO_NCHW:
                inputs.append(value.producer().inputs[0])
            elif value.const_value is not None:
                arr = value.const_value.numpy()
                if arr.size == 1:
                    inputs.append(value)
                elif arr.ndim <= 4:
                    arr = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
                    inputs.append(self.constant(np.ascontiguousarray(arr.transpose(TO_NHWC)), value))
                else:
                    return False
            else:
                return False  # a computed NCHW operand: leave this op channels-first
        attrs = {a.name: a.value for a in node.attributes.values()}
        new = ir.node(node.op_type, inputs, attrs, domain=node.domain, name=node.name)
        y = new.outputs[0]
        y.name, y.dtype, y.shape = self._name(out.name), out.dtype, _permuted(out.shape, TO_NHWC)
        t_out = self.transpose(y, TO_NCHW)
        t_out.outputs[0].shape = out.shape
        self.graph.insert_before(node, [new, t_out])
        self.replace_output(out, t_out.outputs[0])
        self.graph.remove(node, safe=True)
        return True

    def cancel(self, node: ir.Node) -> bool:
        """Drop Transpose(Transpose(x, p), q) when q∘p is the identity."""
        outer, inner = _perm(node), _perm(node.inputs[0].producer()) if node.inputs else None
        if outer is None or inner is None or len(outer) != len(inner):
            return False
        if tuple(inner[p] for p in outer) != tuple(range(len(outer))):
            return False
        source = node.inputs[0].producer().inputs[0]
        if node.outputs[0] in self.graph.outputs and source in self.graph.inputs:
            return False  # the graph would return its input under another name
        self.replace_output(node.outputs[0], source)
        self.graph.remove(node, safe=True)
        return True

    def remove_dead_transposes(self) -> None:
        changed = True
        while changed:
            changed = False
            for node in list(self.graph):
                out = node.outputs[0] if node.outputs else None
                if (
                    _perm(node) is not None
                    and out is not None
                    and not out.uses()
                    and out not in self.graph.outputs
                ):
                    self.graph.remove(node, safe=True)
                    changed = True


class LayoutPass(Pass):
    """Run 2-D convolutions channels-last where the cost rule says so; cancel the transposes."""

    name = "layout"
    description = "NCHW or NHWC per 2-D conv (cost rule), transposes sunk and cancelled across chains"
    opt_level = 1

    def run(self, graph: ir.Graph, ctx: PassContext) -> PassResult:
        target = ctx.target
        if target is not None and getattr(target, "kind", "x86") not in ("x86", "arm"):
            return PassResult(graph, False)
        forced = ctx.options.get("layout")
        if forced not in (None, "auto", "NCHW", "NHWC"):
            raise PassError(f"pass 'layout': option layout={forced!r} is not one of auto, NCHW, NHWC")
        forced = None if forced == "auto" else forced
        bits = (getattr(target, "capabilities", None) or {}).get("vector_bits")
        lanes = max(bits // 32, 4) if bits else DEFAULT_LANES
        rewriter = _Rewriter(graph)
        modified, chosen = False, {"NCHW": 0, "NHWC": 0}
        for node in list(graph):
            if (
                node.op_type != "Conv"
                or node.domain not in ("", "ai.onnx")
                or LAYOUT_KEY in node.metadata_props
            ):
                continue
            choice = choose_layout(node, lanes, forced)
            if choice is None:
                continue
            layout, reason = choice
            chosen[layout] += 1
            modified = True
            if layout == "NHWC":
                rewriter.to_nhwc(node, reason)
            else:
                node.metadata_props[LAYOUT_KEY] = "NCHW"
                logger.debug("layout: %s NCHW (%s)", node.name, reason)
        changed = True
        while changed:
            changed = False
            for node in list(graph):
                if node.graph is graph and (rewriter.sink(node) or rewriter.cancel(node)):
                    changed = modified = True
        rewriter.remove_dead_transposes()
        if modified:
            left = sum(1 for n in graph if _perm(n) in (TO_NHWC, TO_NCHW))
            logger.info(
                "layout: %d conv NHWC, %d NCHW; %d layout transposes left",
                chosen["NHWC"],
                chosen["NCHW"],
                left,
            )
        return PassResult(graph, modified)
