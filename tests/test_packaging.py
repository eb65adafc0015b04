"""mlpc.passes, mlpc.backends and mlpc.targets import from any directory, installed either way."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROBE = "import mlpc, mlpc.passes, mlpc.backends, mlpc.targets, mlpc.passes.canonicalize; print(mlpc.passes.__file__)"


def test_editable_install_imports_from_elsewhere(tmp_path):
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent == REPO / "passes"


def test_regular_install_imports_from_elsewhere(tmp_path):
    site = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(site), str(REPO)],
        capture_output=True, text=True,
    )
    if build.returncode != 0:
        pytest.fail(f"pip install . failed: {build.stderr[-2000:]}")
    assert (site / "mlpc" / "passes" / "canonicalize.py").is_file()
    assert not (site / "passes").exists() and not (site / "targets").exists()
    # The editable finder sits at the end of sys.meta_path, so PYTHONPATH wins: this imports the copy in `site`.
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()).parent == site / "mlpc" / "passes"
