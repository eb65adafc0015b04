"""Deployment bundles: an artifact plus everything a board needs to run it without Python.

    kws/                     (the top directory is named after the archive)
      run                    POSIX sh launcher: checks the machine, then runs bin/mlpc-run
      README.md              how to run it, inputs and outputs
      manifest.json          the artifact's manifest; "files" covers every file below
      model.so               the compiled model (cross-compiled for the target)
      bin/mlpc-run           the native runner (C++, against the TVM runtime)
      bin/mlpc-rpc-server    a TVM RPC server, to tune for this board (`mlpc tune --rpc-tracker`)
      lib/libtvm_runtime.so  the TVM runtime (Relax VM) and tvm-ffi for the board
      lib/libtvm_ffi.so

Nothing in a bundle depends on the model's dtypes: the runner takes whatever the manifest's
inputs and outputs say (float, int8, ...).

    >>> from mlpc.bundle import write_bundle
    >>> write_bundle("out/", "kws.tar.gz")  # doctest: +SKIP
    PosixPath('/home/me/kws.tar.gz')
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from mlpc.artifact import MANIFEST, load, sha256_file
from mlpc.backends.tvm.cross import elf_arch
from mlpc.bundle.device_runtime import runtime_for
from mlpc.bundle.runner_build import RPC_SERVER, RUNNER, build_rpc_server, build_runner
from mlpc.errors import ArtifactError, ExportError

logger = logging.getLogger(__name__)

SUFFIXES = (".tar.gz", ".tgz")
LAUNCHER = "run"
RUNNER_PATH = f"bin/{RUNNER}"

_LAUNCHER_TEXT = """#!/bin/sh
# Runs this mlpc bundle: ./run --inputs in.npz -o out.npz    (./run --check verifies the files)
here=$(cd "$(dirname "$0")" && pwd)
machine=$(uname -m)
case "$machine" in
  {arch_pattern}) ;;
  *) echo "error: this bundle is built for {arch}; this machine is $machine. Compile for this board's" \\
          "--target, or check the bundle on a PC with \\`mlpc run BUNDLE --inputs in.npz -o out.npz\\` (qemu)" >&2
     exit 2 ;;
esac
exec "$here/{runner}" --bundle "$here" "$@"
"""
# `uname -m` on 32-bit ARM userlands says armv7l, or armv8l under a 64-bit kernel.
_MACHINES = {"armv7l": "armv7l|armv8l"}

_README_TEXT = """# {name}: {model} compiled by mlpc for {target}

    tar xzf {name}.tar.gz && ./{name}/run --inputs in.npz -o out.npz

`in.npz` holds one array per input, keyed by name (`np.savez("in.npz", **inputs)`; uncompressed,
not `np.savez_compressed`); `out.npz` receives one array per output. `./{name}/run --check`
verifies every file against the sha256 in `manifest.json`; the runner does that before each run too.

