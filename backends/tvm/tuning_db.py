"""Tuning databases: MetaSchedule's JSON database in a directory, with what mlpc needs around it.

A database directory holds MetaSchedule's two line-oriented files (`database_workload.json`,
`database_tuning_record.json`, appended to as measurements arrive, so an interrupted run keeps
what it measured) and `mlpc_tuning.json`: the format, the mlpc and TVM versions, the TVM target
the records were measured for, and per task the trial budget, the trials spent (for resume) and
the verdict of `tuning_verify`: the best records and the default schedule re-timed on the host
by one evaluator ("verified": tuned_ms, default_ms, the chosen record's id, use_tuned). Compile
applies a kernel's record only when that verdict says it beats the default by `VERIFIED_MARGIN`;
a database without verdicts (older mlpc, remote targets) falls back to MetaSchedule's best
figure against the default one measured before tuning.

    db = TuningDatabase.open("tuning.json", tvm_target, create=True)   # `mlpc tune --db`
    dbs = databases_for_compile(tvm_target, "tuning.json")             # explicit db, then the user cache
    apply_pass = apply_databases_pass(dbs, tvm_target, tuned_names)    # in mlpc's CPU pipeline
    func = tuned_primfunc(dbs, prim_func, tvm_target, name)            # one kernel (CUDA builds)

A database that cannot be read, or that was written for another target or TVM version, is
ignored with a warning naming the file: compiling never fails because of it. The per-user cache
lives under `$MLPC_CACHE_DIR/tuning/` (default `~/.cache/mlpc/tuning/`), one directory per target.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import tvm
import tvm_ffi

import mlpc

logger = logging.getLogger(__name__)

FORMAT = "mlpc-tuning-db"
FORMAT_VERSION = 1
META = "mlpc_tuning.json"
WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
SCHEDULED_ATTR = "tirx.is_scheduled"
FAILED_RUN_SECS = 1e9  # MetaSchedule records a candidate that failed to build or run with 1e10 s
# A verified tuned kernel must be at least this much faster than the default one to be used: the
# verdict picks the fastest of a few records by the same figures it compares with the default
# (a small winner's curse of its own), timings on a shared host wander by a few percent, and
# below that a different schedule is not worth its risk (a kernel measured alone, not in the model).
VERIFIED_MARGIN = 0.03


def target_key(tvm_target: tvm.target.Target) -> str:
    """The canonical text of a TVM target, used to check a database fits the compile target."""
    return str(tvm_target)


def workload(func: tvm.tirx.PrimFunc) -> tvm.IRModule:
    """The workload MetaSchedule tunes and looks up for a fused kernel: `func` alone as "main"."""
    func = func.with_attr("global_symbol", "main").with_attr("tirx.noalias", True)
    return tvm.IRModule({"main": func})


def workload_hash(mod: tvm.IRModule) -> str:
    """A stable key for a workload (its structural hash), used for per-task progress."""
    return f"{tvm_ffi.structural_hash(mod):016x}"


def schedule_id(func: tvm.tirx.PrimFunc) -> str:
    """A stable id of a scheduled kernel: its structural hash (the same in every process)."""
    return f"{tvm_ffi.structural_hash(func):016x}"


def record_id(record: Any) -> str:
    """The id a verdict names a TuningRecord by: `schedule_id` of the kernel its trace makes. (Its
    trace's JSON is no id: a record read back from the file prints differently from the one the
    search committed.)"""
    return schedule_id(apply_record(record))


def verdict_wins(verdict: Any) -> bool:
    """True when a verdict's tuned figure beats its default one by `VERIFIED_MARGIN`.

    >>> verdict_wins({"tuned_ms": 0.9, "default_ms": 1.0}), verdict_wins({"tuned_ms": 0.98, "default_ms": 1.0})
    (True, False)
    """
    try:
        tuned, default = float(verdict["tuned_ms"]), float(verdict["default_ms"])
    except (TypeError, KeyError, ValueError):
        return False
    return 0 < tuned <= default * (1 - VERIFIED_MARGIN)


def cache_root() -> Path:
    """The per-user tuning cache directory: `$MLPC_CACHE_DIR/tuning` or `~/.cache/mlpc/tuning`."""
    base = os.environ.get("MLPC_CACHE_DIR") or str(Path.home() / ".cache" / "mlpc")
    return Path(base) / "tuning"


def cache_dir(tvm_target: tvm.target.Target) -> Path:
    """The cache database directory for one target (and this TVM version)."""
    digest = hashlib.sha256(f"{target_key(tvm_target)}|{tvm.__version__}".encode()).hexdigest()[:16]
    kind = str(tvm_target.kind.name)
    return cache_root() / f"{kind}-{digest}"


class TuningDatabase:
    """A MetaSchedule JSONDatabase in a directory plus mlpc's metadata (target, versions, progress).

    Use `TuningDatabase.open`; `self.db` is the `ms.database.JSONDatabase`, `self.tasks` maps
    workload hash → {"name", "budget", "trials", "best_ms", "default_ms", "weight", "exhausted", "verified"}.
    """

    def __init__(self, path: Path, db: Any, meta: dict[str, Any]) -> None:
        self.path = path
        self.db = db
        self.meta = meta

    @property
    def tasks(self) -> dict[str, dict[str, Any]]:
        """Per-task progress, keyed by workload hash."""
        return self.meta.setdefault("tasks", {})

    @classmethod
    def open(cls, path: str | Path, tvm_target: tvm.target.Target, create: bool = False) -> TuningDatabase | None:
        """Open the database directory `path` for `tvm_target`; with `create`, make it if missing.

        Returns None (after a warning naming the file) when the database is unreadable, corrupted,
        or was written for another target, TVM version or format.
        """
        from tvm.s_tir import meta_schedule as ms

        path = Path(path)
        meta_path = path / META
        if not meta_path.exists():
            if not create:
                if path.exists():
                    logger.warning("tuning database %s ignored: no %s (not an mlpc tuning database)", path, META)
                return None
            if path.exists() and not path.is_dir():
                logger.warning("tuning database %s ignored: it is a file, not a database directory", path)
                return None
            path.mkdir(parents=True, exist_ok=True)
            meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "mlpc_version": mlpc.__version__,
                    "tvm_version": tvm.__version__, "target": target_key(tvm_target), "tasks": {}}
            _write_json(meta_path, meta)
        else:
            try:
                meta = json.loads(meta_path.read_text())
            except (OSError, ValueError) as e:
                logger.warning("tuning database %s ignored: %s is not valid JSON (%s)", path, meta_path, e)
                return None
            problem = _mismatch(meta, tvm_target)
            if problem:
                logger.warning("tuning database %s ignored: %s", meta_path, problem)
                return None
        try:
            db = ms.database.JSONDatabase(path_workload=str(path / WORKLOADS),
                                          path_tuning_record=str(path / RECORDS), allow_missing=True)
        except Exception as e:  # TVM raises ValueError/TVMError on malformed lines
            logger.warning("tuning database %s ignored: its records cannot be read (%s)",
                           path, str(e).strip().splitlines()[-1])
            return None
        return cls(path, db, meta)

    def save_meta(self) -> None:
        """Write the metadata (progress) atomically."""
        _write_json(self.path / META, self.meta)

    def best(self, mod: tvm.IRModule) -> Any | None:
        """Return the best TuningRecord of workload `mod` (by MetaSchedule's figure), or None."""
        top = self.records(mod, 1)
        return top[0] if top else None

    def records(self, mod: tvm.IRModule, k: int | None = None) -> list[Any]:
        """The measured TuningRecords of workload `mod`, fastest first by MetaSchedule's figure
        (at most `k`; failed measurements left out)."""
        if not self.db.has_workload(mod):
            return []
        top = self.db.get_top_k(self.db.commit_workload(mod), k or max(len(self.db), 1))
        return [r for r in top if r.run_secs and all(0 < float(s) < FAILED_RUN_SECS for s in r.run_secs)]

    def record(self, mod: tvm.IRModule, rid: str, search_ms: float | None = None) -> Any | None:
        """The TuningRecord of workload `mod` whose `record_id` is `rid`, or None. `search_ms`, its
        MetaSchedule figure, is a hint: records with that figure are replayed first."""
        records = self.records(mod)
        if search_ms is not None:
            records.sort(key=lambda r: abs(_mean_ms(r) - search_ms) > 1e-3 * search_ms)  # stable: matches first
        for record in records:
            try:
                if record_id(record) == rid:
                    return record
            except Exception as e:  # a record that no longer replays
                logger.debug("%s: a record does not replay (%s)", self.path, str(e).strip().splitlines()[-1])
        return None

    def schedule(self, mod: tvm.IRModule, tvm_target: tvm.target.Target) -> tvm.tirx.PrimFunc | None:
        """Return the tuned PrimFunc for workload `mod`, or None when there is none or the default
        schedule is to be kept.

        With a verdict (`mlpc tune` re-timed its best records against the default schedule), the
        verdict's record is used when it beat the default by `VERIFIED_MARGIN`. Without one (an
        older database, a remote target), the best record is used unless `mlpc tune` measured it
        slower than the default schedule.
        """
        if not self.db.has_workload(mod):
            return None
        task = self.tasks.get(workload_hash(mod), {})
        verdict = task.get("verified")
        if verdict is not None:
            if not verdict_wins(verdict):
                logger.info("%s: %s keeps its default schedule (verified %s ms tuned vs %s ms default)",
                            self.path, task.get("name"), verdict.get("tuned_ms"), verdict.get("default_ms"))
                return None
            record = self.record(mod, str(verdict.get("record")), verdict.get("search_ms"))
            if record is None:
                logger.warning("%s: the verified record %s of %s is not in the database; default schedule kept",
                               self.path, verdict.get("record"), task.get("name"))
                return None
            return apply_record(record)
        logger.debug("%s: %s has no verified figure (database from an older mlpc or a remote target): "
                     "using MetaSchedule's best unless it measured slower than the default",
                     self.path, task.get("name", workload_hash(mod)))
        if task.get("best_ms") is not None and task.get("default_ms") is not None \
                and task["best_ms"] >= task["default_ms"]:
            logger.info("%s: tuned schedule of %s (%.4f ms) is slower than the default (%.4f ms); not used",
                        self.path, task.get("name"), task["best_ms"], task["default_ms"])
            return None
        sch = self.db.query_schedule(mod, target=tvm_target, workload_name="main")
        return None if sch is None else sch.mod["main"]


def _mean_ms(record: Any) -> float:
    return 1e3 * sum(float(s) for s in record.run_secs) / len(record.run_secs)


def apply_record(record: Any) -> tvm.tirx.PrimFunc:
    """The PrimFunc `record`'s trace makes of its workload (as MetaSchedule's query_schedule does)."""
    from tvm import s_tir

    sch = s_tir.Schedule(record.workload.mod)
    record.trace.apply_to_schedule(sch, remove_postproc=False)
    return sch.mod["main"]


def _mismatch(meta: Any, tvm_target: tvm.target.Target) -> str | None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return f"not an mlpc tuning database (format {meta.get('format') if isinstance(meta, dict) else None!r})"
    if meta.get("format_version") != FORMAT_VERSION:
        return f"format version {meta.get('format_version')!r}, this mlpc reads {FORMAT_VERSION}"
    if meta.get("tvm_version") != tvm.__version__:
        return f"tuned with TVM {meta.get('tvm_version')!r}, this is TVM {tvm.__version__}; re-run `mlpc tune`"
    if meta.get("target") != target_key(tvm_target):
        return f"tuned for target {meta.get('target')}, not {target_key(tvm_target)}"
    return None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def databases_for_compile(tvm_target: tvm.target.Target, tuning_db: str | Path | None) -> list[TuningDatabase]:
    """The databases a compile for `tvm_target` reads, in priority order: `tuning_db` (if given
    and valid; a missing one is warned about), then the user cache for this target (if any)."""
    dbs = []
    if tuning_db is not None:
        if not Path(tuning_db).exists():
            logger.warning("tuning database %s ignored: no such directory", tuning_db)
        else:
            db = TuningDatabase.open(tuning_db, tvm_target)
            if db is not None:
                dbs.append(db)
    cached = cache_dir(tvm_target)
    if cached.exists():
        db = TuningDatabase.open(cached, tvm_target)
        if db is not None:
            dbs.append(db)
    return dbs


def tuned_primfunc(dbs: list[TuningDatabase], func: tvm.tirx.PrimFunc, tvm_target: tvm.target.Target,
                   name: str) -> tvm.tirx.PrimFunc | None:
    """The first database's tuned schedule of kernel `func` (called `name` in warnings), with
    `func`'s attributes and marked "tirx.is_scheduled"; None when no database holds one."""
    key = workload(func)
    for db in dbs:
        try:
            scheduled = db.schedule(key, tvm_target)
        except Exception as e:  # a record that no longer replays on this function
            logger.warning("tuning database %s: record for %s not applied (%s)", db.path, name,
                           str(e).strip().splitlines()[-1])
            continue
        if scheduled is not None:
            scheduled = scheduled.without_attr("global_symbol")
            for attr, value in (dict(func.attrs) if func.attrs else {}).items():
                scheduled = scheduled.with_attr(attr, value)
            return scheduled.with_attr(SCHEDULED_ATTR, True)
    return None


def apply_databases_pass(dbs: list[TuningDatabase], tvm_target: tvm.target.Target,
                         tuned: list[str]) -> tvm.transform.Pass:
    """A module pass replacing each PrimFunc that a database holds a schedule for by the tuned
    one, marked "tirx.is_scheduled" (mlpc's default schedule then skips it); the names of the
    replaced kernels are appended to `tuned` (for the manifest)."""

    @tvm.transform.module_pass(opt_level=0, name="MlpcApplyTuningDatabase")
    def _apply(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = mod.clone()
        for gvar, func in list(mod.functions.items()):
            if not isinstance(func, tvm.tirx.PrimFunc) or (func.attrs and func.attrs.get(SCHEDULED_ATTR)):
                continue
            scheduled = tuned_primfunc(dbs, func, tvm_target, gvar.name_hint)
            if scheduled is not None:
                mod[gvar] = scheduled
                tuned.append(gvar.name_hint)
        if tuned:
            logger.info("tuned schedules applied to %d kernel(s): %s", len(tuned), ", ".join(tuned))
        return mod

    return _apply


__all__ = ["VERIFIED_MARGIN", "TuningDatabase", "apply_databases_pass", "apply_record", "cache_dir", "cache_root",
           "databases_for_compile", "record_id", "schedule_id", "tuned_primfunc", "verdict_wins", "workload", "workload_hash"]
