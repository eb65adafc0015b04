"""mlpc: a hardware-aware compiler and quantization toolkit.

    import mlpc
    artifact = mlpc.compile("model.onnx", target="host", output_dir="out/")
    outputs = mlpc.load("out/").run({"x": x})

Heavy dependencies (TVM, torch, onnxruntime) load on first use, so `import mlpc` stays fast.
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from mlpc.errors import (
    ArtifactError,
    ExportError,
    InputError,
    IRVerificationError,
    LoweringError,
    MlpcError,
    ModelLoadError,
    PassError,
    QuantizationError,
    TargetError,
    UnsupportedOpError,
    VerificationError,
)

__version__ = "0.1.0"

# TVM pins each thread-pool worker to its own core while the calling thread floats; when the OS
# puts the caller on a worker's core, that worker waits, and every parallel kernel waits for it.
# Measured on 2 vCPUs: the zoo ResNet at batch 1 took 285-290 µs pinned against 187-192 µs
# unpinned, with stable run-to-run figures only unpinned. TVM reads this when its pool starts;
# a user's own setting wins.
os.environ.setdefault("TVM_BIND_THREADS", "0")

_LAZY = {
    "compile": ("mlpc.driver", "compile"),
    "quantize": ("mlpc.quant.api", "quantize"),
    "mixed_precision": ("mlpc.mixed.api", "mixed_precision"),
    "load": ("mlpc.artifact", "load"),
    "Artifact": ("mlpc.artifact", "Artifact"),
    "load_model": ("mlpc.frontend", "load_model"),
    "verify": ("mlpc.verify", "verify"),
    "get_target": ("mlpc.targets", "get_target"),
    "Pass": ("mlpc.pass_infra", "Pass"),
    "register_pass": ("mlpc.pass_registry", "register_pass"),
    "PassContext": ("mlpc.pass_infra", "PassContext"),
    "PassManager": ("mlpc.pass_infra", "PassManager"),
    "PassResult": ("mlpc.pass_infra", "PassResult"),
}

if TYPE_CHECKING:  # pragma: no cover
    from mlpc.artifact import Artifact, load  # noqa: F401
    from mlpc.driver import compile  # noqa: F401


_SUBMODULES = ("qat", "mixed")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"mlpc.{name}")
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlpc' has no attribute {name!r}")


__all__ = [
    "ArtifactError", "ExportError", "InputError", "IRVerificationError", "LoweringError",
    "MlpcError", "ModelLoadError", "PassError", "QuantizationError", "TargetError",
    "UnsupportedOpError", "VerificationError", "__version__", *_LAZY,
]
