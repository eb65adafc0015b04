"""Converters for shape and index manipulation: Reshape, Transpose, Concat, Split, Slice, Gather,
Pad, Tile, Expand, Squeeze/Unsqueeze, and the ops folded to constants (Shape, Size, Range, ...)."""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from tvm import relax

from mlpc.backends.tvm.context import LowerContext, const, dtype_of, node_label, numpy_dtype, require, shape_of
from mlpc.backends.tvm.registry import converter
from mlpc.errors import UnsupportedOpError

logger = logging.getLogger(__name__)
op = relax.op


def _axes_operand(ctx: LowerContext, node: ir.Node, input_since: int, index: int = 1) -> list[int] | None:
    """Return the `axes` of a node: an attribute before opset `input_since`, an input from it on."""
    if ctx.opset < input_since:
        axes = node.attributes.get_ints("axes", None)
        return None if axes is None else list(axes)
    return ctx.const_ints(node, index, "axes")


@converter("Constant")
def _constant(ctx: LowerContext, node, inputs):
    attrs = node.attributes
    if "value" in attrs:
        arr = attrs.get_tensor("value").numpy()
    elif "value_float" in attrs:
        arr = np.array(attrs.get_float("value_float"), dtype=np.float32)
    elif "value_floats" in attrs:
        arr = np.array(list(attrs["value_floats"].as_floats()), dtype=np.float32)
    elif "value_int" in attrs:
        arr = np.array(attrs.get_int("value_int"), dtype=np.int64)
    elif "value_ints" in attrs:
        arr = np.array(list(attrs.get_ints("value_ints")), dtype=np.int64)
    else:
        require(False, node, "only tensor, float(s) and int(s) Constant values are supported")
    ctx.known[node.outputs[0]] = arr
    return [const(arr) if arr.dtype.kind in "biuf" else None]


@converter("Shape")
def _shape(ctx: LowerContext, node, inputs):
    dims = ctx.shape(node.inputs[0])
    start = node.attributes.get_int("start", 0)
    end = node.attributes.get_int("end", None)
    return [ctx.record(node.outputs[0], np.array(dims[start:end], dtype=np.int64))]


@converter("Size")
def _size(ctx: LowerContext, node, inputs):
    return [ctx.record(node.outputs[0], np.array(int(np.prod(ctx.shape(node.inputs[0]))), dtype=np.int64))]


@converter("ConstantOfShape")
def _constant_of_shape(ctx: LowerContext, node, inputs):
    shape = ctx.const_ints(node, 0, "shape")
    value = node.attributes.get_tensor("value", None)
    fill = value.numpy().reshape(-1) if value is not None else np.zeros(1, dtype=np.float32)
    return [ctx.record(node.outputs[0], np.full(shape, fill[0], dtype=fill.dtype))]


@converter("Range")
def _range(ctx: LowerContext, node, inputs):
    start, limit, delta = (ctx.const_input(node, i, n) for i, n in enumerate(("start", "limit", "delta")))
    arr = np.arange(start, limit, delta).astype(np.asarray(start).dtype)
    return [ctx.record(node.outputs[0], arr)]


@converter("Reshape")
def _reshape(ctx: LowerContext, node, inputs):
    x = inputs[0]
    in_shape = shape_of(x)
    shape = ctx.const_ints(node, 1, "shape")
    allowzero = node.attributes.get_int("allowzero", 0)
    out = [in_shape[i] if (d == 0 and not allowzero) else d for i, d in enumerate(shape)]
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        require(known > 0, node, f"cannot infer -1 in shape {shape} for input shape {in_shape}")
        out[out.index(-1)] = int(np.prod(in_shape)) // known
    require(int(np.prod(out)) == int(np.prod(in_shape)), node, f"cannot reshape {in_shape} to {shape}")
    if allowzero and 0 in out:
        # relax's reshape reads a 0 in the target shape as "copy this dim", and zero-size values
        # do not survive TVM's constant serialization: refuse rather than return a wrong shape.
        raise UnsupportedOpError(f"node {node_label(node)}: Reshape with allowzero=1 to a zero-size shape "
                                 f"{out} is not supported")
    return [op.reshape(x, out)]


