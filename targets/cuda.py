"""CUDA targets: NVIDIA parts as data (SM architecture, memory bandwidth, SMs, peak throughput).

    >>> from mlpc.targets import get_target
    >>> t = get_target("cuda/sm_90")
    >>> gpu_part(t).memory_gbps
    3350.0

Peak figures are the vendors' datasheet numbers for dense math (no 2:4 sparsity), in TFLOPS
(TOPS for int8). `fp16`/`bf16` are the CUDA-core (non-tensor-core) rates, which is what
code without MMA instructions reaches; `*_tensor` are the tensor-core rates.
The roofline estimate in `mlpc inspect` reads these numbers; they are the model's only inputs.
"""
from __future__ import annotations

import ctypes
import logging
import platform
from dataclasses import asdict, dataclass
from typing import Any

from mlpc.targets.target import Target

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuPart:
    """One NVIDIA GPU: what the CUDA schedules and the roofline model need to know.

    `peak_tflops` maps a math kind ("fp32", "fp16", "bf16", "fp16_tensor", "bf16_tensor",
    "int8_tensor") to its dense peak in TFLOPS/TOPS.

        >>> A100.peak("fp32")
        19.5
    """

    part: str
    arch: str  # "sm_80"
    sm_count: int
    memory_gbps: float  # GB/s = 1e9 bytes per second
    peak_tflops: tuple[tuple[str, float], ...]
    max_shared_memory_per_block: int = 49152  # bytes a block may allocate statically
    max_threads_per_block: int = 1024
    launch_overhead_us: float = 2.0  # kernel launch + tail on an idle GPU, per kernel

    def peak(self, kind: str) -> float:
        """Return the dense peak of math `kind` in TFLOPS (raise KeyError if the part lacks it)."""
        return dict(self.peak_tflops)[kind]

    @property
    def compute_capability(self) -> tuple[int, int]:
        """The (major, minor) compute capability, e.g. (8, 0) for sm_80."""
        digits = self.arch.removeprefix("sm_")
        return int(digits[:-1]), int(digits[-1])

    def to_json(self) -> dict[str, Any]:
        """Return the part as a JSON-serialisable dict (stored in Target.capabilities["gpu"])."""
        data = asdict(self)
        data["peak_tflops"] = dict(self.peak_tflops)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GpuPart:
        """Rebuild a part from `to_json()` output (e.g. an artifact's manifest)."""
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["peak_tflops"] = tuple(sorted(dict(fields["peak_tflops"]).items()))
        return cls(**fields)


def _peaks(**kinds: float) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(kinds.items()))


# NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): FP32 19.5 TFLOPS, FP16/BF16 tensor 312,
# INT8 tensor 624 TOPS, HBM2e 2,039 GB/s; A100 whitepaper: 108 SMs, FP16 (non-tensor) 78,
# BF16 (non-tensor) 39 TFLOPS.
A100 = GpuPart(
    part="NVIDIA A100 SXM4 80GB", arch="sm_80", sm_count=108, memory_gbps=2039.0,
    peak_tflops=_peaks(fp32=19.5, fp16=78.0, bf16=39.0, fp16_tensor=312.0, bf16_tensor=312.0,
                       int8_tensor=624.0),
)
# NVIDIA A10 datasheet: FP32 31.2 TFLOPS, FP16/BF16 tensor 125 (dense), INT8 250 TOPS,
# GDDR6 600 GB/s, 72 SMs (GA102); GA10x runs FP16/BF16 on CUDA cores at the FP32 rate.
A10 = GpuPart(
    part="NVIDIA A10", arch="sm_86", sm_count=72, memory_gbps=600.0,
    peak_tflops=_peaks(fp32=31.2, fp16=31.2, bf16=31.2, fp16_tensor=125.0, bf16_tensor=125.0,
                       int8_tensor=250.0),
)
# NVIDIA L4 datasheet: FP32 30.3 TFLOPS, FP16/BF16 tensor 242 and INT8 485 TOPS *with sparsity*
# (halved here for dense), 300 GB/s GDDR6, 58 SMs (AD104); CUDA-core FP16 at the FP32 rate.
L4 = GpuPart(
    part="NVIDIA L4", arch="sm_89", sm_count=58, memory_gbps=300.0,
    peak_tflops=_peaks(fp32=30.3, fp16=30.3, bf16=30.3, fp16_tensor=121.0, bf16_tensor=121.0,
                       int8_tensor=242.5),
)
# NVIDIA H100 datasheet (SXM5 80GB): FP32 67 TFLOPS, FP16/BF16 tensor 989.4 (dense; 1,979
# with sparsity), INT8 1,979 TOPS dense, HBM3 3.35 TB/s; H100 whitepaper: 132 SMs, FP16 and BF16
# (non-tensor) 133.8 TFLOPS.
H100 = GpuPart(
    part="NVIDIA H100 SXM5 80GB", arch="sm_90", sm_count=132, memory_gbps=3350.0,
    peak_tflops=_peaks(fp32=67.0, fp16=133.8, bf16=133.8, fp16_tensor=989.4, bf16_tensor=989.4,
                       int8_tensor=1979.0),
)
# NVIDIA Jetson AGX Orin 64GB datasheet: Ampere GPU with 2,048 CUDA cores and 64 tensor cores
# (16 SMs) at up to 1.3 GHz, 170 sparse INT8 TOPS from the GPU (85 dense), LPDDR5 204.8 GB/s.
# Derived: FP32 = 2,048 × 2 × 1.3 GHz = 5.3 TFLOPS; FP16 tensor = half of dense INT8 = 42.5;
# CUDA-core FP16 at twice the FP32 rate (as in GA100-class SMs).
ORIN = GpuPart(
    part="NVIDIA Jetson AGX Orin 64GB", arch="sm_87", sm_count=16, memory_gbps=204.8,
    peak_tflops=_peaks(fp32=5.3, fp16=10.6, bf16=10.6, fp16_tensor=42.5, bf16_tensor=42.5,
                       int8_tensor=85.0),
)

