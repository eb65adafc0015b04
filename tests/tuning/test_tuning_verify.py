"""Tuned kernels are verified on the host: a record slower than the default schedule is never used,
a faster one is (even when MetaSchedule ranked another first), and old databases still work.

The records here are real schedules committed through MetaSchedule's database API, with run times
(`run_secs`) that are synthetic: they stand for the optimistic figures a noisy search can record
(the minimum over many candidates), which is what made `mlpc tune` pick slower kernels before.
The verification must ignore them and time the schedules themselves.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import mlpc
from mlpc.backends.tvm.tuning import extract_tasks, model_module, tune
from mlpc.backends.tvm.tuning_db import (
    TuningDatabase,
    apply_databases_pass,
    apply_record,
    cache_dir,
    record_id,
)
from mlpc.targets import get_target

# Synthetic MetaSchedule figure: 0.1 µs, far below any real time of these kernels (tens of µs), so
# the old rule (MetaSchedule's best vs the default measured before tuning) takes the record.
SYNTHETIC_FAST_SECS = 1e-7


def _matmul_model(path: Path, m: int = 256, k: int = 16, n: int = 256) -> Path:
    """y = x @ W with a short reduction (k=16): mlpc's default schedule only spreads its rows over
    the threads and leaves the rest to LLVM."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n)).astype(np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        initializer=[weight],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def _task(model: Path):
    target = get_target("host")
    [task] = extract_tasks(model_module(model, target), target.tvm_target())
    return task


def _naive_trace(task):
    """A real but nearly unscheduled kernel: the matmul's reduction loop split in 4, nothing else
    (no parallel loops, no SIMD, no register tile)."""
    from tvm import s_tir

    sch = s_tir.Schedule(task.mod)
    *_, k = sch.get_loops(sch.get_sblock("matmul"))
    sch.split(k, [None, 4])
    return sch.trace


def _strided_trace(task):
    """A real, very slow matmul: loops reordered so the innermost one walks down the columns of x
    and of the result (strided, no SIMD) — about 100× slower than any other schedule here."""
    from tvm import s_tir

    sch = s_tir.Schedule(task.mod)
    i, j, k = sch.get_loops(sch.get_sblock("matmul"))
    sch.reorder(j, k, i)
    return sch.trace


def _tiled_trace(task):
    """A register-tiled matmul: 4 rows × 16 columns accumulated in a small buffer across the
    reduction, columns in SIMD vectors, tiles in parallel (what the default rule does for long
    reductions; for k=16 it does not). 1.5–1.8× faster than the default here, loaded or not."""
    from tvm import s_tir

    sch = s_tir.Schedule(task.mod)
    block = sch.get_sblock("matmul")
    i, j, k = sch.get_loops(block)
    io, ii = sch.split(i, [None, 4])
    jo, ji = sch.split(j, [None, 16])
    sch.reorder(io, jo, k, ii, ji)
    outer = sch.fuse(io, jo)
    sch.parallel(outer)
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, outer)
    sch.unroll(ii)
    sch.vectorize(ji)
    sch.decompose_reduction(block, k)
    sch.vectorize(sch.get_loops(acc)[-1])
    return sch.trace


