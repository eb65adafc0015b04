"""The registry of `mlpc`-domain ops: one OpDef (schema, shape/dtype inference, NumPy kernel)
per op, registered with onnx so that onnx.checker and onnx shape inference accept the nodes.

    @mlpc_op(schema=SCHEMA, infer=infer_requantize)
    class Requantize(OpRun): ...
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import onnx
import onnx.defs
import onnx_ir as ir
from onnx.reference.op_run import OpRun

from mlpc.errors import IRVerificationError, MlpcError, UnsupportedOpError

logger = logging.getLogger(__name__)

MLPC_DOMAIN = "mlpc"
MLPC_OPSET_VERSION = 1

Dim = int | str | None


class TensorSig(NamedTuple):
    """A tensor's shape (tuple of int / symbolic name / None per dim; None = unknown rank)
    and element type (None = unknown)."""

    shape: tuple[Dim, ...] | None
    dtype: ir.DataType | None


# infer(inputs, attrs, where) -> outputs; `inputs[i]` is None for an absent optional input and
# `where` names the node for error messages.
SigInfer = Callable[[Sequence[TensorSig | None], dict[str, Any], str], list[TensorSig]]


@dataclass(frozen=True)
class OpDef:
    """One mlpc op: its onnx `schema`, signature-level inference `infer_sig`, and the
    `kernel` (an onnx.reference OpRun subclass usable as a ReferenceEvaluator new_op)."""

    name: str
    schema: onnx.defs.OpSchema
    infer_sig: SigInfer
    kernel: type[OpRun]

    def infer(self, node: ir.Node) -> list[TensorSig]:
        """Output (shape, dtype) of the onnx-ir `node`, from its inputs' types and shapes and
        its attributes. Raises IRVerificationError naming the node when they do not fit."""
        where = describe_node(node)
        inputs = [None if v is None else TensorSig(_ir_shape(v.shape), v.dtype) for v in node.inputs]
        attrs = {name: attr.value for name, attr in node.attributes.items()}
        return self.infer_sig(inputs, _with_defaults(self.schema, attrs), where)


_OPS: dict[str, OpDef] = {}


def describe_node(node: ir.Node) -> str:
    """A short label for messages: `Requantize node 'rq0'`."""
    return f"{node.op_type} node {node.name!r}"


def _ir_shape(shape: ir.Shape | None) -> tuple[Dim, ...] | None:
    if shape is None:
        return None
    return tuple(d if isinstance(d, int) else d.value for d in shape)


def _with_defaults(schema: onnx.defs.OpSchema, attrs: dict[str, Any]) -> dict[str, Any]:
    out = dict(attrs)
    for name, attr in schema.attributes.items():
        if name not in out and attr.default_value.type != 0:
            out[name] = onnx.helper.get_attribute_value(attr.default_value)
    for k, v in out.items():
        if isinstance(v, bytes):
            out[k] = v.decode()
        elif isinstance(v, tuple):
            out[k] = list(v)
    return out


def _sig_from_proto(t: onnx.TypeProto | None) -> TensorSig | None:
    if t is None or not t.HasField("tensor_type"):
        return None
    tt = t.tensor_type
    dtype = ir.DataType(tt.elem_type) if tt.elem_type else None
    if not tt.HasField("shape"):
        return TensorSig(None, dtype)
    dims: list[Dim] = []
    for d in tt.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return TensorSig(tuple(dims), dtype)


def _onnx_inference(op: OpDef) -> Callable[[Any], None]:
    """Adapt the op's signature inference to onnx's C++ shape inference callback."""

    def run(ctx: Any) -> None:
        inputs = [
            _sig_from_proto(ctx.get_input_type(i)) if ctx.has_input(i) else None
            for i in range(ctx.get_num_inputs())
        ]
        attrs = {}
        for name in op.schema.attributes:
            a = ctx.get_attribute(name)
            if a is not None:
                attrs[name] = onnx.helper.get_attribute_value(a)
        try:
            outs = op.infer_sig(inputs, _with_defaults(op.schema, attrs), ctx.get_display_name())
        except MlpcError as e:
            # A Python exception here escapes onnx even in non-strict mode; leave the outputs
            # untyped instead (mlpc.ir.verify reports the problem through OpDef.infer).
            logger.warning("onnx shape inference skipped %s", e)
            return
        for i, sig in enumerate(outs):
            if sig.dtype is None:
                continue
            ctx.set_output_type(i, onnx.helper.make_tensor_type_proto(int(sig.dtype), sig.shape))

    return run


def mlpc_op(schema: onnx.defs.OpSchema, infer: SigInfer) -> Callable[[type[OpRun]], type[OpRun]]:
    """Class decorator registering an mlpc op: `schema` goes to onnx.defs (with `infer` as its
    shape inference function), the decorated OpRun class becomes the reference kernel.

    The class name must equal the schema name. Returns the class unchanged apart from the
    `op_domain` and `op_schema` attributes onnx.reference reads.
    """

    def register(kernel: type[OpRun]) -> type[OpRun]:
        if kernel.__name__ != schema.name or schema.domain != MLPC_DOMAIN:
            raise ValueError(f"kernel {kernel.__name__} does not match schema {schema.domain}::{schema.name}")
        op = OpDef(schema.name, schema, infer, kernel)
        schema.set_type_and_shape_inference_function(_onnx_inference(op))
        try:
            onnx.defs.get_schema(schema.name, MLPC_OPSET_VERSION, MLPC_DOMAIN)
        except onnx.defs.SchemaError:
            onnx.defs.register_schema(schema)
        else:
            logger.debug("schema mlpc::%s already registered with onnx; keeping it", schema.name)
        kernel.op_domain = MLPC_DOMAIN
        kernel.op_schema = schema
        _OPS[schema.name] = op
        return kernel

    return register


def list_ops() -> list[str]:
    """Names of every registered mlpc op, sorted."""
    return sorted(_OPS)


def get_op(name: str) -> OpDef:
    """The OpDef of mlpc op `name`. Raises UnsupportedOpError listing the known ops."""
    try:
        return _OPS[name]
    except KeyError:
        raise UnsupportedOpError(f"unknown mlpc op {name!r}; known ops: {', '.join(list_ops())}") from None


def infer(node: ir.Node) -> list[TensorSig]:
    """Output (shape, dtype) of an mlpc-domain `node` (see OpDef.infer)."""
    if node.domain != MLPC_DOMAIN:
        raise UnsupportedOpError(f"{describe_node(node)} is in domain {node.domain!r}, not {MLPC_DOMAIN!r}")
    return get_op(node.op_type).infer(node)


def kernels() -> list[type[OpRun]]:
    """Every mlpc reference kernel, for ReferenceEvaluator(new_ops=...)."""
    return [op.kernel for op in _OPS.values()]


# Helpers shared by the ops' schemas and inference functions.


def formal(
    name: str, type_str: str, doc: str = "", optional: bool = False
) -> onnx.defs.OpSchema.FormalParameter:
    """An onnx schema input/output parameter."""
    option = onnx.defs.OpSchema.FormalParameterOption
    return onnx.defs.OpSchema.FormalParameter(
        name, type_str, doc, param_option=option.Optional if optional else option.Single
    )


INT8_TYPE_STRS = ["tensor(int8)", "tensor(uint8)"]
INT8_TYPES = [ir.DataType.INT8, ir.DataType.UINT8]


def mlpc_schema(
    name: str,
    doc: str,
    inputs: Sequence[onnx.defs.OpSchema.FormalParameter],
    outputs: Sequence[onnx.defs.OpSchema.FormalParameter],
    type_constraints: Sequence[tuple[str, list[str], str]] = (),
    attributes: Sequence[onnx.defs.OpSchema.Attribute] = (),
) -> onnx.defs.OpSchema:
    """An onnx OpSchema for op `name` in the mlpc domain at MLPC_OPSET_VERSION."""
    return onnx.defs.OpSchema(
        name,
        MLPC_DOMAIN,
        MLPC_OPSET_VERSION,
        doc=doc,
        inputs=list(inputs),
        outputs=list(outputs),
        type_constraints=list(type_constraints),
        attributes=list(attributes),
    )


def attr(
    name: str,
    doc: str,
    default: Any = None,
    kind: onnx.defs.OpSchema.AttrType = onnx.defs.OpSchema.AttrType.INT,
) -> onnx.defs.OpSchema.Attribute:
    """An optional schema attribute: with `default`, or of type `kind` without one."""
    if default is None:
        return onnx.defs.OpSchema.Attribute(name, kind, doc, required=False)
    return onnx.defs.OpSchema.Attribute(name, onnx.helper.make_attribute(name, default), doc)


def fail(where: str, message: str) -> IRVerificationError:
    """An IRVerificationError naming the node."""
    return IRVerificationError(f"{where}: {message}")


def check_dtype(where: str, what: str, sig: TensorSig | None, allowed: Sequence[ir.DataType]) -> None:
    """Raise when `sig`'s element type is known and not in `allowed`."""
    if sig is not None and sig.dtype is not None and sig.dtype not in allowed:
        names = ", ".join(t.name for t in allowed)
        raise fail(where, f"{what} has element type {sig.dtype.name}; expected {names}")


def same_dim(a: Dim, b: Dim) -> bool | None:
    """True/False when both dims are known (or the same symbol), None when undecidable."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    return True if a == b else None
