"""Deployment bundles for edge boards: the compiled model, a native runner, the TVM runtime.

    mlpc compile model.onnx --target arm/cortex-a72 -o out/ --bundle kws.tar.gz
    mlpc run kws.tar.gz --inputs in.npz -o out.npz      # under qemu-user on a PC

    >>> from mlpc.bundle import open_bundle, write_bundle
    >>> write_bundle("out/", "kws.tar.gz")  # doctest: +SKIP

Submodules load on first use, so `python -m mlpc.bundle.device_runtime` runs cleanly.
"""
from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BundleRunner": "mlpc.bundle.launcher",
    "check_bundle": "mlpc.bundle.launcher",
    "needs_runner": "mlpc.bundle.launcher",
    "open_bundle": "mlpc.bundle.launcher",
    "write_bundle": "mlpc.bundle.writer",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'mlpc.bundle' has no attribute {name!r}")


__all__ = list(_LAZY)
