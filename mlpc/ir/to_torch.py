"""An onnx-ir Graph as a `torch.fx.GraphModule`: how an ONNX model reaches PyTorch for Hessian
sensitivity (`mlpc.mixed.hessian`) and quantization-aware training (`mlpc.qat`).

Weight layers become real modules named after their nodes (Conv → nn.Conv1d/2d/3d, Gemm and
MatMul with a constant 2-D weight → nn.Linear, BatchNormalization → nn.BatchNorm, Relu → nn.ReLU,
MaxPool/AveragePool → nn.MaxPool/nn.AvgPool), so `mlpc.qat.prepare` can swap them for Brevitas
layers; everything else becomes torch functions. Other constants are buffers. Ops outside the
table (`SUPPORTED_OPS`) are refused together, by an UnsupportedOpError naming each node.

    >>> gm = to_torch(load_model("model.onnx").model)   # doctest: +SKIP
    >>> gm(torch.from_numpy(x))                        # same numbers as onnxruntime  # doctest: +SKIP
    >>> gm.onnx_names                                   # {"conv1": "conv1", "_0_Conv": "/0/Conv", ...}  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import operator
import re
from typing import Any

import numpy as np
import onnx_ir as ir

from mlpc.errors import UnsupportedOpError

logger = logging.getLogger(__name__)

SUPPORTED_OPS = (
    "Conv",
    "Gemm",
    "MatMul",
    "Relu",
    "LeakyRelu",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Add",
    "Sub",
    "Mul",
    "Div",
    "BatchNormalization",
    "Identity",
    "Dropout",
    "Transpose",
    "Concat",
    "Clip",
    "Squeeze",
    "Unsqueeze",
    "Erf",
    "Sqrt",
    "Pow",
    "ReduceMean",
)


def _onnx_flatten(x: Any, axis: int) -> Any:
    """ONNX Flatten: a 2-D view, the dimensions before `axis` in the first."""
    if axis < 0:
        axis += x.dim()
    lead = 1
    for d in x.shape[:axis]:
        lead *= d
    return x.reshape(lead, -1)


def _onnx_reshape(x: Any, shape: tuple[int, ...], allowzero: int = 0) -> Any:
    """ONNX Reshape to a constant shape (0 copies the input dimension unless `allowzero`). A
    leading 1 in the target shape follows the input's batch: batch-1 exports (Reshape to
    [1, -1]) then run on batches, which Hessian sensitivity and QAT need."""
    dims = [x.shape[i] if (d == 0 and not allowzero) else d for i, d in enumerate(shape)]
    if dims and dims[0] == 1 and x.dim() > 0 and x.shape[0] != 1:
        dims[0] = x.shape[0]
    return x.reshape(dims)


def _name(text: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", text).strip("_") or "node"
    if base[0].isdigit():
        base = f"n_{base}"
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _ints(node: ir.Node, key: str, default: Any = None) -> Any:
    attr = node.attributes.get(key)
    return list(attr.value) if attr is not None else default


def _const(value: ir.Value | None) -> np.ndarray | None:
    if value is None or value.const_value is None:
        return None
    return value.const_value.numpy()


def _symmetric_pads(pads: list[int], n: int) -> tuple[list[int], list[int] | None]:
    """(per-dim padding for the module, F.pad list when begin != end)."""
    begin, end = pads[:n], pads[n:]
    if begin == end:
        return begin, None
    flat: list[int] = []
    for b, e in zip(reversed(begin), reversed(end)):
        flat += [b, e]
    return [0] * n, flat


class _Converter:
    def __init__(self, graph: ir.Graph) -> None:
        import torch
        import torch.fx as fx

        self.torch = torch
        self.graph = graph
        self.root = torch.nn.Module()
        self.fx = fx.Graph()
        self.env: dict[str, Any] = {}
        self.taken: set[str] = set()
        self.onnx_names: dict[str, str] = {}

    def _tensor(self, arr: np.ndarray) -> Any:
        return self.torch.from_numpy(np.array(arr, copy=True))

    def value(self, v: ir.Value) -> Any:
        if v.name in self.env:
            return self.env[v.name]
        arr = _const(v)
        if arr is None:
            raise UnsupportedOpError(f"value {v.name!r} has no producer and is not a constant")
        name = _name(f"const_{v.name}", self.taken)
        self.root.register_buffer(name, self._tensor(arr))
        node = self.fx.get_attr(name)
        self.env[v.name] = node
        return node

    def module(self, node: ir.Node, mod: Any, args: list[Any]) -> Any:
        name = _name(node.name or node.op_type, self.taken)
        self.root.add_module(name, mod)
        self.onnx_names[name] = node.name or name
        return self.fx.call_module(name, tuple(args))

    def call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self.fx.call_function(fn, args, kwargs)

    def convert(self) -> Any:
        import torch.fx as fx

        bad = [
            f"{n.name or '?'} ({n.domain + '::' if n.domain not in ('', 'ai.onnx') else ''}{n.op_type})"
            for n in self.graph
            if n.op_type not in SUPPORTED_OPS or n.domain not in ("", "ai.onnx")
        ]
        if bad:
            raise UnsupportedOpError(
                f"cannot convert to torch.fx: {len(bad)} node(s) use unsupported ops: {', '.join(bad[:20])}"
                f"{' ...' if len(bad) > 20 else ''}; supported: {', '.join(SUPPORTED_OPS)}"
            )
        for v in self.graph.inputs:
            if v.const_value is None:
                self.env[v.name] = self.fx.placeholder(_name(v.name, self.taken))
        for node in self.graph:
            outs = getattr(self, f"op_{node.op_type}")(node)
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for v, out in zip(node.outputs, outs):
                self.env[v.name] = out
        results = [self.env[v.name] if v.name in self.env else self.value(v) for v in self.graph.outputs]
        self.fx.output(results[0] if len(results) == 1 else tuple(results))
        gm = fx.GraphModule(self.root, self.fx, class_name="OnnxModule")
        gm.onnx_names = dict(self.onnx_names)
        gm.output_names = [v.name for v in self.graph.outputs]
        gm.input_names = [v.name for v in self.graph.inputs if v.const_value is None]
        return gm.eval()

    # --- layers ---------------------------------------------------------------------------
    def op_Conv(self, node: ir.Node) -> Any:
        nn = self.torch.nn
        w = _const(node.inputs[1])
        if w is None:
            raise UnsupportedOpError(
                f"node {node.name!r}: Conv with a non-constant weight cannot be converted"
            )
        n = w.ndim - 2
        if n not in (1, 2, 3):
            raise UnsupportedOpError(f"node {node.name!r}: {n}-D Conv is not supported")
        b = _const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        group = node.attributes.get_int("group", 1)
        x = self.value(node.inputs[0])
        from mlpc.quant.layers import _conv_pads

        spatial = tuple(node.inputs[0].shape.dims[2:]) if node.inputs[0].shape is not None else (0,) * n
        strides = _ints(node, "strides", [1] * n)
        dilations = _ints(node, "dilations", [1] * n)
        pads = _conv_pads(node, spatial, tuple(w.shape[2:]), strides, dilations)
        padding, extra = _symmetric_pads(pads, n)
        if extra is not None:
            x = self.call(self.torch.nn.functional.pad, x, extra)
        cls = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[n - 1]
        mod = cls(
            w.shape[1] * group,
            w.shape[0],
            tuple(w.shape[2:]),
            stride=tuple(strides),
            padding=tuple(padding),
            dilation=tuple(dilations),
            groups=group,
            bias=b is not None,
        )
        with self.torch.no_grad():
            mod.weight.copy_(self._tensor(w))
            if b is not None:
                mod.bias.copy_(self._tensor(b))
        return self.module(node, mod, [x])

    def _linear(self, node: ir.Node, x: Any, w_out_in: np.ndarray, b: np.ndarray | None) -> Any:
        mod = self.torch.nn.Linear(w_out_in.shape[1], w_out_in.shape[0], bias=b is not None)
        with self.torch.no_grad():
            mod.weight.copy_(self._tensor(np.ascontiguousarray(w_out_in)))
            if b is not None:
                mod.bias.copy_(self._tensor(b.reshape(-1)))
        return self.module(node, mod, [x])

    def op_Gemm(self, node: ir.Node) -> Any:
        a = node.attributes
        alpha, beta = a.get_float("alpha", 1.0), a.get_float("beta", 1.0)
        trans_a, trans_b = a.get_int("transA", 0), a.get_int("transB", 0)
        w = _const(node.inputs[1])
        c = node.inputs[2] if len(node.inputs) > 2 else None
        cb = _const(c)
        if (
            w is not None
            and alpha == 1.0
            and beta == 1.0
            and not trans_a
            and (c is None or (cb is not None and cb.ndim <= 1))
        ):
            x = self.value(node.inputs[0])
            bias = (
                None if cb is None else np.broadcast_to(cb, (w.shape[0] if trans_b else w.shape[1],)).copy()
            )
            return self._linear(node, x, w if trans_b else w.T, bias)
        x, y = self.value(node.inputs[0]), self.value(node.inputs[1])
        if trans_a:
            x = self.call(self.torch.transpose, x, 0, 1)
        if trans_b:
            y = self.call(self.torch.transpose, y, 0, 1)
        out = self.call(self.torch.matmul, x, y)
        if alpha != 1.0:
            out = self.call(operator.mul, out, alpha)
        if c is not None:
            cv = self.value(c)
            if beta != 1.0:
                cv = self.call(operator.mul, cv, beta)
            out = self.call(operator.add, out, cv)
        return out

    def op_MatMul(self, node: ir.Node) -> Any:
        w = _const(node.inputs[1])
        if w is not None and w.ndim == 2:
            return self._linear(node, self.value(node.inputs[0]), w.T, None)
        return self.call(self.torch.matmul, self.value(node.inputs[0]), self.value(node.inputs[1]))

    def op_BatchNormalization(self, node: ir.Node) -> Any:
        scale, bias, mean, var = (_const(v) for v in node.inputs[1:5])
        if any(t is None for t in (scale, bias, mean, var)):
            raise UnsupportedOpError(f"node {node.name!r}: BatchNormalization with non-constant statistics")
        rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else 4
        cls = {
            2: self.torch.nn.BatchNorm1d,
            3: self.torch.nn.BatchNorm1d,
            4: self.torch.nn.BatchNorm2d,
            5: self.torch.nn.BatchNorm3d,
        }.get(rank, self.torch.nn.BatchNorm2d)
        mod = cls(
            scale.shape[0],
            eps=node.attributes.get_float("epsilon", 1e-5),
            momentum=1.0 - node.attributes.get_float("momentum", 0.9),
        )
        with self.torch.no_grad():
            for t, arr in (
                (mod.weight, scale),
                (mod.bias, bias),
                (mod.running_mean, mean),
                (mod.running_var, var),
            ):
                t.copy_(self._tensor(arr))
        return self.module(node, mod.eval(), [self.value(node.inputs[0])])

    def op_Relu(self, node: ir.Node) -> Any:
        return self.module(node, self.torch.nn.ReLU(), [self.value(node.inputs[0])])

    def _pool(self, node: ir.Node, kind: str) -> Any:
        nn = self.torch.nn
        kernel = _ints(node, "kernel_shape")
        n = len(kernel)
        pads = _ints(node, "pads", [0] * (2 * n))
        if node.attributes.get_string("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise UnsupportedOpError(
                f"node {node.name!r}: {node.op_type} with auto_pad SAME is not supported"
            )
        padding, extra = _symmetric_pads(pads, n)
        if extra is not None:
            raise UnsupportedOpError(
                f"node {node.name!r}: {node.op_type} with asymmetric pads is not supported"
            )
        strides = _ints(node, "strides", [1] * n)
        ceil = bool(node.attributes.get_int("ceil_mode", 0))
        if kind == "max":
            cls = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)[n - 1]
            mod = cls(kernel, strides, padding, dilation=_ints(node, "dilations", [1] * n), ceil_mode=ceil)
        else:
            cls = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)[n - 1]
            mod = cls(
                kernel,
                strides,
                padding,
                ceil_mode=ceil,
                count_include_pad=bool(node.attributes.get_int("count_include_pad", 0)),
            )
        return self.module(node, mod, [self.value(node.inputs[0])])

    def op_MaxPool(self, node: ir.Node) -> Any:
        if len(node.outputs) > 1 and node.outputs[1] is not None and node.outputs[1].uses():
            raise UnsupportedOpError(f"node {node.name!r}: MaxPool's Indices output is not supported")
        return self._pool(node, "max")

    def op_AveragePool(self, node: ir.Node) -> Any:
        return self._pool(node, "avg")

    # --- functions ------------------------------------------------------------------------
    def op_GlobalAveragePool(self, node: ir.Node) -> Any:
        rank = len(node.inputs[0].shape) if node.inputs[0].shape is not None else 4
        return self.call(self.torch.mean, self.value(node.inputs[0]), dim=tuple(range(2, rank)), keepdim=True)

    def op_Flatten(self, node: ir.Node) -> Any:
        return self.call(_onnx_flatten, self.value(node.inputs[0]), node.attributes.get_int("axis", 1))

    def op_Reshape(self, node: ir.Node) -> Any:
        shape = _const(node.inputs[1])
        if shape is None:
            raise UnsupportedOpError(
                f"node {node.name!r}: Reshape to a shape computed at run time (give static input shapes)"
            )
        return self.call(
            _onnx_reshape,
            self.value(node.inputs[0]),
            tuple(int(d) for d in shape),
            node.attributes.get_int("allowzero", 0),
        )

    def _binary(self, node: ir.Node, fn: Any) -> Any:
        return self.call(fn, self.value(node.inputs[0]), self.value(node.inputs[1]))

    def op_Add(self, node: ir.Node) -> Any:
        return self._binary(node, operator.add)

    def op_Sub(self, node: ir.Node) -> Any:
        return self._binary(node, operator.sub)

    def op_Mul(self, node: ir.Node) -> Any:
        return self._binary(node, operator.mul)

    def op_Div(self, node: ir.Node) -> Any:
        return self._binary(node, operator.truediv)

    def op_Pow(self, node: ir.Node) -> Any:
        return self._binary(node, self.torch.pow)

    def op_Sqrt(self, node: ir.Node) -> Any:
        return self.call(self.torch.sqrt, self.value(node.inputs[0]))

    def op_Erf(self, node: ir.Node) -> Any:
        return self.call(self.torch.erf, self.value(node.inputs[0]))

    def op_Sigmoid(self, node: ir.Node) -> Any:
        return self.call(self.torch.sigmoid, self.value(node.inputs[0]))

    def op_Tanh(self, node: ir.Node) -> Any:
        return self.call(self.torch.tanh, self.value(node.inputs[0]))

    def op_LeakyRelu(self, node: ir.Node) -> Any:
        return self.call(
            self.torch.nn.functional.leaky_relu,
            self.value(node.inputs[0]),
            node.attributes.get_float("alpha", 0.01),
        )

    def op_Softmax(self, node: ir.Node) -> Any:
        return self.call(self.torch.softmax, self.value(node.inputs[0]), node.attributes.get_int("axis", -1))

    def op_Identity(self, node: ir.Node) -> Any:
        return self.value(node.inputs[0])

    def op_Dropout(self, node: ir.Node) -> Any:
        return self.value(node.inputs[0])

    def op_Transpose(self, node: ir.Node) -> Any:
        perm = _ints(node, "perm")
        if perm is None:
            rank = len(node.inputs[0].shape)
            perm = list(reversed(range(rank)))
        return self.call(self.torch.permute, self.value(node.inputs[0]), tuple(perm))

    def op_Concat(self, node: ir.Node) -> Any:
        return self.call(
            self.torch.cat, [self.value(v) for v in node.inputs], node.attributes.get_int("axis", 0)
        )

    def op_Clip(self, node: ir.Node) -> Any:
        lo = _const(node.inputs[1]) if len(node.inputs) > 1 and node.inputs[1] is not None else None
        hi = _const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] is not None else None
        return self.call(
            self.torch.clamp,
            self.value(node.inputs[0]),
            None if lo is None else float(lo),
            None if hi is None else float(hi),
        )

    def _axes(self, node: ir.Node) -> list[int] | None:
        if len(node.inputs) > 1 and node.inputs[1] is not None:
            axes = _const(node.inputs[1])
            if axes is None:
                raise UnsupportedOpError(f"node {node.name!r}: {node.op_type} with run-time axes")
            return [int(a) for a in np.atleast_1d(axes)]
        return _ints(node, "axes")

    def op_Squeeze(self, node: ir.Node) -> Any:
        axes = self._axes(node)
        x = self.value(node.inputs[0])
        return self.call(self.torch.squeeze, x, tuple(axes)) if axes else self.call(self.torch.squeeze, x)

    def op_Unsqueeze(self, node: ir.Node) -> Any:
        out = self.value(node.inputs[0])
        rank = len(node.inputs[0].shape) + len(self._axes(node))
        for axis in sorted(a % rank for a in self._axes(node)):
            out = self.call(self.torch.unsqueeze, out, axis)
        return out

    def op_ReduceMean(self, node: ir.Node) -> Any:
        axes = self._axes(node)
        keep = bool(node.attributes.get_int("keepdims", 1))
        x = self.value(node.inputs[0])
        if not axes:
            return self.call(self.torch.mean, x)
        return self.call(self.torch.mean, x, dim=tuple(axes), keepdim=keep)


def to_torch(model: Any) -> Any:
    """Convert an onnx-ir Model or Graph (or anything `mlpc.load_model` takes) with static
    shapes to a `torch.fx.GraphModule` in eval mode. `gm.onnx_names` maps module names to
    node names; `gm.input_names`/`gm.output_names` keep the graph's. UnsupportedOpError names
    every node whose op is not in SUPPORTED_OPS."""
    if isinstance(model, ir.Graph):
        graph = model
    elif isinstance(model, ir.Model):
        graph = model.graph
    else:
        from mlpc.frontend import load_model
        from mlpc.pass_infra import PassContext
        from mlpc.passes.canonicalize import CanonicalizePass

        graph = load_model(model).model.graph
        CanonicalizePass()(graph, PassContext())
    gm = _Converter(graph).convert()
    logger.info("converted %d nodes to torch.fx (%d modules)", len(graph), len(gm.onnx_names))
    return gm
