"""MetaSchedule tuning for CUDA targets: what `tuning.tune` uses in place of its CPU pieces.

Candidates are built on this machine for the target's architecture and measured on a GPU:
the local one, or a remote one through TVM's RPC tracker (`--rpc-tracker HOST:PORT --rpc-key KEY`,
TVM's Python `rpc_server` on the GPU machine). No GPU needs to be attached here.

- `require_gpu`: before anything is written, a GPU to measure on must exist — this machine's
  (`Target.missing_on_host`) or the RPC server's (`remote_cuda_device` opens a session through
  the tracker and asks the server for `cuda(0)`); otherwise a TargetError says what to do.
- `extract_cuda_tasks`: the tasks are the kernels of the CUDA build itself — the same passes,
  lowering, precision conversion and fusion (`cuda.fuse_for_gpu`) as `mlpc compile --target cuda/…`
  — except the integer kernels mlpc's own dp4a rule schedules.
- `make_cuda_builder`: MetaSchedule's LocalBuilder whose workers load TVM's CUDA runtime (with
  the stub driver of `cuda_toolchain` when there is no driver) and compile the generated CUDA C
  with nvcc/ptxas/fatbinary for the arch, so each candidate is a shared library (host code plus
  a fatbin with the cubin and PTX) that the GPU machine loads without a compiler. The workers use
  the lazy tensor-intrinsic package (`tuning.install_lazy_tensor_intrin`) against the 46 s import.
- `space_generator`: MetaSchedule's CUDA rules; float16 kernels also get the tensor-core rules
  (their wmma intrinsics are registered by importing `tvm.s_tir.tensor_intrin.cuda`, ~36 s, once).
- `measure_defaults`: each task's kernel under the schedule `mlpc compile` would give it (dp4a
  or dlight), built and run by the same builder and runner as the candidates, so the tuned
  schedule is only used where it measured faster.

    >>> tune("mlp.onnx", "cuda/sm_80", "tuning.json", rpc_tracker="gpu-box:9190", rpc_key="a100")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import importlib
import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from mlpc.errors import InputError, TargetError
from mlpc.targets import Target

logger = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 120.0  # nvcc + ptxas + fatbinary per candidate, on a shared 2-core machine
# EvolutionarySearch options for CUDA. Most random points of a small kernel's CUDA space fail
# VerifyGPUCode (e.g. fewer than a warp of threads: batch-1 matmuls of the zoo MLP, where the
# three design spaces themselves are invalid); with MetaSchedule's defaults (5 failed sampling
# rounds, 50 unmeasured seeds) a population of 32 found none, and 128 took 62 s per round here.
# 50 rounds and 16 seeds: 29 s at 128, 16 s at 32, both with candidates.
SEARCH_OPTIONS = {"max_fail_count": 50, "init_min_unmeasured": 16}
README_HINT = "see the README, 'Tuning for a GPU'"


def parse_tracker(rpc_tracker: str, rpc_key: str | None) -> tuple[str, int]:
    """Split "host:port" into (host, port); raise InputError when it is malformed or the key is missing.

    >>> parse_tracker("gpu-box:9190", "a100")
    ('gpu-box', 9190)
    """
    host, _, port = rpc_tracker.rpartition(":")
    if not host or not port.isdigit() or not rpc_key:
        raise InputError(f"--rpc-tracker {rpc_tracker!r}: give HOST:PORT, and a device key with --rpc-key")
    return host, int(port)


def _compute_capability(arch: str) -> tuple[int, int]:
    digits = arch.removeprefix("sm_")
    return int(digits[:-1]), int(digits[-1])


def remote_cuda_device(target: Target, rpc_tracker: str, rpc_key: str, timeout_s: int = 60) -> str:
    """Open a session with the RPC server registered as `rpc_key` at `rpc_tracker` and return the
    name of its CUDA device 0. Raise TargetError naming the key and tracker when the tracker cannot
    be reached, no server has that key, or the server has no CUDA device, or one older than `target`'s arch."""
    from tvm import rpc

    host, port = parse_tracker(rpc_tracker, rpc_key)
    where = f"RPC key {rpc_key!r} at tracker {rpc_tracker}"
    try:
        socket.create_connection((host, port), timeout=10).close()  # TVM's own connect retries for 60 s
        tracker = rpc.connect_tracker(host, port)
        queues = tracker.summary().get("queue_info", {})
    except (OSError, RuntimeError) as e:
        raise TargetError(
            f"cannot reach the RPC tracker {rpc_tracker} ({e}): start it with "
            f"`python -m tvm.exec.rpc_tracker --port {port}` ({README_HINT})"
        ) from e
    if rpc_key not in queues:
        known = ", ".join(sorted(queues)) or "none"
        raise TargetError(
            f"no RPC server is registered with {where} (keys there: {known}): start "
            f"`python -m tvm.exec.rpc_server --tracker {rpc_tracker} --key {rpc_key}` on the GPU "
            f"machine ({README_HINT})"
        )
    try:
        exists, version, name = _ask_cuda_device(tracker, rpc_key, timeout_s)
    except (OSError, RuntimeError) as e:
        raise TargetError(f"the RPC server with {where} did not answer ({e})") from e
    if not exists:
        raise TargetError(
            f"the RPC server with {where} has no CUDA device (its TVM sees no GPU, or was "
            f"built without CUDA): run the server on the GPU machine, with a CUDA-enabled TVM "
            f"({README_HINT})"
        )
    have = tuple(int(v) for v in version.split(".")[:2])
    want = _compute_capability(str(target.tvm["arch"]))
    if have < want:
        raise TargetError(
            f"the GPU behind {where} ({name}, compute capability {version}) is older than "
            f"{target.name}'s {target.tvm['arch']}: tune with --target cuda/sm_{have[0]}{have[1]} "
            "if mlpc has it, or on a newer GPU"
        )
    if have != want:
        logger.warning(
            "measuring on %s (compute capability %s) for %s (%s): its timings are that part's",
            name,
            version,
            target.name,
            target.tvm["arch"],
        )
    return f"{name} (sm_{have[0]}{have[1]}) via {where}"