def _write_records(db_path: Path, task, traces_secs: list[tuple]) -> TuningDatabase:
    """Commit each (trace, run_secs) as a record of `task` through MetaSchedule's database API and
    mark the task searched (so `tune` runs no search, only what follows it)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    tvm_target = get_target("host").tvm_target()
    db = TuningDatabase.open(db_path, tvm_target, create=True)
    wl = db.db.commit_workload(task.mod)
    for trace, secs in traces_secs:
        db.db.commit_tuning_record(
            ms.database.TuningRecord(trace, wl, [secs], tvm_target, ArgInfo.from_prim_func(task.mod["main"]))
        )
    db.tasks[task.key] = {
        "name": task.name,
        "trials": len(traces_secs),
        "exhausted": True,
        "best_ms": min(s for _, s in traces_secs) * 1e3,
    }
    db.save_meta()
    return db


def _check_output(art, model: Path, x: np.ndarray) -> None:
    import onnxruntime as ort

    want = ort.InferenceSession(str(model)).run(None, {"x": x})[0]
    np.testing.assert_allclose(art.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)


def test_slower_record_is_rejected_by_verification(
    dense_onnx: Path, tmp_path: Path, private_cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task = _task(dense_onnx)
    db_path = tmp_path / "db"
    _write_records(db_path, task, [(_naive_trace(task), SYNTHETIC_FAST_SECS)])

    # Without a verdict (a database from before verification) the old rule applies, with a debug
    # log: the synthetic figure beats the default one measured before tuning, so the record is taken.
    with caplog.at_level(logging.DEBUG, logger="mlpc.backends.tvm.tuning_db"):
        old = mlpc.compile(dense_onnx, tuning_db=db_path, output_dir=tmp_path / "old")
    assert old.manifest["backend"]["tuned_kernels"] == [task.name]
    assert any("no verified figure" in r.getMessage() for r in caplog.records)

    # `tune` finds the task searched but unverified, times the record against the default schedule
    # and rejects it: naive loops are several times slower than the default schedule.
    result = tune(dense_onnx, "host", db_path, trials=4)
    [tuned] = result.tasks
    verdict = tuned.verified
    assert verdict is not None and verdict["use_tuned"] is False and not tuned.beats_default, verdict
    assert verdict["tuned_ms"] > 2 * verdict["default_ms"] > 0, verdict
    assert verdict["candidates"][0]["search_ms"] == pytest.approx(SYNTHETIC_FAST_SECS * 1e3)
    assert (
        TuningDatabase.open(db_path, get_target("host").tvm_target()).tasks[task.key]["verified"] == verdict
    )
    cache = TuningDatabase.open(cache_dir(get_target("host").tvm_target()), get_target("host").tvm_target())
    assert cache is not None and cache.records(task.mod) == [] and task.key not in cache.tasks

    art = mlpc.compile(dense_onnx, tuning_db=db_path, output_dir=tmp_path / "verified")
    assert art.manifest["backend"]["tuned_kernels"] == []
    _check_output(art, dense_onnx, np.random.default_rng(1).standard_normal((4, 128)).astype(np.float32))


def test_faster_record_is_kept_even_when_not_ranked_first(tmp_path: Path, private_cache: Path) -> None:
    import tvm
    import tvm_ffi

    model = _matmul_model(tmp_path / "matmul.onnx")
    task = _task(model)
    db_path = tmp_path / "db"
    strided, tiled = _strided_trace(task), _tiled_trace(task)
    # MetaSchedule's (synthetic) figures rank the strided record first; the tiled one is the fast one.
    _write_records(db_path, task, [(strided, SYNTHETIC_FAST_SECS), (tiled, 10 * SYNTHETIC_FAST_SECS)])
    db = TuningDatabase.open(db_path, get_target("host").tvm_target())
    [top, second] = db.records(task.mod)
    assert record_id(top) != record_id(second)

    result = tune(model, "host", db_path, trials=4)
    verdict = result.tasks[0].verified
    assert verdict is not None and verdict["use_tuned"] and result.tasks[0].beats_default, verdict
    assert verdict["record"] == record_id(second) and verdict["rank"] == 1, verdict
    assert verdict["tuned_ms"] < verdict["default_ms"], verdict
    strided_ms = next(c["ms"] for c in verdict["candidates"] if c["record"] == record_id(top))
    assert verdict["tuned_ms"] < strided_ms

    # Compile applies the verified record (the tiled schedule), not MetaSchedule's top-1.
    tvm_target = get_target("host").tvm_target()
    names: list[str] = []
    module = tvm.IRModule({"k": task.mod["main"].without_attr("global_symbol")})
    applied = apply_databases_pass([TuningDatabase.open(db_path, tvm_target)], tvm_target, names)(module)
    assert names == ["k"]
    want = apply_record(second).without_attr("global_symbol")
    assert tvm_ffi.structural_equal(applied["k"].without_attr("tirx.is_scheduled"), want)

    x = np.random.default_rng(2).standard_normal((256, 16)).astype(np.float32)
    art = mlpc.compile(model, tuning_db=db_path, output_dir=tmp_path / "tuned")
    assert art.manifest["backend"]["tuned_kernels"] == [task.name]
    _check_output(art, model, x)

    # The user cache got the verified winner with its verdict: compile uses it without --tuning-db.
    cache = TuningDatabase.open(cache_dir(tvm_target), tvm_target)
    assert cache is not None and cache.tasks[task.key]["verified"] == verdict
    assert [record_id(r) for r in cache.records(task.mod)] == [record_id(second)]
    cached = mlpc.compile(model, output_dir=tmp_path / "cached")
    assert cached.manifest["backend"]["tuned_kernels"] == [task.name]
    _check_output(cached, model, x)
