"""Quantized CUDA builds without a GPU: w8a8 (integer kernels on dp4a) and w4a16 (4-bit packed
weights unpacked in fp16 kernels) compile for sm_80 and sm_90, every kernel is GPU-scheduled,
the device code assembles with ptxas within the bounds of test_cuda_build (no spills, ≤ 128
registers), and the instructions that make them fast are really in the PTX.

Measured here on the zoo (w8a8 all five models, w4a16 mlp/transformer, sm_80/sm_90): no kernel
spills, at most 80 registers; every IntegerConv with group 1 and every IntegerMatMul with a
constant weight runs on dp4a (depthwise convolutions and activation×activation matmuls take
dlight's rules in int16/int32).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_cuda_build import check_artifact, check_inspect

import mlpc
from mlpc.backends.tvm.cuda import KERNELS

# Always run: one w8a8 and one w4a16 build; the full matrix is slow (quantization dominates).
SUBSET = [("mlp", "w8a8", "fp32", "cuda/sm_80"), ("transformer", "w4a16", "fp16", "cuda/sm_90")]
FULL = [
    (m, "w8a8", "fp32", t)
    for m in ("mlp", "resnet", "mobilenet", "conv1d", "transformer")
    for t in ("cuda/sm_80", "cuda/sm_90")
]
FULL += [(m, "w4a16", "fp16", t) for m in ("mlp", "transformer") for t in ("cuda/sm_80", "cuda/sm_90")]
FULL = [case for case in FULL if case not in SUBSET]


def check_quantized(path: Path, scheme: str, dtype: str, target: str) -> None:
    """A quantized CUDA artifact: the common checks, plus dp4a (w8a8) or packed-weight fp16
    kernels (w4a16) in its device code."""
    check_artifact(path, dtype, target)
    art = mlpc.load(path, check_target=False)
    ops = art.manifest["stats"]["ops"]
    kernels = json.loads((path / KERNELS).read_text())["kernels"]
    ptx = (path / "device.ptx").read_text()
    source = (path / "device.cu").read_text()
    if scheme == "w8a8":
        layers = ops.get("mlpc::IntegerMatMul", 0) + ops.get("mlpc::IntegerConv", 0)
        dp4a = [k for k in kernels if k["rule"] == "dp4a"]
        assert layers and dp4a, ops
        assert all(k["math"] == "int8_dp4a" for k in dp4a)
        assert "__dp4a(" in source and re.search(r"\bdp4a\.s32\.s32\b", ptx)
    else:
        assert ops.get("mlpc::DequantMatMul", 0) >= 2 and "Gemm" not in ops, (
            ops
        )  # attention MatMuls stay float
        dequant = [k for k in kernels if "dequant_matmul" in k["name"]]
        assert len(dequant) >= 2
        # packed 4-bit weights (uchar) are read by the kernels and decoded in half precision
        signatures = re.findall(r"void __launch_bounds__\(\d+\) (\w*dequant_matmul\w*)\(([^)]*)\)", source)
        assert signatures and all("uchar*" in params for _, params in signatures)
        assert all(k["math"] in ("fp16", "fp16_tensor") for k in dequant), [k["math"] for k in dequant]


@pytest.mark.parametrize(("model", "scheme", "dtype", "target"), SUBSET)
def test_quantized_cuda_build(
    model: str,
    scheme: str,
    dtype: str,
    target: str,
    quantized_cuda_artifact: Callable[[str, str, str, str], Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = quantized_cuda_artifact(model, scheme, dtype, target)
    check_quantized(path, scheme, dtype, target)
    check_inspect(path, capsys)


@pytest.mark.slow  # 12 quantized builds: 3.5 min together here
@pytest.mark.parametrize(("model", "scheme", "dtype", "target"), FULL)
def test_quantized_cuda_build_full_matrix(
    model: str,
    scheme: str,
    dtype: str,
    target: str,
    quantized_cuda_artifact: Callable[[str, str, str, str], Path],
) -> None:
    check_quantized(quantized_cuda_artifact(model, scheme, dtype, target), scheme, dtype, target)


@pytest.mark.slow  # two wmma builds: 7 min here (nvcc/ptxas on the tensor-core kernels for two archs)
def test_large_fp16_and_w4a16_matmuls_use_tensor_cores(tmp_path: Path) -> None:
    """dlight tensorizes fp16 matmuls whose M, N and K all exceed 64 onto wmma (mma.sync in the
    PTX) — for plain fp16 and for w4a16, whose dequantize stage feeds the fragments."""
    import onnx
    from onnx import TensorProto, helper

    m, k, n = 128, 256, 256
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        [onnx.numpy_helper.from_array(rng.normal(0, 0.1, (k, n)).astype(np.float32), "w")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), tmp_path / "mm.onnx")
    calib = {"x": rng.normal(0, 1, (2, m, k)).astype(np.float32)}
    for name, options in (
        ("fp16", {}),
        ("w4a16", {"quantize": "w4a16", "calibration": calib, "quant_config": {"rounding": "nearest"}}),
    ):
        art = mlpc.compile(
            tmp_path / "mm.onnx", target="cuda/sm_80", output_dir=tmp_path / name, dtype="fp16", **options
        )
        check_artifact(art.path, "fp16", "cuda/sm_80")
        assert "mma.sync" in (art.path / "device.ptx").read_text()
        matmul = [k for k in json.loads((art.path / KERNELS).read_text())["kernels"] if "matmul" in k["name"]]
        assert [k["math"] for k in matmul] == ["fp16_tensor"]
