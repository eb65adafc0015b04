"""The ONNX Resize converter (modes nearest, linear and cubic, every coordinate transformation
mode the exporters emit except tf_crop_and_resize).

Shapes are static, so each resized axis becomes a gather with index (and, for linear and cubic,
weight) tables computed here in NumPy with ONNX's exact formulas: one `take` per axis for nearest,
two `take`s blended by constant weights for linear, four for cubic (N-D interpolation is separable).
"""
from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir
from tvm import relax

from mlpc.backends.tvm.context import LowerContext, const, dtype_of, require, shape_of
from mlpc.backends.tvm.registry import converter

logger = logging.getLogger(__name__)
op = relax.op

_COORD_MODES = ("half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric")
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def _resize_check(node: ir.Node, opset: int) -> str | None:
    attrs = node.attributes
    mode = attrs.get_string("mode", "nearest")
    coord = attrs.get_string("coordinate_transformation_mode", "half_pixel")
    if mode not in ("nearest", "linear", "cubic"):
        return f"Resize mode {mode!r} is not supported (nearest, linear and cubic are)"
    if coord not in _COORD_MODES:
        return f"Resize coordinate_transformation_mode {coord!r} is not supported"
    if mode == "nearest" and attrs.get_string("nearest_mode", "round_prefer_floor") not in _NEAREST_MODES:
        return f"Resize nearest_mode {attrs.get_string('nearest_mode')!r} is not supported"
    if attrs.get_int("antialias", 0):
        return "Resize with antialias=1 is not supported"
    if coord == "align_corners" and _fractional_length(node):
        # ONNX's reference divides by (length·scale − 1), onnxruntime by (output length − 1):
        # they disagree whenever length·scale is not an integer, so refuse rather than pick one.
        return ("Resize align_corners with scales whose input length × scale is not an integer is "
                "ambiguous (onnxruntime and the ONNX reference differ); give `sizes` instead")
    return None


def _fractional_length(node: ir.Node) -> bool:
    """True when constant `scales` (and no `sizes`) make some input length × scale non-integral."""
    sizes = node.inputs[3] if len(node.inputs) > 3 else None
    scales = node.inputs[2] if len(node.inputs) > 2 else None
    if sizes is not None or scales is None or scales.const_value is None:
        return False
    x = node.inputs[0]
    if x.shape is None or not all(isinstance(d, int) for d in x.shape.dims):
        return False
    values = scales.const_value.numpy().astype(np.float32).reshape(-1)
    axes = node.attributes.get_ints("axes", None)
    ndim = len(x.shape)
    axes = [a % ndim for a in axes] if axes else list(range(ndim))
    lengths = [np.float32(x.shape[a]) * s for a, s in zip(axes, values)]
    return any(length != np.floor(length) for length in lengths)


def source_coords(coord: str, out_size: int, in_size: int, scale: np.float32) -> np.ndarray:
    """Return the input coordinate (float32) of each output index along one axis, per ONNX."""
    x = np.arange(out_size, dtype=np.float32)
    half = np.float32(0.5)
    if coord == "half_pixel":
        return (x + half) / scale - half
    if coord == "pytorch_half_pixel":
        return (x + half) / scale - half if out_size > 1 else np.zeros_like(x)
    if coord == "align_corners":
        if out_size == 1:
            return np.zeros_like(x)
        return x * np.float32(in_size - 1) / np.float32(out_size - 1)
    if coord == "asymmetric":
        return x / scale
    # half_pixel_symmetric
    adjustment = np.float32(out_size) / (scale * np.float32(in_size))
    offset = np.float32(in_size) / 2 * (1 - adjustment)
    return offset + (x + half) / scale - half


def nearest_index(coords: np.ndarray, mode: str, in_size: int) -> np.ndarray:
    """Return the nearest input index of each coordinate under an ONNX nearest_mode, clamped."""
    if mode == "floor":
        idx = np.floor(coords)
    elif mode == "ceil":
        idx = np.ceil(coords)
    elif mode == "round_prefer_ceil":
        idx = np.floor(coords + np.float32(0.5))
    else:  # round_prefer_floor
        idx = np.ceil(coords - np.float32(0.5))
    return np.clip(idx, 0, in_size - 1).astype(np.int64)


