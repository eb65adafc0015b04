"""Shared helpers for mlpc's benchmarks: thread setup, timing, error metrics, machine info and reports.

Every benchmark script (`run.py` for the foundation numbers, later quantization and tuning runs)
uses these so their numbers are measured and reported the same way:

    configure_threads(2)                      # before anything imports tvm
    timing = time_runs(lambda: runner.run(feeds), repeat=50, warmup=5)
    write_json(path, {"machine": machine_info(), ...})
    update_readme_section(README, "foundation", markdown)
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import logging
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
README = BENCH_DIR / "README.md"
MIN_REPEAT = 20


def configure_threads(threads: int) -> None:
    """Pin TVM's and OpenMP's thread pools to `threads`; call before tvm (or mlpc.compile) is imported.

    TVM reads TVM_NUM_THREADS when its thread pool starts, so setting it later has no effect.
    PyTorch and onnxruntime are configured per runner (`torch.set_num_threads`, session options).
    """
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


@dataclass(frozen=True)
class Timing:
    """Latency statistics of one runner, in milliseconds, over `runs` timed calls."""

    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int

    def to_dict(self) -> dict[str, float | int]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


def time_runs(fn: Callable[[], object], repeat: int = 50, warmup: int = 5) -> Timing:
    """Call `fn` `warmup` times untimed, then `repeat` times timed; return the latency statistics.

    >>> time_runs(lambda: sum(range(100)), repeat=20, warmup=1).runs
    20
    """
    if repeat < MIN_REPEAT:
        raise ValueError(f"repeat={repeat}: use at least {MIN_REPEAT} timed runs for a stable median/p90")
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return _timing(samples)


def _timing(seconds: list[float]) -> Timing:
    """The latency statistics of call durations given in seconds."""
    ms = np.asarray(seconds) * 1e3
    return Timing(float(np.median(ms)), float(np.percentile(ms, 90)), float(ms.min()), len(ms))


def time_interleaved(fns: dict[str, Callable[[], object]], repeat: int = 50, block: int = 10) -> dict[str, Timing]:
    """Time several runners of the same engine in alternating blocks of `block` calls (each block
    after one untimed call) until each has `repeat` timed calls; return their statistics by key.
    A machine that slows down for a while then slows every runner alike, so their ratios hold.

    >>> sorted(time_interleaved({"a": lambda: 1, "b": lambda: 2}, repeat=20))
    ['a', 'b']
    """
    if repeat < MIN_REPEAT:
        raise ValueError(f"repeat={repeat}: use at least {MIN_REPEAT} timed runs for a stable median/p90")
    samples = {key: [] for key in fns}
    while any(len(v) < repeat for v in samples.values()):
        for key, fn in fns.items():
            fn()
            for _ in range(min(block, repeat - len(samples[key]))):
                start = time.perf_counter()
                fn()
                samples[key].append(time.perf_counter() - start)
    return {key: _timing(values) for key, values in samples.items()}


def max_rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Return max|got - ref| / max|ref| (max|ref| floored at 1e-12); shapes must match.

    >>> max_rel_err(np.array([1.0, 2.1]), np.array([1.0, 2.0]))  # doctest: +ELLIPSIS
    0.05...
    """
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        raise ValueError(f"output shape {got.shape} differs from the reference shape {ref.shape}")
    return float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-12))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _mlpc_commit() -> str | None:
    """The git commit of the mlpc checkout being measured (with "+dirty" if modified), if known."""
    root = BENCH_DIR.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "") if commit else None


def machine_info() -> dict[str, Any]:
    """Describe this machine and the software measured: CPU, cores, versions, mlpc commit, UTC date."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "machine": platform.machine(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": {name: _version(dist) for name, dist in (
            ("mlpc", "mlpc"), ("tvm", "apache-tvm"), ("onnxruntime", "onnxruntime"),
            ("torch", "torch"), ("onnx", "onnx"), ("numpy", "numpy"))},
        "mlpc_commit": _mlpc_commit(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as indented JSON to `path` (creating directories); return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def fmt(value: float | None, digits: int = 3) -> str:
    """Format a number for a table: `digits` significant digits (trailing zeros kept), '—' for None.

    >>> [fmt(0.1), fmt(12.345), fmt(1234.5), fmt(2e-7, 2), fmt(0.0), fmt(None)]
    ['0.100', '12.3', '1234', '2.0e-07', '0', '—']
    """
    if value is None:
        return "—"
    if value == 0:
        return "0"
    if abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:.0f}"
    return f"{value:#.{digits}g}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Render a GitHub markdown table.

    >>> print(markdown_table(["a", "b"], [["1", "2"]]))
    | a | b |
    |---|---|
    | 1 | 2 |
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def publish(path: Path, data: dict[str, Any], section: str, markdown: str, readme: bool = True) -> None:
    """Write a benchmark's results: `data` as JSON to `path`, `markdown` into README.md's `section`
    (unless `readme` is False) and to standard output."""
    write_json(path, data)
    if readme:
        update_readme_section(README, section, markdown)
    print(markdown)


def update_readme_section(readme: Path, section: str, markdown: str) -> None:
    """Replace the text between `<!-- results:SECTION -->` and `<!-- /results:SECTION -->` in `readme`.

    Appends the marked section at the end if the markers are missing, so each benchmark owns
    one section and never touches the others.
    """
    begin, end = f"<!-- results:{section} -->", f"<!-- /results:{section} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    text = readme.read_text() if readme.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    readme.write_text(text)


def machine_line(machine: dict[str, Any]) -> str:
    """One markdown line naming the machine, library versions and date of a results file."""
    v = machine["versions"]
    libs = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    if machine.get("mlpc_commit"):
        libs = libs.replace(f"mlpc {v['mlpc']}", f"mlpc {v['mlpc']} ({machine['mlpc_commit']})")
    return f"_{machine['cpu']}, {machine['cores']} cores; {libs}; {machine['date']}_"
