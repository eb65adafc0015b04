"""The benchmark harness: timing and report helpers, runner plumbing, and one end-to-end run.

Run with `.venv/bin/python -m pytest tests/benchmarks` from the repository root (`make test` does).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import mlpc
from benchmarks import common, run
from benchmarks.runners import BenchCase, MlpcRunner


def test_update_readme_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:a -->\nold a\n<!-- /results:a -->\n"
                      "<!-- results:b -->\nold b\n<!-- /results:b -->\ntail\n")
    common.update_readme_section(readme, "a", "new a\n")
    common.update_readme_section(readme, "a", "newer a")
    text = readme.read_text()
    assert "newer a" in text and "old a" not in text and "new a\n" not in text
    assert "old b" in text and text.startswith("intro\n") and text.endswith("tail\n")
    common.update_readme_section(readme, "c", "c table")
    assert readme.read_text().endswith("<!-- results:c -->\nc table\n<!-- /results:c -->\n")


def test_time_runs_statistics() -> None:
    calls = []
    timing = common.time_runs(lambda: calls.append(1), repeat=20, warmup=3)
    assert len(calls) == 23 and timing.runs == 20
    assert 0 <= timing.min_ms <= timing.median_ms <= timing.p90_ms
    with pytest.raises(ValueError, match="at least 20"):
        common.time_runs(lambda: None, repeat=5)


def test_max_rel_err() -> None:
    ref = np.array([[1.0, -4.0]])
    assert common.max_rel_err(ref + [[0.0, 0.4]], ref) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="shape"):
        common.max_rel_err(ref, ref.T)


def test_end_to_end_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TVM_NUM_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    out = tmp_path / "foundation.json"
    rc = run.main(["--models", "mlp", "--repeat", "20", "--warmup", "1", "--output", str(out), "--no-readme"])
    assert rc == 0
    results = json.loads(out.read_text())
    assert results["machine"]["cores"] >= 1 and results["machine"]["versions"]["torch"]
    entry = results["models"]["mlp"]
    assert set(entry["runners"]) == {"mlpc", "mlpc-naive", "onnxruntime", "torch"}
    for res in entry["runners"].values():
        assert res["runs"] == 20 and 0 < res["median_ms"] <= res["p90_ms"]
        assert res["max_rel_err"] < 1e-4
    assert entry["runners"]["mlpc"]["compile_s"] > 0 and entry["runners"]["torch"]["compile_s"] is None
    assert set(entry["ratios"]) == {"mlpc/onnxruntime", "mlpc/torch", "mlpc-naive/mlpc"}
    markdown = run.render_markdown(results)
    assert "| mlp |" in markdown and results["machine"]["cpu"] in markdown


def test_runner_failure_is_recorded_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_compile(model: str, **options: object) -> None:
        raise RuntimeError("Unsupported op Foo\nsecond line")

    monkeypatch.setattr(mlpc, "compile", broken_compile)
    case = BenchCase("mlp", tmp_path / "x.onnx", ("x",), "logits", tmp_path)
    with pytest.raises(RuntimeError):
        MlpcRunner(case)
    entry = run.measure("mlpc", case, {}, np.zeros(1), repeat=20, warmup=0)
    assert entry == {"error": "RuntimeError: Unsupported op Foo"}
    rows = run.table_rows({"models": {"mlp": {"runners": {"mlpc": entry}, "ratios": {}}}})
    assert rows[0][1] == "failed"
