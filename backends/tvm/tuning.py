"""Auto-tuning with TVM MetaSchedule: `mlpc tune`.

The tasks are the fused kernels (PrimFuncs) of the model exactly as `mlpc compile` builds it:
the same mlpc passes, the same lowering, TVM's legalize and fuse passes (`fusion_passes`). Each
task is weighted by its share of the model's time (its default-scheduled kernel measured once
on this machine, times the number of calls; a loop-work estimate when measuring is not possible)
and the trial budget goes to the tasks where it pays. Each task is then tuned in turn with
MetaSchedule's evolutionary search; records are appended to the database as they are measured,
so Ctrl-C or a time limit keeps them, and a second run skips the tasks that spent their budget.
When a task's search ends (or stops), its best records are re-timed against the default schedule
on the host (`tuning_verify`); the verdict, stored per task, decides what compile uses, and only
verified winners go to the user cache.
CUDA targets (`tuning_cuda`) build candidates here with nvcc and measure them on a GPU, this
machine's or one reached through an RPC tracker; their tasks are weighed by loop work.

    result = tune("mlp.onnx", "host", db_path="tuning-db", trials=64)
    mlpc.compile("mlp.onnx", tuning_db="tuning-db")
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import math
import signal
import sys
import tempfile
import time
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tvm

from mlpc.backends.tvm.tuning_db import TuningDatabase, cache_dir, verdict_wins, workload, workload_hash
from mlpc.backends.tvm.tuning_verify import random_args, verify_task
from mlpc.errors import InputError, LoweringError, MlpcError, UnsupportedOpError
from mlpc.targets import Target, get_target

logger = logging.getLogger(__name__)

TENSOR_INTRIN = "tvm.s_tir.tensor_intrin"
POPULATION = 128  # half of MetaSchedule's default: measured to halve search time at equal quality
GENETIC_ITERS = 2
INTRINSICS = {"x86": "x86", "arm": "arm_cpu"}  # tensor_intrin submodule per target kind
MIN_TASK_TRIALS = 4  # a task worth less than this share of the budget is not tuned


class TuningStopped(MlpcError):
    """Raised inside MetaSchedule's loop to stop tuning (time limit, Ctrl-C, `should_stop`)."""


def install_lazy_tensor_intrin() -> None:
    """Make `import tvm.s_tir.tensor_intrin` cheap in this process.

    MetaSchedule imports that package (46 s here, mostly CUDA intrinsics) in the tuning process and in
    every fresh builder worker, whose 30 s timeout it then exceeds. An empty package object with the
    real `__path__` stands in for it, so a submodule (`...tensor_intrin.x86`) still imports on demand.
    Also used as the builder workers' initializer.
    """
    if TENSOR_INTRIN in sys.modules:
        return
    import tvm.s_tir

    spec = importlib.util.find_spec(TENSOR_INTRIN)
    if spec is None or spec.submodule_search_locations is None:
        return
    package = types.ModuleType(TENSOR_INTRIN)
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules[TENSOR_INTRIN] = package
    tvm.s_tir.tensor_intrin = package


@dataclass
class TuningTask:
    """One fused kernel to tune: its name, workload, calls per inference, weight and trial budget."""

    name: str
    mod: tvm.IRModule
    key: str
    calls: int
    default_ms: float | None = None  # measured latency of one call with the default schedule
    weight: float = 0.0
    budget: int = 0
    trials: int = 0  # spent so far (this run and earlier ones)
    best_ms: float | None = None  # MetaSchedule's best figure (the minimum over its candidates)
    status: str = "pending"  # pending | tuning | verifying | done | skipped | stopped
    verified: dict[str, Any] | None = None  # `tuning_verify.verify_task`'s verdict, when there is one

    @property
    def beats_default(self) -> bool:
        """True when compile will use the tuned schedule: by the verdict when there is one (see
        `tuning_db.verdict_wins`), else when MetaSchedule's best figure is below the default one
        (or that is unknown)."""
        if self.verified is not None:
            return verdict_wins(self.verified)
        return self.best_ms is not None and (self.default_ms is None or self.best_ms < self.default_ms)

    @property
    def done(self) -> bool:
        """True when the task spent its budget (or was marked done by an earlier run)."""
        return self.status in ("done", "skipped")


