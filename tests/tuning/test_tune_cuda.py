"""`mlpc tune` for CUDA targets without a GPU: what can be checked here is checked for real.

- the tasks are the kernels of the CUDA build (`mlpc compile --target cuda/...`), fp32 and fp16;
- mlpc's CUDA builder compiles MetaSchedule candidates with TVM's CUDA codegen and nvcc/ptxas into
  shared libraries whose embedded fatbin holds a cubin and PTX for sm_80;
- with no GPU here and no --rpc-tracker, and with an RPC server that has no CUDA device, tuning
  stops with a clear error before writing anything;
- `mlpc compile --target cuda/... --tuning-db` schedules a kernel from the database instead of dlight.
  No GPU measured that record: the test writes a real candidate's trace (sampled by MetaSchedule,
  the one the builder compiled) with a SYNTHETIC run time of 1 µs through TVM's database API. What is
  tested is that compile applies the database, not any measurement.
The whole tune → compile → run flow on a GPU is the `gpu`-marked test at the end (skipped here).
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_rpc import KEY, rpc_tracker  # noqa: F401 - the loopback tracker + CPU-only server fixture

import mlpc
from mlpc.backends.tvm.tuning import extract_tasks, make_builder, model_module, tune
from mlpc.backends.tvm.tuning_db import META, RECORDS, TuningDatabase
from mlpc.cli import main
from mlpc.targets import get_target
from mlpc.targets.cuda import visible_cuda_devices

TARGET = "cuda/sm_80"
SYNTHETIC_RUN_SECS = 1e-6  # stated, not measured: see the module docstring
FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
EM_CUDA = 190

gpu = pytest.mark.skipif(not visible_cuda_devices(), reason="no CUDA device")


def fatbin_images(blob: bytes) -> list[tuple[str, int]]:
    """(kind, sm) of every image in every fatbin embedded in `blob`: ("elf", 80) is a cubin for
    sm_80, ("ptx", 80) PTX for compute_80 (layout: 16-byte container header, 64-byte entry headers)."""
    images = []
    pos = blob.find(FATBIN_MAGIC)
    while pos >= 0:
        header_size, fat_size = (
            struct.unpack_from("<HQ", blob, pos + 6)[0],
            struct.unpack_from("<Q", blob, pos + 8)[0],
        )
        entry, end = pos + header_size, pos + header_size + fat_size
        while entry < end:
            (kind,) = struct.unpack_from("<H", blob, entry)
            entry_header, size = struct.unpack_from("<IQ", blob, entry + 4)
            (arch,) = struct.unpack_from("<I", blob, entry + 28)
            images.append(({1: "ptx", 2: "elf"}.get(kind, str(kind)), arch))
            entry += entry_header + size
        pos = blob.find(FATBIN_MAGIC, end)
    return images


def cuda_cubins(blob: bytes) -> list[int]:
    """The SM number of every CUDA ELF (e_machine EM_CUDA) inside `blob` (e_flags, ABI version ≥ 8)."""
    found, pos = [], blob.find(b"\x7fELF")
    while pos >= 0:
        if struct.unpack_from("<H", blob, pos + 18)[0] == EM_CUDA:
            (flags,) = struct.unpack_from("<I", blob, pos + 48)
            found.append((flags >> 8) & 0xFF if blob[pos + 8] >= 8 else flags & 0xFF)
        pos = blob.find(b"\x7fELF", pos + 1)
    return found


@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The zoo MLP (three Gemm+ReLU kernels) as ONNX."""
    from mlpc import zoo

    return zoo.export_onnx("mlp", tmp_path_factory.mktemp("zoo") / "mlp.onnx", opset=18)


def _sample_candidates(task, tvm_target, count: int) -> list:  # noqa: ANN001
    """`count` candidates for `task` as MetaSchedule's search makes them: design space from mlpc's
    CUDA space generator, random decisions, postprocessors applied (ReplayTrace strategy)."""
    from tvm.s_tir import meta_schedule as ms

    from mlpc.backends.tvm.tuning_cuda import space_generator

    ctx = ms.TuneContext(
        mod=task.mod,
        target=tvm_target,
        space_generator=space_generator(task.mod),
        search_strategy=ms.search_strategy.ReplayTrace(),
        task_name=task.name,
        num_threads=1,
        rand_state=7,
    )
    ctx.pre_tuning(max_trials=count, num_trials_per_iter=count, design_spaces=ctx.generate_design_space())
    return list(ctx.generate_measure_candidates())


