"""Trace a PyTorch module with torch.export into an onnx-ir Model."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
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


# Suffixes of files written by torch.save, and of torch.export archives.
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")
EXPORT_ARCHIVE_SUFFIXES = (".pt2",)


def load_torch_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint written by torch.save with `torch.load(..., weights_only=True)` only.

    Tensors, plain containers and numbers load; anything that needs arbitrary Python objects to
    be unpickled (a whole pickled module, or a crafted `__reduce__` that would run code) is
    refused with ModelLoadError before any of it runs. Use it to fill a module safely:

        >>> module.load_state_dict(load_torch_checkpoint("weights.pt"))  # doctest: +SKIP
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(
            f"{path}: refused: the checkpoint needs arbitrary Python objects to load ({first[:200]}); "
            "mlpc loads torch checkpoints with weights_only=True only, since unpickling can run code. "
            "Save a state_dict (torch.save(module.state_dict(), path)) or export the model to ONNX"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as e:
        raise ModelLoadError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e


def refuse_torch_file(path: Path) -> None:
    """Raise ModelLoadError for a torch file given where a model is expected, saying what to do.

    A torch.save checkpoint is opened with weights_only=True (so a hostile one is refused as
    such) and then refused because weights alone do not define a network; torch.export
    archives (.pt2) are refused unopened, since torch.export.load unpickles with weights_only=False.
    """
    if path.suffix in EXPORT_ARCHIVE_SUFFIXES:
        raise ModelLoadError(
            f"{path}: torch.export archives are not loaded (torch.export.load unpickles their weights "
            "with weights_only=False, which can run code); pass the torch.nn.Module to mlpc.compile "
            "or export it to ONNX"
        )
    content = load_torch_checkpoint(path)
    what = f"a state_dict of {len(content)} entries" if isinstance(content, Mapping) else type(content).__name__
    raise ModelLoadError(
        f"{path}: holds weights only ({what}), not a network mlpc can compile; build the module in "
        "Python, call module.load_state_dict(mlpc.frontend.load_torch_checkpoint(path)) and pass "
        "the module to mlpc.compile"
    )