@converter("Flatten")
def _flatten(ctx, node, inputs):
    shape = shape_of(inputs[0])
    axis = node.attributes.get_int("axis", 1)
    axis = axis + len(shape) if axis < 0 else axis
    return [op.reshape(inputs[0], [int(np.prod(shape[:axis])), int(np.prod(shape[axis:]))])]


@converter("Transpose")
def _transpose(ctx, node, inputs):
    ndim = len(shape_of(inputs[0]))
    perm = node.attributes.get_ints("perm", list(range(ndim))[::-1])
    return [op.permute_dims(inputs[0], list(perm))]


@converter("Concat")
def _concat(ctx, node, inputs):
    parts = [x for x in inputs if x is not None and 0 not in shape_of(x)]
    return [op.concat(parts, axis=node.attributes.get_int("axis"))]


@converter("Split")
def _split(ctx: LowerContext, node, inputs):
    x = inputs[0]
    shape = shape_of(x)
    axis = node.attributes.get_int("axis", 0) % len(shape)
    n_out = len(node.outputs)
    if ctx.opset >= 13:
        sizes = ctx.const_ints(node, 1, "split")
    else:
        sizes = node.attributes.get_ints("split", None)
    if sizes is None:
        num = node.attributes.get_int("num_outputs", n_out)
        chunk = -(-shape[axis] // num)
        sizes = [min(chunk, shape[axis] - i * chunk) for i in range(num)]
    require(sum(sizes) == shape[axis], node, f"split sizes {sizes} do not add up to {shape[axis]}")
    if 0 in sizes:  # TVM's split needs strictly increasing indices: slice each part instead
        starts = [0, *np.cumsum(sizes)[:-1].tolist()]
        return [op.strided_slice(x, [axis], [int(b)], [int(b) + n]) if n else
                op.zeros([n if i == axis else d for i, d in enumerate(shape)], dtype_of(x))
                for b, n in zip(starts, sizes)]
    indices = list(np.cumsum(sizes)[:-1].tolist())
    parts = ctx.emit(op.split(x, indices, axis=axis))
    return [relax.TupleGetItem(parts, i) for i in range(len(sizes))]


def _take_indices(x: relax.Expr, indices: np.ndarray, axis: int) -> relax.Expr:
    """Gather `indices` (a static index list) along `axis`, as a strided slice when it is one."""
    if len(indices) > 0:
        step = int(indices[1] - indices[0]) if len(indices) > 1 else 1
        if step > 0 and np.array_equal(indices, indices[0] + step * np.arange(len(indices))):
            end = int(indices[-1]) + 1
            return op.strided_slice(x, [axis], [int(indices[0])], [end], [step])
    return op.take(x, const(indices.astype(np.int64)), axis=axis)


@converter("Slice")
def _slice(ctx: LowerContext, node, inputs):
    x = inputs[0]
    shape = shape_of(x)
    starts = ctx.const_ints(node, 1, "starts")
    ends = ctx.const_ints(node, 2, "ends")
    axes = ctx.const_ints(node, 3, "axes") or list(range(len(starts)))
    steps = ctx.const_ints(node, 4, "steps") or [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= len(shape)
        require(step != 0, node, "a Slice step must not be 0")
        # Python slices clamp exactly as ONNX does (INT64_MAX/MIN included).
        indices = np.arange(shape[axis])[slice(start, end, step)]
        if len(indices) == shape[axis] and step > 0:
            continue
        x = _take_indices(x, indices, axis)
    return [x]


@converter("Gather")
def _gather(ctx: LowerContext, node, inputs):
    x, indices = inputs
    shape = shape_of(x)
    axis = node.attributes.get_int("axis", 0) % len(shape)
    arr = ctx.const_of(node.inputs[1])
    if arr is not None:
        indices = const(np.where(arr < 0, arr + shape[axis], arr).astype(np.int64))
    else:
        dim = const(np.array(shape[axis], dtype=dtype_of(indices)))
        zero = const(np.array(0, dtype=dtype_of(indices)))
        indices = op.where(op.less(indices, zero), op.add(indices, dim), indices)
    return [op.take(x, indices, axis=axis)]


@converter("GatherElements")
def _gather_elements(ctx, node, inputs):
    x, indices = inputs
    axis = node.attributes.get_int("axis", 0) % len(shape_of(x))
    dim = const(np.array(shape_of(x)[axis], dtype=dtype_of(indices)))
    zero = const(np.array(0, dtype=dtype_of(indices)))
    indices = op.where(op.less(indices, zero), op.add(indices, dim), indices)
    return [op.gather_elements(x, indices, axis=axis)]


@converter("Squeeze")
def _squeeze(ctx: LowerContext, node, inputs):
    shape = shape_of(inputs[0])
    axes = _axes_operand(ctx, node, 13)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = {a % len(shape) for a in axes}
    return [op.reshape(inputs[0], [d for i, d in enumerate(shape) if i not in axes])]


@converter("Unsqueeze")
def _unsqueeze(ctx: LowerContext, node, inputs):
    shape = list(shape_of(inputs[0]))
    axes = _axes_operand(ctx, node, 13)
    require(axes is not None, node, "Unsqueeze needs axes")
    rank = len(shape) + len(axes)
    for a in sorted(a % rank for a in axes):
        shape.insert(a, 1)
    return [op.reshape(inputs[0], shape)]


@converter("Expand")
def _expand(ctx: LowerContext, node, inputs):
    shape = ctx.const_ints(node, 1, "shape")
    out = np.broadcast_shapes(shape_of(inputs[0]), tuple(shape))
    return [op.broadcast_to(inputs[0], list(out))]


@converter("Tile")
def _tile(ctx: LowerContext, node, inputs):
    return [op.tile(inputs[0], ctx.const_ints(node, 1, "repeats"))]


_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _pad_check(node: ir.Node, opset: int) -> str | None:
    mode = node.attributes.get_string("mode", "constant")
    return None if mode in _PAD_MODES else f"Pad mode {mode!r} is not supported"


@converter("Pad", check=_pad_check)
def _pad(ctx: LowerContext, node, inputs):
    x = inputs[0]
    shape = shape_of(x)
    ndim = len(shape)
    pads = ctx.const_ints(node, 1, "pads")
    value = ctx.const_input(node, 2, "constant_value")
    axes = ctx.const_ints(node, 3, "axes") if ctx.opset >= 18 else None
    axes = [a % ndim for a in axes] if axes else list(range(ndim))
    before, after = [0] * ndim, [0] * ndim
    for i, a in enumerate(axes):
        before[a], after[a] = pads[i], pads[i + len(axes)]
    # Negative pads crop: slice first, then pad the rest.
    for a in range(ndim):
        if before[a] < 0 or after[a] < 0:
            lo, hi = max(0, -before[a]), shape[a] - max(0, -after[a])
            x = op.strided_slice(x, [a], [lo], [hi])
    width = [p for a in range(ndim) for p in (max(0, before[a]), max(0, after[a]))]
    if not any(width):
        return [x]
    mode = _PAD_MODES[node.attributes.get_string("mode", "constant")]
    fill = float(np.asarray(value).reshape(-1)[0]) if value is not None and np.size(value) else 0.0
    return [op.nn.pad(x, width, pad_mode=mode, pad_value=fill)]


@converter("CumSum")
def _cumsum(ctx: LowerContext, node, inputs):
    x = inputs[0]
    axis = ctx.const_ints(node, 1, "axis")[0] % len(shape_of(x))
    reverse = node.attributes.get_int("reverse", 0)
    exclusive = bool(node.attributes.get_int("exclusive", 0))
    if reverse:
        x = op.flip(x, axis)
    y = op.cumsum(x, axis=axis, dtype=dtype_of(x), exclusive=exclusive)
    return [op.flip(y, axis) if reverse else y]


@converter("EyeLike")
def _eye_like(ctx: LowerContext, node, inputs):
    rows, cols = shape_of(inputs[0])
    dtype = node.attributes.get_int("dtype", None)
    np_dtype = numpy_dtype(ir.DataType(dtype)) if dtype is not None else np.dtype(dtype_of(inputs[0]))
    arr = np.eye(rows, cols, k=node.attributes.get_int("k", 0), dtype=np_dtype)
    return [ctx.record(node.outputs[0], arr)]