@dataclass
class TuneResult:
    """What `tune` did: the tasks (with budgets, trials and best latencies), the database path,
    whether it stopped early, and the seconds spent."""

    tasks: list[TuningTask]
    db_path: Path
    stopped: str | None = None
    seconds: float = 0.0
    cache_path: Path | None = None
    cached: list[str] = field(default_factory=list)  # kernels whose schedule went to the user cache in this run
    extra: dict[str, Any] = field(default_factory=dict)


def model_module(model: Any, target: Target, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 float_dtype: str = "float32") -> tvm.IRModule:
    """Load `model` and run mlpc's default pass pipeline and lowering as `mlpc compile` does;
    return the Relax IRModule before TVM's pipeline (`float_dtype`: the CUDA build's precision)."""
    from mlpc.backends.tvm.backend import check_static_shapes, default_opset
    from mlpc.backends.tvm.lower import lower_graph, unsupported_nodes
    from mlpc.frontend import load_model
    from mlpc.pass_infra import PassContext, PassManager
    from mlpc.pipeline import default_pipeline, load_entry_point_passes

    loaded = load_model(model, input_shapes=input_shapes)
    load_entry_point_passes()
    PassManager(default_pipeline(target)).run(loaded.model, PassContext(target=target, opt_level=2))
    opset = default_opset(loaded.model)
    missing = unsupported_nodes(loaded.model.graph, opset)
    if missing:
        ops = sorted({n.op_type for n in missing})
        raise UnsupportedOpError(f"{len(missing)} node(s) use ops mlpc cannot compile ({', '.join(ops)}); "
                                 "`mlpc compile` names them all")
    check_static_shapes(loaded.model.graph)
    cuda = target.kind == "cuda"
    return lower_graph(loaded.model.graph, opset, groups=not cuda, device="cuda" if cuda else "cpu",
                       float_dtype=float_dtype, int8_dot=target.capabilities.get("int8_dot"))


def extract_tasks(mod: tvm.IRModule, tvm_target: tvm.target.Target, dtype: str = "float32") -> list[TuningTask]:
    """Fuse `mod` as the build for `tvm_target` does (mlpc's CPU fusion passes; for CUDA the
    precision conversion to `dtype` and the GPU fusion) and return one task per distinct fused
    kernel, with its number of calls from the Relax functions."""
    from tvm import relax

    from mlpc.backends.tvm.cpu_schedule import fusion_passes

    kept: list[str] = []
    if str(tvm_target.kind.name) == "cuda":
        from mlpc.backends.tvm.tuning_cuda import extract_cuda_tasks

        fused, kept = extract_cuda_tasks(mod, tvm_target, dtype)
    else:
        with tvm_target:
            fused = tvm.transform.Sequential(fusion_passes(tvm_target))(mod)
    calls: dict[str, int] = {}

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name == "relax.call_tir":
            callee = expr.args[0]
            if isinstance(callee, relax.GlobalVar):
                calls[callee.name_hint] = calls.get(callee.name_hint, 0) + 1

    for func in fused.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    tasks: dict[str, TuningTask] = {}
    for gvar, func in fused.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")) \
                or gvar.name_hint in kept:
            continue
        wl = workload(func)
        key = workload_hash(wl)
        count = calls.get(gvar.name_hint, 1)
        if key in tasks:  # the same kernel shape fused twice: one task, more calls
            tasks[key].calls += count
        else:
            tasks[key] = TuningTask(gvar.name_hint, wl, key, count)
    return sorted(tasks.values(), key=lambda t: t.name)


def _loop_work(mod: tvm.IRModule) -> float:
    """Sum over blocks of the product of their iteration extents: a FLOP-like size estimate."""
    from tvm import s_tir

    sch = s_tir.Schedule(mod)
    total = 0.0
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        total += math.prod(int(iv.dom.extent) for iv in sch.get(block).iter_vars)
    return total


def measure_default(task: TuningTask, target: Target) -> float:
    """Build `task`'s kernel with mlpc's default schedule and return its median latency in ms on the
    host (to weigh the tasks; `tuning_verify` compares tuned and default kernels)."""
    from mlpc.backends.tvm.build import default_kernel

    func = default_kernel(task.mod["main"], target)
    lib = tvm.compile(tvm.IRModule({"main": func}), target=target.tvm_target())
    timer = lib.mod.time_evaluator("main", tvm.cpu(), number=3, repeat=5, min_repeat_ms=20)
    return float(np.median(timer(*random_args(func)).results)) * 1e3


