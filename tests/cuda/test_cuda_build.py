"""CUDA builds of the zoo without a GPU: device code that nvcc/ptxas accept for sm_80 and sm_90,
consistent artifacts, `mlpc inspect`'s kernel table, and the clear error when loading.

Measured on the zoo (fp32/fp16/bf16, sm_80/sm_90): no kernel spills and no kernel uses more
than 72 registers, so the bounds below are 0 spill bytes and 128 registers per thread.
"""
from __future__ import annotations

import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import mlpc
from mlpc import zoo
from mlpc.artifact import Artifact
from mlpc.backends.tvm.cuda_toolchain import compile_device_code, find_tool, parse_ptxas_log
from mlpc.cli import main
from mlpc.errors import TargetError
from mlpc.targets import get_target
from mlpc.targets.cuda import visible_cuda_devices

MAX_SPILL_BYTES = 0
MAX_REGISTERS = 128
ARCHS = ("sm_80", "sm_90")

# The normal suite compiles a representative subset; the full matrix is slow.
SUBSET = [("mlp", "fp32", "cuda/sm_80"), ("conv1d", "fp16", "cuda/sm_90"), ("transformer", "fp16", "cuda/sm_80")]
FULL = [(m, d, t) for m in ("mlp", "resnet", "mobilenet", "conv1d", "transformer") for d in ("fp32", "fp16")
        for t in ("cuda/sm_80", "cuda/sm_90")] + [(m, "bf16", "cuda/sm_80") for m in ("resnet", "transformer")]
FULL = [case for case in FULL if case not in SUBSET]

gpu = pytest.mark.skipif(not visible_cuda_devices(), reason="no CUDA device")


def _ptx_entries(ptx: str) -> list[str]:
    return re.findall(r"\.entry\s+(\w+)\(", ptx)