PARTS = (A100, A10, L4, H100, ORIN)


def _cuda_target(name: str, part: GpuPart, description: str, host_arch: str = "x86_64") -> Target:
    return Target(
        name=name,
        kind="cuda",
        description=description,
        tvm={
            "kind": "cuda",
            "arch": part.arch,
            "max_shared_memory_per_block": part.max_shared_memory_per_block,
            "max_threads_per_block": part.max_threads_per_block,
            "thread_warp_size": 32,
            "host": {"kind": "llvm", "mtriple": f"{host_arch}-linux-gnu"},
        },
        arch=host_arch,
        capabilities={"gpu": part.to_json(), "fast_bits": [8, 16, 32],
                      "dtypes": ["float32", "float16", "bfloat16"]},
    )


CUDA_TAGS = [
    _cuda_target("cuda", A100, "NVIDIA GPU, default sm_80 (A100-class, Ampere and later)"),
    _cuda_target("cuda/sm_80", A100, "NVIDIA A100 (sm_80)"),
    _cuda_target("cuda/sm_86", A10, "NVIDIA A10 / RTX 30xx (sm_86)"),
    _cuda_target("cuda/sm_89", L4, "NVIDIA L4 / Ada (sm_89)"),
    _cuda_target("cuda/sm_90", H100, "NVIDIA H100 (sm_90)"),
    _cuda_target("cuda/jetson-orin", ORIN, "NVIDIA Jetson AGX Orin (sm_87, aarch64 host)",
                 host_arch="aarch64"),
]


def gpu_part(target: Target) -> GpuPart:
    """Return the GpuPart of a CUDA target (raise ValueError for other kinds)."""
    if target.kind != "cuda" or "gpu" not in target.capabilities:
        raise ValueError(f"target {target.name!r} is not a CUDA target")
    return GpuPart.from_json(target.capabilities["gpu"])


def visible_cuda_devices() -> list[tuple[str, tuple[int, int]]]:
    """Return [(name, (major, minor))] of the CUDA devices the driver sees; [] without a driver."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return []
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return []
    devices = []
    for ordinal in range(count.value):
        dev, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        if lib.cuDeviceGet(ctypes.byref(dev), ordinal) != 0:
            continue
        lib.cuDeviceGetName(name, 256, dev)
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, dev)  # COMPUTE_CAPABILITY_MAJOR
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, dev)  # COMPUTE_CAPABILITY_MINOR
        devices.append((name.value.decode(errors="replace"), (major.value, minor.value)))
    return devices


def cuda_missing_on_host(target: Target) -> list[str]:
    """Return why code for CUDA `target` cannot run here: a foreign host CPU, no device, or none
    new enough."""
    machine = platform.machine().lower().replace("amd64", "x86_64").replace("arm64", "aarch64")
    if machine != target.arch:
        return [f"its host code is for {target.arch}, this machine is {machine}"]
    devices = visible_cuda_devices()
    if not devices:
        return ["no CUDA device is visible (no NVIDIA driver or GPU on this machine)"]
    need = gpu_part(target).compute_capability
    if not any(cc >= need for _, cc in devices):  # the fatbin's PTX JIT-compiles for newer parts
        seen = ", ".join(f"{n} (sm_{a}{b})" for n, (a, b) in devices)
        return [f"built for sm_{need[0]}{need[1]}, the visible CUDA devices are {seen}"]
    return []
