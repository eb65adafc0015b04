"""Backends: each turns a Graph into an Artifact (installed as `mlpc.backends`).

A backend is a module with `compile_graph(model, target, out_dir) -> dict` (the manifest's
"backend" section); a Target names its backend.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from mlpc.errors import TargetError

_BACKENDS = {"tvm": "mlpc.backends.tvm.backend", "fpga": "mlpc.backends.fpga.backend"}


def get_backend(name: str) -> ModuleType:
    """Return the backend module registered under `name`."""
    if name not in _BACKENDS:
        raise TargetError(f"no backend {name!r}; available: {', '.join(_BACKENDS)}")
    return importlib.import_module(_BACKENDS[name])