Inputs:
{inputs}
Outputs:
{outputs}
The board needs Linux on {arch} with glibc 2.34 and libstdc++ 11 or newer (Debian 12, Ubuntu 22.04,
Raspberry Pi OS bookworm); no Python. With Python and
mlpc installed, `mlpc.load("{name}/").run(inputs)` works too. On a PC, `mlpc run {name}.tar.gz
--inputs in.npz -o out.npz` runs the bundle under qemu-user (a correctness check; qemu's timing says
nothing about the board's speed).

To tune kernels for this board, run TVM's tracker on a workstation (`python -m
tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190`), the bundle's RPC server on the board
(`./{name}/bin/mlpc-rpc-server --tracker WORKSTATION:9190 --key myboard --port 9090`), then on the
workstation `mlpc tune model.onnx --target {target} --rpc-tracker localhost:9190 --rpc-key myboard`.

Built with mlpc {mlpc_version}; TVM runtime: {runtime}.
"""


def assemble(artifact_dir: str | os.PathLike, dest: Path) -> dict[str, Any]:
    """Lay out the bundle for the artifact at `artifact_dir` in the empty directory `dest`.

    Returns the bundle's manifest (also written to `dest/manifest.json`). Raises ArtifactError for
    a damaged artifact or a library for another architecture than its target's, TargetError when
    no TVM runtime exists for the architecture, ExportError when building the runner fails.
    """
    artifact = load(artifact_dir, check_target=False)
    manifest = dict(artifact.manifest)
    arch = manifest["target"]["arch"]
    library = artifact.path / manifest["backend"]["library"]
    found = elf_arch(library)
    if found != arch:
        raise ArtifactError(f"{library}: a library for {found or 'an unknown machine'}, but the artifact's "
                            f"target {manifest['target']['name']!r} is {arch}; recompile it")
    runtime = runtime_for(arch)
    runner = build_runner(arch)
    rpc_server = build_rpc_server(arch)
    for name in manifest["files"]:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(artifact.path / name, dest / name)
    (dest / "bin").mkdir(exist_ok=True)
    shutil.copy2(runner, dest / RUNNER_PATH)
    shutil.copy2(rpc_server, dest / "bin" / RPC_SERVER)
    (dest / "lib").mkdir(exist_ok=True)
    for lib in runtime.libraries:
        shutil.copy2(lib, dest / "lib" / lib.name)
    launcher = dest / LAUNCHER
    launcher.write_text(_LAUNCHER_TEXT.format(arch=arch, arch_pattern=_MACHINES.get(arch, arch), runner=RUNNER_PATH))
    launcher.chmod(0o755)
    _write_readme(dest, manifest, runtime.provenance)
    manifest["files"] = {str(p.relative_to(dest)): sha256_file(p)
                         for p in sorted(dest.rglob("*")) if p.is_file() and p.name != MANIFEST}
    manifest["bundle"] = {"arch": arch, "runner": RUNNER_PATH, "launcher": LAUNCHER, "runtime": runtime.provenance}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _write_readme(dest: Path, manifest: dict[str, Any], provenance: dict[str, Any]) -> None:
    def rows(specs: list[dict[str, Any]]) -> str:
        return "".join(f"- `{s['name']}`: {s['dtype']} {'x'.join(map(str, s['shape']))}\n" for s in specs)

    runtime = ", ".join(provenance.get("wheels") or
                        [f"{k} {v} (installed)" for k, v in provenance.get("installed", {}).items()])
    (dest / "README.md").write_text(_README_TEXT.format(
        name=dest.name, model=manifest["source"]["name"], target=manifest["target"]["name"],
        arch=manifest["target"]["arch"], inputs=rows(manifest["inputs"]), outputs=rows(manifest["outputs"]),
        mlpc_version=manifest["mlpc_version"], runtime=runtime))


def bundle_name(path: Path) -> str:
    """Return the bundle's directory name for an archive path (`kws.tar.gz` → `kws`), or raise
    ExportError when the path does not end in .tar.gz/.tgz."""
    for suffix in SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[: -len(suffix)]
    raise ExportError(f"{path}: a bundle is a .tar.gz archive; name it e.g. {path.name}.tar.gz")


def write_bundle(artifact_dir: str | os.PathLike, output: str | os.PathLike) -> Path:
    """Write the deployment bundle of the artifact at `artifact_dir` to `output` (a .tar.gz).

    The archive is written to a temporary file and renamed into place. Returns its path.
    """
    output = Path(output).absolute()
    name = bundle_name(output)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ExportError(f"{output.parent}: cannot create the directory ({e.strerror})") from e
    with tempfile.TemporaryDirectory(prefix=".bundle-", dir=output.parent) as tmp:
        root = Path(tmp) / name
        root.mkdir()
        assemble(artifact_dir, root)
        archive = Path(tmp) / "bundle.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(root, arcname=name, filter=_normalize)
        os.replace(archive, output)
    logger.info("wrote bundle %s (%.1f MB)", output, output.stat().st_size / 1e6)
    return output


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
