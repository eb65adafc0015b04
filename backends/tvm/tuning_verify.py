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
import tvm_ffi

from mlpc.backends.tvm.build import default_kernel
from mlpc.backends.tvm.tuning_db import TuningDatabase, apply_record, record_id, verdict_wins
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


def time_interleaved(
    funcs: Sequence[tvm.tirx.PrimFunc],
    tvm_target: tvm.target.Target,
    rounds: int = ROUNDS,
    round_ms: float = ROUND_MS,
) -> tuple[list[list[float]], list[bool]]:
    """Build each of `funcs` (the same kernel scheduled differently; the last is the reference) for
    the host and time them in `rounds` interleaved rounds, rotating the order each round.

    Returns per kernel its per-round figures in ms (mean of as many calls as fill `round_ms`) and
    whether its output on the same random inputs matches the reference's.
    """
    dev = tvm.cpu()
    libs = [
        tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}), target=tvm_target)
        for f in funcs
    ]
    args = random_args(funcs[-1])
    outputs = [[tvm.runtime.tensor(a.numpy()) for a in args] for _ in funcs]
    for lib, out in zip(libs, outputs):
        lib.mod["main"](*out)
    matches = [_outputs_match(out, outputs[-1]) for out in outputs]  # inputs untouched, outputs computed
    timers = []
    for lib in libs:  # calibrate: how many calls fill a round (the first call also warms the kernel up)
        probe = lib.mod.time_evaluator("main", dev, number=1, repeat=1, min_repeat_ms=math.ceil(round_ms))
        per_call_ms = max(float(probe(*args).mean) * 1e3, 1e-6)
        number = max(1, math.ceil(round_ms / per_call_ms))
        timers.append(lib.mod.time_evaluator("main", dev, number=number, repeat=1))
    figures: list[list[float]] = [[] for _ in funcs]
    for r in range(rounds):
        for i in [(r + j) % len(funcs) for j in range(len(funcs))]:
            figures[i].append(float(timers[i](*args).mean) * 1e3)
    return figures, matches


def verify_task(
    db: TuningDatabase, task: Any, target: Target, top: int = VERIFY_TOP
) -> dict[str, Any] | None:
    """Time `task`'s best `top` distinct records in `db` against its default schedule on this host
    (`time_interleaved`) and return the verdict stored in the database (see the module doc):
    {"tuned_ms", "default_ms", "record", "rank", "use_tuned", "trials", "candidates", "rounds"}.
    None when the database holds no measured record of the task or the kernels cannot be built."""
    records, funcs, seen = [], [], set()
    for record in db.records(task.mod):
        try:
            func = apply_record(record)
        except Exception as e:  # a record that no longer replays: compile would skip it too
            logger.debug("%s: a record does not replay (%s)", task.name, str(e).strip().splitlines()[-1])
            continue
        key = tvm_ffi.structural_hash(func)
        if key in seen:  # two traces, one schedule
            continue
        seen.add(key)
        records.append(record)
        funcs.append(func)
        if len(records) == top:
            break
    if not records:
        return None
    try:
        figures, matches = time_interleaved(
            [*funcs, default_kernel(task.mod["main"], target)], target.tvm_target()
        )
    except Exception as e:
        logger.warning(
            "could not verify the tuned schedules of %s (%s); compile will compare MetaSchedule's figure",
            task.name,
            str(e).strip().splitlines()[-1],
        )
        return None
    medians = [float(np.median(f)) for f in figures]
    default_ms = medians[-1]
    candidates = [
        {
            "record": record_id(r),
            "ms": round(m, 6),
            "search_ms": round(float(np.mean([float(s) for s in r.run_secs])) * 1e3, 6),
            "matches_default": ok,
        }
        for r, m, ok in zip(records, medians, matches)
    ]
    usable = [i for i in range(len(records)) if matches[i]]
    for i in range(len(records)):
        if not matches[i]:
            logger.warning(
                "%s: a tuned record's output differs from the default kernel's; not used", task.name
            )
    if not usable:
        return None
    best = min(usable, key=lambda i: medians[i])
    verdict = {
        "tuned_ms": round(medians[best], 6),
        "default_ms": round(default_ms, 6),
        "record": record_id(records[best]),
        "rank": best,
        "trials": task.trials,
        "rounds": ROUNDS,
        "candidates": candidates,
    }
    verdict["use_tuned"] = verdict_wins(verdict)
    logger.info(
        "%s: verified %.4f ms tuned (record %d of the top %d) vs %.4f ms default → %s",
        task.name,
        medians[best],
        best + 1,
        len(records),
        default_ms,
        "tuned" if verdict["use_tuned"] else "default",
    )
    return verdict


__all__ = ["ROUNDS", "ROUND_MS", "VERIFY_TOP", "random_args", "time_interleaved", "verify_task"]
