"""State shared by converters while one graph is lowered: the BlockBuilder and constant values."""
from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np
import onnx_ir as ir
from tvm import relax

from mlpc.errors import LoweringError

logger = logging.getLogger(__name__)


def relax_name(name: str) -> str:
    """Return `name` made into a valid identifier for a Relax variable."""
    clean = re.sub(r"[^0-9A-Za-z_]", "_", name or "v")
    return clean if not clean[0].isdigit() else "v_" + clean


def numpy_dtype(dtype: ir.DataType) -> np.dtype:
    """Return the NumPy dtype of an onnx-ir DataType."""
    return np.dtype(dtype.numpy())


def relax_dtype(dtype: ir.DataType) -> str:
    """Return the Relax dtype string of an onnx-ir DataType (e.g. "float32", "bool").

    TVM tensors cannot hold 4-bit elements, so INT4/UINT4 values are carried in int8/uint8.
    """
    if dtype == ir.DataType.INT4:
        return "int8"
    if dtype == ir.DataType.UINT4:
        return "uint8"
    return str(numpy_dtype(dtype))


def node_label(node: ir.Node) -> str:
    """Return a short human label of a node: `name (Domain::Op)`."""
    op = f"{node.domain}::{node.op_type}" if node.domain else node.op_type
    return f"{node.name or '<unnamed>'} ({op})"


class LowerContext:
    """What a converter may use: `bb` (the Relax BlockBuilder), `opset`, `device` ("cpu" or
    "cuda": the kind of code the module is built into, for converters whose kernel layout
    depends on it), `float_dtype` (the build's float compute dtype, for kernels that choose
    their own precision such as weight-only DequantMatMul), `int8_dot` (the target's int8
    dot-product instruction, "sdot" or "pmaddubsw", from its capabilities; picks the CPU integer kernels'
    layout), and helpers that read constant operands, static shapes and dtypes of the node being
    lowered."""

    def __init__(self, bb: relax.BlockBuilder, opset: int, device: str = "cpu", float_dtype: str = "float32",
                 int8_dot: str | None = None) -> None:
        self.bb = bb
        self.opset = opset
        self.device = device
        self.float_dtype = float_dtype
        self.int8_dot = int8_dot
        # Values known at lowering time (initializers, Constant/Shape/Size outputs).
        self.known: dict[ir.Value, np.ndarray] = {}

    # -- constants ---------------------------------------------------------------------
    def const_of(self, value: ir.Value | None) -> np.ndarray | None:
        """Return the constant content of `value`, or None when it is not known at lowering time."""
        if value is None:
            return None
        if value in self.known:
            return self.known[value]
        if value.const_value is not None:
            arr = value.const_value.numpy()
            self.known[value] = arr
            return arr
        return None

    def const_input(self, node: ir.Node, index: int, what: str) -> np.ndarray | None:
        """Return input `index` of `node` as a NumPy array, None when the optional input is absent.

        Raises LoweringError when the input exists but is not a constant (shapes must be static).
        """
        if index >= len(node.inputs) or node.inputs[index] is None:
            return None
        arr = self.const_of(node.inputs[index])
        if arr is None:
            raise LoweringError(
                f"node {node_label(node)}: input {index} ({what}, value "
                f"{node.inputs[index].name!r}) must be a constant; mlpc lowers static shapes only — "
                "run constant folding / shape inference first or export with static shapes"
            )
        return arr

    def const_ints(self, node: ir.Node, index: int, what: str) -> list[int] | None:
        """Return a constant integer input as a list of Python ints (None when absent)."""
        arr = self.const_input(node, index, what)
        return None if arr is None else [int(v) for v in np.asarray(arr).reshape(-1)]

    def record(self, value: ir.Value, array: np.ndarray) -> relax.Expr:
        """Remember `value` is the constant `array` and return it as a relax constant."""
        self.known[value] = array
        return const(array)

    # -- static types ------------------------------------------------------------------
    @staticmethod
    def shape(value: ir.Value) -> tuple[int, ...]:
        """Return the static shape of `value` as ints (LoweringError when it is unknown or symbolic)."""
        if value.shape is None or not all(isinstance(d, int) for d in value.shape.dims):
            raise LoweringError(
                f"value {value.name!r} has no static shape ({value.shape}); run shape inference "
                "with concrete input shapes before lowering"
            )
        return tuple(int(d) for d in value.shape.dims)

    @staticmethod
    def dtype(value: ir.Value) -> str:
        """Return the Relax dtype string of `value`."""
        if value.dtype is None:
            raise LoweringError(f"value {value.name!r} has no dtype; run shape inference before lowering")
        return relax_dtype(value.dtype)

    def emit(self, expr: relax.Expr) -> relax.Var:
        """Emit `expr` as a binding in the current dataflow block and return its variable."""
        return self.bb.emit(expr)

    def emit_te(self, fn: Any, *args: Any, **kwargs: Any) -> relax.Var:
        """Emit a TE compute (e.g. a topi function) through the BlockBuilder."""
        return self.bb.emit_te(fn, *args, **kwargs)


def const(array: Any, dtype: str | None = None) -> relax.Expr:
    """Return a relax constant of `array` (a NumPy array or Python scalar) in `dtype` if given."""
    arr = np.asarray(array)
    if dtype is not None:
        arr = arr.astype(dtype)
    return relax.const(arr, str(arr.dtype))


def _tensor_type(expr: relax.Expr):
    ty = expr.ty
    if not isinstance(ty, relax.TensorType):
        # A call not yet bound has no type until the BlockBuilder normalizes it.
        ty = relax.BlockBuilder.current().normalize(expr).ty
    return ty


def shape_of(expr: relax.Expr) -> tuple[int, ...]:
    """Return the static shape of a Relax tensor expression as ints."""
    return tuple(int(d) for d in _tensor_type(expr).shape.values)


def dtype_of(expr: relax.Expr) -> str:
    """Return the dtype string of a Relax tensor expression."""
    return str(_tensor_type(expr).dtype)

def require(cond: bool, node: ir.Node, message: str) -> None:
    """Raise LoweringError naming `node` with `message` unless `cond` holds."""
    if not cond:
        raise LoweringError(f"node {node_label(node)}: {message}")
