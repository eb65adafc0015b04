"""Verifying tuned kernels: a tuned schedule is used only when it is faster on the host, measured fairly.

MetaSchedule's best figure for a kernel is the minimum, over every candidate it measured, of its
runner's mean: the minimum of many noisy figures is optimistic (the winner's curse), and it comes
from another evaluator (the runner's subprocess and settings) than the default schedule's figure.
Compared with each other they let slower tuned kernels in (6 of 10 cases in one `make bench`).

So when a task's search ends, `verify_task` builds the database's best few distinct records and
the kernel under mlpc's default schedule (exactly as a compile without the database builds it)
and times them with one evaluator in interleaved rounds (A, B, C, default, then B, C, default, A,
…): what the machine does meanwhile hits all of them alike. Each figure is the median over the
rounds of the mean of enough calls to fill `ROUND_MS`: a pause or a burst of load spoils one round
of one kernel, which the median ignores, and unlike the minimum it does not reward a candidate for
one lucky round. The verdict (stored per task in the database) names the fastest record; compile
uses it only when it beats the default by `tuning_db.VERIFIED_MARGIN`. A record whose output
differs from the default kernel's is not considered.

    verdict = verify_task(db, task, get_target("host"))
    # {"tuned_ms": 0.012, "default_ms": 0.019, "record": "3f…", "rank": 0, "use_tuned": True, ...}
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tvm

from mlpc.backends.tvm.build import default_kernel
from mlpc.backends.tvm.tuning_db import TuningDatabase, apply_record, schedule_id, verdict_wins
from mlpc.targets import Target

logger = logging.getLogger(__name__)

VERIFY_TOP = 3  # distinct records re-timed: MetaSchedule's ranking is noisy, its top-1 not always the fastest
ROUNDS = 7  # interleaved rounds per kernel (odd: the median is one measured figure)
ROUND_MS = 10.0  # each round's figure averages as many calls as fill this many milliseconds
RTOL = 1e-3  # a record's output must match the default kernel's (float sums reordered: not bit-exact)


def random_args(func: tvm.tirx.PrimFunc, seed: int = 0) -> list[Any]:
    """Inputs for `func`: uniform [-1, 1) floats, small integers (so integer kernels compute something)."""
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    rng = np.random.default_rng(seed)
    args = []
    for info in ArgInfo.from_prim_func(func):
        shape = [int(d) for d in info.shape]
        dtype = str(info.dtype)
        if "float" in dtype:
            data = rng.uniform(-1, 1, shape)
        elif dtype == "bool":
            data = rng.integers(0, 2, shape)
        else:
            data = rng.integers(0, 4, shape)
        args.append(tvm.runtime.tensor(data.astype(dtype)))
    return args


def _outputs_match(got: Sequence[Any], want: Sequence[Any]) -> bool:
    for g, w in zip(got, want):
        g, w = g.numpy(), w.numpy()
        if np.issubdtype(w.dtype, np.floating):
            scale = float(np.max(np.abs(w))) if w.size else 0.0
            if not np.allclose(g, w, rtol=RTOL, atol=RTOL * max(scale, 1e-6), equal_nan=True):
                return False
        elif not np.array_equal(g, w):
            return False
    return True


def build_kernel(func: tvm.tirx.PrimFunc, tvm_target: tvm.target.Target) -> Any:
    """Compile one kernel alone for the host (as MetaSchedule's builder and `measure_default` do)."""
    return tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=tvm_target)


def time_interleaved(
    libs: Sequence[Any], args: Sequence[Any], rounds: int = ROUNDS, round_ms: float = ROUND_MS
) -> list[list[float]]:
    """Time the compiled kernels `libs` (the same kernel scheduled differently) on `args` in
    `rounds` interleaved rounds, rotating the order each round (A B C D, B C D A, …).

    Returns per kernel its per-round figures in ms, each the mean of as many calls as fill
    `round_ms` (counted once per kernel, before the rounds).
    """
    dev = tvm.cpu()
    timers = []
    for lib in libs:  # calibrate: how many calls fill a round (the first call also warms the kernel up)
        probe = lib.mod.time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=math.ceil(round_ms))
        per_call_ms = max(float(probe(*args).mean) * 1e3, 1e-6)
        timers.append(
            lib.mod.time_evaluator("main", dev, number=max(1, math.ceil(round_ms / per_call_ms)), repeat=1)
        )
    figures: list[list[float]] = [[] for _ in libs]
    for r in range(rounds):
        for i in [(r + j) % len(libs) for j in range(len(libs))]:
            figures[i].append(float(timers[i](*args).mean) * 1e3)
    return figures


