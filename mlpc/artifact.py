"""Artifacts: a directory holding manifest.json and the compiled library, written atomically.

    >>> import mlpc
    >>> art = mlpc.load("out/")          # checks checksums and that this machine can run it
    >>> art.run({"x": x})["logits"]      # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mlpc.errors import ArtifactError, ExportError, InputError, TargetError

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "mlpc-artifact"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_artifact(path: Path) -> bool:
    """Return True when `path` is a directory whose manifest.json says it is an mlpc artifact."""
    try:
        manifest = json.loads((Path(path) / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT


@contextlib.contextmanager
def _swap_lock(out: Path) -> Iterator[None]:
    """Serialize the final rename of concurrent writers of the same output directory."""
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_output_dir(out: Path) -> None:
    """Raise ExportError when `out` exists and is not an mlpc artifact (it would be overwritten)."""
    if out.exists() and not is_artifact(out):
        raise ExportError(
            f"{out}: exists and is not an mlpc artifact; choose another -o directory or remove it"
        )


def write_artifact(
    output_dir: str | os.PathLike,
    write_files: Callable[[Path], None],
    manifest: dict[str, Any],
    finalize: Callable[[Path, dict[str, Any]], None] | None = None,
) -> Path:
    """Build an artifact in a temporary sibling directory, then rename it into place.

    `write_files(tmp)` writes the payload; `finalize(tmp, manifest)` may add to the manifest
    (e.g. verification results) once the files exist. An existing `output_dir` is replaced only
    if it is an mlpc artifact. On any failure nothing is left at `output_dir` or beside it.
    Returns the artifact's path.
    """
    out = Path(output_dir).absolute()
    check_output_dir(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(out)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        raise ExportError(f"{out}: cannot create the output directory ({e.strerror})") from e
    try:
        write_files(tmp)
        manifest = dict(manifest, format=FORMAT, format_version=FORMAT_VERSION)
        manifest["files"] = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        if finalize is not None:
            finalize(tmp, manifest)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default) + "\n")
        with _swap_lock(out):
            if out.exists():
                if not is_artifact(out):
                    raise ExportError(f"{out}: exists and is not an mlpc artifact; choose another -o directory")
                old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
                os.rename(out, old / "artifact")
                os.rename(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote artifact %s", out)
    return out


def _remove_stale_temporaries(out: Path) -> None:
    """Delete temporary build directories of `out` left by compiles that were killed."""
    for candidate in out.parent.glob(f".{out.name}.tmp-*-*"):
        pid = candidate.name[len(f".{out.name}.tmp-"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(candidate, ignore_errors=True)
            logger.info("removed %s, left by a compile that was killed", candidate)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


class Artifact:
    """A compiled model on disk: its manifest, and `run()` once the library is loaded."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self._session: Any = None

    @property
    def inputs(self) -> list[dict[str, Any]]:
        """The model's inputs: [{name, shape, dtype}] in call order."""
        return self.manifest["inputs"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """The model's outputs: [{name, shape, dtype}] in return order."""
        return self.manifest["outputs"]

    @property
    def verification(self) -> dict[str, Any] | None:
        """The verification summary recorded at compile time, if `--verify` ran."""
        return self.manifest.get("verification")

    def run(self, inputs: Any) -> dict[str, np.ndarray]:
        """Run the model. `inputs` is a dict keyed by input name, a list in input order, or one array.

        Returns a dict keyed by output name. Raises InputError for missing, unknown or misshaped inputs.
        """
        arrays = prepare_inputs(inputs, self.inputs)
        if self._session is None:
            from mlpc.runtime import load_session

            self._session = load_session(self.path, self.manifest)
        results = self._session.run(arrays)
        return {spec["name"]: value for spec, value in zip(self.outputs, results)}

    def __repr__(self) -> str:
        return f"<mlpc.Artifact {self.path} target={self.manifest['target']['name']}>"


def prepare_inputs(inputs: Any, specs: list[dict[str, Any]]) -> list[np.ndarray]:
    """Match user inputs to the input specs; cast safely ('same_kind') and check shapes.

    Returns the arrays in input order, or raises InputError naming the input at fault.
    """
    names = [s["name"] for s in specs]
    if isinstance(inputs, np.ndarray):
        if len(specs) != 1:
            raise InputError(f"the model has {len(specs)} inputs ({', '.join(names)}); pass a dict keyed by name")
        inputs = {names[0]: inputs}
    elif isinstance(inputs, (list, tuple)):
        if len(inputs) != len(specs):
            raise InputError(f"expected {len(specs)} inputs ({', '.join(names)}), got {len(inputs)}")
        inputs = dict(zip(names, inputs))
    elif not hasattr(inputs, "keys"):
        raise InputError(f"inputs must be a dict keyed by input name ({', '.join(names)}) or arrays")
    if len(inputs) != len(names) or any(n not in inputs for n in names):
        unknown = [k for k in inputs.keys() if k not in names]
        missing = [n for n in names if n not in inputs.keys()]
        parts = []
        if missing:
            parts.append(f"missing {', '.join(map(repr, missing))}")
        if unknown:
            parts.append(f"unknown {', '.join(map(repr, unknown))}")
        raise InputError(f"inputs do not match the model ({'; '.join(parts)}); it takes {', '.join(names)}")
    arrays = []
    for spec in specs:
        value = inputs[spec["name"]]
        if type(value) is np.ndarray and value.dtype == spec["dtype"] and list(value.shape) == spec["shape"] \
                and value.flags.c_contiguous:  # the common case, passed on as it is
            arrays.append(value)
            continue
        value = np.asarray(value)
        dtype = np.dtype(spec["dtype"])
        if value.dtype != dtype:
            if not np.can_cast(value.dtype, dtype, casting="same_kind"):
                raise InputError(f"input {spec['name']!r}: expected {dtype.name}, got {value.dtype.name}")
            value = value.astype(dtype)
        if list(value.shape) != list(spec["shape"]):
            raise InputError(
                f"input {spec['name']!r}: expected shape {tuple(spec['shape'])}, got {tuple(value.shape)}"
            )
        arrays.append(np.asarray(value, order="C"))  # (ascontiguousarray makes 0-d inputs 1-D)
    return arrays


def load(path: str | os.PathLike, check_target: bool = True) -> Artifact:
    """Open an artifact directory: parse its manifest, check every file's sha256 and, unless
    `check_target` is False, that this machine can run code built for its target.

    Raises ArtifactError for a missing/damaged artifact, TargetError for a foreign target.
    """
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path}: not an mlpc artifact directory (it does not exist or is a file)")
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path}: no {MANIFEST}; not an mlpc artifact") from None
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}/{MANIFEST}: unreadable or not JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: {MANIFEST} is not an mlpc artifact manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {manifest['format_version']} is newer than this mlpc understands "
            f"({FORMAT_VERSION}); upgrade mlpc"
        )
    for name, digest in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file():
            raise ArtifactError(f"{path}: file {name!r} listed in the manifest is missing")
        if sha256_file(file) != digest:
            raise ArtifactError(f"{path}: checksum of {name!r} does not match the manifest; the artifact is damaged")
    if check_target:
        error = foreign_target_error(path, manifest)
        if error is not None:
            raise error
    return Artifact(path, manifest)


def foreign_target_error(path: Path, manifest: dict[str, Any]) -> TargetError | None:
    """Return the TargetError explaining why this machine cannot run the artifact's code in
    process (None when it can); for another architecture it points at `mlpc run` (qemu-user)."""
    from mlpc.targets import Target

    target = Target.from_json(manifest["target"])
    problems = target.missing_on_host()
    if not problems:
        return None
    if target.kind == "fpga":
        hint = (f"its Verilator testbench ({path}/rtl/tb_top.cpp, vectors from the reference interpreter) "
                "simulates it; report.json has the simulation and synthesis results")
    elif target.kind == "arm":
        hint = (f"check it here with `mlpc run {path} --inputs in.npz -o out.npz` (runs it under qemu-user), "
                "or recompile with --target host")
    else:
        hint = "recompile with --target host"
    return TargetError(f"{path}: built for target {target.name!r}, which cannot run here "
                       f"({'; '.join(problems)}); {hint}")