def _ask_cuda_device(tracker: Any, rpc_key: str, timeout_s: int) -> tuple[bool, str, str]:
    """(exists, compute version, name) of CUDA device 0 of a server; the session closes on return,
    so the server goes back to the tracker for the runner."""
    session = tracker.request(rpc_key, session_timeout=timeout_s)
    device = session.cuda(0)
    if not device.exist:
        return False, "", ""
    return True, str(device.compute_version), str(device.device_name)


def require_toolkit() -> None:
    """Raise LoweringError unless nvcc, ptxas and fatbinary (which build the candidates) are here."""
    from mlpc.backends.tvm.cuda_toolchain import find_tool

    for tool in ("nvcc", "ptxas", "fatbinary"):
        find_tool(tool)


def require_gpu(target: Target, rpc_tracker: str | None, rpc_key: str | None) -> str:
    """Return a description of the GPU candidates will be measured on; raise TargetError (nothing
    written yet) when there is none: no local GPU and no `rpc_tracker`, or a remote without one
    (LoweringError when the CUDA toolkit that builds the candidates is missing here)."""
    require_toolkit()
    if rpc_tracker is not None:
        if not rpc_key:
            raise InputError(f"--rpc-tracker {rpc_tracker!r}: give the GPU server's key with --rpc-key")
        return remote_cuda_device(target, rpc_tracker, rpc_key)
    missing = target.missing_on_host()
    if missing:
        raise TargetError(
            f"tuning for {target.name} measures every candidate on a GPU, but here {'; '.join(missing)}: "
            "run `mlpc tune` on a machine with an NVIDIA GPU, or measure on one through RPC with "
            f"--rpc-tracker HOST:PORT --rpc-key KEY ({README_HINT})"
        )
    from mlpc.targets.cuda import visible_cuda_devices

    name, (major, minor) = visible_cuda_devices()[0]
    return f"{name} (sm_{major}{minor}) on this machine"


def extract_cuda_tasks(
    mod: tvm.IRModule, tvm_target: tvm.target.Target, dtype: str
) -> tuple[tvm.IRModule, list[str]]:
    """Convert `mod` to `dtype` and fuse it as the CUDA build does; return the fused module and
    the names of the PrimFuncs mlpc's dp4a rule schedules (not tuned: compile keeps that rule)."""
    from mlpc.backends.tvm.cuda import convert_precision, fuse_for_gpu
    from mlpc.backends.tvm.int_cuda import schedule_quad

    fused = fuse_for_gpu(convert_precision(mod, dtype), tvm_target)
    own = []
    for gvar, func in fused.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc):
            try:
                if schedule_quad(func) is not None:
                    own.append(gvar.name_hint)
            except Exception as e:  # not a dp4a-layout kernel
                logger.debug("dp4a rule does not apply to %s: %s", gvar.name_hint, e)
    return fused, own


