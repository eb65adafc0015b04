"""Trace a PyTorch module with torch.export into an onnx-ir Model."""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import onnx_ir as ir

from mlpc.errors import InputError, ModelLoadError

logger = logging.getLogger(__name__)

DEFAULT_OPSET = 18


def is_torch_module(obj: Any) -> bool:
    """Return True when `obj` is a torch.nn.Module (without importing torch if it is not loaded)."""
    import sys

    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def torch_example_inputs(
    example_inputs: Any = None, input_shapes: Mapping[str, Sequence[int]] | None = None
) -> tuple[Any, ...]:
    """Return example inputs as a tuple of tensors: given ones, or random float32 from `input_shapes`."""
    import torch

    if example_inputs is not None:
        if isinstance(example_inputs, torch.Tensor):
            return (example_inputs,)
        return tuple(example_inputs)
    if not input_shapes:
        raise InputError(
            "a PyTorch module needs example_inputs=(tensor, ...) or input_shapes={'x': (1, 3, 224, 224)}"
        )
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(*shape, generator=gen) for shape in input_shapes.values())


def load_torch_module(module: Any, example_inputs: tuple[Any, ...], opset: int = DEFAULT_OPSET) -> ir.Model:
    """Export `module` (put in eval mode) with `torch.onnx.export(..., dynamo=True)`; return its IR."""
    import torch

    module.eval()
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, example_inputs, dynamo=True, opset_version=opset, verbose=False, optimize=True
            )
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"could not trace {type(module).__name__} with torch.export: {first}; "
            "check that forward() runs on the example inputs and avoids data-dependent control flow"
        ) from e
    logger.debug("torch export log:\n%s", sink.getvalue())
    return program.model