def weigh_tasks(tasks: list[TuningTask], target: Target, measure: bool) -> None:
    """Set each task's weight to its share of the model time: default latency × calls when every
    task has one (measured here when `measure`: code for the host), else loop work × calls."""
    for task in tasks:
        if measure:
            try:
                task.default_ms = measure_default(task, target)
            except Exception as e:
                logger.warning("could not time kernel %s with its default schedule (%s); weighing by size",
                               task.name, str(e).strip().splitlines()[-1])
    timed = all(task.default_ms is not None for task in tasks)
    for task in tasks:
        task.weight = (task.default_ms if timed else _loop_work(task.mod) * 1e-6) * task.calls
    total = sum(t.weight for t in tasks) or 1.0
    for task in tasks:
        task.weight /= total


def allocate_budget(weights: Sequence[float], trials: int, min_trials: int = MIN_TASK_TRIALS) -> list[int]:
    """Split `trials` over tasks in proportion to `weights` (summing to `trials`); tasks whose share
    would be below `min_trials` get none, the lightest dropped first.

    >>> allocate_budget([0.7, 0.25, 0.05], 20)
    [15, 5, 0]
    """
    active = [i for i, w in enumerate(weights) if w > 0] or list(range(len(weights)))
    while len(active) > 1:
        total = sum(weights[i] for i in active)
        lightest = min(active, key=lambda i: weights[i])
        if trials * weights[lightest] / total >= min_trials:
            break
        active.remove(lightest)
    budget = [0] * len(weights)
    if not active or trials <= 0:
        return budget
    total = sum(weights[i] for i in active) or 1.0
    shares = {i: trials * weights[i] / total for i in active}
    for i in active:
        budget[i] = int(shares[i])
    for i in sorted(active, key=lambda i: shares[i] - budget[i], reverse=True)[: trials - sum(budget)]:
        budget[i] += 1
    return budget


def make_runner(rpc_tracker: str | None, rpc_key: str | None, timeout_sec: float = 60.0) -> Any:
    """MetaSchedule's LocalRunner, or its RPCRunner through the tracker "host:port" with device `rpc_key`."""
    from tvm.s_tir import meta_schedule as ms

    from mlpc.backends.tvm.tuning_cuda import parse_tracker

    if rpc_tracker is None:
        return ms.runner.LocalRunner(timeout_sec=timeout_sec)
    host, port = parse_tracker(rpc_tracker, rpc_key)
    config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=rpc_key,
                                 session_timeout_sec=int(timeout_sec))
    return ms.runner.RPCRunner(rpc_config=config, max_workers=1)


def export_shared(mod: Any, cxx: str, options: Sequence[str] = ()) -> str:
    """MetaSchedule builder export for another architecture: the candidate as a shared library
    linked by the cross compiler `cxx`, which a board's C++ RPC server (`mlpc-rpc-server`) loads.
    (TVM's default export, a .tar of objects, needs the Python server and a compiler on the board.)"""
    from tvm.support import cc

    path = Path(tempfile.mkdtemp(prefix="mlpc-candidate-")) / "tvm_tmp_mod.so"
    mod.export_library(str(path), fcompile=cc.cross_compiler(cxx, options=list(options)))
    return str(path)


def make_builder(target: Target) -> Any:
    """MetaSchedule's LocalBuilder (workers with the lazy tensor-intrinsic import); for a target of
    another architecture its candidates are cross-linked shared libraries (`export_shared`); for
    CUDA targets `tuning_cuda.make_cuda_builder`."""
    from tvm.s_tir import meta_schedule as ms

    from mlpc.backends.tvm.cross import is_cross, toolchain

    if target.kind == "cuda":
        from mlpc.backends.tvm.tuning_cuda import make_cuda_builder

        return make_cuda_builder(target)

    f_export = None
    if is_cross(target):
        chain = toolchain(target.arch)
        f_export = functools.partial(export_shared, cxx=chain.require(chain.cxx), options=chain.cxx_flags)
    return ms.builder.LocalBuilder(max_workers=2, initializer=install_lazy_tensor_intrin, f_export=f_export)


ProgressFn = Callable[[list[TuningTask], TuningTask], None]


