"""Deployment bundles for edge boards: the compiled model, a native runner, the TVM runtime.

    mlpc compile model.onnx --target arm/cortex-a72 -o out/ --bundle kws.tar.gz
    mlpc run kws.tar.gz --inputs in.npz -o out.npz      # under qemu-user on a PC

    >>> from mlpc.bundle import open_bundle, write_bundle
    >>> write_bundle("out/", "kws.tar.gz")  # doctest: +SKIP
"""
from __future__ import annotations

from mlpc.bundle.launcher import BundleRunner, check_bundle, needs_runner, open_bundle
from mlpc.bundle.writer import write_bundle

__all__ = ["BundleRunner", "check_bundle", "needs_runner", "open_bundle", "write_bundle"]