def _args(task) -> list:
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    return list(ArgInfo.from_prim_func(task.mod["main"]))


@pytest.fixture(scope="module")
def built(mlp_onnx: Path) -> dict:
    """The MLP's CUDA tasks, and for its largest kernel candidates compiled by mlpc's CUDA builder."""
    from tvm.s_tir import meta_schedule as ms

    target = get_target(TARGET)
    tvm_target = target.tvm_target()
    module = model_module(mlp_onnx, target)
    tasks = extract_tasks(module, tvm_target)
    task = max(tasks, key=lambda t: int(np.prod([int(d) for d in _args(t)[1].shape])))
    candidates = _sample_candidates(task, tvm_target, 2)
    results = make_builder(target).build([ms.builder.BuilderInput(c.sch.mod, tvm_target) for c in candidates])
    return {
        "target": target,
        "tvm_target": tvm_target,
        "module": module,
        "tasks": tasks,
        "task": task,
        "candidates": candidates,
        "results": results,
    }


def test_cuda_tasks_are_the_kernels_of_the_cuda_build(built: dict) -> None:
    import tvm_ffi

    from mlpc.backends.tvm.cuda import convert_precision, fuse_for_gpu, schedule_for_gpu
    from mlpc.backends.tvm.tuning_db import workload

    tvm_target, module, tasks = built["tvm_target"], built["module"], built["tasks"]
    for dtype, found in (("float32", tasks), ("float16", extract_tasks(module, tvm_target, "float16"))):
        # what `mlpc compile --target cuda/sm_80 [--dtype fp16]` schedules, kernel for kernel
        converted = convert_precision(module, dtype)
        _, plans = schedule_for_gpu(converted, tvm_target)
        assert sorted(t.name for t in found) == sorted(p["function"] for p in plans)
        fused = fuse_for_gpu(converted, tvm_target)
        for task in found:
            assert tvm_ffi.structural_equal(task.mod, workload(fused[task.name]))
    assert len(tasks) == 3 and all(t.calls == 1 for t in tasks)
    assert all(str(a.dtype) == "float32" for t in tasks for a in _args(t))
    half = [t for t in found if "matmul" in t.name]  # fp16: the matmuls read float16 operands
    assert len(half) == 3 and all(any(str(a.dtype) == "float16" for a in _args(t)) for t in half)
    assert {t.key for t in found}.isdisjoint(t.key for t in tasks)


def test_builder_compiles_candidates_for_sm_80(built: dict) -> None:
    assert len(built["results"]) == 2
    for candidate, result in zip(built["candidates"], built["results"]):
        assert result.error_msg is None, result.error_msg
        library = Path(result.artifact_path)
        assert library.suffix == ".so"
        blob = library.read_bytes()
        assert blob[:4] == b"\x7fELF" and struct.unpack_from("<H", blob, 18)[0] == 62  # x86-64 host code
        assert sorted(fatbin_images(blob)) == [("elf", 80), ("ptx", 80)]
        assert cuda_cubins(blob) == [80]
        assert b"main_kernel" in blob  # the device function TVM names after the PrimFunc
        # the candidate is a MetaSchedule schedule: thread-bound loops from its trace
        assert "threadIdx.x" in candidate.sch.mod.script()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(bool(visible_cuda_devices()), reason="this machine has a CUDA device")