def _sizes_and_scales(ctx: LowerContext, node: ir.Node, in_shape: tuple[int, ...]):
    ndim = len(in_shape)
    axes = node.attributes.get_ints("axes", None)
    axes = [a % ndim for a in axes] if axes else list(range(ndim))
    scales = ctx.const_input(node, 2, "scales")
    sizes = ctx.const_ints(node, 3, "sizes")
    out = list(in_shape)
    scale = [np.float32(1.0)] * ndim
    if sizes:
        policy = node.attributes.get_string("keep_aspect_ratio_policy", "stretch")
        if policy != "stretch":
            ratios = [np.float32(s) / np.float32(in_shape[a]) for s, a in zip(sizes, axes)]
            r = min(ratios) if policy == "not_larger" else max(ratios)
            sizes = [int(np.floor(r * np.float32(in_shape[a]) + np.float32(0.5))) for a in axes]
            for a in axes:
                scale[a] = r
        for s, a in zip(sizes, axes):
            out[a] = s
            if policy == "stretch":
                scale[a] = np.float32(s) / np.float32(in_shape[a])
    else:
        require(scales is not None and scales.size > 0, node, "Resize needs constant scales or sizes")
        for s, a in zip(scales.astype(np.float32).reshape(-1), axes):
            scale[a] = s
            out[a] = int(np.floor(np.float32(in_shape[a]) * s))
    return out, scale


def cubic_taps(coords: np.ndarray, in_size: int, a: float, exclude_outside: bool) -> tuple[np.ndarray, np.ndarray]:
    """Return the 4 input indices (clamped: edge values outside) and weights of each output
    coordinate under ONNX's cubic kernel with coefficient `a`; shapes (4, n_out)."""
    c = coords.astype(np.float64)
    base = np.floor(c)
    t = c - base
    dist = np.stack([t + 1, t, 1 - t, 2 - t])
    d = np.abs(dist)
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    weights = np.where(d <= 1, near, np.where(d < 2, far, 0.0))
    idx = base.astype(np.int64) + np.arange(-1, 3)[:, None]
    if exclude_outside:
        weights = np.where((idx < 0) | (idx >= in_size), 0.0, weights)
        weights = weights / weights.sum(axis=0, keepdims=True)
    return np.clip(idx, 0, in_size - 1), weights


@converter("Resize", check=_resize_check)
def _resize(ctx: LowerContext, node, inputs):
    x = inputs[0]
    in_shape = shape_of(x)
    attrs = node.attributes
    mode = attrs.get_string("mode", "nearest")
    coord = attrs.get_string("coordinate_transformation_mode", "half_pixel")
    nearest = attrs.get_string("nearest_mode", "round_prefer_floor")
    out, scale = _sizes_and_scales(ctx, node, in_shape)
    if mode in ("linear", "cubic"):
        require(dtype_of(x).startswith("float"), node, f"{mode} Resize needs a float input")
    cubic_a = attrs.get_float("cubic_coeff_a", -0.75)
    exclude = bool(attrs.get_int("exclude_outside", 0))
    for axis, (n_in, n_out) in enumerate(zip(in_shape, out)):
        coords = source_coords(coord, n_out, n_in, scale[axis])
        if n_out == n_in and np.array_equal(coords, np.arange(n_in, dtype=np.float32)):
            continue
        if mode == "nearest":
            x = op.take(x, const(nearest_index(coords, nearest, n_in)), axis=axis)
            continue
        bshape = [1] * len(in_shape)
        bshape[axis] = n_out
        if mode == "cubic":
            idx, weights = cubic_taps(coords, n_in, cubic_a, exclude)
            terms = [op.multiply(op.take(x, const(idx[k]), axis=axis),
                                 const(weights[k].astype(dtype_of(x)).reshape(bshape))) for k in range(4)]
            x = ctx.emit(op.add(op.add(terms[0], terms[1]), op.add(terms[2], terms[3])))
            continue
        c = np.clip(coords, 0, n_in - 1)
        lo = np.floor(c).astype(np.int64)
        hi = np.minimum(lo + 1, n_in - 1)
        w_hi = (c - lo).astype(dtype_of(x))
        a = op.multiply(op.take(x, const(lo), axis=axis), const((1 - w_hi).reshape(bshape)))
        b = op.multiply(op.take(x, const(hi), axis=axis), const(w_hi.reshape(bshape)))
        x = ctx.emit(op.add(a, b))
    return [x]
