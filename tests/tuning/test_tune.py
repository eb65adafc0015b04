"""`mlpc tune`: a small budget, interrupted and resumed; the database changes what compile builds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import mlpc
from mlpc.backends.tvm.tuning import allocate_budget, tune
from mlpc.backends.tvm.tuning_db import META, RECORDS, TuningDatabase, cache_dir
from mlpc.cli import main
from mlpc.targets import get_target

SEARCH = 32  # a small evolutionary population: tests check the mechanics, not the speed found


def _records(db: Path) -> int:
    return len((db / RECORDS).read_text().splitlines())


def test_allocate_budget_follows_weights_and_drops_cheap_tasks() -> None:
    assert allocate_budget([0.7, 0.25, 0.05], 20) == [15, 5, 0]
    assert allocate_budget([0.5, 0.5], 9) in ([5, 4], [4, 5])
    assert sum(allocate_budget([0.1] * 10, 64)) == 64
    assert allocate_budget([0.9, 0.1], 8) == [8, 0]  # 0.8 trial would buy nothing


def test_tune_interrupt_resume_and_compile(dense_onnx: Path, tmp_path: Path, private_cache: Path) -> None:
    db = tmp_path / "tuning.json"
    # Stop after the first measured batch of 4 of the 8 trials, as an interruption would.
    first = tune(dense_onnx, "host", db, trials=8, trials_per_batch=4, population=SEARCH,
                 should_stop=lambda tasks: "budget callback" if sum(t.trials for t in tasks) >= 4 else None)
    assert first.stopped == "budget callback"
    [task] = first.tasks
    assert (task.trials, task.budget, task.status) == (4, 8, "stopped")
    assert _records(db) == 4
    assert task.verified is not None and task.verified["trials"] == 4  # verified even though stopped
    # The verdict names its record so that a database read back from the files finds it (records the
    # search committed in memory print their traces differently from the ones read back).
    reopened = TuningDatabase.open(db, get_target("host").tvm_target())
    assert reopened.record(task.mod, task.verified["record"], task.verified["search_ms"]) is not None
    meta = json.loads((db / META).read_text())
    assert meta["tasks"][task.key]["verified"] == task.verified
    assert meta["target"] == str(get_target("host").tvm_target()) and meta["mlpc_version"] == mlpc.__version__

    second = tune(dense_onnx, "host", db, trials=8, trials_per_batch=4, population=SEARCH)  # resumes where it stopped
    assert second.stopped is None
    assert (second.tasks[0].trials, second.tasks[0].status) == (8, "done")
    assert _records(db) == 8
    assert second.tasks[0].best_ms is not None and second.tasks[0].best_ms > 0
    verdict = second.tasks[0].verified  # re-verified: the search added records
    assert verdict is not None and verdict["trials"] == 8 and verdict["default_ms"] > 0 and verdict["tuned_ms"] > 0

    # A third run (through the CLI) finds nothing left to do and measures nothing.
    assert main(["tune", str(dense_onnx), "--trials", "8", "--db", str(db)]) == 0
    assert _records(db) == 8
    assert json.loads((db / META).read_text())["tasks"][task.key]["verified"] == verdict  # kept, not re-measured
    # The user cache (written by tune when tuning won) applies without --tuning-db; an empty cache
    # gives default schedules.
    if second.tasks[0].beats_default:
        assert cache_dir(get_target("host").tvm_target()).is_dir()
        cached = mlpc.compile(dense_onnx, output_dir=tmp_path / "cached")
        assert cached.manifest["backend"]["tuned_kernels"] == [task.name]
    if (private_cache / "tuning").exists():
        (private_cache / "tuning").rename(private_cache / "elsewhere")
    default = mlpc.compile(dense_onnx, output_dir=tmp_path / "default")
    assert default.manifest["backend"]["tuned_kernels"] == []

    # Compile skips a tuned kernel the verification measured slower than the default schedule, or
    # faster by less than the margin: with 8 trials on a shared machine either can happen, so fix the
    # verdict both ways and check each.
    meta = json.loads((db / META).read_text())
    progress = meta["tasks"][task.key]
    assert progress["default_ms"] > 0 and progress["best_ms"] > 0
    for tuned_ms, used in ((2.0, False), (0.99, False), (0.5, True)):
        figures = {"tuned_ms": tuned_ms * verdict["default_ms"], "default_ms": verdict["default_ms"]}
        (db / META).write_text(json.dumps({**meta, "tasks": {task.key: {**progress, "verified": {**verdict, **figures}}}}))
        art = mlpc.compile(dense_onnx, tuning_db=db, output_dir=tmp_path / f"verdict-{tuned_ms}")
        assert art.manifest["backend"]["tuned_kernels"] == ([task.name] if used else [])

    tuned = mlpc.compile(dense_onnx, tuning_db=db, verify=True, output_dir=tmp_path / "tuned")
    assert tuned.manifest["backend"]["tuned_kernels"] == [task.name]
    x = np.random.default_rng(1).standard_normal((4, 128)).astype(np.float32)
    want = ort.InferenceSession(str(dense_onnx)).run(None, {"x": x})[0]
    np.testing.assert_allclose(tuned.run({"x": x})["y"], want, rtol=1e-4, atol=1e-4)

    assert main(["compile", str(dense_onnx), "-o", str(tmp_path / "cli"), "--tuning-db", str(db)]) == 0
    assert json.loads((tmp_path / "cli" / "manifest.json").read_text())["backend"]["tuned_kernels"] == [task.name]
    _check_tuned_tir_differs(dense_onnx, db)

def _check_tuned_tir_differs(model: Path, db_path: Path) -> None:
    """The applied schedule is the database's, not mlpc's default one (compare the TIR)."""
    import tvm
    import tvm_ffi

    from mlpc.backends.tvm.cpu_schedule import schedule_primfunc
    from mlpc.backends.tvm.tuning import extract_tasks, model_module
    from mlpc.backends.tvm.tuning_db import apply_databases_pass

    target = get_target("host")
    tvm_target = target.tvm_target()
    [task] = extract_tasks(model_module(model, target), tvm_target)
    module = tvm.IRModule({"k": task.mod["main"].without_attr("global_symbol")})
    names: list[str] = []
    applied = apply_databases_pass([TuningDatabase.open(db_path, tvm_target)], tvm_target, names)(module)
    assert names == ["k"] and applied["k"].attrs["tirx.is_scheduled"]
    default = schedule_primfunc(module["k"], 8)
    assert not tvm_ffi.structural_equal(applied["k"].without_attr("tirx.is_scheduled"), default)


@pytest.mark.parametrize("bad", ["bad json", "other target", "other tvm", "bad records"])
def test_bad_database_is_ignored_with_a_warning(dense_onnx: Path, tmp_path: Path, bad: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    db = tmp_path / "db"
    TuningDatabase.open(db, get_target("host").tvm_target(), create=True)
    meta = json.loads((db / META).read_text())
    if bad == "bad json":
        (db / META).write_text("{not json")
    elif bad == "other target":
        (db / META).write_text(json.dumps({**meta, "target": str(get_target("x86/avx512-vnni").tvm_target())}))
    elif bad == "other tvm":
        (db / META).write_text(json.dumps({**meta, "tvm_version": "0.1.0"}))
    else:
        (db / RECORDS).write_text("[1, 2, garbage\n")
        (db / "database_workload.json").write_text("][\n")
    with caplog.at_level("WARNING"):
        art = mlpc.compile(dense_onnx, tuning_db=db, output_dir=tmp_path / "out", verify=True)
    assert art.manifest["backend"]["tuned_kernels"] == []
    assert any(str(db) in r.getMessage() and "ignored" in r.getMessage() for r in caplog.records)
