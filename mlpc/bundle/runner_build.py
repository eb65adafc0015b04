"""Build the native programs of `runner/` for an architecture with its (cross) C++ compiler: the
bundle runner (`mlpc-run`) and the TVM RPC server for boards (`mlpc-rpc-server`).

Builds are cached by the hash of the sources, the compiler, the flags and the runtime libraries:

    >>> from mlpc.bundle.runner_build import build_runner
    >>> build_runner("aarch64")  # doctest: +SKIP
    PosixPath('/root/.cache/mlpc/runner/aarch64-3f0c…/mlpc-run')
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
from pathlib import Path

from mlpc.backends.tvm.cross import toolchain
from mlpc.bundle.device_runtime import DeviceRuntime, cache_dir, runtime_for
from mlpc.errors import ExportError

logger = logging.getLogger(__name__)

SOURCE_DIR = Path(__file__).parent / "runner"
SOURCES = ("runner.cc", "npz.cc", "sha256.cc")
RUNNER = "mlpc-run"
RPC_SERVER = "mlpc-rpc-server"
RPC_SOURCES = ("rpc_server.cc",)


def runner_command(arch: str, runtime: DeviceRuntime, out: Path, sources: tuple[str, ...] = SOURCES) -> list[str]:
    """Return the compiler command that builds the runner (or another program of `sources`) for
    `arch` into `out`.

    The runtime libraries are linked with --no-as-needed (nothing references libtvm_runtime
    directly, but loading it registers the VM loader) and found through an rpath `$ORIGIN/../lib`.
    """
    chain = toolchain(arch)
    lib_dirs = sorted({str(p.parent) for p in runtime.libraries})
    return [
        chain.require(chain.cxx), "-std=c++17", "-O2", "-Wall", *chain.cxx_flags,
        "-isystem", str(runtime.include_dir), *(str(SOURCE_DIR / s) for s in sources), "-o", str(out),
        *(f"-L{d}" for d in lib_dirs), "-Wl,--no-as-needed",
        *(f"-l:{p.name}" for p in runtime.libraries), "-Wl,--as-needed", "-Wl,-rpath,$ORIGIN/../lib",
    ]


def build_runner(arch: str) -> Path:
    """Return the path of the runner binary for `arch`, compiling it if no cached build matches.

    Raises ExportError when the compiler is missing or fails, TargetError when no runtime exists.
    """
    return _build(arch, RUNNER, SOURCES)


def build_rpc_server(arch: str) -> Path:
    """Return the path of the TVM RPC server binary for `arch` (`runner/rpc_server.cc`: run it on
    the board, or under qemu-user), compiling it if no cached build matches."""
    return _build(arch, RPC_SERVER, RPC_SOURCES)


def _build(arch: str, name: str, sources: tuple[str, ...]) -> Path:
    runtime = runtime_for(arch)
    probe = runner_command(arch, runtime, Path(name), sources)
    digest = hashlib.sha256(" ".join(probe).encode())
    for path in [*(SOURCE_DIR / s for s in sources), *SOURCE_DIR.glob("*.h"), *runtime.libraries]:
        digest.update(path.read_bytes())
    out_dir = cache_dir() / "runner" / f"{arch}-{digest.hexdigest()[:16]}"
    out = out_dir / name
    if out.is_file():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}-", dir=out_dir)
    os.close(fd)
    try:
        command = runner_command(arch, runtime, Path(tmp), sources)
        logger.info("building the %s %s: %s", arch, name, " ".join(command))
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise ExportError(f"building the {arch} {name} failed:\n{done.stderr.strip()[-2000:]}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return out