def _distinct_top(db: TuningDatabase, task: Any, top: int) -> list[tuple[Any, tvm.tirx.PrimFunc, str]]:
    """The best `top` records of `task` by MetaSchedule's figure that replay to distinct kernels:
    (record, kernel, its `schedule_id`)."""
    found, seen = [], set()
    for record in db.records(task.mod):
        try:
            func = apply_record(record)
        except Exception as e:  # a record that no longer replays: compile would skip it too
            logger.debug("%s: a record does not replay (%s)", task.name, str(e).strip().splitlines()[-1])
            continue
        key = schedule_id(func)
        if key not in seen:  # two traces can make one schedule
            seen.add(key)
            found.append((record, func, key))
            if len(found) == top:
                break
    return found


def verify_task(
    db: TuningDatabase, task: Any, target: Target, top: int = VERIFY_TOP
) -> dict[str, Any] | None:
    """Time `task`'s best `top` distinct records in `db` against its default schedule on this host
    (`time_interleaved`) and return the verdict stored in the database (see the module doc):
    {"tuned_ms", "default_ms", "record" (its `schedule_id`), "rank", "search_ms" (MetaSchedule's
    figure), "use_tuned", "trials", "rounds", "candidates"}.
    Records that do not build or compute another result are left out; when none is left the
    verdict keeps the default ("record": None). Returns None (no verdict: compile falls back to
    MetaSchedule's figure) when `db` has no measured record of the task or its default kernel
    cannot be built here."""
    found = _distinct_top(db, task, top)
    if not found:
        return None
    tvm_target = target.tvm_target()
    default_func = default_kernel(task.mod["main"], target)
    try:
        default_lib = build_kernel(default_func, tvm_target)
    except Exception as e:
        logger.warning(
            "could not verify the tuned schedules of %s: its default kernel does not build here (%s)",
            task.name,
            str(e).strip().splitlines()[-1],
        )
        return None
    args = random_args(default_func)
    want = [tvm.runtime.tensor(a.numpy()) for a in args]
    default_lib.mod["main"](*want)
    entries, libs = [], []
    for rank, (record, func, key) in enumerate(found):
        entry = {
            "record": key,
            "rank": rank,
            "search_ms": round(float(np.mean([float(s) for s in record.run_secs])) * 1e3, 6),
        }
        entries.append(entry)
        try:
            lib = build_kernel(func, tvm_target)
            got = [tvm.runtime.tensor(a.numpy()) for a in args]
            lib.mod["main"](*got)
        except Exception as e:
            entry["error"] = f"does not build or run: {str(e).strip().splitlines()[-1]}"
            continue
        if not _outputs_match(got, want):  # inputs are untouched copies, so this compares the outputs
            entry["error"] = "its output differs from the default kernel's"
            continue
        libs.append((entry, lib))
    for entry in entries:
        if "error" in entry:
            logger.warning("%s: tuned record %s not used: %s", task.name, entry["record"], entry["error"])
    figures = time_interleaved([lib for _, lib in libs] + [default_lib], args)
    for (entry, _), fig in zip(libs, figures):
        entry["ms"] = round(float(np.median(fig)), 6)
    default_ms = round(float(np.median(figures[-1])), 6)
    timed = [entry for entry, _ in libs]
    best = min(timed, key=lambda e: e["ms"]) if timed else None
    verdict = {
        "tuned_ms": best and best["ms"],
        "default_ms": default_ms,
        "record": best and best["record"],
        "rank": best and best["rank"],
        "search_ms": best and best["search_ms"],
        "trials": task.trials,
        "rounds": ROUNDS,
        "candidates": entries,
    }
    verdict["use_tuned"] = verdict_wins(verdict)
    logger.info(
        "%s: verified %s ms tuned (record %s of the best %d) vs %.4f ms default → %s",
        task.name,
        "—" if best is None else f"{best['ms']:.4f}",
        "—" if best is None else best["rank"] + 1,
        len(entries),
        default_ms,
        "tuned" if verdict["use_tuned"] else "default",
    )
    return verdict


__all__ = [
    "ROUNDS",
    "ROUND_MS",
    "VERIFY_TOP",
    "build_kernel",
    "random_args",
    "time_interleaved",
    "verify_task",
]
