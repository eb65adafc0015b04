"""The live display of `mlpc tune`: one row per kernel with its budget, trials, MetaSchedule's best
latency, and the verified tuned and default latencies ("uses": which one compile will take; a "?"
when there is no verdict, e.g. for remote measurement)."""
from __future__ import annotations

import logging
import re
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from mlpc.backends.tvm.tuning import TuneResult, TuningTask
from mlpc.errors import InputError

logger = logging.getLogger(__name__)

_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_duration(text: str) -> float:
    """Parse "90", "90s", "10m" or "1h" into seconds; raise InputError otherwise.

    >>> parse_duration("10m")
    600.0
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise InputError(f"--time {text!r}: give a duration such as 90s, 10m or 1h")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.4f}"


def task_table(tasks: list[TuningTask], title: str = "tuning") -> Table:
    """A table of the tasks, heaviest first: share of model time, MetaSchedule's best figure, the
    verified tuned and default figures (re-timed together after the search) and which one compile uses."""
    table = Table(title=f"{title} (latencies in ms)")
    for col in ("kernel", "calls", "share", "search", "default", "tuned", "uses", "trials", "status"):
        table.add_column(col, justify="left" if col in ("kernel", "uses", "status") else "right")
    for t in sorted(tasks, key=lambda t: -t.weight):
        default, tuned, uses = t.default_ms, None, "—"
        if t.verified is not None:
            default, tuned = t.verified.get("default_ms"), t.verified.get("tuned_ms")
            uses = "tuned" if t.beats_default else "default"
        elif t.best_ms is not None:
            uses = "tuned?" if t.beats_default else "default?"  # unverified: MetaSchedule's figure decides
        speedup = f" {default / tuned:.2f}x" if tuned and default else ""
        table.add_row(t.name, str(t.calls), f"{100 * t.weight:.1f}%", _ms(t.best_ms), _ms(default),
                      _ms(tuned), uses + speedup, f"{t.trials}/{t.budget}", t.status)
    return table


class TuneDisplay:
    """A rich Live view updated by `tune(on_progress=display.update)`; use it as a context manager."""

    def __init__(self, console: Console, waiting: str) -> None:
        self.console = console
        self.live = Live(waiting, console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> TuneDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.__exit__(*exc)

    def update(self, tasks: list[TuningTask], _task: TuningTask) -> None:
        """Redraw the table after a measured batch."""
        self.live.update(task_table(tasks))

    def print_summary(self, result: TuneResult, out: Console) -> None:
        """Print where the records went and why tuning stopped, if it did."""
        out.print(task_table(result.tasks, "tuned kernels"))
        trials = sum(t.trials for t in result.tasks)
        note = f" — stopped: {result.stopped}; run the same command again to resume" if result.stopped else ""
        out.print(f"{len(result.tasks)} kernels, {trials} trials recorded, {result.seconds:.0f}s → "
                  f"{result.db_path}{note}")
        if result.cache_path is not None and result.cached:
            out.print(f"{len(result.cached)} schedule(s) faster than the default also cached in {result.cache_path}")
