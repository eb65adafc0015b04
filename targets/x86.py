"""x86 targets: the host CPU and named instruction-set levels."""
from __future__ import annotations

import os

from mlpc.targets.target import Target, host_cpu_flags

_TRIPLE = "x86_64-linux-gnu"

X86_TAGS = [
    Target(
        name="x86",
        kind="x86",
        description="any x86-64 CPU with SSE4.2 (portable baseline)",
        tvm={"kind": "llvm", "mtriple": _TRIPLE, "mcpu": "x86-64-v2"},
        required_features=("sse4_2",),
        capabilities={"vector_bits": 128, "int8_dot": None, "fast_bits": [8, 32]},
    ),
    Target(
        name="x86/avx2",
        kind="x86",
        description="x86-64 with AVX2 and FMA (Haswell, Zen and later)",
        tvm={"kind": "llvm", "mtriple": _TRIPLE, "mcpu": "haswell"},
        required_features=("avx2", "fma"),
        capabilities={"vector_bits": 256, "int8_dot": "pmaddubsw", "fast_bits": [8, 32]},
    ),
    Target(
        name="x86/avx512-vnni",
        kind="x86",
        description="x86-64 with AVX-512 and VNNI int8 dot products (Cascade Lake and later)",
        tvm={"kind": "llvm", "mtriple": _TRIPLE, "mcpu": "cascadelake"},
        required_features=("avx512f", "avx512_vnni"),
        capabilities={"vector_bits": 512, "int8_dot": "vnni", "fast_bits": [8, 32]},
    ),
]


def host_target() -> Target:
    """Return a Target for this machine's CPU, as LLVM detects it."""
    from tvm.target import codegen

    cpu = codegen.llvm_get_system_cpu()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    flags = host_cpu_flags()
    vector_bits = 512 if "avx512f" in flags else 256 if "avx2" in flags else 128
    return Target(
        name="host",
        kind="x86",
        description=f"this machine ({cpu}, {cores} cores)",
        tvm={"kind": "llvm", "mtriple": _TRIPLE, "mcpu": cpu, "num-cores": cores},
        required_features=tuple(f for f in ("avx2", "fma", "avx512f") if f in flags),
        capabilities={
            "vector_bits": vector_bits,
            "int8_dot": "vnni" if "avx512_vnni" in flags else "pmaddubsw" if "avx2" in flags else None,
            "fast_bits": [8, 32],
            "cores": cores,
        },
    )