def test_no_gpu_and_no_rpc_is_refused_with_nothing_written(
    mlp_onnx: Path, tmp_path: Path, private_cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "tuning.json"
    assert main(["tune", str(mlp_onnx), "--target", TARGET, "--trials", "8", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "measures every candidate on a GPU" in err and "--rpc-tracker" in err and "no CUDA device" in err
    assert not db.exists() and not (private_cache / "tuning").exists()
    # a tracker nobody listens on: named, nothing written
    dead = f"127.0.0.1:{_free_port()}"
    assert (
        main(
            [
                "tune",
                str(mlp_onnx),
                "--target",
                TARGET,
                "--rpc-tracker",
                dead,
                "--rpc-key",
                "a100",
                "--db",
                str(db),
            ]
        )
        == 2
    )
    assert f"cannot reach the RPC tracker {dead}" in capsys.readouterr().err
    assert not db.exists()


@pytest.mark.timeout(300)
def test_rpc_server_without_cuda_is_refused(
    mlp_onnx: Path,
    tmp_path: Path,
    private_cache: Path,
    rpc_tracker: tuple[int, Path],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    tracker = f"127.0.0.1:{rpc_tracker[0]}"
    db = tmp_path / "tuning.json"
    assert (
        main(
            [
                "tune",
                str(mlp_onnx),
                "--target",
                TARGET,
                "--rpc-tracker",
                tracker,
                "--rpc-key",
                KEY,
                "--db",
                str(db),
                "--trials",
                "8",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert f"RPC key '{KEY}' at tracker {tracker} has no CUDA device" in err
    assert not db.exists() and not (private_cache / "tuning").exists()
    assert (
        main(
            [
                "tune",
                str(mlp_onnx),
                "--target",
                TARGET,
                "--rpc-tracker",
                tracker,
                "--rpc-key",
                "no-such-gpu",
                "--db",
                str(db),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "no RPC server is registered with RPC key 'no-such-gpu'" in err and KEY in err
    assert not db.exists()


def test_compile_applies_the_tuning_database(mlp_onnx: Path, built: dict, tmp_path: Path) -> None:
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from mlpc.backends.tvm.cuda import default_gpu_schedule
    from mlpc.backends.tvm.cuda import _thread_extents

    task, tvm_target = built["task"], built["tvm_target"]
    [candidate, _] = built["candidates"]
    db_path = tmp_path / "tuning.json"
    db = TuningDatabase.open(db_path, tvm_target, create=True)
    # A real candidate's trace; the run time is SYNTHETIC (no GPU here), stated in the module docstring.
    db.db.commit_tuning_record(
        ms.database.TuningRecord(
            candidate.sch.trace,
            db.db.commit_workload(task.mod),
            [SYNTHETIC_RUN_SECS],
            tvm_target,
            ArgInfo.from_prim_func(task.mod["main"]),
        )
    )
    db.tasks[task.key] = {
        "name": task.name,
        "budget": 1,
        "trials": 1,
        "best_ms": SYNTHETIC_RUN_SECS * 1e3,
        "default_ms": None,
    }
    db.save_meta()

    art = mlpc.compile(mlp_onnx, target=TARGET, tuning_db=db_path, output_dir=tmp_path / "tuned")
    assert art.manifest["backend"]["tuned_kernels"] == [task.name]
    kernels = json.loads((art.path / "kernels.json").read_text())["kernels"]
    rules = {k["function"]: k["rule"] for k in kernels}
    assert rules[task.name] == "MetaSchedule"
    assert all(rule != "MetaSchedule" for name, rule in rules.items() if name != task.name)
    # the launch shape is the candidate's, not dlight's
    [tuned_launch] = [(k["grid"], k["block"]) for k in kernels if k["function"] == task.name]
    [candidate_tags] = _thread_extents(candidate.sch.mod["main"].body)
    assert tuned_launch[1] == [candidate_tags.get(f"threadIdx.{a}", 1) for a in "xyz"]
    _, default = default_gpu_schedule(task.mod["main"], tvm_target)
    [default_tags] = _thread_extents(default.body)
    assert candidate_tags != default_tags, "pick a candidate whose launch differs from dlight's"
    cubin = (art.path / "device.cubin").read_bytes()
    assert cubin in (art.path / "model.so").read_bytes() and cuda_cubins(cubin) == [80]

    # `mlpc tune` measured the tuned schedule slower than compile's default one: not used
    db.tasks[task.key]["default_ms"] = SYNTHETIC_RUN_SECS * 1e3 / 2
    db.save_meta()
    assert (
        main(
            [
                "compile",
                str(mlp_onnx),
                "--target",
                TARGET,
                "--tuning-db",
                str(db_path),
                "-o",
                str(tmp_path / "slower"),
            ]
        )
        == 0
    )
    slower = json.loads((tmp_path / "slower" / "manifest.json").read_text())["backend"]
    assert slower["tuned_kernels"] == []
    assert "MetaSchedule" not in {
        k["rule"] for k in json.loads((tmp_path / "slower" / "kernels.json").read_text())["kernels"]
    }
    assert json.loads((db_path / META).read_text())["target"] == str(tvm_target)
    assert len((db_path / RECORDS).read_text().splitlines()) == 1


@pytest.mark.slow  # ~5 min here: MetaSchedule's search over three CUDA kernels, nvcc per candidate
@pytest.mark.timeout(1200)
def test_tune_loop_for_cuda_with_tvm_dummy_runner(mlp_onnx: Path, tmp_path: Path) -> None:
    """The whole `tune` loop for CUDA except the GPU: evolutionary search, candidates built by the
    CUDA builder, compile's default schedules built and "measured", records and progress written,
    compile applying them. The RUN TIMES ARE RANDOM: they come from TVM's own test double
    (`meta_schedule.testing.dummy_object.DummyRunner`, 5-30 s per run); only the mechanics are checked."""
    from tvm.s_tir.meta_schedule.testing.dummy_object import DummyRunner

    db = tmp_path / "tuning.json"
    result = tune(
        mlp_onnx,
        TARGET,
        db,
        trials=12,
        trials_per_batch=4,
        population=32,
        use_cache=False,
        runner=DummyRunner(),
    )
    assert result.stopped is None
    assert all(
        t.default_ms is not None for t in result.tasks
    )  # the default schedules went through the runner
    tuned = [t for t in result.tasks if t.budget]
    assert sum(t.budget for t in tuned) == 12 and all(t.trials == t.budget and t.best_ms for t in tuned)
    assert len((db / RECORDS).read_text().splitlines()) == 12
    art = mlpc.compile(mlp_onnx, target=TARGET, tuning_db=db, output_dir=tmp_path / "tuned")
    winners = sorted(t.name for t in result.tasks if t.beats_default)
    assert sorted(art.manifest["backend"]["tuned_kernels"]) == winners
    rules = {k["function"]: k["rule"] for k in json.loads((art.path / "kernels.json").read_text())["kernels"]}
    assert sorted(name for name, rule in rules.items() if rule == "MetaSchedule") == winners


@pytest.fixture
def gpu_rpc_tracker(tmp_path: Path) -> Iterator[str]:
    """A tracker and a TVM Python RPC server on loopback on this (GPU) machine; yields "host:port"."""
    from test_rpc import _wait_for_port, _wait_for_server

    tracker_port, server_port = _free_port(), _free_port()
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tvm.exec.rpc_tracker",
                "--host",
                "127.0.0.1",
                "--port",
                str(tracker_port),
                "--port-end",
                str(tracker_port + 1),
            ]
        )
    ]
    try:
        _wait_for_port(tracker_port)
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tvm.exec.rpc_server",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(server_port),
                    "--port-end",
                    str(server_port + 1),
                    "--tracker",
                    f"127.0.0.1:{tracker_port}",
                    "--key",
                    KEY,
                ]
            )
        )
        _wait_for_server(tracker_port)
        yield f"127.0.0.1:{tracker_port}"
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.gpu
@gpu
@pytest.mark.timeout(1800)
def test_tune_compile_and_run_on_the_gpu(mlp_onnx: Path, tmp_path: Path, gpu_rpc_tracker: str) -> None:
    """On a GPU machine: tune through RPC (the server on loopback sees the GPU), compile with the
    database, run, compare with onnxruntime."""
    import onnxruntime as ort

    from mlpc import zoo

    db = tmp_path / "tuning.json"
    result = tune(
        mlp_onnx,
        "cuda",
        db,
        trials=24,
        trials_per_batch=8,
        population=64,
        use_cache=False,
        rpc_tracker=gpu_rpc_tracker,
        rpc_key=KEY,
    )
    assert result.stopped is None
    assert all(
        t.default_ms is not None and t.default_ms > 0 for t in result.tasks
    )  # dlight, measured on the GPU
    measured = [t for t in result.tasks if t.trials]
    assert measured and all(t.best_ms is not None and t.best_ms > 0 for t in measured)
    art = mlpc.compile(mlp_onnx, target="cuda", tuning_db=db, output_dir=tmp_path / "tuned")
    assert set(art.manifest["backend"]["tuned_kernels"]) == {t.name for t in result.tasks if t.beats_default}
    (x,) = (t.numpy() for t in zoo.example_inputs("mlp"))
    want = ort.InferenceSession(str(mlp_onnx)).run(None, {"x": x})[0]
    got = mlpc.load(art.path).run({"x": x})["logits"]
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