def _ptxas(ptx: Path, arch: str) -> dict:
    proc = subprocess.run([find_tool("ptxas"), "-v", f"-arch={arch}", "-o", "/dev/null", str(ptx)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return parse_ptxas_log(proc.stderr + proc.stdout)


def check_artifact(path: Path, dtype: str, target: str) -> None:
    """Everything a CUDA artifact must satisfy without a GPU."""
    art = mlpc.load(path, check_target=False)  # checks every file's sha256
    backend = art.manifest["backend"]
    assert backend["device"] == "cuda" and backend["arch"] == get_target(target).tvm["arch"]
    assert backend["dtype"] == {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[dtype]
    files = set(art.manifest["files"])
    assert {backend["library"], backend["kernels"], *backend["device_files"].values()} <= files
    assert [i["dtype"] for i in art.inputs] == ["float32"] and [o["dtype"] for o in art.outputs] == ["float32"]

    kernels = json.loads((path / backend["kernels"]).read_text())["kernels"]
    ptx_path = path / backend["device_files"]["ptx"]
    names = [k["name"] for k in kernels]
    assert sorted(_ptx_entries(ptx_path.read_text())) == sorted(names)
    source = (path / backend["device_files"]["source"]).read_text()
    assert all(f"{name}(" in source for name in names)
    if dtype != "fp32":  # reduced precision really reached the device code
        assert ("half" if dtype == "fp16" else "nv_bfloat16") in source
    cubin = (path / backend["device_files"]["cubin"]).read_bytes()
    assert cubin[:4] == b"\x7fELF" and cubin in (path / backend["library"]).read_bytes()  # fatbin embedded
    for k in kernels:
        # MetaSchedule: a schedule from the user's tuning cache (`mlpc tune`), if it holds one
        assert k["rule"] in ("dp4a", "MetaSchedule", "Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")
        assert 1 <= int(np.prod(k["block"])) <= 1024 and int(np.prod(k["grid"])) >= 1
        assert k["calls"] >= 1 and k["bytes"] > 0

    for arch in ARCHS:  # the device code compiles for both parts, within the bounds
        if arch >= backend["arch"]:  # PTX for an older part assembles for a newer one (driver JIT)
            resources = _ptxas(ptx_path, arch)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                resources = compile_device_code(source, arch, Path(tmp)).resources
        assert sorted(resources) == sorted(names)
        for name, res in resources.items():
            assert res.spill_stores + res.spill_loads <= MAX_SPILL_BYTES, (arch, name, res)
            assert res.registers <= MAX_REGISTERS, (arch, name, res)
        if arch == backend["arch"]:
            recorded = {k["name"]: (k["registers"], k["shared_bytes"]) for k in kernels}
            assert recorded == {n: (r.registers, r.shared_bytes) for n, r in resources.items()}


def check_inspect(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["cuda"]
    kernels = json.loads((path / "kernels.json").read_text())["kernels"]
    assert [k["name"] for k in info["kernels"]] == [k["name"] for k in kernels]
    assert info["estimated_latency_us"] == pytest.approx(sum(k["total_us"] for k in info["kernels"]))
    assert info["estimated_latency_us"] > 2.0 * len(kernels)  # at least the launch overheads
    assert "estimate" in info["label"]
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "CUDA kernels" in text and "estimated latency" in text and "not measured" in text
    assert all(k["name"] in text for k in kernels)


def check_no_gpu_error(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    x = np.zeros(mlpc.load(path, check_target=False).inputs[0]["shape"], np.float32)
    with pytest.raises(TargetError, match="no CUDA device is visible") as info:
        mlpc.load(path)
    assert str(path) in str(info.value)
    art = Artifact(path, mlpc.load(path, check_target=False).manifest)
    with pytest.raises(TargetError, match="no CUDA device is visible"):
        art.run(x)
    np.save(path.parent / "x.npy", x)
    assert main(["run", str(path), "-i", str(path.parent / "x.npy"), "-o", str(path.parent / "y.npz")]) == 2
    assert "no CUDA device is visible" in capsys.readouterr().err


@pytest.mark.parametrize(("model", "dtype", "target"), SUBSET)
def test_cuda_build(model: str, dtype: str, target: str, cuda_artifact: Callable[[str, str, str], Path],
                    capsys: pytest.CaptureFixture[str]) -> None:
    path = cuda_artifact(model, dtype, target)
    check_artifact(path, dtype, target)
    check_inspect(path, capsys)
    if not visible_cuda_devices():
        check_no_gpu_error(path, capsys)


@pytest.mark.slow
@pytest.mark.parametrize(("model", "dtype", "target"), FULL)
def test_cuda_build_full_matrix(model: str, dtype: str, target: str,
                                cuda_artifact: Callable[[str, str, str], Path]) -> None:
    check_artifact(cuda_artifact(model, dtype, target), dtype, target)


def test_cli_compile_bf16_for_another_part(zoo_onnx: Callable[[str], Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mlp-bf16"
    assert main(["compile", str(zoo_onnx("mlp")), "--target", "cuda/sm_86", "--dtype", "bf16", "-o", str(out)]) == 0
    check_artifact(out, "bf16", "cuda/sm_86")
    assert main(["inspect", str(out)]) == 0
    assert "NVIDIA A10" in capsys.readouterr().out


def test_reduced_dtype_needs_a_cuda_target(zoo_onnx: Callable[[str], Path], tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="needs a CUDA target"):
        mlpc.compile(zoo_onnx("mlp"), target="host", output_dir=tmp_path / "a", dtype="fp16")
    with pytest.raises(TargetError, match="unknown compute dtype"):
        mlpc.compile(zoo_onnx("mlp"), target="cuda", output_dir=tmp_path / "b", dtype="fp8")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(("model", "dtype", "tolerance"), [("mlp", "fp32", 1e-4), ("resnet", "fp16", 5e-3)])
def test_runs_on_the_gpu_like_onnxruntime(model: str, dtype: str, tolerance: float,
                                          cuda_artifact: Callable[[str, str, str], Path],
                                          zoo_onnx: Callable[[str], Path]) -> None:
    (x,) = (t.numpy() for t in zoo.example_inputs(model))
    ref = ort.InferenceSession(str(zoo_onnx(model))).run(None, {"x": x})[0]
    got = mlpc.load(cuda_artifact(model, dtype, "cuda")).run({"x": x})["logits"]
    assert np.abs(got - ref).max() <= tolerance * np.abs(ref).max()