def space_generator(mod: tvm.IRModule) -> Any:
    """MetaSchedule's post-order-apply space for a CUDA kernel: the CUDA rules, plus the tensor-core
    rules when the kernel reads float16 (fp32 kernels cannot use the f16 wmma intrinsics)."""
    from tvm.s_tir import meta_schedule as ms

    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from mlpc.backends.tvm.tuning import install_lazy_tensor_intrin

    install_lazy_tensor_intrin()  # MetaSchedule imports the package; only the CUDA intrinsics are needed
    half = any(str(info.dtype) == "float16" for info in ArgInfo.from_prim_func(mod["main"]))
    kind = "cuda-tensorcore" if half else "cuda"
    if half:
        importlib.import_module("tvm.s_tir.tensor_intrin.cuda")
    return ms.space_generator.PostOrderApply(sch_rules=kind, postprocs=kind, mutator_probs=kind)


def builder_worker_init(arch: str) -> None:
    """Initializer of the CUDA builder's worker processes: the cheap tensor-intrinsic import,
    TVM's CUDA runtime (stub driver if needed) and nvcc/ptxas/fatbinary for `arch` as TVM's CUDA compiler."""
    import tvm_ffi

    from mlpc.backends.tvm.cuda_toolchain import compile_device_code, ensure_cuda_runtime
    from mlpc.backends.tvm.tuning import install_lazy_tensor_intrin

    install_lazy_tensor_intrin()
    ensure_cuda_runtime()

    def compile_cb(code: str) -> bytearray:
        with tempfile.TemporaryDirectory(prefix="mlpc-candidate-cu-") as tmp:
            return bytearray(compile_device_code(code, arch, Path(tmp)).fatbin)

    tvm_ffi.register_global_func("tvm_callback_cuda_compile", compile_cb, override=True)


def make_cuda_builder(target: Target) -> Any:
    """MetaSchedule's LocalBuilder for CUDA `target`: workers set up by `builder_worker_init`,
    candidates exported as shared libraries linked for the target's host CPU (`tuning.export_shared`)."""
    from tvm.s_tir import meta_schedule as ms

    from mlpc.backends.tvm.cross import is_cross, toolchain
    from mlpc.backends.tvm.tuning import export_shared

    if is_cross(target):  # Jetson: an aarch64 host
        chain = toolchain(target.arch)
        f_export = functools.partial(export_shared, cxx=chain.require(chain.cxx), options=chain.cxx_flags)
    else:
        f_export = functools.partial(export_shared, cxx="g++")
    return ms.builder.LocalBuilder(
        max_workers=2,
        timeout_sec=BUILD_TIMEOUT_S,
        initializer=functools.partial(builder_worker_init, str(target.tvm["arch"])),
        f_export=f_export,
    )


def measure_defaults(tasks: list[Any], tvm_target: tvm.target.Target, builder: Any, runner: Any) -> None:
    """Set each task's `default_ms`: its kernel under `mlpc compile`'s schedule (dp4a or dlight),
    built by `builder` and measured by `runner` like the candidates. A kernel that fails keeps None
    (a warning says why); tuned schedules of such kernels are then used unmeasured against the default."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from mlpc.backends.tvm.cuda import default_gpu_schedule

    owners, inputs = [], []
    for task in tasks:
        scheduled = default_gpu_schedule(task.mod["main"], tvm_target)
        if scheduled is None:
            logger.warning("kernel %s has no default GPU schedule to measure", task.name)
            continue
        owners.append(task)
        inputs.append(ms.builder.BuilderInput(tvm.IRModule({"main": scheduled[1]}), tvm_target))
    if not inputs:
        return
    built = builder.build(inputs)
    runs = []
    for task, result in zip(owners, built):
        if result.error_msg is not None:
            logger.warning(
                "kernel %s: its default schedule did not build (%s)",
                task.name,
                result.error_msg.strip().splitlines()[-1],
            )
            continue
        info = ArgInfo.from_prim_func(task.mod["main"])
        runs.append((task, runner.run([ms.runner.RunnerInput(result.artifact_path, "cuda", info)])[0]))
    for task, future in runs:
        result = future.result()
        if result.error_msg is not None or not result.run_secs:
            logger.warning(
                "kernel %s: its default schedule did not run (%s)",
                task.name,
                (result.error_msg or "no time").strip().splitlines()[-1],
            )
            continue
        task.default_ms = float(np.mean([float(s) for s in result.run_secs])) * 1e3


__all__ = [
    "SEARCH_OPTIONS",
    "builder_worker_init",
    "extract_cuda_tasks",
    "make_cuda_builder",
    "measure_defaults",
    "parse_tracker",
    "remote_cuda_device",
    "require_gpu",
    "require_toolkit",
    "space_generator",
]
