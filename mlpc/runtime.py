"""Run compiled artifacts: load the library a backend wrote and call it."""
from __future__ import annotations

import logging
import threading
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
            self._on_cpu = device != "cuda"
            self._main = relax.VirtualMachine(module, self._device)["main"]
        except Exception as e:
            raise ArtifactError(f"{library}: cannot load the compiled library: {e}") from e
        self._staging = threading.local()  # per thread: {input index: aligned buffer}

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Call the model on input arrays (in input order); return the outputs in order.

        On the CPU, small inputs are copied into a 64-byte aligned staging buffer the session
        keeps per input (and per thread) with its TVM tensor (TVM's kernels assume that
        alignment; the copy is cheaper than checking it); large ones are handed over through
        DLPack without a copy when already aligned. Outputs are copied out, so later calls never
        change arrays already returned.
        """
        tensors = [self._tensor(a, i) for i, a in enumerate(arrays)]
        result = self._main(*tensors)
        items = result if isinstance(result, (list, tuple)) or hasattr(result, "__len__") else [result]
        return [self._numpy(item) for item in items]

    def _tensor(self, a: np.ndarray, index: int):
        import tvm

        if self._on_cpu:
            try:
                return self._cpu_tensor(a, index)
            except (BufferError, TypeError, ValueError):  # dtypes NumPy cannot export (bfloat16)
                pass
        return tvm.runtime.tensor(a, self._device)

    def _numpy(self, tensor) -> np.ndarray:
        """A NumPy copy of a TVM tensor (through DLPack on the CPU)."""
        if self._on_cpu:
            try:
                return np.from_dlpack(tensor).copy()
            except (BufferError, TypeError, RuntimeError):
                pass
        return tensor.numpy()

    def _cpu_tensor(self, a: np.ndarray, index: int):
        """A TVM tensor holding `a`: `a` itself when large, C-contiguous and 64-byte aligned, else
        the staging tensor of input `index` (allocated once per shape and dtype) after a copy."""
        import tvm_ffi

        if a.nbytes > _STAGE_BELOW and a.flags.c_contiguous and a.ctypes.data % _ALIGNMENT == 0:
            return tvm_ffi.from_dlpack(a)
        staged = self._staging.__dict__.setdefault("inputs", {})
        entry = staged.get(index)
        if entry is None or entry[0].shape != a.shape or entry[0].dtype != a.dtype:
            buffer = aligned_empty(a.shape, a.dtype)
            entry = staged[index] = (buffer, tvm_ffi.from_dlpack(buffer))
        np.copyto(entry[0], a)
        return entry[1]


_ALIGNMENT = 64
_STAGE_BELOW = 64 * 1024  # inputs up to this size are always copied into the staging buffer


def aligned_empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialized C-contiguous array whose data is 64-byte aligned."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    raw = np.empty(nbytes + _ALIGNMENT, np.uint8)
    offset = -raw.ctypes.data % _ALIGNMENT
    return raw[offset:offset + nbytes].view(dtype).reshape(shape)


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
