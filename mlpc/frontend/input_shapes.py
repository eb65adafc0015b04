"""Resolve symbolic input dimensions from user-given shapes (`--input-shape NAME=1x3x224x224`)."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import onnx_ir as ir

from mlpc.errors import InputError
from mlpc.frontend.onnx_loader import MAX_TENSOR_BYTES, tensor_bytes

logger = logging.getLogger(__name__)


def parse_input_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse `NAME=1x3x224x224` (or `NAME=1,3,224,224`) into (name, dims).

        >>> parse_input_shape("x=1x3x32x32")
        ('x', (1, 3, 32, 32))
    """
    name, sep, dims_text = text.rpartition("=")
    if not sep or not name or not dims_text:
        raise InputError(f"--input-shape {text!r}: expected NAME=DIMS, e.g. input=1x3x224x224")
    parts = dims_text.replace(",", "x").split("x")
    try:
        dims = tuple(int(p) for p in parts)
    except ValueError:
        raise InputError(
            f"--input-shape {text!r}: dimensions must be integers separated by 'x', e.g. 1x3x224x224"
        ) from None
    if any(d <= 0 for d in dims):
        raise InputError(f"--input-shape {text!r}: every dimension must be positive")
    return name, dims


def resolve_input_shapes(
    model: ir.Model, input_shapes: Mapping[str, Sequence[int]] | None, source: str = "the model"
) -> bool:
    """Fix every graph input's shape: symbolic dims from `input_shapes`, static dims checked.

    Returns True when a shape changed. Raises InputError naming the input and dimension when a
    symbolic dimension has no given size, or a given shape names no input or contradicts the model.
    """
    input_shapes = dict(input_shapes or {})
    by_name = {v.name: v for v in model.graph.inputs}
    unknown = [n for n in input_shapes if n not in by_name]
    if unknown:
        raise InputError(
            f"--input-shape names {', '.join(map(repr, unknown))}, but {source} has inputs "
            f"{', '.join(map(repr, by_name))}"
        )
    changed = False
    for value in model.graph.inputs:
        given = input_shapes.get(value.name)
        shape = value.shape
        if shape is None and given is None:
            raise InputError(
                f"input {value.name!r} of {source} has no shape; give one with "
                f"--input-shape {value.name}=DIMS (input_shapes= in Python)"
            )
        if given is not None:
            given = tuple(int(d) for d in given)
            if shape is not None:
                if len(shape) != len(given):
                    raise InputError(
                        f"--input-shape {value.name}: {len(given)} dims given, but the input has "
                        f"rank {len(shape)} ({_show(shape)})"
                    )
                for axis, (dim, size) in enumerate(zip(shape.dims, given)):
                    if isinstance(dim, int) and dim != size:
                        raise InputError(
                            f"--input-shape {value.name}: dim {axis} is fixed at {dim} in the model, "
                            f"not {size}"
                        )
            if value.dtype is not None and tensor_bytes(given, value.dtype.value) > MAX_TENSOR_BYTES:
                raise InputError(
                    f"--input-shape {value.name}: {'x'.join(map(str, given))} would take "
                    f"{tensor_bytes(given, value.dtype.value) >> 30} GiB; give a realistic shape"
                )
            if shape is None or tuple(shape.dims) != given:
                value.shape = ir.Shape(given)
                changed = True
            continue
        symbolic = [(axis, dim) for axis, dim in enumerate(shape.dims) if not isinstance(dim, int)]
        if symbolic:
            axis, dim = symbolic[0]
            label = getattr(dim, "value", None) or "?"
            raise InputError(
                f"input {value.name!r} of {source} has a symbolic dimension {label!r} at axis {axis} "
                f"({_show(shape)}); give sizes with --input-shape {value.name}=DIMS"
            )
    if changed:
        logger.info("input shapes: %s", {v.name: _show(v.shape) for v in model.graph.inputs})
    return changed


def _show(shape: ir.Shape) -> str:
    return "x".join(str(d if isinstance(d, int) else (getattr(d, "value", None) or "?")) for d in shape.dims)
