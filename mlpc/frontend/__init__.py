"""Frontends: ONNX files and PyTorch modules into mlpc's IR (an onnx-ir Model).

    >>> from mlpc.frontend import load_model
    >>> loaded = load_model("model.onnx", input_shapes={"x": (1, 3, 224, 224)})  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx
import onnx_ir as ir

from mlpc.errors import ModelLoadError
from mlpc.frontend.input_shapes import parse_input_shape, resolve_input_shapes
from mlpc.frontend.onnx_loader import load_onnx_file, proto_to_ir
from mlpc.frontend.torch_loader import (
    CHECKPOINT_SUFFIXES,
    EXPORT_ARCHIVE_SUFFIXES,
    is_torch_module,
    load_torch_checkpoint,
    load_torch_module,
    refuse_torch_file,
    torch_example_inputs,
)

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A model in mlpc's IR plus what verification needs to recompute the original's outputs.

    `reference_kind` is "onnx" (then `reference` is the original ModelProto, run by onnxruntime)
    or "torch" (then `reference` is the module).
    """

    model: ir.Model
    source: str
    reference_kind: str
    reference: Any
    source_sha256: str | None = None
    example_inputs: tuple[Any, ...] = field(default_factory=tuple)


def load_model(
    source: Any,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    example_inputs: Any = None,
) -> LoadedModel:
    """Load an ONNX path, ModelProto, onnx-ir Model or torch.nn.Module into mlpc's IR.

    Symbolic input dimensions are resolved from `input_shapes`; for a torch module the example
    inputs (or random ones of `input_shapes`) drive the trace. Returns a LoadedModel.
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix in CHECKPOINT_SUFFIXES + EXPORT_ARCHIVE_SUFFIXES:
            refuse_torch_file(path)
        model = load_onnx_file(path)
        reference = ir.serde.serialize_model(model)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        loaded = LoadedModel(model, str(path), "onnx", reference, digest)
    elif isinstance(source, onnx.ModelProto):
        loaded = LoadedModel(proto_to_ir(source), "<onnx.ModelProto>", "onnx", source)
    elif isinstance(source, ir.Model):
        proto = ir.serde.serialize_model(source)
        loaded = LoadedModel(proto_to_ir(proto), "<onnx_ir.Model>", "onnx", proto)
    elif is_torch_module(source):
        inputs = torch_example_inputs(example_inputs, input_shapes)
        model = load_torch_module(source, inputs)
        loaded = LoadedModel(model, f"<torch {type(source).__name__}>", "torch", source, None, inputs)
        input_shapes = None if input_shapes is None else _rename_for_export(model, input_shapes)
    else:
        raise ModelLoadError(
            f"cannot compile a {type(source).__name__}: pass an .onnx path, an onnx.ModelProto, "
            "an onnx_ir.Model or a torch.nn.Module"
        )
    resolve_input_shapes(loaded.model, input_shapes, source=loaded.source)
    return loaded


def _rename_for_export(model: ir.Model, input_shapes: Mapping[str, Sequence[int]]) -> dict[str, Sequence[int]]:
    """torch.export names inputs after forward()'s parameters; map positional shapes onto them."""
    names = [v.name for v in model.graph.inputs]
    if set(input_shapes) <= set(names):
        return dict(input_shapes)
    return dict(zip(names, input_shapes.values()))


__all__ = ["LoadedModel", "load_model", "load_torch_checkpoint", "parse_input_shape", "resolve_input_shapes"]
