"""Run bundles and foreign-architecture artifacts on this machine with the native runner, under
qemu-user when the bundle is for another architecture (`qemu-aarch64 -L /usr/aarch64-linux-gnu`).

    >>> from mlpc.bundle import open_bundle
    >>> with open_bundle("kws.tar.gz") as bundle:  # doctest: +SKIP
    ...     outputs = bundle.run({"x": x})

Times measured this way are qemu's, not the board's.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mlpc.artifact import MANIFEST, Artifact, load, prepare_inputs
from mlpc.backends.tvm.cross import elf_arch, host_arch, toolchain
from mlpc.bundle.writer import SUFFIXES, assemble
from mlpc.errors import ArtifactError, InputError

logger = logging.getLogger(__name__)

# The runner's exit statuses: 2 a bad bundle or bad input, 3 the model failed to run.
_BAD_INPUT, _RUN_FAILED = 2, 3


def needs_runner(path: str | os.PathLike) -> bool:
    """Return True when running `path` takes the native runner: a bundle archive, or an artifact
    directory whose target's architecture is not this machine's."""
    path = Path(path)
    if path.is_file():
        return True
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        if manifest["target"]["kind"] == "fpga":
            return False  # no runner runs a hardware design: mlpc.load says so
        return manifest["target"]["arch"] != host_arch()
    except (OSError, ValueError, KeyError, TypeError):
        return False  # not an artifact: let mlpc.load say what is wrong


class BundleRunner(Artifact):
    """A bundle laid out on disk, whose `run` goes through its native runner (qemu-user when foreign)."""

    def __init__(self, root: Path, manifest: dict[str, Any]):
        super().__init__(root, manifest)
        self.root = root
        self.arch = manifest["bundle"]["arch"]

    def command(self) -> list[str]:
        """Return the runner's command line prefix: the binary, behind qemu-user when foreign."""
        runner = str(self.root / self.manifest["bundle"]["runner"])
        if self.arch == host_arch():
            return [runner]
        chain = toolchain(self.arch)
        if not chain.sysroot.is_dir():
            raise ArtifactError(f"{chain.sysroot} (the {self.arch} C library qemu needs) is missing: "
                                f"install the Debian package {chain.package_of(chain.cxx)}")
        return [chain.require(chain.qemu), "-L", str(chain.sysroot), runner]

    def run(self, inputs: Any) -> dict[str, np.ndarray]:
        """Run the model on `inputs` (a dict keyed by input name, a list, or one array), cast and
        checked as `Artifact.run` does. Returns a dict keyed by output name.

        Raises InputError for bad inputs, ArtifactError when the runner fails.
        """
        arrays = prepare_inputs(inputs, self.inputs)
        with tempfile.TemporaryDirectory(prefix="mlpc-run-") as tmp:
            feeds, results = Path(tmp) / "in.npz", Path(tmp) / "out.npz"
            np.savez(feeds, **{spec["name"]: a for spec, a in zip(self.inputs, arrays)})
            self.run_files(feeds, results)
            with np.load(results, allow_pickle=False) as data:
                return {spec["name"]: data[spec["name"]] for spec in self.outputs}

    def run_files(self, inputs: Path, output: Path) -> None:
        """Run the runner on an .npz of inputs, writing the outputs' .npz to `output`."""
        command = [*self.command(), "--bundle", str(self.root), "--inputs", str(inputs), "-o", str(output)]
        logger.info("running %s", " ".join(command))
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode == 0:
            return
        message = done.stderr.strip().removeprefix("error: ") or f"exit status {done.returncode}"
        where = f" under {command[0]}" if self.arch != host_arch() else ""
        if done.returncode == _BAD_INPUT:
            raise InputError(message)
        if done.returncode == _RUN_FAILED:
            raise ArtifactError(f"{self.root}: the model failed to run{where}: {message}")
        raise ArtifactError(f"{self.root}: the runner{where} exited with status {done.returncode}: {message[-800:]}")


@contextlib.contextmanager
def open_bundle(path: str | os.PathLike) -> Iterator[BundleRunner]:
    """Open a bundle archive, an extracted bundle, or an artifact directory (a bundle is laid out
    for it in a temporary directory), check it, and yield a BundleRunner.

    Raises ArtifactError for damaged bundles (checksums), files for another architecture than the
    manifest says, or archives that are not mlpc bundles.
    """
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="mlpc-bundle-") as tmp:
        if path.is_file():
            root = _extract(path, Path(tmp))
        elif (path / MANIFEST).is_file() and "bundle" in _manifest(path):
            root = path
        else:
            root = Path(tmp) / path.absolute().name
            root.mkdir()
            assemble(path, root)
        yield BundleRunner(root, check_bundle(root))


def _manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}/{MANIFEST}: unreadable or not JSON ({e})") from e


def check_bundle(root: Path) -> dict[str, Any]:
    """Check a bundle directory: every checksum, and that the model library and the runner are
    built for the architecture its manifest names. Returns the manifest."""
    manifest = load(root, check_target=False).manifest
    if "bundle" not in manifest:
        raise ArtifactError(f"{root}: an artifact, not a bundle (no runner); write one with `mlpc compile --bundle`")
    arch = manifest["bundle"]["arch"]
    if manifest["target"]["arch"] != arch:
        raise ArtifactError(f"{root}: the bundle's runner is for {arch}, its target "
                            f"{manifest['target']['name']!r} is {manifest['target']['arch']}")
    for name in (manifest["backend"]["library"], manifest["bundle"]["runner"]):
        found = elf_arch(root / name)
        if found != arch:
            raise ArtifactError(f"{root}: {name} is built for {found or 'an unknown machine'}, but the bundle is for "
                                f"{arch} ({manifest['target']['name']}); it was assembled wrongly, rebuild it")
    return manifest


def _extract(archive: Path, dest: Path) -> Path:
    if not archive.name.endswith(SUFFIXES):
        raise ArtifactError(f"{archive}: not an artifact directory or a bundle (.tar.gz) written by `mlpc compile`")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ArtifactError(f"{archive}: not a readable .tar.gz bundle ({e})") from e
    tops = [p for p in dest.iterdir()]
    if len(tops) != 1 or not (tops[0] / MANIFEST).is_file():
        raise ArtifactError(f"{archive}: not an mlpc bundle (expected one directory holding {MANIFEST})")
    return tops[0]
