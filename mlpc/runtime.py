"""Run compiled artifacts: load the library a backend wrote and call it."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from mlpc.errors import ArtifactError, TargetError

logger = logging.getLogger(__name__)


class TvmSession:
    """A Relax VM over an artifact's `model.so`, on the CPU or the first CUDA device."""

    def __init__(self, library: Path, device: str = "cpu"):
        import tvm
        from tvm import relax

        try:
            module = tvm.runtime.load_module(str(library))
            self._device = tvm.cuda(0) if device == "cuda" else tvm.cpu()
            self._main = relax.VirtualMachine(module, self._device)["main"]
        except Exception as e:
            raise ArtifactError(f"{library}: cannot load the compiled library: {e}") from e

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Call the model on input arrays (in input order); return the outputs in order."""
        import tvm

        result = self._main(*[tvm.runtime.tensor(a, self._device) for a in arrays])
        items = result if isinstance(result, (list, tuple)) or hasattr(result, "__len__") else [result]
        return [item.numpy() for item in items]


def load_session(path: Path, manifest: dict[str, Any]) -> TvmSession:
    """Return a session that runs the artifact at `path` (its backend named in the manifest)."""
    from mlpc.artifact import foreign_target_error

    error = foreign_target_error(path, manifest)
    if error is not None:
        raise error
    backend = manifest.get("backend", {}).get("name")
    if backend != "tvm":
        raise ArtifactError(f"{path}: artifacts of backend {backend!r} cannot be run by this mlpc")
    if manifest.get("target", {}).get("kind") == "cuda":
        return _cuda_session(path, manifest)
    return TvmSession(path / manifest["backend"]["library"])


def _cuda_session(path: Path, manifest: dict[str, Any]) -> TvmSession:
    """A session on the first CUDA device; TargetError naming the artifact when none can run it."""
    from mlpc.targets import Target
    from mlpc.targets.cuda import cuda_missing_on_host

    target = Target.from_json(manifest["target"])
    problems = cuda_missing_on_host(target)
    if problems:
        raise TargetError(f"{path}: built for CUDA target {target.name!r}, which cannot run here: "
                          f"{'; '.join(problems)}. Run it on a machine with an NVIDIA GPU, or recompile "
                          "with --target host")
    return TvmSession(path / manifest["backend"]["library"], device="cuda")
