"""CUDA target data, the ptxas report parser and the roofline model, against hand-computed numbers."""
from __future__ import annotations

import pytest

from mlpc.backends.tvm.cuda_toolchain import KernelResources, parse_ptxas_log
from mlpc.inspect_cuda import estimate, kernel_estimate_us
from mlpc.targets import get_target, list_targets
from mlpc.targets.cuda import A100, H100, GpuPart, gpu_part, visible_cuda_devices

TAGS = ["cuda", "cuda/sm_80", "cuda/sm_86", "cuda/sm_89", "cuda/sm_90", "cuda/jetson-orin"]


def test_tags_are_registered_with_their_parts() -> None:
    names = [t.name for t in list_targets()]
    assert all(tag in names for tag in TAGS)
    archs = {tag: get_target(tag).tvm["arch"] for tag in TAGS}
    assert archs == {"cuda": "sm_80", "cuda/sm_80": "sm_80", "cuda/sm_86": "sm_86", "cuda/sm_89": "sm_89",
                     "cuda/sm_90": "sm_90", "cuda/jetson-orin": "sm_87"}
    assert gpu_part(get_target("cuda/sm_90")) == H100
    assert (H100.sm_count, H100.memory_gbps, H100.peak("fp32")) == (132, 3350.0, 67.0)
    assert (A100.sm_count, A100.memory_gbps, A100.peak("fp16_tensor")) == (108, 2039.0, 312.0)
    assert get_target("cuda/jetson-orin").arch == "aarch64"
    for tag in TAGS:
        part = gpu_part(get_target(tag))
        assert part.peak("fp16_tensor") > part.peak("fp16") >= part.peak("fp32") > 0
        assert GpuPart.from_json(part.to_json()) == part
        get_target(tag).tvm_target()  # TVM accepts the dict


def test_missing_on_host_names_the_missing_device() -> None:
    problems = get_target("cuda/sm_80").missing_on_host()
    if visible_cuda_devices():
        assert all("no CUDA device" not in p for p in problems)
    else:
        assert problems == ["no CUDA device is visible (no NVIDIA driver or GPU on this machine)"]


def test_gpu_part_rejects_cpu_targets() -> None:
    with pytest.raises(ValueError, match="not a CUDA target"):
        gpu_part(get_target("x86"))


PTXAS_LOG = """\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'fused_conv_kernel' for 'sm_80'
ptxas info    : Function properties for fused_conv_kernel
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 72 registers, used 1 barriers, 6912 bytes smem, 380 bytes cmem[0]
ptxas info    : Compiling entry function 'add_kernel' for 'sm_80'
ptxas info    : Function properties for add_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 8 registers, used 0 barriers, 368 bytes cmem[0]
"""


def test_parse_ptxas_log() -> None:
    assert parse_ptxas_log(PTXAS_LOG) == {
        "fused_conv_kernel": KernelResources(registers=72, shared_bytes=6912, spill_stores=8, spill_loads=12,
                                             stack_bytes=16),
        "add_kernel": KernelResources(registers=8, shared_bytes=0, spill_stores=0, spill_loads=0, stack_bytes=0),
    }


def test_roofline_matches_hand_computation() -> None:
    # 1 GFLOP fp32 over 216 blocks (all 108 SMs busy): 1e9 / 19.5e12 s = 51.28 µs; 2 MB: 0.98 µs.
    big = {"grid": [216, 1, 1], "flops": 1e9, "bytes": 2_000_000, "math": "fp32", "calls": 2}
    est = kernel_estimate_us(big, A100)
    assert est["compute_us"] == pytest.approx(1e9 / 19.5e12 * 1e6)
    assert est["memory_us"] == pytest.approx(2e6 / 2039e9 * 1e6)
    assert est["time_us"] == pytest.approx(1e9 / 19.5e12 * 1e6 + 2.0)
    # 27 blocks keep a quarter of the SMs busy: memory time × 4; fp16 runs at the 78 TFLOPS rate.
    small = {"grid": [27, 1, 1], "flops": 78e6, "bytes": 2_039_000, "math": "fp16", "calls": 1}
    est_small = kernel_estimate_us(small, A100)
    assert est_small["memory_us"] == pytest.approx(4.0)
    assert est_small["compute_us"] == pytest.approx(4.0)
    total = estimate([big, small], A100)
    assert total["estimated_latency_us"] == pytest.approx(2 * est["time_us"] + est_small["time_us"])
    assert [k["bound"] for k in total["kernels"]] == ["compute", "memory"]
    assert "estimate" in total["label"]