def _progress_callback(db: TuningDatabase, task: TuningTask, tasks: list[TuningTask],
                       on_progress: ProgressFn | None, should_stop: Callable[[], str | None]) -> Any:
    """A MetaSchedule measure callback: count trials, track the best latency, save progress,
    report it, and stop the search when `should_stop` returns a reason."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    @derived_object
    class _Progress(PyMeasureCallback):
        def apply(self, _scheduler, _task_id, candidates, _builds, runs) -> None:  # noqa: ANN001
            task.trials += len(candidates)
            for run in runs:
                if run.error_msg is None and run.run_secs:
                    ms_ = float(np.mean([float(s) for s in run.run_secs])) * 1e3
                    task.best_ms = ms_ if task.best_ms is None else min(task.best_ms, ms_)
            db.tasks[task.key].update(trials=task.trials, best_ms=task.best_ms)
            db.save_meta()
            if on_progress is not None:
                on_progress(tasks, task)
            reason = should_stop()
            if reason:
                raise TuningStopped(reason)

    return _Progress()


def _update_cache(db: TuningDatabase, cache: TuningDatabase | None, task: TuningTask) -> bool:
    """Copy `task`'s record compile would use into the user cache, with what decided it: the verdict's
    record when it won (a verdict that kept the default copies nothing); without a verdict (remote
    measurement), MetaSchedule's best when it beat the default figure, with both figures. Returns
    True when a record was copied."""
    from tvm.s_tir import meta_schedule as ms

    if cache is None or not task.beats_default:
        return False
    if task.verified is not None:
        record = db.record(task.mod, task.verified["record"], task.verified.get("search_ms"))
        entry = {"name": task.name, "verified": task.verified}
    else:
        record = db.best(task.mod)
        entry = {"name": task.name, "best_ms": task.best_ms, "default_ms": task.default_ms}
    if record is None:
        return False
    try:
        wl = cache.db.commit_workload(task.mod)
        cache.db.commit_tuning_record(ms.database.TuningRecord(
            record.trace, wl, record.run_secs, record.target, record.args_info))
        if task.verified is not None or "verified" not in cache.tasks.get(task.key, {}):
            cache.tasks[task.key] = entry  # (a verdict measured on the host outranks an unverified entry)
            cache.save_meta()
    except Exception as e:  # the cache is an optimization: never lose a tuning run over it
        logger.warning("could not write the tuning cache %s: %s", cache.path, e)
        return False
    return True


def _needs_verdict(task: TuningTask) -> bool:
    """True when `task` has measured records and no verdict, or one older than its records."""
    return task.trials > 0 and (task.verified is None or task.verified.get("trials") != task.trials)


def _settle(task: TuningTask, tasks: list[TuningTask], db: TuningDatabase, cache: TuningDatabase | None,
            target: Target | None, on_progress: ProgressFn | None) -> bool:
    """After `task`'s search: verify its records on the host when `target` is given (and the verdict
    is missing or older than its records), save the verdict, then update the user cache (True when
    it got the task's schedule)."""
    if target is not None and _needs_verdict(task):
        status, task.status = task.status, "verifying"
        if on_progress is not None:
            on_progress(tasks, task)
        task.verified = verify_task(db, task, target)
        task.status = status
        entry = db.tasks.setdefault(task.key, {})
        if task.verified is None:
            entry.pop("verified", None)
        else:
            entry["verified"] = task.verified
        db.save_meta()
        if on_progress is not None:
            on_progress(tasks, task)
    return _update_cache(db, cache, task)


def tune(
    model: Any,
    target: Any = "host",
    db_path: str | Path = "tuning-db",
    trials: int = 64,
    *,
    time_limit_s: float | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    dtype: str = "float32",
    rpc_tracker: str | None = None,
    rpc_key: str | None = None,
    trials_per_batch: int = 32,
    population: int = POPULATION,
    use_cache: bool = True,
    on_progress: ProgressFn | None = None,
    should_stop: Callable[[list[TuningTask]], str | None] | None = None,
    seed: int = 0,
    runner: Any = None,
) -> TuneResult:
    """Tune `model`'s kernels for `target` with MetaSchedule, `trials` measurements in all.

    Records go to the database directory `db_path` (created or resumed), and the schedules verified
    faster than the default ones to the user cache (`use_cache`). `time_limit_s` stops after that
    many seconds; Ctrl-C and `should_stop(tasks)` returning a reason stop too — the records measured
    so far are kept (and the stopped task verified) and a later call resumes. `rpc_tracker` ("host:port") and `rpc_key` measure on a remote device.
    CUDA targets need a GPU to measure on, this machine's or the RPC server's (checked first:
    TargetError, nothing written); `dtype` is their compute precision, as in `mlpc compile --dtype`.
    `runner`, a MetaSchedule Runner, measures instead of the local or RPC one (no GPU check then).
    `trials_per_batch` candidates are measured per search round, drawn from `population` candidates.
    `on_progress(tasks, task)` is called after every measured batch and around each verification.
    On the host, each task's best records are then re-timed against the default schedule
    (`tuning_verify`); the verdict goes into the database and decides what compile uses.
    Returns a TuneResult.
    """
    from tvm.s_tir import meta_schedule as ms

    start = time.perf_counter()
    tgt = get_target(target)
    if tgt.kind not in ("x86", "arm", "cuda"):
        raise InputError(f"target {tgt.name!r} ({tgt.kind}): mlpc tunes CPU (x86, arm) and CUDA targets")
    if trials <= 0:
        raise InputError(f"--trials {trials}: give a positive number of trials")
    cuda = tgt.kind == "cuda"
    if cuda:
        from mlpc.backends.tvm.cuda import normalize_dtype
        from mlpc.backends.tvm.tuning_cuda import require_gpu, require_toolkit

        dtype = normalize_dtype(dtype)
        require_toolkit()
        device = require_gpu(tgt, rpc_tracker, rpc_key) if runner is None else f"the given runner {runner!r}"
        logger.info("measuring candidates for %s on %s", tgt.name, device)
    elif dtype not in ("float32", "fp32"):
        raise InputError(f"--dtype {dtype} needs a CUDA target; {tgt.name!r} computes in float32")
    install_lazy_tensor_intrin()
    # MetaSchedule's rules tensorize with these intrinsics: x86 with VNNI, and every ARM target
    # (its default rules name the NEON dot-product intrinsics whether or not the core has them)
    if not cuda and (tgt.capabilities.get("int8_dot") or tgt.kind == "arm"):
        importlib.import_module(f"{TENSOR_INTRIN}.{INTRINSICS[tgt.kind]}")
    tvm_target = tgt.tvm_target()
    db = TuningDatabase.open(db_path, tvm_target, create=True)
    if db is None:
        raise InputError(f"tuning database {db_path} cannot be used for target {tgt.name} (see the warning); "
                         "give another --db")
    cache = TuningDatabase.open(cache_dir(tvm_target), tvm_target, create=True) if use_cache else None
    tasks = extract_tasks(model_module(model, tgt, input_shapes, dtype), tvm_target, dtype)
    if not tasks:
        raise InputError(f"{model}: the model has no kernels to tune")
    builder = make_builder(tgt)
    # Candidates measured on this machine are verified here; remote ones (RPC, a given runner, CUDA)
    # keep MetaSchedule's figure against the default one.
    on_host = not cuda and rpc_tracker is None and runner is None and not tgt.missing_on_host()
    runner = make_runner(rpc_tracker, rpc_key) if runner is None else runner
    search_options: dict[str, int] = {}
    if cuda:  # mlpc compile's schedules, timed on the GPU like the candidates (once per database)
        from mlpc.backends.tvm.tuning_cuda import SEARCH_OPTIONS, measure_defaults

        search_options = SEARCH_OPTIONS
        for task in tasks:
            task.default_ms = db.tasks.get(task.key, {}).get("default_ms")
        measure_defaults([t for t in tasks if t.default_ms is None], tvm_target, builder, runner)
    weigh_tasks(tasks, tgt, measure=not cuda and rpc_tracker is None and not tgt.missing_on_host())
    for task, budget in zip(tasks, allocate_budget([t.weight for t in tasks], trials)):
        task.budget = budget
        saved = db.tasks.get(task.key, {})
        task.trials = int(saved.get("trials", 0))
        task.best_ms = saved.get("best_ms")
        task.verified = saved.get("verified")
        if budget == 0:
            task.status = "skipped"
        elif saved.get("exhausted") or task.trials >= budget:
            task.status = "done"
        db.tasks[task.key] = {**saved, "name": task.name, "budget": budget, "trials": task.trials,
                              "best_ms": task.best_ms, "default_ms": task.default_ms, "weight": round(task.weight, 6)}
    db.save_meta()
    deadline = None if time_limit_s is None else start + time_limit_s
    interrupted: list[str] = []

    def stop_reason() -> str | None:
        if interrupted:
            return interrupted[0]
        if deadline is not None and time.perf_counter() >= deadline:
            return f"time limit of {time_limit_s:g}s reached"
        return should_stop(tasks) if should_stop is not None else None

    def on_sigint(_signum: int, _frame: Any) -> None:
        interrupted.append("interrupted (Ctrl-C)")
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    previous = signal.signal(signal.SIGINT, on_sigint) if _main_thread() else None
    result = TuneResult(tasks, Path(db_path), cache_path=None if cache is None else cache.path)
    try:
        with tempfile.TemporaryDirectory(prefix="mlpc-tune-") as work_dir:
            for task in sorted(tasks, key=lambda t: -t.weight):
                if task.done:
                    continue
                result.stopped = stop_reason()
                if result.stopped:
                    break
                search = ms.search_strategy.EvolutionarySearch(population_size=population,
                                                               genetic_num_iters=GENETIC_ITERS, **search_options)
                result.stopped = _tune_task(task, tasks, db, tvm_target, builder, runner, work_dir, search,
                                            trials_per_batch, on_progress, stop_reason, seed)
                if _settle(task, tasks, db, cache, tgt if on_host else None, on_progress):
                    result.cached.append(task.name)
                if result.stopped:
                    break
        if on_host and not interrupted:  # tasks measured by an earlier run that lack a verdict (after Ctrl-C: next run)
            for task in tasks:
                if _needs_verdict(task) and _settle(task, tasks, db, cache, tgt, on_progress):
                    result.cached.append(task.name)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        db.save_meta()
    result.seconds = time.perf_counter() - start
    logger.info("tuning %s: %d trials in %.0fs%s", db_path, sum(t.trials for t in tasks), result.seconds,
                f" ({result.stopped})" if result.stopped else "")
    return result


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _tune_task(task: TuningTask, tasks: list[TuningTask], db: TuningDatabase,
               tvm_target: tvm.target.Target, builder: Any, runner: Any, work_dir: str, search: Any,
               trials_per_batch: int,
               on_progress: ProgressFn | None, stop_reason: Callable[[], str | None], seed: int) -> str | None:
    """Tune one task up to its remaining budget; return the reason it stopped early, or None."""
    from tvm.s_tir import meta_schedule as ms

    remaining = task.budget - task.trials
    task.status = "tuning"
    if on_progress is not None:
        on_progress(tasks, task)
    space: Any = "post-order-apply"
    if str(tvm_target.kind.name) == "cuda":
        from mlpc.backends.tvm.tuning_cuda import space_generator

        space = space_generator(task.mod)
    context = ms.TuneContext(
        mod=task.mod, target=tvm_target, space_generator=space, search_strategy=search,
        task_name=task.name, num_threads=2, rand_state=seed + task.trials,
    ).clone()
    callbacks = [*ms.MeasureCallback.create("default"),
                 _progress_callback(db, task, tasks, on_progress, stop_reason)]
    stopped = None
    try:
        ms.tune_tasks(tasks=[context], task_weights=[1.0], work_dir=work_dir, max_trials_global=remaining,
                      max_trials_per_task=remaining, num_trials_per_iter=min(trials_per_batch, remaining),
                      builder=builder, runner=runner, database=db.db, measure_callbacks=callbacks,
                      task_scheduler="round-robin")
    except Exception as e:  # TuningStopped comes back through TVM's FFI as a RuntimeError
        stopped = stop_reason()
        if stopped is None:
            task.status = "stopped"
            raise LoweringError(f"tuning kernel {task.name} failed: {str(e).strip().splitlines()[-1]}") from e
    if stopped is None:
        task.status = "done"
        # The search can run out of candidates before the budget: remember it so resume skips it.
        db.tasks[task.key].update(trials=task.trials, best_ms=task.best_ms, exhausted=task.trials < task.budget)
    else:
        task.status = "stopped"
    db.save_meta()
    if on_progress is not None:
        on_progress(tasks, task)
    return stopped


__all__ = ["TuneResult", "TuningTask", "allocate_budget", "extract_tasks", "install_lazy_tensor_intrin",
           "make_runner", "model_module", "tune", "weigh_tasks"]
